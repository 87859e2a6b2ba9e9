"""Storage backends of the authorization server: one conformance suite for every backend, then SQL specifics.

The conformance tests run against :class:`MemoryStorage`, SQLite and PostgreSQL through the ``storage`` fixture
(``conftest.py``); the backends must be interchangeable (STYLE §3.6 rule 7). The SQL tests cover what only a
database has: migrations, key material sealed at rest, persistence, group commit, and several processes sharing
one database.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ace_core import cbor
from ace_core.keys import CoseKey, b64url_encode
from ace_core.pop import Confirmation, OscoreMaterial
from ace_core.registry import AceProfile, CoseAlgorithm, GrantType
from as_server.models import (
    Client,
    IssuedToken,
    PopKeyType,
    ResourceServer,
    ScopeFormat,
    SigningKey,
    TokenForm,
    TokenStatus,
)
from as_server.sealing import MasterKey, SealingError, hash_secret
from as_server.storage.base import DuplicateError, NotFoundError, Storage
from as_server.storage.registry_cache import REGISTRY_MAX_AGE
from as_server.storage.sqlalchemy import (
    DatabaseUnavailableError,
    SchemaError,
    SqlStorage,
    StorageClosedError,
    WriterStopped,
    current_revision,
    head_revision,
    open_storage,
    upgrade,
)
from as_server.storage.sqlalchemy.engine import make_engine
from as_server.storage.sqlalchemy.migrate import alembic_config
from as_server.storage.sqlalchemy.rows import TOKEN_COLUMNS, resource_server_to_row, token_values
from as_server.storage.sqlalchemy.tables import issued_tokens, metadata

#: A fixed "now" (time is a parameter: STYLE §3.6 rule 3).
T0 = 1_700_000_000
#: Upper bound of every wait on an event or a thread in this file (seconds); reached only when a test fails.
WAIT = 10.0

OpenSql = Callable[..., SqlStorage]

_serial = itertools.count(1)


# --- records ----------------------------------------------------------------------------------------------------


def oscore_cnf(master_secret: bytes) -> bytes:
    """A ``cnf`` claim carrying OSCORE input material (RFC 9203 §3.2.1), CBOR-encoded as IssuedToken keeps it."""
    material = OscoreMaterial(id=b"\x01", ms=master_secret, salt=b"\x9e\x7c\xa9\x22\x23\x78\x63\x40")
    return cbor.dumps(Confirmation(osc=material).to_cbor_map())


def make_token(
    n: int | None = None,
    *,
    client_id: str = "client-1",
    audience: str = "lock-1",
    iat: int = T0,
    pop_kid: bytes | None = None,
    scope: str | bytes = "read",
    **changes: Any,
) -> IssuedToken:
    """A token record with a unique ``cti`` and token hash (RFC 9770 §4 form: 0x01 || SHA-256)."""
    n = next(_serial) if n is None else n
    cti = b"cti-" + n.to_bytes(8, "big")
    fields: dict[str, Any] = {
        "cti": cti,
        "client_id": client_id,
        "audience": audience,
        "scope": scope,
        "profile": AceProfile.COAP_OSCORE,
        "iat": iat,
        "exp": iat + 3600,
        "token_hash": b"\x01" + hashlib.sha256(cti).digest(),
        "cnf": oscore_cnf(n.to_bytes(16, "big")),
        "pop_kid": pop_kid,
    }
    fields.update(changes)
    return IssuedToken(**fields)


def full_client(client_id: str = "client-1", **changes: Any) -> Client:
    """A client with every field away from its default."""
    fields: dict[str, Any] = {
        "client_id": client_id,
        "secret_hash": hash_secret("s3cret"),
        "display_name": "Front door app",
        "grant_types": frozenset({GrantType.CLIENT_CREDENTIALS, GrantType.REFRESH_TOKEN}),
        "audiences": frozenset({"lock-1", "coap://lock-2/", "with,comma"}),
        "profiles": frozenset({AceProfile.COAP_OSCORE, AceProfile.COAP_DTLS}),
        "pop_key_types": frozenset(PopKeyType),
        "public_key": CoseKey.generate(CoseAlgorithm.EDDSA).public(),
        "default_audience": "lock-1",
        "default_scope": b"\x81\x82\x67/locks\x05",  # AIF (RFC 9237) as bytes
        "enabled": False,
        "created_at": T0,
    }
    fields.update(changes)
    return Client(**fields)


def full_resource_server(audience: str = "lock-1", **changes: Any) -> ResourceServer:
    """A resource server with every field away from its default."""
    fields: dict[str, Any] = {
        "audience": audience,
        "shared_key": CoseKey.generate(CoseAlgorithm.AES_CCM_16_64_128),
        "public_key": CoseKey.generate(CoseAlgorithm.ES256).public(),
        "profiles": frozenset({AceProfile.COAP_DTLS}),
        "scope_format": ScopeFormat.TEXT,
        "resources": "read write admin",
        "token_form": TokenForm.SIGN1_ENCRYPT0,
        "max_lifetime": 600,
        "introspection_secret_hash": hash_secret("rs-secret"),
        "enabled": False,
        "created_at": T0 + 1,
        "compact_claims": False,
        "has_clock": False,
    }
    fields.update(changes)
    return ResourceServer(**fields)


def signing_key(created_at: int, alg: CoseAlgorithm = CoseAlgorithm.EDDSA) -> SigningKey:
    key = CoseKey.generate(alg)
    assert key.kid is not None
    return SigningKey(kid=key.kid, alg=alg, key=key, created_at=created_at)


# --- conformance: clients -----------------------------------------------------------------------------------------


def test_client_roundtrips_every_field(storage: Storage) -> None:
    full = full_client()
    plain = Client(client_id="client-2", secret_hash=hash_secret("x"), default_scope="read write")
    storage.add_client(full)
    storage.add_client(plain)
    assert storage.get_client("client-1") == full
    assert storage.get_client("client-2") == plain
    assert storage.get_client("nobody") is None


def test_add_client_twice_is_a_duplicate(storage: Storage) -> None:
    original = full_client()
    storage.add_client(original)
    with pytest.raises(DuplicateError):
        storage.add_client(dataclasses.replace(original, display_name="other"))
    assert storage.get_client("client-1") == original


def test_update_client_replaces_the_record(storage: Storage) -> None:
    original = full_client()
    storage.add_client(original)
    changed = dataclasses.replace(
        original, enabled=True, audiences=frozenset(), public_key=None, default_scope="x", default_audience=None
    )
    storage.update_client(changed)
    assert storage.get_client("client-1") == changed
    with pytest.raises(NotFoundError):
        storage.update_client(full_client("nobody"))
    assert storage.get_client("nobody") is None


def test_list_clients_by_id(storage: Storage) -> None:
    assert list(storage.list_clients()) == []
    clients = [full_client(name) for name in ("b", "c", "a")]
    for client in clients:
        storage.add_client(client)
    assert list(storage.list_clients()) == sorted(clients, key=lambda c: c.client_id)


# --- conformance: resource servers --------------------------------------------------------------------------------


def test_resource_server_roundtrips_every_field(storage: Storage) -> None:
    full = full_resource_server()
    plain = ResourceServer(audience="lock-2", resources=b"\x80")
    storage.add_resource_server(full)
    storage.add_resource_server(plain)
    got = storage.get_resource_server("lock-1")
    assert got == full
    assert got is not None and got.shared_key is not None and got.shared_key.k == full.shared_key.k  # type: ignore[union-attr]
    assert storage.get_resource_server("lock-2") == plain
    assert storage.get_resource_server("nobody") is None


def test_resource_server_duplicate_update_and_list(storage: Storage) -> None:
    first = full_resource_server("rs-b")
    storage.add_resource_server(first)
    with pytest.raises(DuplicateError):
        storage.add_resource_server(full_resource_server("rs-b"))
    assert storage.get_resource_server("rs-b") == first
    changed = dataclasses.replace(first, shared_key=None, resources=None, enabled=True, max_lifetime=60)
    storage.update_resource_server(changed)
    assert storage.get_resource_server("rs-b") == changed
    with pytest.raises(NotFoundError):
        storage.update_resource_server(full_resource_server("nobody"))
    second = full_resource_server("rs-a")
    storage.add_resource_server(second)
    assert list(storage.list_resource_servers()) == [second, changed]


# --- conformance: issued tokens -----------------------------------------------------------------------------------


def test_token_roundtrips_every_field(storage: Storage) -> None:
    aif = make_token(scope=b"\x81\x82\x67/locks\x05", pop_kid=b"kid-1", subject="alice", status=TokenStatus.REVOKED)
    text = make_token(scope="read write", profile=None)
    for token in (aif, text):
        storage.record(token)
        assert storage.get_by_cti(token.cti) == token
        assert storage.get_by_hash(token.token_hash) == token
    assert storage.get_by_cti(b"unknown") is None
    assert storage.get_by_hash(b"\x01" + bytes(32)) is None
    assert storage.count() == 2


def test_reusing_a_cti_or_token_hash_is_a_duplicate(storage: Storage) -> None:
    token = make_token()
    storage.record(token)
    with pytest.raises(DuplicateError):
        storage.record(dataclasses.replace(token, token_hash=b"\x01" + bytes(32), client_id="other"))
    with pytest.raises(DuplicateError):
        storage.record(dataclasses.replace(token, cti=b"fresh-cti", client_id="other"))
    assert storage.count() == 1
    assert storage.get_by_cti(token.cti) == token


def test_find_by_pop_kid_most_recent_wins(storage: Storage) -> None:
    kid = b"pop-key"
    older = make_token(iat=T0, pop_kid=kid)
    newer = make_token(iat=T0 + 10, pop_kid=kid)
    storage.record(newer)
    storage.record(older)  # recorded later, but issued earlier
    storage.record(make_token(iat=T0 + 20, pop_kid=kid, client_id="client-2"))
    storage.record(make_token(iat=T0 + 20, pop_kid=kid, audience="lock-2"))
    storage.record(make_token(iat=T0 + 20, pop_kid=b"other-key"))
    storage.record(make_token(iat=T0 + 30))  # no PoP key id
    assert storage.find_by_pop_kid("client-1", "lock-1", kid) == newer
    same_second = make_token(iat=T0 + 10, pop_kid=kid)
    storage.record(same_second)  # equal iat: the one recorded last wins
    assert storage.find_by_pop_kid("client-1", "lock-1", kid) == same_second
    storage.revoke(same_second.cti)  # whatever the status
    assert storage.find_by_pop_kid("client-1", "lock-1", kid) == dataclasses.replace(
        same_second, status=TokenStatus.REVOKED
    )
    assert storage.find_by_pop_kid("client-1", "lock-1", b"nope") is None
    assert storage.find_by_pop_kid("client-9", "lock-1", kid) is None


def test_generated_pop_kids_are_unique_per_client_and_audience(storage: Storage) -> None:
    """An AS-generated PoP key id is new for its client and audience; re-bound and registered keys share theirs."""
    kid = b"\x01\x02\x03\x04\x05\x06"
    first = make_token(iat=T0, pop_kid=kid, pop_key_generated=True)
    storage.record(first)
    with pytest.raises(DuplicateError):
        storage.record(make_token(iat=T0 + 1, pop_kid=kid, pop_key_generated=True))
    # The same id generated for another client or audience is another key.
    storage.record(make_token(pop_kid=kid, pop_key_generated=True, client_id="client-2"))
    storage.record(make_token(pop_kid=kid, pop_key_generated=True, audience="lock-2"))
    # Updates of access rights name the key by kid (RFC 9203 §3.1): any number of tokens share it.
    rebinds = [make_token(iat=T0 + 10 + i, pop_kid=kid) for i in range(3)]
    for token in rebinds:
        storage.record(token)
    assert storage.find_by_pop_kid("client-1", "lock-1", kid) == rebinds[-1]
    assert storage.get_by_cti(first.cti) == first  # pop_key_generated round-trips
    with pytest.raises(DuplicateError):  # still taken, by the first token
        storage.record(make_token(iat=T0 + 20, pop_kid=kid, pop_key_generated=True))
    assert storage.count() == 1 + 2 + len(rebinds)


def test_registry_version_changes_with_every_registry_write_and_only_then(storage: Storage) -> None:
    seen = [storage.registry_version()]

    def changed() -> bool:
        seen.append(storage.registry_version())
        return seen[-1] != seen[-2]

    client, rs, key = full_client(), full_resource_server(), signing_key(T0)
    storage.add_client(client)
    assert changed()
    storage.update_client(dataclasses.replace(client, enabled=True))
    assert changed()
    storage.add_resource_server(rs)
    assert changed()
    storage.update_resource_server(dataclasses.replace(rs, max_lifetime=5))
    assert changed()
    storage.add_signing_key(key)
    assert changed()
    storage.retire(key.kid, at=T0 + 1, retire_after=T0 + 2)
    assert changed()
    # Refused registry writes and token writes leave it alone.
    with pytest.raises(DuplicateError):
        storage.add_client(client)
    with pytest.raises(NotFoundError):
        storage.update_client(full_client("nobody"))
    with pytest.raises(NotFoundError):
        storage.update_resource_server(full_resource_server("nobody"))
    with pytest.raises(NotFoundError):
        storage.retire(b"unknown", at=T0, retire_after=T0)
    token = make_token()
    storage.record(token)
    storage.revoke(token.cti)
    assert not changed()
    assert len(set(seen)) == 7


# --- conformance: exi sequence numbers (RFC 9200 §5.10.3) ---------------------------------------------------------


def test_exi_sequence_counts_per_resource_server(storage: Storage) -> None:
    with pytest.raises(NotFoundError):
        storage.next_exi_sequence("lock-1")
    lock, other = full_resource_server("lock-1"), full_resource_server("lock-2")
    storage.add_resource_server(lock)
    storage.add_resource_server(other)
    version = storage.registry_version()
    assert [storage.next_exi_sequence("lock-1") for _ in range(3)] == [1, 2, 3]
    assert storage.next_exi_sequence("lock-2") == 1
    # Replacing the record leaves the counter alone (it is not a field of the record)...
    storage.update_resource_server(dataclasses.replace(lock, has_clock=True, max_lifetime=60))
    assert storage.registry_version() != version
    version = storage.registry_version()
    assert storage.next_exi_sequence("lock-1") == 4
    # ... and drawing a number is not a registry write: caches stay valid.
    assert storage.registry_version() == version
    assert storage.get_resource_server("lock-1") == dataclasses.replace(lock, has_clock=True, max_lifetime=60)


def test_exi_sequence_is_atomic_across_threads(storage: Storage) -> None:
    storage.add_resource_server(full_resource_server("lock-1"))
    start = threading.Barrier(8)

    def draw() -> list[int]:
        start.wait(WAIT)
        return [storage.next_exi_sequence("lock-1") for _ in range(25)]

    with futures.ThreadPoolExecutor(8) as pool:
        drawn = [job.result(timeout=WAIT) for job in [pool.submit(draw) for _ in range(8)]]
    assert all(numbers == sorted(numbers) for numbers in drawn)
    assert sorted(n for numbers in drawn for n in numbers) == list(range(1, 201))


def test_list_tokens_newest_first_with_filters(storage: Storage) -> None:
    a1 = make_token(iat=T0 + 1, client_id="a", audience="x")
    a2 = make_token(iat=T0 + 3, client_id="a", audience="y")
    b1 = make_token(iat=T0 + 2, client_id="b", audience="x")
    b2 = make_token(iat=T0 + 3, client_id="b", audience="y")  # same iat as a2, recorded after it
    for token in (a2, a1, b1, b2):
        storage.record(token)
    assert list(storage.list_tokens()) == [b2, a2, b1, a1]
    assert list(storage.list_tokens(client_id="a")) == [a2, a1]
    assert list(storage.list_tokens(audience="x")) == [b1, a1]
    assert list(storage.list_tokens(client_id="b", audience="y")) == [b2]
    assert list(storage.list_tokens(client_id="c")) == []
    assert list(storage.list_tokens(limit=2)) == [b2, a2]
    assert list(storage.list_tokens(limit=0)) == []


def test_revoke(storage: Storage) -> None:
    token = make_token()
    storage.record(token)
    assert storage.revoke(token.cti) is True
    revoked = dataclasses.replace(token, status=TokenStatus.REVOKED)
    assert storage.get_by_cti(token.cti) == revoked
    assert storage.get_by_hash(token.token_hash) == revoked
    assert list(storage.list_tokens()) == [revoked]
    assert storage.revoke(token.cti) is True  # again: still known
    assert storage.revoke(b"unknown") is False
    assert storage.count() == 1


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.fixed_dictionaries(
        {
            # PostgreSQL text cannot hold NUL; identifiers never do.
            "client_id": st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20),
            "audience": st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20),
            "scope": st.one_of(
                st.binary(max_size=40), st.text(st.characters(codec="ascii", exclude_characters="\x00"))
            ),
            "profile": st.sampled_from([None, *AceProfile]),
            "iat": st.integers(0, 2**62),
            "lifetime": st.integers(0, 2**31),
            "cnf": st.binary(max_size=200),
            "pop_kid": st.none() | st.binary(max_size=16),
            "subject": st.none() | st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=10),
            "status": st.sampled_from(TokenStatus),
        }
    )
)
def test_any_token_roundtrips(storage: Storage, data: dict[str, Any]) -> None:
    n = next(_serial)
    lifetime = data.pop("lifetime")
    token = dataclasses.replace(make_token(n), exp=data["iat"] + lifetime, **data)
    storage.record(token)
    assert storage.get_by_cti(token.cti) == token
    assert storage.get_by_hash(token.token_hash) == token


# --- conformance: signing keys ------------------------------------------------------------------------------------


def test_signing_key_rotation(storage: Storage) -> None:
    assert storage.signing_key() is None
    assert list(storage.verification_keys(T0)) == []
    old = signing_key(T0, CoseAlgorithm.ES256)
    new = signing_key(T0 + 100)
    storage.add_signing_key(old)
    assert storage.signing_key() == old
    storage.add_signing_key(new)
    assert storage.signing_key() == new
    got = storage.signing_key()
    assert got is not None and got.key.d == new.key.d  # the private part survives
    with pytest.raises(DuplicateError):
        storage.add_signing_key(dataclasses.replace(new, created_at=T0 + 5))

    storage.retire(new.kid, at=T0 + 200, retire_after=T0 + 300)
    retired = dataclasses.replace(new, retired_at=T0 + 200, retire_after=T0 + 300)
    assert storage.signing_key() == old  # the newest key that is not retired
    assert list(storage.verification_keys(T0 + 299)) == [retired, old]
    assert list(storage.verification_keys(T0 + 300)) == [old]  # all its tokens have expired
    storage.retire(old.kid, at=T0 + 400, retire_after=T0 + 500)
    assert storage.signing_key() is None
    assert [k.kid for k in storage.verification_keys(T0 + 450)] == [old.kid]
    with pytest.raises(NotFoundError):
        storage.retire(b"unknown", at=T0, retire_after=T0)


def test_signing_keys_created_in_the_same_second(storage: Storage) -> None:
    first, second = signing_key(T0), signing_key(T0)
    storage.add_signing_key(first)
    storage.add_signing_key(second)
    assert storage.signing_key() == second  # the one added last
    assert list(storage.verification_keys(T0)) == [second, first]


def test_closed_storage_refuses_work(storage: Storage) -> None:
    storage.close()
    with pytest.raises(RuntimeError):
        storage.get_client("client-1")
    with pytest.raises(RuntimeError):
        storage.record(make_token())
    storage.close()  # idempotent


# --- SQL: schema and migrations -----------------------------------------------------------------------------------


def test_migrations_create_exactly_the_tables_module_schema(sql_url: str) -> None:
    assert current_revision(sql_url) is None
    upgrade(sql_url)
    upgrade(sql_url)  # idempotent
    assert current_revision(sql_url) == head_revision()
    engine = sa.create_engine(sql_url)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
            # Autogenerate does not compare CHECK constraints or every name; compare those too.
            inspector = sa.inspect(conn)
            for table in metadata.sorted_tables:
                checks = {c.name for c in table.constraints if isinstance(c, sa.CheckConstraint)}
                assert {c["name"] for c in inspector.get_check_constraints(table.name)} == checks, table.name
                assert {i["name"] for i in inspector.get_indexes(table.name)} == {i.name for i in table.indexes}
                assert inspector.get_pk_constraint(table.name)["name"] == table.primary_key.name
    finally:
        engine.dispose()


def test_downgrade_and_upgrade_again(sql_url: str) -> None:
    upgrade(sql_url)
    engine = sa.create_engine(sql_url)
    try:
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "base")
        with engine.connect() as conn:
            assert set(sa.inspect(conn).get_table_names()) == {"alembic_version"}
    finally:
        engine.dispose()
    assert current_revision(sql_url) is None
    upgrade(sql_url)
    assert current_revision(sql_url) == head_revision()


def test_upgrade_from_0001_keeps_the_tokens(sql_url: str, master_key: MasterKey, open_sql: OpenSql) -> None:
    """Revision 0002 adds ``pop_key_generated`` (NULL for existing rows) and swaps the pop_kid index in place."""
    engine = make_engine(sql_url, create_file=True)
    old = make_token(pop_kid=b"old-id")
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0001")
        with engine.begin() as conn:
            later = {"pop_key_generated", "exi", "rules"}  # added by revisions 0002, 0003 and 0004
            assert later <= set(TOKEN_COLUMNS)
            every = dict(zip(TOKEN_COLUMNS, token_values(old, master_key), strict=True))
            values = {c: v for c, v in every.items() if c not in later}
            columns = list(values)
            placeholders = ", ".join(f":{c}" for c in columns)
            conn.execute(sa.text(f"INSERT INTO issued_tokens ({', '.join(columns)}) VALUES ({placeholders})"), values)
    finally:
        engine.dispose()
    storage = open_sql(sql_url, master_key)  # upgrades to head
    assert current_revision(sql_url) == head_revision()
    assert storage.get_by_cti(old.cti) == old
    assert storage.registry_version() == 0
    # Rows from before the revision are not marked: a new generated key may even reuse their id.
    storage.record(make_token(pop_kid=b"old-id", pop_key_generated=True))
    assert storage.find_by_pop_kid("client-1", "lock-1", b"old-id") is not None


def test_upgrade_from_0002_gives_existing_resource_servers_the_defaults(
    sql_url: str, master_key: MasterKey, open_sql: OpenSql
) -> None:
    """Revision 0003: existing resource servers get compact claims, a clock and an exi counter at 0; existing tokens
    have no exi."""
    engine = make_engine(sql_url, create_file=True)
    rs = full_resource_server("lock-1", compact_claims=True, has_clock=True)
    old = make_token()
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0002")
        with engine.begin() as conn:
            row = resource_server_to_row(rs, master_key)
            assert {row.pop("compact_claims"), row.pop("has_clock")} == {True}  # columns of revision 0003
            _insert(conn, "resource_servers", row)
            values = dict(zip(TOKEN_COLUMNS, token_values(old, master_key), strict=True))
            assert values.pop("exi") is None
            assert values.pop("rules") is None  # revision 0004
            _insert(conn, "issued_tokens", values)
    finally:
        engine.dispose()
    storage = open_sql(sql_url, master_key)  # upgrades to head
    assert current_revision(sql_url) == head_revision()
    assert storage.get_resource_server("lock-1") == rs
    assert storage.get_by_cti(old.cti) == old
    assert storage.next_exi_sequence("lock-1") == 1
    storage.update_resource_server(dataclasses.replace(rs, has_clock=False, compact_claims=False))
    assert storage.get_resource_server("lock-1") == dataclasses.replace(rs, has_clock=False, compact_claims=False)
    assert storage.next_exi_sequence("lock-1") == 2


def _insert(conn: sa.Connection, table: str, row: dict[str, Any]) -> None:
    """INSERT one row by column name, as an older revision's schema has them."""
    placeholders = ", ".join(f":{name}" for name in row)
    conn.execute(sa.text(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({placeholders})"), row)


def test_open_needs_an_initialised_database(sql_url: str, master_key: MasterKey, tmp_path: Path) -> None:
    if sql_url.startswith("sqlite"):
        with pytest.raises(FileNotFoundError, match="ostiary as init"):
            open_storage(sql_url, master_key)
        assert current_revision(sql_url) is None
        assert not (tmp_path / "ostiary.db").exists()  # asking did not create it
        (tmp_path / "ostiary.db").touch(mode=0o600)
    with pytest.raises(SchemaError, match="ostiary as upgrade"):
        open_storage(sql_url, master_key)
    upgrade(sql_url)
    open_storage(sql_url, master_key).close()


def test_an_unreachable_database_is_a_connection_error(master_key: MasterKey) -> None:
    url = "postgresql+psycopg://ostiary:hunter2@127.0.0.1:1/ostiary"  # nothing listens on port 1
    for attempt in (lambda: open_storage(url, master_key), lambda: upgrade(url), lambda: current_revision(url)):
        with pytest.raises(ConnectionError, match=r"127\.0\.0\.1:1/ostiary unavailable") as caught:
            attempt()
        assert isinstance(caught.value, DatabaseUnavailableError)
        assert "hunter2" not in str(caught.value)


def test_unsupported_urls(master_key: MasterKey) -> None:
    for url in ("sqlite://", "sqlite:///:memory:", "mysql://db/ostiary"):
        with pytest.raises(ValueError):
            open_storage(url, master_key, create=True)


# --- SQL: key material at rest ------------------------------------------------------------------------------------


@contextmanager
def raw_engine(url: str) -> Iterator[sa.Engine]:
    """An engine that bypasses the storage (to look at and tamper with rows)."""
    engine = sa.create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def stored_bytes(url: str, storage: SqlStorage) -> bytes:
    """Everything the database holds for us: the SQLite files, or every value of every PostgreSQL row."""
    if storage.dialect == "sqlite":
        db = Path(sa.make_url(url).database or "")
        return b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists())
    chunks: list[bytes] = []
    with raw_engine(url) as engine, engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(sa.text(f"SELECT * FROM {table.name}")):
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        chunks.append(bytes(value))
                    elif isinstance(value, str):
                        chunks.append(value.encode())
    return b"\x00".join(chunks)


def test_key_material_is_never_stored_in_the_clear(sql_url: str, master_key: MasterKey, open_sql: OpenSql) -> None:
    storage = open_sql(sql_url, master_key)
    rs = full_resource_server()
    ed25519, es256 = signing_key(T0), signing_key(T0 + 1, CoseAlgorithm.ES256)
    oscore_secret = os.urandom(16)
    client = full_client()
    storage.add_client(client)
    storage.add_resource_server(rs)
    storage.add_signing_key(ed25519)
    storage.add_signing_key(es256)
    storage.record(make_token(cnf=oscore_cnf(oscore_secret)))
    storage.bulk_insert_tokens([make_token(cnf=oscore_cnf(oscore_secret[::-1]))])
    assert rs.shared_key is not None and ed25519.key.d is not None and es256.key.d is not None
    secrets = {
        "RS shared key": rs.shared_key.secret(),
        "Ed25519 signing key": ed25519.key.d,
        "ES256 signing key": es256.key.d,
        "OSCORE master secret (record)": oscore_secret,
        "OSCORE master secret (bulk)": oscore_secret[::-1],
    }

    def check(raw: bytes) -> None:
        for name, secret in secrets.items():
            for form in (secret, secret.hex().encode(), b64url_encode(secret).encode()):
                assert form not in raw, f"{name} found in the database"
        # The check can see keys: the client's public key is stored in the clear, on purpose.
        assert client.public_key is not None and client.public_key.x is not None
        assert client.public_key.x in raw

    check(stored_bytes(sql_url, storage))  # SQLite: the WAL too, before any checkpoint
    storage.close()
    check(stored_bytes(sql_url, storage))  # SQLite: after the checkpoint into the main file


@pytest.mark.parametrize(
    ("table", "column", "key_column"),
    [
        ("resource_servers", "shared_key_sealed", "audience"),
        ("issued_tokens", "cnf_sealed", "cti"),
        ("signing_keys", "key_sealed", "kid"),
    ],
)
def test_a_sealed_blob_copied_to_another_row_does_not_open(
    sql_url: str, master_key: MasterKey, open_sql: OpenSql, table: str, column: str, key_column: str
) -> None:
    storage = open_sql(sql_url, master_key)
    rs_a, rs_b = full_resource_server("a"), full_resource_server("b")
    tok_a, tok_b = make_token(), make_token()
    key_a, key_b = signing_key(T0), signing_key(T0 + 1)
    for rs in (rs_a, rs_b):
        storage.add_resource_server(rs)
    for tok in (tok_a, tok_b):
        storage.record(tok)
    for key in (key_a, key_b):
        storage.add_signing_key(key)
    source, target = {
        "resource_servers": ("a", "b"),
        "issued_tokens": (tok_a.cti, tok_b.cti),
        "signing_keys": (key_a.kid, key_b.kid),
    }[table]
    with raw_engine(sql_url) as engine, engine.begin() as conn:
        t = metadata.tables[table]
        blob = conn.execute(sa.select(t.c[column]).where(t.c[key_column] == source)).scalar_one()
        conn.execute(sa.update(t).where(t.c[key_column] == target).values({column: blob}))
    read: Callable[[], object] = {
        "resource_servers": lambda: storage.get_resource_server("b"),
        "issued_tokens": lambda: storage.get_by_cti(tok_b.cti),
        "signing_keys": lambda: storage.verification_keys(T0),
    }[table]
    with pytest.raises(SealingError, match=rf"{table}\.{column} of .* does not open"):
        read()
    # The row it came from still opens.
    assert storage.get_resource_server("a") == rs_a
    assert storage.get_by_cti(tok_a.cti) == tok_a


def test_another_master_key_opens_nothing(sql_url: str, master_key: MasterKey, open_sql: OpenSql) -> None:
    storage = open_sql(sql_url, master_key)
    storage.add_resource_server(full_resource_server())
    storage.record(token := make_token())
    storage.close()
    intruder = open_sql(sql_url, MasterKey.generate()[0], create=False)
    with pytest.raises(SealingError, match="another master key"):
        intruder.get_resource_server("lock-1")
    with pytest.raises(SealingError, match="another master key"):
        intruder.get_by_cti(token.cti)


# --- SQL: durability and sharing ----------------------------------------------------------------------------------


def test_everything_survives_a_restart(sql_url: str, master_key: MasterKey, open_sql: OpenSql) -> None:
    storage = open_sql(sql_url, master_key)
    client, rs, key = full_client(), full_resource_server(), signing_key(T0)
    tokens = [make_token(iat=T0 + i, pop_kid=b"k") for i in range(5)]
    storage.add_client(client)
    storage.add_resource_server(rs)
    storage.add_signing_key(key)
    for token in tokens:
        storage.record(token)
    storage.revoke(tokens[0].cti)
    storage.close()

    again = open_sql(sql_url, master_key, create=False)
    assert again.get_client(client.client_id) == client
    assert again.get_resource_server(rs.audience) == rs
    assert again.signing_key() == key
    assert again.count() == 5
    assert list(again.list_tokens()) == [
        *reversed(tokens[1:]),
        dataclasses.replace(tokens[0], status=TokenStatus.REVOKED),
    ]
    assert again.find_by_pop_kid("client-1", "lock-1", b"k") == tokens[-1]


def test_two_storages_on_one_database_see_each_others_writes(
    sql_url: str, master_key: MasterKey, open_sql: OpenSql
) -> None:
    """Two AS processes (e.g. gunicorn workers) on one database, at the storage level."""
    one = open_sql(sql_url, master_key)
    two = open_sql(sql_url, master_key, create=False)
    one.add_client(full_client())
    assert two.get_client("client-1") == one.get_client("client-1")
    with pytest.raises(DuplicateError):
        two.add_client(full_client())
    token = make_token()
    two.record(token)
    assert one.get_by_hash(token.token_hash) == token
    assert one.revoke(token.cti)
    assert two.get_by_cti(token.cti) == dataclasses.replace(token, status=TokenStatus.REVOKED)
    with pytest.raises(DuplicateError):
        one.record(token)

    def record_many(storage: SqlStorage, count: int) -> None:
        for _ in range(count):
            storage.record(make_token())

    with futures.ThreadPoolExecutor(8) as pool:
        jobs = [pool.submit(record_many, storage, 25) for storage in (one, two) for _ in range(4)]
        for job in jobs:
            job.result(timeout=WAIT)
    assert one.count() == two.count() == 1 + 200


def test_exi_sequence_is_shared_by_two_storages_and_survives_a_restart(
    sql_url: str, master_key: MasterKey, open_sql: OpenSql
) -> None:
    """Two AS processes on one database (SQLite: the write lock; PostgreSQL: the row lock of UPDATE ... RETURNING)
    draw each number once, in order, and the counter is durable."""
    one = open_sql(sql_url, master_key)
    two = open_sql(sql_url, master_key, create=False)
    one.add_resource_server(full_resource_server("lock-1"))
    alternating = [storage.next_exi_sequence("lock-1") for storage in (one, two, one)]
    assert alternating == [1, 2, 3]
    start = threading.Barrier(8)

    def draw(storage: SqlStorage) -> list[int]:
        start.wait(WAIT)
        return [storage.next_exi_sequence("lock-1") for _ in range(25)]

    with futures.ThreadPoolExecutor(8) as pool:
        jobs = [pool.submit(draw, storage) for storage in (one, two) for _ in range(4)]
        drawn = [job.result(timeout=WAIT) for job in jobs]
    assert all(numbers == sorted(numbers) for numbers in drawn)
    assert sorted(n for numbers in drawn for n in numbers) == list(range(4, 204))
    one.close()
    two.close()
    again = open_sql(sql_url, master_key, create=False)
    assert again.next_exi_sequence("lock-1") == 204
    with pytest.raises(NotFoundError):
        again.next_exi_sequence("nobody")


def test_sqlite_file_is_private_and_durable(tmp_path: Path, master_key: MasterKey, open_sql: OpenSql) -> None:
    path = tmp_path / "deployment" / "ostiary.db"
    url = f"sqlite:///{path}"
    storage = open_sql(url, master_key)
    storage.record(make_token())
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    with storage._engine.connect() as conn:  # noqa: SLF001 - the pragmas are per connection
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000


# --- SQL: registry cache -----------------------------------------------------------------------------------------


class FakeMonotonic:
    """A monotonic clock the test moves by hand (the cache's bound without sleeping)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def cached_storage(url: str, master_key: MasterKey, clock: FakeMonotonic) -> SqlStorage:
    return SqlStorage(make_engine(url), master_key, monotonic=clock)


def test_registry_reads_are_cached_and_changes_of_other_processes_seen_within_the_bound(
    sql_url: str, master_key: MasterKey, open_sql: OpenSql
) -> None:
    other = open_sql(sql_url, master_key)  # another process, e.g. `ostiary as client disable`
    client, rs, key = full_client(enabled=True), full_resource_server(enabled=True), signing_key(T0)
    other.add_client(client)
    other.add_resource_server(rs)
    other.add_signing_key(key)
    clock = FakeMonotonic()
    storage = cached_storage(sql_url, master_key, clock)
    try:
        assert storage.get_client(client.client_id) == client
        assert storage.get_resource_server(rs.audience) == rs
        assert storage.signing_key() == key
        # Served from memory: the same frozen objects, and no query while the bound has not passed.
        assert storage.get_client(client.client_id) is storage.get_client(client.client_id)
        with pytest.raises(dataclasses.FrozenInstanceError):
            storage.get_client(client.client_id).enabled = False  # type: ignore[misc, union-attr]

        disabled_client = dataclasses.replace(client, enabled=False)
        disabled_rs = dataclasses.replace(rs, enabled=False)
        other.update_client(disabled_client)
        other.update_resource_server(disabled_rs)
        other.retire(key.kid, at=T0 + 1, retire_after=T0 + 2)
        clock.advance(REGISTRY_MAX_AGE / 2)
        assert storage.get_client(client.client_id) == client  # may be this stale, never longer than the bound
        clock.advance(REGISTRY_MAX_AGE / 2)
        assert storage.get_client(client.client_id) == disabled_client
        assert storage.get_resource_server(rs.audience) == disabled_rs
        assert storage.signing_key() is None
        assert [k.kid for k in storage.verification_keys(T0 + 1)] == [key.kid]
    finally:
        storage.close()


def test_registry_changes_made_through_the_same_storage_apply_at_once(
    sql_url: str, master_key: MasterKey, open_sql: OpenSql
) -> None:
    open_sql(sql_url, master_key).close()  # create the schema
    clock = FakeMonotonic()  # never advanced
    storage = cached_storage(sql_url, master_key, clock)
    try:
        client, rs, old, new = full_client(), full_resource_server(), signing_key(T0), signing_key(T0 + 1)
        storage.add_client(client)
        storage.add_resource_server(rs)
        storage.add_signing_key(old)
        assert storage.get_client(client.client_id) == client
        assert storage.get_resource_server(rs.audience) == rs
        assert storage.signing_key() == old
        changed = dataclasses.replace(client, enabled=not client.enabled)
        storage.update_client(changed)
        assert storage.get_client(client.client_id) == changed
        narrowed = dataclasses.replace(rs, max_lifetime=1)
        storage.update_resource_server(narrowed)
        assert storage.get_resource_server(rs.audience) == narrowed
        storage.add_signing_key(new)
        assert storage.signing_key() == new
        storage.retire(new.kid, at=T0 + 2, retire_after=T0 + 3)
        assert storage.signing_key() == old
    finally:
        storage.close()


def test_unknown_records_are_not_cached(sql_url: str, master_key: MasterKey, open_sql: OpenSql) -> None:
    """A client registered by another process is found at once: misses are not remembered (nor can a stream of
    made-up client ids fill the cache)."""
    other = open_sql(sql_url, master_key)
    storage = cached_storage(sql_url, master_key, FakeMonotonic())
    try:
        client, rs = full_client(), full_resource_server()
        assert storage.get_client(client.client_id) is None
        assert storage.get_resource_server(rs.audience) is None
        other.add_client(client)
        other.add_resource_server(rs)
        assert storage.get_client(client.client_id) == client
        assert storage.get_resource_server(rs.audience) == rs
    finally:
        storage.close()


def test_the_registry_version_is_checked_at_most_once_per_bound(
    sql_url: str, master_key: MasterKey, open_sql: OpenSql, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_sql(sql_url, master_key).add_client(full_client())
    clock = FakeMonotonic()
    storage = cached_storage(sql_url, master_key, clock)
    checks: list[int | None] = []
    read_version = storage.registry_version

    def counted() -> int | None:
        checks.append(read_version())
        return checks[-1]

    monkeypatch.setattr(storage._registry, "_read_version", counted)  # noqa: SLF001
    try:
        for _ in range(100):
            storage.get_client("client-1")
        assert len(checks) == 1
        clock.advance(REGISTRY_MAX_AGE)
        for _ in range(100):
            storage.get_client("client-1")
        assert len(checks) == 2
    finally:
        storage.close()


# --- SQL: group commit --------------------------------------------------------------------------------------------


def test_group_commit_32_threads(sql_url: str, master_key: MasterKey, open_sql: OpenSql) -> None:
    storage = open_sql(sql_url, master_key)
    threads, per_thread = 32, 50
    start = threading.Barrier(threads)
    tokens = [[make_token() for _ in range(per_thread)] for _ in range(threads)]

    def work(mine: list[IssuedToken]) -> None:
        start.wait(WAIT)
        for token in mine:
            storage.record(token)

    with futures.ThreadPoolExecutor(threads) as pool:
        for job in [pool.submit(work, mine) for mine in tokens]:
            job.result(timeout=WAIT)
    assert storage.count() == threads * per_thread
    for token in itertools.chain.from_iterable(tokens):
        assert storage.get_by_cti(token.cti) == token
    stats = storage.commit_stats
    assert stats.rows == threads * per_thread
    assert stats.largest_batch > 1  # commits were shared
    assert stats.batches < stats.rows


@contextmanager
def writer_held(storage: SqlStorage, monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Hold the writer thread inside its first batch until the yielded event is set, so that what is submitted
    meanwhile forms the next batch."""
    committer = storage._committer  # noqa: SLF001 - a seam for a deterministic batch
    original = committer._write_batch  # noqa: SLF001
    release, entered = threading.Event(), threading.Event()

    def held(rows: Any) -> Any:
        entered.set()
        assert release.wait(WAIT)
        return original(rows)

    monkeypatch.setattr(committer, "_write_batch", held)
    first = storage.submit_record(make_token())
    assert entered.wait(WAIT)
    try:
        yield release
    finally:
        release.set()
        first.result(timeout=WAIT)


def test_a_duplicate_inside_a_batch_fails_only_its_caller(
    sql_url: str, master_key: MasterKey, open_sql: OpenSql, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = open_sql(sql_url, master_key)
    committed = make_token()
    storage.record(committed)
    batch = [make_token() for _ in range(20)]
    reuse_in_batch = dataclasses.replace(batch[5], token_hash=b"\x01" + bytes(32))  # same cti as batch[5]
    reuse_committed = dataclasses.replace(committed, cti=b"fresh")  # same token hash as a committed token
    submitted = [*batch[:10], reuse_in_batch, *batch[10:15], reuse_committed, *batch[15:]]
    with writer_held(storage, monkeypatch):
        pending = [storage.submit_record(token) for token in submitted]
    outcomes = [f.exception(timeout=WAIT) for f in pending]
    failed = [token for token, exc in zip(submitted, outcomes, strict=True) if exc is not None]
    assert failed == [reuse_in_batch, reuse_committed]
    assert all(isinstance(exc, DuplicateError) for exc in outcomes if exc is not None)
    assert storage.commit_stats.largest_batch == len(submitted)  # they were one batch
    for token in batch:
        assert storage.get_by_cti(token.cti) == token
    assert storage.count() == 1 + 1 + len(batch)


def test_a_generated_pop_kid_twice_in_one_batch_fails_only_the_second(
    sql_url: str, master_key: MasterKey, open_sql: OpenSql, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = open_sql(sql_url, master_key)
    generated = [make_token(pop_kid=b"kid-%d" % i, pop_key_generated=True) for i in range(5)]
    twin = make_token(pop_kid=b"kid-2", pop_key_generated=True)  # another token, the same generated key id
    rebound = make_token(pop_kid=b"kid-2")  # an update of access rights naming that key
    submitted = [*generated, twin, rebound]
    with writer_held(storage, monkeypatch):
        pending = [storage.submit_record(token) for token in submitted]
    outcomes = [f.exception(timeout=WAIT) for f in pending]
    assert [type(exc) for exc in outcomes] == [type(None)] * 5 + [DuplicateError, type(None)]
    assert storage.commit_stats.largest_batch == len(submitted)
    assert storage.find_by_pop_kid("client-1", "lock-1", b"kid-2") == rebound


def queued_callers(storage: SqlStorage, monkeypatch: pytest.MonkeyPatch, count: int) -> threading.Event:
    """An event set once ``count`` rows have been queued for the writer thread (thread callers or futures)."""
    committer = storage._committer  # noqa: SLF001 - a seam: when callers are queued
    original = committer._enqueue  # noqa: SLF001
    queued, seen = threading.Event(), itertools.count(1)

    def counting(row: Any, sink: Any) -> None:
        original(row, sink)
        if next(seen) == count:
            queued.set()

    monkeypatch.setattr(committer, "_enqueue", counting)
    return queued


def recording_threads(
    storage: SqlStorage, tokens: list[IssuedToken]
) -> tuple[list[threading.Thread], dict[int, BaseException | None]]:
    """One (unstarted) thread per token calling ``record``, and where each puts its outcome (None or its
    DuplicateError); thread ``i`` is named ``caller-i``."""
    outcomes: dict[int, BaseException | None] = {}

    def call(i: int) -> None:
        try:
            storage.record(tokens[i])
            outcomes[i] = None
        except DuplicateError as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=call, args=(i,), name=f"caller-{i}") for i in range(len(tokens))]
    return threads, outcomes


def test_threads_waiting_in_one_batch_each_get_their_own_outcome(
    sql_url: str, master_key: MasterKey, open_sql: OpenSql, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer wakes a batch's first waiting thread and each wakes the next (GroupCommitter._wait_queued)."""
    storage = open_sql(sql_url, master_key)
    tokens = [make_token() for _ in range(12)]
    tokens[7] = dataclasses.replace(tokens[7], cti=tokens[3].cti)  # a duplicate inside the batch: fails alone
    threads, outcomes = recording_threads(storage, tokens)
    with writer_held(storage, monkeypatch) as release:
        queued = queued_callers(storage, monkeypatch, len(tokens) + 1)
        for t in threads:
            t.start()
        beside = storage.submit_record(make_token())  # a future in the same batch
        assert queued.wait(WAIT)
        release.set()
        for t in threads:
            t.join(WAIT)
        assert beside.result(timeout=WAIT) is None
    assert not any(t.is_alive() for t in threads)
    assert storage.commit_stats.largest_batch == len(tokens) + 1  # they were one batch
    failed = sorted(i for i, exc in outcomes.items() if exc is not None)
    assert len(outcomes) == len(tokens) and len(failed) == 1 and failed[0] in (3, 7)  # whichever queued second
    assert storage.count() == 1 + len(tokens)  # the held first token, 11 of the 12, the future's


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_threads_waiting_when_the_writer_dies_are_all_woken(
    sql_url: str, master_key: MasterKey, open_sql: OpenSql, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = open_sql(sql_url, master_key)
    stopped: list[BaseException] = []

    def call() -> None:
        try:
            storage.record(make_token())
        except WriterStopped as exc:
            stopped.append(exc)

    def fatal(rows: Any) -> Any:
        raise SystemExit("the writer thread dies")  # not an Exception: escapes the per-batch handling

    threads = [threading.Thread(target=call) for _ in range(5)]
    with writer_held(storage, monkeypatch) as release:  # the first batch is written; the next one kills the writer
        queued = queued_callers(storage, monkeypatch, len(threads))
        for t in threads:
            t.start()
        assert queued.wait(WAIT)
        monkeypatch.setattr(storage._committer, "_write_batch", fatal)  # noqa: SLF001
        release.set()
        for t in threads:
            t.join(WAIT)
    assert not any(t.is_alive() for t in threads) and len(stopped) == 5


def test_a_failing_write_fails_its_callers_and_the_writer_carries_on(
    sql_url: str, master_key: MasterKey, open_sql: OpenSql, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = open_sql(sql_url, master_key)
    committer = storage._committer  # noqa: SLF001

    def broken(rows: Any) -> Any:
        raise OSError("disk on fire")

    monkeypatch.setattr(committer, "_write_batch", broken)
    with pytest.raises(OSError, match="disk on fire"):
        storage.record(make_token())  # written by the caller itself: nothing else was queued
    queued = [storage.submit_record(make_token()) for _ in range(3)]  # written by the writer thread
    assert all(isinstance(f.exception(timeout=WAIT), OSError) for f in queued)
    monkeypatch.undo()
    tokens = [make_token() for _ in range(2)]
    storage.record(tokens[0])
    storage.submit_record(tokens[1]).result(timeout=WAIT)
    assert [storage.get_by_cti(t.cti) for t in tokens] == tokens
    assert storage.count() == 2


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_writer_thread_does_not_hang_callers(
    sql_url: str, master_key: MasterKey, open_sql: OpenSql, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = open_sql(sql_url, master_key)

    def fatal(rows: Any) -> Any:
        raise SystemExit("the writer thread dies")  # not an Exception: escapes the per-batch handling

    monkeypatch.setattr(storage._committer, "_write_batch", fatal)  # noqa: SLF001
    assert isinstance(storage.submit_record(make_token()).exception(timeout=WAIT), WriterStopped)
    with pytest.raises(WriterStopped):
        storage.record(make_token())
    with pytest.raises(WriterStopped):
        storage.submit_record(make_token())


@contextmanager
def own_write_held(storage: SqlStorage, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int]]]:
    """Hold a lone caller's own write (GroupCommitter.write, nothing queued) until the block ends, so that threads
    calling meanwhile queue behind it; yields the (thread name, rows) of every batch written afterwards."""
    committer = storage._committer  # noqa: SLF001 - a seam for a deterministic batch
    original = committer._write_batch  # noqa: SLF001
    release, entered = threading.Event(), threading.Event()
    batches: list[tuple[str, int]] = []

    def held(rows: Any) -> Any:
        if not entered.is_set():
            entered.set()
            assert release.wait(WAIT)
        else:
            batches.append((threading.current_thread().name, len(rows)))
        return original(rows)

    monkeypatch.setattr(committer, "_write_batch", held)
    lone = threading.Thread(target=storage.record, args=(make_token(),))
    lone.start()
    assert entered.wait(WAIT)
    try:
        yield batches
    finally:
        release.set()
        lone.join(WAIT)
        assert not lone.is_alive()


def test_threads_queued_behind_a_callers_own_write_are_written_by_one_of_them(
    sql_url: str, master_key: MasterKey, open_sql: OpenSql, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller that wrote hands the queue to the first thread in it (GroupCommitter._hand_on), which writes the
    whole queue and wakes the others: the writer thread is not involved."""
    storage = open_sql(sql_url, master_key)
    tokens = [make_token() for _ in range(10)]
    tokens[6] = dataclasses.replace(tokens[6], cti=tokens[2].cti)  # a duplicate inside the batch: fails alone
    threads, outcomes = recording_threads(storage, tokens)
    with own_write_held(storage, monkeypatch) as batches:
        queued = queued_callers(storage, monkeypatch, len(tokens))
        for t in threads:
            t.start()
        assert queued.wait(WAIT)
    for t in threads:
        t.join(WAIT)
    assert not any(t.is_alive() for t in threads)
    assert len(batches) == 1 and batches[0][0].startswith("caller-") and batches[0][1] == len(tokens)
    failed = sorted(i for i, exc in outcomes.items() if exc is not None)
    assert len(outcomes) == len(tokens) and len(failed) == 1 and failed[0] in (2, 6)  # whichever queued second
    assert storage.count() == 1 + len(tokens) - 1
    assert storage.commit_stats.largest_batch == len(tokens)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_thread_torn_down_while_writing_the_queue_fails_its_batch_and_hands_on(
    sql_url: str, master_key: MasterKey, open_sql: OpenSql, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = open_sql(sql_url, master_key)
    results: dict[int, str] = {}

    def call(i: int) -> None:
        try:
            storage.record(make_token())
            results[i] = "written"
        except WriterStopped:
            results[i] = "stopped"

    def fatal(rows: Any) -> Any:
        raise SystemExit("the thread is torn down")  # not an Exception: escapes the per-batch handling

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    with own_write_held(storage, monkeypatch):
        queued = queued_callers(storage, monkeypatch, len(threads))
        for t in threads:
            t.start()
        assert queued.wait(WAIT)
        monkeypatch.setattr(storage._committer, "_write_batch", fatal)  # noqa: SLF001
    for t in threads:
        t.join(WAIT)
    assert not any(t.is_alive() for t in threads)
    # The leader dies with SystemExit (no entry); the other three of its batch are told the writer stopped.
    assert sorted(results.values()) == ["stopped"] * 3
    monkeypatch.undo()
    token = make_token()
    storage.record(token)  # the write was handed on: the committer is not stuck busy
    assert storage.get_by_cti(token.cti) == token


def test_close_writes_what_is_queued(
    sql_url: str, master_key: MasterKey, open_sql: OpenSql, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = open_sql(sql_url, master_key)
    tokens = [make_token() for _ in range(10)]
    with writer_held(storage, monkeypatch) as release:
        pending = [storage.submit_record(token) for token in tokens]
        closer = threading.Thread(target=storage.close)
        closer.start()
        release.set()
        closer.join(WAIT)
        assert not closer.is_alive()
    assert all(f.done() and f.exception() is None for f in pending)
    with pytest.raises(StorageClosedError):
        storage.record(make_token())
    again = open_sql(sql_url, master_key, create=False)
    assert again.count() == 1 + len(tokens)


def test_record_without_group_commit(sql_url: str, master_key: MasterKey) -> None:
    upgrade(sql_url)
    storage = SqlStorage(make_engine(sql_url), master_key, group_commit=False)
    try:
        token = make_token()
        storage.record(token)
        with pytest.raises(DuplicateError):
            storage.record(token)
        assert storage.get_by_cti(token.cti) == token
        assert storage.commit_stats.batches == 0  # the writer thread was never involved
    finally:
        storage.close()


def test_token_columns_are_the_table_columns() -> None:
    assert set(TOKEN_COLUMNS) == {c.name for c in issued_tokens.c} - {"seq"}
    assert len(TOKEN_COLUMNS) == len(set(TOKEN_COLUMNS))


def test_bulk_insert_tokens(sql_url: str, master_key: MasterKey, open_sql: OpenSql) -> None:
    storage = open_sql(sql_url, master_key)
    tokens = [make_token(iat=T0 + i) for i in range(2500)]
    seen: list[int] = []
    assert storage.bulk_insert_tokens(iter(tokens), batch=1000, progress=seen.append) == 2500
    assert seen == [1000, 2000, 2500]
    assert storage.count() == 2500
    assert storage.get_by_hash(tokens[1234].token_hash) == tokens[1234]
    assert list(storage.list_tokens(limit=1)) == [tokens[-1]]
    with pytest.raises(DuplicateError):
        storage.bulk_insert_tokens([make_token(), tokens[0]])
    assert storage.count() == 2500  # the failed batch left nothing behind


def test_the_token_writer_checkpoints_the_wal_in_the_background(
    tmp_path: Path, master_key: MasterKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite: the token writer's connection leaves checkpoints to a background thread (token_writer docstring), which
    runs one while tokens are being written, outside the write lock."""
    from as_server.storage.sqlalchemy import token_writer

    monkeypatch.setattr(token_writer, "CHECKPOINT_INTERVAL", 0.02)
    url = f"sqlite:///{tmp_path / 'ostiary.db'}"
    upgrade(url)
    storage = SqlStorage(make_engine(url), master_key)
    writer = storage._writer
    checkpointed = threading.Event()
    original = writer.checkpoint

    def counting() -> None:
        original()
        checkpointed.set()

    monkeypatch.setattr(writer, "checkpoint", counting)
    try:
        storage.record(make_token())
        kept = writer._proxied.driver_connection
        assert kept.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        assert checkpointed.wait(WAIT), "no background checkpoint"
        assert storage.get_by_cti(make_token().cti) is None  # reads still work beside it
    finally:
        storage.close()
    assert not writer._checkpointer.is_alive()  # type: ignore[union-attr]
