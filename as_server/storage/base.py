"""Storage Protocols of the authorization server (STYLE §3.6 rule 7: read Protocols plus ``Editable*``).

Backends: :mod:`as_server.storage.memory` (tests) and :mod:`as_server.storage.sqlalchemy` (SQLite by default,
PostgreSQL). Every method returns frozen records from :mod:`as_server.models`; key material is encrypted at rest
by the backend.

Registry records (clients, resource servers, signing keys) may be cached by a backend that is shared between
processes: :class:`~as_server.storage.sqlalchemy.SqlStorage` serves a change made through another storage object
(another process) within :data:`~as_server.storage.registry_cache.REGISTRY_MAX_AGE` seconds, and a change made
through the same object at once (:meth:`Storage.registry_version`). The registry version also covers users and
grants (issue #5), so that the grants the policy engine sees (:meth:`GrantStore.active_grants`) are cached the
same way.

**Audit in the same transaction.** Every method below that changes the consent workflow, users, groups or a
client's state takes the ``actor`` (``user:NAME``, ``cli:OS-USER``, ``client:ID`` or ``system``) and ``now``, and
writes its :class:`~as_server.models.AuditEntry` in the same transaction as the change: either both are stored or
neither (no partial writes). The audit log itself is append-only: this interface has no way to change or delete
an entry, and the SQL backend's triggers refuse ``UPDATE`` and ``DELETE`` on its table.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from as_server.models import (
    AccessRequestStatus,
    AuditEntry,
    AuthorizationCode,
    Client,
    ConsentRequest,
    Grant,
    GrantStatus,
    Group,
    IssuedToken,
    Lwm2mRegistration,
    OperationalKey,
    RefreshToken,
    ResourceServer,
    SigningKey,
    User,
)


def pending_key(request: ConsentRequest) -> str:
    """What makes two access requests duplicates while pending: client, subject, audience and scope (hashed)."""
    scope = request.scope
    kind, value = ("aif", scope.hex()) if isinstance(scope, bytes) else ("text", scope)
    text = json.dumps([request.client_id, request.subject, request.audience, kind, value], separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "backslashreplace")).hexdigest()


class DuplicateError(Exception):
    """A record with this identifier already exists."""


class NotFoundError(Exception):
    """No record with this identifier."""


class StateError(Exception):
    """The record is not in a state that allows the change (e.g. an access request that is already decided)."""


class ClientStore(Protocol):
    """Read access to registered clients."""

    def get_client(self, client_id: str) -> Client | None: ...


class EditableClientStore(ClientStore, Protocol):
    """Administrative changes to the client registry."""

    def add_client(self, client: Client) -> None:
        """:raises DuplicateError:"""
        ...

    def update_client(self, client: Client) -> None:
        """Replace the record with the same ``client_id``. :raises NotFoundError:"""
        ...

    def list_clients(self) -> Sequence[Client]: ...

    def set_client_enabled(self, client_id: str, enabled: bool, *, actor: str, now: int) -> int:
        """Enable or disable a client; disabling also revokes its tokens that have not expired (introspection then
        answers ``active: false``). Audited as ``client.disabled`` / ``client.enabled``.

        :returns: the number of tokens revoked.
        :raises NotFoundError:
        """
        ...


class ResourceServerStore(Protocol):
    """Read access to registered resource servers (audiences)."""

    def get_resource_server(self, audience: str) -> ResourceServer | None: ...


class EditableResourceServerStore(ResourceServerStore, Protocol):
    """Administrative changes to the resource-server registry."""

    def add_resource_server(self, rs: ResourceServer) -> None:
        """:raises DuplicateError:"""
        ...

    def update_resource_server(self, rs: ResourceServer) -> None:
        """:raises NotFoundError:"""
        ...

    def list_resource_servers(self) -> Sequence[ResourceServer]: ...


class ExiSequenceStore(Protocol):
    """The per-resource-server counter of ``exi`` tokens (RFC 9200 §5.10.3).

    A token with ``exi`` MUST carry a ``cti`` made of the RS identifier and "a sequence number that counts the
    tokens with exi issued by this AS for this RS"; the RS treats every token numbered below the highest one it
    no longer holds as expired. So numbers must rise in the order the tokens are issued, across every thread and
    every process that issues tokens from one database: one atomic increment per token, never blocks of numbers
    reserved per process (a process handing out a number below one another process already issued would have its
    token refused as soon as the other one expires). A number drawn for a token that is then not issued leaves
    a gap, which is harmless.

    The counter is not part of :class:`~as_server.models.ResourceServer` (replacing the record must never move
    it back) and incrementing it is not a registry write: it does not change
    :meth:`Storage.registry_version`.
    """

    def next_exi_sequence(self, audience: str) -> int:
        """Increment and return the counter of ``audience``: 1 for its first ``exi`` token, durable on return.

        :raises NotFoundError: no resource server with this audience.
        """
        ...


class TokenStore(Protocol):
    """Issued tokens. :meth:`record` returns only once the record is durable (committed)."""

    def record(self, token: IssuedToken) -> None:
        """Durably store an issued token before it is handed out.

        :raises DuplicateError: ``cti`` or ``token_hash`` reused, or ``token.pop_key_generated`` and a token of the
            same client and audience that is also marked so has the same ``pop_kid`` (an AS-generated PoP key id
            must be new; tokens not marked may share a ``pop_kid``).
        """
        ...

    def submit_record(self, token: IssuedToken) -> Future[None]:
        """:meth:`record` without waiting: the future completes once the record is durable, or fails with what
        :meth:`record` would raise. For event-loop transports (:meth:`TokenEndpoint.handle_queued
        <as_server.endpoints.token.TokenEndpoint.handle_queued>`); queuing itself raises only when the storage
        is closed.
        """
        ...

    def get_by_cti(self, cti: bytes) -> IssuedToken | None: ...

    def get_by_hash(self, token_hash: bytes) -> IssuedToken | None: ...

    def find_by_pop_kid(self, client_id: str, audience: str, pop_kid: bytes) -> IssuedToken | None:
        """The most recent token of this client for this audience bound to PoP key ``pop_kid``."""
        ...

    def list_tokens(
        self, *, client_id: str | None = None, audience: str | None = None, limit: int = 100
    ) -> Sequence[IssuedToken]:
        """Newest first."""
        ...

    def revoke(self, cti: bytes) -> bool:
        """Mark revoked; returns False when unknown."""
        ...

    def tokens_of_grant(self, grant_id: str) -> Sequence[IssuedToken]:
        """The tokens issued under a grant (:attr:`IssuedToken.grant_ids <as_server.models.IssuedToken.grant_ids>`),
        newest first."""
        ...

    def count(self) -> int: ...


class KeyStore(Protocol):
    """The AS's token-signing keys, with rotation (old keys verify until their tokens expire)."""

    def signing_key(self) -> SigningKey | None:
        """The newest non-retired key."""
        ...

    def verification_keys(self, now: int) -> Sequence[SigningKey]:
        """Every key whose tokens may still be valid at ``now``."""
        ...

    def add_signing_key(self, key: SigningKey) -> None: ...

    def retire(self, kid: bytes, *, at: int, retire_after: int) -> None: ...


class UserStore(Protocol):
    """Read access to local users and groups (what :class:`~as_server.identity.LocalIdentityProvider` reads)."""

    def get_user(self, name: str) -> User | None: ...

    def list_users(self) -> Sequence[User]:
        """Every user, by name."""
        ...

    def get_group(self, name: str) -> Group | None: ...

    def list_groups(self) -> Sequence[Group]:
        """Every group, by name."""
        ...

    def members_of(self, group: str) -> Sequence[str]:
        """The user names in ``group``, sorted (empty for an unknown group)."""
        ...

    def groups_of(self, user: str) -> frozenset[str]:
        """The groups ``user`` is a member of."""
        ...

    def manager_sites(self, user: str) -> tuple[str, ...]:
        """The sites ``user`` manages in the console (issue #6): audience patterns (exact names or globs, as
        :func:`fnmatch.fnmatchcase` matches them), sorted; empty for an unknown user or one without sites."""
        ...


class EditableUserStore(UserStore, Protocol):
    """Administrative changes to users and groups, each audited in its own transaction."""

    def add_user(self, user: User, *, actor: str, now: int) -> None:
        """:raises DuplicateError:"""
        ...

    def set_password(self, name: str, password_hash: str, *, actor: str, now: int) -> None:
        """Replace a user's password hash. :raises NotFoundError:"""
        ...

    def set_user_enabled(self, name: str, enabled: bool, *, actor: str, now: int) -> int:
        """Enable or disable a user. Disabling revokes the user's tokens (``sub``) that have not expired, and the
        grants made for the user stop counting (:meth:`GrantStore.active_grants`). Audited as ``user.disabled`` /
        ``user.enabled``.

        :returns: the number of tokens revoked.
        :raises NotFoundError:
        """
        ...

    def add_group(self, group: Group, *, actor: str, now: int) -> None:
        """:raises DuplicateError:"""
        ...

    def add_member(self, group: str, user: str, *, actor: str, now: int) -> None:
        """:raises NotFoundError: no such group or user. :raises DuplicateError: already a member."""
        ...

    def remove_member(self, group: str, user: str, *, actor: str, now: int) -> None:
        """:raises NotFoundError: no such membership."""
        ...

    def set_manager_sites(self, user: str, patterns: Collection[str], *, actor: str, now: int) -> None:
        """Replace the sites (audience patterns) ``user`` manages; audited as ``user.sites_set``.

        :raises NotFoundError: no such user.
        """
        ...


class AccessRequestStore(Protocol):
    """Access requests of the consent workflow (:mod:`as_server.consent`).

    Pending requests whose ``expires_at`` has passed are expired lazily: by every read and listing below that
    takes ``now`` (status ``expired``, ``decided_by`` ``system``, audited as ``access_request.expired``).
    """

    def submit_access_request(self, request: ConsentRequest, *, actor: str) -> tuple[ConsentRequest, bool]:
        """Record a new pending request, or merge it into the pending request of the same client, subject,
        audience and scope (one per such key, also across processes): that one's ``request_count`` goes up and
        its ``updated_at`` becomes ``request.created_at``. Audited as ``access_request.created`` or ``.merged``.

        :returns: the stored request and whether it was merged.
        """
        ...

    def get_access_request(self, request_id: str, *, now: int) -> ConsentRequest | None: ...

    def get_access_requests(self, request_ids: Collection[str], *, now: int) -> Sequence[ConsentRequest]:
        """The requests among ``request_ids`` that exist, in one read (observers' polling)."""
        ...

    def list_access_requests(
        self, *, now: int, status: AccessRequestStatus | None = None, limit: int = 100
    ) -> Sequence[ConsentRequest]:
        """Newest first, optionally of one status."""
        ...

    def expire_access_requests(self, *, now: int) -> Sequence[ConsentRequest]:
        """Expire every pending request whose time is up; returns them (expired)."""
        ...

    def approve_access_request(self, request_id: str, grant: Grant, *, actor: str, now: int, note: str = "") -> None:
        """Mark the pending request approved and store ``grant`` (audited: ``access_request.approved`` and
        ``grant.created``), in one transaction.

        :raises NotFoundError: no such request.
        :raises StateError: the request is not pending (decided or expired).
        """
        ...

    def deny_access_request(self, request_id: str, *, actor: str, now: int, note: str = "") -> None:
        """Mark the pending request denied (audited: ``access_request.denied``).

        :raises NotFoundError: :raises StateError:
        """
        ...


class GrantStore(Protocol):
    """Grants: permit rules created by approvals, seen by the policy engine through
    :class:`~as_server.consent.GrantRuleSource`."""

    def active_grants(self) -> Sequence[Grant]:
        """Every grant that is not revoked and not made for a disabled local user, in creation order. Cached like
        the registry (a grant change bumps :meth:`Storage.registry_version`); callers may keep the result while
        the registry version is unchanged."""
        ...

    def get_grant(self, grant_id: str) -> Grant | None: ...

    def list_grants(self, *, status: GrantStatus | None = None, limit: int = 100) -> Sequence[Grant]:
        """Newest first."""
        ...

    def revoke_grant(self, grant_id: str, *, actor: str, now: int) -> int:
        """Revoke the grant and, in the same transaction, every token issued under it that is still active
        (audited: ``grant.revoked``).

        :returns: the number of tokens revoked.
        :raises NotFoundError: :raises StateError: already revoked.
        """
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditQuery:
    """Filters of :meth:`AuditStore.list_audit` (all optional; ``since`` inclusive, ``until`` exclusive).

    :param user: entries about the user (``subject``) or by the user (``actor`` ``user:NAME``).
    :param action: an action (``token.refused``) or a family (``access_request``: every ``access_request.*``).
    """

    since: int | None = None
    until: int | None = None
    actor: str | None = None
    client_id: str | None = None
    user: str | None = None
    audience: str | None = None
    action: str | None = None
    limit: int = 100


class AuditStore(Protocol):
    """The append-only audit log."""

    def append_audit(self, entries: Sequence[AuditEntry]) -> None:
        """Append entries in one transaction (their ``seq`` is assigned by the storage)."""
        ...

    def list_audit(self, query: AuditQuery) -> Sequence[AuditEntry]:
        """Matching entries, newest first, at most ``query.limit``: the audit log merged with the issued tokens,
        which are durable in their own table and appear as ``token.issued`` entries (so issuing a token writes no
        audit row)."""
        ...


class AuthorizationCodeStore(Protocol):
    """Authorization codes (RFC 6749 §4.1; :mod:`as_server.oauth`), by the SHA-256 of the code.

    Exchanging a code is three steps, so that nothing is issued twice and a replay revokes what was issued:
    :meth:`redeem_authorization_code` (one conditional write: only one caller wins a code),
    issuing the access token, then :meth:`complete_code_exchange` (records that token and stores the first refresh
    token, unless a replay was detected meanwhile). A replay (:meth:`authorization_code_reused`) marks the code and
    revokes its family in one transaction, so whichever of the two commits second sees the other.
    """

    def add_authorization_code(self, code: AuthorizationCode) -> None:
        """Store a new code (and forget codes that expired long ago). :raises DuplicateError:"""
        ...

    def get_authorization_code(self, code_hash: bytes) -> AuthorizationCode | None: ...

    def redeem_authorization_code(self, code_hash: bytes, *, family_id: str, now: int) -> AuthorizationCode | None:
        """Mark the code used by the family ``family_id``, if it is unused and unexpired; the code as marked, or
        ``None`` (unknown, used, or expired)."""
        ...

    def complete_code_exchange(self, code_hash: bytes, *, access_cti: bytes, refresh: RefreshToken | None) -> bool:
        """Record the access token issued for the redeemed code and store the family's first refresh token.

        :returns: ``False`` (and nothing stored) when the code was presented again meanwhile: the caller revokes
            the access token it issued.
        """
        ...

    def authorization_code_reused(self, code_hash: bytes, *, actor: str, now: int) -> int:
        """A used code was presented again: mark it and revoke every token issued from it (its family), audited as
        ``authorization_code.reused``. :returns: the number of tokens revoked (access and refresh)."""
        ...


class RefreshTokenStore(Protocol):
    """Refresh tokens (RFC 6749 §6, RFC 9200 §5.8.1; :mod:`as_server.oauth`), by the SHA-256 of the token."""

    def get_refresh_token(self, token_hash: bytes) -> RefreshToken | None: ...

    def rotate_refresh_token(self, token_hash: bytes, new: RefreshToken, *, now: int) -> bool:
        """Mark the active token ``token_hash`` used and store its successor ``new``, in one transaction.

        :returns: ``False`` (nothing stored) when ``token_hash`` is no longer active: someone used it first.
        """
        ...

    def revoke_refresh_family(self, family_id: str, *, actor: str, now: int, reason: str) -> int:
        """Revoke every refresh token of the family and every access token issued with them or from its code,
        audited as ``refresh_token.family_revoked`` with ``reason``. :returns: the number of tokens revoked."""
        ...


class OperationalKeyStore(Protocol):
    """Operational keys of bootstrapped locks, by generation (issue #7; docs/bootstrap-design.md, "Operational
    keys at the AS"). The rules (when to create, deliver, switch and retire) live in
    :class:`~as_server.bootstrap.operational.OperationalCredentials`; this interface keeps each change atomic.

    Key material is sealed at rest like a resource server's shared key. Writes that change the key material, the
    delivery state or the resource server bump :meth:`Storage.registry_version` (so cached keys and the token
    endpoint's cached resource server follow, in every process); reads of one generation may be cached.
    """

    def operational_key(self, audience: str, generation: int) -> OperationalKey | None:
        """One generation (cached like registry records: this is the per-DTLS-handshake lookup)."""
        ...

    def operational_keys(self, audience: str) -> Sequence[OperationalKey]:
        """Every generation of ``audience``, oldest first."""
        ...

    def newest_operational_keys(self) -> Sequence[OperationalKey]:
        """The newest generation of every audience that has one, by audience."""
        ...

    def add_operational_key(
        self, key: OperationalKey, *, resource_server: ResourceServer | None = None, actor: str
    ) -> None:
        """Store a new generation (``key.key`` set) and, in the same transaction, add ``resource_server`` or
        replace the record with its audience (audited as ``resource_server.key_created``).

        :raises DuplicateError: the generation exists (another process created it first).
        :raises ValueError: ``key.key`` is ``None``.
        """
        ...

    def confirm_operational_key(self, audience: str, generation: int, *, now: int, retire_at: int) -> bool:
        """Mark the generation delivered (once: a second call changes nothing) and, in the same transaction, when it
        is newer than every generation delivered before, make it the resource server's ``shared_key`` and give
        every older generation that is not retiring ``retire_at`` (audited as ``resource_server.key_delivered``).

        :returns: whether anything changed (``False``: delivered before, or its key material is erased).
        :raises NotFoundError: no such generation.
        """
        ...

    def erase_retired_keys(self, *, now: int) -> int:
        """Erase the key material of every generation with ``retire_at <= now``; how many were erased."""
        ...

    def revoke_operational_keys(self, audience: str, *, actor: str, now: int) -> int:
        """Revocation, in one transaction: every generation retired at ``now`` (unless earlier) and erased, the
        resource server disabled and its ``shared_key`` erased, its unexpired tokens revoked (audited as
        ``resource_server.revoked``), and its LwM2M registration dropped (made with an identity that is gone: the
        lock registers again after its next bootstrap).

        :returns: the number of tokens revoked.
        :raises NotFoundError: no resource server ``audience``.
        """
        ...


class RegistrationStore(Protocol):
    """Live LwM2M registrations of locks at the AS's ``/rd`` (issue #7): one per audience. Not registry records:
    writing them does not change :meth:`Storage.registry_version`."""

    def put_registration(self, registration: Lwm2mRegistration) -> Lwm2mRegistration | None:
        """Store a Register, replacing the audience's previous registration (returned, else ``None``).

        :raises DuplicateError: another audience's registration has this location.
        """
        ...

    def get_registration(self, location: str) -> Lwm2mRegistration | None: ...

    def registration_of(self, audience: str) -> Lwm2mRegistration | None: ...

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
        """An Update: ``last_contact = now`` and the given fields replaced; the registration, or ``None`` when the
        location is unknown. :raises ValueError: object links too long (nothing changed)."""
        ...

    def delete_registration(self, location: str) -> bool:
        """A De-register; ``False`` when the location is unknown."""
        ...

    def list_registrations(self) -> Sequence[Lwm2mRegistration]:
        """Every registration, by audience."""
        ...


class Storage(
    EditableClientStore,
    EditableResourceServerStore,
    ExiSequenceStore,
    TokenStore,
    KeyStore,
    EditableUserStore,
    AccessRequestStore,
    GrantStore,
    AuditStore,
    AuthorizationCodeStore,
    RefreshTokenStore,
    OperationalKeyStore,
    RegistrationStore,
    Protocol,
):
    """Everything one AS deployment stores; a backend implements all of it."""

    def registry_version(self) -> int | None:
        """A number that changes with every write to clients, resource servers, signing keys, users and grants,
        in the same transaction (``None`` before the first); what registry caches check
        (:mod:`as_server.storage.registry_cache`). Token, access-request and audit writes do not change it."""
        ...

    def close(self) -> None: ...
