"""Typed Security (``/0``), Server (``/1``) and OSCORE (``/21``) object instances (ref. §2.1-§2.3), their
definitions, the builder of the AS's LwM2M Server Account and the device-side inverse.

An LwM2M Server Account is a Security instance with Bootstrap-Server = false plus the Server instance with the
same Short Server ID (OMA LwM2M Transport, Definitions). For the AS the Security instance carries (issue #7): the
AS's URI, Security Mode PSK, the lock's identity as Public Key or Identity, the new AS<->lock key as Secret Key,
and the AS's token-signing public key as a CBOR COSE_Key (RFC 9052 §7) in Server Public Key. The minimum DM account
is ``/0/x`` {0, 1=false, 2, 3, 4, 5, 10} plus ``/1/y`` {0, 1, 6, 7} (ref. §2.2).

Resource ids and types are the reference's. Security 18-24 and 28-30 have no type there and the OSCORE object's
0/1/2/5 are String in v1.0.1 but Opaque in v2.0 (ref. §2.3); this module types those four Opaque (the TLV bytes
are the same either way) and keeps the untyped Security resources as opaque bytes in ``extra``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeVar

from ace_core.errors import WireFormatError
from ace_core.keys import CoseKey
from ace_core.lwm2m import senml, tlv
from ace_core.lwm2m.errors import ObjectError
from ace_core.lwm2m.model import (
    ObjectInstance,
    ObjectLink,
    ObjectSpec,
    ResourceSpec,
    ResourceType,
    ResourceValue,
    check_value,
)
from ace_core.lwm2m.registry import (
    ObjectId,
    OscoreResource,
    SecurityMode,
    SecurityResource,
    ServerResource,
)

__all__ = [
    "OBJECT_SPECS",
    "OSCORE_SPEC",
    "SECURITY_SPEC",
    "SERVER_SPEC",
    "OscoreInstance",
    "SecurityInstance",
    "ServerAccount",
    "ServerInstance",
    "build_server_account",
]

_S, _I, _U, _B, _O, _T, _L, _E = (
    ResourceType.STRING,
    ResourceType.INTEGER,
    ResourceType.UNSIGNED,
    ResourceType.BOOLEAN,
    ResourceType.OPAQUE,
    ResourceType.TIME,
    ResourceType.OBJLNK,
    ResourceType.EXECUTABLE,
)
_R = SecurityResource
SECURITY_SPEC = ObjectSpec.of(
    ObjectId.SECURITY,
    "LwM2M Security",
    ResourceSpec(_R.SERVER_URI, "LwM2M Server URI", _S, mandatory=True),
    ResourceSpec(_R.BOOTSTRAP_SERVER, "Bootstrap-Server", _B, mandatory=True),
    ResourceSpec(_R.SECURITY_MODE, "Security Mode", _I, mandatory=True),
    ResourceSpec(_R.PUBLIC_KEY_OR_IDENTITY, "Public Key or Identity", _O, mandatory=True),
    ResourceSpec(_R.SERVER_PUBLIC_KEY, "Server Public Key", _O, mandatory=True),
    ResourceSpec(_R.SECRET_KEY, "Secret Key", _O, mandatory=True),
    ResourceSpec(_R.SMS_SECURITY_MODE, "SMS Security Mode", _I),
    ResourceSpec(_R.SMS_BINDING_KEY_PARAMETERS, "SMS Binding Key Parameters", _O),
    ResourceSpec(_R.SMS_BINDING_SECRET_KEYS, "SMS Binding Secret Key(s)", _O),
    ResourceSpec(_R.SERVER_SMS_NUMBER, "LwM2M Server SMS Number", _S),
    ResourceSpec(_R.SHORT_SERVER_ID, "Short Server ID", _I),
    ResourceSpec(_R.CLIENT_HOLD_OFF_TIME, "Client Hold Off Time", _I),
    ResourceSpec(_R.BOOTSTRAP_SERVER_ACCOUNT_TIMEOUT, "Bootstrap-Server Account Timeout", _I),
    ResourceSpec(_R.MATCHING_TYPE, "Matching Type", _U),
    ResourceSpec(_R.SNI, "SNI", _S),
    ResourceSpec(_R.CERTIFICATE_USAGE, "Certificate Usage", _I),
    ResourceSpec(_R.DTLS_TLS_CIPHERSUITE, "DTLS/TLS Ciphersuite", _I, multiple=True),
    ResourceSpec(_R.OSCORE_SECURITY_MODE, "OSCORE Security Mode", _L),
    ResourceSpec(_R.SECONDARY_SERVER_URI, "Secondary LwM2M Server URI", _S, multiple=True),
    ResourceSpec(_R.MQTT_SERVER, "MQTT Server", _L),
    ResourceSpec(_R.COSE_SECURITY, "LwM2M COSE Security", _L),
)
_V = ServerResource
SERVER_SPEC = ObjectSpec.of(
    ObjectId.SERVER,
    "LwM2M Server",
    ResourceSpec(_V.SHORT_SERVER_ID, "Short Server ID", _I, mandatory=True),
    ResourceSpec(_V.LIFETIME, "Lifetime", _I, mandatory=True),
    ResourceSpec(_V.DEFAULT_MIN_PERIOD, "Default Minimum Period", _I),
    ResourceSpec(_V.DEFAULT_MAX_PERIOD, "Default Maximum Period", _I),
    ResourceSpec(_V.DISABLE, "Disable", _E),
    ResourceSpec(_V.DISABLE_TIMEOUT, "Disable Timeout", _I),
    ResourceSpec(_V.NOTIFICATION_STORING, "Notification Storing When Disabled or Offline", _B, mandatory=True),
    ResourceSpec(_V.BINDING, "Binding", _S, mandatory=True),
    ResourceSpec(_V.REGISTRATION_UPDATE_TRIGGER, "Registration Update Trigger", _E),
    ResourceSpec(_V.BOOTSTRAP_REQUEST_TRIGGER, "Bootstrap-Request Trigger", _E),
    ResourceSpec(_V.APN_LINK, "APN Link", _L),
    ResourceSpec(_V.TLS_DTLS_ALERT_CODE, "TLS-DTLS Alert Code", _U),
    ResourceSpec(_V.LAST_BOOTSTRAPPED, "Last Bootstrapped", _T),
    ResourceSpec(_V.REGISTRATION_PRIORITY_ORDER, "Registration Priority Order", _U),
    ResourceSpec(_V.INITIAL_REGISTRATION_DELAY_TIMER, "Initial Registration Delay Timer", _U),
    ResourceSpec(_V.REGISTRATION_FAILURE_BLOCK, "Registration Failure Block", _B),
    ResourceSpec(_V.BOOTSTRAP_ON_REGISTRATION_FAILURE, "Bootstrap on Registration Failure", _B),
    ResourceSpec(_V.COMMUNICATION_RETRY_COUNT, "Communication Retry Count", _U),
    ResourceSpec(_V.COMMUNICATION_RETRY_TIMER, "Communication Retry Timer", _U),
    ResourceSpec(_V.COMMUNICATION_SEQUENCE_DELAY_TIMER, "Communication Sequence Delay Timer", _U),
    ResourceSpec(_V.COMMUNICATION_SEQUENCE_RETRY_COUNT, "Communication Sequence Retry Count", _U),
    ResourceSpec(_V.TRIGGER, "Trigger", _B),
    ResourceSpec(_V.PREFERRED_TRANSPORT, "Preferred Transport", _S),
    ResourceSpec(_V.MUTE_SEND, "Mute Send", _B),
)
_C = OscoreResource
OSCORE_SPEC = ObjectSpec.of(
    ObjectId.OSCORE,
    "OSCORE",
    ResourceSpec(_C.MASTER_SECRET, "OSCORE Master Secret", _O, mandatory=True),
    ResourceSpec(_C.SENDER_ID, "OSCORE Sender ID", _O, mandatory=True),
    ResourceSpec(_C.RECIPIENT_ID, "OSCORE Recipient ID", _O, mandatory=True),
    ResourceSpec(_C.AEAD_ALGORITHM, "OSCORE AEAD Algorithm", _I),
    ResourceSpec(_C.HMAC_ALGORITHM, "OSCORE HMAC Algorithm", _I),
    ResourceSpec(_C.MASTER_SALT, "OSCORE Master Salt", _O),
    ResourceSpec(_C.ID_CONTEXT, "OSCORE ID Context", _O),
)
#: Definitions by object id, for :func:`ace_core.lwm2m.senml.decode_instances` and friends.
OBJECT_SPECS: Mapping[int, ObjectSpec] = {s.object_id: s for s in (SECURITY_SPEC, SERVER_SPEC, OSCORE_SPEC)}

_MAX_SSID = 65534  # Short Server ID 1..65534 (ref. §2.1, §2.2)
_PSK_SCHEMES = ("coaps://", "coaps+tcp://")

_TI = TypeVar("_TI", bound="_TypedInstance")


def _resource(rid: int, *, secret: bool = False, required: bool = False) -> Any:
    """A dataclass field for resource ``rid``: required ones have no default (keyword-only dataclasses)."""
    if required:
        return field(repr=not secret, metadata={"rid": rid})
    return field(default=None, repr=not secret, metadata={"rid": rid})


@dataclass(frozen=True, slots=True, kw_only=True)
class _TypedInstance:
    """Fields map to resource ids through ``metadata["rid"]``; ``extra`` keeps every other resource."""

    SPEC: ClassVar[ObjectSpec]

    extra: Mapping[int, ResourceValue] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        known = {f.metadata["rid"] for f in fields(self) if "rid" in f.metadata}
        for rid in self.extra:
            if rid in known:
                raise ValueError(f"resource {rid} has its own field; do not put it in extra")
        for f in fields(self):
            if "rid" not in f.metadata:
                continue
            value = getattr(self, f.name)
            rspec = self.SPEC.resources[f.metadata["rid"]]
            if value is None:
                if rspec.mandatory:
                    raise ValueError(f"{rspec.name} (/{self.SPEC.object_id}/x/{rspec.id}) is mandatory")
                continue
            if rspec.multiple:
                if not isinstance(value, tuple):
                    raise ValueError(f"{rspec.name} is a tuple of values")
                for item in value:
                    check_value(item, rspec.type)
            else:
                checked = check_value(value, rspec.type)
                if checked is not value:  # Float given as int: store the float
                    object.__setattr__(self, f.name, checked)

    def resources(self) -> dict[int, ResourceValue]:
        """The instance's resources by id (multiple-instance resources numbered 0, 1, ...)."""
        out: dict[int, ResourceValue] = dict(self.extra)
        for f in fields(self):
            if "rid" not in f.metadata:
                continue
            value = getattr(self, f.name)
            if value is None:
                continue
            out[f.metadata["rid"]] = dict(enumerate(value)) if isinstance(value, tuple) else value
        return out

    def to_instance(self, instance_id: int) -> ObjectInstance:
        """As a generic :class:`ObjectInstance` at ``/{object}/{instance_id}``."""
        return ObjectInstance(self.SPEC.object_id, instance_id, self.resources())

    def to_tlv(self, instance_id: int, *, wrap: bool = False) -> bytes:
        """The TLV payload of a Bootstrap-Write to ``/{object}/{instance_id}`` (ref. §3)."""
        return tlv.encode_instance(self.to_instance(instance_id), self.SPEC, wrap=wrap)

    def to_senml_cbor(self, instance_id: int) -> bytes:
        """The SenML CBOR payload of a Bootstrap-Write to ``/{object}/{instance_id}``."""
        return senml.encode_instances([self.to_instance(instance_id)], OBJECT_SPECS)

    @classmethod
    def from_instance(cls: type[_TI], instance: ObjectInstance) -> _TI:
        """The typed view of a decoded instance.

        :raises ObjectError: wrong object, a missing mandatory resource, or a value of the wrong type.
        """
        if instance.object_id != cls.SPEC.object_id:
            raise ObjectError(f"{instance.path} is not an instance of /{cls.SPEC.object_id}")
        resources = dict(instance.resources)
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if "rid" not in f.metadata:
                continue
            value = resources.pop(f.metadata["rid"], None)
            # A multiple-instance resource becomes a tuple in resource-instance id order.
            kwargs[f.name] = tuple(value[k] for k in sorted(value)) if isinstance(value, Mapping) else value
        try:
            return cls(**kwargs, extra=resources)
        except ValueError as exc:
            raise ObjectError(f"{instance.path}: {exc}") from None

    @classmethod
    def from_tlv(cls: type[_TI], data: bytes, instance_id: int) -> _TI:
        """Decode the TLV payload of a write to ``/{object}/{instance_id}`` (bare or wrapped).

        :raises TlvError: malformed TLV. :raises ObjectError: as :meth:`from_instance`.
        """
        return cls.from_instance(
            tlv.decode_instance(data, cls.SPEC, object_id=cls.SPEC.object_id, instance_id=instance_id)
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityInstance(_TypedInstance):
    """A Security object instance ``/0/x`` (ref. §2.1). Secret members stay out of ``repr``."""

    SPEC: ClassVar[ObjectSpec] = SECURITY_SPEC

    server_uri: str = _resource(_R.SERVER_URI, required=True)
    bootstrap_server: bool = _resource(_R.BOOTSTRAP_SERVER, required=True)
    security_mode: int = _resource(_R.SECURITY_MODE, required=True)
    public_key_or_identity: bytes = _resource(_R.PUBLIC_KEY_OR_IDENTITY, required=True)
    server_public_key: bytes = _resource(_R.SERVER_PUBLIC_KEY, required=True)
    secret_key: bytes = _resource(_R.SECRET_KEY, secret=True, required=True)
    sms_security_mode: int | None = _resource(_R.SMS_SECURITY_MODE)
    sms_binding_key_parameters: bytes | None = _resource(_R.SMS_BINDING_KEY_PARAMETERS)
    sms_binding_secret_keys: bytes | None = _resource(_R.SMS_BINDING_SECRET_KEYS, secret=True)
    server_sms_number: str | None = _resource(_R.SERVER_SMS_NUMBER)
    short_server_id: int | None = _resource(_R.SHORT_SERVER_ID)
    client_hold_off_time: int | None = _resource(_R.CLIENT_HOLD_OFF_TIME)
    bootstrap_server_account_timeout: int | None = _resource(_R.BOOTSTRAP_SERVER_ACCOUNT_TIMEOUT)
    matching_type: int | None = _resource(_R.MATCHING_TYPE)
    sni: str | None = _resource(_R.SNI)
    certificate_usage: int | None = _resource(_R.CERTIFICATE_USAGE)
    ciphersuites: tuple[int, ...] | None = _resource(_R.DTLS_TLS_CIPHERSUITE)
    oscore_security_mode: ObjectLink | None = _resource(_R.OSCORE_SECURITY_MODE)

    def __post_init__(self) -> None:
        _TypedInstance.__post_init__(self)
        if not 0 <= self.security_mode <= max(SecurityMode):
            raise ValueError(f"Security Mode {self.security_mode} is not one of 0..{max(SecurityMode)}")
        if not self.bootstrap_server:  # res 10 "MUST when res 1 = false" (ref. §2.1)
            if self.short_server_id is None or not 1 <= self.short_server_id <= _MAX_SSID:
                raise ValueError(f"a server account needs a Short Server ID in 1..{_MAX_SSID}")

    def server_public_cose_key(self) -> CoseKey:
        """Server Public Key read as a public COSE_Key (what the AS writes; issue #7).

        :raises ObjectError: not a CBOR COSE_Key, a symmetric key, or a key with a private part.
        """
        try:
            key = CoseKey.from_cbor(self.server_public_key)
        except WireFormatError as exc:
            raise ObjectError(f"Server Public Key is not a COSE_Key: {exc}") from None
        if key.is_symmetric or key.d is not None:
            raise ObjectError("Server Public Key must be a public asymmetric COSE_Key")
        return key


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerInstance(_TypedInstance):
    """A Server object instance ``/1/y`` (ref. §2.2). Executable resources (4, 8, 9) have no field."""

    SPEC: ClassVar[ObjectSpec] = SERVER_SPEC

    short_server_id: int = _resource(_V.SHORT_SERVER_ID, required=True)
    lifetime: int = _resource(_V.LIFETIME, required=True)
    default_min_period: int | None = _resource(_V.DEFAULT_MIN_PERIOD)
    default_max_period: int | None = _resource(_V.DEFAULT_MAX_PERIOD)
    disable_timeout: int | None = _resource(_V.DISABLE_TIMEOUT)
    notification_storing: bool = _resource(_V.NOTIFICATION_STORING, required=True)
    binding: str = _resource(_V.BINDING, required=True)
    apn_link: ObjectLink | None = _resource(_V.APN_LINK)
    tls_dtls_alert_code: int | None = _resource(_V.TLS_DTLS_ALERT_CODE)
    last_bootstrapped: int | None = _resource(_V.LAST_BOOTSTRAPPED)
    registration_priority_order: int | None = _resource(_V.REGISTRATION_PRIORITY_ORDER)
    initial_registration_delay_timer: int | None = _resource(_V.INITIAL_REGISTRATION_DELAY_TIMER)
    registration_failure_block: bool | None = _resource(_V.REGISTRATION_FAILURE_BLOCK)
    bootstrap_on_registration_failure: bool | None = _resource(_V.BOOTSTRAP_ON_REGISTRATION_FAILURE)
    communication_retry_count: int | None = _resource(_V.COMMUNICATION_RETRY_COUNT)
    communication_retry_timer: int | None = _resource(_V.COMMUNICATION_RETRY_TIMER)
    communication_sequence_delay_timer: int | None = _resource(_V.COMMUNICATION_SEQUENCE_DELAY_TIMER)
    communication_sequence_retry_count: int | None = _resource(_V.COMMUNICATION_SEQUENCE_RETRY_COUNT)
    trigger: bool | None = _resource(_V.TRIGGER)
    preferred_transport: str | None = _resource(_V.PREFERRED_TRANSPORT)
    mute_send: bool | None = _resource(_V.MUTE_SEND)

    def __post_init__(self) -> None:
        _TypedInstance.__post_init__(self)
        if not 1 <= self.short_server_id <= _MAX_SSID:
            raise ValueError(f"Short Server ID {self.short_server_id} is not in 1..{_MAX_SSID}")
        for rid in self.extra:
            rspec = SERVER_SPEC.resources.get(rid)
            if rspec is not None and rspec.type is ResourceType.EXECUTABLE:
                raise ValueError(f"{rspec.name} (/1/y/{rid}) is executable and carries no value")


@dataclass(frozen=True, slots=True, kw_only=True)
class OscoreInstance(_TypedInstance):
    """An OSCORE object instance ``/21/z``, linked from ``/0/x/17`` (ref. §2.3)."""

    SPEC: ClassVar[ObjectSpec] = OSCORE_SPEC

    master_secret: bytes = _resource(_C.MASTER_SECRET, secret=True, required=True)
    sender_id: bytes = _resource(_C.SENDER_ID, required=True)
    recipient_id: bytes = _resource(_C.RECIPIENT_ID, required=True)
    aead_algorithm: int | None = _resource(_C.AEAD_ALGORITHM)
    hmac_algorithm: int | None = _resource(_C.HMAC_ALGORITHM)
    master_salt: bytes | None = _resource(_C.MASTER_SALT)
    id_context: bytes | None = _resource(_C.ID_CONTEXT)


@dataclass(frozen=True, slots=True)
class ServerAccount:
    """An LwM2M Server Account: a non-bootstrap Security instance and the Server instance with its SSID."""

    security: SecurityInstance
    server: ServerInstance

    def __post_init__(self) -> None:
        if self.security.bootstrap_server:
            raise ValueError("a server account's Security instance has Bootstrap-Server = false")
        if self.security.short_server_id != self.server.short_server_id:
            raise ValueError("the Security and Server instances must carry the same Short Server ID")

    @property
    def short_server_id(self) -> int:
        """The account's Short Server ID (``/0/x/10`` = ``/1/y/0``)."""
        return self.server.short_server_id


def build_server_account(
    *,
    server_uri: str,
    identity: bytes,
    psk: bytes,
    server_public_key: CoseKey,
    short_server_id: int,
    lifetime: int,
    binding: str = "U",
    notification_storing: bool = False,
    ciphersuites: tuple[int, ...] | None = None,
    bootstrap_on_registration_failure: bool | None = None,
) -> ServerAccount:
    """The AS's account on a lock (issue #7): PSK mode with the lock's identity and the AS<->lock key, and the
    AS's token-signing public key as a CBOR COSE_Key in Server Public Key.

    :param server_uri: the AS's CoAP URI; PSK needs ``coaps://`` or ``coaps+tcp://`` (Anjay checks that the
        scheme matches the mode, ref. §2.1).
    :param identity: PSK identity (``/0/x/3``); non-empty.
    :param psk: the operational AS<->lock key (``/0/x/5``); non-empty. It must differ from the bootstrap PSK and
        from every other device's key (ref. §3b); tinydtls takes at most 16 bytes.
    :param server_public_key: the AS's token-signing key; only its public part is written.
    :param ciphersuites: ``/0/x/16`` values, e.g. 49320 (TLS_PSK_WITH_AES_128_CCM_8). Wakaama has no multiple
        resources and answers 4.04 to it (ref. §2.1), so the default leaves it out.
    :raises ValueError: any of the above violated, or ``binding`` not a non-empty string of U/T/S/N/Q.
    """
    if not server_uri.startswith(_PSK_SCHEMES):
        raise ValueError(f"a PSK account needs a coaps:// or coaps+tcp:// URI, got {server_uri!r}")
    if not identity or not psk:
        raise ValueError("PSK identity and key must be non-empty")
    if server_public_key.is_symmetric:
        raise ValueError("the Server Public Key must be an asymmetric key")
    if not binding or any(c not in "UTSNQ" for c in binding):
        raise ValueError(f"binding {binding!r} is not made of U, T, S, N, Q (ref. §2.2)")
    security = SecurityInstance(
        server_uri=server_uri,
        bootstrap_server=False,
        security_mode=int(SecurityMode.PSK),
        public_key_or_identity=identity,
        server_public_key=server_public_key.public().to_cbor(),
        secret_key=psk,
        short_server_id=short_server_id,
        ciphersuites=ciphersuites,
    )
    server = ServerInstance(
        short_server_id=short_server_id,
        lifetime=lifetime,
        notification_storing=notification_storing,
        binding=binding,
        bootstrap_on_registration_failure=bootstrap_on_registration_failure,
    )
    return ServerAccount(security, server)
