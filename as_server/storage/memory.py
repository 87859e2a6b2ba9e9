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
from collections.abc import Sequence
from dataclasses import dataclass

from ace_core.keys import CoseKey
from as_server.models import Client, IssuedToken, ResourceServer, SigningKey, TokenStatus
from as_server.sealing import MasterKey
from as_server.storage.base import DuplicateError, NotFoundError

__all__ = ["MemoryStorage"]


@dataclass(frozen=True, slots=True)
class _Stored:
    """A record as kept: secret fields blanked and sealed into ``sealed`` when a master key is used."""

    record: object
    sealed: bytes | None
    seq: int  # insertion order, the tie-breaker for "newest"


class MemoryStorage:
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
        self._closed = False

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
