"""The token endpoint over both transports (RFC 9200 §5.8): success in every body format, every RFC 9200 §5.8.3
error with its exact code and body, malformed and unsupported requests, discovery, and the 5.00/500 path."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from ace_core import cose, cwt
from ace_core.keys import CoseKey
from ace_core.messages import ErrorResponse, TokenRequest
from ace_core.pop import Confirmation
from ace_core.registry import AceProfile, CoseAlgorithm, ErrorCode, GrantType, TokenType
from ace_core.scope import AifScope, TextScope
from ace_core.status import Status
from as_server.tokens import token_hash
from tests.as_server.transport.harness import ISSUER, LOCK_SCOPE, SECRETS, Running
from tests.as_server.transport.wire import FAMILIES, basic, send, send_raw, success_status

PHONE = "phone-app"


def _scope(spec: str, family: str) -> str | bytes:
    """AIF as CBOR bytes in CBOR bodies, as aif+json text in JSON and form bodies (ace_core.scope)."""
    aif = AifScope.parse_spec(spec)
    return aif.to_cbor() if family in ("coap", "http-cbor") else aif.to_json_text()


def _request(family: str, **fields: Any) -> TokenRequest:
    values: dict[str, Any] = {"client_id": PHONE, "client_secret": SECRETS[PHONE].encode(), "audience": "front-door"}
    values.update(fields)
    if isinstance(values.get("scope"), str) and values["scope"].startswith("/"):
        values["scope"] = _scope(values["scope"], family)
    return TokenRequest(**{k: v for k, v in values.items() if v is not None})


def _verify(dep: Running, token: bytes, audience: str = "front-door") -> cwt.Claims:
    key = dep.provisioned.lock_key if audience == "front-door" else dep.provisioned.sensors_key
    return cwt.verify(token, cose.KeySet([key]), now=time.time(), audience=audience, issuer=ISSUER)


# --- success -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_token_granted_in_every_format(deployment: Running, family: str) -> None:
    reply = send(deployment, "/token", family=family, message=_request(family, scope="/lock:PUT,DELETE /garage:GET"))
    assert reply.status == success_status(family)
    assert reply.content_type in (("19", "application/ace+cbor") if reply.is_cbor else ("application/json",))
    if family != "coap":
        assert reply.headers["cache-control"] == "no-store"
        assert reply.headers["pragma"] == "no-cache"
    info = reply.access_information()
    assert info.token_type == TokenType.POP
    assert info.expires_in == deployment.settings.token_lifetime

    claims = _verify(deployment, info.access_token)
    granted = AifScope.parse_spec("/lock:PUT")
    assert claims.scope == granted.to_cbor()  # exactly the granted scope, nothing else asked for
    assert info.scope == (granted.to_cbor() if reply.is_cbor else granted.to_json_text())  # RFC 6749 §5.1
    assert claims.aud == "front-door"
    assert claims.ace_profile is None and claims.iat is None  # compact claims; front-door has one profile
    # RFC 9203 §3.2: the OSCORE input material in the response is the one inside the token.
    assert claims.cnf is not None and claims.cnf.osc is not None
    assert info.cnf is not None
    assert Confirmation.from_cbor_map(dict(info.cnf)) == claims.cnf
    assert claims.cnf.osc.ms is not None and len(claims.cnf.osc.ms) == 16


def test_text_scope_over_json(deployment: Running) -> None:
    request = _request("http-json", audience="sensors", scope="read write")
    reply = send(deployment, "/token", family="http-json", message=request)
    assert reply.status == 200
    info = reply.access_information()
    claims = _verify(deployment, info.access_token, audience="sensors")
    assert claims.scope == "read"
    assert isinstance(info.scope, str) and TextScope.parse(info.scope) == TextScope.parse("read")


@pytest.mark.parametrize("family", ["http-cbor", "http-json", "http-form"])
def test_basic_credentials_are_form_decoded(deployment: Running, family: str) -> None:
    """RFC 6749 §2.3.1: the Basic user and password are form-urlencoded client id and secret."""
    client_id = "odd id:+&%/é"
    request = _request(family, client_id=None, client_secret=None, scope=LOCK_SCOPE)
    reply = send(
        deployment,
        "/token",
        family=family,
        message=request,
        headers={"Authorization": basic(client_id, SECRETS[client_id])},
    )
    assert reply.status == 200, reply.body
    _verify(deployment, reply.access_information().access_token)


def test_ace_profile_requested_is_answered(deployment: Running) -> None:
    from ace_core.messages import ACE_PROFILE_REQUESTED

    reply = send(
        deployment,
        "/token",
        family="coap",
        message=_request("coap", scope=LOCK_SCOPE, ace_profile=ACE_PROFILE_REQUESTED),
    )
    assert reply.status == Status.CREATED
    assert reply.access_information().ace_profile == AceProfile.COAP_OSCORE


# --- RFC 9200 §5.8.3 errors ---------------------------------------------------------------------------------

_ED25519 = CoseKey.generate(CoseAlgorithm.EDDSA).public()

ERROR_CASES: dict[str, tuple[dict[str, Any], ErrorCode]] = {
    # A secret without a client_id (RFC 6749 §2.3.1 needs both).
    "invalid_request": ({"client_id": None, "scope": LOCK_SCOPE}, ErrorCode.INVALID_REQUEST),
    "invalid_client": ({"client_secret": b"wrong-secret", "scope": LOCK_SCOPE}, ErrorCode.INVALID_CLIENT),
    "unauthorized_client": (
        {"client_id": "no-grant", "client_secret": SECRETS["no-grant"].encode(), "scope": LOCK_SCOPE},
        ErrorCode.UNAUTHORIZED_CLIENT,
    ),
    "unsupported_grant_type": (
        {"grant_type": GrantType.PASSWORD, "scope": LOCK_SCOPE},
        ErrorCode.UNSUPPORTED_GRANT_TYPE,
    ),
    "invalid_scope": ({"scope": "/garage:GET"}, ErrorCode.INVALID_SCOPE),
    # phone-app may only use AS-generated (symmetric) keys; an Ed25519 req_cnf is a key the AS will not bind.
    "unsupported_pop_key": (
        {"scope": LOCK_SCOPE, "req_cnf": Confirmation(cose_key=_ED25519).to_cbor_map()},
        ErrorCode.UNSUPPORTED_POP_KEY,
    ),
    "incompatible_ace_profiles": (
        {"client_id": "dtls-only", "client_secret": SECRETS["dtls-only"].encode(), "scope": LOCK_SCOPE},
        ErrorCode.INCOMPATIBLE_ACE_PROFILES,
    ),
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_error_codes_and_bodies(deployment: Running, family: str, case: str) -> None:
    fields, code = ERROR_CASES[case]
    reply = send(deployment, "/token", family=family, message=_request(family, **fields))
    expected = Status.UNAUTHORIZED if code == ErrorCode.INVALID_CLIENT else Status.BAD_REQUEST
    assert reply.status == int(expected)  # 4.00 / 400, and 4.01 / 401 for invalid_client (RFC 9200 §5.8.3)
    assert reply.error().error == code
    if family == "http-json" or family == "http-form":
        assert reply.body.startswith(b"{") and f'"error":"{case}"'.encode() in reply.body
    if family != "coap" and code == ErrorCode.INVALID_CLIENT:
        assert reply.headers["www-authenticate"] == 'Basic realm="ostiary"'


def test_invalid_client_via_basic_is_401_with_challenge(deployment: Running) -> None:
    request = _request("http-form", client_id=None, client_secret=None, scope=LOCK_SCOPE)
    reply = send(
        deployment, "/token", family="http-form", message=request, headers={"Authorization": basic(PHONE, "nope")}
    )
    assert reply.status == 401
    assert reply.headers["www-authenticate"] == 'Basic realm="ostiary"'
    assert reply.error().error == ErrorCode.INVALID_CLIENT


@pytest.mark.parametrize("header", ["Bearer abc", "Basic !!!not-base64!!!", "Basic " + "bm9jb2xvbg=="])
def test_unusable_authorization_header_is_invalid_client(deployment: Running, header: str) -> None:
    request = _request("http-json", client_id=None, client_secret=None, scope=LOCK_SCOPE)
    reply = send(deployment, "/token", family="http-json", message=request, headers={"Authorization": header})
    assert reply.status == 401
    assert reply.error().error == ErrorCode.INVALID_CLIENT


def test_basic_and_body_secret_is_invalid_request(deployment: Running) -> None:
    """RFC 6749 §2.3: one authentication method per request."""
    request = _request("http-cbor", client_id=None, scope=LOCK_SCOPE)
    reply = send(
        deployment,
        "/token",
        family="http-cbor",
        message=request,
        headers={"Authorization": basic(PHONE, SECRETS[PHONE])},
    )
    assert reply.status == 400
    assert reply.error().error == ErrorCode.INVALID_REQUEST


# --- malformed, unsupported, oversized ----------------------------------------------------------------------

MALFORMED = {
    "coap": b"\xa1\x18",  # truncated CBOR map
    "http-cbor": b"\xff\x00garbage",
    "http-json": b'{"client_id": "phone-app", ',
    "http-form": b"client_id=a&client_id=b",  # repeated parameter, RFC 6749 §3.2
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("path", ["/token", "/introspect"])
def test_malformed_body_is_invalid_request(deployment: Running, family: str, path: str) -> None:
    reply = send_raw(deployment, family, path, MALFORMED[family])
    assert reply.status == 400
    assert reply.error() == ErrorResponse(error=ErrorCode.INVALID_REQUEST, error_description="malformed request")


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b'{"scope": 5}', b"\xc3\x28", b'{"a": NaN}'])
def test_wrong_json_shapes_are_invalid_request(deployment: Running, body: bytes) -> None:
    reply = send_raw(deployment, "http-json", "/token", body)
    assert reply.status == 400
    assert reply.error().error == ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize("body", [b"client_id=%ff%fe", b"a=1&&b", b"\xff=1"])
def test_bad_form_encodings_are_invalid_request(deployment: Running, body: bytes) -> None:
    reply = send_raw(deployment, "http-form", "/token", body)
    assert reply.status == 400
    assert reply.error().error == ErrorCode.INVALID_REQUEST


def test_http_unsupported_content_type_is_415(deployment: Running) -> None:
    response = deployment.http.post("/token", content=b"hello", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert response.json()["error"] == "invalid_request"
    missing = deployment.http.post("/token", content=b"")
    assert missing.status_code == 415


def test_coap_unsupported_content_format_is_415(deployment: Running) -> None:
    reply = deployment.coap.post("/token", b'{"a": 1}', content_format=50)  # application/json
    assert reply.code.dotted == "4.15"
    assert ErrorResponse.from_cbor(reply.payload).error == ErrorCode.INVALID_REQUEST


def test_coap_without_content_format_is_read_as_ace_cbor(deployment: Running) -> None:
    request = _request("coap", scope=LOCK_SCOPE)
    reply = deployment.coap.post("/token", request.to_cbor(), content_format=None)
    assert reply.code.dotted == "2.01"


def test_http_wrong_method_is_405(deployment: Running) -> None:
    response = deployment.http.request("GET", "/token")
    assert response.status_code == 405
    assert "POST" in response.headers["allow"]
    assert response.headers["content-type"] == "application/json"
    assert deployment.http.request("GET", "/nowhere").status_code == 404


def test_coap_wrong_method_is_405(deployment: Running) -> None:
    from aiocoap.numbers.codes import Code

    reply = deployment.coap.request("/token", code=Code.GET, content_format=None)
    assert reply.code.dotted == "4.05"


def test_http_oversize_by_content_length_is_413(deployment: Running) -> None:
    body = b"x" * (deployment.settings.max_payload + 1)
    response = deployment.http.post("/token", content=body, headers={"Content-Type": "application/ace+cbor"})
    assert response.status_code == 413
    assert ErrorResponse.from_cbor(response.content).error == ErrorCode.INVALID_REQUEST


def test_http_oversize_chunked_is_413(deployment: Running) -> None:
    """A body without Content-Length is cut at MAX_CONTENT_LENGTH while it is read."""
    limit = deployment.settings.max_payload

    def chunks() -> Any:
        for _ in range(4):
            yield b"a" * (limit // 2)

    response = deployment.http.post("/token", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"] == "invalid_request"


def test_coap_oversize_blockwise_is_413_with_size1(deployment: Running) -> None:
    """aiocoap sends a large payload block-wise with Size1 (RFC 7959 §4): refused before reassembly."""
    limit = deployment.settings.max_payload
    reply = deployment.coap.post("/token", b"\xa0" * (limit + 100))
    assert reply.code.dotted == "4.13"
    assert reply.size1 == limit


# --- 5.00 / 500: fixed text on the wire, traceback in the log ------------------------------------------------


def test_internal_error_is_generic(
    deployment: Running, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("database password is hunter2")

    monkeypatch.setattr(deployment.server.token_endpoint, "handle", explode)
    caplog.set_level(logging.ERROR, logger="ostiary.as.transport")
    request = _request("http-json", scope=LOCK_SCOPE)
    http = send(deployment, "/token", family="http-json", message=request)
    assert http.status == 500
    assert http.content_type == "application/json"
    assert b"hunter2" not in http.body and b"RuntimeError" not in http.body
    coap = send(deployment, "/token", family="coap", message=_request("coap", scope=LOCK_SCOPE))
    assert coap.status == 500
    assert coap.body == b""
    assert "hunter2" in caplog.text and "Traceback" in caplog.text  # server side only


# --- discovery --------------------------------------------------------------------------------------------------


def test_metadata_document(deployment: Running) -> None:
    response = deployment.http.request("GET", "/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    doc = response.json()
    http = deployment.settings.effective_http_base_url
    assert doc["issuer"] == ISSUER
    assert doc["token_endpoint"] == f"{http}/token"
    assert doc["introspection_endpoint"] == f"{http}/introspect"
    # Issue #5: apps signing users in (authorization code with PKCE, refresh tokens; public clients use "none").
    assert doc["grant_types_supported"] == ["authorization_code", "client_credentials", "refresh_token"]
    assert doc["token_endpoint_auth_methods_supported"] == ["client_secret_basic", "client_secret_post", "none"]
    assert doc["authorization_endpoint"] == f"{http}/authorize"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["ace_profiles_supported"] == ["coap_oscore", "coap_dtls"]
    coap = f"coap://{deployment.settings.coap_host}:{deployment.settings.coap_port}"
    assert doc["coap_token_endpoint"] == f"{coap}/token"
    # RFC 8414 §3: the issuer's path appended to the well-known path.
    again = deployment.http.request("GET", "/.well-known/oauth-authorization-server/token")
    assert again.json() == doc


def test_well_known_core_lists_the_endpoints(deployment: Running) -> None:
    from aiocoap.numbers.codes import Code

    reply = deployment.coap.request("/.well-known/core", code=Code.GET, content_format=None)
    assert reply.code.dotted == "2.05"
    links = reply.payload.decode()
    assert '</token>;ct="19"' in links
    assert '</introspect>;ct="19"' in links
    assert "rt=" not in links


# --- logs ---------------------------------------------------------------------------------------------------------


def test_secrets_never_logged(deployment: Running, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    master_key = (deployment.settings.home / "master.key").read_text().strip()
    for family in FAMILIES:
        send(deployment, "/token", family=family, message=_request(family, scope=LOCK_SCOPE))
        send(
            deployment,
            "/token",
            family=family,
            message=_request(family, client_secret=b"wrong-secret", scope=LOCK_SCOPE),
        )
    send(
        deployment,
        "/token",
        family="http-form",
        message=_request("http-form", client_id=None, client_secret=None, scope=LOCK_SCOPE),
        headers={"Authorization": basic(PHONE, SECRETS[PHONE])},
    )
    assert caplog.records, "the requests should have logged something"
    for secret in (SECRETS[PHONE], "wrong-secret", master_key):
        assert secret not in caplog.text


def test_coap_token_whose_identifier_is_taken_is_issued_with_fresh_ones(
    deployment: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CoAP side waits for the queued commit (TokenEndpoint.handle_queued); a duplicate identifier there is
    retried in a thread with new identifiers, and the client sees one ordinary 2.01."""
    endpoint = deployment.server.token_endpoint
    original = endpoint._random
    drawn: list[bytes] = []

    def recording(n: int) -> bytes:
        drawn.append(original(n))
        return drawn[-1]

    monkeypatch.setattr(endpoint, "_random", recording)
    first = send(deployment, "/token", family="coap", message=_request("coap", scope=LOCK_SCOPE))
    assert first.status == success_status("coap")
    replay = [drawn[-1]]  # the same OSCORE id again, once (and the same random bytes of the cti)

    def replaying(n: int) -> bytes:
        return replay.pop() if replay else original(n)

    monkeypatch.setattr(endpoint, "_random", replaying)
    second = send(deployment, "/token", family="coap", message=_request("coap", scope=LOCK_SCOPE))
    assert second.status == success_status("coap") and replay == []
    tokens = [reply.access_information().access_token for reply in (first, second)]
    assert tokens[0] != tokens[1]
    records = [deployment.server.storage.get_by_hash(token_hash(token)) for token in tokens]
    assert all(record is not None for record in records)
    assert records[0].cti != records[1].cti  # type: ignore[union-attr]
    assert _verify(deployment, tokens[1]).cti == records[1].cti  # type: ignore[union-attr]
