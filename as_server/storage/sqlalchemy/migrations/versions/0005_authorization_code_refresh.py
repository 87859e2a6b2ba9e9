"""Apps signing users in: redirect URIs and public clients, authorization codes, refresh tokens.

Issue #5 ("Users and the smartphone-app flows", :mod:`as_server.oauth`). See
:mod:`as_server.storage.sqlalchemy.tables` for what each column means.

* ``clients.redirect_uris`` (TEXT NOT NULL, server default ``'[]'``) and ``clients.public`` (BOOLEAN NOT NULL,
  server default FALSE): plain ``ALTER TABLE ... ADD COLUMN`` on both databases; existing clients are
  confidential and have no redirect URI, so they keep doing what they did (``client_credentials``).
* ``authorization_codes``: keyed by the SHA-256 of the code, indexed on ``expires_at`` (forgetting old codes) and
  ``family_id`` (revoking what a replayed code produced).
* ``refresh_tokens``: keyed by the SHA-256 of the token, indexed on ``family_id``.

Written by hand to match :mod:`as_server.storage.sqlalchemy.tables` as of this revision (see 0001).

Revision ID: 0005
Revises: 0004
Create Date: 2025-07-15
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_Time = sa.BigInteger


def upgrade() -> None:
    op.add_column("clients", sa.Column("redirect_uris", sa.Text(), nullable=False, server_default=sa.text("'[]'")))
    op.add_column("clients", sa.Column("public", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "authorization_codes",
        sa.Column("code_hash", sa.LargeBinary(), nullable=False),
        sa.Column("client_id", sa.String(), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("audience", sa.String(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=True),
        sa.Column("code_challenge", sa.String(), nullable=True),
        sa.Column("code_challenge_method", sa.String(), nullable=True),
        sa.Column("created_at", _Time(), nullable=False),
        sa.Column("expires_at", _Time(), nullable=False),
        sa.Column("used_at", _Time(), nullable=True),
        sa.Column("family_id", sa.String(), nullable=True),
        sa.Column("access_cti", sa.LargeBinary(), nullable=True),
        sa.Column("reused_at", _Time(), nullable=True),
        sa.PrimaryKeyConstraint("code_hash", name=op.f("pk_authorization_codes")),
    )
    op.create_index(op.f("ix_authorization_codes_expires_at"), "authorization_codes", ["expires_at"])
    op.create_index(op.f("ix_authorization_codes_family_id"), "authorization_codes", ["family_id"])
    op.create_table(
        "refresh_tokens",
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("family_id", sa.String(), nullable=False),
        sa.Column("client_id", sa.String(), nullable=False),
        sa.Column("subject", sa.String(), nullable=True),
        sa.Column("audience", sa.String(), nullable=False),
        sa.Column("scope_text", sa.Text(), nullable=True),
        sa.Column("scope_bin", sa.LargeBinary(), nullable=True),
        sa.Column("pop_kid", sa.LargeBinary(), nullable=False),
        sa.Column("key_cti", sa.LargeBinary(), nullable=False),
        sa.Column("access_cti", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", _Time(), nullable=False),
        sa.Column("expires_at", _Time(), nullable=False),
        sa.Column("family_expires_at", _Time(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("used_at", _Time(), nullable=True),
        sa.CheckConstraint("(scope_text IS NULL) <> (scope_bin IS NULL)", name=op.f("ck_refresh_tokens_one_scope")),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_refresh_tokens")),
    )
    op.create_index(op.f("ix_refresh_tokens_family_id"), "refresh_tokens", ["family_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_refresh_tokens_family_id"), table_name="refresh_tokens")
    op.drop_table("refresh_tokens")
    op.drop_index(op.f("ix_authorization_codes_family_id"), table_name="authorization_codes")
    op.drop_index(op.f("ix_authorization_codes_expires_at"), table_name="authorization_codes")
    op.drop_table("authorization_codes")
    with op.batch_alter_table("clients") as batch:  # SQLite: copies the (small) table
        batch.drop_column("public")
        batch.drop_column("redirect_uris")
