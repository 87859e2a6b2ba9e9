"""Rate limiting (4.29 / 429), small payload limits (4.13 / 413), restarting an AS from its ``OSTIARY_HOME``, and
two AS instances sharing one PostgreSQL database."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ace_core import cose, cwt
from ace_core.messages import IntrospectionRequest, TokenRequest
from ace_core.registry import ErrorCode, TokenParam
from ace_core.scope import AifScope
from ace_core.status import Status
from as_server.app import AuthorizationServer
from as_server.models import Client
from as_server.sealing import hash_secret
from tests.as_server.transport.harness import (
    ISSUER,
    LOCK_INTROSPECTION_SECRET,
    LOCK_SCOPE,
    SECRETS,
    LoopThread,
    Running,
    init_home,
    start,
)
from tests.as_server.transport.wire import basic, send, send_raw

LIMIT = 2
SMALL_PAYLOAD = 600


def _token_request(client_id: str = "phone-app", secret: str | None = None, *, json: bool = False) -> TokenRequest:
    aif = AifScope.parse_spec(LOCK_SCOPE)
    return TokenRequest(
        client_id=client_id,
        client_secret=(secret if secret is not None else SECRETS[client_id]).encode(),
        audience="front-door",
        scope=aif.to_json_text() if json else aif.to_cbor(),
    )


def _introspect(token: bytes) -> IntrospectionRequest:
    return IntrospectionRequest(
        token=token, client_id="front-door", extra={int(TokenParam.CLIENT_SECRET): LOCK_INTROSPECTION_SECRET.encode()}
    )


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory, loops: LoopThread) -> Iterator[Running]:
    """An AS that allows two failed authentications per window and 600-byte requests."""
    settings = init_home(
        tmp_path_factory.mktemp("strict"), auth_failure_limit=LIMIT, auth_failure_window=600, max_payload=SMALL_PAYLOAD
    )
    server = AuthorizationServer.from_settings(settings)
    running = start(server, loops)
    yield running
    running.stop()
    server.close()


def test_rate_limit_over_both_transports(strict: Running) -> None:
    for _ in range(LIMIT):
        reply = send(strict, "/token", family="http-cbor", message=_token_request(secret="wrong"))
        assert reply.status == 401
    limited = send(strict, "/token", family="http-json", message=_token_request(json=True))  # even the right secret
    assert limited.status == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 600
    assert limited.body == b""
    coap = send(strict, "/token", family="coap", message=_token_request())
    assert coap.status == Status.TOO_MANY_REQUESTS  # 4.29, RFC 8516
    assert 1 <= int(coap.headers["max-age"]) <= 600
    assert coap.body == b""


def test_coap_single_datagram_over_limit_is_413(strict: Running) -> None:
    reply = strict.coap.post("/token", b"\xa0" * (SMALL_PAYLOAD + 100))  # under 1024: no block-wise transfer
    assert reply.code.dotted == "4.13"
    assert reply.size1 == SMALL_PAYLOAD


@pytest.mark.parametrize("family", ["http-cbor", "http-json", "http-form"])
def test_http_over_limit_is_413(strict: Running, family: str) -> None:
    body = b"a" * (SMALL_PAYLOAD + 1)
    reply = send_raw(strict, family, "/introspect", body)
    assert reply.status == 413
    assert reply.error().error == ErrorCode.INVALID_REQUEST


def test_restart_keeps_clients_servers_keys_and_tokens(tmp_path: Path, loops: LoopThread) -> None:
    settings = init_home(tmp_path / "home")
    first = AuthorizationServer.from_settings(settings)
    running = start(first, loops)
    try:
        reply = send(running, "/token", family="coap", message=_token_request())
        assert reply.status == Status.CREATED
        token = reply.access_information().access_token
        signing = first.storage.signing_key()
        lock_key = running.provisioned.lock_key
    finally:
        running.stop()
        first.close()

    second = AuthorizationServer.from_settings(settings)
    running = start(second, loops)  # provision() finds everything in place and adds nothing
    try:
        assert second.storage.signing_key() == signing
        assert running.provisioned.lock_key == lock_key
        assert second.storage.get_client("phone-app") is not None
        active = send(running, "/introspect", family="coap", message=_introspect(token))
        assert active.status == Status.CREATED and active.introspection().active is True
        again = send(
            running,
            "/token",
            family="http-form",
            message=dataclasses.replace(_token_request(), client_id=None, client_secret=None, scope=None),
            headers={"Authorization": basic("phone-app", SECRETS["phone-app"])},
        )
        assert again.status == 400 and again.error().error == ErrorCode.INVALID_SCOPE  # no default scope: RFC 6749
        claims = cwt.verify(token, cose.KeySet([lock_key]), now=time.time(), audience="front-door", issuer=ISSUER)
        assert claims.aud == "front-door"
    finally:
        running.stop()
        second.close()


def test_two_instances_share_one_postgresql_database(tmp_path: Path, postgres_url: str, loops: LoopThread) -> None:
    """Same home (same master key), one database, two AS objects each serving HTTP and CoAP."""
    settings = init_home(tmp_path / "home", database_url=postgres_url)
    a_server = AuthorizationServer.from_settings(settings)
    b_server = AuthorizationServer.from_settings(dataclasses.replace(settings, coap_port=settings.coap_port + 1))
    a = start(a_server, loops)
    b = start(b_server, loops)
    try:
        # A token issued by A (HTTP) is active at B (CoAP).
        issued = send(
            a,
            "/token",
            family="http-json",
            message=dataclasses.replace(_token_request(), scope=AifScope.parse_spec(LOCK_SCOPE).to_json_text()),
        )
        assert issued.status == 200, issued.body
        token = issued.access_information().access_token
        seen = send(b, "/introspect", family="coap", message=_introspect(token))
        assert seen.status == Status.CREATED and seen.introspection().active is True

        # A client registered through A's storage works at B right away.
        a_server.storage.add_client(
            Client(
                client_id="late-app", secret_hash=hash_secret("late-app-secret"), audiences=frozenset({"front-door"})
            )
        )
        late = send(b, "/token", family="coap", message=_token_request("late-app", "late-app-secret"))
        assert late.status == Status.CREATED, late.body
        back = send(
            a,
            "/introspect",
            family="http-cbor",
            message=IntrospectionRequest(token=late.access_information().access_token),
            headers={"Authorization": basic("front-door", LOCK_INTROSPECTION_SECRET)},
        )
        assert back.status == 200 and back.introspection().client_id == "late-app"
    finally:
        b.stop()
        a.stop()
        b_server.close()
        a_server.close()
