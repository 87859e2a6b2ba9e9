"""The balanced gthread worker (:mod:`as_server.transport.gunicorn_balance`) under a real gunicorn: 32 keep-alive
connections opened one after another end up 16 and 16 on two workers (plain gthread leaves the split to a race,
which put all 32 on one worker in some benchmark runs)."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from as_server.server import WORKER_CLASS
from benchmarks.bench_as import connection_split
from tests.as_server.transport.harness import free_port

ROOT = Path(__file__).resolve().parents[3]
#: Bound on every wait here (seconds); reached only when a test fails.
TIMEOUT = 20.0
CONNECTIONS = 32


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    log = tmp_path / "gunicorn.log"
    argv = [sys.executable, "-m", "gunicorn", "-k", WORKER_CLASS, "--workers", "2", "--threads", "2"]
    argv += ["--bind", f"127.0.0.1:{port}", "--no-control-socket", "tests.as_server.transport.wsgi_hello:app"]
    with open(log, "wb") as sink:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=sink)
    try:
        deadline = time.monotonic() + TIMEOUT
        while len(_children(proc.pid)) < 2 or not _answers(port):
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.05)
        yield port, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _answers(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read() == b"hello"
    except OSError:
        return False
    finally:
        conn.close()


def _open(port: int) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    conn.request("GET", "/")  # HTTP/1.1: the connection stays open (keep-alive)
    assert conn.getresponse().read() == b"hello"
    return conn


def _wait_for_split(workers: list[int], port: int, done: Any) -> list[int]:
    deadline = time.monotonic() + TIMEOUT
    while not done(split := connection_split(workers, port)):
        assert time.monotonic() < deadline, f"connections held: {split}"
        time.sleep(0.05)
    return split


def test_keep_alive_connections_are_spread_evenly(server: tuple[int, subprocess.Popen[bytes]]) -> None:
    port, proc = server
    workers = _children(proc.pid)
    # Both workers running: a booting worker takes no connections, so the other takes them meanwhile.
    warmup = [_open(port)]
    deadline = time.monotonic() + TIMEOUT
    while len(connection_split(workers, port)) < 2:
        assert time.monotonic() < deadline, "the second worker did not start accepting"
        warmup.append(_open(port))
    for conn in warmup:
        conn.close()
    _wait_for_split(workers, port, lambda split: not split)

    connections = []
    try:
        connections = [_open(port) for _ in range(CONNECTIONS)]
        split = _wait_for_split(workers, port, lambda split: sum(split) == CONNECTIONS)
        assert len(split) == 2 and split[0] - split[1] <= 1, split  # 16 + 16 (17 + 15 at worst)
        for conn in connections:  # still served on the connections they have
            conn.request("GET", "/")
            assert conn.getresponse().read() == b"hello"
    finally:
        for conn in connections:
            conn.close()
