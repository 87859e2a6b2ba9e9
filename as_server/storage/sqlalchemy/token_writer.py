"""The token writer's hot path: a batch of ``issued_tokens`` rows in one transaction, through the driver directly.

:meth:`~.store.SqlStorage.record` is called once per issued token (RFC 9200 §5.8.2: the token is recorded before
the response leaves), so this is the one write path that must be cheap. SQLAlchemy adds nothing here -- the rows
are plain tuples of driver types (:func:`.rows.token_values`) and the statement is fixed -- but costs a
transaction object, events and result processing per batch. So the batch goes to the DBAPI connection directly,
between ``BEGIN IMMEDIATE`` (SQLite; PostgreSQL begins implicitly) and ``COMMIT``, under the database's
:class:`~.engine.WriteLock`. The writer keeps that connection (one, taken from the engine's pool on first use and
again after a fork or a failure) instead of checking one out per batch: the pool's checkout, reset-on-return
(a ``ROLLBACK``) and checkin cost about as much CPU as the insert of a small batch, and batches are written one at a
time anyway (the lock).

* **SQLite** gets one multi-row ``INSERT ... VALUES (...), (...)`` (one statement per batch size, built once):
  ``sqlite3``'s ``executemany`` steps one statement per row and releases and re-takes the GIL around each, which
  in a busy threaded server is a trip through the scheduler per row.
* **PostgreSQL** gets ``executemany`` of the one-row statement, which psycopg 3 sends as one pipeline (one round
  trip; always the same statement, which the server prepares once), where a multi-row statement would differ with
  each batch size. (It measured no worse, and often better, than one multi-row statement; noisy on a shared host.)

A token issued under consent grants (:attr:`~as_server.models.IssuedToken.grant_ids`) also gets its ``token_grants``
rows, in the same transaction, by one more statement for the batch (``executemany``); batches without such tokens
(every batch of a deployment without consent grants) send nothing more.

On SQLite the kept connection does not checkpoint the WAL itself (``wal_autocheckpoint = 0``): an automatic
checkpoint runs inside the commit that crosses the threshold, while that commit still holds the write lock every
writer of every process waits for, and on a large database (random index pages all over the file) it writes and
syncs thousands of scattered pages. A background thread of the writer checkpoints instead, every
:data:`CHECKPOINT_INTERVAL` seconds while tokens are being written, with ``PASSIVE`` (it copies what no reader
needs and never blocks writers). Connections of the other write paths keep SQLite's automatic checkpoints.

When the batch violates a unique index (a ``cti``, token hash or generated PoP key id that is taken, possibly by
another row of the same batch), it is rolled back and written again row by row, each row in a savepoint, so that
only the offending rows fail (with :class:`~as_server.storage.base.DuplicateError`) and the others still share
one commit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from as_server.storage.base import DuplicateError
from as_server.storage.sqlalchemy import rows
from as_server.storage.sqlalchemy.engine import WriteLock
from as_server.storage.sqlalchemy.tables import issued_tokens, token_grants

__all__ = ["CHECKPOINT_INTERVAL", "DUPLICATE_TOKEN", "TokenRow", "TokenWriter", "is_unique_violation"]

log = logging.getLogger(__name__)

#: The message of a row's :class:`DuplicateError`.
DUPLICATE_TOKEN: Final = "a token with this cti or token hash, or this generated PoP key id, is already recorded"

# SQLite extended result codes of unique violations; PostgreSQL's SQLSTATE unique_violation.
_SQLITE_UNIQUE = frozenset({sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY})
_PG_UNIQUE_VIOLATION = "23505"
#: Statements kept per batch size at most (the group committer's batches are no larger by default).
_MAX_CACHED_SIZES = 256
#: Seconds between the token writer's WAL checkpoints while tokens are written (module docstring).
CHECKPOINT_INTERVAL: Final = 0.5
#: SQLite's default automatic-checkpoint threshold (pages), restored when the kept connection goes back to the pool.
_SQLITE_DEFAULT_AUTOCHECKPOINT = 1000

TokenValues = tuple[Any, ...]
#: One token to write: its ``issued_tokens`` values (:func:`.rows.token_values`) and its ``token_grants`` rows
#: (:func:`.rows.token_grant_values`, usually empty).
TokenRow = tuple[TokenValues, tuple[tuple[str, bytes], ...]]


def is_unique_violation(exc: BaseException) -> bool:
    """Whether ``exc`` (a DBAPI error, or SQLAlchemy's wrapper of one) is a unique-constraint violation."""
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    if isinstance(orig, sqlite3.IntegrityError):
        return getattr(orig, "sqlite_errorcode", None) in _SQLITE_UNIQUE
    return getattr(orig, "sqlstate", None) == _PG_UNIQUE_VIOLATION


class TokenWriter:
    """Writes batches of token rows (see the module docstring). Thread-safe: each batch takes a pooled connection.

    :param engine: the storage's engine (its pool and its SQLite settings).
    :param write_lock: the storage's :class:`~.engine.WriteLock`.
    """

    def __init__(self, engine: Engine, write_lock: WriteLock) -> None:
        self._engine = engine
        self._write_lock = write_lock
        self._sqlite = engine.dialect.name == "sqlite"
        self._placeholder = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        dbapi = engine.dialect.loaded_dbapi
        self._integrity_error: type[Exception] = dbapi.IntegrityError
        self._dbapi_error: type[Exception] = dbapi.Error
        self._statements: dict[int, str] = {}
        self._insert_grant = (
            f"INSERT INTO {token_grants.name} (grant_id, cti) VALUES ({self._placeholder}, {self._placeholder})"
        )
        # The kept connection (module docstring): used under the write lock only; _guard covers close().
        self._guard = threading.Lock()
        self._proxied: Any = None
        self._pid = 0
        # The background checkpointer (SQLite): started with the first batch, stopped by close().
        self._batches = 0
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None

    def insert_sql(self, rows_in_statement: int) -> str:
        """``INSERT INTO issued_tokens (<TOKEN_COLUMNS>) VALUES (...), ...`` for that many rows, in the driver's
        placeholder style."""
        sql = self._statements.get(rows_in_statement)
        if sql is None:
            one = "(" + ", ".join([self._placeholder] * len(rows.TOKEN_COLUMNS)) + ")"
            sql = (
                f"INSERT INTO {issued_tokens.name} ({', '.join(rows.TOKEN_COLUMNS)}) "
                f"VALUES {', '.join([one] * rows_in_statement)}"
            )
            if len(self._statements) < _MAX_CACHED_SIZES:
                self._statements[rows_in_statement] = sql
        return sql

    def write(self, batch: Sequence[TokenRow]) -> list[BaseException | None]:
        """Write ``batch`` durably; one outcome per row (``None``: committed, else its :class:`DuplicateError`).

        :raises Exception: what the database raised when the whole batch failed (nothing of it is committed).
        """
        if not batch:
            return []
        with self._write_lock, self._guard:
            proxied = self._connection()
            try:
                connection = proxied.driver_connection
                self._batches += 1
                try:
                    self._insert_all(connection, batch)
                    return [None] * len(batch)
                except self._integrity_error as exc:
                    if not is_unique_violation(exc):
                        raise
                if len(batch) == 1:
                    return [DuplicateError(DUPLICATE_TOKEN)]
                return self._insert_each(connection, batch)
            except self._dbapi_error:
                # A connection in an unknown state (lost server, I/O error) is not reused: the next batch takes a
                # fresh one from the pool.
                self._proxied = None
                proxied.invalidate()
                raise

    def _connection(self) -> Any:
        """The kept pooled connection (the guard is held); a new one on first use, after a failure or a fork (a
        connection inherited from the parent process is the parent's: it is left alone, not closed)."""
        if self._proxied is None or self._pid != os.getpid():
            proxied: Any = self._engine.raw_connection()
            self._pid = os.getpid()
            if self._sqlite:
                proxied.driver_connection.execute("PRAGMA wal_autocheckpoint = 0")
                self._start_checkpointer()
            self._proxied = proxied
        return self._proxied

    def _start_checkpointer(self) -> None:
        checkpointer = self._checkpointer
        if checkpointer is not None and checkpointer.is_alive():
            return
        self._stop.clear()
        self._checkpointer = threading.Thread(target=self._checkpoints, name="ostiary-wal-checkpoint", daemon=True)
        self._checkpointer.start()

    def _checkpoints(self) -> None:
        """Checkpoint the WAL every CHECKPOINT_INTERVAL while batches are written (module docstring)."""
        seen = 0
        while not self._stop.wait(CHECKPOINT_INTERVAL):
            if self._batches == seen:
                continue
            seen = self._batches
            self.checkpoint()

    def checkpoint(self) -> None:
        """One ``PASSIVE`` WAL checkpoint on a pooled connection, outside the write lock (SQLite; errors are
        logged and left to the next attempt: a busy database only delays it)."""
        try:
            proxied: Any = self._engine.raw_connection()
        except Exception:  # noqa: BLE001 - the engine is being disposed; the next attempt, if any, retries
            return
        try:
            proxied.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except self._dbapi_error as exc:
            log.debug("WAL checkpoint skipped: %s", exc)
        finally:
            proxied.close()

    def close(self) -> None:
        """Return the kept connection to the pool (idempotent; a later :meth:`write` takes one again)."""
        self._stop.set()
        checkpointer = self._checkpointer
        if checkpointer is not None and checkpointer is not threading.current_thread():
            checkpointer.join()
        with self._guard:
            proxied, self._proxied = self._proxied, None
            if proxied is not None and self._pid == os.getpid():
                if self._sqlite:
                    with contextlib.suppress(Exception):  # back to the pool as SQLite's default, if it still works
                        proxied.driver_connection.execute(
                            f"PRAGMA wal_autocheckpoint = {_SQLITE_DEFAULT_AUTOCHECKPOINT}"
                        )
                    if self._batches:
                        self.checkpoint()
                proxied.close()

    def _begin(self, cursor: Any) -> None:
        if self._sqlite:  # autocommit mode (engine.py): take the write lock up front
            cursor.execute("BEGIN IMMEDIATE")

    def _insert_all(self, connection: Any, batch: Sequence[TokenRow]) -> None:
        grant_rows = [grant_row for _, grants in batch for grant_row in grants]
        cursor = connection.cursor()
        try:
            if self._sqlite and not grant_rows:
                # One statement in autocommit mode (engine.py) is one durable transaction of its own: no BEGIN and
                # COMMIT round trips, each of which releases and re-takes the GIL. A unique violation aborts the
                # statement, so nothing of the batch is written, as with the explicit transaction.
                cursor.execute(self.insert_sql(len(batch)), [value for row, _ in batch for value in row])
                return
            self._begin(cursor)
            if self._sqlite:
                cursor.execute(self.insert_sql(len(batch)), [value for row, _ in batch for value in row])
            else:
                cursor.executemany(self.insert_sql(1), [row for row, _ in batch])
            if grant_rows:
                cursor.executemany(self._insert_grant, grant_rows)
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
        finally:
            cursor.close()

    def _insert_each(self, connection: Any, batch: Sequence[TokenRow]) -> list[BaseException | None]:
        """Row by row in savepoints, one commit: only the rows that violate a unique index fail."""
        outcomes: list[BaseException | None] = []
        sql = self.insert_sql(1)
        cursor = connection.cursor()
        try:
            self._begin(cursor)
            for row, grants in batch:
                cursor.execute("SAVEPOINT token_row")
                try:
                    cursor.execute(sql, row)
                    if grants:
                        cursor.executemany(self._insert_grant, grants)
                    outcomes.append(None)
                except self._integrity_error as exc:
                    if not is_unique_violation(exc):
                        raise
                    cursor.execute("ROLLBACK TO SAVEPOINT token_row")
                    outcomes.append(DuplicateError(DUPLICATE_TOKEN))
                cursor.execute("RELEASE SAVEPOINT token_row")
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
        finally:
            cursor.close()
        return outcomes
