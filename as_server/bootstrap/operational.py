"""Operational credentials of bootstrapped locks at the AS: key generations, delivery, rotation, retirement and
revocation (issue #7; ``docs/bootstrap-design.md``, "Operational keys at the AS").

Framework-free: the bootstrap server's transport calls :class:`OperationalCredentials` with ``now``; storage is
injected (:class:`~as_server.storage.base.OperationalKeyStore`, each change one transaction there).

* A lock's audience is its serial number; generation *g* of its key has the PSK identity ``"{audience}#{g}"``
  (LwM2M Security object resource 3, at most :data:`MAX_IDENTITY_BYTES` bytes: tinydtls's limit) and 16 random
  bytes of key material (resource 5), which are both the AS<->lock token key (COSE Encrypt0,
  :func:`~as_server.models.operational_cose_key`) and the lock's DTLS PSK towards the AS.
* **Delivery** (:meth:`OperationalCredentials.key_for_delivery`): the newest usable generation, or a new one when
  none is usable or the newest is older than the rotation age. Re-bootstrapping re-delivers the same generation.
* **Confirmation** (:meth:`~OperationalCredentials.confirm_delivery`): the first delivery of a generation newer
  than every one delivered before switches token issuance to it and retires the older ones after ``overlap``.
* **Retirement** (:meth:`~OperationalCredentials.retire_expired`), **rotation**
  (:meth:`~OperationalCredentials.rotate`) and **revocation** (:meth:`~OperationalCredentials.revoke`).

LwM2M registrations at ``/rd`` (:func:`register`) are recorded with a random location id (:func:`new_location`).
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ace_core.keys import CoseKey
from ace_core.registry import AceProfile
from ace_core.scope import AifScope
from as_server.audit import ACTOR_SYSTEM
from as_server.models import Lwm2mRegistration, OperationalKey, ResourceServer, ScopeFormat, TokenForm
from as_server.storage.base import DuplicateError, NotFoundError, StateError, Storage

__all__ = [
    "DOOR_LOCK_RESOURCES",
    "KEY_BYTES",
    "MAX_IDENTITY_BYTES",
    "IdentityTooLong",
    "LockRevoked",
    "OperationalCredentials",
    "OperationalKey",
    "RsTemplate",
    "UnknownLock",
    "new_location",
    "parse_operational_identity",
    "register",
]

#: Longest PSK identity (bytes) the locks' DTLS stack (tinydtls) takes.
MAX_IDENTITY_BYTES: Final = 32
#: Bytes of operational key material: an AES-128 key (AES-CCM-16-64-128 tokens, the DTLS PSK).
KEY_BYTES: Final = 16
#: What the reference door lock serves (``resource_server/examples/door_lock.py``), as AIF (RFC 9237).
DOOR_LOCK_RESOURCES: Final = AifScope.parse_spec("/lock:GET,PUT,POST /battery:GET /log:GET").to_cbor()
_LOCATION_BYTES: Final = 4  # 8 hex digits
_ATTEMPTS: Final = 5  # concurrent creators of one generation: the loser re-reads and retries


class IdentityTooLong(ValueError):
    """The operational PSK identity ``audience#generation`` would exceed :data:`MAX_IDENTITY_BYTES` bytes."""


class UnknownLock(NotFoundError):
    """No resource server with this audience."""


class LockRevoked(StateError):
    """The lock's credentials are revoked: it gets new ones at its next bootstrap, not by a rotation."""


def parse_operational_identity(identity: bytes) -> tuple[str, int] | None:
    """The audience and generation of an operational PSK identity (``audience#generation``, split at the last
    ``#``), or ``None`` when it is not one: not UTF-8, no ``#``, an empty audience, or a generation that is not a
    positive decimal number written without sign or leading zeros.

    >>> parse_operational_identity(b"L1-00000042#3")
    ('L1-00000042', 3)
    >>> parse_operational_identity(b"a#b#12")
    ('a#b', 12)
    >>> [parse_operational_identity(i) for i in (b"L1#0", b"L1#03", b"L1#+3", b"#3", b"bs-k3v", b"L1#\\xff")]
    [None, None, None, None, None, None]
    """
    if len(identity) > MAX_IDENTITY_BYTES:
        return None
    try:
        text = identity.decode("utf-8")
    except UnicodeDecodeError:
        return None
    audience, sep, number = text.rpartition("#")
    if not sep or not audience or not number:
        return None
    # ASCII digits only (str.isdigit also takes other scripts' digits), first one not 0.
    if not (number.isascii() and number.isdigit()) or number[0] == "0":
        return None
    return audience, int(number)


def _identity(audience: str, generation: int) -> bytes:
    identity = f"{audience}#{generation}".encode()
    if len(identity) > MAX_IDENTITY_BYTES:
        raise IdentityTooLong(
            f"PSK identity {audience}#{generation} is {len(identity)} bytes; locks take at most {MAX_IDENTITY_BYTES}"
        )
    return identity


@dataclass(frozen=True, slots=True, kw_only=True)
class RsTemplate:
    """How a bootstrapped lock is registered as a resource server at its first delivery (its audience and token
    key come from the bootstrap). Defaults: the reference door lock (OSCORE, AIF, Encrypt0 tokens)."""

    profiles: frozenset[AceProfile] = frozenset({AceProfile.COAP_OSCORE})
    scope_format: ScopeFormat = ScopeFormat.AIF
    #: AIF CBOR (RFC 9237) or space-separated text scopes.
    resources: bytes | str | None = DOOR_LOCK_RESOURCES
    token_form: TokenForm = TokenForm.ENCRYPT0
    max_lifetime: int = 3600
    compact_claims: bool = True
    has_clock: bool = True

    def resource_server(self, audience: str, shared_key: CoseKey, *, now: int) -> ResourceServer:
        """The enabled resource server ``audience`` with token key ``shared_key``."""
        return ResourceServer(
            audience=audience,
            shared_key=shared_key,
            profiles=self.profiles,
            scope_format=self.scope_format,
            resources=self.resources,
            token_form=self.token_form,
            max_lifetime=self.max_lifetime,
            enabled=True,
            created_at=now,
            compact_claims=self.compact_claims,
            has_clock=self.has_clock,
        )


def _revoked(rs: ResourceServer) -> bool:
    """Whether ``rs`` is in the state :meth:`OperationalCredentials.revoke` leaves it in: disabled, key erased."""
    return not rs.enabled and rs.shared_key is None


class OperationalCredentials:
    """The AS's operational keys of bootstrapped locks (see the module documentation). Thread-safe as the storage
    is; concurrent creators of one generation (threads or processes) are resolved by the storage's uniqueness.

    :param storage: where keys, resource servers and tokens live.
    :param rotation_age: seconds after which a delivery brings a new generation (setting ``key_rotation_age``).
    :param overlap: seconds an older generation keeps working after a newer one is confirmed; ``None``: the
        resource server's ``max_lifetime`` (plus ``exi_upload_window`` for one without a clock), so every token
        made with the old key has expired when it retires.
    :param template: the resource server created for a lock at its first delivery.
    :param random: the source of key material.
    :param exi_upload_window: the AS setting of that name (RFC 9200 §5.10.3 tokens of locks without a clock).
    """

    def __init__(
        self,
        storage: Storage,
        *,
        rotation_age: int,
        overlap: int | None = None,
        template: RsTemplate | None = None,
        random: Callable[[int], bytes] = secrets.token_bytes,
        exi_upload_window: int = 0,
    ) -> None:
        if rotation_age < 1:
            raise ValueError("rotation_age must be at least 1 second")
        if overlap is not None and overlap < 0:
            raise ValueError("overlap must not be negative")
        self._storage = storage
        self.rotation_age = rotation_age
        self._overlap = overlap
        self.template = template if template is not None else RsTemplate()
        self._random = random
        self._exi_upload_window = exi_upload_window

    def __repr__(self) -> str:
        return f"OperationalCredentials(rotation_age={self.rotation_age}, overlap={self._overlap})"

    def _new_key(self, audience: str, generation: int, now: int) -> OperationalKey:
        _identity(audience, generation)
        key = self._random(KEY_BYTES)
        if len(key) != KEY_BYTES:
            raise ValueError(f"the random source gave {len(key)} bytes, not {KEY_BYTES}")
        return OperationalKey(audience=audience, generation=generation, key=key, created_at=now)

    def key_for_delivery(self, audience: str, *, now: int, delivered: bool = False) -> OperationalKey:
        """The generation a bootstrap of ``audience`` delivers now (design: "Delivery").

        The newest generation with key material that is not retired, unless there is none or it is
        ``rotation_age`` old: then a new generation is created first. A lock without a resource server gets one
        (:attr:`template`, enabled, the new key as its token key); a revoked one is enabled again with the new key.

        :param delivered: the caller delivers the key in the same breath (a Bootstrap-Pack answer). A generation
            created for a lock with no usable key is then stored already delivered, in the same transaction, and
            needs no :meth:`confirm_delivery` (it has no older key to retire and is already the token key): one
            write instead of two on a lock's first bootstrap.

        :raises IdentityTooLong: the audience is too long for a PSK identity.
        """
        _identity(audience, 1)
        for _ in range(_ATTEMPTS):
            # Keys first: a creator commits its key and the lock's resource server together, so a key seen here
            # means its resource server is seen next. (Read the other way round, a concurrent first delivery
            # committing in between looked like "keys but no resource server" and made a second generation.)
            keys = self._storage.operational_keys(audience)
            rs = self._storage.get_resource_server(audience)
            usable = [k for k in keys if k.usable(now)]
            newest = usable[-1] if usable else None
            revoked = rs is not None and _revoked(rs)
            if rs is not None and not revoked and newest is not None and newest.created_at + self.rotation_age > now:
                return newest
            generation = (keys[-1].generation if keys else 0) + 1
            new = self._new_key(audience, generation, now)
            record: ResourceServer | None = None
            if rs is None:
                record = self.template.resource_server(audience, new.cose_key(), now=now)
            elif revoked:
                record = dataclasses.replace(rs, enabled=True, shared_key=new.cose_key())
            if record is not None and delivered and not usable:
                new = dataclasses.replace(new, delivered_at=now)
            try:
                self._storage.add_operational_key(new, resource_server=record, actor=ACTOR_SYSTEM)
            except DuplicateError:
                continue  # created by someone else meanwhile: read again
            return new
        raise StateError(f"could not create a key generation for {audience!r}: too many concurrent attempts")

    def overlap_for(self, audience: str) -> int:
        """How long older generations keep working after a newer one is confirmed (see the class)."""
        if self._overlap is not None:
            return self._overlap
        rs = self._storage.get_resource_server(audience)
        if rs is None:
            return 0
        return rs.max_lifetime + (0 if rs.has_clock else self._exi_upload_window)

    def confirm_delivery(self, audience: str, generation: int, *, now: int) -> None:
        """The lock has the generation (Bootstrap-Finish answered 2.04, or the pack sent; design: "Confirmation").

        The first confirmation of a generation newer than every one delivered before makes it the resource
        server's token key at once and retires every older generation at ``now + overlap``. Idempotent: later
        confirmations, and those of erased generations, change nothing.

        :raises UnknownLock: no such generation.
        """
        try:
            self._storage.confirm_operational_key(
                audience, generation, now=now, retire_at=now + self.overlap_for(audience)
            )
        except NotFoundError as exc:
            raise UnknownLock(str(exc)) from None

    def psk_for_identity(self, identity: bytes, *, now: int) -> OperationalKey | None:
        """The generation a DTLS handshake's PSK identity names, if usable at ``now`` (key material present, not
        retired); ``None`` for anything else. One cached storage read: this runs for every handshake."""
        parsed = parse_operational_identity(identity)
        if parsed is None:
            return None
        key = self._storage.operational_key(*parsed)
        return key if key is not None and key.usable(now) else None

    def rotate(self, audience: str, *, now: int, actor: str = ACTOR_SYSTEM) -> OperationalKey:
        """A new, undelivered generation (design: "Rotation"); the lock fetches it at its next pull or bootstrap.

        :raises UnknownLock: no resource server ``audience``.
        :raises LockRevoked: its credentials are revoked (it gets new ones at its next bootstrap).
        :raises IdentityTooLong:
        """
        for _ in range(_ATTEMPTS):
            rs = self._storage.get_resource_server(audience)
            if rs is None:
                raise UnknownLock(f"no resource server {audience!r}")
            if _revoked(rs):
                raise LockRevoked(f"{audience!r} is revoked; it gets new credentials at its next bootstrap")
            keys = self._storage.operational_keys(audience)
            new = self._new_key(audience, (keys[-1].generation if keys else 0) + 1, now)
            try:
                self._storage.add_operational_key(new, actor=actor)
            except DuplicateError:
                continue
            return new
        raise StateError(f"could not create a key generation for {audience!r}: too many concurrent attempts")

    def revoke(self, audience: str, *, now: int, actor: str = ACTOR_SYSTEM) -> int:
        """Revocation (design: "Revocation"): every generation retired now and erased, the resource server disabled
        (its token key erased), its unexpired tokens revoked and its LwM2M registration dropped, in one transaction.
        A later bootstrap of the lock (:meth:`key_for_delivery`) enables it again with a new generation.

        :returns: the number of tokens revoked.
        :raises UnknownLock:
        """
        try:
            return self._storage.revoke_operational_keys(audience, actor=actor, now=now)
        except NotFoundError as exc:
            raise UnknownLock(str(exc)) from None

    def retire_expired(self, *, now: int) -> int:
        """Erase the key material of every generation whose ``retire_at`` has come; how many (design:
        "Retirement"). :meth:`psk_for_identity` refuses them from ``retire_at`` on anyway."""
        return self._storage.erase_retired_keys(now=now)

    def keys(self, audience: str) -> list[OperationalKey]:
        """Every generation of ``audience``, oldest first."""
        return list(self._storage.operational_keys(audience))

    def due_for_rotation(self, *, now: int) -> list[str]:
        """The audiences whose newest generation has key material and is at least ``rotation_age`` old."""
        return [
            key.audience
            for key in self._storage.newest_operational_keys()
            if key.key is not None and key.created_at + self.rotation_age <= now
        ]


def new_location(random: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A random registration location id: 8 hex digits (``Location-Path: rd/{id}``)."""
    return random(_LOCATION_BYTES).hex()


def register(
    storage: Storage,
    *,
    audience: str,
    endpoint: str,
    lifetime: int,
    now: int,
    binding: str = "U",
    lwm2m_version: str = "1.1",
    object_links: str = "",
    source: str = "",
    random: Callable[[int], bytes] = secrets.token_bytes,
) -> Lwm2mRegistration:
    """Record a LwM2M Register of ``audience`` (replacing its previous registration) under a new random location.

    :raises ValueError: object links too long or a negative lifetime.
    """
    for _ in range(_ATTEMPTS):
        registration = Lwm2mRegistration(
            location=new_location(random),
            audience=audience,
            endpoint=endpoint,
            lifetime=lifetime,
            binding=binding,
            lwm2m_version=lwm2m_version,
            object_links=object_links,
            source=source,
            registered_at=now,
            last_contact=now,
        )
        try:
            storage.put_registration(registration)
        except DuplicateError:
            continue  # location taken (2^-32 per registration): draw again
        return registration
    raise StateError("could not draw a free registration location")
