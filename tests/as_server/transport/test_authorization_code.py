"""Apps signing users in, over real sockets: the authorization code flow with PKCE driven by an HTTP client as a
browser and a native app would (RFC 6749 §4.1, RFC 7636, RFC 8252), and every way it must refuse.

The browser GETs ``/authorize``, reads the sign-in form, POSTs the user's credentials with the CSRF token, and
follows the redirect to the app's loopback listener; the app exchanges the code at ``/token``. Tokens are verified
with ``ace_core`` and the lock's key, as the lock does.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qsl, urlsplit

import pytest

from ace_core.registry import ErrorCode, TokenType
from ace_core.scope import AifScope
from as_server.oauth.signin import SIGNIN_FAILED
from as_server.transport.authorize import CSRF_COOKIE, EXPIRED
from tests.as_server.transport.harness import LoopThread
from tests.as_server.transport.oauth_apps import (
    APP,
    NO_REFRESH,
    PRIVATE_REDIRECT,
    WEB,
    WEB_SECRET,
    Browser,
    OAuthDeployment,
    access_information,
    authorization_params,
    authorize,
    error_of,
    lock_scope,
    parse_page,
    pkce,
    sign_in,
    start_oauth,
)


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory, loops: LoopThread) -> Iterator[OAuthDeployment]:
    yield from start_oauth(tmp_path_factory.mktemp("home"), loops)


@pytest.fixture(autouse=True)
def _reset_clock(dep: OAuthDeployment) -> Iterator[None]:
    yield
    dep.clock.offset = 0


def _query(location: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(location).query))


# --- success -------------------------------------------------------------------------------------------------


def test_code_flow_gives_a_pop_token_for_the_user_and_a_refresh_token(dep: OAuthDeployment) -> None:
    code, verifier = authorize(dep, user="alice")
    info = access_information(dep.exchange(code, verifier, redirect_uri=dep.app.redirect_uri))
    assert info.token_type == TokenType.POP
    assert info.refresh_token is not None and len(info.refresh_token) == 32
    claims = dep.verify(info.access_token)
    assert claims.sub == "alice"
    # The policy's decision for alice: the lock (alice-lock) and the battery (staff-battery, alice is staff).
    assert AifScope.from_cbor(claims.scope) == AifScope.parse_spec("/lock:GET,PUT /battery:GET")
    assert claims.cnf is not None and claims.cnf.osc is not None  # a generated OSCORE key (no req_cnf)
    assert info.cnf is not None
    introspection = dep.introspect(info.access_token)
    assert introspection.active


def test_the_policy_decides_for_the_signed_in_user(dep: OAuthDeployment) -> None:
    code, verifier = authorize(dep, user="bob")  # asks for /lock:GET,PUT /battery:GET; bob may read the lock
    info = access_information(dep.exchange(code, verifier, redirect_uri=dep.app.redirect_uri))
    claims = dep.verify(info.access_token)
    assert claims.sub == "bob"
    assert AifScope.from_cbor(claims.scope) == AifScope.parse_spec("/lock:GET")
    assert info.scope == AifScope.parse_spec("/lock:GET").to_json_text()  # RFC 6749 §5.1: it differs


def test_sign_in_page_shows_what_the_app_asks_for(dep: OAuthDeployment) -> None:
    _verifier, challenge = pkce()
    browser = Browser(dep)
    response = browser.get(authorization_params(redirect_uri=dep.app.redirect_uri, challenge=challenge))
    browser.close()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    csp = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    # The answer to the form redirects to the app: Chromium and Safari apply form-action to that redirect.
    assert f"form-action 'self' http://127.0.0.1:{dep.app.port};" in csp
    assert response.headers["x-frame-options"] == "DENY"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(CSRF_COOKIE + "=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    page = parse_page(response.text)
    assert "Door app" in page.title
    assert page.rights == ["/lock: GET, PUT", "/battery: GET"]
    assert page.csrf_token and page.error is None
    # Minimal HTML: no scripts, nothing loaded from anywhere (no src/href attributes at all).
    assert "<script" not in response.text and "src=" not in response.text and "href=" not in response.text


def test_confidential_client_authenticates_at_the_token_endpoint(dep: OAuthDeployment) -> None:
    code, verifier = authorize(dep, client_id=WEB)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": dep.app.redirect_uri}
    data["code_verifier"] = verifier
    without = dep.token({**data, "client_id": WEB})
    assert without.status_code == 401
    assert error_of(without).error == ErrorCode.INVALID_CLIENT
    wrong = dep.token(data, auth=(WEB, "not-the-secret"))
    assert wrong.status_code == 401
    info = access_information(dep.token(data, auth=(WEB, WEB_SECRET)))
    assert dep.verify(info.access_token).sub == "alice"


def test_confidential_client_may_skip_pkce(dep: OAuthDeployment) -> None:
    params = authorization_params(client_id=WEB, redirect_uri=dep.app.redirect_uri, challenge=None, method=None)
    response = sign_in(dep, params)
    assert response.status_code == 302
    code = _query(response.headers["location"])["code"]
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": dep.app.redirect_uri}
    info = access_information(dep.token(data, auth=(WEB, WEB_SECRET)))
    assert dep.verify(info.access_token).sub == "alice"


def test_private_use_scheme_redirect(dep: OAuthDeployment) -> None:
    verifier, challenge = pkce()
    browser = Browser(dep)
    page = browser.get(authorization_params(redirect_uri=PRIVATE_REDIRECT, challenge=challenge))
    browser.close()
    assert "form-action 'self' com.example.app:;" in page.headers["content-security-policy"]
    response = sign_in(dep, authorization_params(redirect_uri=PRIVATE_REDIRECT, challenge=challenge))
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(PRIVATE_REDIRECT + "?")
    query = _query(location)
    assert query["state"] == "state-xyz"
    info = access_information(dep.exchange(query["code"], verifier, redirect_uri=PRIVATE_REDIRECT))
    assert dep.verify(info.access_token).sub == "alice"


def test_client_without_refresh_grant_gets_no_refresh_token(dep: OAuthDeployment) -> None:
    code, verifier = authorize(dep, client_id=NO_REFRESH)
    info = access_information(dep.exchange(code, verifier, redirect_uri=dep.app.redirect_uri, client_id=NO_REFRESH))
    assert info.refresh_token is None


# --- PKCE ----------------------------------------------------------------------------------------------------


def test_wrong_verifier_is_invalid_grant_and_the_code_still_works(dep: OAuthDeployment) -> None:
    code, verifier = authorize(dep)
    other, _ = pkce()
    refused = dep.exchange(code, other, redirect_uri=dep.app.redirect_uri)
    assert refused.status_code == 400
    assert error_of(refused).error == ErrorCode.INVALID_GRANT
    access_information(dep.exchange(code, verifier, redirect_uri=dep.app.redirect_uri))


def test_missing_verifier_for_a_public_client(dep: OAuthDeployment) -> None:
    code, _verifier = authorize(dep)
    refused = dep.exchange(code, None, redirect_uri=dep.app.redirect_uri)
    assert refused.status_code == 400
    assert error_of(refused).error == ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize("method", ["plain", None])
def test_plain_pkce_is_refused(dep: OAuthDeployment, method: str | None) -> None:
    verifier = pkce()[0]
    params = authorization_params(redirect_uri=dep.app.redirect_uri, challenge=verifier, method=method)
    browser = Browser(dep)
    response = browser.get(params)  # refused before any sign-in: redirected with the error (RFC 6749 §4.1.2.1)
    browser.close()
    assert response.status_code == 302
    query = _query(response.headers["location"])
    assert query["error"] == "invalid_request" and query["state"] == "state-xyz"
    assert "code" not in query


def test_public_client_without_pkce_is_refused(dep: OAuthDeployment) -> None:
    params = authorization_params(redirect_uri=dep.app.redirect_uri, challenge=None, method=None)
    response = Browser(dep).get(params)
    assert response.status_code == 302
    assert _query(response.headers["location"])["error"] == "invalid_request"


# --- the code --------------------------------------------------------------------------------------------------


def test_reused_code_is_refused_and_revokes_its_tokens(dep: OAuthDeployment) -> None:
    code, verifier = authorize(dep)
    info = access_information(dep.exchange(code, verifier, redirect_uri=dep.app.redirect_uri))
    assert dep.introspect(info.access_token).active
    again = dep.exchange(code, verifier, redirect_uri=dep.app.redirect_uri)
    assert again.status_code == 400
    assert error_of(again).error == ErrorCode.INVALID_GRANT
    # RFC 6749 §4.1.2: the tokens issued from the code are revoked, the refresh token with them.
    assert not dep.introspect(info.access_token).active
    assert info.refresh_token is not None
    refreshed = dep.refresh(info.refresh_token)
    assert error_of(refreshed).error == ErrorCode.INVALID_GRANT
    entries = dep.server.storage.list_audit(_audit_query("authorization_code.reused"))
    assert entries and entries[0].client_id == APP and entries[0].subject == "alice"


def test_mismatched_redirect_uri_at_the_token_endpoint(dep: OAuthDeployment) -> None:
    code, verifier = authorize(dep)
    other_port = dep.app.redirect_uri.replace(str(dep.app.port), str(dep.app.port + 1))
    for redirect_uri in (other_port, PRIVATE_REDIRECT, dep.app.redirect_uri + "/x"):
        refused = dep.exchange(code, verifier, redirect_uri=redirect_uri)
        assert refused.status_code == 400
        assert error_of(refused).error == ErrorCode.INVALID_GRANT


def test_unregistered_redirect_uri_is_not_redirected_to(dep: OAuthDeployment) -> None:
    _verifier, challenge = pkce()
    for uri in ("http://127.0.0.1:8000/elsewhere", "http://localhost:8000/callback", "https://evil.example/cb"):
        response = Browser(dep).get(authorization_params(redirect_uri=uri, challenge=challenge))
        assert response.status_code == 400  # RFC 6749 §4.1.2.1: tell the user, never redirect
        assert "location" not in response.headers
        assert parse_page(response.text).error


def test_loopback_redirect_any_port(dep: OAuthDeployment) -> None:
    _verifier, challenge = pkce()
    response = Browser(dep).get(authorization_params(redirect_uri="http://127.0.0.1:1/callback", challenge=challenge))
    assert response.status_code == 200  # RFC 8252 §7.3: the port is the app's choice


def test_expired_code(dep: OAuthDeployment) -> None:
    code, verifier = authorize(dep)
    dep.clock.offset = dep.server.settings.authorization_code_lifetime + 1
    refused = dep.exchange(code, verifier, redirect_uri=dep.app.redirect_uri)
    assert refused.status_code == 400
    assert error_of(refused).error == ErrorCode.INVALID_GRANT


def test_code_of_another_client(dep: OAuthDeployment) -> None:
    code, verifier = authorize(dep)
    refused = dep.exchange(code, verifier, redirect_uri=dep.app.redirect_uri, client_id=NO_REFRESH)
    assert error_of(refused).error == ErrorCode.INVALID_GRANT
    access_information(dep.exchange(code, verifier, redirect_uri=dep.app.redirect_uri))


# --- the sign-in page ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("user", "password"), [("alice", "wrong"), ("nobody", "whatever"), ("alice", "")])
def test_failed_sign_in_says_the_same_whatever_the_reason(dep: OAuthDeployment, user: str, password: str) -> None:
    _verifier, challenge = pkce()
    response = sign_in(
        dep, authorization_params(redirect_uri=dep.app.redirect_uri, challenge=challenge), user=user, password=password
    )
    assert response.status_code == 400
    page = parse_page(response.text)
    assert page.error == SIGNIN_FAILED
    assert page.csrf_token  # the page can be submitted again
    assert password not in response.text or password == ""


def test_disabled_user_cannot_sign_in(dep: OAuthDeployment) -> None:
    now = dep.clock.now()
    dep.server.storage.set_user_enabled("gina", False, actor="cli:test", now=now)
    _verifier, challenge = pkce()
    response = sign_in(dep, authorization_params(redirect_uri=dep.app.redirect_uri, challenge=challenge), user="gina")
    assert response.status_code == 400
    assert parse_page(response.text).error == SIGNIN_FAILED


def test_post_without_csrf_token_is_refused(dep: OAuthDeployment) -> None:
    _verifier, challenge = pkce()
    params = authorization_params(redirect_uri=dep.app.redirect_uri, challenge=challenge)
    browser = Browser(dep)
    page = parse_page(browser.get(params).text)
    assert page.action is not None
    credentials = {"username": "alice", "password": "alice-pw-Tq3v8", "decision": "allow"}
    response = browser.post(page.action, credentials)
    assert response.status_code == 403
    assert parse_page(response.text).error == EXPIRED
    # A token from another authorization request (other state) does not fit this one either.
    other = parse_page(browser.get({**params, "state": "other"}).text)
    response = browser.post(page.action, {**credentials, "csrf_token": other.csrf_token or ""})
    assert response.status_code == 403
    browser.close()
    # Without the cookie (another browser: a cross-site form post), the right token is refused.
    response = Browser(dep).post(page.action, {**credentials, "csrf_token": page.csrf_token or ""})
    assert response.status_code == 403


def test_stale_sign_in_page(dep: OAuthDeployment) -> None:
    _verifier, challenge = pkce()
    browser = Browser(dep)
    page = parse_page(browser.get(authorization_params(redirect_uri=dep.app.redirect_uri, challenge=challenge)).text)
    dep.clock.offset = dep.server.settings.signin_page_lifetime + 1
    assert page.action is not None
    data = {"csrf_token": page.csrf_token or "", "username": "alice", "password": "alice-pw-Tq3v8", "decision": "allow"}
    assert browser.post(page.action, data).status_code == 403
    browser.close()


def test_deny_redirects_with_access_denied(dep: OAuthDeployment) -> None:
    _verifier, challenge = pkce()
    params = authorization_params(redirect_uri=dep.app.redirect_uri, challenge=challenge)
    response = sign_in(dep, params, user="", password="", decision="deny")
    assert response.status_code == 302
    query = _query(response.headers["location"])
    assert query["error"] == "access_denied" and query["state"] == "state-xyz"
    assert "code" not in query


def test_unknown_audience_and_bad_scope_are_redirected_errors(dep: OAuthDeployment) -> None:
    _verifier, challenge = pkce()
    cases = [
        ({"audience": "back-door"}, "invalid_request"),
        ({"scope": "not json"}, "invalid_scope"),
        ({"scope": "[]"}, "invalid_scope"),
    ]
    for change, error in cases:
        params = {**authorization_params(redirect_uri=dep.app.redirect_uri, challenge=challenge), **change}
        response = Browser(dep).get(params)
        assert response.status_code == 302, change
        assert _query(response.headers["location"])["error"] == error


def test_unknown_client_gets_a_page_not_a_redirect(dep: OAuthDeployment) -> None:
    _verifier, challenge = pkce()
    params = authorization_params(client_id="nobody", redirect_uri=dep.app.redirect_uri, challenge=challenge)
    response = Browser(dep).get(params)
    assert response.status_code == 400
    assert "location" not in response.headers


def test_client_without_the_code_grant(dep: OAuthDeployment) -> None:
    # phone-app (harness) may only use client_credentials and has no redirect URI: a page, no redirect.
    _verifier, challenge = pkce()
    params = authorization_params(client_id="phone-app", redirect_uri=dep.app.redirect_uri, challenge=challenge)
    assert Browser(dep).get(params).status_code == 400


def test_scope_missing_uses_no_default(dep: OAuthDeployment) -> None:
    _verifier, challenge = pkce()
    params = authorization_params(redirect_uri=dep.app.redirect_uri, challenge=challenge)
    del params["scope"]
    response = Browser(dep).get(params)
    assert _query(response.headers["location"])["error"] == "invalid_scope"  # RFC 6749 §3.3


def test_code_exchange_in_json_body(dep: OAuthDeployment) -> None:
    code, verifier = authorize(dep)
    body = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": dep.app.redirect_uri,
        "client_id": APP,
        "code_verifier": verifier,
    }
    info = access_information(dep.running.http.post("/token", json=body))
    assert dep.verify(info.access_token).sub == "alice"


def test_audit_records_the_authorization(dep: OAuthDeployment) -> None:
    authorize(dep, user="dave")
    entries = dep.server.storage.list_audit(_audit_query("authorization.granted"))
    assert any(e.subject == "dave" and e.client_id == APP and e.scope == "/lock:GET,PUT /battery:GET" for e in entries)


def _audit_query(action: str):  # type: ignore[no-untyped-def]
    from as_server.storage.base import AuditQuery

    return AuditQuery(action=action, limit=50)


def test_metadata_lists_the_authorization_endpoint(dep: OAuthDeployment) -> None:
    metadata = dep.running.http.request("GET", "/.well-known/oauth-authorization-server").json()
    assert metadata["authorization_endpoint"].endswith("/authorize")
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["response_types_supported"] == ["code"]
    assert set(metadata["grant_types_supported"]) == {"authorization_code", "client_credentials", "refresh_token"}
    assert "password" not in metadata["grant_types_supported"]
    assert "none" in metadata["token_endpoint_auth_methods_supported"]


def test_lock_scope_helper() -> None:
    assert lock_scope("/lock:GET") == '[["/lock",1]]'
