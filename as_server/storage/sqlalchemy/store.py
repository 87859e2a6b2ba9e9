"""The SQL backend of every storage Protocol of :mod:`as_server.storage.base` (SQLite or PostgreSQL).

Queries are SQLAlchemy Core statements on :mod:`.tables`; rows become the frozen records of
:mod:`as_server.models` in :mod:`.rows` before they leave this package (STYLE §3.6 rule 7). Key material is sealed
with the deployment's :class:`~as_server.sealing.MasterKey` before it is written.

Issued tokens are written through a :class:`~.group_commit.GroupCommitter`, so concurrent token requests share
commits; :meth:`SqlStorage.record` still returns only once its own row is committed (RFC 9200 §5.8.2: the AS
answers with the token, and introspection (§5.9) and revocation must know it from then on).
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from as_server.models import Client, IssuedToken, ResourceServer, SigningKey, TokenStatus
from as_server.sealing import MasterKey
from as_server.storage.base import DuplicateError, NotFoundError
from as_server.storage.sqlalchemy import rows
from as_server.storage.sqlalchemy.engine import bulk_load_settings, safe_url, write_connection, write_transaction
from as_server.storage.sqlalchemy.group_commit import (
    DEFAULT_MAX_BATCH,
    CommitStats,
    GroupCommitter,
    StorageClosedError,
)
from as_server.storage.sqlalchemy.tables import clients, issued_tokens, resource_servers, signing_keys

__all__ = ["SqlStorage"]

Row = dict[str, Any]
#: An ``issued_tokens`` row as :func:`.rows.token_values` makes it.
TokenValues = tuple[Any, ...]

# SQLite extended result codes of unique violations; PostgreSQL's SQLSTATE unique_violation.
_SQLITE_UNIQUE = frozenset({sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY})
_PG_UNIQUE_VIOLATION = "23505"

_NEWEST_FIRST = (issued_tokens.c.iat.desc(), issued_tokens.c.seq.desc())
_KEYS_NEWEST_FIRST = (signing_keys.c.created_at.desc(), signing_keys.c.seq.desc())


def _token_insert_sql(dialect: sa.Dialect) -> str:
    """``INSERT INTO issued_tokens`` for :data:`.rows.TOKEN_COLUMNS`, in the driver's placeholder style.

    Token rows go to the driver's ``executemany`` as plain tuples: for these column types SQLAlchemy's per-value
    processing changes nothing and would cost more than SQLite's own insert work.
    """
    placeholder = "?" if dialect.paramstyle == "qmark" else "%s"
    columns = ", ".join(rows.TOKEN_COLUMNS)
    values = ", ".join([placeholder] * len(rows.TOKEN_COLUMNS))
    return f"INSERT INTO {issued_tokens.name} ({columns}) VALUES ({values})"


def _is_unique_violation(exc: sa.exc.IntegrityError) -> bool:
    orig = exc.orig
    if isinstance(orig, sqlite3.IntegrityError):
        return getattr(orig, "sqlite_errorcode", None) in _SQLITE_UNIQUE
    return getattr(orig, "sqlstate", None) == _PG_UNIQUE_VIOLATION


class SqlStorage:
    """:class:`~as_server.storage.base.Storage` on SQLite or PostgreSQL. Thread-safe; one per process.

    Build it with :func:`as_server.storage.sqlalchemy.open_storage`, which also checks the schema revision.
    Open it after forking (gunicorn workers): the connection pool and the writer thread do not survive a fork.

    :param engine: from :func:`.engine.make_engine` (it carries the SQLite settings this class relies on).
    :param master_key: seals and opens key material.
    :param max_batch: most token records per group commit.
    :param group_commit: ``False`` makes :meth:`record` commit each record alone, in the calling thread (the
        benchmark's baseline; also a way to rule group commit out when chasing a problem).
    """

    def __init__(
        self,
        engine: Engine,
        master_key: MasterKey,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        group_commit: bool = True,
    ) -> None:
        self._engine = engine
        self._key = master_key
        self._closed = False
        self._group_commit = group_commit
        self._insert_token = _token_insert_sql(engine.dialect)
        self._committer: GroupCommitter[TokenValues] = GroupCommitter(
            self._write_tokens, max_batch=max_batch, name="ostiary-token-writer"
        )

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

    # -- plumbing ----------------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosedError("the storage is closed")

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        self._check_open()
        with self._engine.connect() as conn:
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        self._check_open()
        with write_transaction(self._engine) as conn:
            yield conn

    def _insert_unique(self, table: sa.Table, row: Row, what: str) -> None:
        try:
            with self._write() as conn:
                conn.execute(sa.insert(table), row)
        except sa.exc.IntegrityError as exc:
            if _is_unique_violation(exc):
                raise DuplicateError(f"{what} already exists") from exc
            raise

    def _update_existing(self, table: sa.Table, key_column: str, row: Row, what: str) -> None:
        key = row[key_column]
        values = {name: value for name, value in row.items() if name != key_column}
        with self._write() as conn:
            result = conn.execute(sa.update(table).where(table.c[key_column] == key).values(values))
        if result.rowcount == 0:
            raise NotFoundError(f"no {what}")

    # -- clients (RFC 9200 §5.8.1 client authentication, RFC 6749 §2) ---------------------------------------

    def get_client(self, client_id: str) -> Client | None:
        with self._read() as conn:
            row = conn.execute(sa.select(clients).where(clients.c.client_id == client_id)).mappings().first()
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
        with self._read() as conn:
            row = (
                conn.execute(sa.select(resource_servers).where(resource_servers.c.audience == audience))
                .mappings()
                .first()
            )
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

    # -- issued tokens (RFC 9200 §5.8.2, §5.9; RFC 9770 §4 token hashes) ----------------------------------

    def record(self, token: IssuedToken) -> None:
        """Durably store ``token`` (group commit); returns once its row is committed.

        :raises DuplicateError: its ``cti`` or ``token_hash`` is already recorded.
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
        """The group committer's writer: the batch in one transaction, else row by row in savepoints."""
        try:
            with write_transaction(self._engine) as conn:
                conn.exec_driver_sql(self._insert_token, list(batch))
            return [None] * len(batch)
        except sa.exc.IntegrityError as exc:
            if not _is_unique_violation(exc):
                raise
            if len(batch) == 1:
                return [DuplicateError("a token with this cti or token hash is already recorded")]
        # One row violates uniqueness (maybe against another row of this batch): find which, still committing the
        # others together. Each row gets its own savepoint, so a failed row does not abort the transaction.
        outcomes: list[BaseException | None] = []
        with write_transaction(self._engine) as conn:
            for row in batch:
                try:
                    with conn.begin_nested():
                        conn.exec_driver_sql(self._insert_token, row)
                    outcomes.append(None)
                except sa.exc.IntegrityError as exc:
                    if not _is_unique_violation(exc):
                        raise
                    outcomes.append(DuplicateError("a token with this cti or token hash is already recorded"))
        return outcomes

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
                    with conn.begin():
                        conn.exec_driver_sql(self._insert_token, chunk)
                except sa.exc.IntegrityError as exc:
                    if _is_unique_violation(exc):
                        raise DuplicateError("a token with this cti or token hash is already recorded") from exc
                    raise
                total += len(chunk)
                if progress is not None:
                    progress(total)
        return total

    def get_by_cti(self, cti: bytes) -> IssuedToken | None:
        return self._one_token(issued_tokens.c.cti == cti)

    def get_by_hash(self, token_hash: bytes) -> IssuedToken | None:
        return self._one_token(issued_tokens.c.token_hash == token_hash)

    def find_by_pop_kid(self, client_id: str, audience: str, pop_kid: bytes) -> IssuedToken | None:
        """The most recent token (by ``iat``, then by recording order) of ``client_id`` for ``audience`` bound to
        PoP key ``pop_kid``, whatever its status (RFC 9203 §3.1 / RFC 9202 §4: re-binding a key)."""
        t = issued_tokens.c
        return self._one_token(
            (t.client_id == client_id) & (t.audience == audience) & (t.pop_kid == pop_kid), newest=True
        )

    def _one_token(self, where: sa.ColumnElement[bool], *, newest: bool = False) -> IssuedToken | None:
        query = sa.select(issued_tokens).where(where)
        if newest:
            query = query.order_by(*_NEWEST_FIRST).limit(1)
        with self._read() as conn:
            row = conn.execute(query).mappings().first()
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

    def signing_key(self) -> SigningKey | None:
        """The newest (by ``created_at``, then insertion order) key that is not retired."""
        query = (
            sa.select(signing_keys).where(signing_keys.c.retired_at.is_(None)).order_by(*_KEYS_NEWEST_FIRST).limit(1)
        )
        with self._read() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else rows.signing_key_from_row(row, self._key)

    def verification_keys(self, now: int) -> Sequence[SigningKey]:
        """Keys whose tokens may still be valid at ``now``: not retired, or retired with ``retire_after`` later than
        ``now`` or unset (a retired key whose tokens' end is unknown keeps verifying). Newest first."""
        k = signing_keys.c
        query = (
            sa.select(signing_keys)
            .where(k.retired_at.is_(None) | k.retire_after.is_(None) | (k.retire_after > now))
            .order_by(*_KEYS_NEWEST_FIRST)
        )
        with self._read() as conn:
            result = conn.execute(query).mappings().all()
        return [rows.signing_key_from_row(row, self._key) for row in result]

    def add_signing_key(self, key: SigningKey) -> None:
        """:raises DuplicateError: ``kid`` taken."""
        self._insert_unique(signing_keys, rows.signing_key_to_row(key, self._key), f"signing key 0x{key.kid.hex()}")

    def retire(self, kid: bytes, *, at: int, retire_after: int) -> None:
        """Rotate key ``kid`` out at ``at``; it verifies until ``retire_after``. :raises NotFoundError:"""
        with self._write() as conn:
            result = conn.execute(
                sa.update(signing_keys)
                .where(signing_keys.c.kid == kid)
                .values(retired_at=at, retire_after=retire_after)
            )
        if result.rowcount == 0:
            raise NotFoundError(f"no signing key 0x{kid.hex()}")
