"""The client SDK's ``AceClient`` against a real AS on loopback (CoAP and HTTP), RFC 9200 §5.8."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from ace_core import cose, cwt
from ace_core.errors import InvalidClient, InvalidRequest, InvalidScope
from ace_core.messages import AccessInformation
from ace_core.pop import Confirmation
from ace_core.registry import AceProfile
from ace_core.scope import AifScope, TextScope
from as_server.app import AuthorizationServer
from client_sdk.client import AceClient
from tests.as_server.transport.harness import ISSUER, SECRETS, LoopThread, Running, init_home, start


@pytest.fixture(scope="module")
def loops() -> Iterator[LoopThread]:
    loop_thread = LoopThread()
    yield loop_thread
    loop_thread.close()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, loops: LoopThread) -> Iterator[Running]:
    settings = init_home(tmp_path_factory.mktemp("home"))
    server = AuthorizationServer.from_settings(settings)
    running = start(server, loops)
    yield running
    running.stop()
    server.close()


def _uris(d: Running) -> dict[str, str]:
    return {"coap": f"coap://127.0.0.1:{d.coap.port}/token", "http": f"{d.http.base}/token"}


def _request(loops: LoopThread, uri: str, secret: str, audience: str, scope: str | bytes) -> AccessInformation:
    async def go() -> AccessInformation:
        client = AceClient(uri, "phone-app", secret)
        try:
            return await client.request_token(audience, scope)
        finally:
            await client.close()

    return loops.run(go())


@pytest.mark.parametrize("transport", ["coap", "http"])
def test_request_token_oscore(deployment: Running, loops: LoopThread, transport: str) -> None:
    scope = AifScope.parse_spec("/lock:GET,PUT")
    info = _request(loops, _uris(deployment)[transport], SECRETS["phone-app"], "front-door", scope.to_cbor())
    assert info.ace_profile == AceProfile.COAP_OSCORE  # asked for with ace_profile null (RFC 9200 §5.8.4.3)
    verified = cwt.verify(
        info.access_token,
        cose.KeySet([deployment.provisioned.lock_key]),
        now=time.time(),
        audience="front-door",
        issuer=ISSUER,
    )
    assert AifScope.from_cbor(verified.scope) == scope  # type: ignore[arg-type]
    assert verified.cnf is not None
    assert verified.cnf.osc == Confirmation.from_cbor_map(dict(info.cnf or {})).osc


@pytest.mark.parametrize("transport", ["coap", "http"])
def test_errors_are_typed(deployment: Running, loops: LoopThread, transport: str) -> None:
    uri = _uris(deployment)[transport]
    with pytest.raises(InvalidClient):
        _request(loops, uri, "wrong-secret", "front-door", AifScope.parse_spec("/lock:GET").to_cbor())
    with pytest.raises(InvalidScope):
        _request(loops, uri, SECRETS["phone-app"], "sensors", TextScope.parse("admin").encode())
    with pytest.raises(InvalidRequest):
        _request(loops, uri, SECRETS["phone-app"], "no-such-lock", "read")


def test_unsupported_scheme() -> None:
    with pytest.raises(ValueError):
        AceClient("ftp://as.example/token", "c", "s")
    assert "s3cr3t" not in repr(AceClient("coap://as.example/token", "c", "s3cr3t"))
