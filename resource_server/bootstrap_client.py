"""The device side of the bootstrap adapter, sans-IO (issue #7; OMA LwM2M Transport 1.2, Bootstrap Interface):
what the lock checks in a delivered server account, and the lock's half of the classic server-driven flow.

* :func:`account_from_pack` -- a Bootstrap-Pack (``GET /bspack`` answer, SenML CBOR) to the validated account;
* :func:`validate_account` -- the checks every delivery passes (PSK mode, ``coaps://`` URI, identity
  ``"{audience}#{generation}"``, a 16-byte key, the AS's public key a public COSE_Key, matching Short Server IDs);
* :class:`DeviceBootstrap` -- Bootstrap-Discover, -Delete, -Write and -Finish as the lock answers them. Writes are
  *staged*: nothing reaches the credentials file before a consistent Bootstrap-Finish, and a flow that fails or
  times out leaves the file as it was (Wakaama backs up and restores ``/0`` and ``/1`` the same way; ref. §3b).

The device's ``/0/0`` is its bootstrap account, built from the factory bundle: it is listed by Discover without an
``ssid`` (so the server never picks or deletes it), and Delete and Write refuse it (4.00). The operational account
is one non-bootstrap Security instance plus the Server instance with the same SSID (ref. §2.1, §2.2).

=====================  ==========================  =========================================================
operation              success                     failures
=====================  ==========================  =========================================================
Discover ``/``, /0, /1  2.05 link-format (CF 40)    4.04 another object; 4.00 a deeper path
Delete ``/``, /0, /1,   2.02                        4.00 ``/0/0`` (the bootstrap account) or a resource path
/0/x, /1/y
Write /0/x, /1/y, /0,   2.04                        4.15 a format other than TLV/SenML CBOR; 4.00 ``/0/0``,
/1                                                  a malformed payload or a resource path
Finish ``POST /bs``     2.04 (credentials stored)   4.06 no single consistent, valid server account
=====================  ==========================  =========================================================

The transport (:mod:`resource_server.transport.lwm2m_client`) renders each :class:`OperationRefused`'s status.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ace_core.errors import AceError, WireFormatError
from ace_core.lwm2m import senml, tlv
from ace_core.lwm2m.bundle import DeviceBundle
from ace_core.lwm2m.errors import BootstrapFormatError
from ace_core.lwm2m.messages import parse_bootstrap_pack
from ace_core.lwm2m.model import ObjectInstance
from ace_core.lwm2m.objects import OBJECT_SPECS, SecurityInstance, ServerInstance
from ace_core.lwm2m.registry import Lwm2mContentFormat, ObjectId, SecurityMode
from ace_core.status import Status
from resource_server.credentials import KEY_BYTES, CredentialsError, DeliveredAccount, KeySlot, parse_identity

__all__ = [
    "BOOTSTRAP_INSTANCE",
    "BadOperation",
    "BootstrapError",
    "DeviceBootstrap",
    "InconsistentConfiguration",
    "InvalidAccount",
    "NotFound",
    "OperationRefused",
    "UnsupportedFormat",
    "account_from_pack",
    "bootstrap_account",
    "validate_account",
]

log = logging.getLogger("ostiary.lock.bootstrap")

#: The instance id of the bootstrap account (``/0/0``; the Wakaama example client uses the same).
BOOTSTRAP_INSTANCE = 0
#: The Device object instance the lock lists in Discover and its registration (``/3/0``).
DEVICE_INSTANCE = (int(ObjectId.DEVICE), 0)
_WRITE_FORMATS = frozenset({Lwm2mContentFormat.TLV, Lwm2mContentFormat.OLD_TLV, Lwm2mContentFormat.SENML_CBOR})
_PSK_SCHEME = "coaps://"


class BootstrapError(AceError):
    """A bootstrap did not deliver usable credentials (the message says why; nothing was stored).

    ``handshake_refused`` is set by the transport when the server ended the DTLS handshake with a fatal alert: it
    does not take the PSK identity the lock presented.
    """

    handshake_refused: bool = False


class InvalidAccount(BootstrapError):
    """The delivered server account fails the lock's checks (:func:`validate_account`)."""


class OperationRefused(AceError):
    """A server-driven bootstrap operation the lock refuses; ``status`` is the answer (table above)."""


class BadOperation(OperationRefused):
    """4.00: the bootstrap account, a path the lock does not accept, or a payload that does not decode."""

    status = Status.BAD_REQUEST


class NotFound(OperationRefused):
    """4.04: Discover of an object the lock does not have."""

    status = Status.NOT_FOUND


class UnsupportedFormat(OperationRefused):
    """4.15: a Bootstrap-Write in a Content-Format other than TLV (11542) or SenML CBOR (112)."""

    status = Status.UNSUPPORTED_CONTENT_FORMAT


class InconsistentConfiguration(OperationRefused):
    """4.06 on Bootstrap-Finish: no single complete server account, or one the lock cannot use."""

    status = Status.NOT_ACCEPTABLE


def bootstrap_account(bundle: DeviceBundle) -> SecurityInstance:
    """The device's bootstrap account ``/0/0`` from its factory bundle (ref. §3b: URI in 0, mode in 2, identity in
    3, PSK in 5); NoSec mode when the bootstrap URI is ``coap://`` (development)."""
    secure = bundle.bootstrap_uri.startswith(_PSK_SCHEME)
    return SecurityInstance(
        server_uri=bundle.bootstrap_uri,
        bootstrap_server=True,
        security_mode=int(SecurityMode.PSK if secure else SecurityMode.NO_SEC),
        public_key_or_identity=bundle.psk_identity,
        server_public_key=bundle.as_public_key or b"",
        secret_key=bundle.psk,
    )


def validate_account(
    security: SecurityInstance, server: ServerInstance, *, security_instance: int, server_instance: int
) -> DeliveredAccount:
    """Check a delivered account and turn it into what the lock keeps.

    :raises InvalidAccount: a bootstrap-server instance, a mode other than PSK, a URI that is not ``coaps://``,
        an identity that is not ``"{audience}#{generation}"``, a key that is not 16 bytes, a Server Public Key
        that is not a public COSE_Key, or Short Server IDs that differ.
    """
    if security.bootstrap_server:
        raise InvalidAccount("the account's Security instance is a bootstrap-server account")
    if security.security_mode != SecurityMode.PSK:
        raise InvalidAccount(f"Security Mode {security.security_mode} is not PSK (0)")
    if not security.server_uri.startswith(_PSK_SCHEME):
        raise InvalidAccount(f"server URI {security.server_uri!r} is not coaps://")
    if security.short_server_id != server.short_server_id:
        raise InvalidAccount("the Security and Server instances carry different Short Server IDs")
    if len(security.secret_key) != KEY_BYTES:
        raise InvalidAccount(f"the Secret Key is {len(security.secret_key)} bytes, not {KEY_BYTES}")
    try:
        _, generation = parse_identity(security.public_key_or_identity)
        slot = KeySlot(identity=security.public_key_or_identity, key=security.secret_key, generation=generation)
        security.server_public_cose_key()
    except (CredentialsError, BootstrapFormatError) as exc:
        raise InvalidAccount(str(exc)) from None
    if server.lifetime < 1:
        raise InvalidAccount(f"lifetime {server.lifetime} is not positive")
    return DeliveredAccount(
        server_uri=security.server_uri,
        slot=slot,
        server_public_key=security.server_public_key,
        short_server_id=server.short_server_id,
        lifetime=server.lifetime,
        security_instance=security_instance,
        server_instance=server_instance,
    )


def _single_account(
    security: Mapping[int, SecurityInstance], server: Mapping[int, ServerInstance], *, error: type[AceError]
) -> DeliveredAccount:
    accounts = {i: s for i, s in security.items() if not s.bootstrap_server}
    if len(accounts) != 1:
        raise error(f"{len(accounts)} server accounts; the lock takes exactly one (the AS)")
    ((sec_id, sec),) = accounts.items()
    matching = [(i, s) for i, s in server.items() if s.short_server_id == sec.short_server_id]
    if len(matching) != 1:
        raise error(f"{len(matching)} Server instances with Short Server ID {sec.short_server_id}, expected one")
    ((srv_id, srv),) = matching
    try:
        return validate_account(sec, srv, security_instance=sec_id, server_instance=srv_id)
    except InvalidAccount as exc:
        raise error(str(exc)) from None


def account_from_pack(payload: bytes) -> DeliveredAccount:
    """The validated server account in a Bootstrap-Pack (SenML CBOR, the ``2.05`` answer to ``GET /bspack``).

    A pack that places the account at ``/0/0`` (the lock's bootstrap account) is moved to ``/0/1``.

    :raises InvalidAccount: malformed pack, not exactly one server account, or :func:`validate_account` fails.
    """
    try:
        pack = parse_bootstrap_pack(payload)
    except BootstrapFormatError as exc:
        raise InvalidAccount(f"malformed Bootstrap-Pack: {exc}") from None
    if any(s.bootstrap_server for s in pack.security.values()):
        raise InvalidAccount("the Bootstrap-Pack carries a bootstrap-server account")
    account = _single_account(pack.security, pack.server, error=InvalidAccount)
    if account.security_instance == BOOTSTRAP_INSTANCE:
        account = _with_ids(account, security_instance=BOOTSTRAP_INSTANCE + 1)
    return account


def _with_ids(account: DeliveredAccount, *, security_instance: int) -> DeliveredAccount:
    from dataclasses import replace

    return replace(account, security_instance=security_instance)


@dataclass(frozen=True, slots=True)
class _Staged:
    security: dict[int, SecurityInstance | ObjectInstance]
    server: dict[int, ServerInstance | ObjectInstance]


class DeviceBootstrap:
    """The lock's side of one classic bootstrap (module docstring): Discover, Delete and Write act on a staged
    copy of ``/0`` and ``/1``; :meth:`finish` validates it and returns the account to store.

    :param bundle: the factory bundle (its bootstrap account is ``/0/0``).
    :param existing: the operational account the lock holds now (listed by Discover), if any.
    """

    def __init__(self, bundle: DeviceBundle, existing: DeliveredAccount | None = None) -> None:
        self._bootstrap = bootstrap_account(bundle)
        security: dict[int, SecurityInstance | ObjectInstance] = {BOOTSTRAP_INSTANCE: self._bootstrap}
        server: dict[int, ServerInstance | ObjectInstance] = {}
        if existing is not None:
            sec, srv = _instances_of(existing)
            if existing.security_instance != BOOTSTRAP_INSTANCE:
                security[existing.security_instance] = sec
            server[existing.server_instance] = srv
        self._staged = _Staged(security, server)
        self.finished: DeliveredAccount | None = None

    # -- Bootstrap-Discover --------------------------------------------------------------------------------------

    def discover(self, path: tuple[str, ...]) -> bytes:
        """The link-format (RFC 6690) answer to ``GET /{path}`` with Accept 40.

        ``/`` lists ``</>;lwm2m=1.1``, every Security instance (the bootstrap account without ``ssid``, others with
        ``ssid`` and ``uri``), the Server instances with ``ssid`` (or ``</1>`` when there are none) and ``</3/0>``.

        :raises NotFound: an object other than 0 and 1. :raises BadOperation: a path below an object.
        """
        ids = _parse_path(path)
        if len(ids) > 1:
            raise BadOperation(f"Bootstrap-Discover of {_text(path)}: only / or an object")
        if ids and ids[0] not in (ObjectId.SECURITY, ObjectId.SERVER):
            raise NotFound(f"object /{ids[0]} is not on this lock")
        links: list[str] = ["</>;lwm2m=1.1"] if not ids else []
        if not ids or ids[0] == ObjectId.SECURITY:
            for inst_id in sorted(self._staged.security):
                links.append(_security_link(inst_id, self._staged.security[inst_id]))
        if not ids or ids[0] == ObjectId.SERVER:
            if self._staged.server:
                for inst_id in sorted(self._staged.server):
                    links.append(_server_link(inst_id, self._staged.server[inst_id]))
            else:
                links.append(f"</{int(ObjectId.SERVER)}>")
        if not ids:
            links.append(f"</{DEVICE_INSTANCE[0]}/{DEVICE_INSTANCE[1]}>")
        return ",".join(links).encode("utf-8")

    # -- Bootstrap-Delete ----------------------------------------------------------------------------------------

    def delete(self, path: tuple[str, ...]) -> None:
        """``DELETE /``, ``/0``, ``/1``, ``/0/x`` or ``/1/y`` on the staged objects (never ``/0/0``). Deleting an
        instance that does not exist, or an object the lock does not let the server change (``/3``), succeeds.

        :raises BadOperation: ``/0/0``, or a resource path.
        """
        ids = _parse_path(path)
        if len(ids) > 2:
            raise BadOperation(f"Bootstrap-Delete of a resource ({_text(path)})")
        staged = self._staged
        obj = ids[0] if ids else None
        if obj is None or (obj == ObjectId.SECURITY and len(ids) == 1):
            for inst_id in [i for i in staged.security if i != BOOTSTRAP_INSTANCE]:
                del staged.security[inst_id]
        elif obj == ObjectId.SECURITY:
            if ids[1] == BOOTSTRAP_INSTANCE:
                raise BadOperation("the bootstrap account /0/0 cannot be deleted")
            staged.security.pop(ids[1], None)
        if obj is None or (obj == ObjectId.SERVER and len(ids) == 1):
            staged.server.clear()
        elif obj == ObjectId.SERVER:
            staged.server.pop(ids[1], None)
        # Other objects (the Device object): nothing the server may remove; 2.02 as Wakaama answers (ref. §1).

    # -- Bootstrap-Write -----------------------------------------------------------------------------------------

    def write(self, path: tuple[str, ...], content_format: int | None, payload: bytes) -> None:
        """``PUT /0/x``, ``/1/y`` (one instance, replacing it) or ``/0``, ``/1`` (several) in TLV or SenML CBOR.

        Values are type-checked against the object definitions; whether the instances make a usable account is
        decided at :meth:`finish` (the server may write them in any order).

        :raises UnsupportedFormat: another Content-Format. :raises BadOperation: ``/0/0``, a resource path, an
            object other than 0 and 1, or a payload that does not decode.
        """
        if content_format not in _WRITE_FORMATS:
            raise UnsupportedFormat(f"Bootstrap-Write in Content-Format {content_format}")
        ids = _parse_path(path)
        if not 1 <= len(ids) <= 2:
            raise BadOperation(f"Bootstrap-Write to {_text(path)}: only an object or an instance")
        obj = ids[0]
        if obj not in (ObjectId.SECURITY, ObjectId.SERVER):
            raise BadOperation(f"Bootstrap-Write to object /{obj}, which the lock does not keep")
        spec = OBJECT_SPECS[obj]
        try:
            if content_format == Lwm2mContentFormat.SENML_CBOR:
                instances = senml.decode_instances(payload, OBJECT_SPECS)
                for inst in instances:
                    if inst.object_id != obj or (len(ids) == 2 and inst.instance_id != ids[1]):
                        raise BadOperation(f"SenML record for {inst.path} in a write to {_text(path)}")
            elif len(ids) == 2:
                instances = (tlv.decode_instance(payload, spec, object_id=obj, instance_id=ids[1]),)
            else:
                instances = tlv.decode_instances(payload, spec, object_id=obj)
        except (BootstrapFormatError, WireFormatError, ValueError) as exc:
            if isinstance(exc, OperationRefused):
                raise
            raise BadOperation(f"Bootstrap-Write to {_text(path)}: {exc}") from None
        if not instances:
            raise BadOperation(f"Bootstrap-Write to {_text(path)} carries no instance")
        if obj == ObjectId.SECURITY:
            if any(inst.instance_id == BOOTSTRAP_INSTANCE for inst in instances):
                raise BadOperation("the bootstrap account /0/0 cannot be written")
            for inst in instances:
                self._staged.security[inst.instance_id] = _typed_security(inst)
        else:
            for inst in instances:
                self._staged.server[inst.instance_id] = _typed_server(inst)

    # -- Bootstrap-Finish ----------------------------------------------------------------------------------------

    def finish(self) -> DeliveredAccount:
        """Check the staged objects and return the server account to store (the caller stores it, then answers
        2.04).

        :raises InconsistentConfiguration: an incomplete instance, not exactly one server account, no Server
            instance with its SSID, or an account :func:`validate_account` refuses (4.06).
        """
        security: dict[int, SecurityInstance] = {}
        server: dict[int, ServerInstance] = {}
        for inst_id, sec in self._staged.security.items():
            if not isinstance(sec, SecurityInstance):
                raise InconsistentConfiguration(f"/0/{inst_id} misses mandatory resources or has wrong types")
            security[inst_id] = sec
        for inst_id, srv in self._staged.server.items():
            if not isinstance(srv, ServerInstance):
                raise InconsistentConfiguration(f"/1/{inst_id} misses mandatory resources or has wrong types")
            server[inst_id] = srv
        for inst_id, sec in security.items():
            if inst_id != BOOTSTRAP_INSTANCE and sec.bootstrap_server:
                raise InconsistentConfiguration(f"/0/{inst_id} is a second bootstrap-server account")
        account = _single_account(security, server, error=InconsistentConfiguration)
        self.finished = account
        return account


def _typed_security(inst: ObjectInstance) -> SecurityInstance | ObjectInstance:
    """The typed instance, or the raw one when it is incomplete (reported at Finish)."""
    try:
        return SecurityInstance.from_instance(inst)
    except BootstrapFormatError as exc:
        log.debug("staged %s is not a complete instance: %s", inst.path, exc)
        return inst


def _typed_server(inst: ObjectInstance) -> ServerInstance | ObjectInstance:
    """The typed instance, or the raw one when it is incomplete (reported at Finish)."""
    try:
        return ServerInstance.from_instance(inst)
    except BootstrapFormatError as exc:
        log.debug("staged %s is not a complete instance: %s", inst.path, exc)
        return inst


def _instances_of(account: DeliveredAccount) -> tuple[SecurityInstance, ServerInstance]:
    """The ``/0/x`` and ``/1/y`` instances of a stored account (for Discover)."""
    security = SecurityInstance(
        server_uri=account.server_uri,
        bootstrap_server=False,
        security_mode=int(SecurityMode.PSK),
        public_key_or_identity=account.slot.identity,
        server_public_key=account.server_public_key,
        secret_key=account.slot.key,
        short_server_id=account.short_server_id,
    )
    server = ServerInstance(
        short_server_id=account.short_server_id, lifetime=account.lifetime, notification_storing=False, binding="U"
    )
    return security, server


def _security_link(inst_id: int, value: SecurityInstance | ObjectInstance) -> str:
    link = f"</{int(ObjectId.SECURITY)}/{inst_id}>"
    if isinstance(value, SecurityInstance) and not value.bootstrap_server and value.short_server_id is not None:
        link += f';ssid={value.short_server_id};uri="{_quoted(value.server_uri)}"'
    return link


def _server_link(inst_id: int, value: ServerInstance | ObjectInstance) -> str:
    link = f"</{int(ObjectId.SERVER)}/{inst_id}>"
    if isinstance(value, ServerInstance):
        link += f";ssid={value.short_server_id}"
    return link


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _parse_path(path: Iterable[str]) -> tuple[int, ...]:
    """Uri-Path segments as LwM2M ids (an empty trailing segment, as in ``/``, is ignored).

    :raises BadOperation: a segment that is not a decimal id 0..65535.
    """
    out: list[int] = []
    for segment in path:
        if segment == "" and not out:
            continue
        if not (segment.isascii() and segment.isdigit()) or len(segment) > 5 or int(segment) > 65535:
            raise BadOperation(f"path segment {segment!r} is not an LwM2M id")
        out.append(int(segment))
    return tuple(out)


def _text(path: tuple[str, ...]) -> str:
    return "/" + "/".join(path)
