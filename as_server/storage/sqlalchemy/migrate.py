"""Schema migrations with Alembic, configured in code (no ``alembic.ini``): ``ostiary as init`` / ``as upgrade``.

The migration scripts live in ``migrations/`` inside this package (shipped as package data), so an installed
wheel can upgrade its database without a source checkout.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Connection, Engine

from as_server.storage.sqlalchemy.engine import (
    database_errors,
    make_engine,
    normalize_url,
    safe_url,
    sqlite_path,
    write_transaction,
)

__all__ = ["MIGRATIONS_DIR", "SchemaError", "current_revision", "head_revision", "upgrade"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: Key of the PostgreSQL advisory lock that serialises concurrent upgrades (two ``ostiary as upgrade`` at once).
_UPGRADE_LOCK_KEY = 0x6F73_7469_6172_7900 >> 8  # "ostiary" in ASCII, fits a signed 64-bit integer


class SchemaError(RuntimeError):
    """The database schema is not the one this version of the code needs."""


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for ``migrations/``; ``env.py`` migrates ``connection`` when given."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The revision the code's schema (:mod:`.tables`) corresponds to."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package ships its migrations
        raise SchemaError(f"no migrations in {MIGRATIONS_DIR}")
    return head


def upgrade(url: str | URL) -> None:
    """Create or upgrade the schema at ``url`` to :func:`head_revision`. Idempotent.

    A SQLite file is created (mode 0600) if missing. The whole upgrade is one transaction (SQLite and PostgreSQL
    both have transactional DDL), and concurrent upgrades of one database run one after the other.

    :raises DatabaseUnavailableError: the database cannot be reached.
    """
    engine = make_engine(url, create_file=True)
    try:
        with (
            database_errors(url),
            write_transaction(engine) as conn,
        ):  # SQLite: BEGIN IMMEDIATE takes the write lock first
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK_KEY})
            command.upgrade(alembic_config(conn), "head")
    finally:
        engine.dispose()


def revision_of(engine: Engine) -> str | None:
    """The schema revision of the database behind ``engine`` (``None``: not initialised)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def current_revision(url: str | URL) -> str | None:
    """The schema revision of the database at ``url``; ``None`` when it has none (or the SQLite file is missing)."""
    parsed = normalize_url(url)
    path = sqlite_path(parsed)
    if path is not None and not path.exists():
        return None
    engine = make_engine(parsed)
    try:
        with database_errors(parsed):
            return revision_of(engine)
    finally:
        engine.dispose()


def check_revision(engine: Engine) -> None:
    """:raises SchemaError: the database is not at :func:`head_revision`. :raises DatabaseUnavailableError:"""
    with database_errors(engine.url):
        current = revision_of(engine)
    head = head_revision()
    if current != head:
        state = "has no schema" if current is None else f"is at schema revision {current}"
        raise SchemaError(
            f"database {safe_url(engine.url)} {state}; this version needs {head}: run `ostiary as upgrade`"
        )
