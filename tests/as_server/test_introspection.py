"""The introspection endpoint (RFC 9200 §5.9, RFC 7662): active and inactive tokens, who may ask, and the
4.01 / 4.03 / 4.29 answers (§5.9.3)."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import pytest

from ace_core.errors import InvalidClient, InvalidRequest
from ace_core.messages import IntrospectionRequest, IntrospectionResponse
from ace_core.pop import Confirmation
from ace_core.registry import AceProfile, ConfirmationMethod, OscoreInputMaterial, TokenType
from ace_core.status import Status
from as_server.auth import ClientCredentials
from as_server.errors import Forbidden, TooManyRequests
from tests.as_server.fixtures_endpoints import (
    CLIENT_ED25519,
    ISSUER,
    NOW,
    PEER,
    PHONE_SECRET,
    RS_INTROSPECTION_SECRET,
    SENSOR_INTROSPECTION_SECRET,
    World,
    aif,
    open_token,
)

OSC = int(ConfirmationMethod.OSC)
KID = int(ConfirmationMethod.KID)
INACTIVE = IntrospectionResponse(active=False)


@pytest.fixture
def world() -> World:
    return World.create()


def issue(world: World, **fields: Any) -> Any:
    return world.request_token(**({"audience": "lock-aif", "scope": aif("/lock:GET")} | fields))


def expect(error: type[Exception], status: Status, call: Any, *args: Any, **kwargs: Any) -> Any:
    with pytest.raises(error) as info:
        call(*args, **kwargs)
    assert type(info.value) is error
    assert info.value.status == status  # type: ignore[attr-defined]
    return info.value


# --------------------------------------------------------------------------------------------------------------
# Active tokens
# --------------------------------------------------------------------------------------------------------------


def test_active_token(world: World) -> None:
    """RFC 9200 §5.9.2 / RFC 9201 §4: the claims, with ``cnf`` (REQUIRED for PoP tokens) and ``token_type``."""
    response = issue(world, scope=aif("/lock:GET,PUT"))
    claims = open_token(response.access_token)
    result = world.introspect(response.access_token)
    assert result == IntrospectionResponse(
        active=True,
        iss=ISSUER,
        aud="lock-aif",
        exp=NOW + response.expires_in,
        iat=NOW,
        cti=claims.cti,
        cnf=response.cnf,
        scope=aif("/lock:GET,PUT"),
        client_id="phone-app",
        token_type=TokenType.POP,
        ace_profile=AceProfile.COAP_OSCORE,
    )
    assert result.cnf is not None and OscoreInputMaterial.MS in result.cnf[OSC]  # the RS may learn the secret
    assert Confirmation.from_cbor_map(dict(result.cnf)) == claims.cnf


def test_active_rebound_and_rpk_tokens_report_their_cnf(world: World) -> None:
    first = issue(world)
    material_id = first.cnf[OSC][OscoreInputMaterial.ID]
    update = issue(world, req_cnf={KID: material_id})
    assert world.introspect(update.access_token).cnf == {KID: material_id}
    rpk = issue(world, req_cnf=Confirmation(cose_key=CLIENT_ED25519.public()).to_cbor_map())
    result = world.introspect(rpk.access_token)
    assert result.active and result.ace_profile == AceProfile.COAP_DTLS
    assert result.cnf == open_token(rpk.access_token).cnf.to_cbor_map()  # type: ignore[union-attr]


def test_text_scope_audience(world: World) -> None:
    token = world.request_token(
        audience="sensor-text", scope="read", req_cnf=Confirmation(cose_key=CLIENT_ED25519.public()).to_cbor_map()
    ).access_token
    result = world.introspect(token, caller="sensor-text", secret=SENSOR_INTROSPECTION_SECRET)
    assert result.active and result.scope == "read" and result.aud == "sensor-text"


def test_active_until_just_before_exp(world: World) -> None:
    response = issue(world)
    world.clock.now = NOW + response.expires_in - 1
    assert world.introspect(response.access_token).active


# --------------------------------------------------------------------------------------------------------------
# Inactive tokens: 2.01 with active=false, not an error (§5.9.2)
# --------------------------------------------------------------------------------------------------------------


def test_unknown_token_is_inactive(world: World) -> None:
    assert world.introspect(b"\xd8\x3d\xd0\x83\x40\xa0\x40") == INACTIVE
    token = issue(world).access_token
    assert world.introspect(token[:-1] + bytes([token[-1] ^ 1])) == INACTIVE  # one bit off: another hash


@pytest.mark.parametrize("delta", [0, 1, 86400])
def test_expired_token_is_inactive(world: World, delta: int) -> None:
    response = issue(world)
    world.clock.now = NOW + response.expires_in + delta  # exp <= now
    assert world.introspect(response.access_token) == INACTIVE


def test_revoked_token_is_inactive(world: World) -> None:
    token = issue(world).access_token
    cti = open_token(token).cti
    assert cti is not None and world.storage.revoke(cti)
    assert world.introspect(token) == INACTIVE


def test_token_of_another_audience_is_inactive(world: World) -> None:
    """The sensor RS learns nothing about the lock's tokens (RFC 7662 §4)."""
    token = issue(world).access_token
    assert world.introspect(token, caller="sensor-text", secret=SENSOR_INTROSPECTION_SECRET) == INACTIVE
    assert world.introspect(token).active


# --------------------------------------------------------------------------------------------------------------
# Who may ask: 4.01 / 4.03 / 4.29 (§5.9.3)
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caller", "secret"),
    [("lock-aif", "wrong"), ("no-such-rs", RS_INTROSPECTION_SECRET), ("lock-aif", SENSOR_INTROSPECTION_SECRET)],
    ids=["wrong-secret", "unknown-caller", "another-rs-secret"],
)
def test_bad_credentials_are_401(world: World, caller: str, secret: str) -> None:
    token = issue(world).access_token
    expect(InvalidClient, Status.UNAUTHORIZED, world.introspect, token, caller=caller, secret=secret)


def test_no_credentials_is_401(world: World) -> None:
    request = IntrospectionRequest(token=issue(world).access_token)
    expect(InvalidClient, Status.UNAUTHORIZED, world.introspection.handle, request, credentials=None, peer=PEER)


def test_rs_without_introspection_secret_is_403(world: World) -> None:
    token = issue(world).access_token
    expect(Forbidden, Status.FORBIDDEN, world.introspect, token, caller="lock-nested", secret="anything")


def test_disabled_rs_is_403_with_the_right_secret_only(world: World) -> None:
    rs = world.storage.get_resource_server("lock-aif")
    assert rs is not None
    world.storage.update_resource_server(replace(rs, enabled=False))
    token = b"\xd8\x3d"
    expect(Forbidden, Status.FORBIDDEN, world.introspect, token)
    expect(InvalidClient, Status.UNAUTHORIZED, world.introspect, token, secret="wrong")


def test_clients_may_not_introspect(world: World) -> None:
    """An authenticated client that is not an RS: "not allowed" (4.03), not "not authenticated" (4.01)."""
    token = issue(world).access_token
    expect(Forbidden, Status.FORBIDDEN, world.introspect, token, caller="phone-app", secret=PHONE_SECRET)
    expect(InvalidClient, Status.UNAUTHORIZED, world.introspect, token, caller="phone-app", secret="wrong")
    expect(
        InvalidClient, Status.UNAUTHORIZED, world.introspect, token, caller="switched-off", secret="switched-off-secret"
    )


def test_payload_client_id_must_match(world: World) -> None:
    request = IntrospectionRequest(token=b"\x00", client_id="sensor-text")
    creds = ClientCredentials("lock-aif", RS_INTROSPECTION_SECRET.encode())
    expect(InvalidRequest, Status.BAD_REQUEST, world.introspection.handle, request, credentials=creds, peer=PEER)
    same = IntrospectionRequest(token=b"\x00", client_id="lock-aif")
    assert world.introspection.handle(same, credentials=creds, peer=PEER) == INACTIVE


def test_rate_limited_like_clients(world: World) -> None:
    token = issue(world).access_token
    for _ in range(world.settings.auth_failure_limit):
        expect(InvalidClient, Status.UNAUTHORIZED, world.introspect, token, secret="wrong")
    error = expect(TooManyRequests, Status.TOO_MANY_REQUESTS, world.introspect, token)
    assert error.retry_after >= 1
    world.clock.now = NOW + world.settings.auth_failure_window  # the failures leave the window; the token lives on
    assert world.introspect(token).active


def test_rate_limit_shared_with_the_token_endpoint(world: World) -> None:
    for _ in range(world.settings.auth_failure_limit):
        expect(InvalidClient, Status.UNAUTHORIZED, world.request_token, secret="wrong")
    expect(TooManyRequests, Status.TOO_MANY_REQUESTS, world.introspect, b"\x00")  # same source address


def test_secrets_never_logged(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = issue(world).access_token
    world.introspect(token)
    with pytest.raises(InvalidClient):
        world.introspect(token, secret=RS_INTROSPECTION_SECRET + "x")
    with pytest.raises(Forbidden):
        world.introspect(token, caller="phone-app", secret=PHONE_SECRET)
    assert RS_INTROSPECTION_SECRET not in caplog.text and PHONE_SECRET not in caplog.text
    assert "lock-aif" in caplog.text
