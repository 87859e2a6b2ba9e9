"""In-memory storage backend: the whole :class:`~as_server.storage.base.Storage` Protocol in dictionaries.

For tests, demos and single-process deployments that need no persistence. Thread-safe (one lock around every
operation); every method returns the frozen records of :mod:`as_server.models`, never internal state.

With a :class:`~as_server.sealing.MasterKey`, the secret key material -- a resource server's ``shared_key``, a
signing key, and an issued token's ``cnf`` (which may hold an OSCORE master secret or a PSK) -- is kept sealed
(AES-256-GCM, bound to the record's identity) and opened on every read, as the SQL backend does at rest. Without
one, records are kept as given.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from ace_core.keys import CoseKey
from as_server import audit
from as_server.models import (
    AccessRequestStatus,
    AuditEntry,
    Client,
    ConsentRequest,
    Grant,
    GrantStatus,
    Group,
    IssuedToken,
    Lwm2mRegistration,
    OperationalKey,
    ResourceServer,
    SigningKey,
    TokenStatus,
    User,
)
from as_server.sealing import MasterKey
from as_server.storage.base import AuditQuery, DuplicateError, NotFoundError, StateError, pending_key
from as_server.storage.memory_oauth import OAuthMemoryState, OAuthMemoryStore

__all__ = ["MemoryStorage"]


@dataclass(frozen=True, slots=True)
class _Stored:
    """A record as kept: secret fields blanked and sealed into ``sealed`` when a master key is used."""

    record: object
    sealed: bytes | None
    seq: int  # insertion order, the tie-breaker for "newest"


class MemoryStorage(OAuthMemoryStore):
    """:class:`~as_server.storage.base.Storage` in memory.

    :param master_key: seal secret key material while stored (see the module documentation).
    """

    def __init__(self, master_key: MasterKey | None = None) -> None:
        self._master_key = master_key
        self._lock = threading.RLock()
        self._seq = itertools.count()
        self._clients: dict[str, Client] = {}
        self._resource_servers: dict[str, _Stored] = {}
        self._exi_sequences: dict[str, int] = {}  # audience -> last number issued (kept apart from the record)
        self._tokens: dict[bytes, _Stored] = {}  # by cti
        self._by_hash: dict[bytes, bytes] = {}  # token_hash -> cti
        self._by_pop_kid: dict[tuple[str, str, bytes], list[bytes]] = {}  # -> ctis, oldest first
        self._generated_pop_kids: set[tuple[str, str, bytes]] = set()  # of tokens with pop_key_generated
        self._signing_keys: dict[bytes, _Stored] = {}
        self._registry_version: int | None = None
        self._users: dict[str, User] = {}
        self._groups: dict[str, Group] = {}
        self._members: dict[str, set[str]] = {}  # group -> user names
        self._requests: dict[str, ConsentRequest] = {}  # insertion order = creation order
        self._pending: dict[str, str] = {}  # pending_key -> request id, while pending
        self._grants: dict[str, Grant] = {}
        self._grant_tokens: dict[str, list[bytes]] = {}  # grant id -> ctis issued under it
        self._audit: list[AuditEntry] = []
        self._active_grants: tuple[Grant, ...] | None = None  # cached until the next registry write
        self._closed = False
        self._sites: dict[str, frozenset[str]] = {}  # manager sites (issue #6)
        self._rs_keys: dict[str, dict[int, _Stored]] = {}  # audience -> generation -> OperationalKey (issue #7)
        self._registrations: dict[str, Lwm2mRegistration] = {}  # by location
        self._registration_of: dict[str, str] = {}  # audience -> location
        self._oauth = OAuthMemoryState()  # authorization codes and refresh tokens (storage.memory_oauth)

    def __repr__(self) -> str:
        return f"MemoryStorage(clients={len(self._clients)}, tokens={len(self._tokens)})"

    # -- sealing ---------------------------------------------------------------------------------------------

    def _seal(self, plaintext: bytes | None, aad: bytes) -> bytes | None:
        if plaintext is None or self._master_key is None:
            return None
        return self._master_key.seal(plaintext, aad=aad)

    def _open(self, sealed: bytes, aad: bytes) -> bytes:
        assert self._master_key is not None
        return self._master_key.open(sealed, aad=aad)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("storage is closed")

    def _bump_registry(self) -> None:
        """Count a registry write (the lock is held)."""
        self._registry_version = (self._registry_version or 0) + 1
        self._active_grants = None

    def _log(self, *entries: AuditEntry) -> None:
        """Append audit entries (the lock is held): the same "transaction" as the change they record."""
        for entry in entries:
            self._audit.append(dataclasses.replace(entry, seq=len(self._audit) + 1))

    def _revoke_where(self, matches: Callable[[IssuedToken], bool], now: int) -> int:
        """Revoke every active, unexpired token for which ``matches(token)`` holds (the lock is held)."""
        count = 0
        for cti, stored in list(self._tokens.items()):
            token = stored.record
            assert isinstance(token, IssuedToken)
            if token.status == TokenStatus.ACTIVE and token.exp > now and matches(token):
                self._tokens[cti] = dataclasses.replace(
                    stored, record=dataclasses.replace(token, status=TokenStatus.REVOKED)
                )
                count += 1
        return count

    def registry_version(self) -> int | None:
        """Changes with every write to clients, resource servers or signing keys; ``None`` before the first."""
        with self._lock:
            self._check_open()
            return self._registry_version

    # -- clients ---------------------------------------------------------------------------------------------

    def get_client(self, client_id: str) -> Client | None:
        """The registered client, or ``None``."""
        with self._lock:
            self._check_open()
            return self._clients.get(client_id)

    def add_client(self, client: Client) -> None:
        """:raises DuplicateError: the ``client_id`` is taken."""
        with self._lock:
            self._check_open()
            if client.client_id in self._clients:
                raise DuplicateError(f"client {client.client_id!r} exists")
            self._clients[client.client_id] = client
            self._bump_registry()

    def update_client(self, client: Client) -> None:
        """:raises NotFoundError: no client with this ``client_id``."""
        with self._lock:
            self._check_open()
            if client.client_id not in self._clients:
                raise NotFoundError(f"no client {client.client_id!r}")
            self._clients[client.client_id] = client
            self._bump_registry()

    def list_clients(self) -> Sequence[Client]:
        """All clients, ordered by ``client_id``."""
        with self._lock:
            self._check_open()
            return [self._clients[k] for k in sorted(self._clients)]

    def set_client_enabled(self, client_id: str, enabled: bool, *, actor: str, now: int) -> int:
        """Enable or disable a client; disabling revokes its unexpired tokens. :raises NotFoundError:"""
        with self._lock:
            self._check_open()
            client = self._clients.get(client_id)
            if client is None:
                raise NotFoundError(f"no client {client_id!r}")
            self._clients[client_id] = dataclasses.replace(client, enabled=enabled)
            revoked = 0 if enabled else self._revoke_where(lambda t: t.client_id == client_id, now)
            self._bump_registry()
            action = "client.enabled" if enabled else "client.disabled"
            detail = "" if enabled else f"{revoked} tokens revoked"
            self._log(audit.simple_entry(action, actor=actor, at=now, client_id=client_id, detail=detail))
            return revoked

    # -- resource servers ------------------------------------------------------------------------------------

    @staticmethod
    def _rs_aad(audience: str) -> bytes:
        return b"resource_server\x00" + audience.encode("utf-8")

    def _store_rs(self, rs: ResourceServer) -> _Stored:
        key = rs.shared_key
        sealed = self._seal(key.to_cbor() if key is not None else None, self._rs_aad(rs.audience))
        record = dataclasses.replace(rs, shared_key=None) if sealed is not None else rs
        return _Stored(record, sealed, next(self._seq))

    def _load_rs(self, stored: _Stored) -> ResourceServer:
        rs = stored.record
        assert isinstance(rs, ResourceServer)
        if stored.sealed is None:
            return rs
        key = CoseKey.from_cbor(self._open(stored.sealed, self._rs_aad(rs.audience)))
        return dataclasses.replace(rs, shared_key=key)

    def get_resource_server(self, audience: str) -> ResourceServer | None:
        """The registered resource server for ``audience``, or ``None``."""
        with self._lock:
            self._check_open()
            stored = self._resource_servers.get(audience)
            return None if stored is None else self._load_rs(stored)

    def add_resource_server(self, rs: ResourceServer) -> None:
        """:raises DuplicateError: the audience is taken."""
        with self._lock:
            self._check_open()
            if rs.audience in self._resource_servers:
                raise DuplicateError(f"resource server {rs.audience!r} exists")
            self._resource_servers[rs.audience] = self._store_rs(rs)
            self._bump_registry()

    def update_resource_server(self, rs: ResourceServer) -> None:
        """:raises NotFoundError: no resource server with this audience."""
        with self._lock:
            self._check_open()
            if rs.audience not in self._resource_servers:
                raise NotFoundError(f"no resource server {rs.audience!r}")
            self._resource_servers[rs.audience] = self._store_rs(rs)
            self._bump_registry()

    def list_resource_servers(self) -> Sequence[ResourceServer]:
        """All resource servers, ordered by audience."""
        with self._lock:
            self._check_open()
            return [self._load_rs(self._resource_servers[k]) for k in sorted(self._resource_servers)]

    def next_exi_sequence(self, audience: str) -> int:
        """The next ``exi`` sequence number of ``audience`` (RFC 9200 §5.10.3), 1 first; atomic under the lock.

        :raises NotFoundError: no resource server with this audience.
        """
        with self._lock:
            self._check_open()
            if audience not in self._resource_servers:
                raise NotFoundError(f"no resource server {audience!r}")
            number = self._exi_sequences.get(audience, 0) + 1
            self._exi_sequences[audience] = number
            return number

    # -- issued tokens ---------------------------------------------------------------------------------------

    @staticmethod
    def _token_aad(cti: bytes) -> bytes:
        return b"issued_token\x00" + cti

    def _load_token(self, stored: _Stored) -> IssuedToken:
        token = stored.record
        assert isinstance(token, IssuedToken)
        if stored.sealed is None:
            return token
        return dataclasses.replace(token, cnf=self._open(stored.sealed, self._token_aad(token.cti)))

    def submit_record(self, token: IssuedToken) -> Future[None]:
        """:meth:`record`, as a future that is already complete (with its :class:`DuplicateError`, if any)."""
        future: Future[None] = Future()
        try:
            self.record(token)
        except DuplicateError as exc:
            future.set_exception(exc)
        else:
            future.set_result(None)
        return future

    def record(self, token: IssuedToken) -> None:
        """Store an issued token (durable as soon as this returns, for as long as the process lives).

        :raises DuplicateError: the ``cti`` or the token hash is already recorded, or the token's PoP key is
            ``pop_key_generated`` and another such token of the client and audience has its ``pop_kid``.
        """
        with self._lock:
            self._check_open()
            if token.cti in self._tokens:
                raise DuplicateError("cti already recorded")
            if token.token_hash in self._by_hash:
                raise DuplicateError("token hash already recorded")
            generated = (
                (token.client_id, token.audience, token.pop_kid)
                if token.pop_key_generated and token.pop_kid is not None
                else None
            )
            if generated is not None and generated in self._generated_pop_kids:
                raise DuplicateError("generated PoP key id already recorded for this client and audience")
            sealed = self._seal(token.cnf, self._token_aad(token.cti))
            record = dataclasses.replace(token, cnf=b"") if sealed is not None else token
            self._tokens[token.cti] = _Stored(record, sealed, next(self._seq))
            self._by_hash[token.token_hash] = token.cti
            if token.pop_kid is not None:
                self._by_pop_kid.setdefault((token.client_id, token.audience, token.pop_kid), []).append(token.cti)
            if generated is not None:
                self._generated_pop_kids.add(generated)
            for grant_id in token.grant_ids:
                self._grant_tokens.setdefault(grant_id, []).append(token.cti)

    def get_by_cti(self, cti: bytes) -> IssuedToken | None:
        """The token with this ``cti``, or ``None``."""
        with self._lock:
            self._check_open()
            stored = self._tokens.get(cti)
            return None if stored is None else self._load_token(stored)

    def get_by_hash(self, token_hash: bytes) -> IssuedToken | None:
        """The token with this RFC 9770 token hash, or ``None``."""
        with self._lock:
            self._check_open()
            cti = self._by_hash.get(token_hash)
            return None if cti is None else self._load_token(self._tokens[cti])

    def _newest_first(self, stored: list[_Stored]) -> list[_Stored]:
        def key(s: _Stored) -> tuple[int, int]:
            assert isinstance(s.record, IssuedToken)
            return (s.record.iat, s.seq)

        return sorted(stored, key=key, reverse=True)

    def find_by_pop_kid(self, client_id: str, audience: str, pop_kid: bytes) -> IssuedToken | None:
        """The most recent token (by ``iat``, then recording order) of this client and audience bound to
        ``pop_kid``, whatever its status; ``None`` if there is none."""
        with self._lock:
            self._check_open()
            ctis = self._by_pop_kid.get((client_id, audience, pop_kid))
            if not ctis:
                return None
            newest = self._newest_first([self._tokens[c] for c in ctis])[0]
            return self._load_token(newest)

    def list_tokens(
        self, *, client_id: str | None = None, audience: str | None = None, limit: int = 100
    ) -> Sequence[IssuedToken]:
        """Tokens matching the filters, newest first (by ``iat``, then recording order), at most ``limit``."""
        with self._lock:
            self._check_open()
            selected = [
                s
                for s in self._tokens.values()
                if isinstance(s.record, IssuedToken)
                and (client_id is None or s.record.client_id == client_id)
                and (audience is None or s.record.audience == audience)
            ]
            return [self._load_token(s) for s in self._newest_first(selected)[: max(limit, 0)]]

    def revoke(self, cti: bytes) -> bool:
        """Mark the token revoked; ``False`` if no token has this ``cti``."""
        with self._lock:
            self._check_open()
            stored = self._tokens.get(cti)
            if stored is None:
                return False
            assert isinstance(stored.record, IssuedToken)
            record = dataclasses.replace(stored.record, status=TokenStatus.REVOKED)
            self._tokens[cti] = dataclasses.replace(stored, record=record)
            return True

    def count(self) -> int:
        """The number of recorded tokens."""
        with self._lock:
            self._check_open()
            return len(self._tokens)

    def tokens_of_grant(self, grant_id: str) -> Sequence[IssuedToken]:
        """The tokens issued under grant ``grant_id``, newest first."""
        with self._lock:
            self._check_open()
            stored = [self._tokens[cti] for cti in self._grant_tokens.get(grant_id, ())]
            return [self._load_token(s) for s in self._newest_first(stored)]

    # -- signing keys ----------------------------------------------------------------------------------------

    @staticmethod
    def _key_aad(kid: bytes) -> bytes:
        return b"signing_key\x00" + kid

    def _load_key(self, stored: _Stored) -> SigningKey:
        record = stored.record
        assert isinstance(record, SigningKey)
        if stored.sealed is None:
            return record
        return dataclasses.replace(record, key=CoseKey.from_cbor(self._open(stored.sealed, self._key_aad(record.kid))))

    def _keys_newest_first(self) -> list[_Stored]:
        def key(s: _Stored) -> tuple[int, int]:
            assert isinstance(s.record, SigningKey)
            return (s.record.created_at, s.seq)

        return sorted(self._signing_keys.values(), key=key, reverse=True)

    def signing_key(self) -> SigningKey | None:
        """The newest (by ``created_at``, then insertion order) key that is not retired, or ``None``."""
        with self._lock:
            self._check_open()
            for stored in self._keys_newest_first():
                assert isinstance(stored.record, SigningKey)
                if stored.record.retired_at is None:
                    return self._load_key(stored)
            return None

    def verification_keys(self, now: int) -> Sequence[SigningKey]:
        """Keys whose tokens may still be valid at ``now``: not retired, or retired with ``retire_after`` unset
        or later than ``now``. Newest first."""
        with self._lock:
            self._check_open()
            result = []
            for stored in self._keys_newest_first():
                record = stored.record
                assert isinstance(record, SigningKey)
                if record.retired_at is None or record.retire_after is None or record.retire_after > now:
                    result.append(self._load_key(stored))
            return result

    def add_signing_key(self, key: SigningKey) -> None:
        """:raises DuplicateError: a key with this ``kid`` exists."""
        with self._lock:
            self._check_open()
            if key.kid in self._signing_keys:
                raise DuplicateError("signing key kid exists")
            # Signing keys are asymmetric (COSE_Sign1, RFC 9052 §4.2): the sealed copy holds the private key and
            # the record keeps only the public part until it is read.
            sealed = None if key.key.is_symmetric else self._seal(key.key.to_cbor(), self._key_aad(key.kid))
            record = dataclasses.replace(key, key=key.key.public()) if sealed is not None else key
            self._signing_keys[key.kid] = _Stored(record, sealed, next(self._seq))
            self._bump_registry()

    def retire(self, kid: bytes, *, at: int, retire_after: int) -> None:
        """Stop signing with ``kid`` from ``at``; it verifies until ``retire_after``. :raises NotFoundError:"""
        with self._lock:
            self._check_open()
            stored = self._signing_keys.get(kid)
            if stored is None:
                raise NotFoundError("no signing key with this kid")
            assert isinstance(stored.record, SigningKey)
            record = dataclasses.replace(stored.record, retired_at=at, retire_after=retire_after)
            self._signing_keys[kid] = dataclasses.replace(stored, record=record)
            self._bump_registry()

    # -- users and groups ------------------------------------------------------------------------------------

    def get_user(self, name: str) -> User | None:
        """The user, or ``None``."""
        with self._lock:
            self._check_open()
            return self._users.get(name)

    def list_users(self) -> Sequence[User]:
        """Every user, by name."""
        with self._lock:
            self._check_open()
            return [self._users[k] for k in sorted(self._users)]

    def get_group(self, name: str) -> Group | None:
        """The group, or ``None``."""
        with self._lock:
            self._check_open()
            return self._groups.get(name)

    def list_groups(self) -> Sequence[Group]:
        """Every group, by name."""
        with self._lock:
            self._check_open()
            return [self._groups[k] for k in sorted(self._groups)]

    def members_of(self, group: str) -> Sequence[str]:
        """The members of ``group``, sorted."""
        with self._lock:
            self._check_open()
            return sorted(self._members.get(group, ()))

    def groups_of(self, user: str) -> frozenset[str]:
        """The groups ``user`` is in."""
        with self._lock:
            self._check_open()
            return frozenset(group for group, members in self._members.items() if user in members)

    def manager_sites(self, user: str) -> tuple[str, ...]:
        """The audience patterns ``user`` manages, sorted."""
        with self._lock:
            self._check_open()
            return tuple(sorted(self._sites.get(user, ())))

    def set_manager_sites(self, user: str, patterns: Collection[str], *, actor: str, now: int) -> None:
        """Replace ``user``'s sites. :raises NotFoundError:"""
        with self._lock:
            self._check_open()
            if user not in self._users:
                raise NotFoundError(f"no user {user!r}")
            self._sites[user] = frozenset(patterns)
            detail = "sites " + (", ".join(sorted(self._sites[user])) or "(none)")
            self._log(audit.simple_entry("user.sites_set", actor=actor, at=now, subject=user, detail=detail))

    def add_user(self, user: User, *, actor: str, now: int) -> None:
        """:raises DuplicateError: the name is taken."""
        with self._lock:
            self._check_open()
            if user.name in self._users:
                raise DuplicateError(f"user {user.name!r} exists")
            self._users[user.name] = user
            self._bump_registry()
            detail = f"role {user.role}" + ("" if user.enabled else ", disabled")
            self._log(audit.simple_entry("user.created", actor=actor, at=now, subject=user.name, detail=detail))

    def set_password(self, name: str, password_hash: str, *, actor: str, now: int) -> None:
        """:raises NotFoundError:"""
        with self._lock:
            self._check_open()
            user = self._users.get(name)
            if user is None:
                raise NotFoundError(f"no user {name!r}")
            self._users[name] = dataclasses.replace(user, password_hash=password_hash)
            self._log(audit.simple_entry("user.password_changed", actor=actor, at=now, subject=name))

    def set_user_enabled(self, name: str, enabled: bool, *, actor: str, now: int) -> int:
        """Enable or disable a user; disabling revokes the user's unexpired tokens. :raises NotFoundError:"""
        with self._lock:
            self._check_open()
            user = self._users.get(name)
            if user is None:
                raise NotFoundError(f"no user {name!r}")
            self._users[name] = dataclasses.replace(user, enabled=enabled)
            revoked = 0 if enabled else self._revoke_where(lambda t: t.subject == name, now)
            self._bump_registry()
            action = "user.enabled" if enabled else "user.disabled"
            detail = "" if enabled else f"{revoked} tokens revoked"
            self._log(audit.simple_entry(action, actor=actor, at=now, subject=name, detail=detail))
            return revoked

    def add_group(self, group: Group, *, actor: str, now: int) -> None:
        """:raises DuplicateError: the name is taken."""
        with self._lock:
            self._check_open()
            if group.name in self._groups:
                raise DuplicateError(f"group {group.name!r} exists")
            self._groups[group.name] = group
            self._members[group.name] = set()
            self._log(audit.simple_entry("group.created", actor=actor, at=now, detail=f"group {group.name}"))

    def add_member(self, group: str, user: str, *, actor: str, now: int) -> None:
        """:raises NotFoundError: no such group or user. :raises DuplicateError: already a member."""
        with self._lock:
            self._check_open()
            if group not in self._groups:
                raise NotFoundError(f"no group {group!r}")
            if user not in self._users:
                raise NotFoundError(f"no user {user!r}")
            if user in self._members[group]:
                raise DuplicateError(f"{user!r} is already in group {group!r}")
            self._members[group].add(user)
            self._log(
                audit.simple_entry("group.member_added", actor=actor, at=now, subject=user, detail=f"group {group}")
            )

    def remove_member(self, group: str, user: str, *, actor: str, now: int) -> None:
        """:raises NotFoundError: no such membership."""
        with self._lock:
            self._check_open()
            if user not in self._members.get(group, ()):
                raise NotFoundError(f"{user!r} is not in group {group!r}")
            self._members[group].discard(user)
            self._log(
                audit.simple_entry("group.member_removed", actor=actor, at=now, subject=user, detail=f"group {group}")
            )

    # -- access requests ---------------------------------------------------------------------------------------

    def _expire(self, request: ConsentRequest, now: int) -> ConsentRequest:
        """``request``, expired first if it is pending and its time is up (the lock is held)."""
        if request.status != AccessRequestStatus.PENDING or request.expires_at > now:
            return request
        expired = dataclasses.replace(
            request, status=AccessRequestStatus.EXPIRED, decided_at=request.expires_at, decided_by=audit.ACTOR_SYSTEM
        )
        self._requests[request.id] = expired
        self._pending.pop(pending_key(request), None)
        self._log(audit.request_entry("access_request.expired", expired, actor=audit.ACTOR_SYSTEM, at=now))
        return expired

    def submit_access_request(self, request: ConsentRequest, *, actor: str) -> tuple[ConsentRequest, bool]:
        """Record the request or merge it into its pending duplicate (see the Protocol)."""
        with self._lock:
            self._check_open()
            now = request.created_at
            key = pending_key(request)
            existing_id = self._pending.get(key)
            if existing_id is not None:
                existing = self._expire(self._requests[existing_id], now)
                if existing.status == AccessRequestStatus.PENDING:
                    merged = dataclasses.replace(existing, request_count=existing.request_count + 1, updated_at=now)
                    self._requests[merged.id] = merged
                    detail = f"asked {merged.request_count} times"
                    self._log(audit.request_entry("access_request.merged", merged, actor=actor, at=now, detail=detail))
                    return merged, True
            if request.id in self._requests:
                raise DuplicateError("access request id exists")
            stored = dataclasses.replace(request, status=AccessRequestStatus.PENDING, request_count=1, updated_at=now)
            self._requests[stored.id] = stored
            self._pending[key] = stored.id
            self._log(audit.request_entry("access_request.created", stored, actor=actor, at=now, detail=stored.reason))
            return stored, False

    def get_access_request(self, request_id: str, *, now: int) -> ConsentRequest | None:
        """The request (expired first if its time is up), or ``None``."""
        with self._lock:
            self._check_open()
            request = self._requests.get(request_id)
            return None if request is None else self._expire(request, now)

    def get_access_requests(self, request_ids: Collection[str], *, now: int) -> Sequence[ConsentRequest]:
        """The existing requests among ``request_ids``."""
        with self._lock:
            self._check_open()
            return [self._expire(self._requests[i], now) for i in request_ids if i in self._requests]

    def expire_access_requests(self, *, now: int) -> Sequence[ConsentRequest]:
        """Expire the pending requests whose time is up."""
        with self._lock:
            self._check_open()
            due = [
                r for r in self._requests.values() if r.status == AccessRequestStatus.PENDING and r.expires_at <= now
            ]
            return [self._expire(r, now) for r in due]

    def list_access_requests(
        self, *, now: int, status: AccessRequestStatus | None = None, limit: int = 100
    ) -> Sequence[ConsentRequest]:
        """Newest first (expiring first)."""
        with self._lock:
            self._check_open()
            self.expire_access_requests(now=now)
            found = [r for r in reversed(self._requests.values()) if status is None or r.status == status]
            return sorted(found, key=lambda r: r.created_at, reverse=True)[: max(limit, 0)]

    def _pending_request(self, request_id: str, now: int) -> ConsentRequest:
        request = self._requests.get(request_id)
        if request is None:
            raise NotFoundError(f"no access request {request_id!r}")
        request = self._expire(request, now)
        if request.status != AccessRequestStatus.PENDING:
            raise StateError(f"access request {request_id!r} is {request.status}")
        return request

    def approve_access_request(self, request_id: str, grant: Grant, *, actor: str, now: int, note: str = "") -> None:
        """Approve and store the grant (see the Protocol)."""
        with self._lock:
            self._check_open()
            request = self._pending_request(request_id, now)
            if grant.id in self._grants:
                raise DuplicateError(f"grant {grant.id!r} exists")
            approved = dataclasses.replace(
                request, status=AccessRequestStatus.APPROVED, decided_at=now, decided_by=actor, note=note
            )
            self._requests[request_id] = approved
            self._pending.pop(pending_key(request), None)
            self._grants[grant.id] = grant
            self._bump_registry()
            self._log(
                audit.request_entry(
                    "access_request.approved", approved, actor=actor, at=now, detail=audit.approval_detail(grant, note)
                ),
                audit.grant_entry("grant.created", grant, actor=actor, at=now, detail=audit.describe_grant(grant)),
            )

    def deny_access_request(self, request_id: str, *, actor: str, now: int, note: str = "") -> None:
        """Deny (see the Protocol)."""
        with self._lock:
            self._check_open()
            request = self._pending_request(request_id, now)
            denied = dataclasses.replace(
                request, status=AccessRequestStatus.DENIED, decided_at=now, decided_by=actor, note=note
            )
            self._requests[request_id] = denied
            self._pending.pop(pending_key(request), None)
            self._log(audit.request_entry("access_request.denied", denied, actor=actor, at=now, detail=note))

    # -- grants ------------------------------------------------------------------------------------------------

    def active_grants(self) -> Sequence[Grant]:
        """Grants not revoked and not for a disabled user, in creation order (cached until a registry write)."""
        with self._lock:
            self._check_open()
            if self._active_grants is None:
                self._active_grants = tuple(
                    g
                    for g in self._grants.values()
                    if g.status == GrantStatus.ACTIVE
                    and (g.subject is None or g.subject not in self._users or self._users[g.subject].enabled)
                )
            return self._active_grants

    def get_grant(self, grant_id: str) -> Grant | None:
        """The grant, or ``None``."""
        with self._lock:
            self._check_open()
            return self._grants.get(grant_id)

    def list_grants(self, *, status: GrantStatus | None = None, limit: int = 100) -> Sequence[Grant]:
        """Newest first."""
        with self._lock:
            self._check_open()
            found = [g for g in reversed(self._grants.values()) if status is None or g.status == status]
            return sorted(found, key=lambda g: g.created_at, reverse=True)[: max(limit, 0)]

    def revoke_grant(self, grant_id: str, *, actor: str, now: int) -> int:
        """Revoke the grant and its active tokens. :raises NotFoundError: :raises StateError:"""
        with self._lock:
            self._check_open()
            grant = self._grants.get(grant_id)
            if grant is None:
                raise NotFoundError(f"no grant {grant_id!r}")
            if grant.status != GrantStatus.ACTIVE:
                raise StateError(f"grant {grant_id!r} is already revoked")
            revoked_grant = dataclasses.replace(grant, status=GrantStatus.REVOKED, revoked_at=now, revoked_by=actor)
            self._grants[grant_id] = revoked_grant
            ctis = set(self._grant_tokens.get(grant_id, ()))
            count = self._revoke_where(lambda t: t.cti in ctis, now)
            self._bump_registry()
            self._log(
                audit.grant_entry("grant.revoked", revoked_grant, actor=actor, at=now, detail=f"{count} tokens revoked")
            )
            return count

    # -- operational keys of bootstrapped locks (issue #7) -------------------------------------------------------

    @staticmethod
    def _rs_key_aad(audience: str, generation: int) -> bytes:
        return b"rs_key\x00" + f"{audience}#{generation}".encode()

    def _store_rs_key(self, key: OperationalKey) -> _Stored:
        sealed = self._seal(key.key, self._rs_key_aad(key.audience, key.generation))
        record = dataclasses.replace(key, key=None) if sealed is not None else key
        return _Stored(record, sealed, next(self._seq))

    def _load_rs_key(self, stored: _Stored) -> OperationalKey:
        key = stored.record
        assert isinstance(key, OperationalKey)
        if stored.sealed is None:
            return key
        return dataclasses.replace(key, key=self._open(stored.sealed, self._rs_key_aad(key.audience, key.generation)))

    def _set_rs_key(self, key: OperationalKey) -> None:
        """Replace a generation (the lock is held)."""
        self._rs_keys.setdefault(key.audience, {})[key.generation] = self._store_rs_key(key)

    def operational_key(self, audience: str, generation: int) -> OperationalKey | None:
        """One generation, or ``None``."""
        with self._lock:
            self._check_open()
            stored = self._rs_keys.get(audience, {}).get(generation)
            return None if stored is None else self._load_rs_key(stored)

    def operational_keys(self, audience: str) -> Sequence[OperationalKey]:
        """Every generation of ``audience``, oldest first."""
        with self._lock:
            self._check_open()
            found = self._rs_keys.get(audience, {})
            return [self._load_rs_key(found[g]) for g in sorted(found)]

    def newest_operational_keys(self) -> Sequence[OperationalKey]:
        """The newest generation of each audience, by audience."""
        with self._lock:
            self._check_open()
            return [self._load_rs_key(found[max(found)]) for audience, found in sorted(self._rs_keys.items()) if found]

    def add_operational_key(
        self, key: OperationalKey, *, resource_server: ResourceServer | None = None, actor: str
    ) -> None:
        """Store a new generation and add or replace ``resource_server``, atomically under the lock.

        :raises DuplicateError: the generation exists. :raises ValueError: no key material.
        """
        if key.key is None:
            raise ValueError("a new generation needs key material")
        with self._lock:
            self._check_open()
            if key.generation in self._rs_keys.get(key.audience, {}):
                raise DuplicateError(f"generation {key.generation} of {key.audience!r} exists")
            self._set_rs_key(key)
            if resource_server is not None:
                self._resource_servers[resource_server.audience] = self._store_rs(resource_server)
            self._bump_registry()
            self._log(
                AuditEntry(
                    at=key.created_at,
                    action="resource_server.key_created",
                    actor=actor,
                    audience=key.audience,
                    detail=f"generation {key.generation}",
                )
            )

    def confirm_operational_key(self, audience: str, generation: int, *, now: int, retire_at: int) -> bool:
        """Mark delivered; switch the RS's token key and retire older generations when it is the newest delivered.

        :raises NotFoundError: no such generation.
        """
        with self._lock:
            self._check_open()
            found = self._rs_keys.get(audience, {})
            if generation not in found:
                raise NotFoundError(f"no generation {generation} of {audience!r}")
            key = self._load_rs_key(found[generation])
            if key.delivered_at is not None or key.key is None:
                return False
            delivered = [g for g, s in found.items() if self._load_rs_key(s).delivered_at is not None]
            self._set_rs_key(dataclasses.replace(key, delivered_at=now))
            switched = not delivered or generation > max(delivered)
            if switched:
                stored_rs = self._resource_servers.get(audience)
                if stored_rs is not None:
                    rs = dataclasses.replace(self._load_rs(stored_rs), shared_key=key.cose_key())
                    self._resource_servers[audience] = self._store_rs(rs)
                for g in list(found):
                    older = self._load_rs_key(found[g])
                    if g < generation and older.retire_at is None:
                        self._set_rs_key(dataclasses.replace(older, retire_at=retire_at))
            self._bump_registry()
            detail = f"generation {generation}" + (" now issues tokens" if switched else "")
            self._log(
                AuditEntry(
                    at=now, action="resource_server.key_delivered", actor=audit.ACTOR_SYSTEM, audience=audience,
                    detail=detail,
                )
            )  # fmt: skip
            return True

    def erase_retired_keys(self, *, now: int) -> int:
        """Erase the key material of the generations whose ``retire_at`` has come; how many."""
        with self._lock:
            self._check_open()
            erased = 0
            for audience in sorted(self._rs_keys):
                for generation in sorted(self._rs_keys[audience]):
                    key = self._load_rs_key(self._rs_keys[audience][generation])
                    if key.key is not None and key.retire_at is not None and key.retire_at <= now:
                        self._set_rs_key(dataclasses.replace(key, key=None))
                        erased += 1
                        self._log(
                            AuditEntry(
                                at=now, action="resource_server.key_retired", actor=audit.ACTOR_SYSTEM,
                                audience=audience, detail=f"generation {generation} erased",
                            )
                        )  # fmt: skip
            if erased:
                self._bump_registry()
            return erased

    def revoke_operational_keys(self, audience: str, *, actor: str, now: int) -> int:
        """Retire and erase every generation, disable the RS, revoke its tokens and drop its registration,
        atomically under the lock.

        :raises NotFoundError: no such resource server.
        """
        with self._lock:
            self._check_open()
            stored_rs = self._resource_servers.get(audience)
            if stored_rs is None:
                raise NotFoundError(f"no resource server {audience!r}")
            rs = dataclasses.replace(self._load_rs(stored_rs), enabled=False, shared_key=None)
            self._resource_servers[audience] = self._store_rs(rs)
            keys = self._rs_keys.get(audience, {})
            for generation in list(keys):
                key = self._load_rs_key(keys[generation])
                retire_at = now if key.retire_at is None or key.retire_at > now else key.retire_at
                self._set_rs_key(dataclasses.replace(key, key=None, retire_at=retire_at))
            revoked = self._revoke_where(lambda t: t.audience == audience, now)
            location = self._registration_of.pop(audience, None)
            if location is not None:
                del self._registrations[location]
            self._bump_registry()
            self._log(
                AuditEntry(
                    at=now, action="resource_server.revoked", actor=actor, audience=audience,
                    detail=f"{len(keys)} key generations erased, {revoked} tokens revoked",
                )
            )  # fmt: skip
            return revoked

    # -- LwM2M registrations (issue #7) ----------------------------------------------------------------------

    def put_registration(self, registration: Lwm2mRegistration) -> Lwm2mRegistration | None:
        """Store a Register, replacing the audience's previous one (returned). :raises DuplicateError: location
        taken by another audience."""
        with self._lock:
            self._check_open()
            taken = self._registrations.get(registration.location)
            if taken is not None and taken.audience != registration.audience:
                raise DuplicateError(f"registration location {registration.location!r} is taken")
            old_location = self._registration_of.get(registration.audience)
            old = None if old_location is None else self._registrations.pop(old_location)
            self._registrations[registration.location] = registration
            self._registration_of[registration.audience] = registration.location
            return old

    def get_registration(self, location: str) -> Lwm2mRegistration | None:
        """The registration at ``rd/{location}``, or ``None``."""
        with self._lock:
            self._check_open()
            return self._registrations.get(location)

    def registration_of(self, audience: str) -> Lwm2mRegistration | None:
        """The live registration of ``audience``, or ``None``."""
        with self._lock:
            self._check_open()
            location = self._registration_of.get(audience)
            return None if location is None else self._registrations[location]

    def update_registration(
        self,
        location: str,
        *,
        now: int,
        lifetime: int | None = None,
        binding: str | None = None,
        object_links: str | None = None,
        source: str | None = None,
    ) -> Lwm2mRegistration | None:
        """An Update (see the Protocol); ``None`` for an unknown location."""
        with self._lock:
            self._check_open()
            old = self._registrations.get(location)
            if old is None:
                return None
            new = dataclasses.replace(
                old,
                last_contact=now,
                lifetime=old.lifetime if lifetime is None else lifetime,
                binding=old.binding if binding is None else binding,
                object_links=old.object_links if object_links is None else object_links,
                source=old.source if source is None else source,
            )
            self._registrations[location] = new
            return new

    def delete_registration(self, location: str) -> bool:
        """A De-register; ``False`` for an unknown location."""
        with self._lock:
            self._check_open()
            registration = self._registrations.pop(location, None)
            if registration is None:
                return False
            del self._registration_of[registration.audience]
            return True

    def list_registrations(self) -> Sequence[Lwm2mRegistration]:
        """Every registration, by audience."""
        with self._lock:
            self._check_open()
            return [self._registrations[self._registration_of[a]] for a in sorted(self._registration_of)]

    # -- audit -------------------------------------------------------------------------------------------------

    def append_audit(self, entries: Sequence[AuditEntry]) -> None:
        """Append entries."""
        with self._lock:
            self._check_open()
            self._log(*entries)

    def list_audit(self, query: AuditQuery) -> Sequence[AuditEntry]:
        """The audit entries and the issued tokens (as ``token.issued``) matching ``query``, newest first."""
        with self._lock:
            self._check_open()
            found = [e for e in self._audit if audit.entry_matches(e, query)]
            if audit.action_matches("token.issued", query.action):
                for stored in self._tokens.values():
                    entry = audit.issued_entry(self._load_token(stored))
                    if audit.entry_matches(entry, query):
                        found.append(entry)
            return audit.newest_first(found, query.limit)

    def close(self) -> None:
        """Drop everything; later calls raise ``RuntimeError``. Idempotent."""
        with self._lock:
            self._closed = True
            self._clients.clear()
            self._resource_servers.clear()
            self._exi_sequences.clear()
            self._tokens.clear()
            self._by_hash.clear()
            self._by_pop_kid.clear()
            self._generated_pop_kids.clear()
            self._signing_keys.clear()
            self._users.clear()
            self._groups.clear()
            self._members.clear()
            self._requests.clear()
            self._pending.clear()
            self._grants.clear()
            self._grant_tokens.clear()
            self._audit.clear()
            self._rs_keys.clear()
            self._registrations.clear()
            self._registration_of.clear()
