"""SQL storage backend of the authorization server: SQLite (default) or PostgreSQL, through SQLAlchemy 2 Core.

Nothing outside this package imports SQLAlchemy (STYLE §3.1); callers get :class:`SqlStorage`, which implements
:class:`as_server.storage.base.Storage` and returns the frozen records of :mod:`as_server.models`.

* :func:`open_storage` -- open (and with ``create=True`` first create or upgrade) a database.
* :func:`upgrade`, :func:`current_revision`, :func:`head_revision` -- Alembic migrations (``ostiary as init``,
  ``ostiary as upgrade``).
"""

from __future__ import annotations

from sqlalchemy.engine import URL

from as_server.sealing import MasterKey
from as_server.storage.sqlalchemy.engine import DatabaseUnavailableError, make_engine
from as_server.storage.sqlalchemy.group_commit import CommitStats, StorageClosedError, WriterStopped
from as_server.storage.sqlalchemy.migrate import SchemaError, check_revision, current_revision, head_revision, upgrade
from as_server.storage.sqlalchemy.rows import CorruptRecordError
from as_server.storage.sqlalchemy.store import SqlStorage

__all__ = [
    "CommitStats",
    "CorruptRecordError",
    "DatabaseUnavailableError",
    "SchemaError",
    "SqlStorage",
    "StorageClosedError",
    "WriterStopped",
    "current_revision",
    "head_revision",
    "open_storage",
    "upgrade",
]


def open_storage(
    url: str | URL, master_key: MasterKey, *, create: bool = False, pool_size: int | None = None
) -> SqlStorage:
    """Open the database at ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``).

    :param create: create the database file (SQLite) and apply the migrations first (:func:`upgrade`); without
        it, the database must exist and be at :func:`head_revision`.
    :param pool_size: connections to keep open: at least the number of threads that use the storage at once plus
        one for its token writer, or connections are opened and closed per request (SQLAlchemy's default of 5
        plus 10 on demand when ``None``).
    :raises FileNotFoundError: SQLite file missing and ``create`` false.
    :raises SchemaError: the schema is missing or at another revision (run ``ostiary as upgrade``).
    :raises DatabaseUnavailableError: the database cannot be reached (an :class:`OSError`).
    :raises ValueError: unsupported URL.
    """
    if create:
        upgrade(url)
    engine = make_engine(url, pool_size=pool_size)
    try:
        check_revision(engine)
    except BaseException:
        engine.dispose()
        raise
    return SqlStorage(engine, master_key)
