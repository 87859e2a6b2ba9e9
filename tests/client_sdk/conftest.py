"""Fixtures of the client SDK's end-to-end tests (see :mod:`tests.client_sdk.lockworld`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from as_server.app import AuthorizationServer
from tests.as_server.transport.harness import LoopThread, init_home, start
from tests.client_sdk.lockworld import POLICY, Lock, World, register


@pytest.fixture(scope="module")
def loops() -> Iterator[LoopThread]:
    loop_thread = LoopThread()
    yield loop_thread
    loop_thread.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, loops: LoopThread) -> Iterator[World]:
    home: Path = tmp_path_factory.mktemp("as-home")
    settings = init_home(home)
    (home / "policy.yaml").write_text(POLICY)
    server = AuthorizationServer.from_settings(settings)
    running = start(server, loops)
    try:
        yield World(running, register(running))
    finally:
        running.stop()
        server.close()


@pytest.fixture
def lock(world: World, loops: LoopThread) -> Iterator[Lock]:
    the_lock = Lock(world, loops, "front-door")
    yield the_lock
    the_lock.stop()
