"""Storage Protocols of the authorization server (STYLE §3.6 rule 7: read Protocols plus ``Editable*``).

Backends: :mod:`as_server.storage.memory` (tests) and :mod:`as_server.storage.sqlalchemy` (SQLite by default,
PostgreSQL). Every method returns frozen records from :mod:`as_server.models`; key material is encrypted at rest
by the backend.

Registry records (clients, resource servers, signing keys) may be cached by a backend that is shared between
processes: :class:`~as_server.storage.sqlalchemy.SqlStorage` serves a change made through another storage object
(another process) within :data:`~as_server.storage.registry_cache.REGISTRY_MAX_AGE` seconds, and a change made
through the same object at once (:meth:`Storage.registry_version`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from as_server.models import Client, IssuedToken, ResourceServer, SigningKey


class DuplicateError(Exception):
    """A record with this identifier already exists."""


class NotFoundError(Exception):
    """No record with this identifier."""


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


class Storage(EditableClientStore, EditableResourceServerStore, ExiSequenceStore, TokenStore, KeyStore, Protocol):
    """Everything one AS deployment stores; a backend implements all of it."""

    def registry_version(self) -> int | None:
        """A number that changes with every write to clients, resource servers or signing keys, in the same
        transaction (``None`` before the first); what registry caches check (:mod:`as_server.storage.registry_cache`).
        Token writes do not change it."""
        ...

    def close(self) -> None: ...
