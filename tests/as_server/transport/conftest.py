"""Fixtures of the transport tests: one event loop thread and one running AS per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from as_server.app import AuthorizationServer
from tests.as_server.transport.harness import LoopThread, Running, init_home, start


@pytest.fixture(scope="module")
def loops() -> Iterator[LoopThread]:
    """The event loop the CoAP servers and clients of a module run on."""
    loop_thread = LoopThread()
    yield loop_thread
    loop_thread.close()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, loops: LoopThread) -> Iterator[Running]:
    """An AS from a fresh ``OSTIARY_HOME`` (SQLite), serving HTTP and CoAP on loopback."""
    settings = init_home(tmp_path_factory.mktemp("home"))
    server = AuthorizationServer.from_settings(settings)
    running = start(server, loops)
    yield running
    running.stop()
    server.close()
