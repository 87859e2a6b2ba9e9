"""The relational schema of the authorization server's registries (SQLAlchemy Core).

One table per record of :mod:`as_server.models`. The Alembic migrations in ``migrations/versions/`` create exactly
this schema (a test compares them with Alembic's autogenerate API), so a change here needs a new migration.

Conventions:

* Enumerations are stored as text: the RFC's names for registry values (``"client_credentials"``,
  ``"coap_oscore"``; RFC 9200 §5.8.4.1, RFC 9203 §9.1), the IANA COSE name for algorithms (``"EdDSA"``), and the
  string values of our own :class:`~enum.StrEnum`\\ s. Sets are JSON arrays, sorted, so equal sets are equal text.
* ``str | bytes`` fields (text scopes vs. AIF scopes, RFC 9200 §5.8.1) use two nullable columns, ``*_text`` and
  ``*_bin``, so neither form is ever confused with the other.
* Columns ending in ``_sealed`` hold :meth:`as_server.sealing.MasterKey.seal` envelopes of key material, bound to
  their table, column and primary key (:func:`.rows.aad`). Public keys and secret hashes are stored as they are.
* ``issued_tokens`` and ``signing_keys`` have a surrogate ``seq`` key (SQLite: the rowid; PostgreSQL: an identity
  column). Tokens issued in the same second have equal ``iat`` (keys: ``created_at``); ``seq`` orders them by
  insertion, across processes, which "newest first" and "most recent wins" need. ``cti`` (``kid``) is unique, so
  on SQLite the physical layout equals a table keyed by ``cti`` (a rowid table with one index on ``cti``).
* ``registry_version`` holds one row (``id`` 1) whose ``version`` goes up in the same transaction as every write to
  ``clients``, ``resource_servers`` and ``signing_keys`` (:class:`.store.SqlStorage` does it). Each process caches
  registry records and re-reads this one number to learn that another process changed them
  (:mod:`as_server.storage.registry_cache`). The row is created by the first registry write (an upsert), so a
  missing row only means "nothing written yet".
* ``issued_tokens.pop_key_generated`` is TRUE for a token whose PoP key the AS generated (no ``req_cnf``, RFC 9200
  §5.8.1) and NULL otherwise, never FALSE. A generated key's ``pop_kid`` must be new for the client and audience;
  tokens that re-bind a key by ``kid`` (RFC 9203 §3.1, RFC 9202 §4) or bind the client's registered public key share
  a ``pop_kid`` with earlier tokens on purpose. One unique index on (client_id, audience, pop_kid,
  pop_key_generated) says both, because NULLs never collide in a unique index (SQLite and PostgreSQL alike): it
  refuses a second TRUE row with the same key id and lets any number of NULL rows share it. The same index serves
  :meth:`~.store.SqlStorage.find_by_pop_kid`, so a token insert updates no more indexes than before the rule.
* ``resource_servers.compact_claims`` and ``has_clock`` are the per-RS token options of
  :class:`~as_server.models.ResourceServer` (revision 0003; server default TRUE, what rows from before it get).
  ``resource_servers.exi_sequence`` is the number of the last ``exi`` token issued for the RS (RFC 9200 §5.10.3),
  0 before the first. It is not a field of the record: :func:`.rows.resource_server_to_row` leaves it out, so an
  insert starts it at its server default and an update of the record never touches it; only
  :meth:`~.store.SqlStorage.next_exi_sequence` does, with one ``UPDATE ... RETURNING`` (a row lock on PostgreSQL,
  the write lock on SQLite), and it does not bump ``registry_version``.
* ``issued_tokens.exi`` is the ``exi`` claim of a token for an RS without a clock, NULL for ``exp`` tokens (whose
  ``exp`` column is the claim; for ``exi`` tokens it is the AS's bound, see :class:`~as_server.models.IssuedToken`).

Revision 0007 (issue #7, operational keys of bootstrapped locks; docs/bootstrap-design.md):

* ``rs_keys``: each lock's operational keys by generation (primary key audience + generation, generation >= 1).
  ``key_sealed`` is the 16-byte key sealed like ``resource_servers.shared_key_sealed`` (associated data: the PSK
  identity ``audience#generation``), NULL once erased; ``delivered_at`` NULL until a bootstrap delivered it;
  ``retire_at`` NULL while not retiring (indexed: erasing what is due). No foreign key to ``resource_servers``:
  the resource server is created in the same transaction as its first generation, and revocation keeps the rows
  (their dates) with the key material erased.
* ``lwm2m_registrations``: the live LwM2M registration of each lock at ``/rd`` (location id, unique audience,
  endpoint name, lifetime, binding, version, object links, source address, registration time, last contact).
  Nothing secret.

Revision 0006 (issue #6, the manager console): ``manager_sites`` -- the audience patterns (exact names or
``fnmatch`` globs) each manager manages; a manager's console shows only the locks, tokens and grants of those
audiences. Rows go with the user (foreign key); set by ``ostiary user sites`` and by admins in the console.

Revision 0005 (issue #5: apps signing users in, :mod:`as_server.oauth`):

* ``clients.redirect_uris`` (JSON array, in registration order) and ``clients.public`` (a client without a secret,
  which must use PKCE); existing clients get ``[]`` and FALSE.
* ``authorization_codes``: keyed by the SHA-256 of the code (the code itself is never stored). ``family_id`` and
  ``access_cti`` tie a redeemed code to what it produced, so a replay can revoke it; ``expires_at`` is indexed for
  forgetting old codes.
* ``refresh_tokens``: keyed by the SHA-256 of the token. ``family_id`` is indexed (revoking a family);
  ``access_cti`` is the access token issued with each one, which family revocation revokes through
  ``issued_tokens.cti``. Nothing secret is stored: the PoP key stays in the ``cnf`` of the family's first token
  (``key_cti``).

Revision 0004 (issue #5: users, audit, consent):

* ``users``, ``user_groups`` and ``group_members`` (foreign keys to both): local accounts with Argon2id password hashes
  (PHC strings, :mod:`as_server.identity`), roles, and group memberships.
* ``access_requests``: the consent workflow's requests (:class:`~as_server.models.ConsentRequest`).
  ``pending_key`` is a hash of client, subject, audience and scope while the request is pending and NULL once it is
  decided or expired; its unique index makes "one pending request per key" hold across processes (NULLs never
  collide), so duplicates merge instead of piling up. ``(status, expires_at)`` finds the requests to expire.
* ``grants``: approved permissions (:class:`~as_server.models.Grant`), the rows behind the policy engine's
  SQL-backed rule source; a grant change bumps ``registry_version`` like a registry write.
* ``token_grants``: which token (``cti``) was issued under which grant, written by the token writer in the same
  transaction as the token row and only for tokens issued under grants; ``grant.revoked`` revokes through it.
  ``issued_tokens.rules`` (JSON array, NULL when empty) lists every policy rule that granted the token's rights,
  for the audit trail; ``issued_tokens.subject`` gets a partial index (rows with a subject only, so tokens without
  a user -- the client-credentials grant -- cost no index write) for revoking a disabled user's tokens.
* ``audit_log``: append-only. Triggers (:data:`AUDIT_TRIGGERS`) refuse ``UPDATE`` and ``DELETE`` on both databases
  (and ``TRUNCATE`` on PostgreSQL); the migration creates them, and so does :meth:`metadata.create_all` through a
  DDL event. Alembic's comparison does not look at triggers; a test checks them on both databases.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "AUDIT_TRIGGERS",
    "NAMING_CONVENTION",
    "access_requests",
    "audit_log",
    "authorization_codes",
    "clients",
    "grants",
    "group_members",
    "issued_tokens",
    "lwm2m_registrations",
    "manager_sites",
    "metadata",
    "refresh_tokens",
    "registry_version",
    "resource_servers",
    "rs_keys",
    "signing_keys",
    "token_grants",
    "user_groups",
    "users",
]

#: Deterministic constraint and index names, so later migrations (and SQLite batch mode) can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

#: Seconds since the epoch (64-bit: past 2038).
_Time = sa.BigInteger

clients = sa.Table(
    "clients",
    metadata,
    sa.Column("client_id", sa.String(), primary_key=True),
    sa.Column("secret_hash", sa.LargeBinary(), nullable=False),
    sa.Column("display_name", sa.String(), nullable=False),
    sa.Column("grant_types", sa.Text(), nullable=False),  # JSON array of RFC 9200 §5.8.4.1 names
    sa.Column("audiences", sa.Text(), nullable=False),  # JSON array
    sa.Column("profiles", sa.Text(), nullable=False),  # JSON array of ace_profile names
    sa.Column("pop_key_types", sa.Text(), nullable=False),  # JSON array of PopKeyType values
    sa.Column("public_key", sa.LargeBinary(), nullable=True),  # COSE_Key CBOR, public: stored clear
    sa.Column("default_audience", sa.String(), nullable=True),
    sa.Column("default_scope_text", sa.Text(), nullable=True),
    sa.Column("default_scope_bin", sa.LargeBinary(), nullable=True),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    sa.Column("created_at", _Time(), nullable=False),
    # Revision 0005: apps signing users in (authorization code with PKCE).
    sa.Column("redirect_uris", sa.Text(), nullable=False, server_default=sa.text("'[]'")),  # JSON array, in order
    sa.Column("public", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.CheckConstraint(
        "default_scope_text IS NULL OR default_scope_bin IS NULL",
        name="one_default_scope",
    ),
)

resource_servers = sa.Table(
    "resource_servers",
    metadata,
    sa.Column("audience", sa.String(), primary_key=True),
    sa.Column("shared_key_sealed", sa.LargeBinary(), nullable=True),  # COSE_Key CBOR, sealed
    sa.Column("public_key", sa.LargeBinary(), nullable=True),  # COSE_Key CBOR, public: stored clear
    sa.Column("profiles", sa.Text(), nullable=False),  # JSON array of ace_profile names
    sa.Column("scope_format", sa.String(), nullable=False),
    sa.Column("resources_text", sa.Text(), nullable=True),
    sa.Column("resources_bin", sa.LargeBinary(), nullable=True),
    sa.Column("token_form", sa.String(), nullable=False),
    sa.Column("max_lifetime", sa.Integer(), nullable=False),
    sa.Column("introspection_secret_hash", sa.LargeBinary(), nullable=True),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    sa.Column("created_at", _Time(), nullable=False),
    # Revision 0003: per-RS token options, and the exi sequence counter (not part of the record; module docstring).
    sa.Column("compact_claims", sa.Boolean(), nullable=False, server_default=sa.true()),
    sa.Column("has_clock", sa.Boolean(), nullable=False, server_default=sa.true()),
    sa.Column("exi_sequence", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    sa.CheckConstraint("resources_text IS NULL OR resources_bin IS NULL", name="one_resources"),
)

issued_tokens = sa.Table(
    "issued_tokens",
    metadata,
    # INTEGER (not BIGINT) on SQLite, or the column would not alias the rowid.
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), sa.Identity(), primary_key=True),
    sa.Column("cti", sa.LargeBinary(), nullable=False),
    sa.Column("token_hash", sa.LargeBinary(), nullable=False),  # RFC 9770 §4
    sa.Column("client_id", sa.String(), nullable=False),
    sa.Column("audience", sa.String(), nullable=False),
    sa.Column("scope_text", sa.Text(), nullable=True),
    sa.Column("scope_bin", sa.LargeBinary(), nullable=True),
    sa.Column("profile", sa.String(), nullable=True),
    sa.Column("iat", _Time(), nullable=False),
    sa.Column("exp", _Time(), nullable=False),
    sa.Column("cnf_sealed", sa.LargeBinary(), nullable=False),  # may hold an OSCORE master secret
    sa.Column("pop_kid", sa.LargeBinary(), nullable=True),
    sa.Column("subject", sa.String(), nullable=True),
    sa.Column("status", sa.String(), nullable=False),
    # TRUE or NULL (see the module docstring); revision 0002, earlier rows are NULL (their ids were checked unused
    # when they were issued).
    sa.Column("pop_key_generated", sa.Boolean(), nullable=True),
    # Revision 0003: the exi claim (RFC 9200 §5.10.3) of a token for an RS without a clock, else NULL.
    sa.Column("exi", sa.Integer(), nullable=True),
    # Revision 0004: the policy rules that granted the token's rights (JSON array), NULL when none are named.
    sa.Column("rules", sa.Text(), nullable=True),
    sa.CheckConstraint("(scope_text IS NULL) <> (scope_bin IS NULL)", name="one_scope"),
    # No foreign keys to clients/resource_servers: a token record is an audit record that outlives registry
    # edits, and the memory backend (with which this one must agree) has none either.
    sa.Index("uq_issued_tokens_cti", "cti", unique=True),
    sa.Index("uq_issued_tokens_token_hash", "token_hash", unique=True),
    # An AS-generated PoP key id is new for its client and audience (RFC 9203 §4.1 OSCORE ids, RFC 9202 §3.3 PSK
    # kids; the token endpoint draws another key when record() raises DuplicateError); shared ids are NULL-marked.
    # Also serves find_by_pop_kid() and list_tokens(client_id=...).
    sa.Index(
        "uq_issued_tokens_generated_pop_kid", "client_id", "audience", "pop_kid", "pop_key_generated", unique=True
    ),
    # list_tokens(): newest first, walking the index backwards.
    sa.Index(None, "iat", "seq"),
    # Revision 0004: a disabled user's tokens; partial, so tokens without a subject cost no index write.
    sa.Index(
        "ix_issued_tokens_subject",
        "subject",
        sqlite_where=sa.text("subject IS NOT NULL"),
        postgresql_where=sa.text("subject IS NOT NULL"),
    ),
)

signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), sa.Identity(), primary_key=True),
    sa.Column("kid", sa.LargeBinary(), nullable=False),
    sa.Column("alg", sa.String(), nullable=False),  # IANA COSE algorithm name
    sa.Column("key_sealed", sa.LargeBinary(), nullable=False),  # COSE_Key CBOR with the private key, sealed
    sa.Column("created_at", _Time(), nullable=False),
    sa.Column("retired_at", _Time(), nullable=True),
    sa.Column("retire_after", _Time(), nullable=True),
    sa.Index("uq_signing_keys_kid", "kid", unique=True),
)

registry_version = sa.Table(
    "registry_version",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("version", sa.BigInteger(), nullable=False),
    sa.CheckConstraint("id = 1", name="single_row"),
)


# -- revision 0004: users, groups, consent, audit -----------------------------------------------------------------

users = sa.Table(
    "users",
    metadata,
    sa.Column("name", sa.String(), primary_key=True),
    sa.Column("password_hash", sa.Text(), nullable=True),  # Argon2id PHC string; NULL: no local password
    sa.Column("display_name", sa.String(), nullable=False),
    sa.Column("role", sa.String(), nullable=False),  # UserRole value
    sa.Column("enabled", sa.Boolean(), nullable=False),
    sa.Column("created_at", _Time(), nullable=False),
)

user_groups = sa.Table(
    "user_groups",
    metadata,
    sa.Column("name", sa.String(), primary_key=True),
    sa.Column("description", sa.String(), nullable=False),
    sa.Column("created_at", _Time(), nullable=False),
)

group_members = sa.Table(
    "group_members",
    metadata,
    sa.Column("group_name", sa.String(), sa.ForeignKey("user_groups.name"), primary_key=True),
    sa.Column("user_name", sa.String(), sa.ForeignKey("users.name"), primary_key=True),
    # groups_of(user): the primary key serves members_of(group).
    sa.Index(None, "user_name"),
)

access_requests = sa.Table(
    "access_requests",
    metadata,
    sa.Column("id", sa.String(), primary_key=True),  # 128 random bits, base64url
    sa.Column("client_id", sa.String(), nullable=False),
    sa.Column("subject", sa.String(), nullable=True),
    sa.Column("audience", sa.String(), nullable=False),
    sa.Column("scope_text", sa.Text(), nullable=True),
    sa.Column("scope_bin", sa.LargeBinary(), nullable=True),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("approvers", sa.Text(), nullable=False),  # JSON array of "user:NAME" / "group:NAME"
    sa.Column("rules", sa.Text(), nullable=False),  # JSON array of consent rule ids
    sa.Column("requested_from", _Time(), nullable=False),
    sa.Column("requested_until", _Time(), nullable=True),
    sa.Column("status", sa.String(), nullable=False),  # AccessRequestStatus value
    sa.Column("created_at", _Time(), nullable=False),
    sa.Column("updated_at", _Time(), nullable=False),
    sa.Column("request_count", sa.Integer(), nullable=False),
    sa.Column("expires_at", _Time(), nullable=False),
    sa.Column("decided_at", _Time(), nullable=True),
    sa.Column("decided_by", sa.String(), nullable=True),
    sa.Column("note", sa.Text(), nullable=False),
    sa.Column("pending_key", sa.String(), nullable=True),  # see the module docstring
    sa.CheckConstraint("(scope_text IS NULL) <> (scope_bin IS NULL)", name="one_scope"),
    sa.Index("uq_access_requests_pending_key", "pending_key", unique=True),
    sa.Index(None, "status", "expires_at"),
    sa.Index(None, "created_at"),
)

grants = sa.Table(
    "grants",
    metadata,
    sa.Column("id", sa.String(), primary_key=True),
    sa.Column("request_id", sa.String(), sa.ForeignKey("access_requests.id"), nullable=True),
    sa.Column("client_id", sa.String(), nullable=False),
    sa.Column("subject", sa.String(), nullable=True),
    sa.Column("audience", sa.String(), nullable=False),
    sa.Column("scope_text", sa.Text(), nullable=True),
    sa.Column("scope_bin", sa.LargeBinary(), nullable=True),
    sa.Column("valid_from", _Time(), nullable=True),
    sa.Column("valid_until", _Time(), nullable=True),
    sa.Column("windows", sa.Text(), nullable=False),  # JSON array of "Mon-Fri 09:00-18:00"
    sa.Column("timezone", sa.String(), nullable=True),
    sa.Column("max_lifetime", sa.Integer(), nullable=True),
    sa.Column("approvers", sa.Text(), nullable=False),  # JSON array, as access_requests.approvers
    sa.Column("created_at", _Time(), nullable=False),
    sa.Column("created_by", sa.String(), nullable=False),
    sa.Column("status", sa.String(), nullable=False),  # GrantStatus value
    sa.Column("revoked_at", _Time(), nullable=True),
    sa.Column("revoked_by", sa.String(), nullable=True),
    sa.CheckConstraint("(scope_text IS NULL) <> (scope_bin IS NULL)", name="one_scope"),
    sa.Index(None, "status"),
)

token_grants = sa.Table(
    "token_grants",
    metadata,
    # No foreign keys: written by the token writer's hot path, which must not look anything up (and token
    # records outlive registry edits, see issued_tokens).
    sa.Column("grant_id", sa.String(), primary_key=True),
    sa.Column("cti", sa.LargeBinary(), primary_key=True),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), sa.Identity(), primary_key=True),
    sa.Column("at", _Time(), nullable=False),
    sa.Column("action", sa.String(), nullable=False),
    sa.Column("actor", sa.String(), nullable=False),
    sa.Column("client_id", sa.String(), nullable=True),
    sa.Column("subject", sa.String(), nullable=True),
    sa.Column("audience", sa.String(), nullable=True),
    sa.Column("scope", sa.Text(), nullable=True),  # for people: AIF spec or text scope
    sa.Column("request_id", sa.String(), nullable=True),
    sa.Column("grant_id", sa.String(), nullable=True),
    sa.Column("cti", sa.LargeBinary(), nullable=True),
    sa.Column("detail", sa.Text(), nullable=False),
    # ostiary audit: newest first, --since/--until.
    sa.Index(None, "at", "seq"),
)

_APPEND_ONLY = "audit_log is append-only"

#: The triggers that make ``audit_log`` append-only, per dialect (statements in order; the migration has its own
#: copy, as migrations must not change when this module does).
AUDIT_TRIGGERS: dict[str, tuple[str, ...]] = {
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

for _dialect, _statements in AUDIT_TRIGGERS.items():
    for _statement in _statements:
        ddl = sa.DDL(_statement).execute_if(dialect=_dialect)  # type: ignore[no-untyped-call]
        sa.event.listen(audit_log, "after_create", ddl)


# -- revision 0005: authorization codes and refresh tokens (as_server.oauth) -------------------------------------

authorization_codes = sa.Table(
    "authorization_codes",
    metadata,
    sa.Column("code_hash", sa.LargeBinary(), primary_key=True),  # SHA-256 of the code
    sa.Column("client_id", sa.String(), nullable=False),
    sa.Column("redirect_uri", sa.Text(), nullable=False),
    sa.Column("subject", sa.String(), nullable=False),
    sa.Column("audience", sa.String(), nullable=False),
    sa.Column("scope", sa.Text(), nullable=True),  # as requested (text form); NULL: the client's default
    sa.Column("code_challenge", sa.String(), nullable=True),
    sa.Column("code_challenge_method", sa.String(), nullable=True),
    sa.Column("created_at", _Time(), nullable=False),
    sa.Column("expires_at", _Time(), nullable=False),
    sa.Column("used_at", _Time(), nullable=True),
    sa.Column("family_id", sa.String(), nullable=True),
    sa.Column("access_cti", sa.LargeBinary(), nullable=True),
    sa.Column("reused_at", _Time(), nullable=True),
    sa.Index(None, "expires_at"),
    sa.Index(None, "family_id"),
)

refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    sa.Column("token_hash", sa.LargeBinary(), primary_key=True),  # SHA-256 of the token
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
    sa.Column("status", sa.String(), nullable=False),  # RefreshTokenStatus value
    sa.Column("used_at", _Time(), nullable=True),
    sa.CheckConstraint("(scope_text IS NULL) <> (scope_bin IS NULL)", name="one_scope"),
    sa.Index(None, "family_id"),
)


# -- revision 0006: the manager console (issue #6) -----------------------------------------------------------------

#: The sites a manager manages in the console: audience patterns (exact names or globs), one row each.
manager_sites = sa.Table(
    "manager_sites",
    metadata,
    sa.Column("user_name", sa.String(), sa.ForeignKey("users.name"), primary_key=True),
    sa.Column("pattern", sa.String(), primary_key=True),
)


# -- revision 0007: operational keys and LwM2M registrations (issue #7) -------------------------------------------

rs_keys = sa.Table(
    "rs_keys",
    metadata,
    sa.Column("audience", sa.String(), primary_key=True),
    sa.Column("generation", sa.Integer(), primary_key=True),
    sa.Column("key_sealed", sa.LargeBinary(), nullable=True),  # 16 bytes, sealed; NULL once erased
    sa.Column("created_at", _Time(), nullable=False),
    sa.Column("delivered_at", _Time(), nullable=True),
    sa.Column("retire_at", _Time(), nullable=True),
    sa.CheckConstraint("generation >= 1", name="positive_generation"),
    # erase_retired_keys(): the generations whose retire_at has come.
    sa.Index(None, "retire_at"),
)

lwm2m_registrations = sa.Table(
    "lwm2m_registrations",
    metadata,
    sa.Column("location", sa.String(), primary_key=True),  # rd/{location}
    sa.Column("audience", sa.String(), nullable=False),
    sa.Column("endpoint", sa.String(), nullable=False),
    sa.Column("lifetime", sa.BigInteger(), nullable=False),
    sa.Column("binding", sa.String(), nullable=False),
    sa.Column("lwm2m_version", sa.String(), nullable=False),
    sa.Column("object_links", sa.Text(), nullable=False),
    sa.Column("source", sa.String(), nullable=False),
    sa.Column("registered_at", _Time(), nullable=False),
    sa.Column("last_contact", _Time(), nullable=False),
    # One live registration per lock: a new Register replaces the old.
    sa.Index("uq_lwm2m_registrations_audience", "audience", unique=True),
)
