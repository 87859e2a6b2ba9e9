"""Initial schema: clients, resource servers, issued tokens, signing keys.

Written by hand to match :mod:`as_server.storage.sqlalchemy.tables` as of this revision (the test suite compares
the migrated schema with the metadata). Revisions never import ``tables``: they must keep describing the schema
as it was when they were written. Names are wrapped in ``op.f()`` (final): the target metadata's naming convention
must not be applied to them a second time.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "clients",
        sa.Column("client_id", sa.String(), nullable=False),
        sa.Column("secret_hash", sa.LargeBinary(), nullable=False),
        sa.Column("display_name", sa.String(), nullable=False),
        sa.Column("grant_types", sa.Text(), nullable=False),
        sa.Column("audiences", sa.Text(), nullable=False),
        sa.Column("profiles", sa.Text(), nullable=False),
        sa.Column("pop_key_types", sa.Text(), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=True),
        sa.Column("default_audience", sa.String(), nullable=True),
        sa.Column("default_scope_text", sa.Text(), nullable=True),
        sa.Column("default_scope_bin", sa.LargeBinary(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("client_id", name=op.f("pk_clients")),
        sa.CheckConstraint(
            "default_scope_text IS NULL OR default_scope_bin IS NULL", name=op.f("ck_clients_one_default_scope")
        ),
    )
    op.create_table(
        "resource_servers",
        sa.Column("audience", sa.String(), nullable=False),
        sa.Column("shared_key_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("public_key", sa.LargeBinary(), nullable=True),
        sa.Column("profiles", sa.Text(), nullable=False),
        sa.Column("scope_format", sa.String(), nullable=False),
        sa.Column("resources_text", sa.Text(), nullable=True),
        sa.Column("resources_bin", sa.LargeBinary(), nullable=True),
        sa.Column("token_form", sa.String(), nullable=False),
        sa.Column("max_lifetime", sa.Integer(), nullable=False),
        sa.Column("introspection_secret_hash", sa.LargeBinary(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("audience", name=op.f("pk_resource_servers")),
        sa.CheckConstraint(
            "resources_text IS NULL OR resources_bin IS NULL", name=op.f("ck_resource_servers_one_resources")
        ),
    )
    op.create_table(
        "issued_tokens",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), sa.Identity(), nullable=False),
        sa.Column("cti", sa.LargeBinary(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("client_id", sa.String(), nullable=False),
        sa.Column("audience", sa.String(), nullable=False),
        sa.Column("scope_text", sa.Text(), nullable=True),
        sa.Column("scope_bin", sa.LargeBinary(), nullable=True),
        sa.Column("profile", sa.String(), nullable=True),
        sa.Column("iat", sa.BigInteger(), nullable=False),
        sa.Column("exp", sa.BigInteger(), nullable=False),
        sa.Column("cnf_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("pop_kid", sa.LargeBinary(), nullable=True),
        sa.Column("subject", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_issued_tokens")),
        sa.CheckConstraint("(scope_text IS NULL) <> (scope_bin IS NULL)", name=op.f("ck_issued_tokens_one_scope")),
    )
    op.create_index(op.f("uq_issued_tokens_cti"), "issued_tokens", ["cti"], unique=True)
    op.create_index(op.f("uq_issued_tokens_token_hash"), "issued_tokens", ["token_hash"], unique=True)
    op.create_index(
        op.f("ix_issued_tokens_client_id_audience_pop_kid_iat"),
        "issued_tokens",
        ["client_id", "audience", "pop_kid", "iat"],
    )
    op.create_index(op.f("ix_issued_tokens_iat_seq"), "issued_tokens", ["iat", "seq"])
    op.create_table(
        "signing_keys",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), sa.Identity(), nullable=False),
        sa.Column("kid", sa.LargeBinary(), nullable=False),
        sa.Column("alg", sa.String(), nullable=False),
        sa.Column("key_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("retired_at", sa.BigInteger(), nullable=True),
        sa.Column("retire_after", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_signing_keys")),
    )
    op.create_index(op.f("uq_signing_keys_kid"), "signing_keys", ["kid"], unique=True)


def downgrade() -> None:
    op.drop_index(op.f("uq_signing_keys_kid"), table_name="signing_keys")
    op.drop_table("signing_keys")
    op.drop_index(op.f("ix_issued_tokens_iat_seq"), table_name="issued_tokens")
    op.drop_index(op.f("ix_issued_tokens_client_id_audience_pop_kid_iat"), table_name="issued_tokens")
    op.drop_index(op.f("uq_issued_tokens_token_hash"), table_name="issued_tokens")
    op.drop_index(op.f("uq_issued_tokens_cti"), table_name="issued_tokens")
    op.drop_table("issued_tokens")
    op.drop_table("resource_servers")
    op.drop_table("clients")
