"""DTLS bootstrap load for ``bench_bootstrap`` part 2: the two servers it measures and the device-side load.

**Servers** (each in its own process, started by :class:`ServerProcess` as ``python -m benchmarks.bench_bootstrap
--serve KIND ...``, so the load generator and the server never share a GIL; it prints ``ready PORT`` once bound):

* ``baseline``: aiocoap's DTLS server exactly as the bootstrap server runs it (the same ``_DtlsServer`` class,
  :func:`as_server.transport.bootstrap_coap._dtls_server_class`, and the same
  :class:`~as_server.transport.bootstrap_coap._PskLookup`), but the PSK lookup is a plain in-memory dict of the
  same device identities and the only resource is a trivial ``GET /hello``, answered inline. It is the price of a
  DTLS handshake plus one request on this stack: the ceiling of any bootstrap server built on it.
* ``bootstrap``: the real bootstrap server of an ``OSTIARY_HOME`` deployment, as ``ostiary as serve`` starts it:
  :func:`~as_server.bootstrap.server.open_bootstrap_service` and
  :meth:`~as_server.transport.bootstrap_coap.BootstrapCoapServer.start` with its own thread pool of
  ``bootstrap_threads`` (:func:`as_server.server.bootstrap_executor`), the CoAP pool of ``coap_threads`` being
  the loop's default executor.

**Devices** (:func:`run_load`): ``concurrency`` asyncio tasks in one process, each playing one device after another
from a shared list (each device once, or over and over for a fixed time with ``cycle``): a fresh DTLS handshake
with that device's own PSK identity and key from a new UDP socket bound to the device's own loopback address
(:func:`device_address`, 127.1.0.0 upwards), one request (``GET /bspack?ep=...`` with Accept 112, or ``GET
/hello``), then the connection and its socket are dropped, as a device that goes back to sleep. By default each
task keeps one aiocoap client context and drops the device's connection after the answer (aiocoap's tinydtls
client keeps one connection, with its own socket, per (host, port, identity), so every device is a new one);
``fresh_context`` makes a whole client context per device instead, which costs the client more and the server
nothing more. Every wait is bounded (``OP_TIMEOUT`` per device).

Why an address per device: aiocoap's DTLS server ignores tinydtls's close_notify (a warning-level alert; it only
acts on fatal ones), so it keeps every session until it evicts the least recently used one. From one address the
kernel's random ephemeral ports soon put a new device on a port that still has a stale session on the server, and
that handshake stalls until the device gives up -- a harness artefact (real devices have addresses of their own)
that would cost a 10 s timeout per collision, a few percent of all devices at 1,000 sessions.

**Window**: the first ``warmup`` completions are not counted (imports, caches); the window ends when the last
device is handed out (or ``seconds`` after the start), so it only covers full concurrency. The rate is the
completed operations (2.05 answers) inside it per second; latencies (p50/p99) are those of the operations that
completed inside it. CPU seconds of the server process (``/proc/PID/stat``, every thread) and of the load
generator (``time.process_time``) are sampled at both ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Attempt",
    "Device",
    "LoadResult",
    "ServerProcess",
    "bottleneck",
    "choose_window",
    "device_address",
    "free_udp_port",
    "parse_proc_stat",
    "percentile",
    "read_devices",
    "run_load",
    "serve_main",
    "summarize",
    "verdict",
    "write_devices",
]

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PACK_PATH = "bspack"
TRIVIAL_PATH = "hello"
TRIVIAL_PAYLOAD = b"hello"
#: SenML CBOR, the only pack format offered (Accept of a Bootstrap-Pack-Request).
SENML_CBOR = 112
#: Seconds one device may take (context, handshake, request, close) before it counts as a "timeout".
OP_TIMEOUT = 10.0
#: Seconds a server process may take to bind and print ``ready``; and to stop after SIGTERM.
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
#: Success: 2.05 Content.
CONTENT = "2.05"
SERVER_KINDS = ("baseline", "bootstrap")


# --------------------------------------------------------------------------------------------------------------
# devices and pure helpers
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Device:
    """What a device holds from the factory: its bootstrap PSK identity and key, and its endpoint name."""

    identity: bytes
    psk: bytes = field(repr=False)
    endpoint: str


def write_devices(path: Path, devices: Sequence[Device]) -> None:
    """Write devices as JSON lines (hex identity and PSK), mode 0600: the baseline server's PSK table."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fp:
        for d in devices:
            fp.write(json.dumps({"identity": d.identity.hex(), "psk": d.psk.hex(), "endpoint": d.endpoint}) + "\n")


def read_devices(path: Path) -> list[Device]:
    """The devices :func:`write_devices` wrote."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            out.append(Device(bytes.fromhex(row["identity"]), bytes.fromhex(row["psk"]), row["endpoint"]))
    return out


def percentile(values: Sequence[float], p: float) -> float | None:
    """The ``p``-th percentile (nearest rank, as :mod:`benchmarks.coap_load`) of ``values``; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def parse_proc_stat(text: str, ticks_per_second: int) -> float:
    """User + system CPU seconds from the text of ``/proc/PID/stat`` (fields 14 and 15, ``proc(5)``; the command
    name in parentheses may itself hold spaces or parentheses, so fields are counted after the last ``)``)."""
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): utime is field 14 -> rest[11], stime field 15 -> rest[12].
    return (int(rest[11]) + int(rest[12])) / ticks_per_second


def process_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) of a live process; None where /proc is not available."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return parse_proc_stat(text, os.sysconf("SC_CLK_TCK"))


def verdict(ratio: float | None, goal: float) -> str:
    """PASS, FAIL, or n/a when there is no ratio (a row without completions)."""
    if ratio is None:
        return "n/a"
    return "PASS" if ratio >= goal else "FAIL"


def bottleneck(client_busy: float | None, server_busy: float | None, *, threshold: float = 0.85) -> str:
    """Which side limited a closed-loop run, from the share of one core each used over the window."""
    if client_busy is None or server_busy is None:
        return "unknown (no CPU figures)"
    if client_busy >= threshold and client_busy >= server_busy:
        return "the load generator (client side)"
    if server_busy >= threshold:
        return "the server"
    return "neither side saturated a core (latency-bound)"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One device's operation: monotonic start and end, whether it succeeded, and its label (code or error)."""

    start: float
    end: float
    ok: bool
    label: str
    #: The device's :func:`device_address` index.
    index: int = -1


@dataclass(frozen=True, slots=True)
class Mark:
    """A moment of the run: monotonic time and the CPU seconds of the load generator and the server so far."""

    t: float
    client_cpu: float
    server_cpu: float | None


def choose_window(marks: dict[str, Mark]) -> tuple[str, str]:
    """The marks that bound the window: ``warm`` to ``dry`` when both exist in that order, otherwise (too few
    devices to warm up first) ``begin`` to ``end``, the whole run."""
    warm, dry = marks.get("warm"), marks.get("dry")
    if warm is not None and dry is not None and dry.t > warm.t:
        return "warm", "dry"
    return "begin", "end"


@dataclass
class LoadResult:
    """What one load run measured (module docstring)."""

    label: str
    concurrency: int
    devices: int
    attempts: list[Attempt] = field(default_factory=list)
    marks: dict[str, Mark] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return summarize(self.attempts, self.marks, label=self.label, concurrency=self.concurrency)


def summarize(
    attempts: Sequence[Attempt], marks: dict[str, Mark], *, label: str = "", concurrency: int = 0
) -> dict[str, Any]:
    """Rate, latencies, failures and CPU per operation of a run (JSON-friendly)."""
    first, last = choose_window(marks)
    t0, t1 = marks[first].t, marks[last].t
    inside = [a for a in attempts if t0 < a.end <= t1]
    ok = [a for a in inside if a.ok]
    latencies = [a.end - a.start for a in ok]
    seconds = max(t1 - t0, 1e-9)
    failures: dict[str, int] = {}
    for a in attempts:
        if not a.ok:
            failures[a.label] = failures.get(a.label, 0) + 1
    client_cpu = marks[last].client_cpu - marks[first].client_cpu
    s0, s1 = marks[first].server_cpu, marks[last].server_cpu
    server_cpu = s1 - s0 if s0 is not None and s1 is not None else None

    def ms(p: float) -> float | None:
        value = percentile(latencies, p)
        return None if value is None else 1e3 * value

    per_op = len(ok) or None
    return {
        "label": label,
        "concurrency": concurrency,
        "attempted": len(attempts),
        "completed": sum(1 for a in attempts if a.ok),
        "failed": sum(failures.values()),
        "failures": failures,
        "window": f"{first}-{last}",
        "window_seconds": t1 - t0,
        "window_completed": len(ok),
        "rate": len(ok) / seconds,
        "p50_ms": ms(50),
        "p99_ms": ms(99),
        "client_cpu_s": client_cpu,
        "server_cpu_s": server_cpu,
        "client_busy": client_cpu / seconds,
        "server_busy": None if server_cpu is None else server_cpu / seconds,
        "client_cpu_ms_per_op": None if per_op is None else 1e3 * client_cpu / per_op,
        "server_cpu_ms_per_op": None if per_op is None or server_cpu is None else 1e3 * server_cpu / per_op,
    }


# --------------------------------------------------------------------------------------------------------------
# the load generator (device side)
# --------------------------------------------------------------------------------------------------------------


def _code_text(code: Any) -> str:
    value = int(code)
    return f"{value >> 5}.{value & 0x1F:02d}"


def device_address(index: int) -> str:
    """Device ``index``'s own loopback source address: 127.1.0.0 upwards (Linux routes all of 127/8 to ``lo``),
    never the server's 127.0.0.1."""
    if not 0 <= index < 254 << 16:
        raise ValueError(f"device index out of range: {index}")
    return f"127.{1 + (index >> 16)}.{(index >> 8) & 0xFF}.{index & 0xFF}"


class _SourceAddressLoop:
    """Stands in for the event loop of aiocoap's tinydtls client transport, whose only use of it is
    ``create_datagram_endpoint`` for each new connection: binds that socket to the current device's address.

    Why: see the module docstring (stale server sessions on reused ports).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.source = HOST

    def create_datagram_endpoint(self, factory: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("local_addr", (self.source, 0))
        return self._loop.create_datagram_endpoint(factory, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)


def _dtls_transport(ctx: Any) -> Any:
    """The tinydtls client transport of a client context (aiocoap internals)."""
    for interface in getattr(ctx, "request_interfaces", []):
        transport = getattr(getattr(interface, "token_interface", None), "message_interface", None)
        if isinstance(getattr(transport, "_pool", None), MutableMapping) and hasattr(transport, "loop"):
            return transport
    raise RuntimeError("aiocoap's tinydtls client transport was not found (another aiocoap version?)")


class _Client:
    """One aiocoap client context whose DTLS connections each bind to the current device's address."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        transport = _dtls_transport(ctx)
        self.pool: MutableMapping[Any, Any] = transport._pool
        self.loop = _SourceAddressLoop(transport.loop)
        transport.loop = self.loop

    @classmethod
    async def create(cls) -> _Client:
        import aiocoap

        return cls(await aiocoap.Context.create_client_context(transports=["tinydtls"]))

    def close_connections(self) -> None:
        """Drop the device's DTLS connection and its socket (no close_notify: the server would ignore it)."""
        for connection in list(self.pool.values()):
            with contextlib.suppress(Exception):
                connection.shutdown()

    async def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ctx.shutdown(), OP_TIMEOUT)


def _request(base: str, path: str, device: Device) -> Any:
    import aiocoap

    if path == PACK_PATH:
        message = aiocoap.Message(code=aiocoap.GET, uri=f"{base}/{PACK_PATH}?ep={device.endpoint}")
        message.opt.accept = SENML_CBOR
        return message
    return aiocoap.Message(code=aiocoap.GET, uri=f"{base}/{path}")


async def _load(
    port: int,
    devices: Sequence[Device],
    *,
    path: str,
    concurrency: int,
    seconds: float,
    warmup: int,
    timeout: float,
    server_pid: int | None,
    fresh_context: bool,
    label: str,
    addresses: Sequence[int] | None,
    cycle: bool,
) -> LoadResult:
    import aiocoap

    base = f"coaps://{HOST}:{port}"
    pattern = f"{base}/*"
    result = LoadResult(label=label, concurrency=concurrency, devices=len(devices))
    numbered = list(enumerate(devices) if addresses is None else zip(addresses, devices, strict=True))
    pending: Iterator[tuple[int, Device]] = itertools.cycle(numbered) if cycle else iter(numbered)
    started = time.monotonic()
    deadline = started + seconds
    stopping = False

    def mark(name: str) -> None:
        if name not in result.marks:
            server = process_cpu_seconds(server_pid) if server_pid is not None else None
            result.marks[name] = Mark(time.monotonic(), time.process_time(), server)

    def take() -> tuple[int, Device] | None:
        nonlocal stopping
        if stopping:
            return None
        taken = next(pending, None)
        if taken is None or time.monotonic() >= deadline:
            stopping = True
            mark("dry")
            return None
        return taken

    async def one(client: _Client, index: int, device: Device) -> tuple[bool, str]:
        client.loop.source = device_address(index)
        client.ctx.client_credentials.load_from_dict(
            {pattern: {"dtls": {"psk": device.psk, "client-identity": device.identity}}}
        )
        response = await client.ctx.request(_request(base, path, device)).response
        label = _code_text(response.code)
        return label == CONTENT and (path != TRIVIAL_PATH or bytes(response.payload) == TRIVIAL_PAYLOAD), label

    async def worker() -> None:
        shared = None if fresh_context else await asyncio.wait_for(_Client.create(), timeout)
        try:
            while (taken := take()) is not None:
                index, device = taken
                t = time.monotonic()
                client = shared if shared is not None else await asyncio.wait_for(_Client.create(), timeout)
                try:
                    ok, label = await asyncio.wait_for(one(client, index, device), timeout)
                except TimeoutError:
                    ok, label = False, "timeout"
                except aiocoap.error.Error as exc:
                    ok, label = False, type(exc).__name__
                finally:
                    if shared is None:
                        await client.shutdown()
                    else:
                        client.close_connections()
                end = time.monotonic()
                result.attempts.append(Attempt(t, end, ok, label, index))
                if len(result.attempts) == warmup:
                    mark("warm")
        finally:
            if shared is not None:
                await shared.shutdown()

    mark("begin")
    if warmup <= 0:
        mark("warm")
    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    # Workers end on their own (every wait inside is bounded); this bound is a last resort.
    done, not_done = await asyncio.wait(tasks, timeout=seconds + 3 * timeout + 30)
    for task in not_done:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    mark("dry")
    mark("end")
    for task in done:
        if task.exception() is not None:
            raise RuntimeError(f"a load task failed: {task.exception()!r}") from task.exception()
    return result


def run_load(
    port: int,
    devices: Sequence[Device],
    *,
    path: str,
    concurrency: int,
    seconds: float,
    warmup: int,
    timeout: float = OP_TIMEOUT,
    server_pid: int | None = None,
    fresh_context: bool = False,
    label: str = "",
    addresses: Sequence[int] | None = None,
    cycle: bool = False,
) -> LoadResult:
    """Play ``devices`` against the server on ``port`` with ``concurrency`` at a time (module docstring): each
    once, or with ``cycle`` over and over until ``seconds`` have passed. ``path`` is :data:`PACK_PATH` or
    :data:`TRIVIAL_PATH`; ``addresses`` are the devices' :func:`device_address` indices (default: their
    positions)."""
    # aiocoap's tinydtls client complains when a dropped connection's DTLS object outlives it; harmless here.
    warnings.filterwarnings("ignore", message="DTLS module did not shut down", category=UserWarning)
    return asyncio.run(
        _load(
            port,
            devices,
            path=path,
            concurrency=concurrency,
            seconds=seconds,
            warmup=warmup,
            timeout=timeout,
            server_pid=server_pid,
            fresh_context=fresh_context,
            label=label,
            addresses=addresses,
            cycle=cycle,
        )
    )


# --------------------------------------------------------------------------------------------------------------
# the servers (in their own process)
# --------------------------------------------------------------------------------------------------------------


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _ready(port: int) -> None:
    sys.stdout.write(f"ready {port}\n")
    sys.stdout.flush()


async def _serve_baseline(port: int, devices_file: Path) -> None:
    import aiocoap
    import aiocoap.resource as resource

    from as_server.bootstrap.server import Peer, PeerKind
    from as_server.transport.bootstrap_coap import _dtls_server_class, _PskLookup

    table = {d.identity: (d.psk, Peer(PeerKind.BOOTSTRAP, d.identity, d.endpoint)) for d in read_devices(devices_file)}

    class Hello(resource.Resource):  # type: ignore[misc]
        async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
            return aiocoap.Message(code=aiocoap.CONTENT, payload=TRIVIAL_PAYLOAD)

    site = resource.Site()
    site.add_resource([TRIVIAL_PATH], Hello())
    server_class: Any = _dtls_server_class()
    context = aiocoap.Context(serversite=site, loggername="bench.baseline.aiocoap")
    context.server_credentials = _PskLookup(table.get)
    loop = asyncio.get_running_loop()
    await context._append_tokenmanaged_messagemanaged_transport(
        lambda mman: server_class.create_server(
            (HOST, port), mman, log=context.log, loop=loop, server_credentials=context.server_credentials
        )
    )
    try:
        _ready(port)
        await _until_signalled()
    finally:
        await context.shutdown()


async def _serve_bootstrap(port: int, home: Path) -> None:
    import concurrent.futures

    from as_server.app import AuthorizationServer
    from as_server.bootstrap.server import open_bootstrap_service
    from as_server.config import Settings
    from as_server.server import bootstrap_executor
    from as_server.transport.bootstrap_coap import BootstrapCoapServer

    settings = Settings.load(home, env={})
    server = AuthorizationServer.from_settings(settings)
    loop = asyncio.get_running_loop()
    loop.set_default_executor(
        concurrent.futures.ThreadPoolExecutor(settings.coap_threads, thread_name_prefix="ostiary-coap")
    )
    executor = bootstrap_executor(settings)
    service, close_service = await loop.run_in_executor(executor, open_bootstrap_service, server)
    try:
        transport = await BootstrapCoapServer.start(service, host=HOST, dtls_port=port, executor=executor)
        try:
            _ready(port)
            await _until_signalled()
        finally:
            await transport.close()
    finally:
        executor.shutdown()
        close_service()
        server.close()


def serve_main(kind: str, *, port: int, home: Path | None, devices_file: Path | None) -> int:
    """``--serve KIND``: run one server until SIGTERM (module docstring)."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    if kind == "baseline":
        if devices_file is None:
            raise SystemExit("--serve baseline needs --devices-file")
        asyncio.run(_serve_baseline(port, devices_file))
    elif kind == "bootstrap":
        if home is None:
            raise SystemExit("--serve bootstrap needs --home")
        asyncio.run(_serve_bootstrap(port, home))
    else:
        raise SystemExit(f"--serve: one of {', '.join(SERVER_KINDS)}")
    return 0


def free_udp_port(base: int, *, tries: int = 200) -> int:
    """The first UDP port from ``base`` upwards that binds on :data:`HOST` (keep ``base`` below 32768: the
    ephemeral range is where the devices' sockets come from)."""
    for port in range(base, base + tries):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free UDP port in {base}-{base + tries - 1}")


class ServerProcess:
    """``python -m benchmarks.bench_bootstrap --serve KIND ...`` as a child process; a context manager that waits
    for ``ready`` and stops it with SIGTERM (then SIGKILL). Its stderr goes to ``log_file``."""

    def __init__(
        self, kind: str, *, port: int, log_file: Path, home: Path | None = None, devices_file: Path | None = None
    ) -> None:
        self.kind = kind
        self.port = port
        self.log_file = log_file
        self.argv = [sys.executable, "-m", "benchmarks.bench_bootstrap", "--serve", kind, "--port", str(port)]
        if home is not None:
            self.argv += ["--home", str(home)]
        if devices_file is not None:
            self.argv += ["--devices-file", str(devices_file)]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> ServerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OSTIARY_")}
        with open(self.log_file, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                tail = self.log_file.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the {self.kind} server did not start:\n{tail}")
            readable, _, _ = select.select([self.proc.stdout], [], [], min(left, 0.5))
            if readable:
                chunk = os.read(self.proc.stdout.fileno(), 256)
                if not chunk:
                    continue
                line += chunk
        if not line.startswith(b"ready "):
            raise RuntimeError(f"the {self.kind} server said {line!r}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def __exit__(self, *exc: object) -> None:
        self.stop()


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and the seconds it took."""
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started
