"""Fixtures for the authorization-server tests: a master key, a throwaway PostgreSQL database, and a ``storage``
fixture that runs each test against every backend (memory, SQLite, PostgreSQL).

PostgreSQL: the server at ``127.0.0.1:5432`` (user ``postgres``), or the libpq connection string in
``OSTIARY_TEST_POSTGRES_DSN``. When it is unreachable the PostgreSQL cases are skipped, or fail with
``OSTIARY_REQUIRE_POSTGRES=1`` (CI sets it so a broken database service cannot pass silently).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import pytest

from as_server.sealing import MasterKey
from as_server.storage.base import Storage

#: Where the throwaway databases are created (libpq key/value connection string of the maintenance database).
POSTGRES_ADMIN_DSN = os.environ.get(
    "OSTIARY_TEST_POSTGRES_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)
#: Seconds to wait for the PostgreSQL server before deciding it is unreachable.
POSTGRES_CONNECT_TIMEOUT = 3

BACKENDS = ["memory", "sqlite", "postgresql"]
SQL_BACKENDS = ["sqlite", "postgresql"]


def _postgres_unavailable(reason: str) -> NoReturn:
    if os.environ.get("OSTIARY_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required (OSTIARY_REQUIRE_POSTGRES=1): {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL unavailable: {reason}")


@pytest.fixture
def master_key() -> MasterKey:
    """A fresh master key per test."""
    return MasterKey.generate()[0]


@contextmanager
def _throwaway_postgres_database() -> Iterator[str]:
    """Create a uniquely named database, yield its ``postgresql+psycopg://`` URL, drop it afterwards."""
    try:
        import psycopg
        from psycopg import sql
    except ImportError:  # pragma: no cover - psycopg comes with the [as] extra
        _postgres_unavailable("psycopg is not installed")
    name = f"ostiary_test_{uuid.uuid4().hex[:16]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True, connect_timeout=POSTGRES_CONNECT_TIMEOUT)
    except psycopg.OperationalError as exc:
        _postgres_unavailable(f"cannot connect ({POSTGRES_ADMIN_DSN}): {' '.join(str(exc).split())}")
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        info = admin.info
        host, port, user = info.host, info.port, info.user
    try:
        yield f"postgresql+psycopg://{user}@{host}:{port}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True, connect_timeout=POSTGRES_CONNECT_TIMEOUT) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database (``postgresql+psycopg://`` URL), dropped after the test."""
    with _throwaway_postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def _migrated_postgres() -> Iterator[str]:
    """One migrated PostgreSQL database for the whole session; ``storage`` empties it before each test."""
    from as_server.storage.sqlalchemy import upgrade

    with _throwaway_postgres_database() as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def _migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that ``storage`` copies for each test (cheaper than migrating each time)."""
    from as_server.storage.sqlalchemy import upgrade

    path = tmp_path_factory.mktemp("template") / "ostiary.db"
    upgrade(f"sqlite:///{path}")  # the engine is disposed: the WAL is checkpointed into the file
    return path


@pytest.fixture(params=SQL_BACKENDS)
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL with nothing in it yet: a SQLite file that does not exist, or an empty PostgreSQL database."""
    return _empty_database(request, tmp_path)


@pytest.fixture
def open_sql() -> Iterator[Callable[..., Storage]]:
    """``open_sql(url, master_key, create=...)``: :func:`open_storage`, closing every storage it opened at the end."""
    from as_server.storage.sqlalchemy import open_storage

    opened: list[Storage] = []

    def _open(url: str, master_key: MasterKey, *, create: bool = True) -> Storage:
        storage = open_storage(url, master_key, create=create)
        opened.append(storage)
        return storage

    yield _open
    for storage in reversed(opened):
        storage.close()


@pytest.fixture(params=BACKENDS)
def storage(request: pytest.FixtureRequest, master_key: MasterKey, tmp_path: Path) -> Iterator[Storage]:
    """A new, empty, migrated storage of each backend."""
    backend: Storage
    if request.param == "memory":
        from as_server.storage.memory import MemoryStorage

        backend = MemoryStorage(master_key)
    else:
        from as_server.storage.sqlalchemy import open_storage

        if request.param == "sqlite":
            path = tmp_path / "ostiary.db"
            shutil.copyfile(request.getfixturevalue("_migrated_sqlite"), path)
            path.chmod(0o600)
            url = f"sqlite:///{path}"
        else:
            url = request.getfixturevalue("_migrated_postgres")
            _empty_postgres_tables(url)
        backend = open_storage(url, master_key)
    try:
        yield backend
    finally:
        backend.close()


def _empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ostiary.db'}"
    return str(request.getfixturevalue("postgres_url"))


def _empty_postgres_tables(url: str) -> None:
    import sqlalchemy as sa

    from as_server.storage.sqlalchemy.tables import metadata

    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            names = ", ".join(table.name for table in metadata.sorted_tables)
            # The audit log refuses TRUNCATE (revision 0004); the table owner may lift that for a test database.
            conn.execute(sa.text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_truncate"))
            conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY"))
            conn.execute(sa.text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_truncate"))
    finally:
        engine.dispose()
