"""Local users and groups (issue #5, "Users" item 1): Argon2id password hashes (RFC 9106), the identity provider,
and the storage on every backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from as_server.identity import MAX_PASSWORD_LENGTH, AuthenticationFailed, LocalIdentityProvider, PasswordHasher
from as_server.models import Group, TokenStatus, User, UserRole
from as_server.sealing import MasterKey
from as_server.storage.base import AuditQuery, DuplicateError, NotFoundError, Storage
from tests.as_server.consent_fixtures import CHEAP_HASHER, NOW
from tests.as_server.test_storage import OpenSql, make_token

PASSWORD = "correct horse battery staple"


def test_default_parameters_are_rfc_9106_argon2id() -> None:
    """RFC 9106 §4, second recommended option: Argon2id, t=3, m=64 MiB, p=4; a 16-byte salt."""
    stored = PasswordHasher().hash(PASSWORD)
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert PASSWORD not in stored
    assert PasswordHasher().verify(stored, PASSWORD)


def test_hashes_are_salted_and_verify() -> None:
    first, second = CHEAP_HASHER.hash(PASSWORD), CHEAP_HASHER.hash(PASSWORD)
    assert first != second  # a random salt each time
    assert CHEAP_HASHER.verify(first, PASSWORD) and CHEAP_HASHER.verify(second, PASSWORD)
    assert not CHEAP_HASHER.verify(first, PASSWORD + " ")
    assert not CHEAP_HASHER.verify(first, "")
    assert not CHEAP_HASHER.verify("not a hash", PASSWORD)
    assert not CHEAP_HASHER.verify(first, "x" * (MAX_PASSWORD_LENGTH + 1))
    assert CHEAP_HASHER.needs_rehash(PasswordHasher().hash("x")) and not CHEAP_HASHER.needs_rehash(first)
    for bad in ("", "x" * (MAX_PASSWORD_LENGTH + 1)):
        with pytest.raises(ValueError):
            CHEAP_HASHER.hash(bad)


def _user(name: str = "frank", **changes: object) -> User:
    fields: dict[str, object] = {
        "name": name,
        "password_hash": CHEAP_HASHER.hash(PASSWORD),
        "display_name": "Frank F.",
        "role": UserRole.MANAGER,
        "created_at": NOW,
    }
    fields.update(changes)
    return User(**fields)  # type: ignore[arg-type]


def test_users_and_groups_roundtrip(storage: Storage) -> None:
    frank = _user()
    storage.add_user(frank, actor="cli:test", now=NOW)
    storage.add_user(_user("alice", role=UserRole.USER, enabled=False, password_hash=None), actor="cli:test", now=NOW)
    assert storage.get_user("frank") == frank
    assert [u.name for u in storage.list_users()] == ["alice", "frank"]
    assert storage.get_user("nobody") is None
    with pytest.raises(DuplicateError):
        storage.add_user(_user(), actor="cli:test", now=NOW)
    storage.add_group(Group(name="facility", description="Facility", created_at=NOW), actor="cli:test", now=NOW)
    storage.add_group(Group(name="staff", created_at=NOW), actor="cli:test", now=NOW)
    with pytest.raises(DuplicateError):
        storage.add_group(Group(name="staff"), actor="cli:test", now=NOW)
    storage.add_member("facility", "frank", actor="cli:test", now=NOW)
    storage.add_member("staff", "frank", actor="cli:test", now=NOW)
    storage.add_member("staff", "alice", actor="cli:test", now=NOW)
    with pytest.raises(DuplicateError):
        storage.add_member("staff", "alice", actor="cli:test", now=NOW)
    with pytest.raises(NotFoundError):
        storage.add_member("staff", "nobody", actor="cli:test", now=NOW)
    with pytest.raises(NotFoundError):
        storage.add_member("nogroup", "frank", actor="cli:test", now=NOW)
    assert storage.groups_of("frank") == {"facility", "staff"}
    assert storage.members_of("staff") == ["alice", "frank"]
    assert [g.name for g in storage.list_groups()] == ["facility", "staff"]
    assert storage.get_group("facility") == Group(name="facility", description="Facility", created_at=NOW)
    storage.remove_member("staff", "frank", actor="cli:test", now=NOW)
    with pytest.raises(NotFoundError):
        storage.remove_member("staff", "frank", actor="cli:test", now=NOW)
    assert storage.groups_of("frank") == {"facility"}
    new_hash = CHEAP_HASHER.hash("new password")
    storage.set_password("frank", new_hash, actor="cli:test", now=NOW)
    assert storage.get_user("frank").password_hash == new_hash  # type: ignore[union-attr]
    with pytest.raises(NotFoundError):
        storage.set_password("nobody", new_hash, actor="cli:test", now=NOW)
    actions = [e.action for e in reversed(storage.list_audit(AuditQuery(actor="cli:test")))]
    assert actions == [
        "user.created",
        "user.created",
        "group.created",
        "group.created",
        "group.member_added",
        "group.member_added",
        "group.member_added",
        "group.member_removed",
        "user.password_changed",
    ]


def test_authentication(storage: Storage) -> None:
    identity = LocalIdentityProvider(storage, CHEAP_HASHER)
    storage.add_user(_user(), actor="cli:test", now=NOW)
    storage.add_user(_user("nopass", password_hash=None), actor="cli:test", now=NOW)
    assert identity.authenticate("frank", PASSWORD).name == "frank"
    for name, password, reason in [
        ("frank", "wrong", "wrong password"),
        ("nobody", PASSWORD, "unknown user"),
        ("nopass", PASSWORD, "no password"),
    ]:
        with pytest.raises(AuthenticationFailed, match=reason):
            identity.authenticate(name, password)
    storage.set_user_enabled("frank", False, actor="cli:test", now=NOW)
    with pytest.raises(AuthenticationFailed, match="disabled"):
        identity.authenticate("frank", PASSWORD)
    storage.set_user_enabled("frank", True, actor="cli:test", now=NOW)
    assert identity.authenticate("frank", PASSWORD).enabled


def test_unknown_users_cost_as_much_as_known_ones() -> None:
    """The provider verifies a hash for unknown names too (a dummy one with the same parameters), so the time a
    refusal takes does not tell which user names exist."""
    from as_server.storage.memory import MemoryStorage

    class Counting(PasswordHasher):
        verified: list[str] = []

        def verify(self, stored: str, password: str) -> bool:
            self.verified.append(stored.split("$")[3])  # the parameters
            return super().verify(stored, password)

    hasher = Counting(time_cost=1, memory_cost=8, parallelism=1)
    storage = MemoryStorage()
    storage.add_user(_user(password_hash=hasher.hash("pw")), actor="cli:test", now=NOW)
    identity = LocalIdentityProvider(storage, hasher)
    for name in ("frank", "nobody"):
        with pytest.raises(AuthenticationFailed):
            identity.authenticate(name, "wrong")
    assert hasher.verified == ["m=8,t=1,p=1", "m=8,t=1,p=1"]


def test_disabling_a_user_revokes_their_tokens_and_grants(storage: Storage) -> None:
    storage.add_user(_user("alice", role=UserRole.USER), actor="cli:test", now=NOW)
    theirs = make_token(subject="alice", iat=NOW - 10)
    expired = make_token(subject="alice", iat=NOW - 7200)  # exp = iat + 3600: already over
    others = make_token(subject="bob", iat=NOW - 10)
    no_subject = make_token(iat=NOW - 10)
    for token in (theirs, expired, others, no_subject):
        storage.record(token)
    assert storage.set_user_enabled("alice", False, actor="cli:root", now=NOW) == 1
    assert storage.get_by_cti(theirs.cti).status == TokenStatus.REVOKED  # type: ignore[union-attr]
    for token in (expired, others, no_subject):
        assert storage.get_by_cti(token.cti).status == TokenStatus.ACTIVE  # type: ignore[union-attr]
    with pytest.raises(NotFoundError):
        storage.set_user_enabled("nobody", False, actor="cli:root", now=NOW)
    (entry,) = storage.list_audit(AuditQuery(action="user.disabled"))
    assert (entry.subject, entry.actor, entry.detail) == ("alice", "cli:root", "1 tokens revoked")


def test_password_hashes_only_in_the_database(sql_url: str, master_key: MasterKey, open_sql: OpenSql) -> None:
    """The password itself is stored nowhere: neither in the row nor anywhere in the SQLite file."""
    import sqlalchemy as sa

    storage = open_sql(sql_url, master_key)
    storage.add_user(_user(password_hash=CHEAP_HASHER.hash(PASSWORD)), actor="cli:test", now=NOW)
    storage.close()
    engine = sa.create_engine(sql_url)
    try:
        with engine.connect() as conn:
            (stored,) = conn.execute(sa.text("SELECT password_hash FROM users")).one()
    finally:
        engine.dispose()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    if sql_url.startswith("sqlite"):
        path = sql_url.removeprefix("sqlite:///")
        blob = b"".join(Path(p).read_bytes() for p in (path, path + "-wal") if Path(p).exists())
        assert PASSWORD.encode() not in blob and stored.encode() in blob
