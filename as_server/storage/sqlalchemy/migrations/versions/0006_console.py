"""The manager console (issue #6): the sites each manager manages.

* ``manager_sites``: one row per (user, audience pattern); the pattern is an exact audience or an ``fnmatch`` glob
  (``building-a/*``). A manager's console shows only the locks, tokens and grants whose audience matches one of
  them; admins see everything.

Written by hand to match :mod:`as_server.storage.sqlalchemy.tables` as of this revision (see 0001).

Revision ID: 0006
Revises: 0005
Create Date: 2025-07-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "manager_sites",
        sa.Column("user_name", sa.String(), nullable=False),
        sa.Column("pattern", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(["user_name"], ["users.name"], name=op.f("fk_manager_sites_user_name_users")),
        sa.PrimaryKeyConstraint("user_name", "pattern", name=op.f("pk_manager_sites")),
    )


def downgrade() -> None:
    op.drop_table("manager_sites")
