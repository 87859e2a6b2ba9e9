"""Authorization codes and refresh tokens in every storage backend (memory, SQLite, PostgreSQL): single use,
rotation, family revocation, and the races they must win (:class:`~as_server.storage.base.AuthorizationCodeStore`,
:class:`~as_server.storage.base.RefreshTokenStore`)."""

from __future__ import annotations

import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ace_core import cbor
from ace_core.pop import Confirmation, OscoreMaterial
from ace_core.registry import AceProfile, GrantType
from as_server.models import (
    AuthorizationCode,
    Client,
    IssuedToken,
    RefreshToken,
    RefreshTokenStatus,
    TokenStatus,
)
from as_server.storage.base import AuditQuery, DuplicateError, Storage

NOW = 1_800_000_000


def _token(cti: bytes, *, exp: int = NOW + 3600) -> IssuedToken:
    cnf = Confirmation(osc=OscoreMaterial(id=b"\x01\x02", ms=bytes(16)))
    return IssuedToken(
        cti=cti,
        client_id="app",
        audience="front-door",
        scope=b"\x81\x82\x65/lock\x05",
        profile=AceProfile.COAP_OSCORE,
        iat=NOW,
        exp=exp,
        token_hash=b"\x01" + secrets.token_bytes(32),
        cnf=cbor.dumps(cnf.to_cbor_map()),
        pop_kid=b"\x01\x02",
        subject="alice",
    )


def _code(code_hash: bytes | None = None, *, expires_at: int = NOW + 60) -> AuthorizationCode:
    return AuthorizationCode(
        code_hash=code_hash or secrets.token_bytes(32),
        client_id="app",
        redirect_uri="http://127.0.0.1:5000/cb",
        subject="alice",
        audience="front-door",
        scope='[["/lock",5]]',
        code_challenge="c" * 43,
        code_challenge_method="S256",
        created_at=NOW,
        expires_at=expires_at,
    )


def _refresh(family: str, access_cti: bytes, *, key_cti: bytes | None = None) -> RefreshToken:
    return RefreshToken(
        token_hash=secrets.token_bytes(32),
        family_id=family,
        client_id="app",
        subject="alice",
        audience="front-door",
        scope=b"\x81\x82\x65/lock\x05",
        pop_kid=b"\x01\x02",
        key_cti=key_cti or access_cti,
        access_cti=access_cti,
        created_at=NOW,
        expires_at=NOW + 86400,
        family_expires_at=NOW + 10 * 86400,
    )


def test_client_redirect_uris_and_public_round_trip(storage: Storage) -> None:
    client = Client(
        client_id="app",
        secret_hash=b"",
        public=True,
        redirect_uris=("http://127.0.0.1/cb", "com.example.app:/cb"),
        grant_types=frozenset({GrantType.AUTHORIZATION_CODE, GrantType.REFRESH_TOKEN}),
    )
    storage.add_client(client)
    assert storage.get_client("app") == client
    confidential = Client(client_id="svc", secret_hash=b"\x00" * 32)
    storage.add_client(confidential)
    found = storage.get_client("svc")
    assert found is not None and found.redirect_uris == () and not found.public


def test_code_is_redeemed_once(storage: Storage) -> None:
    code = _code()
    storage.add_authorization_code(code)
    assert storage.get_authorization_code(code.code_hash) == code
    redeemed = storage.redeem_authorization_code(code.code_hash, family_id="f1", now=NOW + 1)
    assert redeemed is not None and redeemed.used_at == NOW + 1 and redeemed.family_id == "f1"
    assert storage.redeem_authorization_code(code.code_hash, family_id="f2", now=NOW + 2) is None
    assert storage.redeem_authorization_code(secrets.token_bytes(32), family_id="f3", now=NOW) is None
    stored = storage.get_authorization_code(code.code_hash)
    assert stored is not None and stored.family_id == "f1"


def test_expired_code_is_not_redeemed(storage: Storage) -> None:
    code = _code(expires_at=NOW + 60)
    storage.add_authorization_code(code)
    assert storage.redeem_authorization_code(code.code_hash, family_id="f", now=NOW + 60) is None


def test_duplicate_code(storage: Storage) -> None:
    code = _code()
    storage.add_authorization_code(code)
    try:
        storage.add_authorization_code(code)
    except DuplicateError:
        pass
    else:  # pragma: no cover
        raise AssertionError("a second code with the same hash was stored")


def test_old_codes_are_forgotten(storage: Storage) -> None:
    old = _code(expires_at=NOW - 2 * 86400)
    storage.add_authorization_code(old)
    storage.add_authorization_code(_code())
    assert storage.get_authorization_code(old.code_hash) is None


def test_exchange_and_replay_revoke_the_family(storage: Storage) -> None:
    code = _code()
    storage.add_authorization_code(code)
    storage.redeem_authorization_code(code.code_hash, family_id="fam", now=NOW)
    first = _token(b"cti-1")
    storage.record(first)
    refresh = _refresh("fam", first.cti)
    assert storage.complete_code_exchange(code.code_hash, access_cti=first.cti, refresh=refresh)
    assert storage.get_refresh_token(refresh.token_hash) == refresh
    # One rotation, so the family has two access tokens.
    second = _token(b"cti-2")
    storage.record(second)
    successor = _refresh("fam", second.cti, key_cti=first.cti)
    assert storage.rotate_refresh_token(refresh.token_hash, successor, now=NOW + 5)
    revoked = storage.authorization_code_reused(code.code_hash, actor="client:app", now=NOW + 10)
    assert revoked == 4  # two refresh tokens, two access tokens
    for cti in (first.cti, second.cti):
        token = storage.get_by_cti(cti)
        assert token is not None and token.status == TokenStatus.REVOKED
    for token_hash in (refresh.token_hash, successor.token_hash):
        stored = storage.get_refresh_token(token_hash)
        assert stored is not None and stored.status == RefreshTokenStatus.REVOKED
    entries = storage.list_audit(AuditQuery(action="authorization_code.reused"))
    assert [e.client_id for e in entries] == ["app"] and "4 tokens revoked" in entries[0].detail


def test_replay_during_the_exchange_wins(storage: Storage) -> None:
    code = _code()
    storage.add_authorization_code(code)
    storage.redeem_authorization_code(code.code_hash, family_id="fam", now=NOW)
    storage.authorization_code_reused(code.code_hash, actor="client:app", now=NOW + 1)  # before completion
    token = _token(b"cti-x")
    storage.record(token)
    refresh = _refresh("fam", token.cti)
    assert not storage.complete_code_exchange(code.code_hash, access_cti=token.cti, refresh=refresh)
    assert storage.get_refresh_token(refresh.token_hash) is None  # nothing stored


def test_rotation_happens_once(storage: Storage) -> None:
    first = _token(b"cti-1")
    storage.record(first)
    old = _refresh("fam", first.cti)
    code = _code()
    storage.add_authorization_code(code)
    storage.redeem_authorization_code(code.code_hash, family_id="fam", now=NOW)
    storage.complete_code_exchange(code.code_hash, access_cti=first.cti, refresh=old)
    new = _refresh("fam", b"cti-2")
    assert storage.rotate_refresh_token(old.token_hash, new, now=NOW + 1)
    stored = storage.get_refresh_token(old.token_hash)
    assert stored is not None and stored.status == RefreshTokenStatus.USED and stored.used_at == NOW + 1
    assert not storage.rotate_refresh_token(old.token_hash, _refresh("fam", b"cti-3"), now=NOW + 2)
    assert storage.get_refresh_token(new.token_hash) == new


def test_revoke_family_is_audited_and_leaves_other_families(storage: Storage) -> None:
    tokens = [_token(bytes([i]) * 8) for i in range(3)]
    for token in tokens:
        storage.record(token)
    for family, token in (("a", tokens[0]), ("a", tokens[1]), ("b", tokens[2])):
        code = _code()
        storage.add_authorization_code(code)
        storage.redeem_authorization_code(code.code_hash, family_id=family, now=NOW)
        storage.complete_code_exchange(code.code_hash, access_cti=token.cti, refresh=_refresh(family, token.cti))
    assert storage.revoke_refresh_family("a", actor="client:app", now=NOW + 1, reason="test") == 4
    assert [storage.get_by_cti(t.cti).status for t in tokens] == [  # type: ignore[union-attr]
        TokenStatus.REVOKED,
        TokenStatus.REVOKED,
        TokenStatus.ACTIVE,
    ]
    entries = storage.list_audit(AuditQuery(action="refresh_token.family_revoked"))
    assert len(entries) == 1 and entries[0].subject == "alice" and "test" in entries[0].detail


def test_concurrent_redeem_has_one_winner(storage: Storage) -> None:
    code = _code()
    storage.add_authorization_code(code)
    barrier = threading.Barrier(8)

    def redeem(i: int) -> bool:
        barrier.wait(10)
        return storage.redeem_authorization_code(code.code_hash, family_id=f"f{i}", now=NOW) is not None

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(redeem, range(8)))
    assert results.count(True) == 1


def test_concurrent_rotation_has_one_winner(storage: Storage) -> None:
    first = _token(b"cti-0")
    storage.record(first)
    old = _refresh("fam", first.cti)
    code = _code()
    storage.add_authorization_code(code)
    storage.redeem_authorization_code(code.code_hash, family_id="fam", now=NOW)
    storage.complete_code_exchange(code.code_hash, access_cti=first.cti, refresh=old)
    barrier = threading.Barrier(8)

    def rotate(i: int) -> bool:
        barrier.wait(10)
        return storage.rotate_refresh_token(old.token_hash, _refresh("fam", bytes([i]) * 8), now=NOW + 1)

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(rotate, range(8)))
    assert results.count(True) == 1
    assert time.monotonic() - started < 30
