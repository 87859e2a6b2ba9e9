"""SQLAlchemy engines for the two supported databases, set up for durability.

* **SQLite** (the default, ``sqlite:///$OSTIARY_HOME/ostiary.db``): WAL journal, so readers never block the writer;
  ``synchronous=FULL``, because in WAL mode ``NORMAL`` may lose the last commits on power loss, and
  :meth:`~as_server.storage.base.TokenStore.record` promises that a token handed out is on disk; a busy timeout
  for the moments another process (a second worker) holds the write lock; ``foreign_keys`` on. The file is created
  with mode 0600 (SQLite gives its ``-wal``/``-shm`` files the database file's permissions).
  sqlite3's legacy transaction handling is replaced by explicit ``BEGIN`` (SQLAlchemy's documented recipe) so that
  savepoints and transactional DDL work; write transactions start with ``BEGIN IMMEDIATE`` and take the write lock
  up front, so a busy database makes them wait (up to the busy timeout) instead of failing half way. Connections
  of a :func:`read_only` engine send no ``BEGIN`` at all: each of their statements is its own (autocommit) read
  transaction, which is all a single ``SELECT`` needs, and saves a round of ``BEGIN``/``ROLLBACK`` per read.
* **PostgreSQL** through psycopg 3 (``postgresql+psycopg://``; ``postgresql://`` and ``postgres://`` mean the same).

Both listeners are registered right after :func:`sqlalchemy.create_engine`, which does not connect, so every
connection the pool ever makes gets them.

SQLite has one writer at a time per database file. When another connection holds the write lock, ``BEGIN
IMMEDIATE`` waits in SQLite's busy handler, which polls with sleeps of 1, 2, 5, 10 ... ms: two processes that both
write all the time (two gunicorn workers, each with a token writer) then spend much of their time asleep while the
lock is free. A :class:`WriteLock` around each write transaction makes writers queue in the kernel instead (an
exclusive ``flock`` on ``<database>-writelock``, plus a thread lock within the process): a waiting writer is woken
the moment the previous one commits. The busy timeout remains the fallback for writers that do not take it
(``sqlite3`` in a shell).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: SQLite's busy timeout alone
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "SQLITE_BUSY_TIMEOUT_MS",
    "DatabaseUnavailableError",
    "WriteLock",
    "bulk_load_settings",
    "database_errors",
    "make_engine",
    "normalize_url",
    "read_only",
    "safe_url",
    "sqlite_path",
    "write_connection",
    "write_transaction",
]

#: How long a writer waits for another connection's write lock before SQLite reports "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 5000
#: Seconds to wait for a PostgreSQL server before giving up on a connection attempt.
POSTGRES_CONNECT_TIMEOUT = 10

_WRITE_OPTION = "ostiary_write"
_READ_ONLY_OPTION = "ostiary_read_only"


class DatabaseUnavailableError(ConnectionError):
    """The database cannot be reached or opened (server down, wrong host, file not openable, locked too long).

    A :class:`ConnectionError` (an :class:`OSError`), so callers outside this package can handle it without
    importing SQLAlchemy; the message names the database with its password masked.
    """


@contextmanager
def database_errors(url: str | URL) -> Iterator[None]:
    """Turn SQLAlchemy's ``OperationalError`` (connection refused, cannot open, locked) into
    :class:`DatabaseUnavailableError`."""
    try:
        yield
    except sa.exc.OperationalError as exc:
        reason = " ".join(str(exc.orig).split()) if exc.orig is not None else type(exc).__name__
        raise DatabaseUnavailableError(f"database {safe_url(url)} unavailable: {reason}") from exc


def normalize_url(url: str | URL) -> URL:
    """Parse ``url`` and pick the driver this package supports for its database.

    :raises ValueError: another database, or an in-memory SQLite database (each pooled connection would get its
        own empty database; use :class:`as_server.storage.memory.MemoryStorage` instead).
    """
    if isinstance(url, str) and url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:") or parsed.query.get("mode") == "memory":
            raise ValueError("in-memory SQLite is not supported; use a file (sqlite:///path) or MemoryStorage")
        if parsed.query.get("uri") == "true":
            raise ValueError("SQLite URI filenames are not supported; use sqlite:///path")
        return parsed.set(drivername="sqlite+pysqlite")
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    raise ValueError(f"unsupported database {safe_url(parsed)!r}: use sqlite:///path or postgresql+psycopg://...")


def safe_url(url: str | URL) -> str:
    """``url`` with its password masked, for messages and logs."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparsable database URL>"


def sqlite_path(url: URL) -> Path | None:
    """The database file of a SQLite URL, or ``None`` for other databases."""
    if url.get_backend_name() != "sqlite" or not url.database:
        return None
    return Path(url.database).expanduser()


class WriteLock:
    """Write transactions on one SQLite file, one at a time across threads and processes (module docstring).

    A context manager: hold it from ``BEGIN IMMEDIATE`` to ``COMMIT``. It is a no-op for other databases (``path``
    ``None``; PostgreSQL has row locks) and where ``fcntl`` is missing. The lock file (mode 0600) is opened lazily
    and again after a fork: a descriptor inherited from the parent would share the parent's lock.

    :param path: the database file, or ``None``.
    """

    def __init__(self, path: Path | None) -> None:
        self._path = None if path is None or fcntl is None else Path(f"{path}-writelock")
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    @classmethod
    def for_engine(cls, engine: Engine) -> WriteLock:
        """The lock for ``engine``'s database (a no-op unless it is a SQLite file)."""
        return cls(sqlite_path(engine.url))

    def __enter__(self) -> None:
        if self._path is None:
            return
        self._thread_lock.acquire()
        try:
            assert fcntl is not None
            fcntl.flock(self._descriptor(), fcntl.LOCK_EX)  # blocks without the GIL until the holder unlocks
        except BaseException:
            self._thread_lock.release()
            raise

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._path is None:
            return
        try:
            assert fcntl is not None and self._fd is not None
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            assert self._path is not None
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._pid = os.getpid()
        return self._fd

    def close(self) -> None:
        """Close the lock file (idempotent); a later use opens it again."""
        with self._thread_lock:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = None


def ensure_sqlite_file(path: Path) -> None:
    """Create an empty database file with mode 0600 (and its directory, 0700) unless it exists."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)  # a zero-length file is a valid, empty SQLite database


def make_engine(url: str | URL, *, create_file: bool = False, pool_size: int | None = None) -> Engine:
    """An engine for ``url`` (see :func:`normalize_url`) with the listeners described in the module docstring.

    :param create_file: for SQLite, create the database file (mode 0600) if it does not exist; otherwise a missing
        file is an error rather than a new empty database.
    :param pool_size: connections kept open (SQLAlchemy's default, 5, plus 10 on demand, when ``None``); a server
        with more request threads than that may want more.
    :raises FileNotFoundError: SQLite file missing and ``create_file`` false.
    """
    parsed = normalize_url(url)
    pool: dict[str, Any] = {} if pool_size is None else {"pool_size": pool_size, "max_overflow": pool_size}
    path = sqlite_path(parsed)
    if path is not None:
        if create_file:
            ensure_sqlite_file(path)
        elif not path.exists():
            raise FileNotFoundError(f"no database at {path} (run `ostiary as init`)")
        engine = sa.create_engine(
            parsed,
            # Pooled connections move between threads (one at a time); timeout is sqlite3's busy handler.
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            **pool,
        )
        sa.event.listen(engine, "connect", _sqlite_on_connect)
        sa.event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    return sa.create_engine(
        parsed,
        connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT, "application_name": "ostiary-as"},
        **pool,
    )


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    """Per-connection settings; ``journal_mode`` is persistent but setting it again is a no-op."""
    assert isinstance(dbapi_connection, sqlite3.Connection)
    dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (_sqlite_on_begin)
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        (mode,) = cursor.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch the database to WAL mode (journal_mode is {mode})")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    options = conn.get_execution_options()
    if options.get(_WRITE_OPTION, False):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    elif not options.get(_READ_ONLY_OPTION, False):
        conn.exec_driver_sql("BEGIN")
    # read-only: no BEGIN; sqlite3 stays in autocommit mode and each SELECT is its own read transaction


def read_only(engine: Engine) -> Engine:
    """``engine`` (same pool) for single-statement reads: on SQLite its connections send no ``BEGIN``.

    Only for work that reads with one statement per connection use: several statements would each see the
    database as of their own start. PostgreSQL is unaffected (SQLAlchemy begins a transaction as usual).
    """
    return engine.execution_options(**{_READ_ONLY_OPTION: True})


@contextmanager
def write_connection(engine: Engine) -> Iterator[Connection]:
    """A connection whose transactions are write transactions (on SQLite: ``BEGIN IMMEDIATE``)."""
    with engine.connect() as conn:
        conn.execution_options(**{_WRITE_OPTION: True})
        yield conn


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in a write transaction: committed when the block ends, rolled back if it raises."""
    with write_connection(engine) as conn, conn.begin():
        yield conn


#: Page cache of a connection doing a bulk load (KiB). With SQLite's default 2 MiB, the indexes on random keys
#: (cti, token hash) do not fit, and every batch reads and rewrites most of their pages.
SQLITE_BULK_CACHE_KIB = 256 * 1024
#: WAL pages between automatic checkpoints during a bulk load (normally 1000): checkpointing after every batch
#: copies the same index pages into the database file over and over. Bounds the WAL at about 256 MiB.
SQLITE_BULK_AUTOCHECKPOINT = 65536


@contextmanager
def bulk_load_settings(conn: Connection) -> Iterator[None]:
    """Tune ``conn`` (SQLite; a no-op elsewhere) for a bulk load, and restore it afterwards.

    Durability is unchanged: each batch's commit is still synced (``synchronous=FULL``).
    """
    if conn.dialect.name != "sqlite":
        yield
        return
    raw = conn.connection.driver_connection
    assert isinstance(raw, sqlite3.Connection)
    (cache,) = raw.execute("PRAGMA cache_size").fetchone()
    (checkpoint,) = raw.execute("PRAGMA wal_autocheckpoint").fetchone()
    raw.execute(f"PRAGMA cache_size = {-SQLITE_BULK_CACHE_KIB}")
    raw.execute(f"PRAGMA wal_autocheckpoint = {SQLITE_BULK_AUTOCHECKPOINT}")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA cache_size = {int(cache)}")
        raw.execute(f"PRAGMA wal_autocheckpoint = {int(checkpoint)}")
        raw.execute("PRAGMA wal_checkpoint(PASSIVE)")
