"""The bootstrap adapter at scale (issue #7, "Benchmark"), part 1: how fast the factory makes devices.

Each size runs :func:`as_server.bootstrap.factory.run_batch` -- exactly what ``ostiary factory batch`` runs, minus
argument parsing and the progress bar -- into a fresh deployment in a temporary directory: a new SQLite device
store (:class:`~as_server.bootstrap.device_db.SqliteDeviceStore`, PSKs sealed under a new master key) and the
batch directory (``bundles.zip``, manifests, key file) on the same file system. Reported per size: devices per
second, the per-device cost of each stage (``generate`` random values and names, ``store`` the devices with
their sealed PSKs, ``seal`` the bundles, ``write`` them to the archive, ``manifest`` rows, ``finish``: syncs and
the final rename) and, as the baseline measured in the same run, the *floor*: per device one ``os.urandom``
call, one AES-GCM seal and one append to a file, the least any design has to do. The ratio to the floor shows
what the store, the names and the manifest cost on top.

Goal (issue #7): 100,000 devices in under 60 s on the reference machine (two cores). The goal line says PASS or
FAIL; with ``--quick`` (1,000 and 10,000 devices) it is extrapolated from the largest size and says so.

The benchmark's second half -- completed bootstraps per second over DTLS with 50 concurrent devices, beside the
DTLS handshake rate measured in the same run (goal: at least 50% of it) -- arrives with the bootstrap server.

Run: ``python -m benchmarks.bench_bootstrap [--quick] [--sizes N,N,...] [--dir DIR] [--json FILE]``
(``make bench BENCH=bootstrap``). It exits 0 whether the goal is met or not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from as_server.bootstrap.device_db import DEVICE_DB_FILE, SqliteDeviceStore
from as_server.bootstrap.factory import STAGES, BatchSpec, run_batch
from as_server.sealing import MasterKey

SIZES = (10_000, 100_000)
QUICK_SIZES = (1_000, 10_000)
#: Issue #7: 100,000 devices in under a minute.
GOAL_DEVICES = 100_000
GOAL_SECONDS = 60.0
MODEL = "L1"
BOOTSTRAP_URI = "coaps://bs.example.com:5684"


@dataclass(frozen=True, slots=True)
class Run:
    """One size's measurement."""

    devices: int
    seconds: float
    cpu_seconds: float
    floor_seconds: float
    #: Seconds per stage (:data:`~as_server.bootstrap.factory.STAGES`).
    stages: dict[str, float]

    @property
    def rate(self) -> float:
        return self.devices / self.seconds

    @property
    def us_per_device(self) -> float:
        return 1e6 * self.seconds / self.devices

    @property
    def floor_us_per_device(self) -> float:
        return 1e6 * self.floor_seconds / self.devices

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "devices_per_second": self.rate,
            "us_per_device": self.us_per_device,
            "floor_us_per_device": self.floor_us_per_device,
            "ratio_to_floor": self.seconds / self.floor_seconds,
        }


def measure_floor(devices: int, directory: Path) -> float:
    """Seconds for the least work per device: random bytes, one AES-GCM seal, one append to a file."""
    aead = AESGCM(secrets.token_bytes(32))
    path = directory / "floor.bin"
    started = time.perf_counter()
    with open(path, "wb", buffering=1 << 20) as fp:
        for _ in range(devices):
            data = os.urandom(36)
            fp.write(aead.encrypt(data[:12], data, b"floor"))
        fp.flush()
        os.fsync(fp.fileno())
    elapsed = time.perf_counter() - started
    path.unlink()
    return elapsed


def measure_batch(devices: int, directory: Path) -> Run:
    """Make one batch of ``devices`` in a fresh deployment under ``directory``; returns the timings."""
    home = directory / "home"
    home.mkdir()
    master_key, _raw = MasterKey.generate()
    floor = measure_floor(devices, directory)
    with SqliteDeviceStore(home / DEVICE_DB_FILE, master_key) as store:
        spec = BatchSpec(count=devices, model=MODEL, bootstrap_uri=BOOTSTRAP_URI)
        started, cpu = time.perf_counter(), time.process_time()
        result = run_batch(spec, store, now=int(time.time()), out_dir=directory / "batch")
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    if result.batch.count != devices or not result.batch.complete:
        raise RuntimeError(f"the batch is not complete: {result.batch}")
    return Run(devices, seconds, cpu_seconds, floor, dict(result.timings))


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part.replace("_", "")) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not sizes or any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError("sizes are positive")
    return sizes


def report(runs: list[Run], *, quick: bool, out: Any = None) -> dict[str, Any]:
    """Print the table, the breakdown of the largest run and the goal line; returns the JSON summary."""
    out = out or sys.stdout
    print(f"  {'devices':>9}  {'seconds':>8}  {'devices/s':>9}  {'us/device':>9}  {'floor us':>8}  ratio", file=out)
    for run in runs:
        print(
            f"  {run.devices:>9,}  {run.seconds:>8.2f}  {run.rate:>9,.0f}  {run.us_per_device:>9.1f}  "
            f"{run.floor_us_per_device:>8.1f}  {run.seconds / run.floor_seconds:>4.1f}x",
            file=out,
        )
    largest = max(runs, key=lambda r: r.devices)
    parts = [f"{stage} {1e6 * largest.stages.get(stage, 0.0) / largest.devices:.1f}" for stage in STAGES]
    other = largest.seconds - sum(largest.stages.values())
    parts.append(f"other {1e6 * max(other, 0.0) / largest.devices:.1f}")
    print(f"per-device cost at {largest.devices:,} devices (us): {', '.join(parts)}", file=out)
    print(f"CPU time of that run: {largest.cpu_seconds:.2f} s of {largest.seconds:.2f} s", file=out)
    measured = next((r for r in runs if r.devices == GOAL_DEVICES), None)
    if measured is not None:
        seconds, how = measured.seconds, "measured"
    else:
        seconds, how = GOAL_DEVICES / largest.rate, f"extrapolated from {largest.devices:,} devices"
        if quick:
            how += ", --quick"
    verdict = "PASS" if seconds < GOAL_SECONDS else "FAIL"
    print(f"goal: {GOAL_DEVICES:,} devices in < {GOAL_SECONDS:.0f} s: {seconds:.1f} s ({how})  {verdict}", file=out)
    print(
        "second half (bootstraps per second over DTLS, 50 concurrent devices, vs. the DTLS handshake rate): "
        "arrives with the bootstrap server",
        file=out,
    )
    return {
        "runs": [r.as_dict() for r in runs],
        "goal": {"devices": GOAL_DEVICES, "seconds": GOAL_SECONDS, "estimate": seconds, "how": how, "pass": verdict},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_bootstrap", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"sizes {', '.join(f'{n:,}' for n in QUICK_SIZES)}")
    parser.add_argument("--sizes", type=_sizes, metavar="N,N", help="batch sizes to measure (default 10,000,100,000)")
    parser.add_argument("--dir", type=Path, help="where the temporary deployments go (default: the temp directory)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    args = parser.parse_args(argv)
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)

    print("bench_bootstrap: factory generation rate (issue #7), part 1 of 2")
    print(
        f"python {platform.python_version()}; {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}; SQLite device store (WAL), bundles.zip and manifests on "
        f"{args.dir or tempfile.gettempdir()}"
    )
    runs = []
    for devices in sizes:
        directory = Path(tempfile.mkdtemp(prefix="bench_bootstrap-", dir=args.dir))
        try:
            print(f"  making {devices:,} devices ...", file=sys.stderr, flush=True)
            runs.append(measure_batch(devices, directory))
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    summary = report(runs, quick=args.quick)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
