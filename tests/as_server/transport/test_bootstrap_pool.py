"""``ostiary as serve`` runs the bootstrap server's calls in a thread pool of its own (``bootstrap_threads``), not
in the CoAP side's pool (issue #7 benchmark: fewer threads contend less for the GIL)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
from pathlib import Path

from as_server.app import AuthorizationServer, storage_pool_size
from as_server.config import Settings
from as_server.server import _start_bootstrap, bootstrap_executor
from tests.as_server.transport.harness import free_port, init_home, provision


def test_bootstrap_threads_setting_and_the_pool_it_sizes(tmp_path: Path) -> None:
    settings = Settings.load(tmp_path, env={"OSTIARY_BOOTSTRAP_THREADS": "3"})
    assert settings.bootstrap_threads == 3
    assert Settings.load(tmp_path, env={}).bootstrap_threads == 4
    pool = bootstrap_executor(settings)
    try:
        names = {pool.submit(lambda: __import__("threading").current_thread().name).result() for _ in range(3)}
        assert all(name.startswith("ostiary-bootstrap") for name in names)
        assert pool._max_workers == 3
    finally:
        pool.shutdown()


def test_the_storage_pool_counts_the_bootstrap_threads(tmp_path: Path) -> None:
    """The CoAP process runs both pools: one connection per thread of either, plus two."""
    on = Settings.load(tmp_path, env={}, coap_threads=16, http_threads=8, bootstrap_threads=4)
    assert storage_pool_size(on) == 22
    off = Settings.load(tmp_path, env={}, coap_threads=16, http_threads=8, bootstrap_dtls_port=0)
    assert storage_pool_size(off) == 18
    assert storage_pool_size(Settings.load(tmp_path, env={}, coap_threads=2, http_threads=8)) == 10


def test_serve_starts_the_bootstrap_server_on_its_own_pool_and_stops_it(tmp_path: Path) -> None:
    settings = init_home(tmp_path / "home", bootstrap_dtls_port=free_port(socket.SOCK_DGRAM), bootstrap_threads=2)
    server = AuthorizationServer.from_settings(settings)
    provision(server)  # a signing key

    async def run() -> None:
        default = concurrent.futures.ThreadPoolExecutor(1)
        asyncio.get_running_loop().set_default_executor(default)
        bootstrap = await _start_bootstrap(server)
        transport = bootstrap._transport
        executor = bootstrap._executor
        assert transport is not None and isinstance(executor, concurrent.futures.ThreadPoolExecutor)
        assert transport.executor is executor and executor is not default and executor._max_workers == 2
        await bootstrap.close()
        assert executor._shutdown and bootstrap._transport is None
        await bootstrap.close()  # idempotent

    try:
        asyncio.run(run())
    finally:
        server.close()
