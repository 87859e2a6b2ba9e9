"""``ostiary lock serve --bootstrap`` as a real process against a real ``ostiary as serve`` (issue #7): a factory
batch made with ``ostiary factory batch``, the lock provisioning itself over DTLS, registering at the AS (its last
contact visible in ``ostiary as rs show``), serving ``/authz-info`` and OSCORE with a token from the AS's token
endpoint, de-registering on SIGTERM, and starting again from its stored credentials without a new bootstrap."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ace_core.lwm2m.bundle import BundleKey, parse_key_file
from as_server.transport.bootstrap_coap import dtls_available
from client_sdk.client import AceClient
from ostiary.cli import main
from resource_server.credentials import CredentialStore
from tests.as_server.transport.harness import TIMEOUT, free_port

# `make test` installs the dtls extra; without DTLSSocket these tests fail (see test_bootstrap_coap.py).
assert dtls_available(), "DTLSSocket (the dtls extra) is not installed: pip install 'ostiary[dtls]'"

#: Bound on a process's start-up (interpreter, imports, bootstrap) and on its clean exit after SIGTERM.
PROCESS_TIMEOUT = 30.0
POLL_INTERVAL = 0.1
APP = "lock-app"


def _as(home: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["as", "--home", str(home), *argv]) == 0
    return capsys.readouterr().out


def _value(out: str, label: str) -> str:
    return next(line for line in out.splitlines() if line.strip().startswith(label)).split(":", 1)[1].strip()


def _wait(what: str, check: Callable[[], bool], *procs: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while time.monotonic() < deadline:
        for proc in procs:
            assert proc.poll() is None, f"process {proc.pid} exited early while waiting for {what}"
        if check():
            return
        time.sleep(POLL_INTERVAL)
    raise AssertionError(f"timed out waiting for {what}")


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(PROCESS_TIMEOUT)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes started by the test; whichever still runs at the end is killed (and reaped)."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in reversed(started):
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)


def test_lock_serve_bootstrap_against_as_serve(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    for var in [v for v in os.environ if v.startswith("OSTIARY_")]:
        monkeypatch.delenv(var)
    home = tmp_path / "home"
    _as(home, capsys, "init")
    coap_port, http_port = free_port(socket.SOCK_DGRAM), free_port()
    bs_port, lock_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    while bs_port in (coap_port, lock_port) or lock_port == coap_port:
        bs_port, lock_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)

    # the factory: one device, claimed for a site, whose bundle names this AS's bootstrap port
    batch = tmp_path / "batch"
    argv = ["factory", "--home", str(home), "batch", "--count", "1", "--model", "L1", "--site", "building-a"]
    argv += ["--bootstrap-uri", f"coaps://127.0.0.1:{bs_port}", "--out", str(batch)]
    assert main(argv) == 0
    capsys.readouterr()
    serial = "L1-00000001"
    assert f"{serial}.bundle" in (batch / "manifest.csv").read_text()

    # an app that may open the lock
    policy = f'rules:\n  - client: {APP}\n    audience: {serial}\n    scope: "/lock:GET,PUT"\n'
    (home / "policy.yaml").write_text(policy)
    secret = _value(_as(home, capsys, "client", "add", APP, "--audience", serial), "client_secret")

    env = {k: v for k, v in os.environ.items() if not k.startswith("OSTIARY_")}
    as_env = {**env, "OSTIARY_HOME": str(home), "OSTIARY_HTTP_WORKERS": "1", "OSTIARY_HTTP_THREADS": "2"}
    as_env["OSTIARY_BOOTSTRAP_DTLS_PORT"] = str(bs_port)
    as_log = tmp_path / "as.log"
    as_argv = [sys.executable, "-m", "ostiary", "as", "serve", "--coap-port", str(coap_port)]
    with as_log.open("wb") as output:
        as_proc = subprocess.Popen(
            [*as_argv, "--http-port", str(http_port)],
            env=as_env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
        )
    processes.append(as_proc)
    _wait("the AS", lambda: "HTTP endpoints on" in as_log.read_text(), as_proc)  # the bootstrap server starts first
    assert f"bootstrap server on coaps://127.0.0.1:{bs_port}" in as_log.read_text()

    state = tmp_path / "lock-state"
    token_uri = f"coap://127.0.0.1:{coap_port}/token"
    lock_argv = [sys.executable, "-m", "ostiary", "lock", "serve", "--bootstrap", str(batch / "bundles.zip")]
    lock_argv += ["--bundle-key", str(batch / "bundle.key"), "--serial", serial, "--state-dir", str(state)]
    lock_argv += ["--port", str(lock_port), "--as-uri", token_uri]  # --issuer: the AS's default

    def start_lock(log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as output:
            proc = subprocess.Popen(lock_argv, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=output)
        processes.append(proc)
        return proc

    def shown() -> str:
        """``ostiary as rs show SERIAL`` ("" while the lock is not a resource server yet: before its bootstrap)."""
        code = main(["as", "--home", str(home), "rs", "show", serial])
        out = capsys.readouterr().out
        return out if code == 0 else ""

    lock_log = tmp_path / "lock.log"
    lock = start_lock(lock_log)
    _wait("the lock's registration", lambda: "last contact" in shown(), as_proc, lock)
    out = shown()
    assert _value(out, "enabled") == "yes"
    assert re.search(r"\(\d+ s ago\)$", _value(out, "last contact")), out  # contact within the last minute
    assert f"endpoint urn:dev:ops:ostiary-{serial} from 127.0.0.1:" in _value(out, "registration")
    credentials = CredentialStore(state / "credentials.cbor").load()
    assert credentials is not None and credentials.audience == serial
    stored = (state / "credentials.cbor").read_bytes()

    async def open_the_door() -> tuple[int, bool]:
        async with AceClient(token_uri, APP, secret, timeout=TIMEOUT) as app:
            response = await app.request("PUT", f"coap://127.0.0.1:{lock_port}/lock", b"unlock")
            return response.status, response.protected

    # discovery (4.01 with hints naming the serial), token from the AS, /authz-info, OSCORE
    assert asyncio.run(asyncio.wait_for(open_the_door(), 3 * TIMEOUT)) == (204, True)

    assert _stop(lock) == 0
    assert "last contact" not in shown()  # de-registered
    text = lock_log.read_text()
    assert f"serving coap://127.0.0.1:{lock_port} (audience {serial}, key {serial}#1)" in text
    assert "Bootstrap-Pack delivered" in text and "registered as" in text
    assert "Traceback" not in text
    for secret_bytes in (credentials.current.key, _bootstrap_psk(batch, serial)):
        assert secret_bytes.hex() not in text.lower()

    # a restart uses the stored credentials: no new bootstrap, registered again
    restart_log = tmp_path / "lock-restart.log"
    lock = start_lock(restart_log)
    _wait("the lock's second registration", lambda: "last contact" in shown(), as_proc, lock)
    assert (state / "credentials.cbor").read_bytes() == stored
    assert _stop(lock) == 0
    assert "Bootstrap-Pack" not in restart_log.read_text()

    assert _stop(as_proc) == 0
    assert "Traceback" not in as_log.read_text()


def _bootstrap_psk(batch: Path, serial: str) -> bytes:
    """The device's factory PSK, from its sealed bundle (as the flashing station reads it)."""
    key = BundleKey(parse_key_file((batch / "bundle.key").read_text()))
    with zipfile.ZipFile(batch / "bundles.zip") as archive:
        return key.open(archive.read(f"{serial}.bundle")).psk


def test_lock_serve_bootstrap_checks_its_port_before_bootstrapping(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock that could not serve must not bootstrap first: the AS would count the key as delivered and the
    lock would have stored credentials for a lock that never ran."""
    from resource_server.transport.lwm2m_client import BootstrapClient

    for var in [v for v in os.environ if v.startswith("OSTIARY_")]:
        monkeypatch.delenv(var)
    home = tmp_path / "home"
    _as(home, capsys, "init")
    batch = tmp_path / "batch"
    argv = ["factory", "--home", str(home), "batch", "--count", "1", "--model", "L1", "--site", "building-a"]
    bs_port = free_port(socket.SOCK_DGRAM)  # nothing listens there: the lock must not even try
    assert main([*argv, "--bootstrap-uri", f"coaps://127.0.0.1:{bs_port}", "--out", str(batch)]) == 0
    capsys.readouterr()
    attempts: list[str] = []

    async def recorded(self: BootstrapClient, *args: object, **kwargs: object) -> None:
        attempts.append("bootstrap")
        raise AssertionError("bootstrapped before checking the lock's port")

    for name in ("bootstrap", "pull", "classic"):
        monkeypatch.setattr(BootstrapClient, name, recorded)
    state = tmp_path / "lock-state"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as aiocoap binds its servers
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        lock_argv = ["lock", "serve", "--bootstrap", str(batch / "bundles.zip"), "--serial", "L1-00000001"]
        lock_argv += ["--bundle-key", str(batch / "bundle.key"), "--state-dir", str(state), "--port", str(port)]
        assert main(lock_argv) == 1
    err = capsys.readouterr().err
    assert f"UDP port {port} on 127.0.0.1 is already in use by another server" in err
    assert attempts == []
    assert not (state / "credentials.cbor").exists()
