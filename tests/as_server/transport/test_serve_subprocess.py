"""``ostiary as serve`` as a real process: CoAP in the process, HTTP in gunicorn, a clean exit 0 on SIGTERM, and
nothing secret in what it logs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ace_core import cose, cwt
from ace_core.keys import CoseKey
from ace_core.messages import AccessInformation, TokenRequest
from ace_core.scope import AifScope
from ostiary.cli import main
from tests.as_server.transport.harness import TIMEOUT, Coap, LoopThread, assert_no_traceback, free_port

#: How long the server may take to answer its first request (gunicorn boots workers first), and the poll interval.
STARTUP_TIMEOUT = 30.0
POLL_INTERVAL = 0.1
#: Bound on the clean shutdown after SIGTERM.
SHUTDOWN_TIMEOUT = 30.0

POLICY = 'rules:\n  - client: phone-app\n    audience: front-door\n    scope: "/lock:GET,PUT"\n'


def _cli(home: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["as", "--home", str(home), *argv]) == 0
    return capsys.readouterr().out


def _value(out: str, label: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(label)).split(":", 1)[1].strip()


def _wait_for_http(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        assert proc.poll() is None, "ostiary as serve exited early"
        try:
            if httpx.get(f"{base}/.well-known/oauth-authorization-server", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(POLL_INTERVAL)
    raise AssertionError("the HTTP side did not come up")


def test_serve_both_transports_and_stop_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in [v for v in os.environ if v.startswith("OSTIARY_")]:
        monkeypatch.delenv(var)
    home = tmp_path / "home"
    _cli(home, capsys, "init")
    (home / "policy.yaml").write_text(POLICY)
    rs_out = _cli(home, capsys, "rs", "add", "front-door", "--resources", "/lock:GET,PUT")
    lock_key = cose.KeySet([_lock_key(rs_out)])
    secret = _value(_cli(home, capsys, "client", "add", "phone-app", "--audience", "front-door"), "client_secret")
    master_key = (home / "master.key").read_text().strip()

    coap_port, http_port = free_port(socket.SOCK_DGRAM), free_port()
    env = {**os.environ, "OSTIARY_HOME": str(home), "OSTIARY_HTTP_WORKERS": "1", "OSTIARY_HTTP_THREADS": "2"}
    log = tmp_path / "serve.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ostiary",
                "as",
                "serve",
                "--coap-port",
                str(coap_port),
                "--http-port",
                str(http_port),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
        )
    try:
        base = f"http://127.0.0.1:{http_port}"
        _wait_for_http(base, proc)
        scope = AifScope.parse_spec("/lock:GET,PUT")

        # HTTP (gunicorn): a form request with HTTP Basic.
        response = httpx.post(
            f"{base}/token",
            data={"audience": "front-door", "scope": scope.to_json_text()},
            auth=("phone-app", secret),
            timeout=TIMEOUT,
        )
        assert response.status_code == 200, response.text
        assert_no_traceback(response.content)
        http_token = AccessInformation.from_json_bytes(response.content).access_token

        # CoAP (this process's asyncio loop): the same request in CBOR.
        loops = LoopThread()
        try:
            import aiocoap

            client = loops.run(aiocoap.Context.create_client_context())
            try:
                request = TokenRequest(
                    client_id="phone-app", client_secret=secret.encode(), audience="front-door", scope=scope.to_cbor()
                )
                reply = Coap(loops, coap_port, client).post("/token", request.to_cbor())
            finally:
                loops.run(client.shutdown())
        finally:
            loops.close()
        assert reply.code.dotted == "2.01"
        coap_token = AccessInformation.from_cbor(reply.payload).access_token

        for token in (http_token, coap_token):
            claims = cwt.verify(token, lock_key, now=time.time(), audience="front-door")
            assert claims.scope == scope.to_cbor()
        wrong = httpx.post(
            f"{base}/token", data={"audience": "front-door"}, auth=("phone-app", "wrong"), timeout=TIMEOUT
        )
        assert wrong.status_code == 401

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=SHUTDOWN_TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)
    text = log.read_text()
    assert f"coap://127.0.0.1:{coap_port}/token" in text
    assert f"http://127.0.0.1:{http_port}/token" in text
    assert "Booting worker" in text  # gunicorn's own log reached the same stream
    assert secret not in text and master_key not in text
    assert "Traceback" not in text


def _lock_key(rs_out: str) -> CoseKey:
    return CoseKey.from_cbor(bytes.fromhex(_value(rs_out, "  hex")))


def test_serve_without_init_fails_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.startswith("OSTIARY_")]:
        monkeypatch.delenv(var)
    result = subprocess.run(
        [sys.executable, "-m", "ostiary", "as", "--home", str(tmp_path / "none"), "serve"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 3,
        env={**os.environ},
    )
    assert result.returncode == 1
    assert result.stderr.startswith("ostiary: error: no master key")
    assert "Traceback" not in result.stderr


def test_serve_exits_nonzero_when_gunicorn_dies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import re

    for var in [v for v in os.environ if v.startswith("OSTIARY_")]:
        monkeypatch.delenv(var)
    home = tmp_path / "home"
    _cli(home, capsys, "init")
    coap_port, http_port = free_port(socket.SOCK_DGRAM), free_port()
    env = {**os.environ, "OSTIARY_HOME": str(home), "OSTIARY_HTTP_WORKERS": "1"}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ostiary",
                "as",
                "serve",
                "--coap-port",
                str(coap_port),
                "--http-port",
                str(http_port),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    try:
        _wait_for_http(f"http://127.0.0.1:{http_port}", proc)
        match = re.search(r"gunicorn pid (\d+)", log.read_text())
        assert match is not None
        os.kill(int(match.group(1)), signal.SIGKILL)  # the child of the server this test started
        assert proc.wait(timeout=SHUTDOWN_TIMEOUT) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)
    assert "gunicorn (HTTP) exited unexpectedly" in log.read_text()
