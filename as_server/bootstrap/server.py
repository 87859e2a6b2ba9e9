"""The bootstrap server's logic (issue #7), framework-free: who a DTLS peer is, what a device may receive, and the
LwM2M registrations of provisioned locks. :mod:`as_server.transport.bootstrap_coap` puts it on CoAP.

* :meth:`BootstrapService.find_psk` answers the DTLS stack's PSK lookup: a factory (bootstrap) identity from the
  device store, or an operational identity ``{audience}#{generation}`` from the AS's ``rs_keys``
  (docs/bootstrap-design.md). The :class:`Peer` it returns is what the transport later sees as the request's
  authenticated claim, so every handler knows which device, and which kind of credential, it is talking to.
* Bootstrap-Pack-Request (``GET /bspack``, OMA LwM2M Transport 1.2; ref. §1) and Bootstrap-Request (``POST /bs``,
  the classic server-driven flow of :class:`~as_server.bootstrap.session.BootstrapSession`) are answered only for
  a device that authenticated with *its own* bootstrap PSK, is claimed for a site, and whose factory batch is
  complete (:meth:`~as_server.bootstrap.devices.DeviceStore.bootstrap_target`). The account written is the AS's:
  PSK mode, the lock's operational identity and key, and the AS's token-signing public key
  (:func:`~ace_core.lwm2m.objects.build_server_account`). The key is the one the AS makes the lock's tokens
  with: a delivery confirms it (:meth:`~as_server.bootstrap.operational.OperationalCredentials.confirm_delivery`).
* LwM2M Register / Update / De-register at ``/rd`` (OMA LwM2M Transport 1.2, "Registration Interface") for a lock
  that authenticated with an operational identity; they record the lock's last contact.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from ace_core.errors import AceError
from ace_core.keys import CoseKey
from ace_core.lwm2m.errors import InvalidBootstrapRequest
from ace_core.lwm2m.messages import (
    BootstrapPackRequest,
    BootstrapPackTemplate,
    BootstrapRequest,
    choose_pack_format,
    endpoint_of,
    parse_query,
)
from ace_core.lwm2m.objects import ServerAccount, build_server_account
from ace_core.lwm2m.registry import Lwm2mContentFormat
from ace_core.status import Status
from as_server.bootstrap.devices import BootstrapRefusal, DeviceRecord, EditableDeviceStore
from as_server.bootstrap.operational import OperationalCredentials, parse_operational_identity
from as_server.bootstrap.session import BootstrapPolicy, BootstrapSession, SessionState
from as_server.models import Lwm2mRegistration, OperationalKey

if TYPE_CHECKING:
    from as_server.app import AuthorizationServer
    from as_server.storage.base import RegistrationStore

__all__ = [
    "PACK_SECURITY_INSTANCE",
    "PACK_SERVER_INSTANCE",
    "BootstrapService",
    "Lwm2mRefused",
    "Peer",
    "PeerKind",
    "open_bootstrap_service",
]

log = logging.getLogger("ostiary.bootstrap")

#: No Discover precedes a Bootstrap-Pack, so the pack's instance ids must avoid every client's bootstrap account
#: blindly: Wakaama keeps it at ``/0/0``, Anjay at ``/0/1`` (ref. §1 "Pitfall"); these ids are used by neither.
PACK_SECURITY_INSTANCE = 10
PACK_SERVER_INSTANCE = 10

# Registration Interface limits: the Register payload is a link-format list of object instances; 2 KiB holds a
# few dozen, far more than a lock has. Lifetimes outside these bounds are refused (4.00).
MAX_LINKS_BYTES = 2048
MIN_LIFETIME = 30
MAX_LIFETIME = 30 * 86400
_MAX_QUERY_ITEMS = 16


class PeerKind(Enum):
    """Which credential a peer authenticated with."""

    #: A factory bootstrap PSK (device store): may bootstrap, nothing else.
    BOOTSTRAP = "bootstrap"
    #: An operational PSK the bootstrap server delivered (``rs_keys``): may register at ``/rd``.
    OPERATIONAL = "operational"
    #: Plain CoAP (development only): nothing is authenticated; the endpoint name is taken on trust.
    UNAUTHENTICATED = "unauthenticated"


@dataclass(frozen=True, slots=True)
class Peer:
    """A DTLS peer's authenticated identity (aiocoap reports it as the request's ``authenticated_claims``)."""

    kind: PeerKind
    #: The PSK identity it authenticated with (``None`` on plain CoAP).
    identity: bytes | None = None
    #: The lock's audience (its serial number); for a bootstrap peer the serial of the device the identity is of.
    serial: str | None = None
    #: The key generation of an operational peer.
    generation: int | None = None

    def __str__(self) -> str:  # what logs show: never a key
        if self.kind is PeerKind.UNAUTHENTICATED:
            return "unauthenticated peer"
        shown = self.identity.decode("ascii", "replace") if self.identity is not None else "?"
        return f"{self.kind.value} identity {shown}"


UNAUTHENTICATED = Peer(PeerKind.UNAUTHENTICATED)


class Lwm2mRefused(AceError):
    """A bootstrap or registration request this server refuses; ``detail`` goes on the wire as the diagnostic
    payload (RFC 7252 §5.5.2), so it never names a secret."""

    def __init__(self, code: Status, detail: str) -> None:
        super().__init__(detail)
        #: The CoAP response code (4.00, 4.01, ...).
        self.code = code
        self.detail = detail


#: Register/Update query parameters (OMA LwM2M Transport 1.2, Registration Interface); others are ignored.
_REGISTRATION_PARAMETERS = frozenset({"ep", "lt", "lwm2m", "b", "sms", "Q"})


def _query(items: Iterable[str]) -> dict[str, str | None]:
    """Register/Update parameters (Uri-Query options arrive percent-decoded); ``ep``, ``lt``, ``lwm2m`` and ``b``
    need a value."""
    found, _others = parse_query(items, _REGISTRATION_PARAMETERS)
    for name in ("ep", "lt", "lwm2m", "b"):
        if name in found and found[name] is None:
            raise InvalidBootstrapRequest(f"query parameter {name!r} has no value")
    return found


class BootstrapService:
    """The bootstrap server's decisions. Thread-safe; every method may block on storage (run them in a thread).

    :param devices: the factory's device store (bootstrap PSKs, ownership).
    :param credentials: the AS's operational keys (:mod:`~as_server.bootstrap.operational`).
    :param registrations: where LwM2M registrations are kept (the AS's storage).
    :param as_public_key: the AS's token-signing key; its public part goes to ``/0/x/4``.
    :param server_uri: ``/0/x/0``: the AS's ``coaps://`` address where locks register.
    :param lifetime: ``/1/x/1``: the registration lifetime written to locks (seconds).
    :param allow_unauthenticated: accept :data:`UNAUTHENTICATED` peers (plain CoAP, development).
    """

    def __init__(
        self,
        *,
        devices: EditableDeviceStore,
        credentials: OperationalCredentials,
        registrations: RegistrationStore,
        as_public_key: CoseKey,
        server_uri: str,
        lifetime: int = 3600,
        short_server_id: int = 1,
        policy: BootstrapPolicy | None = None,
        allow_unauthenticated: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.devices = devices
        self.credentials = credentials
        self.registrations = registrations
        self.as_public_key = as_public_key.public()
        self.server_uri = server_uri
        self.lifetime = lifetime
        self.short_server_id = short_server_id
        self.policy = policy if policy is not None else BootstrapPolicy()
        self.allow_unauthenticated = allow_unauthenticated
        self.clock = clock
        # One classic session per device at a time; a second Bootstrap-Request while one runs is refused.
        self._active: set[str] = set()
        self._lock = threading.Lock()
        self._ended = threading.Condition(self._lock)  # notified whenever a session leaves _active
        # The packs of this server's account, encoded once (rebuilt when the account's settings above change).
        self._pack_template: BootstrapPackTemplate | None = None

    def _now(self) -> int:
        return int(self.clock())

    # -- DTLS ------------------------------------------------------------------------------------------------

    def find_psk(self, identity: bytes) -> tuple[bytes, Peer] | None:
        """The PSK for a DTLS ClientKeyExchange identity, with the peer it authenticates; ``None`` when unknown,
        retired or refused (the handshake then fails: tinydtls answers with a fatal alert)."""
        if not identity or len(identity) > 64:
            return None
        parsed = parse_operational_identity(identity)
        if parsed is not None:
            found: OperationalKey | None = self.credentials.psk_for_identity(identity, now=self._now())
            if found is None or found.key is None:
                return None
            return found.key, Peer(PeerKind.OPERATIONAL, identity, parsed[0], parsed[1])
        # One read (issue #7, "Benchmark"): this runs on the event loop for every handshake.
        credentials = self.devices.bootstrap_credentials(identity)
        if credentials is None:
            return None
        psk, serial = credentials
        return psk, Peer(PeerKind.BOOTSTRAP, identity, serial)

    # -- bootstrap -------------------------------------------------------------------------------------------

    def _authorize(self, endpoint: str, peer: Peer) -> DeviceRecord:
        """The device (its serial is the lock's audience) if ``peer`` may be bootstrapped as ``endpoint``; one read
        of the device store (issue #7, "Benchmark")."""
        if peer.kind is PeerKind.OPERATIONAL:
            raise Lwm2mRefused(Status.UNAUTHORIZED, "bootstrap needs the device's bootstrap credentials")
        if peer.kind is PeerKind.UNAUTHENTICATED and not self.allow_unauthenticated:
            raise Lwm2mRefused(Status.UNAUTHORIZED, "bootstrap needs DTLS")
        record, target = self.devices.bootstrap_device(
            endpoint, psk_identity=peer.identity if peer.kind is PeerKind.BOOTSTRAP else None
        )
        if isinstance(target, BootstrapRefusal):
            log.warning("bootstrap of %r refused for %s: %s", endpoint, peer, target.value)
            raise Lwm2mRefused(Status.BAD_REQUEST, target.value)
        if record is None:  # pragma: no cover - a target is only found for a known device
            raise Lwm2mRefused(Status.BAD_REQUEST, BootstrapRefusal.UNKNOWN_ENDPOINT.value)
        return record

    def _account(self, key: OperationalKey) -> ServerAccount:
        assert key.key is not None
        return build_server_account(
            server_uri=self.server_uri,
            identity=key.identity,
            psk=key.key,
            server_public_key=self.as_public_key,
            short_server_id=self.short_server_id,
            lifetime=self.lifetime,
        )

    def _template(self) -> BootstrapPackTemplate:
        uri, key, ssid, lifetime = self.server_uri, self.as_public_key, self.short_server_id, self.lifetime
        template = self._pack_template
        if template is None or not template.matches(
            server_uri=uri, server_public_key=key, short_server_id=ssid, lifetime=lifetime
        ):
            template = BootstrapPackTemplate(
                server_uri=uri,
                server_public_key=key,
                short_server_id=ssid,
                lifetime=lifetime,
                security_instance_id=PACK_SECURITY_INSTANCE,
                server_instance_id=PACK_SERVER_INSTANCE,
            )
            self._pack_template = template  # a race builds it twice, harmlessly
        return template

    def pack(self, query: Sequence[str], accept: int | None, peer: Peer) -> tuple[bytes, Lwm2mContentFormat]:
        """Answer a Bootstrap-Pack-Request: the SenML CBOR pack (2.05) with the AS's account for this lock.

        Delivering the pack confirms its key (the AS makes the lock's tokens with it from now on); a lock that
        asks again before a rotation is due gets the same key.

        :raises InvalidBootstrapRequest: malformed query (4.00). :raises NotAcceptable: an Accept other than
            SenML CBOR (4.06). :raises Lwm2mRefused: not this device's credentials, unknown or unclaimed device.
        """
        request = BootstrapPackRequest.from_query(query)
        fmt = choose_pack_format(accept)
        device = self._authorize(request.endpoint, peer)
        now = self._now()
        key = self.credentials.key_for_delivery(device.serial, now=now, delivered=True)
        assert key.key is not None
        payload = self._template().pack(key.identity, key.key)
        self._delivered(device, key, now)
        return payload, fmt

    def start_session(self, query: Sequence[str], peer: Peer) -> BootstrapSession:
        """Accept a Bootstrap-Request (``POST /bs``): the session whose operations the transport sends next.
        Call :meth:`session_ended` when it ends, whichever way.

        :raises InvalidBootstrapRequest: malformed query. :raises Lwm2mRefused: refused (4.00/4.01), or a
            bootstrap of this device is already running (4.00: answer the running one first).
        """
        request = BootstrapRequest.from_query(query)
        serial = self._authorize(request.endpoint, peer).serial
        with self._lock:
            if serial in self._active:
                raise Lwm2mRefused(Status.BAD_REQUEST, "a bootstrap of this device is already running")
            self._active.add(serial)
        try:
            key = self.credentials.key_for_delivery(serial, now=self._now())
            return BootstrapSession(request, self._account(key), policy=self.policy)
        except BaseException:
            with self._lock:
                self._active.discard(serial)
                self._ended.notify_all()
            raise

    def is_bootstrapping(self, serial: str) -> bool:
        """Whether a classic bootstrap of this device is running (until :meth:`session_ended` has recorded it);
        another Bootstrap-Request of the device meanwhile is refused."""
        with self._lock:
            return serial in self._active

    def wait_until_not_bootstrapping(self, serial: str, timeout: float) -> bool:
        """Block until no classic bootstrap of this device is running (see :meth:`is_bootstrapping`), at most
        ``timeout`` seconds; returns whether none is."""
        with self._ended:
            return self._ended.wait_for(lambda: serial not in self._active, timeout)

    def session_ended(self, session: BootstrapSession, peer: Peer) -> bool:
        """Record the end of a classic session: a completed one (Finish answered 2.04) confirms its key.
        Returns whether it completed."""
        serial = self.devices.by_endpoint(session.request.endpoint)
        try:
            if session.state is not SessionState.DONE or serial is None:
                return False
            identity = session.account.security.public_key_or_identity
            parsed = parse_operational_identity(identity)
            if parsed is None:  # pragma: no cover - we wrote it
                return False
            now = self._now()
            generation = parsed[1]
            self.credentials.confirm_delivery(serial.serial, generation, now=now)
            self.devices.mark_provisioned(serial.serial, now=now)
            log.info("bootstrapped %s (%s) by the classic flow: key generation %d", serial.serial, peer, generation)
            return True
        finally:
            if serial is not None:
                with self._lock:
                    self._active.discard(serial.serial)
                    self._ended.notify_all()

    def _delivered(self, device: DeviceRecord, key: OperationalKey, now: int) -> None:
        """Record a pack's delivery: confirm its key, and clear the device's revocation (``device`` was read by
        :meth:`_authorize` for this request)."""
        serial = device.serial
        first = key.delivered_at is None or key.delivered_at == now
        if key.delivered_at is None:
            self.credentials.confirm_delivery(serial, key.generation, now=now)
        if device.revoked_at is not None:
            self.devices.mark_provisioned(serial, now=now)
        # a lock pulls periodically: only a new key is news
        log.log(
            logging.INFO if first else logging.DEBUG,
            "bootstrapped %s by Bootstrap-Pack: key generation %d%s",
            serial,
            key.generation,
            "" if first else " (again)",
        )

    def housekeeping(self) -> int:
        """Periodic work (``ostiary as serve`` runs it every minute): erase the key material of retired
        generations (design: "Retirement"). Returns how many were erased."""
        erased = self.credentials.retire_expired(now=self._now())
        if erased:
            log.info("erased %d retired operational key(s)", erased)
        return erased

    # -- registration interface ------------------------------------------------------------------------------

    def _operational(self, peer: Peer) -> str:
        if peer.kind is not PeerKind.OPERATIONAL or peer.serial is None or peer.identity is None:
            raise Lwm2mRefused(Status.UNAUTHORIZED, "registration needs the lock's operational credentials")
        # The PSK was looked up at the handshake; a DTLS session outlives a revocation or retirement, so check
        # again that the key generation is still usable (one cached read).
        if self.credentials.psk_for_identity(peer.identity, now=self._now()) is None:
            raise Lwm2mRefused(Status.UNAUTHORIZED, "these credentials are retired or revoked; bootstrap again")
        return peer.serial

    @staticmethod
    def _lifetime(raw: str | None, default: int) -> int:
        if raw is None:
            return default
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
            raise InvalidBootstrapRequest("lt must be a number of seconds")
        value = int(raw)
        if not MIN_LIFETIME <= value <= MAX_LIFETIME:
            raise InvalidBootstrapRequest(f"lt must be {MIN_LIFETIME}-{MAX_LIFETIME} seconds")
        return value

    @staticmethod
    def _links(payload: bytes) -> str:
        if len(payload) > MAX_LINKS_BYTES:
            raise Lwm2mRefused(Status.REQUEST_ENTITY_TOO_LARGE, f"the object list exceeds {MAX_LINKS_BYTES} bytes")
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidBootstrapRequest("the object list is not UTF-8 link-format") from None
        if any(ord(c) < 0x20 for c in text):
            raise InvalidBootstrapRequest("the object list holds control characters")
        return text

    def register(self, query: Sequence[str], payload: bytes, peer: Peer, address: str) -> str:
        """LwM2M Register (``POST /rd?ep=&lt=&lwm2m=&b=``): record the lock's registration and return its
        location (``rd/{id}``, sent back as Location-Path; 2.01). A new Register replaces the lock's old one."""
        audience = self._operational(peer)
        params = _query(query)
        endpoint = endpoint_of(params)
        record = self.devices.by_endpoint(endpoint)
        if record is not None and record.serial != audience:
            raise Lwm2mRefused(Status.FORBIDDEN, "the endpoint name belongs to another device")
        binding = params.get("b") or "U"
        if not binding or len(binding) > 4 or any(c not in "UTSNQ" for c in binding):
            raise InvalidBootstrapRequest("b must be made of U, T, S, N, Q")
        version = params.get("lwm2m") or "1.0"
        if len(version) > 8:
            raise InvalidBootstrapRequest("lwm2m is not a version")
        now = self._now()
        registration = Lwm2mRegistration(
            location=secrets.token_hex(4),
            audience=audience,
            endpoint=endpoint,
            lifetime=self._lifetime(params.get("lt"), 86400),
            binding=binding,
            lwm2m_version=version,
            object_links=self._links(payload),
            source=address,
            registered_at=now,
            last_contact=now,
        )
        self.registrations.put_registration(registration)
        log.info("%s registered as %s from %s (lifetime %d s)", audience, endpoint, address, registration.lifetime)
        return f"rd/{registration.location}"

    def update(self, location: str, query: Sequence[str], payload: bytes, peer: Peer, address: str) -> None:
        """LwM2M Update (``POST /rd/{id}``, optional ``lt``, ``b`` and object list): 2.04; 4.04 for a location
        that is not this lock's live registration (the lock registers again)."""
        audience = self._operational(peer)
        params = _query(query)
        lifetime = self._lifetime(params["lt"], 0) if "lt" in params else None
        binding = params.get("b")
        if binding is not None and (not binding or len(binding) > 4 or any(c not in "UTSNQ" for c in binding)):
            raise InvalidBootstrapRequest("b must be made of U, T, S, N, Q")
        links = self._links(payload) if payload else None
        current = self.registrations.get_registration(location)
        if current is None or current.audience != audience:
            raise Lwm2mRefused(Status.NOT_FOUND, "no such registration; register again")
        updated = self.registrations.update_registration(
            location, now=self._now(), lifetime=lifetime, binding=binding, object_links=links, source=address
        )
        if updated is None:
            raise Lwm2mRefused(Status.NOT_FOUND, "no such registration; register again")

    def deregister(self, location: str, peer: Peer) -> None:
        """LwM2M De-register (``DELETE /rd/{id}``): 2.02; 4.04 for an unknown location."""
        audience = self._operational(peer)
        current = self.registrations.get_registration(location)
        if current is None or current.audience != audience or not self.registrations.delete_registration(location):
            raise Lwm2mRefused(Status.NOT_FOUND, "no such registration")
        log.info("%s de-registered", audience)


def open_bootstrap_service(server: AuthorizationServer) -> tuple[BootstrapService, Callable[[], None]]:
    """The bootstrap service of an ``ostiary as serve`` deployment: the device store ``$OSTIARY_HOME/devices.db``
    (created empty when no factory batch was made yet, so that every device is refused until one is), the AS's
    storage for keys and registrations, and the AS's current token-signing key. Returns it with its closer.

    :raises RuntimeError: the AS has no signing key (``ostiary as init`` makes one).
    """
    from as_server.bootstrap.device_db import DEVICE_DB_FILE, SqliteDeviceStore
    from as_server.bootstrap.operational import OperationalCredentials, RsTemplate
    from as_server.sealing import MasterKey

    settings = server.settings
    signing = server.storage.signing_key()
    if signing is None:
        raise RuntimeError("the AS has no token-signing key; run 'ostiary as init'")
    master_key = MasterKey.load(settings.master_key_file)
    devices = SqliteDeviceStore(settings.home / DEVICE_DB_FILE, master_key)
    try:
        credentials = OperationalCredentials(
            server.storage,
            rotation_age=settings.key_rotation_age,
            overlap=settings.key_overlap or None,
            template=RsTemplate(),
            exi_upload_window=settings.exi_upload_window,
        )
        service = BootstrapService(
            devices=devices,
            credentials=credentials,
            registrations=server.storage,
            as_public_key=signing.key,
            server_uri=settings.effective_bootstrap_server_uri,
            lifetime=settings.bootstrap_lifetime,
            allow_unauthenticated=bool(settings.bootstrap_plain_port),
            clock=server.clock,
        )
    except BaseException:
        devices.close()
        raise
    return service, devices.close
