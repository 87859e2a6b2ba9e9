"""Registry version counter; unique AS-generated PoP key ids.

* ``registry_version``: one row whose ``version`` goes up with every write to ``clients``, ``resource_servers``
  and ``signing_keys``, so that each process can cache those records and notice another process's changes by
  re-reading one number (:mod:`as_server.storage.registry_cache`). The row is created by the first registry
  write; this revision creates it too (version 0), so a database upgraded while servers run starts out known.
* ``issued_tokens.pop_key_generated`` (TRUE or NULL) and the unique index ``uq_issued_tokens_generated_pop_kid`` on
  (client_id, audience, pop_kid, pop_key_generated), which replaces ``ix_issued_tokens_client_id_audience_pop_kid_iat``:
  an AS-generated PoP key id (RFC 9203 §3.2.1 OSCORE ``id``, RFC 9202 §3.3.1 PSK ``kid``) is new for its client and
  audience, enforced by the database instead of a SELECT before every token, while NULL-marked rows (keys re-bound
  by ``kid``, registered keys) may share one (see :mod:`as_server.storage.sqlalchemy.tables`). Existing rows stay
  NULL: which of them carried AS-generated keys is only in their sealed ``cnf``, and their ids were checked unused
  when they were issued. Building the index reads the whole table once (seconds for a million tokens).

Written by hand to match :mod:`as_server.storage.sqlalchemy.tables` as of this revision (see 0001).

Revision ID: 0002
Revises: 0001
Create Date: 2025-06-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    registry_version = op.create_table(
        "registry_version",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registry_version")),
        sa.CheckConstraint("id = 1", name=op.f("ck_registry_version_single_row")),
    )
    op.bulk_insert(registry_version, [{"id": 1, "version": 0}])
    # A plain ALTER TABLE ADD COLUMN on both databases (no table copy: issued_tokens may hold millions of rows).
    op.add_column("issued_tokens", sa.Column("pop_key_generated", sa.Boolean(), nullable=True))
    op.drop_index(op.f("ix_issued_tokens_client_id_audience_pop_kid_iat"), table_name="issued_tokens")
    op.create_index(
        op.f("uq_issued_tokens_generated_pop_kid"),
        "issued_tokens",
        ["client_id", "audience", "pop_kid", "pop_key_generated"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index(op.f("uq_issued_tokens_generated_pop_kid"), table_name="issued_tokens")
    op.create_index(
        op.f("ix_issued_tokens_client_id_audience_pop_kid_iat"),
        "issued_tokens",
        ["client_id", "audience", "pop_kid", "iat"],
    )
    with op.batch_alter_table("issued_tokens") as batch:  # SQLite: copies the table
        batch.drop_column("pop_key_generated")
    op.drop_table("registry_version")
