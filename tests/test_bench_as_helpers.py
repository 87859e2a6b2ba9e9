"""Helpers of ``benchmarks/bench_as.py``: the raw CoAP encoder/decoder of the load generator and wrk's output parser.

The load generator hand-encodes its requests, so they are checked against aiocoap's own codec here.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent

aiocoap = pytest.importorskip("aiocoap")


@pytest.fixture
def coap_load(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("benchmarks.coap_load")


@pytest.fixture
def bench_as(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("benchmarks.bench_as")


@pytest.mark.parametrize("payload", [b"", b"\xa1\x05\x6afront-door", bytes(range(256)) * 2])
@pytest.mark.parametrize("path", ["token", "a/very-long-path-segment-over-thirteen-bytes/x", "p" * 300])
def test_request_matches_aiocoap(coap_load: ModuleType, path: str, payload: bytes) -> None:
    options = coap_load.request_options(path, 19)
    encoded = coap_load.encode_message(1, 2, 0x1234, b"\x01\x02\x03\x04\x05\x06\x07\x08", options, payload)
    msg = aiocoap.Message.decode(encoded)
    assert msg.mtype == aiocoap.NON and msg.code == aiocoap.POST and msg.mid == 0x1234
    assert msg.token == b"\x01\x02\x03\x04\x05\x06\x07\x08"
    assert list(msg.opt.uri_path) == path.split("/")
    assert int(msg.opt.content_format) == 19
    assert msg.payload == payload


def test_response_header_and_payload(coap_load: ModuleType) -> None:
    response = aiocoap.Message(code=aiocoap.CREATED, payload=b"\xff\x00", content_format=19)
    response.mtype, response.mid, response.token = aiocoap.NON, 7, b"tok"  # the constructor arguments are deprecated
    response.opt.location_path = ("x" * 20,)  # an extended option length before the payload marker
    datagram = response.encode()
    assert coap_load.parse_header(datagram) == (int(aiocoap.NON), int(aiocoap.CREATED), 7, b"tok")
    assert coap_load._payload(datagram) == b"\xff\x00"
    assert coap_load.parse_header(b"\x00") is None
    assert coap_load.code_text(int(aiocoap.UNAUTHORIZED)) == "4.01"


WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:18500/token
  2 threads and 32 connections
  Latency Distribution
     50%    4.16ms
     75%    6.00ms
     90%    9.52ms
     99%   35.06ms
  63812 requests in 10.00s, 11.07MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:   6381.12
"""


def test_parse_wrk_text(bench_as: ModuleType) -> None:
    parsed = bench_as.parse_wrk(WRK_OUTPUT)
    assert parsed["rate"] == pytest.approx(6381.12)
    assert parsed["p50_ms"] == pytest.approx(4.16) and parsed["p99_ms"] == pytest.approx(35.06)
    assert parsed["errors"] == {"non-2xx": 5, "read": 2, "timeout": 1}


def test_parse_wrk_script_line_wins(bench_as: ModuleType) -> None:
    line = (
        'WRK_JSON {"requests":1000,"duration_us":2000000,"non2xx":3,"connect":0,"read":0,"write":0,"status":0,'
        '"timeout":0,"p50_us":1500,"p90_us":2000,"p99_us":4000,"mean_us":1600.5,"max_us":9000}'
    )
    parsed = bench_as.parse_wrk(WRK_OUTPUT + line + "\n")
    assert parsed["rate"] == pytest.approx(500.0)
    assert parsed["p50_ms"] == pytest.approx(1.5) and parsed["p99_ms"] == pytest.approx(4.0)
    assert parsed["errors"] == {"non-2xx": 3}


def test_lua_string_escapes_every_byte(bench_as: ModuleType) -> None:
    assert bench_as._lua_string(b'a"b\\c\x00\xff') == '"a\\034b\\092c\\000\\255"'


def test_servers_bind_below_the_ephemeral_range(bench_as: ModuleType) -> None:
    assert bench_as.BASE_PORT < 32768  # library-notes §5e/5f: TIME_WAIT sockets hold ephemeral ports after wrk


def test_connection_split_counts_each_process_s_established_connections(bench_as: ModuleType) -> None:
    """Real loopback connections: this process holds the accepted ends of three, nothing else holds any."""
    import os
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
        accepted = [listener.accept()[0] for _ in clients]
        try:
            # The accepted sockets have local port `port`; the clients' ends have other local ports.
            assert bench_as.connection_split([os.getpid()], port) == [3]
            assert bench_as.connection_split([os.getpid()], port + 1 if port < 65535 else port - 1) == []
            assert bench_as.connection_split([], port) == []
        finally:
            for sock in accepted + clients:
                sock.close()


def test_warm_page_cache_reads_the_database_and_its_wal(bench_as: ModuleType, tmp_path: Path) -> None:
    db = tmp_path / "ostiary.db"
    db.write_bytes(b"x" * 3_000_000)
    assert bench_as.warm_page_cache(db) == 3_000_000
    Path(f"{db}-wal").write_bytes(b"y" * 1000)
    assert bench_as.warm_page_cache(db) == 3_001_000
    assert bench_as.warm_page_cache(None) == 0
    assert bench_as.warm_page_cache(tmp_path / "missing.db") == 0


def _row(bench_as: ModuleType, key: str, rates: list[float], errors: int = 0) -> object:
    target = bench_as.Target(key, key, "http", "s", 1, "/", b"", None)
    runs = [
        bench_as.Run(key, i + 1, rate, int(rate), 1.0, 2.0, {"non2xx": errors} if errors else {}, int(rate), 1.0, 0.1,
                     0.0, 1.0)
        for i, rate in enumerate(rates)
    ]  # fmt: skip
    return bench_as.Row(target, runs)


def test_durable_floor_lines_say_when_the_floor_is_below_the_goal(bench_as: ModuleType) -> None:
    rows = {
        "http-trivial": _row(bench_as, "http-trivial", [10_000.0, 8_000.0, 9_000.0]),
        "http-floor": _row(bench_as, "http-floor", [3_000.0, 2_700.0, 2_800.0]),
        "http-ours": _row(bench_as, "http-ours", [2_000.0, 1_800.0, 2_100.0]),
        "coap-trivial": _row(bench_as, "coap-trivial", [5_000.0]),
        "coap-floor": _row(bench_as, "coap-floor", [3_500.0]),
        "coap-ours": _row(bench_as, "coap-ours", [1_400.0]),
    }
    http, coap = bench_as._floors(rows)
    assert http.floor_share == pytest.approx(2_800 / 9_000)
    assert http.ours_of_floor == pytest.approx(2_000 / 2_800)
    lines = http.lines()
    assert lines[0] == "  HTTP: durable floor 2,800/s = 0.31 of trivial 9,000/s; ours 2,000/s = 0.71 of the floor"
    assert "goal 2 asks ours >= 0.50 of trivial" in lines[1] and "reached 0.31" in lines[1]
    # The CoAP floor (0.70) is above goal 3's 0.60: nothing is claimed about the goal.
    assert coap.lines() == ["  CoAP: durable floor 3,500/s = 0.70 of trivial 5,000/s; ours 1,400/s = 0.40 of the floor"]
    assert coap.as_dict()["floor_over_trivial"] == pytest.approx(0.7)


def test_durable_floor_is_not_evaluated_from_invalid_or_missing_rows(bench_as: ModuleType) -> None:
    rows = {
        "http-trivial": _row(bench_as, "http-trivial", [10_000.0]),
        "http-floor": _row(bench_as, "http-floor", [3_000.0], errors=3),
        "http-ours": _row(bench_as, "http-ours", [2_000.0]),
    }
    http, coap = bench_as._floors(rows)
    assert http.floor_share is None and http.ours_of_floor is None
    assert http.lines() == ["  HTTP: n/a (the durable floor or the trivial endpoint was not measured)"]
    assert coap.lines() == ["  CoAP: n/a (the durable floor or the trivial endpoint was not measured)"]
