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
``BEGIN`` on SQLite (:func:`.engine.read_only`). The reads of a Bootstrap-Pack (a resource server by audience, a
lock's key generations, the registry version; issue #7, "Benchmark") go to the driver directly
(:meth:`SqlStorage._fetch`): one indexed ``SELECT`` each, where SQLAlchemy's connection, transaction, event and
result objects cost several times the query itself.

Operational keys of bootstrapped locks (``rs_keys``, issue #7) are registry records too: every change bumps the
registry version, and one generation (the per-DTLS-handshake lookup) is cached like a resource server. New
generations (:meth:`SqlStorage.add_operational_key`: a lock's first bootstrap, a rotation) go through a second
:class:`~.group_commit.GroupCommitter`: concurrent first bootstraps share one transaction (``executemany`` of their
key, resource-server and audit rows, one registry-version bump) and one commit, which is most of what a first
Bootstrap-Pack costs (issue #7, "Benchmark"; docs/bootstrap-design.md, "Delivery"). LwM2M registrations are not
registry records: they change with every Update and nothing caches them.

Users, access requests, grants and the audit log (issue #5) are written in ordinary write transactions, each with
its audit entries in the same transaction (:mod:`as_server.storage.base`). The active grants are cached with the
registry records (a grant or user change bumps the registry version), so the policy engine's SQL-backed rule
source costs no query per token request.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from as_server import audit
from as_server.models import (
    MAX_OBJECT_LINKS,
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
    operational_cose_key,
)
from as_server.sealing import MasterKey
from as_server.storage.base import AuditQuery, DuplicateError, NotFoundError, StateError, pending_key
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
from as_server.storage.sqlalchemy.oauth_store import OAuthSqlStore
from as_server.storage.sqlalchemy.tables import (
    access_requests,
    audit_log,
    clients,
    grants,
    group_members,
    issued_tokens,
    lwm2m_registrations,
    manager_sites,
    registry_version,
    resource_servers,
    rs_keys,
    signing_keys,
    token_grants,
    user_groups,
    users,
)
from as_server.storage.sqlalchemy.token_writer import DUPLICATE_TOKEN, TokenRow, TokenWriter, is_unique_violation

__all__ = ["SqlStorage"]

Row = dict[str, Any]
#: One new operational key generation for the key writer: its ``rs_keys`` row, the ``resource_servers`` row to add
#: or replace with it (or ``None``), and its audit row (:meth:`SqlStorage.add_operational_key`).
KeyRows = tuple[Row, Row | None, Row]

_NEWEST_FIRST = (issued_tokens.c.iat.desc(), issued_tokens.c.seq.desc())
_KEYS_NEWEST_FIRST = (signing_keys.c.created_at.desc(), signing_keys.c.seq.desc())

# Statements of the request path, built once (see the module docstring).
_t = issued_tokens.c
_CLIENT = sa.select(clients).where(clients.c.client_id == sa.bindparam("client_id"))
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
_RS_KEY = sa.select(rs_keys).where(
    (rs_keys.c.audience == sa.bindparam("audience")) & (rs_keys.c.generation == sa.bindparam("generation"))
)
# The same reads as driver SQL ({p}: the driver's placeholder), for SqlStorage._fetch.
_RAW_RESOURCE_SERVER = (
    f"SELECT {', '.join(c.name for c in resource_servers.c)} FROM {resource_servers.name} WHERE audience = {{p}}"
)
_RAW_RS_KEY = f"SELECT {', '.join(c.name for c in rs_keys.c)} FROM {rs_keys.name} WHERE audience = {{p}}"
_RAW_RS_KEYS_OF = _RAW_RS_KEY + " ORDER BY generation"
_RAW_RS_KEY_GENERATION = _RAW_RS_KEY + " AND generation = {p}"
_RAW_REGISTRY_VERSION = f"SELECT version FROM {registry_version.name} WHERE id = 1"
# An upsert both databases understand (SQLite >= 3.24, PostgreSQL >= 9.5): the row may not exist yet.
_BUMP_REGISTRY_VERSION_SQL = (
    "INSERT INTO registry_version (id, version) VALUES (1, 1) "
    "ON CONFLICT (id) DO UPDATE SET version = registry_version.version + 1"
)
_BUMP_REGISTRY_VERSION = sa.text(_BUMP_REGISTRY_VERSION_SQL)
_MAX_KEY_SQL = 1024  # statements the key writer keeps (one per batch size of the IN list, plus a few)
# The key writer's driver SQL (SqlStorage._sql fills in table, columns and the driver's placeholders).
_INSERT_SQL = "INSERT INTO {table} ({columns}) VALUES ({values})"
_EXISTING_SQL = "SELECT audience FROM {table} WHERE audience IN ({many})"
_UPDATE_SQL = "UPDATE {table} SET {set} WHERE audience = {p}"
_SIGNING_KEYS_KEY = ("signing_keys",)
_ACTIVE_GRANTS_KEY = ("active_grants",)
# Grants that count: not revoked, and not made for a local user who is disabled.
_ACTIVE_GRANTS = (
    sa.select(grants)
    .where(
        (grants.c.status == GrantStatus.ACTIVE.value)
        & (
            grants.c.subject.is_(None)
            | grants.c.subject.not_in(sa.select(users.c.name).where(users.c.enabled == sa.false()))
        )
    )
    .order_by(grants.c.created_at, grants.c.id)
)
_PENDING = AccessRequestStatus.PENDING.value
_ACTIVE_TOKEN = issued_tokens.c.status == TokenStatus.ACTIVE.value
_REVOKED_TOKEN = {"status": TokenStatus.REVOKED.value}
#: Most request ids one read takes (observers' polling); more are read in several queries.
_MAX_IDS_PER_QUERY = 500
# RFC 9200 §5.10.3 exi sequence numbers: one atomic increment per token (a row lock on PostgreSQL, the write lock on
# SQLite). RETURNING needs SQLite >= 3.35 and PostgreSQL >= 8.2.
_NEXT_EXI_SEQUENCE = (
    sa.update(resource_servers)
    .where(resource_servers.c.audience == sa.bindparam("rs_audience"))
    .values(exi_sequence=resource_servers.c.exi_sequence + 1)
    .returning(resource_servers.c.exi_sequence)
)


class SqlStorage(OAuthSqlStore):
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
        self._committer: GroupCommitter[TokenRow] = GroupCommitter(
            self._write_tokens, max_batch=max_batch, name="ostiary-token-writer"
        )
        self._key_committer: GroupCommitter[KeyRows] = GroupCommitter(
            self._write_keys, max_batch=max_batch, name="ostiary-key-writer"
        )
        self._registry = RegistryCache(self.registry_version, max_age=registry_max_age, clock=monotonic)
        placeholder = self._placeholder = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        self._key_sql: dict[tuple[str, str, tuple[str, ...], int], str] = {}
        self._integrity_error: type[Exception] = engine.dialect.loaded_dbapi.IntegrityError
        self._raw_sql = {
            sql: sql.format(p=placeholder)
            for sql in (_RAW_RESOURCE_SERVER, _RAW_RS_KEYS_OF, _RAW_RS_KEY_GENERATION, _RAW_REGISTRY_VERSION)
        }
        self._dbapi_error: type[Exception] = engine.dialect.loaded_dbapi.Error

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

    @property
    def key_commit_stats(self) -> CommitStats:
        """Rows, transactions and largest batch of the operational key writer (for tests and benchmarks)."""
        return self._key_committer.stats

    def close(self) -> None:
        """Commit the queued token records, stop the writer thread and close every connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._committer.close()
        self._key_committer.close()
        self._writer.close()
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

    def _fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        """The rows of one of the ``_RAW_*`` reads, as dictionaries by column name, through the driver (see the
        module documentation). On SQLite the connection is in autocommit mode (:mod:`.engine`), so the ``SELECT``
        is its own read transaction, as with :meth:`_read`; on PostgreSQL the pool rolls back on return."""
        self._check_open()
        proxied = self._reader.raw_connection()
        try:
            cursor = proxied.cursor()
            try:
                cursor.execute(self._raw_sql[sql], params)
                names = [column[0] for column in cursor.description]
                return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            finally:
                cursor.close()
        except self._dbapi_error:
            proxied.invalidate()  # a connection in an unknown state is not reused
            raise
        finally:
            proxied.close()

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
        found = self._fetch(_RAW_REGISTRY_VERSION)
        return None if not found else int(found[0]["version"])

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
        found = self._fetch(_RAW_RESOURCE_SERVER, (audience,))
        return None if not found else rows.resource_server_from_row(found[0], self._key)

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
        values = (rows.token_values(token, self._key), rows.token_grant_values(token))
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
        return self._committer.submit((rows.token_values(token, self._key), rows.token_grant_values(token)))

    def _write_tokens(self, batch: Sequence[TokenRow]) -> Sequence[BaseException | None]:
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
            while chunk_tokens := list(itertools.islice(iterator, batch)):
                chunk = [rows.token_values(t, self._key) for t in chunk_tokens]
                grant_rows = [g for t in chunk_tokens for g in rows.token_grant_values(t)]
                try:
                    with self._write_lock, conn.begin():
                        conn.exec_driver_sql(self._insert_token, chunk)
                        if grant_rows:
                            conn.execute(sa.insert(token_grants), [{"grant_id": g, "cti": c} for g, c in grant_rows])
                except sa.exc.IntegrityError as exc:
                    if is_unique_violation(exc):
                        raise DuplicateError(DUPLICATE_TOKEN) from exc
                    raise
                total += len(chunk_tokens)
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

    def tokens_of_grant(self, grant_id: str) -> Sequence[IssuedToken]:
        """The tokens issued under grant ``grant_id`` (``token_grants``), newest first."""
        query = (
            sa.select(issued_tokens)
            .where(issued_tokens.c.cti.in_(sa.select(token_grants.c.cti).where(token_grants.c.grant_id == grant_id)))
            .order_by(*_NEWEST_FIRST)
        )
        with self._read() as conn:
            result = conn.execute(query).mappings().all()
        return [rows.token_from_row(row, self._key) for row in result]

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

    # -- audited writes (issue #5) -------------------------------------------------------------------------------

    @contextmanager
    def _audited(self) -> Iterator[Connection]:
        """A write transaction for a change and its audit entries; the registry cache is dropped after it (the
        change may have bumped the registry version, see :meth:`_bump`)."""
        try:
            with self._write() as conn:
                yield conn
        finally:
            self._registry.invalidate()

    @staticmethod
    def _bump(conn: Connection) -> None:
        """Bump the registry version inside the current transaction (grant and user changes)."""
        conn.execute(_BUMP_REGISTRY_VERSION)

    @staticmethod
    def _log(conn: Connection, *entries: AuditEntry) -> None:
        """Append audit entries inside the current transaction."""
        if entries:
            conn.execute(sa.insert(audit_log), [rows.audit_to_row(entry) for entry in entries])

    @staticmethod
    def _revoke_tokens(conn: Connection, condition: sa.ColumnElement[bool], now: int) -> int:
        """Revoke the active, unexpired tokens matching ``condition``; how many."""
        result = conn.execute(
            sa.update(issued_tokens)
            .where(condition & _ACTIVE_TOKEN & (issued_tokens.c.exp > now))
            .values(_REVOKED_TOKEN)
        )
        return int(result.rowcount)

    # -- client state ----------------------------------------------------------------------------------------------

    def set_client_enabled(self, client_id: str, enabled: bool, *, actor: str, now: int) -> int:
        """Enable or disable a client; disabling revokes its unexpired tokens. :raises NotFoundError:"""
        with self._audited() as conn:
            result = conn.execute(sa.update(clients).where(clients.c.client_id == client_id).values(enabled=enabled))
            if result.rowcount == 0:
                raise NotFoundError(f"no client {client_id!r}")
            revoked = 0 if enabled else self._revoke_tokens(conn, issued_tokens.c.client_id == client_id, now)
            self._bump(conn)
            action = "client.enabled" if enabled else "client.disabled"
            detail = "" if enabled else f"{revoked} tokens revoked"
            self._log(conn, audit.simple_entry(action, actor=actor, at=now, client_id=client_id, detail=detail))
        return revoked

    # -- users and groups ----------------------------------------------------------------------------------------

    def get_user(self, name: str) -> User | None:
        """The user, or ``None``."""
        row = self._read_one(sa.select(users).where(users.c.name == name), {})
        return None if row is None else rows.user_from_row(row)

    def list_users(self) -> Sequence[User]:
        """Every user, by name."""
        with self._read() as conn:
            result = conn.execute(sa.select(users).order_by(users.c.name)).mappings().all()
        return [rows.user_from_row(row) for row in result]

    def get_group(self, name: str) -> Group | None:
        """The group, or ``None``."""
        row = self._read_one(sa.select(user_groups).where(user_groups.c.name == name), {})
        return None if row is None else rows.group_from_row(row)

    def list_groups(self) -> Sequence[Group]:
        """Every group, by name."""
        with self._read() as conn:
            result = conn.execute(sa.select(user_groups).order_by(user_groups.c.name)).mappings().all()
        return [rows.group_from_row(row) for row in result]

    def members_of(self, group: str) -> Sequence[str]:
        """The members of ``group``, sorted."""
        query = (
            sa.select(group_members.c.user_name)
            .where(group_members.c.group_name == group)
            .order_by(group_members.c.user_name)
        )
        with self._read() as conn:
            return list(conn.execute(query).scalars().all())

    def groups_of(self, user: str) -> frozenset[str]:
        """The groups ``user`` is in."""
        with self._read() as conn:
            found = conn.execute(sa.select(group_members.c.group_name).where(group_members.c.user_name == user))
            return frozenset(found.scalars().all())

    def manager_sites(self, user: str) -> tuple[str, ...]:
        """The audience patterns ``user`` manages, sorted."""
        query = sa.select(manager_sites.c.pattern).where(manager_sites.c.user_name == user)
        with self._read() as conn:
            return tuple(sorted(conn.execute(query).scalars().all()))

    def set_manager_sites(self, user: str, patterns: Collection[str], *, actor: str, now: int) -> None:
        """Replace ``user``'s sites in one transaction. :raises NotFoundError:"""
        wanted = sorted(set(patterns))
        with self._audited() as conn:
            if conn.execute(sa.select(users.c.name).where(users.c.name == user)).first() is None:
                raise NotFoundError(f"no user {user!r}")
            conn.execute(sa.delete(manager_sites).where(manager_sites.c.user_name == user))
            if wanted:
                conn.execute(sa.insert(manager_sites), [{"user_name": user, "pattern": p} for p in wanted])
            detail = "sites " + (", ".join(wanted) or "(none)")
            self._log(conn, audit.simple_entry("user.sites_set", actor=actor, at=now, subject=user, detail=detail))

    def add_user(self, user: User, *, actor: str, now: int) -> None:
        """:raises DuplicateError: the name is taken."""
        try:
            with self._audited() as conn:
                conn.execute(sa.insert(users), rows.user_to_row(user))
                self._bump(conn)
                detail = f"role {user.role}" + ("" if user.enabled else ", disabled")
                self._log(
                    conn, audit.simple_entry("user.created", actor=actor, at=now, subject=user.name, detail=detail)
                )
        except sa.exc.IntegrityError as exc:
            if is_unique_violation(exc):
                raise DuplicateError(f"user {user.name!r} exists") from exc
            raise

    def set_password(self, name: str, password_hash: str, *, actor: str, now: int) -> None:
        """:raises NotFoundError:"""
        with self._audited() as conn:
            result = conn.execute(sa.update(users).where(users.c.name == name).values(password_hash=password_hash))
            if result.rowcount == 0:
                raise NotFoundError(f"no user {name!r}")
            self._log(conn, audit.simple_entry("user.password_changed", actor=actor, at=now, subject=name))

    def set_user_enabled(self, name: str, enabled: bool, *, actor: str, now: int) -> int:
        """Enable or disable a user; disabling revokes the user's unexpired tokens. :raises NotFoundError:"""
        with self._audited() as conn:
            result = conn.execute(sa.update(users).where(users.c.name == name).values(enabled=enabled))
            if result.rowcount == 0:
                raise NotFoundError(f"no user {name!r}")
            revoked = 0 if enabled else self._revoke_tokens(conn, issued_tokens.c.subject == name, now)
            self._bump(conn)
            action = "user.enabled" if enabled else "user.disabled"
            detail = "" if enabled else f"{revoked} tokens revoked"
            self._log(conn, audit.simple_entry(action, actor=actor, at=now, subject=name, detail=detail))
        return revoked

    def add_group(self, group: Group, *, actor: str, now: int) -> None:
        """:raises DuplicateError: the name is taken."""
        try:
            with self._audited() as conn:
                conn.execute(sa.insert(user_groups), rows.group_to_row(group))
                self._log(conn, audit.simple_entry("group.created", actor=actor, at=now, detail=f"group {group.name}"))
        except sa.exc.IntegrityError as exc:
            if is_unique_violation(exc):
                raise DuplicateError(f"group {group.name!r} exists") from exc
            raise

    def add_member(self, group: str, user: str, *, actor: str, now: int) -> None:
        """:raises NotFoundError: no such group or user. :raises DuplicateError: already a member."""
        try:
            with self._audited() as conn:
                if conn.execute(sa.select(user_groups.c.name).where(user_groups.c.name == group)).first() is None:
                    raise NotFoundError(f"no group {group!r}")
                if conn.execute(sa.select(users.c.name).where(users.c.name == user)).first() is None:
                    raise NotFoundError(f"no user {user!r}")
                conn.execute(sa.insert(group_members), {"group_name": group, "user_name": user})
                self._log(
                    conn,
                    audit.simple_entry(
                        "group.member_added", actor=actor, at=now, subject=user, detail=f"group {group}"
                    ),
                )
        except sa.exc.IntegrityError as exc:
            if is_unique_violation(exc):
                raise DuplicateError(f"{user!r} is already in group {group!r}") from exc
            raise

    def remove_member(self, group: str, user: str, *, actor: str, now: int) -> None:
        """:raises NotFoundError: no such membership."""
        with self._audited() as conn:
            result = conn.execute(
                sa.delete(group_members).where(
                    (group_members.c.group_name == group) & (group_members.c.user_name == user)
                )
            )
            if result.rowcount == 0:
                raise NotFoundError(f"{user!r} is not in group {group!r}")
            self._log(
                conn,
                audit.simple_entry("group.member_removed", actor=actor, at=now, subject=user, detail=f"group {group}"),
            )

    # -- access requests -------------------------------------------------------------------------------------

    def _expire_due(self, conn: Connection, now: int, request_id: str | None = None) -> list[ConsentRequest]:
        """Expire the pending requests whose time is up (only ``request_id`` when given), with audit entries."""
        condition = (access_requests.c.status == _PENDING) & (access_requests.c.expires_at <= now)
        if request_id is not None:
            condition = condition & (access_requests.c.id == request_id)
        result = conn.execute(
            sa.update(access_requests)
            .where(condition)
            .values(
                status=AccessRequestStatus.EXPIRED.value,
                pending_key=None,
                decided_at=access_requests.c.expires_at,
                decided_by=audit.ACTOR_SYSTEM,
            )
            .returning(*access_requests.c)
        )
        expired = sorted((rows.access_request_from_row(row) for row in result.mappings().all()), key=lambda r: r.id)
        self._log(
            conn,
            *(audit.request_entry("access_request.expired", r, actor=audit.ACTOR_SYSTEM, at=now) for r in expired),
        )
        return expired

    def submit_access_request(self, request: ConsentRequest, *, actor: str) -> tuple[ConsentRequest, bool]:
        """Record the request or merge it into its pending duplicate (see the Protocol)."""
        key = pending_key(request)
        now = request.created_at
        for attempt in range(3):
            try:
                with self._audited() as conn:
                    row = (
                        conn.execute(sa.select(access_requests).where(access_requests.c.pending_key == key))
                        .mappings()
                        .first()
                    )
                    if row is not None and row["expires_at"] <= now:
                        self._expire_due(conn, now, row["id"])
                        row = None
                    if row is not None:
                        merged = (
                            conn.execute(
                                sa.update(access_requests)
                                .where(access_requests.c.id == row["id"])
                                .values(request_count=access_requests.c.request_count + 1, updated_at=now)
                                .returning(*access_requests.c)
                            )
                            .mappings()
                            .one()
                        )
                        stored = rows.access_request_from_row(merged)
                        detail = f"asked {stored.request_count} times"
                        self._log(
                            conn,
                            audit.request_entry("access_request.merged", stored, actor=actor, at=now, detail=detail),
                        )
                        return stored, True
                    stored = dataclasses.replace(
                        request, status=AccessRequestStatus.PENDING, request_count=1, updated_at=now
                    )
                    conn.execute(sa.insert(access_requests), rows.access_request_to_row(stored, key))
                    self._log(
                        conn,
                        audit.request_entry(
                            "access_request.created", stored, actor=actor, at=now, detail=stored.reason
                        ),
                    )
                    return stored, False
            except sa.exc.IntegrityError as exc:
                # Another process inserted the same pending request meanwhile (PostgreSQL): merge into it.
                if not is_unique_violation(exc) or attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def get_access_request(self, request_id: str, *, now: int) -> ConsentRequest | None:
        """The request (expired first if its time is up), or ``None``."""
        found = self.get_access_requests([request_id], now=now)
        return found[0] if found else None

    def get_access_requests(self, request_ids: Collection[str], *, now: int) -> Sequence[ConsentRequest]:
        """The existing requests among ``request_ids``, expiring those whose time is up."""
        ids = list(dict.fromkeys(request_ids))
        found: list[ConsentRequest] = []
        for start in range(0, len(ids), _MAX_IDS_PER_QUERY):
            chunk = ids[start : start + _MAX_IDS_PER_QUERY]
            with self._read() as conn:
                result = conn.execute(sa.select(access_requests).where(access_requests.c.id.in_(chunk)))
                found.extend(rows.access_request_from_row(row) for row in result.mappings().all())
        due = [r.id for r in found if r.status == AccessRequestStatus.PENDING and r.expires_at <= now]
        if due:
            expired: dict[str, ConsentRequest] = {}
            with self._audited() as conn:
                for request_id in due:
                    expired.update((r.id, r) for r in self._expire_due(conn, now, request_id))
            found = [expired.get(r.id, r) for r in found]
            # A request decided by another process just now is read again rather than shown as pending.
            stale = [r.id for r in found if r.id in due and r.id not in expired]
            if stale:
                fresh = {r.id: r for r in self.get_access_requests(stale, now=now)}
                found = [fresh.get(r.id, r) for r in found]
        return found

    def expire_access_requests(self, *, now: int) -> Sequence[ConsentRequest]:
        """Expire the pending requests whose time is up (a read first: no write when there are none)."""
        probe = sa.select(access_requests.c.id).where(
            (access_requests.c.status == _PENDING) & (access_requests.c.expires_at <= now)
        )
        with self._read() as conn:
            if conn.execute(probe.limit(1)).first() is None:
                return []
        with self._audited() as conn:
            return self._expire_due(conn, now)

    def list_access_requests(
        self, *, now: int, status: AccessRequestStatus | None = None, limit: int = 100
    ) -> Sequence[ConsentRequest]:
        """Newest first (expiring first)."""
        if limit <= 0:
            return []
        self.expire_access_requests(now=now)
        query = sa.select(access_requests)
        if status is not None:
            query = query.where(access_requests.c.status == status.value)
        query = query.order_by(access_requests.c.created_at.desc(), access_requests.c.id).limit(limit)
        with self._read() as conn:
            result = conn.execute(query).mappings().all()
        return [rows.access_request_from_row(row) for row in result]

    def _not_pending(self, request_id: str, now: int) -> Exception:
        """Why a decision found no pending request: it does not exist, or it is decided or expired."""
        request = self.get_access_request(request_id, now=now)
        if request is None:
            return NotFoundError(f"no access request {request_id!r}")
        return StateError(f"access request {request_id!r} is {request.status}")

    def _mark_decided(
        self, conn: Connection, request_id: str, status: AccessRequestStatus, *, actor: str, now: int, note: str
    ) -> ConsentRequest | None:
        """Decide the request if it is pending and its time is not up (one conditional UPDATE)."""
        row = (
            conn.execute(
                sa.update(access_requests)
                .where(
                    (access_requests.c.id == request_id)
                    & (access_requests.c.status == _PENDING)
                    & (access_requests.c.expires_at > now)
                )
                .values(status=status.value, pending_key=None, decided_at=now, decided_by=actor, note=note)
                .returning(*access_requests.c)
            )
            .mappings()
            .first()
        )
        return None if row is None else rows.access_request_from_row(row)

    def approve_access_request(self, request_id: str, grant: Grant, *, actor: str, now: int, note: str = "") -> None:
        """Approve and store the grant (see the Protocol). :raises NotFoundError: :raises StateError:"""
        try:
            with self._audited() as conn:
                approved = self._mark_decided(
                    conn, request_id, AccessRequestStatus.APPROVED, actor=actor, now=now, note=note
                )
                if approved is None:
                    raise _NotDecided
                conn.execute(sa.insert(grants), rows.grant_to_row(grant))
                self._bump(conn)
                self._log(
                    conn,
                    audit.request_entry(
                        "access_request.approved",
                        approved,
                        actor=actor,
                        at=now,
                        detail=audit.approval_detail(grant, note),
                    ),
                    audit.grant_entry("grant.created", grant, actor=actor, at=now, detail=audit.describe_grant(grant)),
                )
        except _NotDecided:
            raise self._not_pending(request_id, now) from None
        except sa.exc.IntegrityError as exc:
            if is_unique_violation(exc):
                raise DuplicateError(f"grant {grant.id!r} exists") from exc
            raise

    def deny_access_request(self, request_id: str, *, actor: str, now: int, note: str = "") -> None:
        """Deny (see the Protocol). :raises NotFoundError: :raises StateError:"""
        try:
            with self._audited() as conn:
                denied = self._mark_decided(
                    conn, request_id, AccessRequestStatus.DENIED, actor=actor, now=now, note=note
                )
                if denied is None:
                    raise _NotDecided
                self._log(conn, audit.request_entry("access_request.denied", denied, actor=actor, at=now, detail=note))
        except _NotDecided:
            raise self._not_pending(request_id, now) from None

    # -- grants ------------------------------------------------------------------------------------------------

    def active_grants(self) -> Sequence[Grant]:
        """Grants not revoked and not for a disabled user, in creation order; cached with the registry records."""
        self._check_open()
        found = self._registry.get(_ACTIVE_GRANTS_KEY, self._load_active_grants)
        assert found is not None  # a tuple, possibly empty
        return found

    def _load_active_grants(self) -> tuple[Grant, ...]:
        with self._read() as conn:
            result = conn.execute(_ACTIVE_GRANTS).mappings().all()
        return tuple(rows.grant_from_row(row) for row in result)

    def get_grant(self, grant_id: str) -> Grant | None:
        """The grant, or ``None``."""
        row = self._read_one(sa.select(grants).where(grants.c.id == grant_id), {})
        return None if row is None else rows.grant_from_row(row)

    def list_grants(self, *, status: GrantStatus | None = None, limit: int = 100) -> Sequence[Grant]:
        """Newest first."""
        if limit <= 0:
            return []
        query = sa.select(grants)
        if status is not None:
            query = query.where(grants.c.status == status.value)
        query = query.order_by(grants.c.created_at.desc(), grants.c.id).limit(limit)
        with self._read() as conn:
            result = conn.execute(query).mappings().all()
        return [rows.grant_from_row(row) for row in result]

    def revoke_grant(self, grant_id: str, *, actor: str, now: int) -> int:
        """Revoke the grant and its active tokens, in one transaction. :raises NotFoundError: :raises StateError:"""
        with self._audited() as conn:
            row = (
                conn.execute(
                    sa.update(grants)
                    .where((grants.c.id == grant_id) & (grants.c.status == GrantStatus.ACTIVE.value))
                    .values(status=GrantStatus.REVOKED.value, revoked_at=now, revoked_by=actor)
                    .returning(*grants.c)
                )
                .mappings()
                .first()
            )
            if row is not None:
                grant = rows.grant_from_row(row)
                issued = sa.select(token_grants.c.cti).where(token_grants.c.grant_id == grant_id)
                count = self._revoke_tokens(conn, issued_tokens.c.cti.in_(issued), now)
                self._bump(conn)
                self._log(
                    conn,
                    audit.grant_entry("grant.revoked", grant, actor=actor, at=now, detail=f"{count} tokens revoked"),
                )
                return count
        if self.get_grant(grant_id) is None:
            raise NotFoundError(f"no grant {grant_id!r}")
        raise StateError(f"grant {grant_id!r} is already revoked")

    # -- audit -------------------------------------------------------------------------------------------------

    def append_audit(self, entries: Sequence[AuditEntry]) -> None:
        """Append entries in one transaction."""
        if entries:
            with self._write() as conn:
                self._log(conn, *entries)

    def list_audit(self, query: AuditQuery) -> Sequence[AuditEntry]:
        """The audit entries and the issued tokens (as ``token.issued``) matching ``query``, newest first."""
        if query.limit <= 0:
            return []
        found = self._audit_rows(query)
        if audit.action_matches("token.issued", query.action):
            found.extend(self._issued_entries(query))
        return audit.newest_first(found, query.limit)

    def _audit_rows(self, query: AuditQuery) -> list[AuditEntry]:
        t = audit_log.c
        statement = sa.select(audit_log)
        if query.since is not None:
            statement = statement.where(t.at >= query.since)
        if query.until is not None:
            statement = statement.where(t.at < query.until)
        if query.actor is not None:
            statement = statement.where(t.actor == query.actor)
        if query.client_id is not None:
            statement = statement.where(t.client_id == query.client_id)
        if query.audience is not None:
            statement = statement.where(t.audience == query.audience)
        if query.user is not None:
            statement = statement.where((t.subject == query.user) | (t.actor == f"user:{query.user}"))
        if query.action is not None:
            pattern = query.action.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + ".%"
            statement = statement.where((t.action == query.action) | t.action.like(pattern, escape="\\"))
        statement = statement.order_by(t.at.desc(), t.seq.desc()).limit(query.limit)
        with self._read() as conn:
            result = conn.execute(statement).mappings().all()
        return [rows.audit_from_row(row) for row in result]

    def _issued_entries(self, query: AuditQuery) -> list[AuditEntry]:
        t = issued_tokens.c
        statement = sa.select(issued_tokens)
        if query.actor is not None:
            if not query.actor.startswith("client:"):
                return []
            statement = statement.where(t.client_id == query.actor.removeprefix("client:"))
        if query.since is not None:
            statement = statement.where(t.iat >= query.since)
        if query.until is not None:
            statement = statement.where(t.iat < query.until)
        if query.client_id is not None:
            statement = statement.where(t.client_id == query.client_id)
        if query.audience is not None:
            statement = statement.where(t.audience == query.audience)
        if query.user is not None:
            statement = statement.where(t.subject == query.user)
        statement = statement.order_by(*_NEWEST_FIRST).limit(query.limit)
        with self._read() as conn:
            result = conn.execute(statement).mappings().all()
        return [audit.issued_entry(rows.token_from_row(row, self._key)) for row in result]

    # -- operational keys of bootstrapped locks (issue #7, docs/bootstrap-design.md) ---------------------------

    def operational_key(self, audience: str, generation: int) -> OperationalKey | None:
        """One generation, key material unsealed (cached like the registry records), or ``None``."""
        self._check_open()
        return self._registry.get(
            ("rs_key", audience, generation), lambda: self._load_operational_key(audience, generation)
        )

    def _load_operational_key(self, audience: str, generation: int) -> OperationalKey | None:
        found = self._fetch(_RAW_RS_KEY_GENERATION, (audience, generation))
        return None if not found else rows.operational_key_from_row(found[0], self._key)

    def operational_keys(self, audience: str) -> Sequence[OperationalKey]:
        """Every generation of ``audience``, oldest first."""
        return [rows.operational_key_from_row(row, self._key) for row in self._fetch(_RAW_RS_KEYS_OF, (audience,))]

    def newest_operational_keys(self) -> Sequence[OperationalKey]:
        """The newest generation of each audience, by audience."""
        newest = (
            sa.select(rs_keys.c.audience, sa.func.max(rs_keys.c.generation).label("generation"))
            .group_by(rs_keys.c.audience)
            .subquery()
        )
        query = (
            sa.select(rs_keys)
            .join(
                newest,
                (rs_keys.c.audience == newest.c.audience) & (rs_keys.c.generation == newest.c.generation),
            )
            .order_by(rs_keys.c.audience)
        )
        with self._read() as conn:
            result = conn.execute(query).mappings().all()
        return [rows.operational_key_from_row(row, self._key) for row in result]

    def add_operational_key(
        self, key: OperationalKey, *, resource_server: ResourceServer | None = None, actor: str
    ) -> None:
        """Store a new generation and add or replace ``resource_server``, in one transaction.

        Concurrent calls share a transaction and its commit (the key writer, see the module documentation); each
        call still returns only once its own rows are committed, and fails alone: a generation that exists fails
        its own call, never the others of its batch.

        :raises DuplicateError: the generation exists. :raises ValueError: no key material.
        """
        self._key_committer.write(self._key_rows(key, resource_server, actor))

    def _key_rows(self, key: OperationalKey, resource_server: ResourceServer | None, actor: str) -> KeyRows:
        if key.key is None:
            raise ValueError("a new generation needs key material")
        self._check_open()
        entry = AuditEntry(
            at=key.created_at,
            action="resource_server.key_created",
            actor=actor,
            audience=key.audience,
            detail=f"generation {key.generation}",
        )
        return (
            rows.operational_key_to_row(key, self._key),
            None if resource_server is None else rows.resource_server_to_row(resource_server, self._key),
            rows.audit_to_row(entry),
        )

    def _write_keys(self, batch: Sequence[KeyRows]) -> list[BaseException | None]:
        """The key writer's batch (:meth:`add_operational_key`): one transaction and one registry-version bump, through
        the driver like the token writer (:mod:`.token_writer`: SQLAlchemy's per-statement cost was most of a first
        Bootstrap-Pack's write). When a row breaks a constraint, the batch is written again row by row in savepoints,
        so that only that row fails. This process's registry cache is dropped afterwards."""
        try:
            with self._write_lock:
                proxied = self._engine.raw_connection()
                try:
                    connection = proxied.driver_connection
                    try:
                        return self._key_transaction(connection, batch, one_by_one=False)
                    except self._integrity_error as exc:
                        if len(batch) == 1:
                            return [_key_error(exc, batch[0])]
                    return self._key_transaction(connection, batch, one_by_one=True)
                except self._dbapi_error:
                    proxied.invalidate()  # a connection in an unknown state is not reused
                    raise
                finally:
                    proxied.close()
        finally:
            self._registry.invalidate()

    def _key_transaction(
        self, connection: Any, batch: Sequence[KeyRows], *, one_by_one: bool
    ) -> list[BaseException | None]:
        """Write ``batch`` in one transaction: all at once (a constraint violation raises and nothing is written), or
        row by row in savepoints (each row's violation is its outcome)."""
        outcomes: list[BaseException | None] = []
        cursor = connection.cursor()
        try:
            if self._engine.dialect.name == "sqlite":  # autocommit mode (engine.py): take the write lock up front
                cursor.execute("BEGIN IMMEDIATE")
            if not one_by_one:
                self._insert_keys(cursor, batch)
                outcomes = [None] * len(batch)
            else:
                for item in batch:
                    cursor.execute("SAVEPOINT key_row")
                    try:
                        self._insert_keys(cursor, [item])
                        outcomes.append(None)
                    except self._integrity_error as exc:
                        cursor.execute("ROLLBACK TO SAVEPOINT key_row")
                        outcomes.append(_key_error(exc, item))
                    cursor.execute("RELEASE SAVEPOINT key_row")
            if any(outcome is None for outcome in outcomes):
                cursor.execute(_BUMP_REGISTRY_VERSION_SQL)
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
        finally:
            cursor.close()
        return outcomes

    def _sql(self, template: str, table: sa.Table, names: Sequence[str] = (), *, rows_in: int = 0) -> str:
        """Driver SQL for the key writer from one of the ``_*_SQL`` templates, cached."""
        key = (template, table.name, tuple(names), rows_in)
        sql = self._key_sql.get(key)
        if sql is None:
            p = self._placeholder
            sql = template.format(
                table=table.name,
                columns=", ".join(names),
                values=", ".join([p] * len(names)),
                set=", ".join(f"{name} = {p}" for name in names),
                many=", ".join([p] * rows_in),
                p=p,
            )
            if len(self._key_sql) < _MAX_KEY_SQL:
                self._key_sql[key] = sql
        return sql

    def _insert_keys(self, cursor: Any, batch: Sequence[KeyRows]) -> None:
        """The rows of ``batch`` inside the current transaction: keys first (a generation that exists fails before
        anything else is written), then the resource servers (replaced where they exist), then the audit."""
        keys = [key for key, _, _ in batch]
        cursor.executemany(self._sql(_INSERT_SQL, rs_keys, list(keys[0])), [tuple(key.values()) for key in keys])
        servers = [rs for _, rs, _ in batch if rs is not None]
        if servers:
            audiences = [rs["audience"] for rs in servers]
            cursor.execute(self._sql(_EXISTING_SQL, resource_servers, rows_in=len(audiences)), audiences)
            existing = {row[0] for row in cursor.fetchall()}
            names = [name for name in servers[0] if name != "audience"]
            updates = [(*(rs[n] for n in names), rs["audience"]) for rs in servers if rs["audience"] in existing]
            if updates:
                cursor.executemany(self._sql(_UPDATE_SQL, resource_servers, names), updates)
            inserts = [tuple(rs.values()) for rs in servers if rs["audience"] not in existing]
            if inserts:
                cursor.executemany(self._sql(_INSERT_SQL, resource_servers, list(servers[0])), inserts)
        entries = [entry for _, _, entry in batch]
        cursor.executemany(self._sql(_INSERT_SQL, audit_log, list(entries[0])), [tuple(e.values()) for e in entries])

    def confirm_operational_key(self, audience: str, generation: int, *, now: int, retire_at: int) -> bool:
        """Mark delivered; switch the RS's token key and retire older generations when it is the newest delivered
        (one transaction). A read first: a generation delivered before costs no write.

        :raises NotFoundError: no such generation.
        """
        params = {"audience": audience, "generation": generation}
        row = self._read_one(_RS_KEY, params)
        if row is None:
            raise NotFoundError(f"no generation {generation} of {audience!r}")
        if row["delivered_at"] is not None or row["key_sealed"] is None:
            return False
        mine = (rs_keys.c.audience == audience) & (rs_keys.c.generation == generation)
        with self._audited() as conn:
            sealed = conn.execute(
                sa.update(rs_keys)
                .where(mine & rs_keys.c.delivered_at.is_(None) & rs_keys.c.key_sealed.is_not(None))
                .values(delivered_at=now)
                .returning(rs_keys.c.key_sealed)
            ).scalar()
            if sealed is None:  # delivered (or erased) by another process meanwhile
                return False
            current = conn.execute(
                sa.select(sa.func.max(rs_keys.c.generation)).where(
                    (rs_keys.c.audience == audience)
                    & rs_keys.c.delivered_at.is_not(None)
                    & (rs_keys.c.generation != generation)
                )
            ).scalar()
            switched = current is None or generation > current
            if switched:
                key = rows.open_sealed(self._key, sealed, "rs_keys", "key_sealed", f"{audience}#{generation}")
                shared = rows.seal(
                    self._key, operational_cose_key(key).to_cbor(), "resource_servers", "shared_key_sealed", audience
                )
                conn.execute(
                    sa.update(resource_servers)
                    .where(resource_servers.c.audience == audience)
                    .values(shared_key_sealed=shared)
                )
                conn.execute(
                    sa.update(rs_keys)
                    .where(
                        (rs_keys.c.audience == audience)
                        & (rs_keys.c.generation < generation)
                        & rs_keys.c.retire_at.is_(None)
                    )
                    .values(retire_at=retire_at)
                )
            self._bump(conn)
            detail = f"generation {generation}" + (" now issues tokens" if switched else "")
            self._log(
                conn,
                AuditEntry(
                    at=now, action="resource_server.key_delivered", actor=audit.ACTOR_SYSTEM, audience=audience,
                    detail=detail,
                ),
            )  # fmt: skip
        return True

    def erase_retired_keys(self, *, now: int) -> int:
        """Erase the key material of the generations whose ``retire_at`` has come (a read first: no write when
        there are none)."""
        due = rs_keys.c.key_sealed.is_not(None) & (rs_keys.c.retire_at <= now)
        with self._read() as conn:
            if conn.execute(sa.select(rs_keys.c.audience).where(due).limit(1)).first() is None:
                return 0
        with self._audited() as conn:
            erased = conn.execute(
                sa.update(rs_keys)
                .where(due)
                .values(key_sealed=None)
                .returning(rs_keys.c.audience, rs_keys.c.generation)
            ).all()
            if erased:
                self._bump(conn)
                self._log(
                    conn,
                    *(
                        AuditEntry(
                            at=now,
                            action="resource_server.key_retired",
                            actor=audit.ACTOR_SYSTEM,
                            audience=a,
                            detail=f"generation {g} erased",
                        )  # fmt: skip
                        for a, g in sorted(erased)
                    ),
                )
        return len(erased)

    def revoke_operational_keys(self, audience: str, *, actor: str, now: int) -> int:
        """Retire and erase every generation, disable the RS (its shared key erased), revoke its tokens and drop its
        registration, in one transaction. :raises NotFoundError: no such resource server."""
        with self._audited() as conn:
            result = conn.execute(
                sa.update(resource_servers)
                .where(resource_servers.c.audience == audience)
                .values(enabled=False, shared_key_sealed=None)
            )
            if result.rowcount == 0:
                raise NotFoundError(f"no resource server {audience!r}")
            retire = sa.case(
                (rs_keys.c.retire_at.is_(None) | (rs_keys.c.retire_at > now), now), else_=rs_keys.c.retire_at
            )
            keys = conn.execute(
                sa.update(rs_keys).where(rs_keys.c.audience == audience).values(key_sealed=None, retire_at=retire)
            ).rowcount
            revoked = self._revoke_tokens(conn, issued_tokens.c.audience == audience, now)
            conn.execute(sa.delete(lwm2m_registrations).where(lwm2m_registrations.c.audience == audience))
            self._bump(conn)
            self._log(
                conn,
                AuditEntry(
                    at=now, action="resource_server.revoked", actor=actor, audience=audience,
                    detail=f"{keys} key generations erased, {revoked} tokens revoked",
                ),
            )  # fmt: skip
        return revoked

    # -- LwM2M registrations (issue #7) ----------------------------------------------------------------------

    def put_registration(self, registration: Lwm2mRegistration) -> Lwm2mRegistration | None:
        """Store a Register, replacing the audience's previous one (returned). :raises DuplicateError: location
        taken by another audience."""
        t = lwm2m_registrations
        try:
            with self._write() as conn:
                old = conn.execute(sa.select(t).where(t.c.audience == registration.audience)).mappings().first()
                if old is not None:
                    conn.execute(sa.delete(t).where(t.c.audience == registration.audience))
                conn.execute(sa.insert(t), rows.registration_to_row(registration))
        except sa.exc.IntegrityError as exc:
            if is_unique_violation(exc):
                raise DuplicateError(f"registration location {registration.location!r} is taken") from exc
            raise
        return None if old is None else rows.registration_from_row(old)

    def get_registration(self, location: str) -> Lwm2mRegistration | None:
        """The registration at ``rd/{location}``, or ``None``."""
        t = lwm2m_registrations
        row = self._read_one(sa.select(t).where(t.c.location == location), {})
        return None if row is None else rows.registration_from_row(row)

    def registration_of(self, audience: str) -> Lwm2mRegistration | None:
        """The live registration of ``audience``, or ``None``."""
        t = lwm2m_registrations
        row = self._read_one(sa.select(t).where(t.c.audience == audience), {})
        return None if row is None else rows.registration_from_row(row)

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
        _check_registration_update(lifetime, object_links)
        t = lwm2m_registrations
        changes: dict[str, Any] = {"last_contact": now}
        for name, value in (
            ("lifetime", lifetime), ("binding", binding), ("object_links", object_links), ("source", source)
        ):  # fmt: skip
            if value is not None:
                changes[name] = value
        with self._write() as conn:
            row = conn.execute(sa.update(t).where(t.c.location == location).values(changes).returning(*t.c))
            found = row.mappings().first()
            if found is None:
                return None
        return rows.registration_from_row(found)

    def delete_registration(self, location: str) -> bool:
        """A De-register; ``False`` for an unknown location."""
        t = lwm2m_registrations
        with self._write() as conn:
            return conn.execute(sa.delete(t).where(t.c.location == location)).rowcount > 0

    def list_registrations(self) -> Sequence[Lwm2mRegistration]:
        """Every registration, by audience."""
        t = lwm2m_registrations
        with self._read() as conn:
            result = conn.execute(sa.select(t).order_by(t.c.audience)).mappings().all()
        return [rows.registration_from_row(row) for row in result]


def _check_registration_update(lifetime: int | None, object_links: str | None) -> None:
    """:raises ValueError: what :class:`~as_server.models.Lwm2mRegistration` refuses."""
    if object_links is not None and len(object_links) > MAX_OBJECT_LINKS:
        raise ValueError(f"object links longer than {MAX_OBJECT_LINKS} characters")
    if lifetime is not None and lifetime < 0:
        raise ValueError("lifetime must not be negative")


def _key_error(exc: BaseException, item: KeyRows) -> BaseException:
    """What :meth:`SqlStorage.add_operational_key` raises for a row that broke a constraint."""
    if not is_unique_violation(exc):
        return exc
    key = item[0]
    error = DuplicateError(f"generation {key['generation']} of {key['audience']!r} exists")
    error.__cause__ = exc
    return error


class _NotDecided(Exception):
    """Internal: the conditional UPDATE of a decision found no pending request (the transaction rolls back)."""
