"""Operational keys of bootstrapped locks and their LwM2M registrations (issue #7, docs/bootstrap-design.md):
:class:`~as_server.bootstrap.operational.OperationalCredentials` and the storage behind it on every backend
(memory, SQLite, PostgreSQL), then SQL specifics (migration 0007 over existing data, sealing, other processes)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from ace_core.keys import CoseKey
from ace_core.registry import CoseAlgorithm
from as_server.bootstrap.operational import (
    DOOR_LOCK_RESOURCES,
    IdentityTooLong,
    LockRevoked,
    OperationalCredentials,
    RsTemplate,
    UnknownLock,
    new_location,
    parse_operational_identity,
    register,
)
from as_server.models import Lwm2mRegistration, OperationalKey, ResourceServer, TokenStatus
from as_server.sealing import MasterKey, SealingError
from as_server.storage.base import AuditQuery, DuplicateError, NotFoundError, Storage
from as_server.storage.registry_cache import REGISTRY_MAX_AGE
from as_server.storage.sqlalchemy import current_revision, head_revision
from as_server.storage.sqlalchemy.engine import make_engine
from as_server.storage.sqlalchemy.migrate import alembic_config
from tests.as_server.test_storage import OpenSql, make_token, stored_bytes

T0 = 1_750_000_000
DAY = 86400
ROTATION = 30 * DAY
LOCK = "L1-00000042"
#: Long enough for another storage object's registry cache to re-read the registry version.
CACHE_WAIT = REGISTRY_MAX_AGE * 1.5


@pytest.fixture
def creds(storage: Storage) -> OperationalCredentials:
    return OperationalCredentials(storage, rotation_age=ROTATION, template=RsTemplate(max_lifetime=600))


# --- identities ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        (b"L1-00000042#1", ("L1-00000042", 1)),
        (b"a#b#12", ("a#b", 12)),
        (b"x#1234567890", ("x", 1234567890)),
        (b"L1#0", None),
        (b"L1#01", None),
        (b"L1#-1", None),
        (b"L1#+1", None),
        (b"L1# 1", None),
        (b"L1#1 ", None),
        (b"L1#", None),
        (b"#1", None),
        (b"L1", None),
        (b"", None),
        (b"bs-abcdefghijklmnop", None),
        (b"L1#\xd9\xa1", None),  # ARABIC-INDIC DIGIT ONE: a digit to str.isdigit, not to us
        (b"\xff#1", None),
        (b"a" * 31 + b"#1", None),  # 33 bytes: longer than any identity the AS makes
    ],
)
def test_parse_operational_identity(identity: bytes, expected: tuple[str, int] | None) -> None:
    assert parse_operational_identity(identity) == expected


def test_identity_and_key_stay_out_of_repr() -> None:
    key = OperationalKey(audience=LOCK, generation=3, key=b"k" * 16, created_at=T0)
    assert key.identity == b"L1-00000042#3"
    assert "kkkk" not in repr(key) and "#3" not in repr(key)


# --- delivery, confirmation, retirement ----------------------------------------------------------------------------


def test_first_delivery_creates_the_resource_server_and_generation_1(
    storage: Storage, creds: OperationalCredentials
) -> None:
    key = creds.key_for_delivery(LOCK, now=T0)
    assert (key.generation, key.created_at, key.delivered_at, key.retire_at) == (1, T0, None, None)
    assert key.key is not None and len(key.key) == 16
    rs = storage.get_resource_server(LOCK)
    assert rs is not None and rs.enabled and rs.max_lifetime == 600 and rs.resources == DOOR_LOCK_RESOURCES
    assert rs.shared_key == CoseKey.symmetric(key.key, alg=CoseAlgorithm.AES_CCM_16_64_128)
    assert storage.operational_keys(LOCK) == [key]
    entries = storage.list_audit(AuditQuery(audience=LOCK, action="resource_server"))
    assert [e.action for e in entries] == ["resource_server.key_created"]


def test_delivery_is_idempotent_until_rotation_is_due(storage: Storage, creds: OperationalCredentials) -> None:
    first = creds.key_for_delivery(LOCK, now=T0)
    creds.confirm_delivery(LOCK, 1, now=T0 + 5)
    again = creds.key_for_delivery(LOCK, now=T0 + ROTATION - 1)
    assert again.generation == 1 and again.key == first.key and again.delivered_at == T0 + 5
    due = creds.key_for_delivery(LOCK, now=T0 + ROTATION)
    assert due.generation == 2 and due.key != first.key
    assert creds.key_for_delivery(LOCK, now=T0 + ROTATION + 10) == due  # not delivered yet: the same one


def test_confirmation_switches_the_token_key_and_retires_older_generations(
    storage: Storage, creds: OperationalCredentials
) -> None:
    creds.key_for_delivery(LOCK, now=T0)
    creds.confirm_delivery(LOCK, 1, now=T0 + 1)
    second = creds.rotate(LOCK, now=T0 + 100)
    assert second.generation == 2 and second.delivered_at is None
    rs = storage.get_resource_server(LOCK)
    assert rs is not None and rs.shared_key is not None and rs.shared_key.k != second.key  # not before delivery
    assert creds.key_for_delivery(LOCK, now=T0 + 200) == second
    registry = storage.registry_version()
    creds.confirm_delivery(LOCK, 2, now=T0 + 300)
    assert storage.registry_version() != registry  # other processes' caches follow
    rs = storage.get_resource_server(LOCK)
    assert rs is not None and rs.shared_key is not None and rs.shared_key.k == second.key
    old, new = storage.operational_keys(LOCK)
    assert old.retire_at == T0 + 300 + 600  # overlap: the RS's max_lifetime
    assert new.delivered_at == T0 + 300 and new.retire_at is None
    # Idempotent: a second confirmation (a lost answer, a periodic pull) changes nothing, not even the version.
    registry = storage.registry_version()
    creds.confirm_delivery(LOCK, 2, now=T0 + 400)
    assert storage.operational_keys(LOCK) == [old, new]
    assert storage.registry_version() == registry
    delivered = storage.list_audit(AuditQuery(audience=LOCK, action="resource_server.key_delivered"))
    assert len(delivered) == 2


def test_a_late_confirmation_of_an_older_generation_does_not_switch_back(
    storage: Storage, creds: OperationalCredentials
) -> None:
    creds.key_for_delivery(LOCK, now=T0)
    second = creds.rotate(LOCK, now=T0 + 1)
    creds.confirm_delivery(LOCK, 2, now=T0 + 2)
    creds.confirm_delivery(LOCK, 1, now=T0 + 3)  # an old bootstrap's answer, arriving late
    rs = storage.get_resource_server(LOCK)
    assert rs is not None and rs.shared_key is not None and rs.shared_key.k == second.key
    first = storage.operational_keys(LOCK)[0]
    assert first.delivered_at == T0 + 3 and first.retire_at == T0 + 2 + 600


def test_explicit_overlap_and_unknown_generation(storage: Storage) -> None:
    creds = OperationalCredentials(storage, rotation_age=ROTATION, overlap=60)
    creds.key_for_delivery(LOCK, now=T0)
    creds.rotate(LOCK, now=T0)
    creds.confirm_delivery(LOCK, 2, now=T0 + 10)
    assert storage.operational_keys(LOCK)[0].retire_at == T0 + 70
    with pytest.raises(UnknownLock):
        creds.confirm_delivery(LOCK, 9, now=T0)
    with pytest.raises(NotFoundError):
        creds.confirm_delivery("nobody", 1, now=T0)


def test_retirement_erases_key_material(storage: Storage, creds: OperationalCredentials) -> None:
    first = creds.key_for_delivery(LOCK, now=T0)
    creds.rotate(LOCK, now=T0)
    creds.confirm_delivery(LOCK, 2, now=T0 + 10)
    retire_at = T0 + 10 + 600
    assert creds.psk_for_identity(first.identity, now=retire_at - 1) == storage.operational_keys(LOCK)[0]
    assert creds.psk_for_identity(first.identity, now=retire_at) is None  # refused from retire_at on
    assert creds.retire_expired(now=retire_at - 1) == 0
    assert creds.retire_expired(now=retire_at) == 1
    assert creds.retire_expired(now=retire_at) == 0
    old, new = creds.keys(LOCK)
    assert old.key is None and old.retire_at == retire_at and new.key is not None
    assert creds.psk_for_identity(first.identity, now=T0) is None  # erased: even at an earlier time
    assert [e.detail for e in storage.list_audit(AuditQuery(action="resource_server.key_retired"))] == [
        "generation 1 erased"
    ]


def test_psk_for_identity(storage: Storage, creds: OperationalCredentials) -> None:
    key = creds.key_for_delivery(LOCK, now=T0)
    assert creds.psk_for_identity(key.identity, now=T0) == key
    for identity in (b"L1-00000042#2", b"L1-00000042#01", b"L1-00000042", b"other#1", b"", b"\xff\xfe#1"):
        assert creds.psk_for_identity(identity, now=T0) is None, identity
    # Cached, and the cache follows changes made through the storage.
    assert creds.psk_for_identity(key.identity, now=T0) == key
    creds.revoke(LOCK, now=T0 + 1)
    assert creds.psk_for_identity(key.identity, now=T0 + 1) is None


def test_identity_longer_than_32_bytes_is_refused(creds: OperationalCredentials) -> None:
    creds.key_for_delivery("x" * 30, now=T0)  # "x...x#1": 32 bytes
    with pytest.raises(IdentityTooLong):
        creds.key_for_delivery("x" * 31, now=T0)
    with pytest.raises(ValueError, match="32"):
        creds.key_for_delivery("é" * 16, now=T0)  # 32 bytes of UTF-8 before "#1"


# --- rotation and revocation ----------------------------------------------------------------------------------------


def test_rotation_needs_a_known_lock(storage: Storage, creds: OperationalCredentials) -> None:
    with pytest.raises(UnknownLock):
        creds.rotate(LOCK, now=T0)
    with pytest.raises(NotFoundError):
        creds.revoke(LOCK, now=T0)
    # A resource server registered by hand (ostiary as rs add) gets its first generation by a rotation too.
    storage.add_resource_server(ResourceServer(audience="manual", created_at=T0))
    assert creds.rotate("manual", now=T0).generation == 1
    assert creds.rotate("manual", now=T0).generation == 2


def test_due_for_rotation(storage: Storage, creds: OperationalCredentials) -> None:
    creds.key_for_delivery("a", now=T0)
    creds.key_for_delivery("b", now=T0 + DAY)
    creds.key_for_delivery("c", now=T0)
    creds.rotate("c", now=T0 + DAY)
    assert creds.due_for_rotation(now=T0 + ROTATION) == ["a"]
    assert creds.due_for_rotation(now=T0 + ROTATION + DAY) == ["a", "b", "c"]
    creds.revoke("a", now=T0)
    assert creds.due_for_rotation(now=T0 + ROTATION + DAY) == ["b", "c"]


def test_revocation_erases_keys_disables_the_lock_revokes_its_tokens_and_drops_its_registration(
    storage: Storage, creds: OperationalCredentials
) -> None:
    first = creds.key_for_delivery(LOCK, now=T0)
    creds.confirm_delivery(LOCK, 1, now=T0)
    creds.rotate(LOCK, now=T0 + 1)
    live = make_token(audience=LOCK, iat=T0)
    expired = make_token(audience=LOCK, iat=T0 - 7200)
    other = make_token(audience="other", iat=T0)
    for token in (live, expired, other):
        storage.record(token)
    storage.put_registration(registration())
    storage.put_registration(registration("22222222", audience="other"))
    assert creds.revoke(LOCK, now=T0 + 10, actor="cli:test") == 1
    # the registration made with the erased identity is dropped (the lock registers again after its bootstrap)
    assert storage.registration_of(LOCK) is None and storage.get_registration("0a1b2c3d") is None
    assert storage.registration_of("other") is not None
    rs = storage.get_resource_server(LOCK)
    assert rs is not None and not rs.enabled and rs.shared_key is None
    assert all(k.key is None and k.retire_at == T0 + 10 for k in creds.keys(LOCK))
    assert creds.psk_for_identity(first.identity, now=T0 + 10) is None
    assert [storage.get_by_cti(t.cti).status for t in (live, expired, other)] == [  # type: ignore[union-attr]
        TokenStatus.REVOKED,
        TokenStatus.ACTIVE,
        TokenStatus.ACTIVE,
    ]
    (entry,) = storage.list_audit(AuditQuery(action="resource_server.revoked"))
    assert entry.actor == "cli:test" and entry.audience == LOCK and "1 tokens revoked" in entry.detail
    with pytest.raises(LockRevoked):
        creds.rotate(LOCK, now=T0 + 20)
    assert creds.due_for_rotation(now=T0 + 10 * ROTATION) == []
    # Bootstrapping again (a new owner, or the same lock after a release): a new generation, the lock enabled.
    again = creds.key_for_delivery(LOCK, now=T0 + 30)
    assert again.generation == 3
    rs = storage.get_resource_server(LOCK)
    assert rs is not None and rs.enabled and rs.shared_key is not None and rs.shared_key.k == again.key
    creds.confirm_delivery(LOCK, 3, now=T0 + 40)
    assert [k.retire_at for k in creds.keys(LOCK)] == [T0 + 10, T0 + 10, None]  # earlier retirements stay


def test_a_concurrent_creator_of_the_same_generation_wins_and_the_loser_reads_again(storage: Storage) -> None:
    key = OperationalKey(audience=LOCK, generation=1, key=b"\x01" * 16, created_at=T0)
    storage.add_operational_key(key, actor="system")
    with pytest.raises(DuplicateError):
        storage.add_operational_key(dataclasses.replace(key, key=b"\x02" * 16), actor="system")
    with pytest.raises(ValueError):
        storage.add_operational_key(dataclasses.replace(key, generation=2, key=None), actor="system")
    assert storage.operational_keys(LOCK) == [key]

    class Racing:
        """Storage whose first add loses to another process that created the same generation."""

        def __init__(self) -> None:
            self.raced = False

        def __getattr__(self, name: str) -> object:
            return getattr(storage, name)

        def add_operational_key(self, new: OperationalKey, **kwargs: Any) -> None:
            if not self.raced:
                self.raced = True
                storage.add_operational_key(dataclasses.replace(new, key=b"\x03" * 16), **kwargs)
            storage.add_operational_key(new, **kwargs)

    racing = OperationalCredentials(Racing(), rotation_age=ROTATION)  # type: ignore[arg-type]
    won = racing.key_for_delivery("race", now=T0)
    assert won.key == b"\x03" * 16 and won.generation == 1


# --- registrations ---------------------------------------------------------------------------------------------------


def registration(location: str = "0a1b2c3d", audience: str = LOCK, **changes: object) -> Lwm2mRegistration:
    fields: dict[str, object] = {
        "location": location,
        "audience": audience,
        "endpoint": "urn:dev:ops:ostiary-L1-00000042",
        "lifetime": 3600,
        "binding": "U",
        "lwm2m_version": "1.1",
        "object_links": "</1/1>,</3/0>",
        "source": "127.0.0.1:56830",
        "registered_at": T0,
        "last_contact": T0,
    }
    fields.update(changes)
    return Lwm2mRegistration(**fields)  # type: ignore[arg-type]


def test_registration_crud(storage: Storage) -> None:
    first = registration()
    assert storage.put_registration(first) is None
    assert storage.get_registration("0a1b2c3d") == first == storage.registration_of(LOCK)
    updated = storage.update_registration("0a1b2c3d", now=T0 + 60, lifetime=120, source="127.0.0.1:1")
    assert updated == dataclasses.replace(first, last_contact=T0 + 60, lifetime=120, source="127.0.0.1:1")
    assert storage.get_registration("0a1b2c3d") == updated
    assert updated is not None and updated.expires_at == T0 + 180
    assert storage.update_registration("ffffffff", now=T0) is None
    with pytest.raises(ValueError):
        storage.update_registration("0a1b2c3d", now=T0, object_links="x" * 5000)
    assert storage.get_registration("0a1b2c3d") == updated
    # A new Register replaces the old one.
    second = registration("11111111", registered_at=T0 + 100, last_contact=T0 + 100)
    assert storage.put_registration(second) == updated
    assert storage.get_registration("0a1b2c3d") is None and storage.registration_of(LOCK) == second
    other = registration("22222222", audience="other")
    storage.put_registration(other)
    assert storage.list_registrations() == [second, other]
    with pytest.raises(DuplicateError):
        storage.put_registration(registration("22222222", audience="third"))
    assert storage.delete_registration("11111111") is True
    assert storage.delete_registration("11111111") is False
    assert storage.registration_of(LOCK) is None and storage.list_registrations() == [other]


def test_registrations_are_not_registry_writes(storage: Storage) -> None:
    version = storage.registry_version()
    storage.put_registration(registration())
    storage.update_registration("0a1b2c3d", now=T0 + 1)
    storage.delete_registration("0a1b2c3d")
    assert storage.registry_version() == version


def test_register_draws_a_free_location(storage: Storage) -> None:
    draws = iter([b"\x00\x00\x00\x01", b"\x00\x00\x00\x01", b"\x00\x00\x00\x02"])
    first = register(storage, audience="a", endpoint="ep-a", lifetime=60, now=T0, random=lambda n: next(draws))
    second = register(storage, audience="b", endpoint="ep-b", lifetime=60, now=T0, random=lambda n: next(draws))
    assert (first.location, second.location) == ("00000001", "00000002")
    assert len(new_location()) == 8


def test_registration_bounds() -> None:
    with pytest.raises(ValueError):
        registration(object_links="x" * 2049)
    with pytest.raises(ValueError):
        registration(lifetime=-1)


# --- SQL specifics --------------------------------------------------------------------------------------------------


def test_upgrade_from_0006_keeps_existing_data(sql_url: str, master_key: MasterKey, open_sql: OpenSql) -> None:
    """Revision 0007 adds two tables and changes nothing else: resource servers and tokens stay as they were."""
    from as_server.storage.sqlalchemy.rows import resource_server_to_row
    from tests.as_server.test_storage import _insert, full_resource_server

    engine = make_engine(sql_url, create_file=True)
    rs = full_resource_server(LOCK)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0006")
        with engine.begin() as conn:
            _insert(conn, "resource_servers", resource_server_to_row(rs, master_key))
            assert not sa.inspect(conn).has_table("rs_keys")
    finally:
        engine.dispose()
    storage = open_sql(sql_url, master_key)  # upgrades to head
    assert current_revision(sql_url) == head_revision() == "0007"
    assert storage.get_resource_server(LOCK) == rs
    assert storage.operational_keys(LOCK) == [] and storage.registration_of(LOCK) is None
    creds = OperationalCredentials(storage, rotation_age=ROTATION)
    key = creds.rotate(LOCK, now=T0)
    creds.confirm_delivery(LOCK, key.generation, now=T0)
    updated = storage.get_resource_server(LOCK)
    assert updated == dataclasses.replace(rs, shared_key=key.cose_key())


def test_operational_keys_are_sealed_at_rest(sql_url: str, master_key: MasterKey, open_sql: OpenSql) -> None:
    storage = open_sql(sql_url, master_key)
    creds = OperationalCredentials(storage, rotation_age=ROTATION)
    key = creds.key_for_delivery(LOCK, now=T0)
    assert key.key is not None
    raw = stored_bytes(sql_url, storage)
    assert key.key not in raw and key.key.hex().encode() not in raw
    # A sealed blob copied to another generation does not open there (bound to the identity).
    creds.rotate(LOCK, now=T0)
    engine = sa.create_engine(sql_url)
    try:
        with engine.begin() as conn:
            blob = conn.execute(sa.text("SELECT key_sealed FROM rs_keys WHERE generation = 1")).scalar()
            conn.execute(sa.text("UPDATE rs_keys SET key_sealed = :b WHERE generation = 2"), {"b": blob})
    finally:
        engine.dispose()
    with pytest.raises(SealingError, match="rs_keys.key_sealed"):
        storage.operational_keys(LOCK)


def test_another_process_sees_a_confirmation_within_the_bound(
    sql_url: str, master_key: MasterKey, open_sql: OpenSql, tmp_path: Path
) -> None:
    """The token endpoint of another process (its own storage object and registry cache) switches keys."""
    bootstrap, token_side = open_sql(sql_url, master_key), open_sql(sql_url, master_key, create=False)
    creds = OperationalCredentials(bootstrap, rotation_age=ROTATION)
    first = creds.key_for_delivery(LOCK, now=T0)
    creds.confirm_delivery(LOCK, 1, now=T0)
    cached = token_side.get_resource_server(LOCK)
    assert cached is not None and cached.shared_key is not None and cached.shared_key.k == first.key
    assert token_side.operational_key(LOCK, 1) == bootstrap.operational_key(LOCK, 1)
    second = creds.rotate(LOCK, now=T0 + 1)
    creds.confirm_delivery(LOCK, 2, now=T0 + 2)
    time.sleep(CACHE_WAIT)
    seen = token_side.get_resource_server(LOCK)
    assert seen is not None and seen.shared_key is not None and seen.shared_key.k == second.key
    creds.revoke(LOCK, now=T0 + 3)
    time.sleep(CACHE_WAIT)
    assert token_side.operational_key(LOCK, 2) == dataclasses.replace(
        second, key=None, delivered_at=T0 + 2, retire_at=T0 + 3
    )
