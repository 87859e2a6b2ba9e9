"""Hypothesis against the running AS: whatever reaches ``/authorize`` and the code and refresh grants at ``/token``
(HTTP forms, JSON, ACE CBOR over CoAP), the answer is never a 5xx and never carries a traceback
(:func:`~tests.as_server.transport.harness.assert_no_traceback` runs on every response)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiocoap.numbers.codes import Code
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ace_core.keys import b64url_encode
from ace_core.messages import TokenRequest
from ace_core.registry import GrantType
from tests.as_server.transport.harness import LoopThread, assert_no_traceback
from tests.as_server.transport.oauth_apps import (
    APP,
    PRIVATE_REDIRECT,
    Browser,
    OAuthDeployment,
    lock_scope,
    parse_page,
    pkce,
    start_oauth,
)

FUZZ = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
_b64 = st.binary(min_size=0, max_size=40).map(b64url_encode)
_VALID = {
    "response_type": st.sampled_from(["code", "token", "code id_token", ""]),
    "client_id": st.sampled_from([APP, "web-app", "phone-app", "nobody", ""]),
    "redirect_uri": st.sampled_from(
        ["http://127.0.0.1/callback", "http://127.0.0.1:1/callback", PRIVATE_REDIRECT, "http://localhost/cb", "x"]
    ),
    "scope": st.sampled_from([lock_scope("/lock:GET"), "[]", "read", "[[", '[["/a",999999]]', ""]),
    "audience": st.sampled_from(["front-door", "sensors", "back-door", ""]),
    "state": _text,
    "code_challenge": st.one_of(st.just(pkce()[1]), _text),
    "code_challenge_method": st.sampled_from(["S256", "plain", "s256", ""]),
}


_FORM_FIELDS = st.sampled_from(["csrf_token", "username", "password", "decision"])


def _params() -> st.SearchStrategy[dict[str, str]]:
    known = st.fixed_dictionaries({}, optional={k: st.one_of(v, _text) for k, v in _VALID.items()})
    unknown = st.dictionaries(_text, _text, max_size=3)
    return st.tuples(known, unknown).map(lambda kv: {**kv[1], **kv[0]})


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory, loops: LoopThread) -> Iterator[OAuthDeployment]:
    yield from start_oauth(tmp_path_factory.mktemp("home"), loops)


@FUZZ
@given(params=_params())
def test_authorize_get(dep: OAuthDeployment, params: dict[str, str]) -> None:
    browser = Browser(dep)
    try:
        response = browser.get(params)
    finally:
        browser.close()
    assert response.status_code in (200, 302, 400), response.status_code


@FUZZ
@given(params=_params(), form=st.dictionaries(_FORM_FIELDS, _text))
def test_authorize_post(dep: OAuthDeployment, params: dict[str, str], form: dict[str, str]) -> None:
    browser = Browser(dep)
    try:
        page = browser.get(params)
        if page.status_code == 200:
            token = parse_page(page.text).csrf_token
            form = {"csrf_token": token or "", **form} if "csrf_token" not in form else form
        response = browser.client.post("/authorize", params=params, data=form)
    finally:
        browser.close()
    assert_no_traceback(response.content)
    assert response.status_code in (200, 302, 400, 403, 429), response.status_code


_TOKEN_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "grant_type": st.sampled_from(["authorization_code", "refresh_token", "password", "urn:x", ""]),
    "code": st.one_of(_b64, _text),
    "code_verifier": st.one_of(st.just(pkce()[0]), _text),
    "redirect_uri": st.sampled_from(["http://127.0.0.1:5/callback", PRIVATE_REDIRECT, ""]),
    "client_id": st.sampled_from([APP, "web-app", "phone-app", "nobody"]),
    "client_secret": _text,
    "refresh_token": st.one_of(_b64, _text),
    "scope": st.sampled_from([lock_scope("/lock:GET"), "read", "[]", "x"]),
    "audience": st.sampled_from(["front-door", "sensors", ""]),
    "req_cnf": st.sampled_from(['{"kid":"AQI"}', "{}", "[", '{"jwk":{}}']),
    "ace_profile": st.sampled_from(["coap_oscore", "", "x"]),
}


@FUZZ
@given(fields=st.fixed_dictionaries({}, optional={k: st.one_of(v, _text) for k, v in _TOKEN_FIELDS.items()}))
def test_token_form(dep: OAuthDeployment, fields: dict[str, str]) -> None:
    response = dep.running.http.post("/token", data=fields)
    assert response.status_code in (200, 400, 401, 415, 429), response.text


@FUZZ
@given(fields=st.fixed_dictionaries({}, optional={k: st.one_of(v, _text) for k, v in _TOKEN_FIELDS.items()}))
def test_token_json(dep: OAuthDeployment, fields: dict[str, str]) -> None:
    response = dep.running.http.post("/token", json=fields)
    assert response.status_code in (200, 400, 401, 415, 429), response.text


@FUZZ
@given(
    grant=st.sampled_from([GrantType.AUTHORIZATION_CODE, GrantType.REFRESH_TOKEN, GrantType.PASSWORD, 7]),
    code=st.one_of(st.none(), st.binary(max_size=40)),
    refresh=st.one_of(st.none(), st.binary(max_size=40)),
    verifier=st.one_of(st.none(), _text, st.binary(max_size=8), st.integers()),
    client_id=st.sampled_from([APP, "phone-app", None]),
)
def test_token_cbor_over_coap(
    dep: OAuthDeployment,
    grant: GrantType | int,
    code: bytes | None,
    refresh: bytes | None,
    verifier: object,
    client_id: str | None,
) -> None:
    extra = {} if verifier is None else {"code_verifier": verifier}
    request = TokenRequest(
        grant_type=grant,
        client_id=client_id,
        code=code,
        refresh_token=refresh,
        redirect_uri="http://127.0.0.1:5/callback",
        extra=extra,
    )
    reply = dep.running.coap.post("/token", request.to_cbor())
    assert reply.code in (Code.CREATED, Code.BAD_REQUEST, Code.UNAUTHORIZED), reply.code
