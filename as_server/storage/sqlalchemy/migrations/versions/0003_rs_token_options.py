"""Per-resource-server token options; the exi sequence counter; the exi of issued tokens.

* ``resource_servers.compact_claims`` and ``resource_servers.has_clock`` (BOOLEAN NOT NULL, server default TRUE):
  the token options of :class:`~as_server.models.ResourceServer`. Existing resource servers get TRUE for both, so
  from this revision on their tokens leave out ``iat`` (and ``ace_profile`` when the RS has one profile); a lock
  built on :mod:`resource_server` reads neither. ``ostiary as rs add --full-claims`` registers an RS that wants them.
* ``resource_servers.exi_sequence`` (BIGINT NOT NULL, server default 0): the number of the last ``exi`` token
  issued for the RS (RFC 9200 §5.10.3); 0 for existing rows, which have issued none.
* ``issued_tokens.exi`` (INTEGER, NULL): the ``exi`` claim of a token for an RS without a clock; NULL for existing
  rows, which are all ``exp`` tokens.

Each is a plain ``ALTER TABLE ... ADD COLUMN`` on both databases (SQLite accepts NOT NULL with a constant default),
so nothing is copied, not even the possibly large ``issued_tokens``.

Written by hand to match :mod:`as_server.storage.sqlalchemy.tables` as of this revision (see 0001).

Revision ID: 0003
Revises: 0002
Create Date: 2025-06-15
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "resource_servers", sa.Column("compact_claims", sa.Boolean(), nullable=False, server_default=sa.true())
    )
    op.add_column("resource_servers", sa.Column("has_clock", sa.Boolean(), nullable=False, server_default=sa.true()))
    op.add_column(
        "resource_servers", sa.Column("exi_sequence", sa.BigInteger(), nullable=False, server_default=sa.text("0"))
    )
    op.add_column("issued_tokens", sa.Column("exi", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("issued_tokens") as batch:  # SQLite: copies the table
        batch.drop_column("exi")
    with op.batch_alter_table("resource_servers") as batch:
        batch.drop_column("exi_sequence")
        batch.drop_column("has_clock")
        batch.drop_column("compact_claims")
