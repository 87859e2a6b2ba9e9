"""Token issuance of the authorization server under load, beside baselines measured in the same run.

With 32 concurrent clients, it measures requests (tokens) per second and p50/p99 latency of:

* **HTTP** (load: ``wrk -t2 -c32 --latency`` with a Lua script that POSTs a fixed body and counts non-2xx
  responses), every server under the same gunicorn configuration (the balanced gthread worker of
  :mod:`as_server.transport.gunicorn_balance`, as ``ostiary as serve`` runs it, and the ``http_workers`` x
  ``http_threads`` defaults of :class:`as_server.config.Settings`):

  - **trivial**: a Flask ``POST /echo`` returning a small JSON body (:mod:`benchmarks.baselines.trivial_http`),
    the ceiling of the stack;
  - **durable floor**: the trivial endpoint plus one durable write per request (a 16-byte key into a one-column
    SQLite table, WAL, ``synchronous=FULL``, the AS's group committer; :mod:`benchmarks.baselines.durable_floor`),
    the ceiling of any endpoint that records each request before answering, as issue #3 requires of tokens;
  - **Authlib**: Authlib's Flask ``client_credentials`` endpoint issuing RFC 9068 JWTs signed ES256, each token
    recorded in SQLite (WAL, ``synchronous=FULL``, group commit) before the response leaves
    (:mod:`benchmarks.baselines.authlib_app`);
  - **ours**: ``ostiary as serve`` on a deployment made with the real CLI, ``POST /token`` with the same form
    body and HTTP Basic (primary row), the same with a signed token form, and with the CoAP payload as
    ``application/ace+cbor``.

* **CoAP** (load: :mod:`benchmarks.coap_load`, raw UDP, 32 sockets with one outstanding NON POST each):

  - **trivial**: an aiocoap POST resource (:mod:`benchmarks.baselines.trivial_coap`) on the same aiocoap
    transport as ours (``simplesocketserver``);
  - **durable floor**: the same resource awaiting one durable write first (as above; the event loop awaits the
    write's future, as ours awaits its token's commit);
  - **ours**: ``POST /token`` of the same ``ostiary as serve`` process, payload
    ``TokenRequest(client_id, client_secret, audience, scope).to_cbor()``.

* **Stored tokens**: a second deployment whose database holds ``--stored`` tokens (default 1,000,000, bulk
  loaded with ``SqlStorage.bulk_insert_tokens``), measured over HTTP beside the empty one.

Every contender runs once per round for ``--seconds``; rounds interleave the contenders (rotating the order), so
a burst of background load hits them alike; each row reports the median over rounds. Goals (PASS/FAIL, exit 0
either way): HTTP ours >= 1.2x Authlib and >= 50% of trivial; CoAP ours >= 60% of trivial; with the stored
tokens >= 90% of the empty database. Beside goals 2 and 3 it reports the durable floors' share of the trivial
rate (what durability alone leaves) and ours against the floor. A row with any error (non-2xx, socket error, CoAP
error code, timeout) is invalid, and so is every goal that uses it.

Run: ``python -m benchmarks.bench_as [--seconds S] [--rounds N] [--stored N] [--quick] [--json FILE] [--keep]``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlencode

from as_server.server import WORKER_CLASS
from benchmarks import coap_load
from benchmarks._timing import fmt_rate, fmt_ratio

ROOT = Path(__file__).resolve().parent.parent

DEFAULT_SECONDS = 10.0
DEFAULT_ROUNDS = 3
DEFAULT_STORED = 1_000_000
QUICK_SECONDS = 3.0
QUICK_ROUNDS = 1
QUICK_STORED = 100_000
#: Seconds of untimed load per HTTP contender before the first round (connections, caches, lazy imports).
WARMUP_SECONDS = 2.0
QUICK_WARMUP_SECONDS = 1.0
#: Seconds of load at the start of every CoAP run that are not counted (coap_load --warmup).
COAP_WARMUP_SECONDS = 1.0
CLIENTS = 32
WRK_THREADS = 2
#: wrk counts a request as a timeout error after this many seconds.
WRK_TIMEOUT = "5s"
#: A CoAP request without a response after this many seconds is an error (and the client moves on).
COAP_TIMEOUT = 2.0
#: Benchmark servers bind from here upwards: below 32768, outside Linux's ephemeral range, because after a wrk run
#: thousands of TIME_WAIT sockets hold ephemeral ports (library-notes §5e/5f).
BASE_PORT = 18500
READY_TIMEOUT = 60.0
READY_POLL = 0.1
STOP_TIMEOUT = 20.0
BULK_BATCH = 10_000

HOST = "127.0.0.1"
CLIENT_ID = "bench-client"
AUDIENCE = "front-door"
SIGNED_AUDIENCE = "back-door"
SCOPE = "lock:open"
#: The RFC 6749 §4.4.2 form body every HTTP contender receives (Authlib ignores ``audience``).
FORM_BODY = urlencode({"grant_type": "client_credentials", "audience": AUDIENCE, "scope": SCOPE}).encode()
FORM = "application/x-www-form-urlencoded"
ACE_CBOR = "application/ace+cbor"

GOAL_TITLES = {
    1: "HTTP: ours (form) at least 1.2x the Authlib JWT baseline's rate",
    2: "HTTP: ours (form) at least 50% of the trivial endpoint's rate",
    3: "CoAP: ours at least 60% of the trivial CoAP POST rate",
    4: "HTTP: ours with the stored tokens at least 90% of the empty-database rate",
}


class BenchError(RuntimeError):
    """A server did not start, or answered its validation request wrongly (the message says why)."""


# --------------------------------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 is the state, 1 the parent pid)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _proc_stat(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


#: /proc/net/tcp state of an established connection.
_TCP_ESTABLISHED = "01"


def connection_split(pids: Sequence[int], port: int) -> list[int]:
    """How many established TCP connections to local ``port`` each of ``pids`` holds, largest first, processes
    without any left out: gunicorn's workers each keep the connections they accepted, so this is the load split
    over the workers (one entry: one worker has them all). From /proc/net/tcp and /proc/<pid>/fd; empty where
    /proc cannot tell."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _TCP_ESTABLISHED and int(fields[1].rpartition(":")[2], 16) == port:
                inodes.add(fields[9])
    counts = []
    for pid in pids:
        try:
            links = [os.readlink(entry.path) for entry in os.scandir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        held = sum(1 for link in links if link.startswith("socket:[") and link[8:-1] in inodes)
        if held:
            counts.append(held)
    return sorted(counts, reverse=True)


def _cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of the live processes ``pids``."""
    total = 0
    for pid in pids:
        fields = _proc_stat(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime (stat fields 14 and 15)
    return total / _CLK_TCK


def _children_cpu() -> float:
    """CPU time of this process's waited-for children (the load generators)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all CPUs; /proc/stat, everything but idle and iowait)."""
    with open("/proc/stat") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _CLK_TCK


def _port_free(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                return False
    return True


class Ports:
    """Hands out ports from :data:`BASE_PORT` upwards that are free for both TCP and UDP."""

    def __init__(self, start: int = BASE_PORT) -> None:
        self._next = start

    def take(self) -> int:
        while not _port_free(self._next):
            self._next += 1
            if self._next >= 32768:
                raise BenchError("no free port below 32768")
        port, self._next = self._next, self._next + 1
        return port


@dataclass
class Server:
    """A server subprocess with its log file; CPU time is summed over its process tree."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    pids: list[int] = field(default_factory=list)
    _fh: Any = None

    def start(self) -> None:
        self._fh = open(self.log, "wb")  # closed in stop()
        self.proc = subprocess.Popen(
            self.argv, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=self._fh, stderr=subprocess.STDOUT
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def refresh_pids(self) -> None:
        if self.proc is not None:
            self.pids = _descendants(self.proc.pid)

    def cpu(self) -> float:
        return _cpu_seconds(self.pids)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    | " + line for line in text[-lines:])

    def stop(self) -> None:
        """SIGTERM, bounded wait, SIGKILL; then SIGTERM any process of its tree that outlived it."""
        if self.proc is None:
            return
        self.refresh_pids()
        tree = {pid: _cmdline(pid) for pid in self.pids if pid != self.proc.pid}
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid, cmdline in tree.items():
            if cmdline and _cmdline(pid) == cmdline:  # still the same process: an orphan of this server
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        if self._fh is not None:
            self._fh.close()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _gunicorn(app: str, port: int, workers: int, threads: int) -> list[str]:
    """The gunicorn command line of the baselines: the flags ``ostiary as serve`` gives its gunicorn."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "-k",
        WORKER_CLASS,
        "--bind",
        f"{HOST}:{port}",
        "--graceful-timeout",
        "10",
        "--log-level",
        "warning",
        app,
    ]


def _wait_http(server: Server, port: int, deadline: float) -> None:
    """Until the port answers any HTTP request (bounded by ``deadline``, a perf_counter time)."""
    while True:
        if not server.alive():
            raise BenchError(f"{server.name} exited during start-up:\n{server.log_tail()}")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", "/")
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            pass
        if time.perf_counter() > deadline:
            raise BenchError(f"{server.name} did not answer HTTP on port {port} in time:\n{server.log_tail()}")
        time.sleep(READY_POLL)


def _wait_coap(server: Server, port: int, deadline: float) -> None:
    while True:
        if not server.alive():
            raise BenchError(f"{server.name} exited during start-up:\n{server.log_tail()}")
        if coap_load.probe(HOST, port, path=".well-known/core", payload=b"", content_format=None, timeout=0.5):
            return
        if time.perf_counter() > deadline:
            raise BenchError(f"{server.name} did not answer CoAP on port {port} in time:\n{server.log_tail()}")


# --------------------------------------------------------------------------------------------------------------
# contenders
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Target:
    """One measured row: a request sent to one server over one transport."""

    key: str
    title: str
    transport: str  # "http" | "coap"
    server: str
    port: int
    path: str
    body: bytes
    content_type: str | None
    authorization: str | None = None
    #: How to check a response: "json-token", "cbor-token" or "any".
    expect: str = "any"
    note: str | None = None  # why the row is not available
    db: Path | None = None  # where its tokens are recorded (for the durability cross-check)
    db_query: str = ""
    issued: int = 0  # successful responses seen by the bench (validation + warm-up + runs)


def _basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def _validate_http(t: Target) -> str:
    """Send the target's request once; returns a short description of the answer or raises BenchError."""
    conn = http.client.HTTPConnection(HOST, t.port, timeout=10)
    headers = {"Content-Type": t.content_type or FORM}
    if t.authorization:
        headers["Authorization"] = t.authorization
    conn.request("POST", t.path, body=t.body, headers=headers)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    if not 200 <= response.status < 300:
        raise BenchError(f"{t.title}: HTTP {response.status}: {body[:300]!r}")
    t.issued += 1
    return _describe_token(t, body)


def _describe_token(t: Target, body: bytes) -> str:
    if t.expect == "json-token":
        doc = json.loads(body)
        token = doc.get("access_token")
        if not token:
            raise BenchError(f"{t.title}: no access_token in {body[:300]!r}")
        return f"access_token of {len(token)} characters, expires_in {doc.get('expires_in')}"
    if t.expect == "cbor-token":
        from ace_core.messages import AccessInformation

        info = AccessInformation.from_cbor(body)
        return f"access_token of {len(info.access_token)} bytes, expires_in {info.expires_in}"
    return f"{len(body)} bytes"


def _validate_coap(t: Target) -> str:
    result = coap_load.run_load(
        HOST,
        t.port,
        path=t.path,
        payload=t.body,
        content_format=_coap_format(t),
        clients=1,
        duration=0.3,
        warmup=0.0,
        timeout=COAP_TIMEOUT,
    )
    if result.ok_total == 0 or result.first_payload is None:
        raise BenchError(f"{t.title}: no successful response (first code {result.first_code}, {result.errors})")
    t.issued += result.ok_total
    return f"{result.first_code}, " + _describe_token(t, result.first_payload)


def _coap_format(t: Target) -> int | None:
    if t.content_type != ACE_CBOR:
        return None
    from aiocoap.numbers import ContentFormat

    return int(ContentFormat.by_media_type(ACE_CBOR))


def _lua_string(data: bytes) -> str:
    """A Lua string literal for arbitrary bytes (decimal escapes for everything not printable ASCII)."""
    return '"' + "".join(chr(c) if 32 <= c < 127 and c not in (34, 92) else f"\\{c:03d}" for c in data) + '"'


_WRK_LUA = """\
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = {content_type}
{authorization}
local threads = {{}}
function setup(thread)
  table.insert(threads, thread)
end
non2xx = 0
function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end
function done(summary, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do
    n = n + t:get("non2xx")
  end
  local e = summary.errors
  io.write(string.format(
    "WRK_JSON {{\\"requests\\":%d,\\"duration_us\\":%d,\\"non2xx\\":%d,\\"connect\\":%d,\\"read\\":%d,"
    .. "\\"write\\":%d,\\"status\\":%d,\\"timeout\\":%d,\\"p50_us\\":%d,\\"p90_us\\":%d,\\"p99_us\\":%d,"
    .. "\\"mean_us\\":%.1f,\\"max_us\\":%d}}\\n",
    summary.requests, summary.duration, n, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


def _wrk_script(t: Target, directory: Path) -> Path:
    auth = f'wrk.headers["Authorization"] = {_lua_string(t.authorization.encode())}' if t.authorization else ""
    text = _WRK_LUA.format(
        body=_lua_string(t.body), content_type=_lua_string((t.content_type or FORM).encode()), authorization=auth
    )
    path = directory / f"wrk-{t.key}.lua"
    path.write_text(text)
    return path


_TEXT_PATTERNS = {
    "rate": re.compile(r"^Requests/sec:\s+([\d.]+)", re.M),
    "p50": re.compile(r"^\s+50%\s+([\d.]+)(us|ms|s)\b", re.M),
    "p99": re.compile(r"^\s+99%\s+([\d.]+)(us|ms|s)\b", re.M),
    "non2xx": re.compile(r"Non-2xx or 3xx responses:\s+(\d+)"),
    "socket": re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"),
}
_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests/sec, p50/p99 (ms) and error counts from wrk's output (the Lua ``done`` line when present).

    wrk's own text gives rounded latencies and counts only statuses above 399 as errors; the script's line has
    microseconds and every non-2xx status.
    """
    out: dict[str, Any] = {}
    if m := _TEXT_PATTERNS["rate"].search(output):
        out["rate"] = float(m.group(1))
    for key in ("p50", "p99"):
        if m := _TEXT_PATTERNS[key].search(output):
            out[f"{key}_ms"] = float(m.group(1)) * _UNIT_MS[m.group(2)]
    errors: dict[str, int] = {}
    if m := _TEXT_PATTERNS["non2xx"].search(output):
        errors["non-2xx"] = int(m.group(1))
    if m := _TEXT_PATTERNS["socket"].search(output):
        for name, value in zip(("connect", "read", "write", "timeout"), m.groups(), strict=True):
            errors[name] = int(value)
    for line in output.splitlines():
        if line.startswith("WRK_JSON "):
            doc = json.loads(line.removeprefix("WRK_JSON "))
            out["requests"] = doc["requests"]
            out["duration"] = doc["duration_us"] / 1e6
            out["rate"] = doc["requests"] / out["duration"] if out["duration"] else 0.0
            out["p50_ms"] = doc["p50_us"] / 1e3
            out["p99_ms"] = doc["p99_us"] / 1e3
            errors = {"non-2xx": doc["non2xx"]} | {k: doc[k] for k in ("connect", "read", "write", "timeout")}
    out["errors"] = {k: v for k, v in errors.items() if v}
    return out


@dataclass
class Run:
    """One measurement of one target."""

    target: str
    round: int
    rate: float
    requests: int
    p50_ms: float | None
    p99_ms: float | None
    errors: dict[str, int]
    #: Responses the server sent while its CPU time was measured (CoAP: the warm-up second included).
    served: int
    server_cpu_s: float
    loadgen_cpu_s: float
    #: CPU used by everything else on the machine meanwhile (other servers, other users' jobs).
    other_cpu_s: float
    wall_s: float
    #: HTTP: established connections per server process half-way through the run (:func:`connection_split`).
    split: list[int] = field(default_factory=list)

    @property
    def server_cpu_ms_per_request(self) -> float | None:
        return self.server_cpu_s * 1e3 / self.served if self.served else None

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "server_cpu_ms_per_request": self.server_cpu_ms_per_request}


def _measure(t: Target, server: Server, seconds: float, workdir: Path, round_: int) -> Run:
    server.refresh_pids()
    cpu0, gen0, busy0, wall0 = server.cpu(), _children_cpu(), _machine_busy(), time.perf_counter()
    if t.transport == "http":
        script = _wrk_script(t, workdir)
        argv = [
            "wrk",
            f"-t{WRK_THREADS}",
            f"-c{CLIENTS}",
            f"-d{max(1, round(seconds))}s",
            f"--timeout={WRK_TIMEOUT}",
            "--latency",
            "-s",
            str(script),
            f"http://{HOST}:{t.port}{t.path}",
        ]
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as wrk:
            time.sleep(seconds / 2)  # half-way through the run: the connections are open and in use
            split = connection_split(server.pids, t.port)
            try:
                stdout, stderr = wrk.communicate(timeout=seconds + 60)
            except subprocess.TimeoutExpired:
                wrk.kill()
                raise
        if wrk.returncode != 0:
            raise BenchError(f"wrk failed ({wrk.returncode}): {stderr.strip()[:500]}")
        parsed = parse_wrk(stdout)
        if "rate" not in parsed:
            raise BenchError(f"cannot parse wrk's output:\n{stdout}")
        requests = int(parsed.get("requests", round(parsed["rate"] * seconds)))
        errors = parsed["errors"]
        rate, p50, p99 = parsed["rate"], parsed.get("p50_ms"), parsed.get("p99_ms")
        served = requests
        t.issued += requests - errors.get("non-2xx", 0)
    else:
        split = []
        argv = [
            sys.executable,
            "-m",
            "benchmarks.coap_load",
            "--host",
            HOST,
            "--port",
            str(t.port),
            "--path",
            t.path,
            "--payload-hex",
            t.body.hex(),
            "--clients",
            str(CLIENTS),
            "--duration",
            str(seconds),
            "--warmup",
            str(COAP_WARMUP_SECONDS),
            "--timeout",
            str(COAP_TIMEOUT),
        ]
        fmt = _coap_format(t)
        if fmt is not None:
            argv += ["--content-format", str(fmt)]
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=seconds + 60, check=False)
        if proc.returncode != 0:
            raise BenchError(f"coap_load failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
        doc = json.loads(proc.stdout)
        requests = doc["requests"]
        errors = {k: v for k, v in doc["errors"].items() if v}
        rate, p50, p99 = doc["rate"], doc["p50_ms"], doc["p99_ms"]
        served = doc["ok_total"] + sum(errors.values())
        t.issued += doc["ok_total"]  # every 2.xx seen, warm-up included
    server_cpu, loadgen_cpu = server.cpu() - cpu0, _children_cpu() - gen0
    return Run(
        target=t.key,
        round=round_,
        rate=rate,
        requests=requests,
        p50_ms=p50,
        p99_ms=p99,
        errors=errors,
        served=served,
        server_cpu_s=server_cpu,
        loadgen_cpu_s=loadgen_cpu,
        other_cpu_s=max(0.0, _machine_busy() - busy0 - server_cpu - loadgen_cpu),
        wall_s=time.perf_counter() - wall0,
        split=split,
    )


# --------------------------------------------------------------------------------------------------------------
# deployments
# --------------------------------------------------------------------------------------------------------------


def _ostiary(home: Path, *args: str) -> str:
    """Run ``ostiary as <args>`` on ``home`` (the real CLI, as an operator would); returns its stdout."""
    env = {**os.environ, "OSTIARY_HOME": str(home)}
    proc = subprocess.run(
        [sys.executable, "-m", "ostiary", "as", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise BenchError(f"ostiary as {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout


POLICY = f"""\
# bench_as: {CLIENT_ID} may get {SCOPE!r} at both bench audiences.
rules:
  - client: {CLIENT_ID}
    audience: {AUDIENCE}
    scope: "{SCOPE}"
  - client: {CLIENT_ID}
    audience: {SIGNED_AUDIENCE}
    scope: "{SCOPE}"
"""


def _make_deployment(home: Path) -> str:
    """A deployment made with the CLI; returns the client secret that ``client add`` printed."""
    _ostiary(home, "init")
    _ostiary(home, "rs", "add", AUDIENCE, "--scope-format", "text", "--resources", SCOPE)
    _ostiary(
        home,
        "rs",
        "add",
        SIGNED_AUDIENCE,
        "--scope-format",
        "text",
        "--resources",
        SCOPE,
        "--token-form",
        "sign1+encrypt0",
    )
    out = _ostiary(home, "client", "add", CLIENT_ID, "--audience", AUDIENCE, "--audience", SIGNED_AUDIENCE)
    m = re.search(r"^client_secret:\s*(\S+)", out, re.M)
    if m is None:
        raise BenchError(f"no client_secret in the output of 'ostiary as client add':\n{out}")
    (home / "policy.yaml").write_text(POLICY)
    return m.group(1)


def _fake_tokens(n: int) -> Iterator[Any]:
    """``n`` realistic issued-token records, as the AS writes them: issued evenly over the last 30 days (most
    expired), each with the AS's cti for its issue second (:func:`~as_server.endpoints.token.clocked_cti`), a
    random token hash, OSCORE cnf with a random id, 1,000 clients x 20 audiences."""
    import hashlib

    from ace_core import cbor
    from ace_core.pop import Confirmation, OscoreMaterial
    from ace_core.registry import AceProfile
    from as_server.endpoints.token import CTI_RANDOM_LENGTH, clocked_cti
    from as_server.models import IssuedToken

    now = int(time.time())
    clients = [f"device-{i:04d}" for i in range(999)] + [CLIENT_ID]
    audiences = [f"door-{i:02d}" for i in range(19)] + [AUDIENCE]
    span = 30 * 86400
    for i in range(n):
        rnd = secrets.token_bytes(CTI_RANDOM_LENGTH + 8 + 16)
        pop_kid, ms = rnd[CTI_RANDOM_LENGTH : CTI_RANDOM_LENGTH + 8], rnd[CTI_RANDOM_LENGTH + 8 :]
        iat = now - span + i * span // n  # one second's tokens have consecutive counter values, as from one process
        cti = clocked_cti(iat, i, rnd[:CTI_RANDOM_LENGTH])
        yield IssuedToken(
            cti=cti,
            client_id=clients[i % len(clients)],
            audience=audiences[(i // len(clients)) % len(audiences)],
            scope=SCOPE,
            profile=AceProfile.COAP_OSCORE,
            iat=iat,
            exp=iat + 3600,
            token_hash=b"\x01" + hashlib.sha256(rnd).digest(),
            cnf=cbor.dumps(Confirmation(osc=OscoreMaterial(id=pop_kid, ms=ms)).to_cbor_map()),
            pop_kid=pop_kid,
        )


def _prestore(home: Path, n: int, out: TextIO) -> float:
    """Bulk-load ``n`` token records into the deployment's database; returns the seconds it took."""
    from as_server.config import Settings
    from as_server.sealing import MasterKey
    from as_server.storage.sqlalchemy import open_storage

    settings = Settings.load(home, env={})
    storage = open_storage(settings.effective_database_url, MasterKey.load(settings.master_key_file))
    started = time.perf_counter()

    def progress(done: int) -> None:
        elapsed = time.perf_counter() - started
        width = 30
        filled = width * done // n
        rate = done / elapsed if elapsed else 0.0
        eta = (n - done) / rate if rate else 0.0
        out.write(
            f"\r  storing tokens [{'#' * filled}{'.' * (width - filled)}] {done:,}/{n:,} ({100 * done / n:3.0f}%)"
            f" {rate:,.0f}/s, {eta:.0f} s left "
        )
        out.flush()

    try:
        inserted = storage.bulk_insert_tokens(_fake_tokens(n), batch=BULK_BATCH, progress=progress)
    finally:
        storage.close()
    out.write("\n")
    if inserted != n:
        raise BenchError(f"bulk_insert_tokens inserted {inserted} of {n}")
    db = _sqlite_file(settings.effective_database_url)
    if db is not None:  # start from a checkpointed database, as a server that has been running a while would
        with contextlib.closing(sqlite3.connect(db)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return time.perf_counter() - started


def warm_page_cache(database: Path | None) -> int:
    """Read a SQLite database and its WAL once, so that the OS page cache holds them; returns the bytes read.

    A server under continuous load keeps its database's hot pages cached. Between its runs here a server sits idle
    while the other contenders are measured (a minute or more), and a virtual machine that reclaims idle file pages
    (this one's kdamond: ``fincore`` showed 18% of an idle 341 MB database evicted within 60 s, with 22 GB free) then
    makes the next run read index pages from disk: the 1,000,000-token deployment measured 0.27 of the empty one
    that way, 0.95 with its file cached. Not timed.
    """
    if database is None:
        return 0
    total = 0
    for path in (database, Path(f"{database}-wal")):
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    total += len(chunk)
        except OSError:
            continue
    return total


def _sqlite_file(url: str) -> Path | None:
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def _count_rows(db: Path | None, query: str) -> int | None:
    if db is None or not db.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
            (n,) = conn.execute(query).fetchone()
        return int(n)
    except sqlite3.Error:
        return None


# --------------------------------------------------------------------------------------------------------------
# statistics and report
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Row:
    """The runs of one target, summarised."""

    target: Target
    runs: list[Run]

    @property
    def available(self) -> bool:
        return bool(self.runs)

    @property
    def rate(self) -> float | None:
        return statistics.median(r.rate for r in self.runs) if self.runs else None

    @property
    def rate_range(self) -> tuple[float, float] | None:
        return (min(r.rate for r in self.runs), max(r.rate for r in self.runs)) if self.runs else None

    def _median(self, values: Sequence[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None

    @property
    def p50(self) -> float | None:
        return self._median([r.p50_ms for r in self.runs])

    @property
    def p99(self) -> float | None:
        return self._median([r.p99_ms for r in self.runs])

    @property
    def errors(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for r in self.runs:
            for k, v in r.errors.items():
                total[k] = total.get(k, 0) + v
        return total

    @property
    def valid(self) -> bool:
        return self.available and not self.errors

    @property
    def cpu_ms(self) -> float | None:
        return self._median([r.server_cpu_ms_per_request for r in self.runs])

    @property
    def cpu_share(self) -> float | None:
        """Server CPU as a fraction of one core during the runs (2.0 = both cores of a 2-CPU machine)."""
        return self._median([r.server_cpu_s / r.wall_s for r in self.runs if r.wall_s])

    @property
    def other_share(self) -> float | None:
        """CPU used by other processes during the runs, as a fraction of one core."""
        return self._median([r.other_cpu_s / r.wall_s for r in self.runs if r.wall_s])


@dataclass
class Goal:
    """ours / baseline >= need, with the per-round paired ratios for the spread."""

    number: int
    ours: Row | None
    baseline: Row | None
    need: float
    ours_name: str
    baseline_name: str

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.baseline is None or not self.ours.rate or not self.baseline.rate:
            return None
        return self.ours.rate / self.baseline.rate

    @property
    def paired(self) -> list[float]:
        """ours / baseline within each round (both measured within the same minute)."""
        if self.ours is None or self.baseline is None:
            return []
        base = {r.round: r.rate for r in self.baseline.runs}
        return [r.rate / base[r.round] for r in self.ours.runs if base.get(r.round)]

    @property
    def status(self) -> str:
        if self.ratio is None:
            return "n/a"
        assert self.ours is not None and self.baseline is not None
        if not (self.ours.valid and self.baseline.valid):
            return "INVALID"
        return "PASS" if self.ratio >= self.need else "FAIL"

    def line(self) -> str:
        title = GOAL_TITLES[self.number]
        if self.ratio is None:
            missing = self.ours_name if self.ours is None or not self.ours.available else self.baseline_name
            return f"  n/a     goal {self.number}: {title}: {missing} not measured"
        assert self.ours is not None and self.baseline is not None
        paired = self.paired
        spread = f" [rounds {min(paired):.2f}-{max(paired):.2f}]" if len(paired) > 1 else ""
        borderline = " BORDERLINE" if paired and min(paired) < self.need <= max(paired) else ""
        invalid = ""
        if self.status == "INVALID":
            bad = [row.target.title for row in (self.ours, self.baseline) if not row.valid]
            invalid = f" (errors in: {', '.join(bad)})"
        return (
            f"  {self.status:<7} goal {self.number}: {title}\n"
            f"          {self.ours_name} {fmt_rate(self.ours.rate)}/s vs {self.baseline_name}"
            f" {fmt_rate(self.baseline.rate)}/s: ratio {self.ratio:.2f}{spread} (need >= {self.need:.2f})"
            f"{borderline}{invalid}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "goal": self.number,
            "title": GOAL_TITLES[self.number],
            "ours": self.ours_name,
            "baseline": self.baseline_name,
            "ours_rate": self.ours.rate if self.ours else None,
            "baseline_rate": self.baseline.rate if self.baseline else None,
            "ratio": self.ratio,
            "paired_ratios": self.paired,
            "need": self.need,
            "status": self.status,
        }


def _fmt_ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    fmt = [f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths)]
    lines = [" | ".join(f.format(h) for f, h in zip(fmt, headers, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(f.format(c) for f, c in zip(fmt, r, strict=True)) for r in rows]
    return "\n".join(lines)


def _row_cells(row: Row, reference: Row | None) -> list[str]:
    t = row.target
    if not row.available:
        return [t.title, "n/a", "", "", "", "", "", "", "", t.note or "not measured"]
    lo, hi = row.rate_range or (0.0, 0.0)
    errors = row.errors
    err = "0" if not errors else "INVALID: " + ", ".join(f"{k} {v:,}" for k, v in sorted(errors.items()))
    share, other = row.cpu_share, row.other_share
    return [
        t.title,
        fmt_rate(row.rate),
        f"{fmt_rate(lo)}-{fmt_rate(hi)}",
        fmt_ratio(row.rate, reference.rate) if reference is not None and reference.available else "",
        _fmt_ms(row.p50),
        _fmt_ms(row.p99),
        "n/a" if row.cpu_ms is None else f"{row.cpu_ms:.2f}",
        "n/a" if share is None else f"{100 * share:.0f}%",
        "n/a" if other is None else f"{100 * other:.0f}%",
        err,
    ]


_HEADERS = [
    "contender",
    "req/s",
    "min-max",
    "vs trivial",
    "p50 ms",
    "p99 ms",
    "srv CPU ms/req",
    "srv CPU",
    "other CPU",
    "errors",
]


# --------------------------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("gunicorn", "flask", "aiocoap", "authlib", "joserfc", "sqlalchemy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    out["sqlite"] = sqlite3.sqlite_version
    wrk = shutil.which("wrk")
    if wrk:
        proc = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
        m = re.search(r"wrk\s+(\S+)", proc.stdout + proc.stderr)
        out["wrk"] = m.group(1) if m else "?"
    else:
        out["wrk"] = "not installed"
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "as_server", "ace_core", "policies"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        out["tree"] = head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        out["tree"] = "unknown"
    return out


def _settings_defaults() -> tuple[int, int]:
    """``http_workers`` and ``http_threads`` defaults of the AS settings (2 x 8 if the module is missing)."""
    try:
        from as_server.config import Settings
    except ImportError:
        return 2, 8
    defaults = Settings(home=ROOT)  # only the field defaults; nothing is read
    return defaults.http_workers, defaults.http_threads


@dataclass(frozen=True)
class Options:
    """What to run (from the command line)."""

    seconds: float
    rounds: int
    stored: int
    warmup: float
    workers: int
    threads: int
    authlib_commit: str


class Bench:
    """One benchmark run: deployments, servers, targets, measurements. :meth:`close` stops every server."""

    def __init__(self, opts: Options, workdir: Path, log: TextIO) -> None:
        self.opts = opts
        self.workdir = workdir
        self.log = log
        self.ports = Ports()
        self.env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        for name in [k for k in self.env if k.startswith("OSTIARY_")]:
            del self.env[name]
        self.servers: dict[str, Server] = {}
        self.http_port: dict[str, int] = {}
        self.coap_port: dict[str, int] = {}
        self.failed: dict[str, str] = {}
        self.targets: list[Target] = []
        self.runs: list[Run] = []
        self.validation: dict[str, str] = {}
        self.recorded: dict[str, dict[str, int | None]] = {}
        self.ours_note: str | None = None
        self.stored_seconds: float | None = None
        self.homes = {"ours-empty": workdir / "ours-empty", "ours-stored": workdir / "ours-stored"}
        self.ours_secret: dict[str, str] = {}
        self.authlib_secret = secrets.token_urlsafe(32)
        self.authlib_db = workdir / "authlib.db"
        #: Each server's database file, read into the page cache before each of its runs (warm_page_cache).
        self.databases = {**{key: home / "ostiary.db" for key, home in self.homes.items()}, "authlib": self.authlib_db}
        self.authlib_key = workdir / "authlib-es256.pem"
        self.floor_db = {"floor-http": workdir / "floor-http.db", "floor-coap": workdir / "floor-coap.db"}
        self.databases.update(self.floor_db)

    def say(self, text: str) -> None:
        print(f"  {text}", file=self.log, flush=True)

    # -- set-up ---------------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """The two AS deployments (the stored one bulk-loaded before any server runs) and the Authlib database."""
        try:
            self.say("creating the AS deployments with the ostiary CLI ...")
            for name, home in self.homes.items():
                self.ours_secret[name] = _make_deployment(home)
            if self.opts.stored:
                self.say(f"pre-storing {self.opts.stored:,} tokens (SqlStorage.bulk_insert_tokens) ...")
                self.stored_seconds = _prestore(self.homes["ours-stored"], self.opts.stored, self.log)
        except Exception as exc:  # the AS is not runnable: the baselines still run, our rows say why
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            self.ours_note = f"AS not runnable: {type(exc).__name__}: {first}"
            self.say(self.ours_note)
        from benchmarks.baselines import authlib_app, durable_floor

        for db in self.floor_db.values():
            durable_floor.prepare(db)
        authlib_app.prepare(
            self.authlib_db,
            self.authlib_key,
            client_id=CLIENT_ID,
            client_secret=self.authlib_secret,
            scope=SCOPE,
            audience=AUDIENCE,
        )

    def _add_server(self, key: str, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.servers[key] = Server(name, argv, env or self.env, self.workdir / f"{key}.log")

    def start(self) -> None:
        """Start every server at once, then wait for each (bounded)."""
        opts = self.opts
        for key in ("trivial-http", "floor-http", "authlib"):
            self.http_port[key] = self.ports.take()
        for key in ("trivial-coap", "floor-coap"):
            self.coap_port[key] = self.ports.take()
        self._add_server(
            "trivial-http",
            "trivial HTTP",
            _gunicorn(
                "benchmarks.baselines.trivial_http:create_app()", self.http_port["trivial-http"], opts.workers,
                opts.threads,
            ),
        )  # fmt: skip
        self._add_server(
            "floor-http",
            "durable floor HTTP",
            _gunicorn(
                f"benchmarks.baselines.durable_floor:create_app(db={str(self.floor_db['floor-http'])!r})",
                self.http_port["floor-http"], opts.workers, opts.threads,
            ),
        )  # fmt: skip
        authlib_call = (
            f"benchmarks.baselines.authlib_app:create_app(db={str(self.authlib_db)!r}, "
            f"key={str(self.authlib_key)!r}, commit={opts.authlib_commit!r}, synchronous='FULL')"
        )
        self._add_server(
            "authlib", "Authlib", _gunicorn(authlib_call, self.http_port["authlib"], opts.workers, opts.threads)
        )
        self._add_server(
            "trivial-coap",
            "trivial CoAP",
            [sys.executable, "-m", "benchmarks.baselines.trivial_coap", "--host", HOST, "--port",
             str(self.coap_port["trivial-coap"]), "--transport", "simplesocketserver"],
        )  # fmt: skip
        self._add_server(
            "floor-coap",
            "durable floor CoAP",
            [sys.executable, "-m", "benchmarks.baselines.durable_floor", "--host", HOST, "--port",
             str(self.coap_port["floor-coap"]), "--db", str(self.floor_db["floor-coap"]),
             "--transport", "simplesocketserver"],
        )  # fmt: skip
        if self.ours_note is None:
            for key, home in self.homes.items():
                self.http_port[key], self.coap_port[key] = self.ports.take(), self.ports.take()
                env = {
                    **self.env,
                    "OSTIARY_HOME": str(home),
                    "OSTIARY_HTTP_HOST": HOST,
                    "OSTIARY_HTTP_PORT": str(self.http_port[key]),
                    "OSTIARY_COAP_HOST": HOST,
                    "OSTIARY_COAP_PORT": str(self.coap_port[key]),
                    # Each deployment's bootstrap server on a port of its own: two on the default 5684 cannot both
                    # start (a UDP port another server holds is refused, as_server.transport.udp).
                    "OSTIARY_BOOTSTRAP_DTLS_PORT": str(self.ports.take()),
                    "OSTIARY_HTTP_WORKERS": str(opts.workers),
                    "OSTIARY_HTTP_THREADS": str(opts.threads),
                }
                name = f"ostiary as serve ({key.removeprefix('ours-')} database)"
                self._add_server(key, name, [sys.executable, "-m", "ostiary", "as", "serve"], env)
        self.say("starting servers ...")
        for server in self.servers.values():
            server.start()
        deadline = time.perf_counter() + READY_TIMEOUT
        for key, server in self.servers.items():
            try:
                if key in self.http_port:
                    _wait_http(server, self.http_port[key], deadline)
                if key in self.coap_port:
                    _wait_coap(server, self.coap_port[key], deadline)
                server.refresh_pids()
            except BenchError as exc:
                self.failed[key] = str(exc)
                self.say(str(exc))

    def build_targets(self) -> None:
        """The measured rows (see the module docstring); ours are n/a with the reason when the AS is not runnable."""
        from benchmarks.baselines import authlib_app, durable_floor, trivial_coap, trivial_http

        ours = self.ours_note is None
        secret = self.ours_secret.get("ours-empty", "")
        coap_payload = b"x" * 60
        if ours:
            from ace_core.messages import TokenRequest

            coap_payload = TokenRequest(
                client_id=CLIENT_ID, client_secret=secret.encode(), audience=AUDIENCE, scope=SCOPE
            ).to_cbor()
        basic = _basic(CLIENT_ID, secret)
        ours_rows = "SELECT count(*) FROM issued_tokens"
        floor_rows = f"SELECT count(*) FROM {durable_floor.TABLE}"
        stored = f"HTTP ours (form), {self.opts.stored:,} stored"

        def http(key: str, title: str, server: str, path: str, body: bytes, ctype: str, **kw: Any) -> Target:
            return Target(key, title, "http", server, self.http_port.get(server, 0), path, body, ctype, **kw)

        def coap(key: str, title: str, server: str, path: str, ctype: str | None, **kw: Any) -> Target:
            return Target(key, title, "coap", server, self.coap_port.get(server, 0), path, coap_payload, ctype, **kw)

        t = [
            http("http-trivial", "HTTP trivial Flask POST", "trivial-http", trivial_http.PATH, FORM_BODY, FORM,
                 authorization=basic),
            http("http-floor", "HTTP durable floor (trivial + durable write)", "floor-http", durable_floor.PATH,
                 FORM_BODY, FORM, authorization=basic, db=self.floor_db["floor-http"], db_query=floor_rows),
            http("http-authlib", "HTTP Authlib JWT ES256", "authlib", authlib_app.PATH, FORM_BODY, FORM,
                 authorization=_basic(CLIENT_ID, self.authlib_secret), expect="json-token", db=self.authlib_db,
                 db_query="SELECT count(*) FROM oauth2_token"),
            http("http-ours", "HTTP ours (form)", "ours-empty", "/token", FORM_BODY, FORM, authorization=basic,
                 expect="json-token", db=self.homes["ours-empty"] / "ostiary.db", db_query=ours_rows),
            http("http-ours-signed", "HTTP ours (form, signed token)", "ours-empty", "/token",
                 FORM_BODY.replace(AUDIENCE.encode(), SIGNED_AUDIENCE.encode()), FORM, authorization=basic,
                 expect="json-token"),
            http("http-ours-cbor", "HTTP ours (ACE CBOR)", "ours-empty", "/token", coap_payload, ACE_CBOR,
                 expect="cbor-token"),
            http("http-ours-stored", stored, "ours-stored", "/token", FORM_BODY, FORM,
                 authorization=_basic(CLIENT_ID, self.ours_secret.get("ours-stored", "")), expect="json-token",
                 db=self.homes["ours-stored"] / "ostiary.db", db_query=ours_rows),
            coap("coap-trivial", "CoAP trivial aiocoap POST", "trivial-coap", trivial_coap.PATH, None),
            coap("coap-floor", "CoAP durable floor (trivial + durable write)", "floor-coap", durable_floor.COAP_PATH,
                 None, db=self.floor_db["floor-coap"], db_query=floor_rows),
            coap("coap-ours", "CoAP ours (ACE CBOR)", "ours-empty", "token", ACE_CBOR, expect="cbor-token"),
        ]  # fmt: skip
        for target in t:
            if target.server.startswith("ours-") and not ours:
                target.note = self.ours_note
        self.targets = t

    def validate_and_warm_up(self) -> None:
        """One checked request per target (a failing target becomes n/a), then untimed load for the HTTP ones."""
        have_wrk = shutil.which("wrk") is not None
        for t in self.targets:
            if t.note is not None:
                continue
            if t.server in self.failed:
                t.note = f"server did not start ({self.failed[t.server].splitlines()[0][:150]})"
            elif t.transport == "http" and not have_wrk:
                t.note = "wrk is not installed (apt-get install wrk; `make bench` does it)"
            else:
                try:
                    self.validation[t.key] = _validate_http(t) if t.transport == "http" else _validate_coap(t)
                except (BenchError, OSError, ValueError) as exc:
                    t.note = f"validation failed: {str(exc)[:200]}"
                    self.say(f"{t.title}: {t.note}")
        for t in self.live:
            if t.transport == "http":
                self.say(f"warming up {t.title} ({self.opts.warmup:g} s) ...")
                _measure(t, self.servers[t.server], self.opts.warmup, self.workdir, 0)

    @property
    def live(self) -> list[Target]:
        return [t for t in self.targets if t.note is None]

    # -- measuring --------------------------------------------------------------------------------------------

    def measure(self) -> None:
        """``rounds`` rounds; each runs every live target once, starting one further along the list each time."""
        for r in range(1, self.opts.rounds + 1):
            live = self.live
            if not live:
                return
            shift = (r - 1) % len(live)
            for t in live[shift:] + live[:shift]:
                self.say(f"round {r}/{self.opts.rounds}: {t.title} ({self.opts.seconds:g} s) ...")
                warm_page_cache(self.databases.get(t.server))
                try:
                    run = _measure(t, self.servers[t.server], self.opts.seconds, self.workdir, r)
                except (BenchError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
                    t.note = f"measurement failed: {str(exc)[:200]}"
                    self.say(f"  {t.note}")
                    continue
                self.runs.append(run)
                self.say(
                    f"  {run.rate:,.0f}/s p50 {_fmt_ms(run.p50_ms)} ms p99 {_fmt_ms(run.p99_ms)} ms errors "
                    f"{run.errors or 0} server CPU {run.server_cpu_s / run.wall_s:.0%}"
                    + (f", connections per worker {'+'.join(map(str, run.split))}" if run.split else "")
                )
        for server in self.servers.values():
            if server.proc is not None and not server.alive():
                self.say(f"warning: {server.name} exited during the measurements:\n{server.log_tail()}")

    def cross_check(self) -> None:
        """Count each token table: every 2xx answer the load generators saw must have its row."""
        for t in self.targets:
            if t.db is None or t.note is not None:
                continue
            answered = sum(x.issued for x in self.targets if x.server == t.server and x.note is None)
            rows = _count_rows(t.db, t.db_query)
            base = self.opts.stored if t.server == "ours-stored" else 0
            self.recorded[t.server] = {"rows": None if rows is None else rows - base, "answered_2xx": answered}

    def close(self) -> None:
        self.say("stopping servers ...")
        for server in self.servers.values():
            server.stop()

    def rows(self) -> dict[str, Row]:
        return {t.key: Row(t, [r for r in self.runs if r.target == t.key]) for t in self.targets}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_as",
        description="Token issuance rate and latency of the AS over HTTP and CoAP against same-run baselines.",
    )
    parser.add_argument("--seconds", type=float, help=f"seconds per run (default {DEFAULT_SECONDS:g})")
    parser.add_argument("--rounds", type=int, help=f"runs per contender, interleaved (default {DEFAULT_ROUNDS})")
    parser.add_argument("--stored", type=int, help=f"tokens pre-stored for goal 4 (default {DEFAULT_STORED:,})")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_SECONDS:g} s runs, {QUICK_ROUNDS} round, --stored {QUICK_STORED:,}",
    )
    parser.add_argument("--workers", type=int, help="gunicorn workers for every HTTP server (default: Settings)")
    parser.add_argument("--threads", type=int, help="gunicorn threads per worker (default: Settings)")
    parser.add_argument(
        "--authlib-commit",
        choices=("group", "each"),
        default="group",
        help="how the Authlib baseline commits its tokens (default group, like ours)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the raw results as JSON to FILE")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, databases)")
    args = parser.parse_args(argv)
    default_workers, default_threads = _settings_defaults()
    opts = Options(
        seconds=args.seconds or (QUICK_SECONDS if args.quick else DEFAULT_SECONDS),
        rounds=args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS),
        stored=args.stored if args.stored is not None else (QUICK_STORED if args.quick else DEFAULT_STORED),
        warmup=QUICK_WARMUP_SECONDS if args.quick else WARMUP_SECONDS,
        workers=args.workers or default_workers,
        threads=args.threads or default_threads,
        authlib_commit=args.authlib_commit,
    )
    if opts.seconds < 1 or opts.rounds < 1 or opts.stored < 0:
        parser.error("--seconds must be >= 1, --rounds >= 1, --stored >= 0")

    versions = _versions()
    load = os.getloadavg()[0]
    print("bench_as: token issuance with 32 concurrent clients, over HTTP and CoAP, against same-run baselines")
    print(
        ", ".join(f"{k} {v}" for k, v in versions.items())
        + f"; {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.2f}"
    )
    print(
        f"HTTP servers: gunicorn -k {WORKER_CLASS} --workers {opts.workers} --threads {opts.threads}; load: wrk "
        f"-t{WRK_THREADS} -c{CLIENTS}. CoAP: {CLIENTS} raw-UDP clients, one NON POST outstanding each. "
        f"{opts.rounds} round(s) of {opts.seconds:g} s per contender, interleaved; {opts.stored:,} tokens "
        "pre-stored for goal 4."
    )
    print(flush=True)

    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="bench_as-"))
    bench = Bench(opts, workdir, sys.stderr)
    try:
        bench.prepare()
        bench.start()
        bench.build_targets()
        bench.validate_and_warm_up()
        bench.measure()
        bench.cross_check()
    finally:
        bench.close()

    rows = bench.rows()
    print(_report(bench, rows))
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    if args.json:
        doc = {
            "benchmark": "bench_as",
            "versions": versions,
            "load_average": load,
            "options": opts.__dict__,
            "clients": CLIENTS,
            "stored_load_seconds": bench.stored_seconds,
            "targets": {
                key: {
                    "title": row.target.title,
                    "note": row.target.note,
                    "validation": bench.validation.get(key),
                    "rate": row.rate,
                    "p50_ms": row.p50,
                    "p99_ms": row.p99,
                    "errors": row.errors,
                    "valid": row.valid,
                    "server_cpu_ms_per_request": row.cpu_ms,
                }
                for key, row in rows.items()
            },
            "runs": [r.as_dict() for r in bench.runs],
            "recorded": bench.recorded,
            "goals": [g.as_dict() for g in _goals(rows, opts.stored)],
            "durability_floors": [f.as_dict() for f in _floors(rows)],
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2)
            fh.write("\n")
        print(f"wrote {args.json}")
    if args.keep:
        print(f"kept {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if bench.failed:  # a row without its server is not a measurement: the run failed
        print(f"bench_as: FAILED: {', '.join(sorted(bench.failed))} did not start (see above)", file=sys.stderr)
        return 1
    return 0


def _goals(rows: dict[str, Row], stored: int) -> list[Goal]:
    def get(key: str) -> Row | None:
        return rows.get(key)

    return [
        Goal(1, get("http-ours"), get("http-authlib"), 1.2, "ours", "Authlib"),
        Goal(2, get("http-ours"), get("http-trivial"), 0.5, "ours", "trivial"),
        Goal(3, get("coap-ours"), get("coap-trivial"), 0.6, "ours", "trivial CoAP"),
        Goal(4, get("http-ours-stored"), get("http-ours"), 0.9, f"ours with {stored:,} stored", "ours empty"),
    ]


@dataclass(frozen=True)
class Floor:
    """What durability leaves on one transport: the durable floor's share of the trivial rate, ours against the
    floor, and the goal that compares ours with the trivial endpoint."""

    transport: str
    goal: int
    need: float
    trivial: Row | None
    floor: Row | None
    ours: Row | None

    @property
    def floor_share(self) -> float | None:
        """durable floor / trivial."""
        return _ratio(self.floor, self.trivial)

    @property
    def ours_of_floor(self) -> float | None:
        """ours / durable floor."""
        return _ratio(self.ours, self.floor)

    def lines(self) -> list[str]:
        share, of_floor = self.floor_share, self.ours_of_floor
        if share is None or self.floor is None or self.trivial is None:
            return [f"  {self.transport}: n/a (the durable floor or the trivial endpoint was not measured)"]
        text = (
            f"  {self.transport}: durable floor {fmt_rate(self.floor.rate)}/s = {share:.2f} of trivial "
            f"{fmt_rate(self.trivial.rate)}/s"
        )
        if of_floor is not None and self.ours is not None:
            text += f"; ours {fmt_rate(self.ours.rate)}/s = {of_floor:.2f} of the floor"
        out = [text]
        if share < self.need:
            out.append(
                f"      goal {self.goal} asks ours >= {self.need:.2f} of trivial; the floor, which does nothing but "
                f"the durable write, reached {share:.2f}: no endpoint recording each request in SQLite before "
                "answering reaches the goal on this stack and machine"
            )
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "transport": self.transport,
            "goal": self.goal,
            "need": self.need,
            "floor_rate": self.floor.rate if self.floor else None,
            "floor_over_trivial": self.floor_share,
            "ours_over_floor": self.ours_of_floor,
        }


def _ratio(a: Row | None, b: Row | None) -> float | None:
    if a is None or b is None or not a.rate or not b.rate or not (a.valid and b.valid):
        return None
    return a.rate / b.rate


def _floors(rows: dict[str, Row]) -> list[Floor]:
    return [
        Floor("HTTP", 2, 0.5, rows.get("http-trivial"), rows.get("http-floor"), rows.get("http-ours")),
        Floor("CoAP", 3, 0.6, rows.get("coap-trivial"), rows.get("coap-floor"), rows.get("coap-ours")),
    ]


def _report(bench: Bench, rows: dict[str, Row]) -> str:
    opts = bench.opts
    seconds, rounds, stored = opts.seconds, opts.rounds, opts.stored
    workers, threads, authlib_commit = opts.workers, opts.threads, opts.authlib_commit
    servers, recorded, validation, stored_seconds = (
        bench.servers,
        bench.recorded,
        bench.validation,
        bench.stored_seconds,
    )
    out: list[str] = []
    http_rows = [r for k, r in rows.items() if k.startswith("http-")]
    coap_rows = [r for k, r in rows.items() if k.startswith("coap-")]
    trivial_http, trivial_coap = rows.get("http-trivial"), rows.get("coap-trivial")
    out.append(
        f"HTTP (wrk -t{WRK_THREADS} -c{CLIENTS}; req/s = median of {rounds} run(s) of {seconds:g} s; p50/p99 = "
        "median of the runs' percentiles; srv CPU = server process tree, 100% = one core)"
    )
    out.append(_table(_HEADERS, [_row_cells(r, trivial_http) for r in http_rows]))
    splits = [
        f"  {r.target.title}: " + ", ".join("+".join(map(str, run.split)) or "n/a" for run in r.runs)
        for r in http_rows
        if r.runs
    ]
    if splits:
        out.append("Connections per gunicorn worker half-way through each run (round by round; see note a):")
        out += splits
    out.append("")
    out.append(f"CoAP ({CLIENTS} clients, one outstanding NON request each; same columns)")
    out.append(_table(_HEADERS, [_row_cells(r, trivial_coap) for r in coap_rows]))
    out.append("")

    goals = _goals(rows, stored)
    out.append("Goals")
    out += [g.line() for g in goals]
    bad = [g for g in goals if g.status in ("FAIL", "INVALID")]
    if bad:
        out.append(f"*** {len(bad)} GOAL(S) NOT MET: " + ", ".join(f"goal {g.number} {g.status}" for g in bad) + " ***")
    elif all(g.status == "PASS" for g in goals):
        out.append("All goals pass.")
    else:
        out.append("Some goals could not be evaluated (n/a).")
    out.append(
        "(ratio = ratio of the medians; [rounds a-b] = the ratio within each round; BORDERLINE: the rounds straddle "
        "the goal, so a rerun may flip the verdict)"
    )
    out.append("")
    out.append("Durability floor (note i): what recording each request durably leaves of the trivial rate")
    for floor in _floors(rows):
        out += floor.lines()
    out.append("")

    out.append("Checks")
    for key, text in validation.items():
        out.append(f"  validation {rows[key].target.title}: {text}")
    for server, counts in recorded.items():
        rows_n, answered = counts["rows"], counts["answered_2xx"] or 0
        if rows_n is None:
            out.append(f"  recorded rows, {servers[server].name}: n/a (database not readable)")
            continue
        verdict = "ok" if rows_n >= answered else "MISSING ROWS"
        out.append(
            f"  recorded rows, {servers[server].name}: {rows_n:,} rows for {answered:,} 2xx answers counted by "
            f"the load generators: {verdict}"
        )
    if stored_seconds is not None:
        out.append(f"  bulk load: {stored:,} tokens in {stored_seconds:.0f} s ({stored / stored_seconds:,.0f}/s)")
    out.append("")

    out += [
        "Notes",
        f"a. Server stack: every HTTP server runs under gunicorn -k {WORKER_CLASS} --workers {workers} "
        f"--threads {threads} (the Settings defaults, the flags `ostiary as serve` passes its gunicorn); wrk keeps its "
        "32 connections alive. Load generator and servers share the machine's CPUs, so the load generator's CPU is "
        "taken from the servers alike for every row. Each gunicorn worker keeps the connections it accepted; with "
        "plain gthread workers the split of the 32 was drawn anew in every run (32 on one worker halved a row's rate), "
        "the balanced worker accepts only while no other holds fewer. The split is listed under the table.",
        "b. Ours runs as `ostiary as serve` on deployments made with the CLI (`as init`, `as rs add`, `as client "
        "add`, a policy.yaml allowing the scope): HTTP in its gunicorn workers, CoAP in the serve process itself. "
        "While one side is measured the other is idle (its CPU is included in 'srv CPU'). Audience front-door uses "
        "the default token form (COSE_Encrypt0, AES-CCM-16-64-128, carrying generated OSCORE input material); "
        "back-door (the 'signed token' row) uses sign1+encrypt0 (EdDSA signature inside the Encrypt0). Each token "
        "is recorded (group commit, SQLite WAL, synchronous=FULL, one INSERT per batch) before the response leaves; "
        "the client, the RS and (signed form) the signing key come from each process's registry cache (re-validated "
        "against the database every 0.1 s), a unique index keeps generated PoP key ids unused, and the server logs "
        "one INFO line per token (its default log level; written in batches at most 0.1 s late). Over CoAP a "
        "client_credentials request runs on the event loop and awaits its queued commit.",
        "c. Authlib baseline: authlib.integrations.flask_oauth2.AuthorizationServer + ClientCredentialsGrant, "
        "client_secret_basic, a JWTBearerTokenGenerator (RFC 9068) subclass signing ES256 with a joserfc KeySet, "
        "3600 s lifetime; query_client reads the client from SQLite (SQLAlchemy Core, SHA-256 secret hash); "
        "save_token inserts (jti, client_id, scope, exp, jwt) into SQLite in WAL mode with synchronous=FULL and "
        "returns after the commit. "
        + (
            "Commits are grouped like ours: one writer thread per worker takes every queued row and commits them "
            "in one transaction (ours caps a batch at 256 rows; under 16 request threads neither reaches that)."
            if authlib_commit == "group"
            else "One transaction and commit per token (--authlib-commit each); ours uses group commit."
        ),
        "d. Requests: the HTTP rows send the same form body (grant_type=client_credentials, audience, scope "
        f"'{SCOPE}') with HTTP Basic; the trivial endpoint gets it too and ignores it. 'ACE CBOR' sends the CoAP "
        "payload (client_id and client_secret inside the CBOR map). The CoAP trivial resource gets the same "
        "payload bytes as ours.",
        "e. CoAP load: benchmarks/coap_load.py in its own process, 32 UDP sockets (32 source ports), each with "
        f"one outstanding NON request (the server answers NON), Message ID and Token fresh per request; a request "
        f"unanswered after {COAP_TIMEOUT:g} s is an error and the client moves on; the first "
        f"{COAP_WARMUP_SECONDS:g} s of each run are not counted. Both CoAP servers use aiocoap's "
        "simplesocketserver transport (what ours picks for a unicast bind address).",
        "f. Errors: HTTP counts every non-2xx status (wrk Lua response callback), socket errors and timeouts "
        f"(> {WRK_TIMEOUT}); CoAP counts every response code other than 2.01/2.04/2.05, resets and timeouts. Any "
        "error makes its row INVALID and so every goal using it. Before measuring, one request per row is "
        "checked (status and a decodable token); afterwards the token tables are counted: every 2xx answer "
        "the load generators saw must have its row.",
        f"g. Goal 4: a second deployment (same CLI setup) whose database holds {stored:,} realistic token records "
        "(issued evenly over 30 days with the AS's cti for the issue second, a random token hash, sealed OSCORE "
        "cnf, 1,000 clients x 20 audiences) bulk-loaded before the servers start, then WAL-checkpointed; it is "
        "measured in the same rounds as the empty one. The 'empty' database fills up during the run with the "
        "tokens the other rows issue. Before each run, every server's database file (with its WAL) is read once "
        "into the page cache, as a server under continuous load would have it (warm_page_cache: this machine "
        "evicts idle file pages within a minute).",
        "h. srv CPU ms/req: server CPU time (all processes of the server) per request. srv CPU: the server's CPU "
        "use during the runs (100% = one core); a server limited by its CPU sits near what the load generator "
        "leaves free, one limited by waiting (locks, fsync, a GIL-bound single process) below it. other CPU: "
        "what the rest of the machine used meanwhile (other jobs); a high value means the row was measured on a "
        "busy machine.",
        "i. Durable floor: the trivial endpoint (HTTP: same gunicorn flags; CoAP: same aiocoap transport) that, "
        "before answering, writes one fresh 16-byte random key into a one-column SQLite table (the key is the "
        "primary key, WITHOUT ROWID), WAL with synchronous=FULL, through the AS's group committer (a lone request "
        "commits its row itself, others queue and share the next commit; the CoAP resource awaits the write's "
        "future on the event loop, as ours does): benchmarks/baselines/durable_floor.py. No parsing, "
        "authentication, policy, cryptography or token: its rate bounds what any endpoint that records every "
        "request before answering (issue #3: every token is durably recorded before the response leaves) can "
        "reach here. Its rows are counted like the token tables.",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
