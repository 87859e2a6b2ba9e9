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
from dataclasses import dataclass, field
from typing import Any

from aiocoap.numbers.codes import Code
from aiocoap.numbers.optionnumbers import OptionNumber
from aiocoap.numbers.types import Type

__all__ = ["LoadResult", "encode_message", "parse_header", "probe", "run_load"]

VERSION = 1
TOKEN_LENGTH = 8
PAYLOAD_MARKER = 0xFF
#: Response codes that count as success: 2.01 Created, 2.04 Changed, 2.05 Content.
SUCCESS_CODES = frozenset({int(Code.CREATED), int(Code.CHANGED), int(Code.CONTENT)})


def _option_nibble(value: int) -> tuple[int, bytes]:
    """RFC 7252 §3.1 option delta/length nibble and extended bytes."""
    if value < 13:
        return value, b""
    if value < 269:
        return 13, bytes([value - 13])
    return 14, struct.pack(">H", value - 269)


def encode_message(
    mtype: int, code: int, mid: int, token: bytes, options: list[tuple[int, bytes]], payload: bytes = b""
) -> bytes:
    """Encode a CoAP message (RFC 7252 §3); ``options`` are (number, value) pairs in any order."""
    if len(token) > 8:
        raise ValueError("token longer than 8 bytes")
    out = bytearray([VERSION << 6 | mtype << 4 | len(token), code])
    out += struct.pack(">H", mid)
    out += token
    previous = 0
    for number, value in sorted(options, key=lambda o: o[0]):
        delta, delta_ext = _option_nibble(number - previous)
        length, length_ext = _option_nibble(len(value))
        out.append(delta << 4 | length)
        out += delta_ext + length_ext + value
        previous = number
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


def _payload(datagram: bytes) -> bytes:
    """The payload after the marker (options are skipped properly, a 0xFF inside an option value is no marker)."""
    i = 4 + (datagram[0] & 0x0F)
    while i < len(datagram):
        byte = datagram[i]
        if byte == PAYLOAD_MARKER:
            return bytes(datagram[i + 1 :])
        i += 1
        for nibble in (byte >> 4, byte & 0x0F):
            if nibble == 13:
                i += 1
            elif nibble == 14:
                i += 2
        length = byte & 0x0F
        if length == 13:
            length = datagram[i - 1] + 13
        elif length == 14:
            length = (datagram[i - 2] << 8 | datagram[i - 1]) + 269
        i += length
    return b""


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
        }


class _Client:
    __slots__ = ("deadline", "mid", "sent_at", "sock", "token", "counted", "seq")

    def __init__(self, sock: socket.socket, mid: int) -> None:
        self.sock = sock
        self.mid = mid
        self.seq = 0
        self.token = b""
        self.sent_at = 0.0
        self.deadline = 0.0
        self.counted = False


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
) -> LoadResult:
    """Run the closed-loop load for ``warmup + duration`` seconds and return what the window measured."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    mtype = int(Type.CON if confirmable else Type.NON)
    options = request_options(path, content_format)
    template = encode_message(mtype, int(Code.POST), 0, b"\0" * TOKEN_LENGTH, options, payload)
    head, tail = template[:2], template[4 + TOKEN_LENGTH :]
    sel = selectors.DefaultSelector()
    slots: list[_Client] = []
    prefix = os.getpid().to_bytes(4, "big")[-2:]
    for i in range(clients):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.connect((host, port))
        sock.setblocking(False)
        c = _Client(sock, int.from_bytes(os.urandom(2), "big"))
        slots.append(c)
        sel.register(sock, selectors.EVENT_READ, c)
        c.seq = i << 40

    result = LoadResult(clients=clients, duration=duration)
    errors = result.errors
    latencies = result.latencies
    now = time.perf_counter
    start = now()
    window_start = start + warmup
    window_end = window_start + duration

    def send(c: _Client, t: float) -> None:
        c.mid = (c.mid + 1) & 0xFFFF
        c.seq += 1
        c.token = prefix + c.seq.to_bytes(6, "big")
        c.sent_at = t
        c.deadline = t + timeout
        c.counted = window_start <= t < window_end
        try:
            c.sock.send(head + struct.pack(">H", c.mid) + c.token + tail)
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
                    rtype, code, mid, token = header
                    if rtype == Type.CON:  # a separate response to a CON request: acknowledge it (RFC 7252 §5.2.2)
                        c.sock.send(encode_message(int(Type.ACK), 0, mid, b"", []))
                    if code == 0:  # empty ACK (separate response follows) or RST
                        if rtype == Type.RST and mid == c.mid:
                            if c.counted:
                                errors["reset"] = errors.get("reset", 0) + 1
                            send(c, t)
                        continue
                    if token != c.token:
                        result.late += 1
                        continue
                    if code in SUCCESS_CODES:
                        result.ok_total += 1
                    if c.counted:
                        if code in SUCCESS_CODES:
                            result.requests += 1
                            latencies.append(t - c.sent_at)
                        else:
                            name = code_text(code)
                            errors[name] = errors.get(name, 0) + 1
                    if code in SUCCESS_CODES and result.first_payload is None:
                        result.first_code, result.first_payload = code_text(code), _payload(data)
                    elif result.first_code is None and code not in SUCCESS_CODES:
                        result.first_code = code_text(code)
                        result.first_payload = _payload(data)
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
    # Requests sent inside the window but still outstanding at its end are neither counted nor errors.
    return result


def probe(host: str, port: int, *, path: str, payload: bytes, content_format: int | None, timeout: float) -> bool:
    """Whether the server answers one NON POST within ``timeout`` seconds (any response code)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        token = os.urandom(TOKEN_LENGTH)
        msg = encode_message(
            int(Type.NON),
            int(Code.POST),
            int.from_bytes(os.urandom(2), "big"),
            token,
            request_options(path, content_format),
            payload,
        )
        try:
            sock.sendto(msg, (host, port))
            while True:
                data, _ = sock.recvfrom(65536)
                header = parse_header(data)
                if header is not None and header[3] == token:
                    return True
        except (TimeoutError, ConnectionRefusedError):
            return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.coap_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True, help="Uri-Path, segments separated by /")
    parser.add_argument("--payload-hex", default="", help="request payload (hex)")
    parser.add_argument("--content-format", type=int, default=None)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds before a request counts as lost")
    parser.add_argument("--con", action="store_true", help="send CON instead of NON requests")
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
    )
    json.dump(result.as_dict(), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
