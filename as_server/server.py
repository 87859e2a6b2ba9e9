"""``ostiary as serve``: the CoAP side in this process, the HTTP side in a gunicorn child process.

* **CoAP** (RFC 9200 §5, ``application/ace+cbor``) runs in this process's asyncio loop
  (:func:`as_server.transport.coap.start_coap`), its endpoint calls in a pool of :attr:`Settings.coap_threads`
  threads: each request holds its thread until its token is committed, so the pool bounds how many tokens can
  share one group commit. The bootstrap server (issue #7) runs in the same loop, its calls in a pool of its own
  (:func:`bootstrap_executor`).
* **HTTP** runs as ``python -m gunicorn --workers N --threads M -k <balanced gthread> ... as_server.transport.wsgi:app``
  (:mod:`as_server.transport.gunicorn_balance`):
  gunicorn forks its workers, and each worker opens its own storage after the fork
  (:mod:`as_server.transport.gunicorn_conf`), so no database handle crosses a fork. The child gets the same
  settings through ``OSTIARY_HOME`` and ``OSTIARY_*`` variables (:func:`child_environment`).

Lifecycle: SIGTERM or SIGINT stops the CoAP context, sends SIGTERM to gunicorn (which finishes the requests in
flight within ``--graceful-timeout``), waits for it (bounded; SIGKILL after :data:`STOP_TIMEOUT`), closes the
storage and returns 0. If gunicorn exits on its own (a worker failed to boot, the port is taken, ...), ``serve``
shuts down the CoAP side and returns 1 with a message naming gunicorn's exit status.

This module must not import Flask or aiocoap (STYLE §3.1): the CoAP transport is imported lazily and the HTTP
side only runs in the child.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from typing import Any, Final

from as_server.app import AuthorizationServer, coap_base_url
from as_server.config import Settings
from as_server.logs import BatchingStreamHandler

__all__ = [
    "STOP_TIMEOUT",
    "child_environment",
    "configure_logging",
    "freeze_startup_objects",
    "gunicorn_command",
    "serve",
]

log = logging.getLogger("ostiary.as.server")

#: Allocations between collections of the youngest generation once serving (:func:`freeze_startup_objects`).
YOUNG_GC_THRESHOLD: Final = 10_000
#: gunicorn's worker class for the HTTP side: gthread, balanced (as_server.transport.gunicorn_balance).
WORKER_CLASS: Final = "as_server.transport.gunicorn_balance.BalancedThreadWorker"
#: How long gunicorn gets to finish in-flight requests after SIGTERM before it is killed (seconds).
STOP_TIMEOUT: Final = 15.0
#: gunicorn's own graceful timeout; below :data:`STOP_TIMEOUT` so gunicorn normally ends by itself.
GRACEFUL_TIMEOUT: Final = 10


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def gunicorn_command(settings: Settings) -> list[str]:
    """The gunicorn command line for the HTTP side: gthread workers (one storage per worker, threads share it) that
    share new connections evenly (:mod:`as_server.transport.gunicorn_balance`)."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "python:as_server.transport.gunicorn_conf",
        "--workers",
        str(settings.http_workers),
        "--threads",
        str(settings.http_threads),
        "-k",
        WORKER_CLASS,
        "--bind",
        _host_port(settings.http_host, settings.http_port),
        "--graceful-timeout",
        str(GRACEFUL_TIMEOUT),
        # gunicorn 23+ opens a control socket in ~/.gunicorn by default; two deployments would share it.
        "--no-control-socket",
        "--log-level",
        settings.log_level.lower(),
        "as_server.transport.wsgi:app",
    ]


def child_environment(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) plus every setting as ``OSTIARY_*``.

    Settings may come from command-line overrides that the child would not see otherwise, so all of them are
    exported; ``OSTIARY_MASTER_KEY`` (if set) is inherited unchanged and never logged.
    """
    env = dict(os.environ if base is None else base)
    env["OSTIARY_HOME"] = str(settings.home)
    for f in dataclasses.fields(settings):
        if f.name == "home":
            continue
        value = getattr(settings, f.name)
        env[f"OSTIARY_{f.name.upper()}"] = "" if value is None else str(value)
    return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: have the kernel SIGTERM gunicorn if this process dies without stopping it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def serve(settings: Settings) -> int:
    """Run both transports until SIGTERM/SIGINT; returns the process exit status (0 on a clean stop).

    :raises FileNotFoundError: no master key (``ostiary as init`` first); other start-up errors propagate too,
        before anything is listening.
    """
    server = AuthorizationServer.from_settings(settings)
    try:
        return asyncio.run(_run(server))
    finally:
        server.close()


async def _run(server: AuthorizationServer) -> int:
    from as_server.transport.coap import start_coap

    settings = server.settings
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    executor = concurrent.futures.ThreadPoolExecutor(settings.coap_threads, thread_name_prefix="ostiary-coap")
    # Also the loop's default executor, so asyncio.run() shuts it down on every way out of here.
    loop.set_default_executor(executor)
    context = await start_coap(server, settings.coap_host, settings.coap_port, executor=executor)
    log.info("CoAP endpoints on %s/token and %s/introspect", coap_base_url(settings), coap_base_url(settings))
    try:
        bootstrap = await _start_bootstrap(server)
    except BaseException:
        await context.shutdown()
        raise
    try:
        child = await asyncio.create_subprocess_exec(
            *gunicorn_command(settings),
            env=child_environment(settings),
            stdin=asyncio.subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    except BaseException:
        await context.shutdown()
        await bootstrap.close()
        raise
    base = f"http://{_host_port(settings.http_host, settings.http_port)}"
    log.info("HTTP endpoints on %s/token and %s/introspect (gunicorn pid %d)", base, base, child.pid)
    freeze_startup_objects()

    stopped = asyncio.ensure_future(stop.wait())
    exited = asyncio.ensure_future(child.wait())
    await asyncio.wait({stopped, exited}, return_when=asyncio.FIRST_COMPLETED)

    status = 0
    if exited.done() and not stopped.done():
        log.error("gunicorn (HTTP) exited unexpectedly with status %s; shutting down", child.returncode)
        status = 1
    else:
        log.info("stopping")
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(exited), STOP_TIMEOUT)
        except TimeoutError:
            log.warning("gunicorn did not stop within %.0f s; killing it", STOP_TIMEOUT)
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await exited
    stopped.cancel()
    await bootstrap.close()
    await context.shutdown()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    log.info("stopped")
    return status


def bootstrap_executor(settings: Settings) -> concurrent.futures.ThreadPoolExecutor:
    """The bootstrap server's thread pool: :attr:`Settings.bootstrap_threads` threads of its own rather than the
    CoAP side's pool, whose 16 threads would contend for the GIL (benchmarks.bootstrap_load starts its bootstrap
    server with this pool too)."""
    return concurrent.futures.ThreadPoolExecutor(settings.bootstrap_threads, thread_name_prefix="ostiary-bootstrap")


class _Bootstrap:
    """The bootstrap server of ``ostiary as serve`` (issue #7), or nothing when it is turned off."""

    def __init__(
        self,
        transport: Any = None,
        close_service: Callable[[], None] | None = None,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        self._transport = transport
        self._close_service = close_service
        self._executor = executor

    async def close(self) -> None:
        if self._transport is not None:
            await self._transport.close()
        if self._executor is not None:
            # after the transport: its closing waits for the calls it still runs there
            await asyncio.to_thread(self._executor.shutdown)
        if self._close_service is not None:
            self._close_service()
        self._transport = self._close_service = self._executor = None


async def _start_bootstrap(server: AuthorizationServer) -> _Bootstrap:
    settings = server.settings
    if not settings.bootstrap_dtls_port and not settings.bootstrap_plain_port:
        return _Bootstrap()
    from as_server.bootstrap.server import open_bootstrap_service
    from as_server.transport.bootstrap_coap import BootstrapCoapServer

    executor = bootstrap_executor(settings)
    try:
        service, close_service = await asyncio.get_running_loop().run_in_executor(
            executor, open_bootstrap_service, server
        )
        try:
            transport = await BootstrapCoapServer.start(
                service,
                host=settings.coap_host,
                dtls_port=settings.bootstrap_dtls_port or None,
                plain_port=settings.bootstrap_plain_port or None,
                executor=executor,
            )
        except BaseException:
            close_service()
            raise
    except BaseException:
        executor.shutdown(wait=False)
        raise
    if transport.dtls_port is not None:
        log.info(
            "bootstrap server on coaps://%s:%d/bs and /bspack, LwM2M registrations at /rd",
            _host_port(settings.coap_host, transport.dtls_port).rsplit(":", 1)[0],
            transport.dtls_port,
        )
    return _Bootstrap(transport, close_service, executor)


def freeze_startup_objects() -> None:
    """Tune the cyclic garbage collector for serving (issue #3).

    Every object alive after start-up (modules, the app, caches) lives as long as the process: :func:`gc.freeze`
    moves them out of the collector's reach, so full collections no longer walk them all again. And a collection
    of the youngest generation now waits for :data:`YOUNG_GC_THRESHOLD` allocations instead of Python's 700: a
    request allocates hundreds of objects, nearly all freed by reference counting, but those of the requests in
    flight are walked by every young collection. Together they took the CoAP process's collector from about a
    tenth of its CPU to a few percent (``perf``), and about 10% more tokens per second over CoAP. Cyclic garbage
    is still collected, a little later.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GC_THRESHOLD, older, oldest)


def configure_logging(level: str) -> None:
    """Log to stderr in gunicorn's style, so both sides of ``ostiary as serve`` (and its workers) read alike.

    Informational lines are written in batches, at most 0.1 s late; warnings and errors at once
    (:class:`~as_server.logs.BatchingStreamHandler`). Alembic's INFO chatter (plugin setup, "Context impl") is
    raised to WARNING.
    """
    logging.basicConfig(
        level=level.upper(),
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S %z",
        handlers=[BatchingStreamHandler(sys.stderr)],
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
