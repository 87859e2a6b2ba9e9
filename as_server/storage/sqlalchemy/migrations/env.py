"""Alembic environment for the AS schema (RFC 9200 registries: clients, resource servers, tokens, keys).

Used programmatically by :func:`as_server.storage.sqlalchemy.upgrade`, which passes an open connection in
``config.attributes["connection"]``. Developers may also point the ``alembic`` command at this directory
(``script_location``) with ``sqlalchemy.url`` set, e.g. to autogenerate the next revision against :mod:`..tables`.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from as_server.storage.sqlalchemy.engine import make_engine
from as_server.storage.sqlalchemy.tables import metadata

config = context.config


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite's ALTER TABLE is limited: later migrations copy-and-move tables ("batch" mode).
        render_as_batch=connection.dialect.name == "sqlite",
        # With explicit BEGIN (engine.py), SQLite runs DDL inside transactions too.
        transactional_ddl=True,
    )


def run_migrations_offline() -> None:
    """Emit SQL instead of running it (``alembic upgrade --sql``)."""
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate the given connection, or one to ``sqlalchemy.url``."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url, or use as_server.storage.sqlalchemy.upgrade(url)")
    engine = make_engine(url, create_file=True)
    try:
        with engine.connect() as own:
            _configure(own)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
