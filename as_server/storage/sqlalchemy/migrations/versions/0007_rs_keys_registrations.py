"""Operational keys and LwM2M registrations of bootstrapped locks (issue #7, docs/bootstrap-design.md).

* ``rs_keys``: each lock's operational keys by generation (sealed key material, NULL once erased; created,
  delivered and retirement times).
* ``lwm2m_registrations``: the live LwM2M registration of each lock at the AS's ``/rd`` (one per audience).

Written by hand to match :mod:`as_server.storage.sqlalchemy.tables` as of this revision (see 0001).

Revision ID: 0007
Revises: 0006
Create Date: 2025-08-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rs_keys",
        sa.Column("audience", sa.String(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("key_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("delivered_at", sa.BigInteger(), nullable=True),
        sa.Column("retire_at", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("generation >= 1", name=op.f("ck_rs_keys_positive_generation")),
        sa.PrimaryKeyConstraint("audience", "generation", name=op.f("pk_rs_keys")),
    )
    op.create_index(op.f("ix_rs_keys_retire_at"), "rs_keys", ["retire_at"], unique=False)
    op.create_table(
        "lwm2m_registrations",
        sa.Column("location", sa.String(), nullable=False),
        sa.Column("audience", sa.String(), nullable=False),
        sa.Column("endpoint", sa.String(), nullable=False),
        sa.Column("lifetime", sa.BigInteger(), nullable=False),
        sa.Column("binding", sa.String(), nullable=False),
        sa.Column("lwm2m_version", sa.String(), nullable=False),
        sa.Column("object_links", sa.Text(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("registered_at", sa.BigInteger(), nullable=False),
        sa.Column("last_contact", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("location", name=op.f("pk_lwm2m_registrations")),
    )
    op.create_index("uq_lwm2m_registrations_audience", "lwm2m_registrations", ["audience"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_lwm2m_registrations_audience", table_name="lwm2m_registrations")
    op.drop_table("lwm2m_registrations")
    op.drop_index(op.f("ix_rs_keys_retire_at"), table_name="rs_keys")
    op.drop_table("rs_keys")
