"""Fixtures of the console tests: the event loop thread of the transport tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.as_server.transport.harness import LoopThread


@pytest.fixture(scope="module")
def loops() -> Iterator[LoopThread]:
    """The event loop the CoAP server and client of a module run on."""
    loop_thread = LoopThread()
    yield loop_thread
    loop_thread.close()
