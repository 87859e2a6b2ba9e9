"""Pure helpers of ``benchmarks/bench_bootstrap.py`` part 2 and ``benchmarks/bootstrap_load.py``: the window, the
percentiles, ``/proc`` parsing, the verdicts and the report. No server and no DTLS load runs here."""

from __future__ import annotations

import argparse
import importlib
import io
import ipaddress
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _module(monkeypatch: pytest.MonkeyPatch, name: str) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module(name)


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return _module(monkeypatch, "benchmarks.bootstrap_load")


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return _module(monkeypatch, "benchmarks.bench_bootstrap")


def test_percentile_is_nearest_rank(load: ModuleType) -> None:
    assert load.percentile([], 50) is None
    values = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose
    assert load.percentile(values, 50) == 51.0
    assert load.percentile(values, 99) == 100.0
    assert load.percentile([7.0], 99) == 7.0


def test_parse_proc_stat_counts_fields_after_the_command_name(load: ModuleType) -> None:
    # A command name with spaces and parentheses must not shift the fields.
    fields = ["S", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "250", "50", "0", "0"]
    text = "4242 (python -m (x) y) " + " ".join(fields) + "\n"
    assert load.parse_proc_stat(text, 100) == pytest.approx(3.0)


def test_process_cpu_seconds_of_this_process(load: ModuleType) -> None:
    import os

    if not Path("/proc/self/stat").exists():
        pytest.skip("no /proc")
    value = load.process_cpu_seconds(os.getpid())
    assert value is not None and value >= 0
    assert load.process_cpu_seconds(2**22 + 12345) is None  # no such process


def test_verdict_and_bottleneck(load: ModuleType) -> None:
    assert load.verdict(0.5, 0.5) == "PASS"
    assert load.verdict(0.49, 0.5) == "FAIL"
    assert load.verdict(None, 0.5) == "n/a"
    assert load.bottleneck(0.97, 0.6).startswith("the load generator")
    assert load.bottleneck(0.5, 0.95) == "the server"
    assert load.bottleneck(0.4, 0.5).startswith("neither")
    assert load.bottleneck(None, 0.5).startswith("unknown")


def test_device_address_is_a_distinct_loopback_address_never_the_servers(load: ModuleType) -> None:
    seen = {load.device_address(i) for i in (0, 1, 255, 256, 65535, 65536, 1_000_000)}
    assert len(seen) == 7
    for address in seen:
        ip = ipaddress.ip_address(address)
        assert ip.is_loopback and address != load.HOST
    assert load.device_address(0) == "127.1.0.0"
    assert load.device_address(65536) == "127.2.0.0"
    with pytest.raises(ValueError):
        load.device_address(-1)
    with pytest.raises(ValueError):
        load.device_address(254 << 16)


def test_devices_file_round_trip_is_private(load: ModuleType, tmp_path: Path) -> None:
    devices = [load.Device(b"id-%d" % i, bytes([i]) * 16, f"ostiary:L1-{i:06d}") for i in range(3)]
    path = tmp_path / "devices.jsonl"
    load.write_devices(path, devices)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load.read_devices(path) == devices
    assert "psk" not in repr(devices[0]).replace("psk=", "")  # the key is left out of repr


def _marks(load: ModuleType, **times: float) -> dict[str, object]:
    return {name: load.Mark(t, client_cpu=t / 2, server_cpu=t / 4) for name, t in times.items()}


def test_choose_window_prefers_warm_to_dry(load: ModuleType) -> None:
    assert load.choose_window(_marks(load, begin=0, warm=1, dry=5, end=6)) == ("warm", "dry")
    # too few devices: the run went dry before it warmed up, or never warmed up
    assert load.choose_window(_marks(load, begin=0, warm=3, dry=2, end=6)) == ("begin", "end")
    assert load.choose_window(_marks(load, begin=0, dry=2, end=6)) == ("begin", "end")


def test_summarize_counts_only_successes_inside_the_window(load: ModuleType) -> None:
    attempts = [
        load.Attempt(0.0, 1.0, True, "2.05", 0),  # the warm-up completion (at the window's start: excluded)
        load.Attempt(0.5, 2.0, True, "2.05", 1),
        load.Attempt(1.0, 3.0, True, "2.05", 2),
        load.Attempt(1.5, 3.5, False, "timeout", 3),
        load.Attempt(2.0, 4.0, False, "4.00", 4),
        load.Attempt(3.0, 5.0, True, "2.05", 5),
        load.Attempt(4.0, 6.0, True, "2.05", 6),  # after the window (ends after "dry")
    ]
    marks = _marks(load, begin=0.0, warm=1.0, dry=5.0, end=6.0)
    summary = load.summarize(attempts, marks, label="x", concurrency=3)
    assert summary["window"] == "warm-dry"
    assert summary["window_seconds"] == pytest.approx(4.0)
    assert summary["window_completed"] == 3
    assert summary["rate"] == pytest.approx(0.75)
    assert summary["completed"] == 5 and summary["failed"] == 2
    assert summary["failures"] == {"timeout": 1, "4.00": 1}
    assert summary["p50_ms"] == pytest.approx(2000.0)
    assert summary["client_cpu_s"] == pytest.approx(2.0) and summary["server_cpu_s"] == pytest.approx(1.0)
    assert summary["client_busy"] == pytest.approx(0.5) and summary["server_busy"] == pytest.approx(0.25)
    assert summary["server_cpu_ms_per_op"] == pytest.approx(1000.0 / 3)


def test_summarize_without_server_cpu_or_successes(load: ModuleType) -> None:
    marks = {name: load.Mark(t, client_cpu=0.0, server_cpu=None) for name, t in (("begin", 0.0), ("end", 2.0))}
    summary = load.summarize([load.Attempt(0.0, 1.0, False, "timeout")], marks)
    assert summary["rate"] == 0.0 and summary["p50_ms"] is None
    assert summary["server_cpu_s"] is None and summary["server_busy"] is None
    assert summary["client_cpu_ms_per_op"] is None


def _row(rate: float, *, failed: int = 0, client: float = 0.5, server: float | None = 0.5) -> dict[str, object]:
    return {
        "completed": 100,
        "failed": failed,
        "failures": {"timeout": failed} if failed else {},
        "window_seconds": 2.0,
        "rate": rate,
        "p50_ms": 10.0,
        "p99_ms": 20.0,
        "server_cpu_ms_per_op": None if server is None else 1.0,
        "client_cpu_ms_per_op": 1.0,
        "client_busy": client,
        "server_busy": server,
    }


def test_dtls_ratio(bench: ModuleType) -> None:
    assert bench.dtls_ratio({"baseline": _row(200.0), "first": _row(120.0)}) == pytest.approx(0.6)
    assert bench.dtls_ratio({"baseline": _row(0.0), "first": _row(120.0)}) is None
    assert bench.dtls_ratio({"baseline": _row(200.0)}) is None
    assert bench.dtls_ratio({"baseline": _row(200.0), "redelivery": _row(50.0)}, "redelivery") == 0.25


def _config(bench: ModuleType) -> object:
    return bench.DtlsConfig(devices=1000, concurrency=50, seconds=60.0, baseline_seconds=10.0, redelivery=True)


def test_report_dtls_pass_and_client_bound_note(bench: ModuleType) -> None:
    out = io.StringIO()
    rows = {"baseline": _row(200.0, client=0.99), "first": _row(120.0), "redelivery": _row(150.0)}
    summary = bench.report_dtls(rows, _config(bench), out=out)
    text = out.getvalue()
    assert "goal: first-time bootstraps >= 50% of the DTLS handshake + GET rate" in text
    assert "60%  PASS" in text
    assert "re-delivery: 75% of the baseline rate" in text
    assert "baseline: the load generator" in text and "note: the load generator" in text
    assert summary["goal"] == {"ratio": 0.5, "measured": pytest.approx(0.6), "pass": "PASS"}
    assert summary["rows"] is rows


def test_report_dtls_fail_with_failures(bench: ModuleType) -> None:
    out = io.StringIO()
    rows = {"baseline": _row(200.0), "first": _row(60.0, failed=3, server=None)}
    summary = bench.report_dtls(rows, _config(bench), out=out)
    text = out.getvalue()
    assert "30%  FAIL (but 3 devices failed to bootstrap)" in text
    assert "failures of first: timeout 3" in text
    assert "note:" not in text
    assert summary["goal"]["pass"].startswith("FAIL")


def test_dtls_config_defaults(bench: ModuleType) -> None:
    def args(**kw: object) -> argparse.Namespace:
        base = {
            "devices": None,
            "concurrency": 50,
            "seconds": None,
            "quick": False,
            "no_redelivery": False,
            "fresh_context": False,
        }
        return argparse.Namespace(**{**base, **kw})

    full = bench.dtls_config(args())
    assert (full.devices, full.seconds, full.redelivery) == (bench.DTLS_DEVICES, bench.DTLS_SECONDS, True)
    quick = bench.dtls_config(args(quick=True, no_redelivery=True))
    assert (quick.devices, quick.seconds, quick.redelivery) == (
        bench.QUICK_DTLS_DEVICES,
        bench.QUICK_DTLS_SECONDS,
        False,
    )
    assert quick.baseline_seconds <= quick.seconds
    assert bench.dtls_config(args(devices=7, seconds=2.0)).baseline_seconds == 2.0


def test_ports_stay_below_the_ephemeral_range(bench: ModuleType) -> None:
    assert bench.BASE_PORT < 32768


def test_positive_argument(bench: ModuleType) -> None:
    assert bench._positive("1_000") == 1000
    for bad in ("0", "-3", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench._positive(bad)
