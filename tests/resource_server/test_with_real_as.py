"""The lock with tokens from a real AS (in-process, CoAP): the whole RFC 9200/9203 flow, the update of access rights
through the AS (``req_cnf`` by kid, RFC 9203 §3.1/§4.1), and ``ostiary lock serve`` as a separate process that
stops cleanly on SIGTERM and logs no key material."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiocoap
import pytest
from aiocoap.numbers.codes import Code

from ace_core import cbor
from ace_core.messages import AccessInformation, CreationHints, TokenRequest
from ace_core.pop import Confirmation, OscoreMaterial
from ace_core.registry import ConfirmationMethod
from ace_core.scope import AifScope
from as_server.app import AuthorizationServer
from ostiary.cli import main
from tests.as_server.transport.harness import (
    ISSUER,
    SECRETS,
    TIMEOUT,
    LoopThread,
    Running,
    free_port,
    init_home,
    start,
)
from tests.resource_server.support import Client, Lock, rs_config

#: Bound on the lock process's start-up (interpreter + imports) and on its clean exit after SIGTERM.
PROCESS_TIMEOUT = 30.0
#: Pause between readiness probes of the lock process, and the time each probe may take.
POLL_INTERVAL = 0.1
PROBE_TIMEOUT = 0.5


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, loops: LoopThread) -> Iterator[Running]:
    """A real AS (SQLite home, allow-list policy) serving CoAP on loopback; ``front-door`` is registered."""
    settings = init_home(tmp_path_factory.mktemp("home"))
    server = AuthorizationServer.from_settings(settings)
    running = start(server, loops)
    yield running
    running.stop()
    server.close()


def _token(running: Running, scope: str, *, req_cnf: dict[int, object] | None = None) -> AccessInformation:
    request = TokenRequest(
        client_id="phone-app",
        client_secret=SECRETS["phone-app"].encode(),
        audience="front-door",
        scope=AifScope.parse_spec(scope).to_cbor(),
        req_cnf=req_cnf,
    )
    reply = running.coap.post("/token", request.to_cbor())
    assert reply.code.dotted == "2.01", reply
    return AccessInformation.from_cbor(reply.payload)


def _material(info: AccessInformation) -> OscoreMaterial:
    assert info.cnf is not None
    cnf = Confirmation.from_cbor_map(dict(info.cnf))
    assert cnf.osc is not None
    return cnf.osc


def test_full_flow_with_tokens_from_the_as(
    deployment: Running, make_lock: Callable[..., Lock], make_client: Callable[[str], Client]
) -> None:
    lock = make_lock(rs_config(deployment.provisioned.lock_key, issuer=ISSUER, as_uri=deployment.coap.base + "/token"))
    lock.clock.wall = time.time()  # tokens from the real AS carry the real time
    client = make_client(lock.base)
    hints = CreationHints.from_cbor(client.post("/lock", b"", code=Code.GET, content_format=None).payload)
    assert hints.as_uri == deployment.coap.base + "/token" and hints.audience == "front-door"

    info = _token(deployment, "/lock:GET,PUT")
    osc = _material(info)
    assert osc.id is not None
    session = client.establish(info.access_token, osc)
    assert session.put("/lock", b"unlock").dotted == "2.04"
    assert session.get("/battery").dotted == "4.03"

    # Update of access rights (RFC 9203 §3.1): req_cnf names the Input Material by kid; the AS answers without
    # cnf and the new token's cnf is {3: id}; it is posted over the existing OSCORE context (§4.1).
    update = _token(deployment, "/lock:GET,PUT /battery:GET", req_cnf={int(ConfirmationMethod.KID): osc.id})
    assert update.cnf is None
    reply = session.request(Code.POST, "/authz-info", update.access_token, content_format=61)
    assert (reply.dotted, reply.protected, reply.payload) == ("2.01", True, b"")
    assert session.get("/battery").dotted == "2.05"
    assert lock.site.contexts == 1


# -- ostiary lock serve as a process ---------------------------------------------------------------------------


def _wait_ready(loops: LoopThread, uri: str, proc: subprocess.Popen[bytes]) -> None:
    async def probe(ctx: aiocoap.Context) -> bool:
        request = aiocoap.Message(code=Code.GET, uri=uri + "/.well-known/core")
        try:
            response = await asyncio.wait_for(ctx.request(request).response, PROBE_TIMEOUT)
        except (TimeoutError, aiocoap.error.Error):
            return False
        return bool(response.code.is_successful())

    ctx = loops.run(aiocoap.Context.create_client_context())
    try:
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while time.monotonic() < deadline:
            assert proc.poll() is None, "ostiary lock serve exited early"
            if loops.run(probe(ctx)):
                return
            time.sleep(POLL_INTERVAL)
        raise AssertionError("the lock process did not come up")
    finally:
        loops.run(ctx.shutdown())


def test_ostiary_lock_serve_process(
    deployment: Running,
    loops: LoopThread,
    make_client: Callable[[str], Client],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = deployment.provisioned.lock_key
    port = free_port(socket.SOCK_DGRAM)
    config = tmp_path / "lock.toml"
    as_uri = deployment.coap.base + "/token"
    argv = ["lock", "init-config", "--audience", "front-door", "--issuer", ISSUER, "--as-uri", as_uri]
    argv += ["--key", key.to_cbor().hex(), "--port", str(port), "--state-file", str(tmp_path / "lock.state")]
    assert main([*argv, "--out", str(config)]) == 0
    capsys.readouterr()
    # The operator's full audit trail: every accepted token and granted request at INFO (resource_server.config).
    text = config.read_text()
    assert "audit_granted = false" in text  # init-config writes the default, for the operator to find
    config.write_text(text.replace("audit_granted = false", "audit_granted = true"))

    log = tmp_path / "lock.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSTIARY_")}
    with log.open("wb") as output:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ostiary", "lock", "serve", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            env=env,
        )
    try:
        uri = f"coap://127.0.0.1:{port}"
        _wait_ready(loops, uri, proc)
        client = make_client(uri)
        reply = client.post("/lock", b"unlock", code=Code.PUT, content_format=None)
        assert reply.dotted == "4.01"
        hints = CreationHints.from_cbor(reply.payload)
        assert (hints.as_uri, hints.audience) == (as_uri, "front-door")
        assert AifScope.from_cbor(hints.scope or b"") == AifScope.parse_spec("/lock:PUT")

        info = _token(deployment, "/lock:GET,PUT")
        osc = _material(info)
        session = client.establish(info.access_token, osc)
        assert session.put("/lock", b"unlock").dotted == "2.04"
        reply = session.get("/lock", accept="application/cbor")
        assert (reply.dotted, cbor.loads(reply.payload)) == ("2.05", {"locked": False})
        assert session.get("/log").dotted == "4.03"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(PROCESS_TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)
    text = log.read_text()
    assert "serving coap://127.0.0.1:" in text
    assert "accepted token" in text and "authorized PUT /lock" in text and "refused GET /log" in text
    assert "door unlocked by pop_id=" in text
    assert "refused PUT /lock" in text  # the unprotected attempt
    assert "Traceback" not in text
    assert osc.ms is not None
    for secret in (osc.ms.hex(), key.secret().hex(), key.to_cbor().hex()):
        assert secret not in text  # no key material in the logs
    assert (tmp_path / "lock.state").exists()  # written on shutdown
