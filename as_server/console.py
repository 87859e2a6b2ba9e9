"""The facility manager console's logic, without the pages (issue #6). Framework-free, like the consent workflow:
the web console (:mod:`as_server.transport.console`), its JSON API (``/console/api/...``, same module) and the CLI
(``ostiary user sites``, ``ostiary as token revoke``) call :class:`ConsoleService`; the authorization checks live
here and in :class:`~as_server.consent.ConsentService` (approvals, denials and grant revocations go through it).

**Who may do what.**

* ``admin``: sees and may change everything.
* ``manager``: sees the access requests and grants they are an approver of (checked by
  :class:`~as_server.consent.ConsentService`) and may decide and revoke those; sees the locks, tokens and audit
  entries of *their sites* and may revoke those tokens; sees the client list and the policy, read-only.
* ``user``: nothing; the console refuses the sign-in (403).

**Devices** (issue #7, "Ownership"): the factory's device registry (``$OSTIARY_HOME/devices.db``, opened lazily with
the master key by :class:`DeviceRegistry`; the console never creates it). Admins see every device; managers see
the devices assigned to their sites (a device's site matched against their patterns as a lock's audience is) and
nothing else -- not the unclaimed ones. A manager claims a device by its enrolment id for one of their sites
(the first claim wins, as with ``ostiary factory claim``) and releases a device of their sites, which, as
``ostiary factory release`` does, also revokes the lock's operational credentials at the AS
(:meth:`~as_server.bootstrap.operational.OperationalCredentials.revoke`). Both are audited (``device.claimed``,
``device.released``, with the site as the entry's audience).

**Sites.** A manager's sites are audience patterns stored for them (table ``manager_sites``; set with
``ostiary user sites NAME PATTERN...`` or by an admin in the console): exact audiences (``front-door``) or globs
as policy files write them (``building-a/*``, :func:`fnmatch.fnmatchcase`, where ``*`` also matches ``/``). A
manager without sites sees no locks, tokens or audit entries (access requests they approve are still shown: the
policy named them). Audit entries without an audience (user and client changes) are shown to admins only, except
the manager's own actions.

**Sessions** (:class:`SessionCodec`). A signed-in browser holds one cookie: the session sealed with the
deployment's master key (AES-256-GCM, :class:`~as_server.sealing.MasterKey`, associated data
:data:`SESSION_AAD`), so every gunicorn worker and the CoAP process's siblings accept it and nothing is stored on the
server. It carries a random session id, the user name, the sign-in time and the time of the last request; each
request re-seals it with a new last-seen time (sliding idle timeout ``console_idle_timeout``), and it ends at the
latest ``console_session_lifetime`` after sign-in. The user record is read on every request, so disabling a user
or changing their role ends their console session at once. Sign-out clears the cookie; a copy of the cookie taken
before (it is ``HttpOnly``, so not by scripts) stays valid until its idle timeout, the price of keeping no server
state.

**CSRF.** Every form carries a token :class:`~as_server.oauth.signin.CsrfTokens` seals for the session id (signed
in) or for a random pre-session cookie (the sign-in form), bound to :data:`CONSOLE_BINDING`; a POST whose token
does not open, names another session or is older than the session lifetime is refused (403).
"""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import hashlib
import io
import logging
import secrets
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ace_core.errors import WireFormatError
from ace_core.keys import b64url_decode, b64url_encode
from ace_core.registry import AceProfile, CoseAlgorithm
from as_server import audit
from as_server.bootstrap.devices import (
    AlreadyClaimed,
    DeviceRecord,
    DeviceStoreError,
    EditableDeviceStore,
    NotClaimed,
    UnknownDevice,
    device_state,
)
from as_server.consent import Approver, ConsentService, grant_scope, parse_approval
from as_server.errors import ApiBadRequest, ApiConflict, ApiForbidden, ApiNotFound
from as_server.identity import PasswordHasher
from as_server.models import (
    AccessRequestStatus,
    AuditEntry,
    Client,
    ConsentRequest,
    Grant,
    GrantStatus,
    Group,
    IssuedToken,
    ResourceServer,
    TokenStatus,
    User,
    UserRole,
    glob_audiences,
)
from as_server.oauth.signin import CsrfTokens, Sealer, SignIn
from as_server.sealing import SealingError, generate_secret, hash_secret
from as_server.storage.base import AuditQuery, DuplicateError, NotFoundError, Storage
from policies.scopes import format_scope

if TYPE_CHECKING:
    from as_server.bootstrap.operational import OperationalCredentials
    from as_server.config import Settings

__all__ = [
    "CONSOLE_BINDING",
    "PAGE_SIZE",
    "SESSION_AAD",
    "ConsoleService",
    "ConsoleUser",
    "DeviceRegistry",
    "DeviceRow",
    "Page",
    "Session",
    "SessionCodec",
    "contact_text",
    "matches_sites",
]

log = logging.getLogger("ostiary.as.console")

#: Associated data of sealed console sessions (no other sealed blob opens as one).
SESSION_AAD: Final = b"ostiary/console-session\x00"
#: What console CSRF tokens are bound to (the sign-in page's tokens are bound to an authorization request instead).
CONSOLE_BINDING: Final = hashlib.sha256(b"ostiary console forms\x00").digest()
#: Rows per page of every list.
PAGE_SIZE: Final = 25
#: The deepest page a list goes to (rows skipped at most), so a request cannot make the AS read the whole log.
MAX_OFFSET: Final = 10_000
#: Longest text accepted in a search field or name (characters).
MAX_FIELD: Final = 256
_SESSION_LAYOUT: Final = struct.Struct(">16sQQ")  # session id, signed in at, last seen; then the UTF-8 user name
_CONSOLE_ROLES: Final = frozenset({UserRole.ADMIN, UserRole.MANAGER})
#: What the console says while ``devices.db`` does not exist.
NO_DEVICES: Final = "No factory batch was recorded yet: 'ostiary factory batch' records the devices it makes."
_GLOB: Final = frozenset("*?[")


def matches_sites(audience: str | None, sites: Iterable[str]) -> bool:
    """Whether ``audience`` is one of ``sites`` (exact names or globs, :func:`fnmatch.fnmatchcase`)."""
    if audience is None:
        return False
    return any(fnmatch.fnmatchcase(audience, pattern) for pattern in sites)


@dataclass(frozen=True, slots=True)
class Session:
    """A console session (see the module documentation)."""

    session_id: bytes
    user: str
    signed_in_at: int
    last_seen: int

    @property
    def csrf_cookie(self) -> str:
        """The session id in the form :class:`~as_server.oauth.signin.CsrfTokens` binds tokens to."""
        return b64url_encode(self.session_id)


class SessionCodec:
    """Seals and opens console sessions with the master key.

    :param sealer: the deployment's master key.
    :param idle_timeout: seconds without a request after which a session ends.
    :param lifetime: seconds after sign-in after which a session ends.
    """

    def __init__(self, sealer: Sealer, *, idle_timeout: int, lifetime: int) -> None:
        self._sealer = sealer
        self.idle_timeout = idle_timeout
        self.lifetime = lifetime

    def new(self, user: str, *, now: int) -> Session:
        """A fresh session for ``user`` (a new id: sign-in never reuses a session, against session fixation)."""
        return Session(secrets.token_bytes(16), user, now, now)

    def seal(self, session: Session) -> str:
        """The cookie value of ``session``."""
        plaintext = _SESSION_LAYOUT.pack(session.session_id, session.signed_in_at, session.last_seen)
        return b64url_encode(self._sealer.seal(plaintext + session.user.encode("utf-8"), aad=SESSION_AAD))

    def open(self, cookie: str | None, *, now: int) -> Session | None:
        """The session in ``cookie`` if it is valid at ``now`` (not idle too long, not too old), else ``None``."""
        if not cookie or len(cookie) > 1024:
            return None
        try:
            plaintext = self._sealer.open(b64url_decode(cookie), aad=SESSION_AAD)
            session_id, signed_in_at, last_seen = _SESSION_LAYOUT.unpack_from(plaintext)
            user = plaintext[_SESSION_LAYOUT.size :].decode("utf-8")
        except (SealingError, WireFormatError, ValueError, struct.error):
            return None
        if not (0 <= now - last_seen <= self.idle_timeout and 0 <= now - signed_in_at <= self.lifetime):
            return None
        return Session(session_id, user, signed_in_at, last_seen)

    def touch(self, session: Session, *, now: int) -> Session:
        """``session`` seen again at ``now``."""
        return dataclasses.replace(session, last_seen=now)


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    """A signed-in manager or admin: the account, their groups and their sites."""

    user: User
    groups: frozenset[str]
    sites: tuple[str, ...]

    @property
    def name(self) -> str:
        """The user name."""
        return self.user.name

    @property
    def actor(self) -> str:
        """``user:NAME``, as the audit log names people."""
        return f"user:{self.user.name}"

    @property
    def is_admin(self) -> bool:
        """Admins see and may change everything."""
        return self.user.role == UserRole.ADMIN

    def may_see(self, audience: str | None) -> bool:
        """Whether the lock ``audience`` is one of this person's sites (admins: every lock)."""
        return self.is_admin or matches_sites(audience, self.sites)

    def approver(self) -> Approver:
        """This person as :class:`~as_server.consent.ConsentService` sees them."""
        return Approver(self.user, self.groups)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list: its rows, its number (from 1) and whether there is a next page."""

    rows: Sequence[Any]
    number: int
    has_next: bool

    @property
    def has_previous(self) -> bool:
        """Whether there is a page before this one."""
        return self.number > 1


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """A device as the console lists it: the registry's record, the lock's state at the AS and its last contact."""

    record: DeviceRecord
    #: ``decommissioned``, ``revoked`` (released, or its keys revoked), ``bootstrapped`` (the AS has its resource
    #: server, enabled) or ``not bootstrapped``.
    state: str
    #: When the lock last registered or updated at ``/rd`` (``None``: never).
    last_contact: int | None


class DeviceRegistry:
    """The deployment's device store (``$OSTIARY_HOME/devices.db``), opened at first use with the master key.

    While the file does not exist, :meth:`store` answers ``None`` and creates nothing (``ostiary factory batch``
    creates it); it looks again at the next call. Thread-safe: one store object, itself thread-safe.

    :param path: the SQLite file.
    :param master_key: loads the master key (called once, when the file is first opened).
    """

    def __init__(self, path: Path, master_key: Callable[[], Any]) -> None:
        self.path = path
        self._master_key = master_key
        self._lock = threading.Lock()
        self._store: EditableDeviceStore | None = None

    def __repr__(self) -> str:
        return f"DeviceRegistry({str(self.path)!r})"

    @classmethod
    def from_settings(cls, settings: Settings) -> DeviceRegistry:
        """The registry of the deployment ``settings`` describe (as ``ostiary factory`` opens it)."""
        from as_server.bootstrap.device_db import DEVICE_DB_FILE
        from as_server.sealing import MasterKey

        return cls(settings.home / DEVICE_DB_FILE, lambda: MasterKey.load(settings.master_key_file))

    def store(self) -> EditableDeviceStore | None:
        """The opened store, or ``None`` when no batch was recorded yet.

        :raises ApiConflict: no master key, or the file was made under another master key or by another version.
        """
        with self._lock:
            if self._store is not None:
                return self._store
            if not self.path.exists():
                return None
            from as_server.bootstrap.device_db import SqliteDeviceStore

            try:
                self._store = SqliteDeviceStore(self.path, self._master_key())
            except (FileNotFoundError, PermissionError, ValueError):
                log.error("console: cannot load the master key to open %s", self.path, exc_info=True)
                raise ApiConflict("The device registry cannot be opened: the master key is missing.") from None
            except SealingError:
                raise ApiConflict("The device registry was created under another master key.") from None
            except DeviceStoreError as exc:
                log.error("console: cannot open %s: %s", self.path, exc)
                raise ApiConflict("The device registry cannot be opened (see the server log).") from None
            return self._store

    def close(self) -> None:
        """Close the store if it was opened (it is opened again at the next :meth:`store`)."""
        with self._lock:
            store, self._store = self._store, None
        close = getattr(store, "close", None)
        if close is not None:
            close()


def page_number(raw: str | None) -> int:
    """A ``page`` query value: a number from 1; anything else is page 1."""
    if raw is None or not (raw.isascii() and raw.isdigit()) or len(raw) > 6:  # "¹".isdigit(), int("¹") fails
        return 1
    return max(1, int(raw))


def _paginate(fetch: Callable[[int], Sequence[Any]], number: int, size: int = PAGE_SIZE) -> Page:
    """Page ``number`` of what ``fetch(limit)`` returns (newest first), reading one row more than shown."""
    offset = min((number - 1) * size, MAX_OFFSET)
    number = offset // size + 1
    rows = list(fetch(offset + size + 1))
    return Page(rows[offset : offset + size], number, len(rows) > offset + size)


def _clean(value: str | None, what: str, *, required: bool = False) -> str | None:
    """A search field or name from a form: stripped, at most :data:`MAX_FIELD` characters, no control characters."""
    text = (value or "").strip()
    if not text:
        if required:
            raise ApiBadRequest(f"{what} is required")
        return None
    if len(text) > MAX_FIELD or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ApiBadRequest(f"{what} must be at most {MAX_FIELD} printable characters")
    return text


def scope_text(scope: bytes | str | None) -> str:
    """A stored scope for people (``/lock:GET,PUT`` or the text scope)."""
    if scope is None:
        return "-"
    try:
        return format_scope(grant_scope(scope))
    except WireFormatError:
        return "(unreadable)"


def contact_text(t: int | None, now: int) -> str:
    """A lock's last contact for people: ``never``, or how long ago (``5 min ago``).

    >>> contact_text(None, 100), contact_text(100, 130), contact_text(0, 7200)
    ('never', '30 s ago', '2 h ago')
    """
    if t is None:
        return "never"
    seconds = now - t
    if seconds < 0:
        return "just now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def iso(t: int | None) -> str:
    """Seconds since the epoch as ISO 8601 UTC, ``-`` for none."""
    if t is None:
        return "-"
    try:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return str(t)


class ConsoleService:
    """The console's operations (see the module documentation). Thread-safe as its parts are.

    :param storage: everything the AS stores.
    :param consent: the consent workflow (approvals, denials, grant revocations and their checks).
    :param signin: password sign-in with the failure limit of the sign-in page (:mod:`as_server.oauth.signin`).
    :param sealer: the master key (sessions and CSRF tokens).
    :param idle_timeout: :attr:`~as_server.config.Settings.console_idle_timeout`.
    :param lifetime: :attr:`~as_server.config.Settings.console_session_lifetime`.
    :param policy: the AS's policy (``explain``), and ``policy_file`` the file it was read from.
    :param clock: seconds since the epoch.
    :param hasher: hashes the passwords of users added in the console.
    :param devices: the device registry (issue #7); ``None``: :meth:`attach_devices` sets it later (the HTTP
        transport does, from the AS's settings), until then the device pages say no batch was recorded.
    :param credentials: revokes a released lock's operational credentials (``ostiary factory release`` does the
        same); ``None``: built by :meth:`attach_devices`, or on the storage with the default settings.
    """

    def __init__(
        self,
        *,
        storage: Storage,
        consent: ConsentService,
        signin: SignIn,
        sealer: Sealer,
        idle_timeout: int,
        lifetime: int,
        policy: Any = None,
        policy_file: Path | None = None,
        clock: Callable[[], float] = time.time,
        hasher: PasswordHasher | None = None,
        devices: DeviceRegistry | None = None,
        credentials: OperationalCredentials | None = None,
    ) -> None:
        self.storage = storage
        self.consent = consent
        self._signin = signin
        self.sessions = SessionCodec(sealer, idle_timeout=idle_timeout, lifetime=lifetime)
        self.csrf = CsrfTokens(sealer, lifetime=lifetime)
        self.policy = policy
        self.policy_file = policy_file
        self.clock = clock
        self._hasher = hasher if hasher is not None else PasswordHasher()
        self.device_registry = devices
        self._credentials = credentials

    def now(self) -> int:
        """The clock, in whole seconds."""
        return int(self.clock())

    # -- people --------------------------------------------------------------------------------------------------

    def sign_in(self, name: str, password: str, *, peer: str, now: int) -> ConsoleUser:
        """The manager or admin with these credentials.

        :raises SignInFailed: wrong name or password, disabled account (one message for all).
        :raises TooManyRequests: too many failures for this name or address.
        :raises ApiForbidden: the account's role is ``user``.
        """
        user = self._signin.authenticate(name, password, client_id="console", peer=peer, now=now)
        principal = self._principal(user)
        if principal is None:
            log.info("console: user %r (role %s) refused: not a manager or admin", user.name, user.role)
            raise ApiForbidden("The console is for managers and administrators.")
        return principal

    def principal(self, name: str) -> ConsoleUser | None:
        """The enabled manager or admin ``name`` (a session's user, re-read on every request), else ``None``."""
        user = self.storage.get_user(name)
        return None if user is None else self._principal(user)

    def _principal(self, user: User) -> ConsoleUser | None:
        if not user.enabled or user.role not in _CONSOLE_ROLES:
            return None
        return ConsoleUser(user, self.storage.groups_of(user.name), self.storage.manager_sites(user.name))

    @staticmethod
    def _admin(who: ConsoleUser) -> None:
        if not who.is_admin:
            raise ApiForbidden("Only administrators may do this.")

    # -- dashboard -----------------------------------------------------------------------------------------------

    def dashboard(self, who: ConsoleUser, *, now: int) -> dict[str, Any]:
        """Pending requests (count and the newest), recent activity and each visible lock's last token."""
        pending = self.consent.list_requests(who.approver(), now=now, status=AccessRequestStatus.PENDING, limit=1000)
        locks = []
        for rs in self.list_locks(who):
            last = self.storage.list_tokens(audience=rs.audience, limit=1)
            locks.append((rs, last[0] if last else None))
        locks.sort(key=lambda pair: pair[1].iat if pair[1] is not None else -1)  # least recently used first
        return {
            "pending_count": len(pending),
            "pending": pending[:5],
            "activity": self.audit(who, {}, 1, size=10).rows,
            "locks": locks[:10],
        }

    # -- access requests and grants (checks: ConsentService) -----------------------------------------------------

    def requests(self, who: ConsoleUser, status: str, number: int, *, now: int) -> Page:
        """Access requests ``who`` may decide, of ``status`` (``pending``, ``approved``, ``denied``, ``expired``,
        ``all``)."""
        wanted = None if status == "all" else _enum(AccessRequestStatus, status, "status")
        approver = who.approver()
        return _paginate(
            lambda limit: self.consent.list_requests(approver, now=now, status=wanted, limit=limit), number
        )

    def request(self, who: ConsoleUser, request_id: str, *, now: int) -> tuple[ConsentRequest, Grant | None]:
        """One request ``who`` may decide. :raises ApiNotFound: :raises ApiForbidden:"""
        return self.consent.get_request(who.approver(), request_id, now=now)

    def approve(self, who: ConsoleUser, request_id: str, form: Mapping[str, str], *, now: int) -> Grant:
        """Approve from the console's form: ``scope`` (spec such as ``/lock:PUT``), ``windows`` (one per line),
        ``timezone``, ``valid_from``/``valid_until`` (ISO 8601, ``datetime-local`` form taken as UTC), and
        ``max_lifetime`` (seconds), each optional, checked by :func:`~as_server.consent.parse_approval`."""
        request, _ = self.request(who, request_id, now=now)
        body: dict[str, Any] = {}
        if (scope := (form.get("scope") or "").strip()) and scope != scope_text(request.scope):
            body["scope"] = scope
        windows = [w.strip() for w in (form.get("windows") or "").splitlines() if w.strip()]
        if windows:
            body["windows"] = windows
            if tz := (form.get("timezone") or "").strip():
                body["timezone"] = tz
        for name in ("valid_from", "valid_until"):
            if value := (form.get(name) or "").strip():
                body[name] = value
        if raw := (form.get("max_lifetime") or "").strip():
            if not (raw.isascii() and raw.isdigit()) or len(raw) > 10:
                raise ApiBadRequest("max_lifetime must be a positive number of seconds")
            body["max_lifetime"] = int(raw)
        if note := (form.get("note") or "").strip():
            body["note"] = note
        approval = parse_approval(body, grant_scope(request.scope), now=now)
        return self.consent.approve(who.approver(), request_id, approval, now=now)

    def deny(self, who: ConsoleUser, request_id: str, reason: str, *, now: int) -> ConsentRequest:
        """Deny with a reason (the request's note)."""
        return self.consent.deny(who.approver(), request_id, note=reason.strip(), now=now)

    def grants(self, who: ConsoleUser, status: str, query: str | None, number: int) -> Page:
        """Grants ``who`` may revoke, of ``status`` (``active``, ``revoked``, ``all``), whose client, user or
        audience contains ``query``."""
        wanted = None if status == "all" else _enum(GrantStatus, status, "status")
        needle = (_clean(query, "search") or "").lower()
        approver = who.approver()

        def fetch(limit: int) -> list[Grant]:
            found = self.consent.list_grants(approver, status=wanted, limit=MAX_OFFSET)
            return [g for g in found if not needle or needle in _grant_text(g)][:limit]

        return _paginate(fetch, number)

    def revoke_grant(self, who: ConsoleUser, grant_id: str, *, now: int) -> int:
        """Revoke a grant and its tokens (checks: :meth:`ConsentService.revoke`)."""
        return self.consent.revoke(who.approver(), grant_id, now=now)

    # -- tokens --------------------------------------------------------------------------------------------------

    def tokens(
        self,
        who: ConsoleUser,
        *,
        client: str | None = None,
        user: str | None = None,
        lock: str | None = None,
        number: int = 1,
    ) -> Page:
        """Tokens of ``who``'s sites, newest first, filtered by client, user (``sub``) and lock (audience)."""
        client = _clean(client, "client")
        user = _clean(user, "user")
        lock = _clean(lock, "lock")
        if lock is not None and not who.may_see(lock):
            return Page([], 1, False)

        def fetch(limit: int) -> list[IssuedToken]:
            found = self.storage.list_tokens(client_id=client, audience=lock, limit=MAX_OFFSET + 2 * PAGE_SIZE)
            kept = [t for t in found if who.may_see(t.audience) and (user is None or t.subject == user)]
            return kept[:limit]

        return _paginate(fetch, number)

    def revoke_token(self, who: ConsoleUser, cti_hex: str, *, now: int) -> IssuedToken:
        """Revoke one token of ``who``'s sites (introspection then answers ``active: false``), audited as
        ``token.revoked``.

        :raises ApiNotFound: unknown token, or one of another site (the same answer).
        :raises ApiConflict: already revoked.
        """
        return revoke_token(self.storage, cti_hex, may_see=who.may_see, actor=who.actor, now=now)

    # -- clients (changes: admins) ---------------------------------------------------------------------------------

    def clients(self, who: ConsoleUser, number: int) -> Page:
        """Every client (read-only for managers)."""
        return _paginate(lambda limit: list(self.storage.list_clients())[:limit], number)

    def register_client(self, who: ConsoleUser, form: Mapping[str, str], *, now: int) -> tuple[Client, str]:
        """Register a confidential ``client_credentials`` client; returns it and its secret (shown once).

        Form: ``client_id``, ``name``, ``audiences`` (space-separated).
        """
        self._admin(who)
        client_id = _clean(form.get("client_id"), "client id", required=True)
        assert client_id is not None
        audiences = frozenset((form.get("audiences") or "").split())
        if any(len(a) > MAX_FIELD for a in audiences) or len(audiences) > 100:
            raise ApiBadRequest("audiences are at most 100 names of at most 256 characters")
        if globs := glob_audiences(audiences):
            raise ApiBadRequest(f"a client's audiences are exact lock names, not patterns: {', '.join(globs)}")
        secret = generate_secret()
        client = Client(
            client_id=client_id,
            secret_hash=hash_secret(secret),
            display_name=_clean(form.get("name"), "name") or "",
            audiences=audiences,
            created_at=now,
        )
        try:
            self.storage.add_client(client)
        except DuplicateError:
            raise ApiConflict("A client with this id exists.") from None
        self.storage.append_audit([audit.simple_entry("client.created", actor=who.actor, at=now, client_id=client_id)])
        return client, secret

    def rotate_secret(self, who: ConsoleUser, client_id: str, *, now: int) -> str:
        """A new secret for a confidential client (the old one stops working); shown once."""
        self._admin(who)
        client = self.storage.get_client(client_id)
        if client is None:
            raise ApiNotFound("No such client.")
        if client.public:
            raise ApiConflict("A public client has no secret.")
        secret = generate_secret()
        self.storage.update_client(dataclasses.replace(client, secret_hash=hash_secret(secret)))
        self.storage.append_audit(
            [audit.simple_entry("client.secret_rotated", actor=who.actor, at=now, client_id=client_id)]
        )
        return secret

    def set_client_enabled(self, who: ConsoleUser, client_id: str, enabled: bool, *, now: int) -> int:
        """Enable or disable a client (disabling revokes its tokens); how many tokens were revoked."""
        self._admin(who)
        try:
            return self.storage.set_client_enabled(client_id, enabled, actor=who.actor, now=now)
        except NotFoundError:
            raise ApiNotFound("No such client.") from None

    # -- resource servers / locks ------------------------------------------------------------------------------

    def list_locks(self, who: ConsoleUser) -> list[ResourceServer]:
        """The resource servers of ``who``'s sites."""
        return [rs for rs in self.storage.list_resource_servers() if who.may_see(rs.audience)]

    def locks(self, who: ConsoleUser, number: int) -> Page:
        """:meth:`list_locks`, paginated."""
        return _paginate(lambda limit: self.list_locks(who)[:limit], number)

    def last_contacts(self, locks: Iterable[ResourceServer]) -> dict[str, int]:
        """When each of ``locks`` last contacted the AS (its LwM2M Register or Update at ``/rd``, issue #7); locks
        without a registration are left out."""
        wanted = {rs.audience for rs in locks}
        return {r.audience: r.last_contact for r in self.storage.list_registrations() if r.audience in wanted}

    def register_lock(self, who: ConsoleUser, form: Mapping[str, str], *, now: int) -> tuple[ResourceServer, str]:
        """Register a lock (OSCORE profile, AIF scopes, AES-CCM-16-64-128 Encrypt0 tokens, the smallest free kid);
        returns it and its AS<->RS key as COSE_Key hex (shown once). Form: ``audience``, ``max_lifetime``,
        ``no_clock`` (``on``). The CLI's ``ostiary as rs add`` offers every option."""
        from ace_core.keys import CoseKey

        self._admin(who)
        audience = _clean(form.get("audience"), "audience", required=True)
        assert audience is not None
        raw = (form.get("max_lifetime") or "3600").strip()
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 10 or not 1 <= int(raw) <= 2**31 - 1:
            raise ApiBadRequest("max lifetime must be a positive number of seconds")
        if self.storage.get_resource_server(audience) is not None:
            raise ApiConflict("A lock with this audience exists.")
        used = {
            rs.shared_key.kid
            for rs in self.storage.list_resource_servers()
            if rs.shared_key is not None and rs.shared_key.kid is not None
        }
        key = CoseKey.generate(CoseAlgorithm.AES_CCM_16_64_128, kid=next_kid(used))
        rs = ResourceServer(
            audience=audience,
            shared_key=key,
            profiles=frozenset({AceProfile.COAP_OSCORE}),
            max_lifetime=int(raw),
            created_at=now,
            has_clock=form.get("no_clock") != "on",
        )
        try:
            self.storage.add_resource_server(rs)
        except DuplicateError:
            raise ApiConflict("A lock with this audience exists.") from None
        self.storage.append_audit(
            [AuditEntry(at=now, action="resource_server.created", actor=who.actor, audience=audience)]
        )
        return rs, key.to_cbor().hex()

    # -- devices (issue #7, "Ownership") ------------------------------------------------------------------------

    def attach_devices(self, settings: Settings) -> None:
        """Use the device registry of ``settings``'s deployment and revoke released locks' credentials as ``ostiary
        factory release`` does (the same :class:`~as_server.bootstrap.operational.OperationalCredentials`
        settings); what was given to the constructor is kept."""
        from as_server.bootstrap.operational import OperationalCredentials

        if self.device_registry is None:
            self.device_registry = DeviceRegistry.from_settings(settings)
        if self._credentials is None:
            self._credentials = OperationalCredentials(
                self.storage,
                rotation_age=settings.key_rotation_age,
                overlap=settings.key_overlap or None,
                exi_upload_window=settings.exi_upload_window,
            )

    def device_store(self) -> EditableDeviceStore | None:
        """The device store, or ``None`` while no factory batch was recorded (see :class:`DeviceRegistry`)."""
        return None if self.device_registry is None else self.device_registry.store()

    def _required_store(self) -> EditableDeviceStore:
        store = self.device_store()
        if store is None:
            raise ApiConflict(NO_DEVICES)
        return store

    @staticmethod
    def _may_manage(who: ConsoleUser, site: str | None) -> bool:
        """Whether ``who`` acts for ``site`` (admins: every site; nobody acts for "no site" but admins)."""
        return who.is_admin or matches_sites(site, who.sites)

    def claim_sites(self, who: ConsoleUser) -> list[str]:
        """The sites offered in the claim form: ``who``'s exact site names (admins: every manager's); a pattern
        with a glob is not offered (:meth:`may_type_site`)."""
        if who.is_admin:
            patterns: set[str] = set()
            for user in self.storage.list_users():
                if user.role == UserRole.MANAGER:
                    patterns.update(self.storage.manager_sites(user.name))
        else:
            patterns = set(who.sites)
        return sorted(p for p in patterns if not _GLOB & set(p))

    @staticmethod
    def may_type_site(who: ConsoleUser) -> bool:
        """Whether the claim form also takes a typed site: admins, and managers with a glob pattern."""
        return who.is_admin or any(_GLOB & set(p) for p in who.sites)

    def devices(self, who: ConsoleUser, number: int = 1, *, site: str | None = None) -> Page | None:
        """The devices ``who`` may see (admins: all, unclaimed ones too; managers: those assigned to their sites),
        by serial number, optionally only ``site``'s, as :class:`DeviceRow`; ``None`` while no batch was recorded.
        """
        store = self.device_store()
        if store is None:
            return None
        site = _clean(site, "site")
        if site is not None and not self._may_manage(who, site):
            return Page([], 1, False)

        def fetch(limit: int) -> list[DeviceRecord]:
            if who.is_admin or site is not None:
                return list(store.list_devices(site=site, limit=limit))
            exact = [p for p in who.sites if not _GLOB & set(p)]
            if len(exact) == len(who.sites):  # no globs: the store's index per site
                found: list[DeviceRecord] = []
                for name in exact:
                    found.extend(store.list_devices(site=name, limit=limit))
                return sorted(found, key=lambda r: r.serial)[:limit]
            wide = store.list_devices(limit=None)
            return [r for r in wide if matches_sites(r.site, who.sites)][:limit]

        page = _paginate(fetch, number)
        return dataclasses.replace(page, rows=[self._device_row(r) for r in page.rows])

    def _device_row(self, record: DeviceRecord) -> DeviceRow:
        registration = self.storage.registration_of(record.serial)
        rs = self.storage.get_resource_server(record.serial)
        state = device_state(record, None if rs is None else rs.enabled)
        return DeviceRow(record, state, None if registration is None else registration.last_contact)

    def claim_device(self, who: ConsoleUser, enrolment_id: str, site: str, *, now: int) -> DeviceRecord:
        """Claim the unclaimed device with ``enrolment_id`` (as typed: case, spaces, hyphens and the look-alikes
        O/I/L do not matter) for ``site``, one of ``who``'s sites; the first claim wins (``ostiary factory
        claim``). Audited as ``device.claimed``.

        :raises ApiBadRequest: not an enrolment id (the message says what is wrong), or not a site name.
        :raises ApiForbidden: ``who`` does not manage ``site``.
        :raises ApiNotFound: no device has this enrolment id.
        :raises ApiConflict: the device already belongs to a site (which one is not said), or no batch was recorded.
        """
        from ace_core.lwm2m.identifiers import EnrolmentIdError, InvalidName, check_site, parse_enrolment_id

        name = _clean(site, "site", required=True)
        assert name is not None
        try:
            name = check_site(name)
        except InvalidName as exc:
            raise ApiBadRequest(str(exc)) from None
        if not self._may_manage(who, name):
            raise ApiForbidden("You do not manage this site.")
        try:
            canonical = parse_enrolment_id(enrolment_id or "")
        except EnrolmentIdError as exc:
            raise ApiBadRequest(f"Not an enrolment id: {exc}.") from None
        store = self._required_store()
        try:
            record = store.claim(canonical, name, now=now)
        except UnknownDevice:
            raise ApiNotFound("No device has this enrolment id.") from None
        except AlreadyClaimed:
            raise ApiConflict(
                "This device is already claimed: the first claim won. It can be claimed again once released."
            ) from None
        detail = f"{record.serial} ({record.endpoint}) claimed by its enrolment id"
        self.storage.append_audit(
            [AuditEntry(at=now, action="device.claimed", actor=who.actor, audience=name, detail=detail)]
        )
        log.info("device %s claimed for site %s by %s", record.serial, name, who.actor)
        return record

    def device(self, who: ConsoleUser, serial: str) -> DeviceRow:
        """One device ``who`` may see. :raises ApiNotFound: unknown, or not in ``who``'s sites (the same answer)."""
        store = self._required_store()
        clean = _clean(serial, "serial", required=True)
        record = store.get(clean or "")
        if record is None or not self._may_manage(who, record.site):
            raise ApiNotFound("No such device.")
        return self._device_row(record)

    def release_device(self, who: ConsoleUser, serial: str, *, now: int) -> tuple[DeviceRecord, str, int | None]:
        """Release a device of ``who``'s sites (``ostiary factory release``): it becomes unclaimed (claimable
        again by its enrolment id) and the lock's operational credentials are revoked at the AS: its keys erased,
        its resource server disabled, its tokens revoked. Audited as ``device.released`` (and the revocation as
        ``resource_server.revoked``).

        :returns: the released record, the site it was released from, and how many tokens were revoked (``None``
            when the lock was never bootstrapped: the AS has no resource server of that name).
        :raises ApiNotFound: unknown, or not in ``who``'s sites (the same answer).
        :raises ApiConflict: the device is not assigned to a site (admins), or no batch was recorded.
        """
        from as_server.bootstrap.operational import OperationalCredentials, UnknownLock

        store = self._required_store()
        before = self.device(who, serial).record
        if before.site is None:
            raise ApiConflict("The device is not assigned to a site: there is nothing to release.")
        try:
            record = store.release(before.serial, now=now)
        except UnknownDevice:
            raise ApiNotFound("No such device.") from None
        except NotClaimed:
            raise ApiConflict("The device is not assigned to a site: there is nothing to release.") from None
        credentials = self._credentials
        if credentials is None:
            credentials = OperationalCredentials(self.storage, rotation_age=30 * 86400)
        try:
            revoked: int | None = int(credentials.revoke(record.serial, now=now, actor=who.actor))
        except UnknownLock:
            revoked = None
        what = "never bootstrapped" if revoked is None else f"credentials revoked, {revoked} tokens revoked"
        detail = f"{record.serial} ({record.endpoint}) released: {what}"
        self.storage.append_audit(
            [AuditEntry(at=now, action="device.released", actor=who.actor, audience=before.site, detail=detail)]
        )
        log.info("device %s released from site %s by %s (%s)", record.serial, before.site, who.actor, what)
        return record, before.site, revoked

    # -- users, groups, sites (admins) -----------------------------------------------------------------------------

    def users(self, who: ConsoleUser, number: int) -> Page:
        """Every user with their groups and sites."""
        self._admin(who)
        return _paginate(
            lambda limit: [
                (u, sorted(self.storage.groups_of(u.name)), self.storage.manager_sites(u.name))
                for u in list(self.storage.list_users())[:limit]
            ],
            number,
        )

    def groups(self, who: ConsoleUser) -> list[tuple[Group, Sequence[str]]]:
        """Every group with its members."""
        self._admin(who)
        return [(g, self.storage.members_of(g.name)) for g in self.storage.list_groups()]

    def add_user(self, who: ConsoleUser, form: Mapping[str, str], *, now: int) -> User:
        """Add a user: ``name``, ``display_name``, ``role`` (``user``, ``manager``, ``admin``), ``password``."""
        self._admin(who)
        name = _clean(form.get("name"), "name", required=True)
        assert name is not None
        role = _enum(UserRole, form.get("role") or "user", "role")
        password = form.get("password") or ""
        try:
            password_hash = self._hasher.hash(password)
        except ValueError:
            raise ApiBadRequest("The password must have 1 to 1024 characters.") from None
        user = User(
            name=name,
            password_hash=password_hash,
            display_name=_clean(form.get("display_name"), "display name") or "",
            role=role,
            created_at=now,
        )
        try:
            self.storage.add_user(user, actor=who.actor, now=now)
        except DuplicateError:
            raise ApiConflict("A user with this name exists.") from None
        return user

    def set_user_enabled(self, who: ConsoleUser, name: str, enabled: bool, *, now: int) -> int:
        """Enable or disable a user (disabling revokes their tokens); an admin cannot disable themselves."""
        self._admin(who)
        if name == who.name and not enabled:
            raise ApiConflict("You cannot disable your own account.")
        try:
            return self.storage.set_user_enabled(name, enabled, actor=who.actor, now=now)
        except NotFoundError:
            raise ApiNotFound("No such user.") from None

    def add_group(self, who: ConsoleUser, name: str, *, now: int) -> None:
        """Add a group."""
        self._admin(who)
        clean = _clean(name, "group name", required=True)
        assert clean is not None
        try:
            self.storage.add_group(Group(name=clean, created_at=now), actor=who.actor, now=now)
        except DuplicateError:
            raise ApiConflict("A group with this name exists.") from None

    def add_member(self, who: ConsoleUser, group: str, user: str, *, now: int) -> None:
        """Put a user in a group."""
        self._admin(who)
        try:
            self.storage.add_member(group, user, actor=who.actor, now=now)
        except NotFoundError:
            raise ApiNotFound("No such group or user.") from None
        except DuplicateError:
            raise ApiConflict("The user is already in the group.") from None

    def set_sites(self, who: ConsoleUser, name: str, patterns: Iterable[str], *, now: int) -> tuple[str, ...]:
        """Replace the sites (audience patterns) manager ``name`` manages."""
        self._admin(who)
        return set_sites(self.storage, name, patterns, actor=who.actor, now=now)

    # -- policy ----------------------------------------------------------------------------------------------------

    def policy_source(self) -> tuple[str, str | None]:
        """The policy file's name and text (``None`` when there is none)."""
        path = self.policy_file
        if path is None:
            return "-", None
        try:
            return str(path), path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return str(path), None

    def explain(self, form: Mapping[str, str], *, now: int) -> Any:
        """The engine's :meth:`~policies.engine.PolicyEngine.explain` for the form's ``client``, ``user``,
        ``groups`` (space-separated), ``audience``, ``scope`` and ``at`` (ISO 8601; default now)."""
        from policies.base import AccessRequest
        from policies.builtin.allow_list import parse_scope_spec

        if self.policy is None or not hasattr(self.policy, "explain"):
            raise ApiConflict("This server's policy cannot explain its decisions.")
        client = _clean(form.get("client"), "client", required=True)
        audience = _clean(form.get("audience"), "audience", required=True)
        user = _clean(form.get("user"), "user")
        assert client is not None and audience is not None
        try:
            scope = parse_scope_spec((form.get("scope") or "")[:2000].strip())
        except ValueError:
            raise ApiBadRequest("The scope is malformed: write e.g. /lock:GET,PUT or a text scope.") from None
        if scope.is_empty:
            raise ApiBadRequest("The scope must not be empty.")
        at = now
        if raw := (form.get("at") or "").strip():
            at = _instant(raw)
        groups = frozenset((form.get("groups") or "").split()) if user else frozenset()
        request = AccessRequest(
            client_id=client, audience=audience, scope=scope, now=at, subject=user, subject_groups=groups
        )
        return self.policy.explain(request)

    # -- audit -----------------------------------------------------------------------------------------------------

    def audit_query(self, filters: Mapping[str, str], *, limit: int) -> AuditQuery:
        """An :class:`~as_server.storage.base.AuditQuery` from the form's ``action``, ``user``, ``client``,
        ``audience``, ``since`` and ``until`` (ISO 8601)."""
        since = _instant(filters["since"]) if (filters.get("since") or "").strip() else None
        until = _instant(filters["until"]) if (filters.get("until") or "").strip() else None
        return AuditQuery(
            since=since,
            until=until,
            action=_clean(filters.get("action"), "action"),
            user=_clean(filters.get("user"), "user"),
            client_id=_clean(filters.get("client"), "client"),
            audience=_clean(filters.get("audience"), "audience"),
            limit=limit,
        )

    def _visible_entry(self, who: ConsoleUser, entry: AuditEntry) -> bool:
        return who.is_admin or entry.actor == who.actor or matches_sites(entry.audience, who.sites)

    def audit(self, who: ConsoleUser, filters: Mapping[str, str], number: int, *, size: int = PAGE_SIZE) -> Page:
        """Audit entries ``who`` may see (admins: all; managers: those of their sites and their own actions)."""

        def fetch(limit: int) -> list[AuditEntry]:
            wide = limit if who.is_admin else MAX_OFFSET + 2 * PAGE_SIZE
            found = self.storage.list_audit(self.audit_query(filters, limit=wide))
            return [e for e in found if self._visible_entry(who, e)][:limit]

        return _paginate(fetch, number, size)

    def audit_csv(self, who: ConsoleUser, filters: Mapping[str, str]) -> str:
        """The matching entries ``who`` may see (at most :data:`MAX_OFFSET`), oldest first, as CSV (RFC 4180)."""
        found = self.storage.list_audit(self.audit_query(filters, limit=MAX_OFFSET))
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        header = ["time", "action", "actor", "client", "user", "audience", "scope", "request", "grant", "cti", "detail"]
        writer.writerow(header)
        for e in reversed([e for e in found if self._visible_entry(who, e)]):
            writer.writerow(
                [
                    iso(e.at),
                    e.action,
                    e.actor,
                    e.client_id or "",
                    e.subject or "",
                    e.audience or "",
                    e.scope or "",
                    e.request_id or "",
                    e.grant_id or "",
                    e.cti.hex() if e.cti else "",
                ]
                + [_csv_safe(e.detail)]
            )
        return out.getvalue()


def set_sites(storage: Storage, name: str, patterns: Iterable[str], *, actor: str, now: int) -> tuple[str, ...]:
    """Check and store manager ``name``'s sites (``ostiary user sites`` and the console).

    :raises ApiBadRequest: a pattern that is empty, too long or has spaces. :raises ApiNotFound: no such user.
    """
    cleaned = []
    for pattern in patterns:
        text = pattern.strip()
        if not text:
            continue
        if len(text) > MAX_FIELD or any(c.isspace() or ord(c) < 32 for c in text):
            raise ApiBadRequest("A site is an audience or a glob such as building-a/* (no spaces).")
        cleaned.append(text)
    if len(cleaned) > 100:
        raise ApiBadRequest("At most 100 sites per manager.")
    try:
        storage.set_manager_sites(name, cleaned, actor=actor, now=now)
    except NotFoundError:
        raise ApiNotFound("No such user.") from None
    return tuple(sorted(set(cleaned)))


def revoke_token(
    storage: Storage, cti_hex: str, *, may_see: Callable[[str], bool], actor: str, now: int
) -> IssuedToken:
    """Revoke the token ``cti_hex`` if ``may_see(audience)``, audited as ``token.revoked`` (the console, its JSON
    API and ``ostiary as token revoke``).

    :raises ApiNotFound: unknown token, or one of another site (the same answer).
    :raises ApiConflict: already revoked.
    """
    try:
        cti = bytes.fromhex(cti_hex)
    except ValueError:
        raise ApiNotFound("No such token.") from None
    token = storage.get_by_cti(cti) if cti else None
    if token is None or not may_see(token.audience):
        raise ApiNotFound("No such token.")
    if token.status != TokenStatus.ACTIVE:
        raise ApiConflict(f"The token is already {token.status}.")
    storage.revoke(cti)
    entry = AuditEntry(
        at=now,
        action="token.revoked",
        actor=actor,
        client_id=token.client_id,
        subject=token.subject,
        audience=token.audience,
        scope=scope_text(token.scope),
        cti=token.cti,
    )
    storage.append_audit([entry])
    log.info("token %s revoked by %s", cti_hex, actor)
    return token


def next_kid(used: Iterable[bytes]) -> bytes:
    """The smallest AS<->RS key id not in ``used`` (as ``ostiary as rs add`` chooses it)."""
    taken = set(used)
    n = 1
    while (kid := n.to_bytes((n.bit_length() + 7) // 8, "big")) in taken:
        n += 1
    return kid


def _csv_safe(text: str) -> str:
    """A CSV cell that a spreadsheet will not run as a formula (OWASP "CSV injection")."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _grant_text(grant: Grant) -> str:
    return f"{grant.client_id} {grant.subject or ''} {grant.audience}".lower()


def _enum(kind: Any, value: str, what: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise ApiBadRequest(f"Unknown {what}.") from None


def _instant(raw: str) -> int:
    """An ISO 8601 time from a form (``datetime-local`` inputs have no offset: UTC)."""
    text = raw.strip()
    if len(text) > 40:
        raise ApiBadRequest("Times are ISO 8601, e.g. 2026-01-31T17:00 (UTC) or with an offset.")
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise ApiBadRequest("Times are ISO 8601, e.g. 2026-01-31T17:00 (UTC) or with an offset.") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return int(moment.timestamp())
    except (OverflowError, OSError, ValueError):
        raise ApiBadRequest("The time is out of range.") from None
