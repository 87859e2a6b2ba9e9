"""Refresh tokens over real sockets (RFC 6749 §6, RFC 9200 §5.8.1): rotation, reuse detection that revokes the
family, the same PoP key in every refreshed token, the policy decided again, and the grant types the AS refuses.
Both transports: HTTP forms and JSON, ACE CBOR over CoAP."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from aiocoap.numbers.codes import Code

from ace_core.keys import b64url_decode, b64url_encode
from ace_core.messages import AccessInformation, ErrorResponse, TokenRequest
from ace_core.pop import Confirmation
from ace_core.registry import ErrorCode, GrantType
from ace_core.scope import AifScope
from as_server.models import Client, ConsentRequest, Grant, PopKeyType, RefreshTokenStatus
from as_server.oauth.opaque import opaque_hash
from as_server.storage.base import AuditQuery
from tests.as_server.transport.harness import SECRETS, LoopThread
from tests.as_server.transport.oauth_apps import (
    APP,
    LOOPBACK_REGISTERED,
    NO_REFRESH,
    OAuthDeployment,
    access_information,
    authorize,
    error_of,
    lock_scope,
    start_oauth,
)


@pytest.fixture(scope="module")
def postgres_module_url() -> Iterator[str]:
    """A throwaway PostgreSQL database for the module (skipped, or failed in CI, without a server)."""
    from tests.as_server.conftest import _throwaway_postgres_database

    with _throwaway_postgres_database() as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def dep(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, loops: LoopThread
) -> Iterator[OAuthDeployment]:
    url = None if request.param == "sqlite" else request.getfixturevalue("postgres_module_url")
    yield from start_oauth(tmp_path_factory.mktemp("home"), loops, url)


@pytest.fixture(autouse=True)
def _reset_clock(dep: OAuthDeployment) -> Iterator[None]:
    yield
    dep.clock.offset = 0


def _signed_in(dep: OAuthDeployment, user: str = "alice", client_id: str = APP) -> AccessInformation:
    code, verifier = authorize(dep, user=user, client_id=client_id)
    return access_information(dep.exchange(code, verifier, redirect_uri=dep.app.redirect_uri, client_id=client_id))


def _refreshed(dep: OAuthDeployment, refresh_token: bytes | None) -> AccessInformation:
    assert refresh_token is not None
    return access_information(dep.refresh(refresh_token))


def _refused(dep: OAuthDeployment, refresh_token: bytes | None, *, client_id: str = APP) -> ErrorCode | int:
    assert refresh_token is not None
    response = dep.refresh(refresh_token, client_id=client_id)
    assert response.status_code in (400, 401), response.text
    return error_of(response).error


# --- rotation and reuse ----------------------------------------------------------------------------------------


def test_refresh_rotates_and_the_old_token_is_refused(dep: OAuthDeployment) -> None:
    first = _signed_in(dep)
    second = _refreshed(dep, first.refresh_token)
    assert second.refresh_token is not None and second.refresh_token != first.refresh_token
    claims = dep.verify(second.access_token)
    assert claims.sub == "alice" and claims.aud == "front-door"
    assert AifScope.from_cbor(claims.scope) == AifScope.parse_spec("/lock:GET,PUT /battery:GET")
    third = _refreshed(dep, second.refresh_token)
    assert third.refresh_token not in (first.refresh_token, second.refresh_token)
    assert _refused(dep, first.refresh_token) == ErrorCode.INVALID_GRANT


def test_reuse_revokes_the_whole_family(dep: OAuthDeployment) -> None:
    first = _signed_in(dep)
    second = _refreshed(dep, first.refresh_token)
    assert dep.introspect(first.access_token).active and dep.introspect(second.access_token).active
    # Someone presents the spent first refresh token (a leaked copy, or the app replaying it):
    assert _refused(dep, first.refresh_token) == ErrorCode.INVALID_GRANT
    # ... the family is revoked: the current refresh token too, and every access token issued from it.
    assert _refused(dep, second.refresh_token) == ErrorCode.INVALID_GRANT
    assert not dep.introspect(first.access_token).active
    assert not dep.introspect(second.access_token).active
    assert second.refresh_token is not None
    stored = dep.server.storage.get_refresh_token(opaque_hash(second.refresh_token))
    assert stored is not None and stored.status == RefreshTokenStatus.REVOKED
    entries = dep.server.storage.list_audit(AuditQuery(action="refresh_token.family_revoked", limit=20))
    assert any(stored.family_id in e.detail and e.subject == "alice" for e in entries)


def test_concurrent_use_of_one_refresh_token(dep: OAuthDeployment) -> None:
    first = _signed_in(dep)
    assert first.refresh_token is not None
    token = first.refresh_token
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: dep.refresh(token), range(4)))
    winners = [r for r in responses if r.status_code == 200]
    assert len(winners) <= 1
    assert all(error_of(r).error == ErrorCode.INVALID_GRANT for r in responses if r.status_code != 200)
    # A replay revoked the family, the winner's new tokens with it.
    for winner in winners:
        info = AccessInformation.from_json_bytes(winner.content)
        assert _refused(dep, info.refresh_token) == ErrorCode.INVALID_GRANT
        assert not dep.introspect(info.access_token).active


def test_refresh_token_of_another_client(dep: OAuthDeployment) -> None:
    first = _signed_in(dep)
    assert _refused(dep, first.refresh_token, client_id=NO_REFRESH) == ErrorCode.UNAUTHORIZED_CLIENT
    assert first.refresh_token is not None
    # A client allowed to refresh, but not the one the token was issued to.
    dep.server.storage.add_client(
        Client(
            client_id="other-app",
            secret_hash=b"",
            public=True,
            grant_types=frozenset({GrantType.REFRESH_TOKEN}),
            audiences=frozenset({"front-door"}),
            pop_key_types=frozenset({PopKeyType.SYMMETRIC}),
        )
    )
    assert _refused(dep, first.refresh_token, client_id="other-app") == ErrorCode.INVALID_GRANT
    _refreshed(dep, first.refresh_token)  # still the app's


def test_unknown_and_malformed_refresh_tokens(dep: OAuthDeployment) -> None:
    assert _refused(dep, secrets.token_bytes(32)) == ErrorCode.INVALID_GRANT
    response = dep.token({"grant_type": "refresh_token", "client_id": APP})
    assert error_of(response).error == ErrorCode.INVALID_REQUEST
    response = dep.token({"grant_type": "refresh_token", "client_id": APP, "refresh_token": "not base64url!"})
    assert error_of(response).error == ErrorCode.INVALID_REQUEST


def test_refresh_token_and_family_expire(dep: OAuthDeployment) -> None:
    first = _signed_in(dep)
    dep.clock.offset = dep.server.settings.refresh_token_lifetime + 1
    assert _refused(dep, first.refresh_token) == ErrorCode.INVALID_GRANT
    dep.clock.offset = 0
    second = _refreshed(dep, first.refresh_token)
    dep.clock.offset = dep.server.settings.refresh_family_lifetime + 1
    assert _refused(dep, second.refresh_token) == ErrorCode.INVALID_GRANT


# --- the same PoP key ------------------------------------------------------------------------------------------


def test_refreshed_tokens_keep_the_pop_key(dep: OAuthDeployment) -> None:
    first = _signed_in(dep)
    first_claims = dep.verify(first.access_token)
    assert first_claims.cnf is not None and first_claims.cnf.osc is not None
    material = first_claims.cnf.osc
    # While the first token is valid, the lock holds the OSCORE context: the new token names it by its id
    # (RFC 9203 §3.1, update of access rights) and the response has no cnf.
    second = _refreshed(dep, first.refresh_token)
    second_claims = dep.verify(second.access_token)
    assert second_claims.cnf == Confirmation(kid=material.id)
    assert second.cnf is None
    # Once it has expired the lock has dropped the context: the same material by value, in token and response.
    lifetime = second.expires_in
    assert lifetime is not None
    dep.clock.offset = lifetime + 1
    third = _refreshed(dep, second.refresh_token)
    third_claims = dep.verify(third.access_token, now=dep.clock.now())
    assert third_claims.cnf is not None and third_claims.cnf.osc == material
    assert third.cnf is not None and Confirmation.from_cbor_map(dict(third.cnf)) == third_claims.cnf


def test_narrower_scope_on_refresh(dep: OAuthDeployment) -> None:
    first = _signed_in(dep)
    assert first.refresh_token is not None
    data = {"grant_type": "refresh_token", "client_id": APP, "refresh_token": b64url_encode(first.refresh_token)}
    wider = dep.token({**data, "scope": lock_scope("/lock:GET,PUT,DELETE")})
    assert error_of(wider).error == ErrorCode.INVALID_SCOPE
    narrower = access_information(dep.token({**data, "scope": lock_scope("/lock:GET")}))
    assert AifScope.from_cbor(dep.verify(narrower.access_token).scope) == AifScope.parse_spec("/lock:GET")
    # The family keeps its scope: the next refresh may have everything again.
    again = _refreshed(dep, narrower.refresh_token)
    assert AifScope.from_cbor(dep.verify(again.access_token).scope) == AifScope.parse_spec("/lock:GET,PUT /battery:GET")


def test_refresh_cannot_change_the_audience(dep: OAuthDeployment) -> None:
    first = _signed_in(dep)
    assert first.refresh_token is not None
    data = {"grant_type": "refresh_token", "client_id": APP, "refresh_token": b64url_encode(first.refresh_token)}
    response = dep.token({**data, "audience": "sensors"})
    assert error_of(response).error == ErrorCode.INVALID_REQUEST


# --- the policy, decided again ----------------------------------------------------------------------------------


def test_disabled_user_cannot_refresh(dep: OAuthDeployment) -> None:
    first = _signed_in(dep, user="erin")
    assert dep.verify(first.access_token).sub == "erin"
    dep.server.storage.set_user_enabled("erin", False, actor="cli:test", now=dep.clock.now())
    try:
        assert _refused(dep, first.refresh_token) == ErrorCode.INVALID_GRANT
        assert not dep.introspect(first.access_token).active
    finally:
        dep.server.storage.set_user_enabled("erin", True, actor="cli:test", now=dep.clock.now())


def test_revoked_grant_stops_refreshes(dep: OAuthDeployment) -> None:
    storage = dep.server.storage
    now = dep.clock.now()
    scope = AifScope.parse_spec("/lock:PUT").to_cbor()
    request_id = b64url_encode(secrets.token_bytes(16))
    stored, _ = storage.submit_access_request(
        ConsentRequest(
            id=request_id,
            client_id=APP,
            audience="front-door",
            scope=scope,
            subject="frank",
            created_at=now,
            updated_at=now,
            expires_at=now + 3600,
        ),
        actor=f"client:{APP}",
    )
    grant = Grant(
        id=stored.id,
        client_id=APP,
        audience="front-door",
        scope=scope,
        subject="frank",
        request_id=stored.id,
        created_at=now,
        created_by="user:alice",
    )
    storage.approve_access_request(stored.id, grant, actor="user:alice", now=now)
    code, verifier = authorize(dep, user="frank", scope=lock_scope("/lock:PUT"))
    first = access_information(dep.exchange(code, verifier, redirect_uri=dep.app.redirect_uri))
    assert AifScope.from_cbor(dep.verify(first.access_token).scope) == AifScope.parse_spec("/lock:PUT")
    second = _refreshed(dep, first.refresh_token)  # the grant still stands
    storage.revoke_grant(stored.id, actor="user:alice", now=dep.clock.now())
    assert not dep.introspect(second.access_token).active
    assert _refused(dep, second.refresh_token) == ErrorCode.INVALID_GRANT
    # No access request is filed by a refresh: it only keeps what was granted.
    pending = [r for r in storage.list_access_requests(now=dep.clock.now()) if r.subject == "frank"]
    assert [r.id for r in pending] == [stored.id]


def test_disabled_client_cannot_refresh(dep: OAuthDeployment) -> None:
    storage = dep.server.storage
    storage.add_client(
        Client(
            client_id="temp-app",
            secret_hash=b"",
            public=True,
            grant_types=frozenset({GrantType.AUTHORIZATION_CODE, GrantType.REFRESH_TOKEN}),
            redirect_uris=(LOOPBACK_REGISTERED,),
            audiences=frozenset({"front-door"}),
            pop_key_types=frozenset({PopKeyType.SYMMETRIC}),
        )
    )
    first = _signed_in(dep, client_id="temp-app")
    storage.set_client_enabled("temp-app", False, actor="cli:test", now=dep.clock.now())
    assert _refused(dep, first.refresh_token, client_id="temp-app") == ErrorCode.INVALID_CLIENT
    assert not dep.introspect(first.access_token).active


# --- CoAP --------------------------------------------------------------------------------------------------------


def test_refresh_over_coap(dep: OAuthDeployment) -> None:
    first = _signed_in(dep)
    request = TokenRequest(grant_type=GrantType.REFRESH_TOKEN, client_id=APP, refresh_token=first.refresh_token)
    reply = dep.running.coap.post("/token", request.to_cbor())
    assert reply.code == Code.CREATED
    info = AccessInformation.from_cbor(reply.payload)
    assert dep.verify(info.access_token).sub == "alice"
    assert info.refresh_token is not None
    replay = dep.running.coap.post("/token", request.to_cbor())
    assert replay.code == Code.BAD_REQUEST
    assert ErrorResponse.from_cbor(replay.payload).error == ErrorCode.INVALID_GRANT


def test_code_exchange_over_coap(dep: OAuthDeployment) -> None:
    code, verifier = authorize(dep)
    request = TokenRequest(
        grant_type=GrantType.AUTHORIZATION_CODE,
        client_id=APP,
        code=b64url_decode(code),
        redirect_uri=dep.app.redirect_uri,
        extra={"code_verifier": verifier},  # RFC 9200 registers no CBOR abbreviation for it: its name
    )
    reply = dep.running.coap.post("/token", request.to_cbor())
    assert reply.code == Code.CREATED, reply.payload
    info = AccessInformation.from_cbor(reply.payload)
    assert dep.verify(info.access_token).sub == "alice"


# --- grant types -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "grant_type", ["password", "urn:ietf:params:oauth:grant-type:device_code", "implicit", "client_credentials2"]
)
def test_unsupported_grant_types(dep: OAuthDeployment, grant_type: str) -> None:
    data = {"grant_type": grant_type, "username": "alice", "password": "alice-pw-Tq3v8", "audience": "front-door"}
    response = dep.token(data, auth=("phone-app", SECRETS["phone-app"]))
    assert response.status_code == 400
    assert error_of(response).error == ErrorCode.UNSUPPORTED_GRANT_TYPE


@pytest.mark.parametrize("grant_type", ["password", "implicit"])
def test_unsupported_grant_types_from_a_public_client_or_without_credentials(
    dep: OAuthDeployment, grant_type: str
) -> None:
    """The grant type is checked before the client authenticates: a public app (no secret) asking for the password
    grant learns it is not offered, not that it failed to authenticate (grants_supported is public anyway)."""
    for data in ({"grant_type": grant_type, "client_id": APP}, {"grant_type": grant_type}):
        response = dep.token(data)
        assert response.status_code == 400
        assert error_of(response).error == ErrorCode.UNSUPPORTED_GRANT_TYPE


def test_password_grant_over_coap_is_unsupported(dep: OAuthDeployment) -> None:
    request = TokenRequest(
        grant_type=GrantType.PASSWORD,
        client_id="phone-app",
        client_secret=SECRETS["phone-app"].encode(),
        username="alice",
        password="alice-pw-Tq3v8",
    )
    reply = dep.running.coap.post("/token", request.to_cbor())
    assert reply.code == Code.BAD_REQUEST
    assert ErrorResponse.from_cbor(reply.payload).error == ErrorCode.UNSUPPORTED_GRANT_TYPE


def test_grant_types_the_client_may_not_use(dep: OAuthDeployment) -> None:
    # A service client (client_credentials only) cannot refresh or exchange codes.
    response = dep.token(
        {"grant_type": "refresh_token", "refresh_token": b64url_encode(b"x" * 32)},
        auth=("phone-app", SECRETS["phone-app"]),
    )
    assert error_of(response).error == ErrorCode.UNAUTHORIZED_CLIENT
    response = dep.token(
        {"grant_type": "authorization_code", "code": b64url_encode(b"x" * 32), "redirect_uri": LOOPBACK_REGISTERED},
        auth=("phone-app", SECRETS["phone-app"]),
    )
    assert error_of(response).error == ErrorCode.UNAUTHORIZED_CLIENT
    # A public app cannot use client_credentials: it has no secret to authenticate with.
    response = dep.token({"grant_type": "client_credentials", "client_id": APP, "audience": "front-door"})
    assert response.status_code == 401
    assert error_of(response).error == ErrorCode.INVALID_CLIENT
