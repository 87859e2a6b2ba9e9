"""The introspection endpoint over both transports (RFC 9200 §5.9, RFC 7662): active, inactive (2.01 / 200),
invalid caller credentials (4.01 / 401) and a caller that may not introspect (4.03 / 403 with no payload)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from ace_core import cwt
from ace_core.messages import IntrospectionRequest, TokenRequest
from ace_core.registry import AceProfile, ErrorCode, TokenParam
from ace_core.scope import AifScope
from ace_core.status import Status
from tests.as_server.transport.harness import ISSUER, LOCK_INTROSPECTION_SECRET, LOCK_SCOPE, SECRETS, Running
from tests.as_server.transport.wire import FAMILIES, basic, send, success_status


@pytest.fixture(scope="module")
def issued(deployment: Running) -> bytes:
    """A token for front-door, issued over CoAP."""
    request = TokenRequest(
        client_id="phone-app",
        client_secret=SECRETS["phone-app"].encode(),
        audience="front-door",
        scope=AifScope.parse_spec(LOCK_SCOPE).to_cbor(),
    )
    reply = send(deployment, "/token", family="coap", message=request)
    assert reply.status == Status.CREATED
    return reply.access_information().access_token


def _introspect(dep: Running, family: str, token: bytes, caller: str, secret: str) -> Any:
    """Credentials in the payload on CoAP (key 25) and in JSON bodies; HTTP Basic for CBOR and form bodies."""
    if family == "coap":
        request = IntrospectionRequest(
            token=token, client_id=caller, extra={int(TokenParam.CLIENT_SECRET): secret.encode()}
        )
        return send(dep, "/introspect", family=family, message=request)
    if family == "http-json":
        request = IntrospectionRequest(token=token, client_id=caller, extra={"client_secret": secret})
        return send(dep, "/introspect", family=family, message=request)
    request = IntrospectionRequest(token=token)
    return send(dep, "/introspect", family=family, message=request, headers={"Authorization": basic(caller, secret)})


@pytest.mark.parametrize("family", FAMILIES)
def test_active_token(deployment: Running, issued: bytes, family: str) -> None:
    reply = _introspect(deployment, family, issued, "front-door", LOCK_INTROSPECTION_SECRET)
    assert reply.status == success_status(family)
    result = reply.introspection()
    assert result.active is True
    assert result.iss == ISSUER
    assert result.aud == "front-door"
    assert result.client_id == "phone-app"
    assert result.ace_profile == AceProfile.COAP_OSCORE
    spec = AifScope.parse_spec(LOCK_SCOPE)
    assert result.scope == (spec.to_cbor() if reply.is_cbor else spec.to_json_text())
    # The cnf of the introspection response is the token's (RFC 9201 §4).
    claims = cwt.verify(issued, _keys(deployment), now=None, audience="front-door", require_expiry=False)
    assert claims.cnf is not None and result.cnf == claims.cnf.to_cbor_map()


def _keys(dep: Running) -> Any:
    from ace_core import cose

    return cose.KeySet([dep.provisioned.lock_key])


@pytest.mark.parametrize("family", FAMILIES)
def test_unknown_token_is_inactive_not_an_error(deployment: Running, family: str) -> None:
    reply = _introspect(deployment, family, os.urandom(40), "front-door", LOCK_INTROSPECTION_SECRET)
    assert reply.status == success_status(family)  # RFC 9200 §5.9.2: inactive is a success
    assert reply.introspection().active is False


@pytest.mark.parametrize("family", FAMILIES)
def test_wrong_caller_secret_is_401(deployment: Running, issued: bytes, family: str) -> None:
    reply = _introspect(deployment, family, issued, "front-door", "not-the-secret")
    assert reply.status == Status.UNAUTHORIZED
    assert reply.error().error == ErrorCode.INVALID_CLIENT


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("caller", "secret"), [("phone-app", SECRETS["phone-app"]), ("sensors", "anything")])
def test_caller_not_allowed_is_403_without_payload(
    deployment: Running, issued: bytes, family: str, caller: str, secret: str
) -> None:
    """A client (not an RS), or an RS without an introspection secret: 4.03 with no payload (RFC 9200 §5.9.3)."""
    reply = _introspect(deployment, family, issued, caller, secret)
    assert reply.status == Status.FORBIDDEN
    assert reply.body == b""


def test_introspection_without_credentials_is_401(deployment: Running, issued: bytes) -> None:
    reply = send(deployment, "/introspect", family="coap", message=IntrospectionRequest(token=issued))
    assert reply.status == Status.UNAUTHORIZED
    assert reply.error().error == ErrorCode.INVALID_CLIENT
