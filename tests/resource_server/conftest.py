"""Fixtures of the resource-server tests: an event-loop thread per module, locks and clients torn down per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ace_core.keys import CoseKey
from resource_server.config import RsConfig
from tests.as_server.transport.harness import LoopThread
from tests.resource_server.support import Client, Lock, rs_config, shared_key, start_lock


@pytest.fixture(scope="module")
def loops() -> Iterator[LoopThread]:
    """The event loop the locks and clients of a module run on."""
    loop_thread = LoopThread()
    yield loop_thread
    loop_thread.close()


@pytest.fixture
def key() -> CoseKey:
    """A fresh AS<->RS shared key."""
    return shared_key()


@pytest.fixture
def make_lock(loops: LoopThread) -> Iterator[Callable[..., Lock]]:
    """Start in-process locks; every one still running is stopped after the test."""
    locks: list[Lock] = []

    def make(config: RsConfig, **kwargs: Any) -> Lock:
        lock = start_lock(loops, config, **kwargs)
        locks.append(lock)
        return lock

    yield make
    for lock in locks:
        if not lock.stopped:
            lock.stop()


@pytest.fixture
def lock(make_lock: Callable[..., Lock], key: CoseKey) -> Lock:
    """A lock with the default configuration."""
    return make_lock(rs_config(key))


@pytest.fixture
def make_client(loops: LoopThread) -> Iterator[Callable[[str], Client]]:
    """Clients of a lock; closed after the test."""
    clients: list[Client] = []

    def make(base: str) -> Client:
        client = Client.create(loops, base)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client: Callable[[str], Client], lock: Lock) -> Client:
    """A client of the default lock."""
    return make_client(lock.base)
