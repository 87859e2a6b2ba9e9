"""The SQL backend of every storage Protocol of :mod:`as_server.storage.base` (SQLite or PostgreSQL).

Queries are SQLAlchemy Core statements on :mod:`.tables`; rows become the frozen records of
:mod:`as_server.models` in :mod:`.rows` before they leave this package (STYLE §3.6 rule 7). Key material is sealed
with the deployment's :class:`~as_server.sealing.MasterKey` before it is written.

Issued tokens are written through a :class:`~.group_commit.GroupCommitter`, so concurrent token requests share
commits; :meth:`SqlStorage.record` still returns only once its own row is committed (RFC 9200 §5.8.2: the AS
answers with the token, and introspection (§5.9) and revocation must know it from then on).

Registry reads (clients, resource servers, signing keys) are served from a per-process
:class:`~as_server.storage.registry_cache.RegistryCache`: every registry write bumps ``registry_version`` in its own
transaction, and the cache re-reads that number at most every
:data:`~as_server.storage.registry_cache.REGISTRY_MAX_AGE` seconds, so a change made by another process takes
effect within that time and one made through this object at once.

The statements of the request path are built once, at import, with bound parameters, so SQLAlchemy finds them in
its compiled cache instead of building and hashing a new statement per call; reads use connections that send no
``BEGIN`` on SQLite (:func:`.engine.read_only`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from as_server.models import Client, IssuedToken, ResourceServer, SigningKey, TokenStatus
from as_server.sealing import MasterKey
from as_server.storage.base import DuplicateError, NotFoundError
from as_server.storage.registry_cache import REGISTRY_MAX_AGE, RegistryCache
from as_server.storage.sqlalchemy import rows
from as_server.storage.sqlalchemy.engine import (
    WriteLock,
    bulk_load_settings,
    read_only,
    safe_url,
    write_connection,
    write_transaction,
)
from as_server.storage.sqlalchemy.group_commit import (
    DEFAULT_MAX_BATCH,
    CommitStats,
    GroupCommitter,
    StorageClosedError,
)
from as_server.storage.sqlalchemy.tables import (
    clients,
    issued_tokens,
    registry_version,
    resource_servers,
    signing_keys,
)
from as_server.storage.sqlalchemy.token_writer import DUPLICATE_TOKEN, TokenValues, TokenWriter, is_unique_violation

__all__ = ["SqlStorage"]

Row = dict[str, Any]

_NEWEST_FIRST = (issued_tokens.c.iat.desc(), issued_tokens.c.seq.desc())
_KEYS_NEWEST_FIRST = (signing_keys.c.created_at.desc(), signing_keys.c.seq.desc())

# Statements of the request path, built once (see the module docstring).
_t = issued_tokens.c
_CLIENT = sa.select(clients).where(clients.c.client_id == sa.bindparam("client_id"))
_RESOURCE_SERVER = sa.select(resource_servers).where(resource_servers.c.audience == sa.bindparam("audience"))
_SIGNING_KEYS = sa.select(signing_keys).order_by(*_KEYS_NEWEST_FIRST)
_TOKEN_BY_CTI = sa.select(issued_tokens).where(_t.cti == sa.bindparam("cti"))
_TOKEN_BY_HASH = sa.select(issued_tokens).where(_t.token_hash == sa.bindparam("token_hash"))
_TOKEN_BY_POP_KID = (
    sa.select(issued_tokens)
    .where(
        (_t.client_id == sa.bindparam("client_id"))
        & (_t.audience == sa.bindparam("audience"))
        & (_t.pop_kid == sa.bindparam("pop_kid"))
    )
    .order_by(*_NEWEST_FIRST)
    .limit(1)
)
_REGISTRY_VERSION = sa.select(registry_version.c.version).where(registry_version.c.id == 1)
# An upsert both databases understand (SQLite >= 3.24, PostgreSQL >= 9.5): the row may not exist yet.
_BUMP_REGISTRY_VERSION = sa.text(
    "INSERT INTO registry_version (id, version) VALUES (1, 1) "
    "ON CONFLICT (id) DO UPDATE SET version = registry_version.version + 1"
)
_SIGNING_KEYS_KEY = ("signing_keys",)
# RFC 9200 §5.10.3 exi sequence numbers: one atomic increment per token (a row lock on PostgreSQL, the write lock on
# SQLite). RETURNING needs SQLite >= 3.35 and PostgreSQL >= 8.2.
_NEXT_EXI_SEQUENCE = (
    sa.update(resource_servers)
    .where(resource_servers.c.audience == sa.bindparam("rs_audience"))
    .values(exi_sequence=resource_servers.c.exi_sequence + 1)
    .returning(resource_servers.c.exi_sequence)
)


class SqlStorage:
    """:class:`~as_server.storage.base.Storage` on SQLite or PostgreSQL. Thread-safe; one per process.

    Build it with :func:`as_server.storage.sqlalchemy.open_storage`, which also checks the schema revision.
    Open it after forking (gunicorn workers): the connection pool and the writer thread do not survive a fork.

    Clients, resource servers and signing keys are cached in this object: a change made by another process (or
    another :class:`SqlStorage` on the same database) is seen within ``registry_max_age`` seconds, one made
    through this object at once (:mod:`as_server.storage.registry_cache`).

    :param engine: from :func:`.engine.make_engine` (it carries the SQLite settings this class relies on); its
        pool should hold a connection for every thread that uses this storage at once, plus one for the writer.
    :param master_key: seals and opens key material.
    :param max_batch: most token records per group commit.
    :param group_commit: ``False`` makes :meth:`record` commit each record alone, in the calling thread (the
        benchmark's baseline; also a way to rule group commit out when chasing a problem).
    :param registry_max_age: how stale cached registry records may be, at most, with respect to changes made by
        other processes (:data:`~as_server.storage.registry_cache.REGISTRY_MAX_AGE`).
    :param monotonic: the clock of that bound (injectable for tests).
    """

    def __init__(
        self,
        engine: Engine,
        master_key: MasterKey,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        group_commit: bool = True,
        registry_max_age: float = REGISTRY_MAX_AGE,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._reader = read_only(engine)
        self._write_lock = WriteLock.for_engine(engine)
        self._key = master_key
        self._closed = False
        self._group_commit = group_commit
        self._writer = TokenWriter(engine, self._write_lock)
        # Bulk loads go to the driver's executemany as plain tuples (no per-value processing; see token_writer).
        self._insert_token = self._writer.insert_sql(1)
        self._committer: GroupCommitter[TokenValues] = GroupCommitter(
            self._write_tokens, max_batch=max_batch, name="ostiary-token-writer"
        )
        self._registry = RegistryCache(self.registry_version, max_age=registry_max_age, clock=monotonic)

    def __repr__(self) -> str:
        return f"SqlStorage({safe_url(self._engine.url)!r})"

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._engine.dialect.name

    @property
    def commit_stats(self) -> CommitStats:
        """Rows, transactions and largest batch of the token writer (for tests and benchmarks)."""
        return self._committer.stats

    def close(self) -> None:
        """Commit the queued token records, stop the writer thread and close every connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._committer.close()
        self._engine.dispose()
        self._write_lock.close()

    # -- plumbing ----------------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosedError("the storage is closed")

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A connection for one read statement (no ``BEGIN`` on SQLite)."""
        self._check_open()
        with self._reader.connect() as conn:
            yield conn

    def _read_one(self, statement: sa.Executable, params: dict[str, Any]) -> sa.RowMapping | None:
        with self._read() as conn:
            return conn.execute(statement, params).mappings().first()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        self._check_open()
        with self._write_lock, write_transaction(self._engine) as conn:
            yield conn

    @contextmanager
    def _registry_write(self) -> Iterator[Connection]:
        """A write transaction that also bumps the registry version; this process's cache is dropped after it."""
        try:
            with self._write() as conn:
                yield conn
                conn.execute(_BUMP_REGISTRY_VERSION)
        finally:
            self._registry.invalidate()

    def registry_version(self) -> int | None:
        """The registry version: changes with every write to clients, resource servers or signing keys (by any
        process); ``None`` before the first. One single-row query."""
        with self._read() as conn:
            version = conn.execute(_REGISTRY_VERSION).scalar()
        return None if version is None else int(version)

    def _insert_unique(self, table: sa.Table, row: Row, what: str) -> None:
        try:
            with self._registry_write() as conn:
                conn.execute(sa.insert(table), row)
        except sa.exc.IntegrityError as exc:
            if is_unique_violation(exc):
                raise DuplicateError(f"{what} already exists") from exc
            raise

    def _update_existing(self, table: sa.Table, key_column: str, row: Row, what: str) -> None:
        key = row[key_column]
        values = {name: value for name, value in row.items() if name != key_column}
        with self._registry_write() as conn:
            result = conn.execute(sa.update(table).where(table.c[key_column] == key).values(values))
            if result.rowcount == 0:
                raise NotFoundError(f"no {what}")  # rolls the transaction back: nothing changed

    # -- clients (RFC 9200 §5.8.1 client authentication, RFC 6749 §2) ---------------------------------------

    def get_client(self, client_id: str) -> Client | None:
        """The client (cached; see the class documentation), or ``None``."""
        self._check_open()
        return self._registry.get(("client", client_id), lambda: self._load_client(client_id))

    def _load_client(self, client_id: str) -> Client | None:
        row = self._read_one(_CLIENT, {"client_id": client_id})
        return None if row is None else rows.client_from_row(row)

    def add_client(self, client: Client) -> None:
        """:raises DuplicateError: ``client_id`` taken."""
        self._insert_unique(clients, rows.client_to_row(client), f"client {client.client_id!r}")

    def update_client(self, client: Client) -> None:
        """Replace the client with the same ``client_id``. :raises NotFoundError:"""
        self._update_existing(clients, "client_id", rows.client_to_row(client), f"client {client.client_id!r}")

    def list_clients(self) -> Sequence[Client]:
        """Every client, by ``client_id``."""
        with self._read() as conn:
            result = conn.execute(sa.select(clients).order_by(clients.c.client_id)).mappings().all()
        return [rows.client_from_row(row) for row in result]

    # -- resource servers (audiences, RFC 9200 §5.8.1) -----------------------------------------------------

    def get_resource_server(self, audience: str) -> ResourceServer | None:
        """The resource server, its shared key unsealed (cached; see the class documentation), or ``None``."""
        self._check_open()
        return self._registry.get(("rs", audience), lambda: self._load_resource_server(audience))

    def _load_resource_server(self, audience: str) -> ResourceServer | None:
        row = self._read_one(_RESOURCE_SERVER, {"audience": audience})
        return None if row is None else rows.resource_server_from_row(row, self._key)

    def add_resource_server(self, rs: ResourceServer) -> None:
        """:raises DuplicateError: ``audience`` taken."""
        row = rows.resource_server_to_row(rs, self._key)
        self._insert_unique(resource_servers, row, f"resource server {rs.audience!r}")

    def update_resource_server(self, rs: ResourceServer) -> None:
        """Replace the resource server with the same ``audience``. :raises NotFoundError:"""
        row = rows.resource_server_to_row(rs, self._key)
        self._update_existing(resource_servers, "audience", row, f"resource server {rs.audience!r}")

    def list_resource_servers(self) -> Sequence[ResourceServer]:
        """Every resource server, by audience."""
        with self._read() as conn:
            result = conn.execute(sa.select(resource_servers).order_by(resource_servers.c.audience)).mappings().all()
        return [rows.resource_server_from_row(row, self._key) for row in result]

    def next_exi_sequence(self, audience: str) -> int:
        """The next ``exi`` sequence number of ``audience`` (RFC 9200 §5.10.3): 1 first, committed on return.

        One ``UPDATE resource_servers SET exi_sequence = exi_sequence + 1 ... RETURNING`` in its own write
        transaction: concurrent callers, in this process or another on the same database, each get a different
        number, in the order they commit. Not a registry write (no ``registry_version`` bump, the cache stays).

        :raises NotFoundError: no resource server with this audience.
        """
        with self._write() as conn:
            number = conn.execute(_NEXT_EXI_SEQUENCE, {"rs_audience": audience}).scalar()
        if number is None:
            raise NotFoundError(f"no resource server {audience!r}")
        return int(number)

    # -- issued tokens (RFC 9200 §5.8.2, §5.9; RFC 9770 §4 token hashes) ----------------------------------

    def record(self, token: IssuedToken) -> None:
        """Durably store ``token`` (group commit); returns once its row is committed.

        :raises DuplicateError: its ``cti`` or ``token_hash`` is already recorded, or its PoP key is marked
            ``pop_key_generated`` and another such token of this client and audience has its ``pop_kid``.
        :raises StorageClosedError: after :meth:`close`.
        """
        values = rows.token_values(token, self._key)
        if self._group_commit:
            self._committer.write(values)
            return
        self._check_open()
        (outcome,) = self._write_tokens([values])
        if outcome is not None:
            raise outcome

    def submit_record(self, token: IssuedToken) -> Future[None]:
        """Like :meth:`record` without blocking: the future completes once the row is committed.

        For asyncio transports: ``await asyncio.wrap_future(storage.submit_record(token))``.
        """
        self._check_open()
        return self._committer.submit(rows.token_values(token, self._key))

    def _write_tokens(self, batch: Sequence[TokenValues]) -> Sequence[BaseException | None]:
        """The group committer's writer: the batch in one transaction (:class:`.token_writer.TokenWriter`)."""
        return self._writer.write(batch)

    def bulk_insert_tokens(
        self,
        tokens: Iterable[IssuedToken],
        *,
        batch: int = 10_000,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Insert many token records quickly (benchmark fixtures, imports), ``batch`` rows per transaction.

        Each ``cnf`` is sealed, as in :meth:`record`. Not atomic as a whole: after a failure the batches before it
        stay committed.

        :param progress: called with the running total after each committed batch.
        :returns: the number of records inserted.
        :raises DuplicateError: a ``cti`` or token hash is already recorded (that batch is not inserted).
        """
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self._check_open()
        total = 0
        iterator = iter(tokens)
        with write_connection(self._engine) as conn, bulk_load_settings(conn):
            while chunk := [rows.token_values(t, self._key) for t in itertools.islice(iterator, batch)]:
                try:
                    with self._write_lock, conn.begin():
                        conn.exec_driver_sql(self._insert_token, chunk)
                except sa.exc.IntegrityError as exc:
                    if is_unique_violation(exc):
                        raise DuplicateError(DUPLICATE_TOKEN) from exc
                    raise
                total += len(chunk)
                if progress is not None:
                    progress(total)
        return total

    def get_by_cti(self, cti: bytes) -> IssuedToken | None:
        return self._one_token(_TOKEN_BY_CTI, {"cti": cti})

    def get_by_hash(self, token_hash: bytes) -> IssuedToken | None:
        return self._one_token(_TOKEN_BY_HASH, {"token_hash": token_hash})

    def find_by_pop_kid(self, client_id: str, audience: str, pop_kid: bytes) -> IssuedToken | None:
        """The most recent token (by ``iat``, then by recording order) of ``client_id`` for ``audience`` bound to
        PoP key ``pop_kid``, whatever its status (RFC 9203 §3.1 / RFC 9202 §4: re-binding a key)."""
        return self._one_token(_TOKEN_BY_POP_KID, {"client_id": client_id, "audience": audience, "pop_kid": pop_kid})

    def _one_token(self, statement: sa.Executable, params: dict[str, Any]) -> IssuedToken | None:
        row = self._read_one(statement, params)
        return None if row is None else rows.token_from_row(row, self._key)

    def list_tokens(
        self, *, client_id: str | None = None, audience: str | None = None, limit: int = 100
    ) -> Sequence[IssuedToken]:
        """Up to ``limit`` tokens, newest first (by ``iat``, then by recording order), optionally filtered."""
        if limit <= 0:
            return []
        query = sa.select(issued_tokens)
        if client_id is not None:
            query = query.where(issued_tokens.c.client_id == client_id)
        if audience is not None:
            query = query.where(issued_tokens.c.audience == audience)
        query = query.order_by(*_NEWEST_FIRST).limit(limit)
        with self._read() as conn:
            result = conn.execute(query).mappings().all()
        return [rows.token_from_row(row, self._key) for row in result]

    def revoke(self, cti: bytes) -> bool:
        """Mark the token revoked (RFC 9770); ``False`` when ``cti`` is unknown. Revoking twice is harmless."""
        with self._write() as conn:
            result = conn.execute(
                sa.update(issued_tokens).where(issued_tokens.c.cti == cti).values(status=TokenStatus.REVOKED.value)
            )
        return result.rowcount > 0

    def count(self) -> int:
        """Number of recorded tokens, whatever their status."""
        with self._read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(issued_tokens)).scalar_one())

    # -- signing keys --------------------------------------------------------------------------------------

    def _signing_keys(self) -> tuple[SigningKey, ...]:
        """Every signing key, newest first (by ``created_at``, then insertion order), private parts unsealed; cached.

        A deployment has a handful (one per rotation), so :meth:`signing_key` and :meth:`verification_keys` pick
        from all of them instead of querying per ``now``.
        """
        self._check_open()
        keys = self._registry.get(_SIGNING_KEYS_KEY, self._load_signing_keys)
        assert keys is not None  # a tuple, possibly empty
        return keys

    def _load_signing_keys(self) -> tuple[SigningKey, ...]:
        with self._read() as conn:
            result = conn.execute(_SIGNING_KEYS).mappings().all()
        return tuple(rows.signing_key_from_row(row, self._key) for row in result)

    def signing_key(self) -> SigningKey | None:
        """The newest (by ``created_at``, then insertion order) key that is not retired."""
        return next((key for key in self._signing_keys() if key.retired_at is None), None)

    def verification_keys(self, now: int) -> Sequence[SigningKey]:
        """Keys whose tokens may still be valid at ``now``: not retired, or retired with ``retire_after`` later than
        ``now`` or unset (a retired key whose tokens' end is unknown keeps verifying). Newest first."""
        return [
            key
            for key in self._signing_keys()
            if key.retired_at is None or key.retire_after is None or key.retire_after > now
        ]

    def add_signing_key(self, key: SigningKey) -> None:
        """:raises DuplicateError: ``kid`` taken."""
        self._insert_unique(signing_keys, rows.signing_key_to_row(key, self._key), f"signing key 0x{key.kid.hex()}")

    def retire(self, kid: bytes, *, at: int, retire_after: int) -> None:
        """Rotate key ``kid`` out at ``at``; it verifies until ``retire_after``. :raises NotFoundError:"""
        with self._registry_write() as conn:
            result = conn.execute(
                sa.update(signing_keys)
                .where(signing_keys.c.kid == kid)
                .values(retired_at=at, retire_after=retire_after)
            )
            if result.rowcount == 0:
                raise NotFoundError(f"no signing key 0x{kid.hex()}")  # rolls back: nothing changed
