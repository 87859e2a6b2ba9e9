"""The lock's operational credentials (issue #7, "The lock (device side)" in ``docs/bootstrap-design.md``): what a
bootstrap delivered, in key slots, kept in one file that is replaced atomically.

**What is kept** (:class:`Credentials`): the lock's audience at the AS, the AS's URI (where ``/rd`` is), the AS's
token-signing public key (a CBOR COSE_Key, RFC 9052 §7), the Short Server ID and registration lifetime, and up to
three key slots (:class:`KeySlot`: identity ``"{audience}#{generation}"``, the 16-byte AS<->lock key, generation):

* ``current`` -- what tokens are expected under, and what the lock registers with until ``next`` exists;
* ``next`` -- a newer key a bootstrap delivered; the AS switches token issuance to it when the delivery is
  confirmed, so the lock keeps verifying with ``current`` *and* ``next``; the first token that verifies with
  ``next`` swaps them (:meth:`Credentials.promote`);
* ``previous`` -- the key ``next`` replaced, still accepted until ``previous_until`` (tokens issued just before
  the switch stay valid for their lifetime).

**Rules** (:meth:`Credentials.accept_delivery`): a delivered key equal to ``current``'s (or ``next``'s) changes no
slot (re-bootstrapping is idempotent); a different key becomes ``next``, replacing an older ``next``; the very first
delivery becomes ``current``. The AS URI, public key, SSID and lifetime follow the newest delivery.

**Retirement** (:meth:`Credentials.retire_all_but_newest`, :meth:`CredentialKeeper.drop_refused`): when the AS
refuses the identity the lock used (``ostiary as rs revoke`` erases every generation at once) and a bootstrap then
delivers a new key, that is not a rotation: the AS has already erased every key the lock held. The delivered key
becomes ``current`` at once, with no ``next`` and no ``previous`` overlap, so a token made with a leaked old key is
refused from then on. Deciding *that* the identity was refused is the registration client's job
(:class:`~resource_server.transport.lwm2m_client.DeviceLink`); the keeper only applies it and tells its retirement
listeners, which drop the tokens the lock holds.

**The file** (:class:`CredentialStore`): a CBOR map with the integer labels of :class:`CredentialLabel` and a
format version. It is written to a temporary file in the same directory (mode 0600), fsynced, renamed over the old
one and the directory fsynced: a crash leaves either the old file or the new one, never a mix. A file that does not
decode raises :class:`CredentialsError` naming the file. Secrets never appear in ``repr`` or in log lines.

>>> slot = KeySlot(identity=b"L1-00000042#3", key=bytes(16), generation=3)
>>> slot.audience, slot
('L1-00000042', KeySlot(identity=b'L1-00000042#3', generation=3))
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import Any, Final

from ace_core import cbor
from ace_core.errors import WireFormatError
from ace_core.keys import CoseKey
from ace_core.registry import CoseAlgorithm

__all__ = [
    "DEFAULT_OVERLAP",
    "FORMAT_VERSION",
    "KEY_BYTES",
    "TOKEN_KEY_ALG",
    "CredentialLabel",
    "CredentialStore",
    "Credentials",
    "CredentialsError",
    "DeliveredAccount",
    "KeySlot",
    "CredentialKeeper",
    "RetirementListener",
    "SlotKeys",
    "parse_identity",
]

log = logging.getLogger("ostiary.lock.credentials")

#: Version of the file format written by :class:`CredentialStore`.
FORMAT_VERSION: Final = 1
#: The operational key is 16 bytes: the DTLS PSK to the AS (tinydtls takes at most 16) and an AES-128 token key.
KEY_BYTES: Final = 16
#: The algorithm of the token key, as ``ostiary as rs add`` makes the AS<->RS key (AES-CCM-16-64-128).
TOKEN_KEY_ALG: Final = CoseAlgorithm.AES_CCM_16_64_128
#: Seconds the replaced key stays valid after a swap when the caller gives no overlap (tokens issued just before
#: the AS switched keep working this long; the AS retires the old identity after its own overlap).
DEFAULT_OVERLAP: Final = 3600
#: tinydtls takes PSK identities of at most 32 bytes (docs/bootstrap-design.md, "Names").
MAX_IDENTITY_BYTES: Final = 32
#: A credentials file is a few hundred bytes; anything much larger is not one.
MAX_FILE_SIZE: Final = 16384


class CredentialsError(ValueError):
    """The credentials file is unreadable or malformed, or a delivery breaks the slot rules."""


class CredentialLabel(IntEnum):
    """CBOR map labels of the credentials file (this format's own numbering, not an IANA registry)."""

    VERSION = 0
    AUDIENCE = 1
    SERVER_URI = 2
    SERVER_PUBLIC_KEY = 3
    SHORT_SERVER_ID = 4
    LIFETIME = 5
    CURRENT = 6
    NEXT = 7
    PREVIOUS = 8
    PREVIOUS_UNTIL = 9
    UPDATED_AT = 10
    SECURITY_INSTANCE = 11
    SERVER_INSTANCE = 12


def parse_identity(identity: bytes) -> tuple[str, int]:
    """Split an operational PSK identity ``b"{audience}#{generation}"`` at its last ``#``.

    :raises CredentialsError: not UTF-8, longer than 32 bytes, no ``#``, an empty audience, or a generation that is
        not a positive decimal number.
    """
    if not isinstance(identity, bytes) or not 1 <= len(identity) <= MAX_IDENTITY_BYTES:
        raise CredentialsError(f"an operational identity is 1-{MAX_IDENTITY_BYTES} bytes")
    try:
        text = identity.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialsError("an operational identity is UTF-8 text") from None
    audience, sep, generation = text.rpartition("#")
    if not sep or not audience:
        raise CredentialsError(f"identity {text!r} is not 'audience#generation'")
    if not (generation.isascii() and generation.isdigit()) or int(generation) < 1 or generation.startswith("0"):
        raise CredentialsError(f"identity {text!r} has no generation number after '#'")
    return audience, int(generation)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeySlot:
    """One operational key: its PSK identity, the 16-byte key (never in ``repr``) and its generation."""

    identity: bytes
    key: bytes = field(repr=False)
    generation: int

    def __post_init__(self) -> None:
        audience, generation = parse_identity(self.identity)
        if generation != self.generation:
            raise CredentialsError(f"identity {self.identity!r} does not name generation {self.generation}")
        if not isinstance(self.key, bytes) or len(self.key) != KEY_BYTES:
            raise CredentialsError(f"an operational key is {KEY_BYTES} bytes")

    @property
    def audience(self) -> str:
        """The lock's audience: the identity before its last ``#``."""
        return parse_identity(self.identity)[0]

    def cose_key(self) -> CoseKey:
        """The token key: a symmetric COSE_Key (AES-CCM-16-64-128) whose ``kid`` is the identity."""
        return CoseKey.symmetric(self.key, alg=TOKEN_KEY_ALG, kid=self.identity)

    def to_cbor_list(self) -> list[Any]:
        return [self.identity, self.key, self.generation]

    @classmethod
    def from_cbor_list(cls, value: object) -> KeySlot:
        if not isinstance(value, list) or len(value) != 3:
            raise CredentialsError("a key slot is [identity, key, generation]")
        identity, key, generation = value
        if type(identity) is not bytes or type(key) is not bytes or type(generation) is not int:
            raise CredentialsError("a key slot is [bstr, bstr, int]")
        return cls(identity=identity, key=key, generation=generation)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveredAccount:
    """The LwM2M Server Account a bootstrap delivered, as the lock keeps it (the validated ``/0/x`` + ``/1/y``).

    :param server_uri: ``/0/x/0``, ``coaps://`` (where the lock registers).
    :param slot: identity ``/0/x/3``, key ``/0/x/5`` and the generation the identity names.
    :param server_public_key: ``/0/x/4``, the AS's token-signing public key as a CBOR COSE_Key.
    :param short_server_id: ``/0/x/10`` = ``/1/y/0``.
    :param lifetime: ``/1/y/1``, the registration lifetime in seconds.
    :param security_instance: ``x``; :param server_instance: ``y`` (where Bootstrap-Discover lists them).
    """

    server_uri: str
    slot: KeySlot
    server_public_key: bytes
    short_server_id: int
    lifetime: int
    security_instance: int = 1
    server_instance: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """The lock's operational credentials with their key slots (module docstring). Immutable: every change returns
    a new object, which the caller stores (:meth:`CredentialStore.save`)."""

    audience: str
    server_uri: str
    server_public_key: bytes
    short_server_id: int
    lifetime: int
    current: KeySlot
    next: KeySlot | None = None
    previous: KeySlot | None = None
    previous_until: float | None = None
    updated_at: float = 0.0
    security_instance: int = 1
    server_instance: int = 0

    def __post_init__(self) -> None:
        for slot in self.slots():
            if slot.audience != self.audience:
                raise CredentialsError(f"slot {slot.identity!r} is not for audience {self.audience!r}")
        if self.next is not None and self.next.key == self.current.key:
            raise CredentialsError("next holds the current key")
        if (self.previous is None) != (self.previous_until is None):
            raise CredentialsError("previous and previous_until go together")
        if not 1 <= self.short_server_id <= 65534:
            raise CredentialsError("Short Server ID must be 1..65534")
        if self.lifetime < 1:
            raise CredentialsError("lifetime must be positive")

    # -- slots ---------------------------------------------------------------------------------------------------

    def slots(self) -> tuple[KeySlot, ...]:
        """Every slot held, in verification order: current, next, previous (expired or not)."""
        return tuple(s for s in (self.current, self.next, self.previous) if s is not None)

    def verification_slots(self, now: float) -> tuple[KeySlot, ...]:
        """The slots tokens may verify with at ``now``: current, next, and previous until ``previous_until``."""
        out = [self.current]
        if self.next is not None:
            out.append(self.next)
        if self.previous is not None and self.previous_until is not None and now < self.previous_until:
            out.append(self.previous)
        return tuple(out)

    def verification_keys(self, now: float) -> list[CoseKey]:
        """:meth:`verification_slots` as token keys (:meth:`KeySlot.cose_key`)."""
        return [slot.cose_key() for slot in self.verification_slots(now)]

    @property
    def newest(self) -> KeySlot:
        """The slot the lock registers with: ``next`` when there is one (the AS switches to it on delivery)."""
        return self.next if self.next is not None else self.current

    # -- changes -------------------------------------------------------------------------------------------------

    @classmethod
    def first(cls, account: DeliveredAccount, *, now: float) -> Credentials:
        """The credentials after the very first delivery: its key is ``current``."""
        return cls(
            audience=account.slot.audience,
            server_uri=account.server_uri,
            server_public_key=account.server_public_key,
            short_server_id=account.short_server_id,
            lifetime=account.lifetime,
            current=account.slot,
            updated_at=now,
            security_instance=account.security_instance,
            server_instance=account.server_instance,
        )

    def accept_delivery(self, account: DeliveredAccount, *, now: float) -> Credentials:
        """The credentials after a bootstrap delivered ``account`` (module docstring, "Rules").

        :raises CredentialsError: the delivery is for another audience.
        """
        slot = account.slot
        if slot.audience != self.audience:
            raise CredentialsError(f"delivered identity {slot.identity!r} is not for audience {self.audience!r}")
        changes: dict[str, Any] = {
            "server_uri": account.server_uri,
            "server_public_key": account.server_public_key,
            "short_server_id": account.short_server_id,
            "lifetime": account.lifetime,
            "security_instance": account.security_instance,
            "server_instance": account.server_instance,
        }
        if slot.key != self.current.key and (self.next is None or slot.key != self.next.key):
            if slot.generation <= self.current.generation:
                log.warning(
                    "delivered generation %d is not newer than the current %d; keeping it as next anyway",
                    slot.generation,
                    self.current.generation,
                )
            changes["next"] = slot
        metadata_same = all(getattr(self, name) == value for name, value in changes.items())
        if metadata_same:
            return self
        return dataclasses.replace(self, **changes, updated_at=now)

    def promote(self, generation: int, *, now: float, overlap: float = DEFAULT_OVERLAP) -> Credentials:
        """Swap ``next`` (of ``generation``) into ``current``; the old current stays as ``previous`` until
        ``now + overlap``.

        :raises CredentialsError: ``next`` is not of ``generation``.
        """
        if self.next is None or self.next.generation != generation:
            raise CredentialsError(f"no next key of generation {generation} to promote")
        return dataclasses.replace(
            self,
            current=self.next,
            next=None,
            previous=self.current,
            previous_until=now + overlap,
            updated_at=now,
        )

    def retire_all_but_newest(self, *, now: float) -> Credentials:
        """Keep only the newest slot, as ``current`` (no ``next``, no ``previous`` overlap): every other key was
        retired by the AS (module docstring, "Retirement"). Unchanged when the newest slot is the only one."""
        if self.next is None and self.previous is None:
            return self
        return dataclasses.replace(
            self, current=self.newest, next=None, previous=None, previous_until=None, updated_at=now
        )

    def expire_previous(self, *, now: float) -> Credentials:
        """Drop ``previous`` once ``previous_until`` has passed (unchanged otherwise)."""
        if self.previous_until is None or now < self.previous_until:
            return self
        return dataclasses.replace(self, previous=None, previous_until=None, updated_at=now)

    # -- the file format -----------------------------------------------------------------------------------------

    def to_cbor(self) -> bytes:
        """The file's bytes (a CBOR map, :class:`CredentialLabel`)."""
        L = CredentialLabel  # noqa: N806
        m: dict[int, Any] = {
            L.VERSION: FORMAT_VERSION,
            L.AUDIENCE: self.audience,
            L.SERVER_URI: self.server_uri,
            L.SERVER_PUBLIC_KEY: self.server_public_key,
            L.SHORT_SERVER_ID: self.short_server_id,
            L.LIFETIME: self.lifetime,
            L.CURRENT: self.current.to_cbor_list(),
            L.UPDATED_AT: self.updated_at,
            L.SECURITY_INSTANCE: self.security_instance,
            L.SERVER_INSTANCE: self.server_instance,
        }
        if self.next is not None:
            m[L.NEXT] = self.next.to_cbor_list()
        if self.previous is not None:
            m[L.PREVIOUS] = self.previous.to_cbor_list()
            m[L.PREVIOUS_UNTIL] = self.previous_until
        return cbor.dumps({int(k): v for k, v in m.items()})

    @classmethod
    def from_cbor(cls, data: bytes) -> Credentials:
        """Decode :meth:`to_cbor`'s bytes.

        :raises CredentialsError: not CBOR, another format version, a missing or mistyped field.
        """
        try:
            m = cbor.loads(data)
        except WireFormatError as exc:
            raise CredentialsError(f"not CBOR: {exc.detail}") from None
        if not isinstance(m, dict):
            raise CredentialsError("not a CBOR map")
        L = CredentialLabel  # noqa: N806
        if m.get(L.VERSION) != FORMAT_VERSION:
            raise CredentialsError(f"format version {m.get(L.VERSION)!r} is not {FORMAT_VERSION}")

        def take(label: CredentialLabel, kind: type | tuple[type, ...], *, required: bool = True) -> Any:
            value = m.get(int(label))
            if value is None:
                if required:
                    raise CredentialsError(f"missing {label.name.lower()}")
                return None
            if not isinstance(value, kind) or isinstance(value, bool):
                raise CredentialsError(f"{label.name.lower()} has the wrong type")
            return value

        nxt = m.get(int(L.NEXT))
        previous = m.get(int(L.PREVIOUS))
        until = take(L.PREVIOUS_UNTIL, (int, float), required=False)
        try:
            return cls(
                audience=take(L.AUDIENCE, str),
                server_uri=take(L.SERVER_URI, str),
                server_public_key=take(L.SERVER_PUBLIC_KEY, bytes),
                short_server_id=take(L.SHORT_SERVER_ID, int),
                lifetime=take(L.LIFETIME, int),
                current=KeySlot.from_cbor_list(m.get(int(L.CURRENT))),
                next=None if nxt is None else KeySlot.from_cbor_list(nxt),
                previous=None if previous is None else KeySlot.from_cbor_list(previous),
                previous_until=None if until is None else float(until),
                updated_at=float(take(L.UPDATED_AT, (int, float), required=False) or 0.0),
                security_instance=_default(take(L.SECURITY_INSTANCE, int, required=False), 1),
                server_instance=_default(take(L.SERVER_INSTANCE, int, required=False), 0),
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, CredentialsError):
                raise
            raise CredentialsError(str(exc)) from None


def _utc(timestamp: float) -> str:
    """``timestamp`` (POSIX seconds) as ISO 8601 UTC, e.g. ``2026-11-24T09:30:00Z``, for log lines."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _default(value: int | None, default: int) -> int:
    return default if value is None else value


class CredentialStore:
    """The credentials file: :meth:`load` and atomic :meth:`save` (module docstring, "The file").

    :param path: the file (its directory must exist; the temporary file is created next to it).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"CredentialStore({str(self.path)!r})"

    def exists(self) -> bool:
        """Whether a credentials file is there (it may still be corrupt: :meth:`load` says)."""
        return self.path.exists()

    def load(self) -> Credentials | None:
        """The stored credentials, or ``None`` when there is no file yet.

        :raises CredentialsError: the file is unreadable, too large or malformed (the message names the file).
        """
        try:
            with self.path.open("rb") as fp:
                data = fp.read(MAX_FILE_SIZE + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CredentialsError(f"cannot read {self.path}: {exc.strerror}") from None
        if len(data) > MAX_FILE_SIZE:
            raise CredentialsError(f"{self.path} is larger than {MAX_FILE_SIZE} bytes: not a credentials file")
        try:
            return Credentials.from_cbor(data)
        except CredentialsError as exc:
            raise CredentialsError(f"{self.path} is corrupt ({exc}); remove it to bootstrap again") from None

    def save(self, credentials: Credentials) -> None:
        """Replace the file atomically: temporary file (mode 0600) in the same directory, fsync, rename, fsync of
        the directory. On any failure the old file is left as it was and the temporary file removed.

        :raises OSError: the directory is not writable, the disk is full, ...
        """
        data = credentials.to_cbor()
        directory = self.path.parent
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as fp:
                fp.write(data)
                fp.flush()
                os.fsync(fp.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_directory(directory)
        log.info(
            "stored operational credentials in %s (current %s, next %s)",
            self.path,
            credentials.current.identity.decode(errors="replace"),
            "-" if credentials.next is None else credentials.next.identity.decode(errors="replace"),
        )


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX: fsync the directory)."""
    try:
        dfd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(dfd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(dfd)


class SlotKeys:
    """A :class:`~ace_core.cose.KeyResolver` over the credentials' slots that can change while the lock runs.

    A token names its key by ``kid``; the slot whose identity equals it is tried first and then every other slot
    (at most three), so tokens made under a key whose ``kid`` is not the identity still verify. :meth:`slot_of`
    tells which slot a verifying key belongs to (the promotion hook, :mod:`resource_server.authz_info`).
    """

    __slots__ = ("_by_key", "_keys")

    def __init__(self, keys: Iterable[tuple[KeySlot, CoseKey]] = (), *, extra: Iterable[CoseKey] = ()) -> None:
        self._keys: list[CoseKey] = []
        self._by_key: dict[bytes, KeySlot] = {}
        self.replace(keys, extra=extra)

    @classmethod
    def of(cls, credentials: Credentials, *, now: float) -> SlotKeys:
        """The verification slots of ``credentials`` at ``now`` (plus the AS's public key)."""
        keys = cls()
        keys.update(credentials, now=now)
        return keys

    def replace(self, keys: Iterable[tuple[KeySlot, CoseKey]], *, extra: Iterable[CoseKey] = ()) -> None:
        """Use these (slot, key) pairs, then the ``extra`` keys, from now on."""
        pairs = list(keys)
        self._keys = [key for _, key in pairs] + list(extra)
        self._by_key = {slot.key: slot for slot, _ in pairs}

    def update(self, credentials: Credentials, *, now: float) -> None:
        """Use the verification slots of ``credentials`` at ``now`` and the AS's public key from now on."""
        extra: list[CoseKey] = []
        try:
            extra.append(CoseKey.from_cbor(credentials.server_public_key))
        except (WireFormatError, ValueError, TypeError):
            log.warning("the AS public key in the credentials is not a COSE_Key; only the shared keys are used")
        self.replace(((slot, slot.cose_key()) for slot in credentials.verification_slots(now)), extra=extra)

    @property
    def keys(self) -> Sequence[CoseKey]:
        """The token keys, current first."""
        return tuple(self._keys)

    def resolve(self, kid: bytes | None, alg: int) -> Iterable[CoseKey]:
        """The slots' keys usable with ``alg``; the one whose ``kid`` matches first."""
        keys = self._keys
        if kid is not None and len(keys) > 1:
            keys = sorted(keys, key=lambda k: k.kid != kid)  # stable: otherwise current, next, previous
        return [k for k in keys if k.alg is None or k.alg == alg]

    def slot_of(self, key: CoseKey) -> KeySlot | None:
        """The slot ``key`` came from (``None`` for a key that is not a slot's)."""
        if not key.is_symmetric:
            return None
        return self._by_key.get(key.secret())

    def __repr__(self) -> str:
        return f"SlotKeys({len(self._keys)} keys)"


Listener = Callable[["Credentials", "Credentials | None"], None]
#: Called with the slots the AS retired (:meth:`CredentialKeeper.drop_refused`), after the change is stored and used.
RetirementListener = Callable[[tuple[KeySlot, ...]], None]


class CredentialKeeper:
    """The lock's credentials while it runs: the stored :class:`Credentials`, the :class:`SlotKeys` its resource
    server verifies tokens with, and the events that change them -- a delivery (:meth:`deliver`), a token under
    the ``next`` key (:meth:`on_verified_key`, the hook of :class:`~resource_server.authz_info.AuthzInfo`) and an
    identity the AS refused after a newer key was delivered (:meth:`drop_refused`). Every change is stored before it
    is used, and listeners (``listener(new, old)``) hear of it (the registration client re-registers with the new
    identity); retirement listeners (``listener(dropped_slots)``) hear of a :meth:`drop_refused` (the lock drops
    the tokens it holds).

    :param store: the credentials file.
    :param overlap: seconds the replaced key stays valid after a promotion (:meth:`Credentials.promote`).
    :param clock: wall-clock seconds (injectable for tests).
    :raises CredentialsError: the file exists but is corrupt.
    """

    def __init__(
        self, store: CredentialStore, *, overlap: float = DEFAULT_OVERLAP, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.overlap = overlap
        self.clock = clock
        self.credentials: Credentials | None = store.load()
        self.keys = SlotKeys()
        self.listeners: list[Listener] = []
        self.retirement_listeners: list[RetirementListener] = []
        if self.credentials is not None:
            self.keys.update(self.credentials, now=clock())

    def deliver(self, account: DeliveredAccount) -> Credentials:
        """Apply a bootstrap's delivery: store it (atomically) and use it.

        :raises CredentialsError: the delivery breaks the slot rules (nothing stored).
        :raises OSError: the file could not be written (nothing changed).
        """
        now = self.clock()
        old = self.credentials
        new = Credentials.first(account, now=now) if old is None else old.accept_delivery(account, now=now)
        if new is not old:
            self.store.save(new)
        self._use(new, old, now)
        return new

    def on_verified_key(self, key: CoseKey) -> None:
        """A token verified with ``key``: when that is the ``next`` slot, promote it (the AS has switched)."""
        creds = self.credentials
        if creds is None or creds.next is None or not key.is_symmetric or key.secret() != creds.next.key:
            return  # the hot path: one comparison per token
        now = self.clock()
        new = creds.promote(creds.next.generation, now=now, overlap=self.overlap)
        try:
            self.store.save(new)
        except OSError as exc:  # keep verifying with both keys; the file still has them as current and next
            log.error("cannot store the promoted key in %s: %s", self.store.path, exc.strerror)
        log.info(
            "the AS uses key generation %d now: promoted %s, %s accepted until %s",
            new.current.generation,
            new.current.identity.decode(errors="replace"),
            creds.current.identity.decode(errors="replace"),
            _utc(now + self.overlap),
        )
        self._use(new, creds, now)

    def drop_refused(self, refused: KeySlot) -> bool:
        """The AS refused ``refused`` -- the newest slot the lock had -- and a bootstrap has since delivered a newer
        key: the AS retired ``refused`` and every older key (a rotation retires the older generations first, a
        revocation all of them), so keep only the delivered key, as ``current`` with no overlap (module docstring,
        "Retirement"). Stored, used, then the retirement listeners hear of the dropped slots.

        Nothing changes (returns ``False``) when there are no credentials or the newest slot is still ``refused``:
        no newer key was delivered, so nothing shows the AS retired it (an unreachable AS answers no bootstrap).
        A file that cannot be written is logged; the keys are dropped in memory all the same (a restart would
        refuse the old identity again and come back here).

        :returns: whether slots were dropped.
        """
        creds = self.credentials
        if creds is None or creds.newest.key == refused.key:
            return False
        now = self.clock()
        dropped = tuple(slot for slot in creds.slots() if slot.key != creds.newest.key)
        new = creds.retire_all_but_newest(now=now)
        try:
            self.store.save(new)
        except OSError as exc:
            log.error("cannot store the credentials without the retired keys in %s: %s", self.store.path, exc.strerror)
        log.warning(
            "the AS refused %s and delivered %s: the AS retired the old keys (revoked); using %s alone from now on,"
            " no overlap for %s",
            refused.identity.decode(errors="replace"),
            new.current.identity.decode(errors="replace"),
            new.current.identity.decode(errors="replace"),
            ", ".join(slot.identity.decode(errors="replace") for slot in dropped),
        )
        self._use(new, creds, now)
        for listener in list(self.retirement_listeners):
            listener(dropped)
        return True

    def refresh(self) -> None:
        """Drop an expired ``previous`` slot (stored) and stop verifying with it."""
        creds = self.credentials
        if creds is None:
            return
        now = self.clock()
        new = creds.expire_previous(now=now)
        if new is not creds:
            try:
                self.store.save(new)
            except OSError as exc:
                log.error("cannot store %s: %s", self.store.path, exc.strerror)
            self._use(new, creds, now)

    def _use(self, new: Credentials, old: Credentials | None, now: float) -> None:
        self.credentials = new
        self.keys.update(new, now=now)
        if new is not old:
            for listener in list(self.listeners):
                listener(new, old)
