"""Raw-UDP CoAP load generator: N clients, each with its own socket and one outstanding POST at a time.

It measures the server, not a CoAP library: requests are pre-encoded (RFC 7252 §3) and only the Message ID and
Token are patched per request; responses are matched to their request by Token. Each of the ``--clients``
clients owns one UDP socket (so one source port: server-side per-remote state applies as for real clients) and
sends its next request as soon as the response to the previous one arrives (closed loop, like wrk's
connections). A request without a response after ``--timeout`` seconds counts as an error ("timeout") and the
client moves on with a fresh request (new Message ID and Token), so a lost datagram never stalls a client; a
late response to an abandoned request is counted as "late" and otherwise ignored.

Only responses to requests sent inside the measurement window (after ``--warmup``) count. The result is one
JSON object on stdout: ``requests`` (successful responses), ``rate`` (per second of the window), latency
percentiles in milliseconds, ``errors`` (by response code, plus ``timeout`` and ``reset``) and, for checking,
the first successful response's code and payload (hex).

Message types: NON (default; what library-notes §5d used for server ceilings; the server answers NON) or CON (the
server answers with a piggybacked ACK, or an empty ACK then a separate response, which is acknowledged).

Two request modes beyond one fixed payload:

* **distinct payloads** (``--payload-file``; ``run_load(payloads=...)``): request *i* carries payload *i*, each used
  once (e.g. one ACE token per ``/authz-info`` upload); when the list runs out it starts again and the output counts
  the ``payload_reuses``. With ``--max-requests N`` the run stops sending after N requests and ends when they are
  answered (or timed out): a bulk upload rather than a timed load.
* **OSCORE** (``--oscore-file``; ``run_load(oscore=OscoreLoad(...))``): requests protected with
  :mod:`benchmarks.oscore_wire` before the clock starts (``per_context`` per security context from Sender Sequence
  Number ``seq_base`` on; more are protected inline if a context runs out, counted as ``protected_inline``). Clients
  share the contexts round-robin (client *i* uses context *i* mod N) and draw sequence numbers from their context's
  counter in send order, so the server sees them nearly in order (well inside the 32-wide replay window) even when
  two clients share a context. A response counts as success only if it unprotects and its *inner* code is 2.xx
  (the outer code of a protected response is always 2.04); an unprotected answer counts under its outer code and
  one that fails to decrypt as ``unprotect``.

Run: ``python -m benchmarks.coap_load --port 15683 --path token --content-format 19 --payload-hex a2... --duration 10``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import selectors
import socket
import statistics
import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiocoap.numbers.codes import Code
from aiocoap.numbers.optionnumbers import OptionNumber
from aiocoap.numbers.types import Type

from benchmarks.oscore_wire import ClientContext, OscoreError, ProtectedRequest

__all__ = [
    "LoadResult",
    "OscoreLoad",
    "encode_message",
    "encode_options",
    "exchange",
    "parse_header",
    "parse_options",
    "probe",
    "read_payloads",
    "run_load",
    "write_payloads",
]

VERSION = 1
TOKEN_LENGTH = 8
PAYLOAD_MARKER = 0xFF
#: Response codes that count as success: 2.01 Created, 2.04 Changed, 2.05 Content.
SUCCESS_CODES = frozenset({int(Code.CREATED), int(Code.CHANGED), int(Code.CONTENT)})
#: Outer code of an OSCORE request without Observe (RFC 8613 §4.2): POST.
OSCORE_OUTER_CODE = int(Code.POST)


def _option_nibble(value: int) -> tuple[int, bytes]:
    """RFC 7252 §3.1 option delta/length nibble and extended bytes."""
    if value < 13:
        return value, b""
    if value < 269:
        return 13, bytes([value - 13])
    return 14, struct.pack(">H", value - 269)


def encode_options(options: Sequence[tuple[int, bytes]]) -> bytes:
    """The option part of a CoAP message (RFC 7252 §3.1); ``options`` are (number, value) pairs in any order.

    OSCORE's inner (Class E) options use the same encoding (RFC 8613 §5.3).
    """
    out = bytearray()
    previous = 0
    for number, value in sorted(options, key=lambda o: o[0]):
        delta, delta_ext = _option_nibble(number - previous)
        length, length_ext = _option_nibble(len(value))
        out.append(delta << 4 | length)
        out += delta_ext + length_ext + value
        previous = number
    return bytes(out)


def encode_message(
    mtype: int, code: int, mid: int, token: bytes, options: Sequence[tuple[int, bytes]], payload: bytes = b""
) -> bytes:
    """Encode a CoAP message (RFC 7252 §3); ``options`` are (number, value) pairs in any order."""
    if len(token) > 8:
        raise ValueError("token longer than 8 bytes")
    out = bytearray([VERSION << 6 | mtype << 4 | len(token), code])
    out += struct.pack(">H", mid)
    out += token
    out += encode_options(options)
    if payload:
        out.append(PAYLOAD_MARKER)
        out += payload
    return bytes(out)


def parse_header(datagram: bytes) -> tuple[int, int, int, bytes] | None:
    """(type, code, message ID, token) of a datagram, or None if it is not a CoAP message."""
    if len(datagram) < 4 or datagram[0] >> 6 != VERSION:
        return None
    tkl = datagram[0] & 0x0F
    if tkl > 8 or len(datagram) < 4 + tkl:
        return None
    mid = datagram[2] << 8 | datagram[3]
    return (datagram[0] >> 4) & 0x03, datagram[1], mid, bytes(datagram[4 : 4 + tkl])


def parse_options(datagram: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The options (number, value) and the payload of a CoAP message (a 0xFF inside an option value is no marker).

    :raises ValueError: a truncated option or a reserved nibble (15).
    """
    options: list[tuple[int, bytes]] = []
    i = 4 + (datagram[0] & 0x0F)
    number = 0
    end = len(datagram)
    while i < end:
        byte = datagram[i]
        if byte == PAYLOAD_MARKER:
            return options, bytes(datagram[i + 1 :])
        i += 1
        values = []
        for nibble in (byte >> 4, byte & 0x0F):
            if nibble < 13:
                values.append(nibble)
            elif nibble == 13:
                values.append(datagram[i] + 13)
                i += 1
            elif nibble == 14:
                values.append((datagram[i] << 8 | datagram[i + 1]) + 269)
                i += 2
            else:
                raise ValueError("reserved option nibble 15")
        number += values[0]
        if i + values[1] > end:
            raise ValueError("truncated option")
        options.append((number, bytes(datagram[i : i + values[1]])))
        i += values[1]
    return options, b""


def _payload(datagram: bytes) -> bytes:
    """The payload after the marker (options are skipped properly, a 0xFF inside an option value is no marker)."""
    return parse_options(datagram)[1]


def request_options(path: str, content_format: int | None) -> list[tuple[int, bytes]]:
    """Uri-Path options for ``path`` (segments split on ``/``) and Content-Format."""
    options = [(int(OptionNumber.URI_PATH), seg.encode()) for seg in path.strip("/").split("/") if seg]
    if content_format is not None:
        cf = content_format.to_bytes((content_format.bit_length() + 7) // 8, "big") if content_format else b""
        options.append((int(OptionNumber.CONTENT_FORMAT), cf))
    return options


def code_text(code: int) -> str:
    """``4.01`` style."""
    return f"{code >> 5}.{code & 0x1F:02d}"


@dataclass
class OscoreLoad:
    """OSCORE-protected requests (module docstring): the inner request, the client contexts and their numbering.

    :param contexts: the client sides of the security contexts the server holds.
    :param code: the inner request code (e.g. PUT).
    :param inner_options: the encoded Class E options (e.g. Uri-Path), see :func:`encode_options`.
    :param seq_base: the first Sender Sequence Number of every context (above any the server has seen).
    :param per_context: requests protected per context before the clock starts.
    """

    contexts: Sequence[ClientContext]
    code: int
    inner_options: bytes
    payload: bytes = b""
    seq_base: int = 0
    per_context: int = 1000

    def __post_init__(self) -> None:
        if not self.contexts:
            raise ValueError("at least one OSCORE context is needed")
        self._next = [0] * len(self.contexts)
        self._ready: list[list[ProtectedRequest]] = [[] for _ in self.contexts]
        self.protected_inline = 0

    def prepare(self) -> None:
        """Protect ``per_context`` requests per context (before the load starts)."""
        for k, context in enumerate(self.contexts):
            self._ready[k] = [
                context.protect_request(self.seq_base + j, self.code, self.inner_options, self.payload)
                for j in range(self.per_context)
            ]

    def take(self, k: int) -> ProtectedRequest:
        """The next protected request of context ``k`` (protected now if the prepared ones are used up)."""
        j = self._next[k]
        self._next[k] = j + 1
        ready = self._ready[k]
        if j < len(ready):
            return ready[j]
        self.protected_inline += 1
        return self.contexts[k].protect_request(self.seq_base + j, self.code, self.inner_options, self.payload)

    @property
    def next_sequence(self) -> int:
        """Above every Sender Sequence Number used so far, in every context."""
        return self.seq_base + max(self._next)


@dataclass
class LoadResult:
    """What one load run measured (see the module docstring)."""

    clients: int
    duration: float
    requests: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    errors: dict[str, int] = field(default_factory=dict)
    late: int = 0
    sent: int = 0
    ok_total: int = 0  # successful responses, in the window or not
    first_code: str | None = None
    first_payload: bytes | None = None
    payload_reuses: int = 0
    protected_inline: int = 0
    next_sequence: int | None = None
    setup_s: float = 0.0  # pre-protection, before the clock started

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float | None:
            if not lat:
                return None
            return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1e3

        return {
            "clients": self.clients,
            "duration": self.duration,
            "requests": self.requests,
            "rate": self.requests / self.duration if self.duration else 0.0,
            "p50_ms": pct(50),
            "p90_ms": pct(90),
            "p99_ms": pct(99),
            "mean_ms": statistics.fmean(lat) * 1e3 if lat else None,
            "errors": dict(self.errors),
            "error_count": self.error_count,
            "late": self.late,
            "sent": self.sent,
            "ok_total": self.ok_total,
            "first_code": self.first_code,
            "first_payload_hex": self.first_payload.hex() if self.first_payload is not None else None,
            "payload_reuses": self.payload_reuses,
            "protected_inline": self.protected_inline,
            "next_sequence": self.next_sequence,
            "setup_s": self.setup_s,
        }


class _Client:
    __slots__ = ("context", "counted", "deadline", "mid", "pending", "sent_at", "seq", "sock", "token")

    def __init__(self, sock: socket.socket, mid: int, context: int) -> None:
        self.sock = sock
        self.mid = mid
        self.seq = 0
        self.token = b""
        self.sent_at = 0.0
        self.deadline = 0.0
        self.counted = False
        self.context = context
        self.pending: ProtectedRequest | None = None


#: How a response is judged: (client, datagram, outer code) -> (success, error label or shown code, shown payload).
_Check = Callable[[_Client, bytes, int], tuple[bool, str, bytes]]


def _plain_check(c: _Client, data: bytes, code: int) -> tuple[bool, str, bytes]:
    return code in SUCCESS_CODES, code_text(code), _payload(data)


def _oscore_check(load: OscoreLoad) -> _Check:
    oscore_option = int(OptionNumber.OSCORE)

    def check(c: _Client, data: bytes, code: int) -> tuple[bool, str, bytes]:
        options, payload = parse_options(data)
        option = next((v for n, v in options if n == oscore_option), None)
        if option is None or c.pending is None:  # an unprotected answer (no context, replay, ...)
            return False, code_text(code), payload
        try:
            plaintext = load.contexts[c.context].unprotect_response(c.pending, option, payload)
        except OscoreError:
            return False, "unprotect", payload
        inner = plaintext[0] if plaintext else 0
        inner_payload = parse_options(b"\x40\x00\x00\x00" + plaintext[1:])[1]  # a fake header before the options
        if inner in SUCCESS_CODES and code in SUCCESS_CODES:
            return True, code_text(inner), inner_payload
        return False, f"inner {code_text(inner)}", inner_payload

    return check


def run_load(
    host: str,
    port: int,
    *,
    path: str,
    payload: bytes,
    content_format: int | None,
    clients: int = 32,
    duration: float = 10.0,
    warmup: float = 1.0,
    timeout: float = 2.0,
    confirmable: bool = False,
    code: int = int(Code.POST),
    payloads: Sequence[bytes] | None = None,
    oscore: OscoreLoad | None = None,
    max_requests: int | None = None,
) -> LoadResult:
    """Run the closed-loop load for ``warmup + duration`` seconds and return what the window measured.

    :param code: the request code (for OSCORE: see ``oscore``; the outer code is then POST).
    :param payloads: one payload per request, in order, instead of ``payload`` (module docstring).
    :param oscore: protect every request (``path``, ``payload`` and ``content_format`` are then ignored: the
        inner request is in :class:`OscoreLoad`).
    :param max_requests: stop sending after this many requests; the run ends when they are answered or timed out
        (``duration`` stays the upper bound, and becomes the time actually used).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    mtype = int(Type.CON if confirmable else Type.NON)
    setup_started = time.perf_counter()
    if oscore is not None:
        oscore.prepare()
        oscore_number = int(OptionNumber.OSCORE)
        head = bytes([VERSION << 6 | mtype << 4 | TOKEN_LENGTH, OSCORE_OUTER_CODE])
        check = _oscore_check(oscore)
    else:
        options = encode_options(request_options(path, content_format))
        head = bytes([VERSION << 6 | mtype << 4 | TOKEN_LENGTH, code])
        fixed_tail = options + (bytes([PAYLOAD_MARKER]) + payload if payload else b"")
        check = _plain_check
    setup_s = time.perf_counter() - setup_started
    sel = selectors.DefaultSelector()
    slots: list[_Client] = []
    prefix = os.getpid().to_bytes(4, "big")[-2:]
    contexts = len(oscore.contexts) if oscore is not None else 1
    for i in range(clients):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.connect((host, port))
        sock.setblocking(False)
        c = _Client(sock, int.from_bytes(os.urandom(2), "big"), i % contexts)
        slots.append(c)
        sel.register(sock, selectors.EVENT_READ, c)
        c.seq = i << 40

    result = LoadResult(clients=clients, duration=duration, setup_s=setup_s)
    errors = result.errors
    latencies = result.latencies
    budget = max_requests if max_requests is not None else -1
    payload_index = 0
    now = time.perf_counter
    start = now()
    window_start = start + warmup
    window_end = window_start + duration

    def body(c: _Client) -> bytes:
        nonlocal payload_index
        if oscore is not None:
            request = oscore.take(c.context)
            c.pending = request
            return encode_options([(oscore_number, request.option)]) + b"\xff" + request.ciphertext
        if payloads is None:
            return fixed_tail
        n = len(payloads)
        chosen = payloads[payload_index % n]
        if payload_index >= n:
            result.payload_reuses += 1
        payload_index += 1
        return options + (bytes([PAYLOAD_MARKER]) + chosen if chosen else b"")

    def send(c: _Client, t: float) -> None:
        if budget >= 0 and result.sent >= budget:
            c.deadline = float("inf")  # this client is done
            return
        c.mid = (c.mid + 1) & 0xFFFF
        c.seq += 1
        c.token = prefix + c.seq.to_bytes(6, "big")
        c.sent_at = t
        c.deadline = t + timeout
        c.counted = window_start <= t < window_end
        try:
            c.sock.send(head + struct.pack(">H", c.mid) + c.token + body(c))
        except BlockingIOError:  # the socket buffer is full: treat like a lost datagram (times out)
            pass
        except ConnectionRefusedError:  # ICMP port unreachable from an earlier datagram
            errors["refused"] = errors.get("refused", 0) + 1
        result.sent += 1

    gc.disable()  # no collector pauses inside the timing loop (the loop allocates little)
    try:
        t = now()
        for c in slots:
            send(c, t)
        while True:
            t = now()
            if t >= window_end:
                break
            next_deadline = min(c.deadline for c in slots)
            if next_deadline == float("inf") and budget >= 0 and result.sent >= budget:
                result.duration = max(0.0, t - window_start)  # every budgeted request is answered or lost
                break
            events = sel.select(max(0.0, min(next_deadline, window_end) - t))
            for key, _ in events:
                c = key.data
                while True:
                    try:
                        data = c.sock.recv(65536)
                    except BlockingIOError:
                        break
                    except ConnectionRefusedError:
                        errors["refused"] = errors.get("refused", 0) + 1
                        break
                    t = now()
                    header = parse_header(data)
                    if header is None:
                        errors["malformed"] = errors.get("malformed", 0) + 1
                        continue
                    rtype, rcode, mid, token = header
                    if rtype == Type.CON:  # a separate response to a CON request: acknowledge it (RFC 7252 §5.2.2)
                        c.sock.send(encode_message(int(Type.ACK), 0, mid, b"", []))
                    if rcode == 0:  # empty ACK (separate response follows) or RST
                        if rtype == Type.RST and mid == c.mid:
                            if c.counted:
                                errors["reset"] = errors.get("reset", 0) + 1
                            send(c, t)
                        continue
                    if token != c.token:
                        result.late += 1
                        continue
                    try:
                        ok, label, shown = check(c, data, rcode)
                    except (ValueError, IndexError):
                        ok, label, shown = False, "malformed", b""
                    if ok:
                        result.ok_total += 1
                    if c.counted:
                        if ok:
                            result.requests += 1
                            latencies.append(t - c.sent_at)
                        else:
                            errors[label] = errors.get(label, 0) + 1
                    if ok and result.first_payload is None:
                        result.first_code, result.first_payload = label, shown
                    elif result.first_code is None and not ok:
                        result.first_code, result.first_payload = label, shown
                    if t < window_end:
                        send(c, t)
                    else:
                        c.deadline = float("inf")
            t = now()
            for c in slots:
                if c.deadline <= t:
                    if c.counted:
                        errors["timeout"] = errors.get("timeout", 0) + 1
                    send(c, t)
    finally:
        gc.enable()
        for c in slots:
            sel.unregister(c.sock)
            c.sock.close()
        sel.close()
    if oscore is not None:
        result.protected_inline = oscore.protected_inline
        result.next_sequence = oscore.next_sequence
    # Requests sent inside the window but still outstanding at its end are neither counted nor errors.
    return result


def exchange(
    host: str,
    port: int,
    *,
    path: str,
    payload: bytes,
    content_format: int | None,
    code: int = int(Code.POST),
    timeout: float = 2.0,
) -> tuple[int, bytes] | None:
    """Send one NON request and return the (code, payload) of its response, or ``None`` after ``timeout``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        token = os.urandom(TOKEN_LENGTH)
        msg = encode_message(
            int(Type.NON),
            code,
            int.from_bytes(os.urandom(2), "big"),
            token,
            request_options(path, content_format),
            payload,
        )
        deadline = time.monotonic() + timeout
        try:
            sock.sendto(msg, (host, port))
            while True:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                data, _ = sock.recvfrom(65536)
                header = parse_header(data)
                if header is not None and header[3] == token and header[1] != 0:
                    return header[1], _payload(data)
        except (TimeoutError, ConnectionRefusedError):
            return None


def probe(host: str, port: int, *, path: str, payload: bytes, content_format: int | None, timeout: float) -> bool:
    """Whether the server answers one NON POST within ``timeout`` seconds (any response code)."""
    return exchange(host, port, path=path, payload=payload, content_format=content_format, timeout=timeout) is not None


def write_payloads(path: Path, payloads: Sequence[bytes]) -> None:
    """Write payloads for ``--payload-file``: each as a 4-byte big-endian length and its bytes."""
    with open(path, "wb") as fh:
        for p in payloads:
            fh.write(len(p).to_bytes(4, "big") + p)


def read_payloads(path: Path) -> list[bytes]:
    """The payloads :func:`write_payloads` wrote."""
    data = Path(path).read_bytes()
    out: list[bytes] = []
    i = 0
    while i < len(data):
        n = int.from_bytes(data[i : i + 4], "big")
        if i + 4 + n > len(data):
            raise ValueError(f"{path}: truncated payload file")
        out.append(data[i + 4 : i + 4 + n])
        i += 4 + n
    return out


def _oscore_from_file(path: Path, seq_base: int, per_context: int) -> OscoreLoad:
    """``--oscore-file``: JSON ``{"contexts": [ClientContext.to_json()...], "code": 3, "path": "lock",
    "payload_hex": "..."}``."""
    doc = json.loads(Path(path).read_text())
    inner = [(int(OptionNumber.URI_PATH), seg.encode()) for seg in doc["path"].strip("/").split("/") if seg]
    return OscoreLoad(
        contexts=[ClientContext.from_json(c) for c in doc["contexts"]],
        code=int(doc["code"]),
        inner_options=encode_options(inner),
        payload=bytes.fromhex(doc.get("payload_hex", "")),
        seq_base=seq_base,
        per_context=per_context,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.coap_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True, help="Uri-Path, segments separated by /")
    parser.add_argument("--payload-hex", default="", help="request payload (hex)")
    parser.add_argument("--payload-file", type=Path, help="one payload per request (see write_payloads)")
    parser.add_argument("--content-format", type=int, default=None)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds before a request counts as lost")
    parser.add_argument("--con", action="store_true", help="send CON instead of NON requests")
    parser.add_argument("--max-requests", type=int, help="stop after sending this many requests")
    parser.add_argument("--oscore-file", type=Path, help="protect the requests with these OSCORE contexts (JSON)")
    parser.add_argument("--seq-base", type=int, default=0, help="first OSCORE Sender Sequence Number")
    parser.add_argument("--per-context", type=int, default=1000, help="OSCORE requests protected ahead per context")
    args = parser.parse_args(argv)
    result = run_load(
        args.host,
        args.port,
        path=args.path,
        payload=bytes.fromhex(args.payload_hex),
        content_format=args.content_format,
        clients=args.clients,
        duration=args.duration,
        warmup=args.warmup,
        timeout=args.timeout,
        confirmable=args.con,
        payloads=read_payloads(args.payload_file) if args.payload_file else None,
        oscore=_oscore_from_file(args.oscore_file, args.seq_base, args.per_context) if args.oscore_file else None,
        max_requests=args.max_requests,
    )
    json.dump(result.as_dict(), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
