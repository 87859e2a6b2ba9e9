"""Users and groups, the consent workflow (access requests, grants, token_grants), the append-only audit log.

Issue #5. New tables (see :mod:`as_server.storage.sqlalchemy.tables` for what each column means):

* ``users``, ``user_groups``, ``group_members``: local accounts (Argon2id PHC password hashes), roles, groups.
* ``access_requests``: requests waiting for consent; the unique index on ``pending_key`` keeps one pending request
  per (client, subject, audience, scope), NULL once decided.
* ``grants``: approvals, which the policy engine sees as permit rules.
* ``token_grants``: which token was issued under which grant (revoking a grant revokes its tokens).
* ``audit_log``: append-only; triggers refuse ``UPDATE`` and ``DELETE`` (SQLite: ``RAISE(ABORT)``; PostgreSQL: a
  PL/pgSQL function raising ``insufficient_privilege``, which also refuses ``TRUNCATE``).

And on ``issued_tokens``: ``rules`` (TEXT, NULL: a plain ``ALTER TABLE ... ADD COLUMN``, nothing is copied; existing
rows have none) and the partial index ``ix_issued_tokens_subject`` (rows with a subject only; existing tokens have
none, so building it reads the table once and writes nothing).

Written by hand to match :mod:`as_server.storage.sqlalchemy.tables` as of this revision (see 0001). The trigger
statements are copied here rather than imported, so that this revision never changes.

Revision ID: 0004
Revises: 0003
Create Date: 2025-07-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_APPEND_ONLY = "audit_log is append-only"

_TRIGGERS = {
    "sqlite": (
        "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
        f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END",
        "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
        f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END",
    ),
    "postgresql": (
        "CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN RAISE EXCEPTION '{_APPEND_ONLY}' USING ERRCODE = 'insufficient_privilege'; END $$",
        "CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()",
        "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()",
    ),
}

_DROP_TRIGGERS = {
    "sqlite": ("DROP TRIGGER audit_log_no_delete", "DROP TRIGGER audit_log_no_update"),
    "postgresql": (
        "DROP TRIGGER audit_log_no_truncate ON audit_log",
        "DROP TRIGGER audit_log_no_update ON audit_log",
        "DROP FUNCTION audit_log_append_only()",
    ),
}


def _time() -> sa.BigInteger:
    return sa.BigInteger()


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("display_name", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_users")),
    )
    op.create_table(
        "user_groups",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_user_groups")),
    )
    op.create_table(
        "group_members",
        sa.Column("group_name", sa.String(), nullable=False),
        sa.Column("user_name", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_name"], ["user_groups.name"], name=op.f("fk_group_members_group_name_user_groups")
        ),
        sa.ForeignKeyConstraint(["user_name"], ["users.name"], name=op.f("fk_group_members_user_name_users")),
        sa.PrimaryKeyConstraint("group_name", "user_name", name=op.f("pk_group_members")),
    )
    op.create_index(op.f("ix_group_members_user_name"), "group_members", ["user_name"])
    op.create_table(
        "access_requests",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("client_id", sa.String(), nullable=False),
        sa.Column("subject", sa.String(), nullable=True),
        sa.Column("audience", sa.String(), nullable=False),
        sa.Column("scope_text", sa.Text(), nullable=True),
        sa.Column("scope_bin", sa.LargeBinary(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("approvers", sa.Text(), nullable=False),
        sa.Column("rules", sa.Text(), nullable=False),
        sa.Column("requested_from", _time(), nullable=False),
        sa.Column("requested_until", _time(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("updated_at", _time(), nullable=False),
        sa.Column("request_count", sa.Integer(), nullable=False),
        sa.Column("expires_at", _time(), nullable=False),
        sa.Column("decided_at", _time(), nullable=True),
        sa.Column("decided_by", sa.String(), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("pending_key", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_requests")),
        sa.CheckConstraint("(scope_text IS NULL) <> (scope_bin IS NULL)", name=op.f("ck_access_requests_one_scope")),
    )
    op.create_index(op.f("uq_access_requests_pending_key"), "access_requests", ["pending_key"], unique=True)
    op.create_index(op.f("ix_access_requests_status_expires_at"), "access_requests", ["status", "expires_at"])
    op.create_index(op.f("ix_access_requests_created_at"), "access_requests", ["created_at"])
    op.create_table(
        "grants",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("request_id", sa.String(), nullable=True),
        sa.Column("client_id", sa.String(), nullable=False),
        sa.Column("subject", sa.String(), nullable=True),
        sa.Column("audience", sa.String(), nullable=False),
        sa.Column("scope_text", sa.Text(), nullable=True),
        sa.Column("scope_bin", sa.LargeBinary(), nullable=True),
        sa.Column("valid_from", _time(), nullable=True),
        sa.Column("valid_until", _time(), nullable=True),
        sa.Column("windows", sa.Text(), nullable=False),
        sa.Column("timezone", sa.String(), nullable=True),
        sa.Column("max_lifetime", sa.Integer(), nullable=True),
        sa.Column("approvers", sa.Text(), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("revoked_at", _time(), nullable=True),
        sa.Column("revoked_by", sa.String(), nullable=True),
        sa.ForeignKeyConstraint(
            ["request_id"], ["access_requests.id"], name=op.f("fk_grants_request_id_access_requests")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grants")),
        sa.CheckConstraint("(scope_text IS NULL) <> (scope_bin IS NULL)", name=op.f("ck_grants_one_scope")),
    )
    op.create_index(op.f("ix_grants_status"), "grants", ["status"])
    op.create_table(
        "token_grants",
        sa.Column("grant_id", sa.String(), nullable=False),
        sa.Column("cti", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("grant_id", "cti", name=op.f("pk_token_grants")),
    )
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), sa.Identity(), nullable=False),
        sa.Column("at", _time(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("client_id", sa.String(), nullable=True),
        sa.Column("subject", sa.String(), nullable=True),
        sa.Column("audience", sa.String(), nullable=True),
        sa.Column("scope", sa.Text(), nullable=True),
        sa.Column("request_id", sa.String(), nullable=True),
        sa.Column("grant_id", sa.String(), nullable=True),
        sa.Column("cti", sa.LargeBinary(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_at_seq"), "audit_log", ["at", "seq"])
    for statement in _TRIGGERS[op.get_bind().dialect.name]:
        op.execute(statement)
    # Plain ADD COLUMN on both databases: issued_tokens may hold millions of rows.
    op.add_column("issued_tokens", sa.Column("rules", sa.Text(), nullable=True))
    op.create_index(
        op.f("ix_issued_tokens_subject"),
        "issued_tokens",
        ["subject"],
        sqlite_where=sa.text("subject IS NOT NULL"),
        postgresql_where=sa.text("subject IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_issued_tokens_subject"), table_name="issued_tokens")
    with op.batch_alter_table("issued_tokens") as batch:  # SQLite: copies the table
        batch.drop_column("rules")
    for statement in _DROP_TRIGGERS[op.get_bind().dialect.name]:
        op.execute(statement)
    op.drop_index(op.f("ix_audit_log_at_seq"), table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("token_grants")
    op.drop_index(op.f("ix_grants_status"), table_name="grants")
    op.drop_table("grants")
    op.drop_index(op.f("ix_access_requests_created_at"), table_name="access_requests")
    op.drop_index(op.f("ix_access_requests_status_expires_at"), table_name="access_requests")
    op.drop_index(op.f("uq_access_requests_pending_key"), table_name="access_requests")
    op.drop_table("access_requests")
    op.drop_index(op.f("ix_group_members_user_name"), table_name="group_members")
    op.drop_table("group_members")
    op.drop_table("user_groups")
    op.drop_table("users")
