"""Token-record throughput of the SQL storage (group commit) against one commit per record; the 1M-row bulk load.

``TokenStore.record()`` returns only once the record is durable (SQLite ``synchronous=FULL``, PostgreSQL
``synchronous_commit`` as configured on the server), so its rate is bounded by commits. For SQLite (a temporary
file) and PostgreSQL (a temporary database; skipped when the server is unreachable) it measures, from 1 and from
32 threads:

* **group commit**: ``SqlStorage.record()`` as the token endpoint calls it (one writer thread, shared commits);
* **baseline**: the same row (``cnf`` sealed, same statement) committed alone by each calling thread
  (``SqlStorage(group_commit=False)``), which is what a plain implementation does.

Then it times ``SqlStorage.bulk_insert_tokens()`` of ``--bulk`` tokens (default 1,000,000) into a new SQLite file,
as a benchmark fixture of the token endpoint would pre-store them; each ``cnf`` is sealed (a constant plaintext).

Run: ``python -m benchmarks.bench_storage [--seconds S | --quick] [--bulk N] [--postgres DSN | --no-postgres]
[--json FILE]``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ace_core.registry import AceProfile
from as_server.models import IssuedToken
from as_server.sealing import MasterKey
from as_server.storage.sqlalchemy import SqlStorage, upgrade
from as_server.storage.sqlalchemy.engine import make_engine

DEFAULT_SECONDS = 3.0
QUICK_SECONDS = 0.5
DEFAULT_BULK = 1_000_000
QUICK_BULK = 50_000
THREADS = (1, 32)
#: Alternating rounds per contender and thread count (each ``seconds / ROUNDS`` long).
ROUNDS = 3
POSTGRES_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"

T0 = 1_700_000_000
_CNF = bytes.fromhex("a104a3004101024c") + os.urandom(16) + bytes.fromhex("0548") + os.urandom(8)  # OSCORE-like


def make_tokens(start: int = 0) -> Iterator[IssuedToken]:
    """Distinct token records (cti, token hash), realistic sizes; ``cnf`` a constant plaintext (sealed per row)."""
    for n in itertools.count(start):
        cti = n.to_bytes(16, "big")
        yield IssuedToken(
            cti=cti,
            client_id=f"client-{n % 1000}",
            audience="lock-1",
            scope=b"\x81\x82\x67/locks\x05",
            profile=AceProfile.COAP_OSCORE,
            iat=T0 + n // 1000,
            exp=T0 + 3600 + n // 1000,
            token_hash=b"\x01" + hashlib.sha256(cti).digest(),
            cnf=_CNF,
            pop_kid=cti[-8:],
        )


def measure(storage: SqlStorage, threads: int, seconds: float, tokens: Iterator[IssuedToken]) -> float:
    """Records per second with ``threads`` threads calling ``record()`` back to back for ``seconds``."""
    lock = threading.Lock()
    start = threading.Barrier(threads + 1)
    counts = [0] * threads
    deadline = 0.0

    def work(i: int) -> None:
        start.wait()
        done = 0
        while time.perf_counter() < deadline:
            with lock:
                token = next(tokens)
            storage.record(token)
            done += 1
        counts[i] = done

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    t0 = time.perf_counter()
    deadline = t0 + seconds
    start.wait()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - t0)


@contextmanager
def sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="bench_storage_") as tmp:
        yield f"sqlite:///{Path(tmp) / 'ostiary.db'}"


def postgres_unreachable(dsn: str) -> str | None:
    """Why the PostgreSQL server cannot be used, or ``None`` when it can."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed"
    try:
        psycopg.connect(dsn, connect_timeout=3).close()
    except psycopg.Error as exc:
        return str(exc).strip()
    return None


@contextmanager
def postgres_url(dsn: str) -> Iterator[str]:
    import psycopg
    from psycopg import sql

    name = f"bench_storage_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        host, port, user = admin.info.host, admin.info.port, admin.info.user
    try:
        yield f"postgresql+psycopg://{user}@{host}:{port}/{name}"
    finally:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def run_database(label: str, url: str, seconds: float) -> dict[str, Any]:
    """Both contenders at each thread count, each on its own storage of one database, in alternating rounds
    (so that a burst of load elsewhere on the machine hits both); the median round counts."""
    upgrade(url)
    key = MasterKey.generate()[0]
    tokens = make_tokens()
    results: dict[str, Any] = {}
    for threads in THREADS:
        ours = SqlStorage(make_engine(url, pool_size=threads + 2), key)
        baseline = SqlStorage(make_engine(url, pool_size=threads + 2), key, group_commit=False)
        try:
            print(f"  measuring {label}, {threads} thread(s) ...", file=sys.stderr, flush=True)
            base_rates, our_rates = [], []
            for _ in range(ROUNDS):
                base_rates.append(measure(baseline, threads, seconds / ROUNDS, tokens))
                our_rates.append(measure(ours, threads, seconds / ROUNDS, tokens))
            base_rate, ours_rate = statistics.median(base_rates), statistics.median(our_rates)
            stats = ours.commit_stats
        finally:
            ours.close()
            baseline.close()
        results[str(threads)] = {
            "group_commit": ours_rate,
            "baseline": base_rate,
            "ratio": ours_rate / base_rate,
            "rows_per_commit": stats.rows / max(stats.batches, 1),
            "largest_batch": stats.largest_batch,
        }
    return results


def run_bulk(count: int) -> dict[str, Any]:
    """``bulk_insert_tokens`` of ``count`` tokens into a new SQLite file."""
    with sqlite_url() as url:
        upgrade(url)
        storage = SqlStorage(make_engine(url), MasterKey.generate()[0])
        try:
            print(f"  bulk-loading {count:,} tokens into SQLite ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            inserted = storage.bulk_insert_tokens(itertools.islice(make_tokens(), count))
            elapsed = time.perf_counter() - t0
            assert storage.count() == inserted == count
            size = Path(url.removeprefix("sqlite:///")).stat().st_size
        finally:
            storage.close()
    return {"tokens": count, "seconds": elapsed, "rate": count / elapsed, "file_bytes": size}


def _report(databases: dict[str, dict[str, Any]], bulk: dict[str, Any] | None) -> str:
    lines = [
        f"{'database':<12} {'threads':>7} {'group commit':>14} {'baseline':>12} {'ratio':>7} {'rows/commit':>12}",
    ]
    for label, results in databases.items():
        for threads, r in results.items():
            lines.append(
                f"{label:<12} {threads:>7} {r['group_commit']:>10,.0f} r/s {r['baseline']:>8,.0f} r/s "
                f"{r['ratio']:>6.1f}x {r['rows_per_commit']:>12.1f}"
            )
    if bulk is not None:
        lines.append("")
        lines.append(
            f"bulk_insert_tokens: {bulk['tokens']:,} tokens into SQLite in {bulk['seconds']:.1f} s "
            f"({bulk['rate']:,.0f} rows/s, {bulk['file_bytes'] / 2**20:,.0f} MiB file)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_storage", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="length of each measurement")
    parser.add_argument("--quick", action="store_true", help=f"--seconds {QUICK_SECONDS} --bulk {QUICK_BULK:,}")
    parser.add_argument("--bulk", type=int, default=None, help=f"tokens to bulk-load (default {DEFAULT_BULK:,})")
    parser.add_argument("--postgres", default=POSTGRES_DSN, help="libpq DSN of a maintenance database")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--json", metavar="FILE", help="also write the raw results as JSON to FILE")
    args = parser.parse_args(argv)
    seconds = QUICK_SECONDS if args.quick else args.seconds
    bulk_count = args.bulk if args.bulk is not None else (QUICK_BULK if args.quick else DEFAULT_BULK)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print("bench_storage: durable token records per second (group commit vs one commit per record); bulk load")
    print(f"Python {platform.python_version()}; {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.2f}")
    print(f"{seconds:g} s per measurement; threads {', '.join(map(str, THREADS))}")
    print(flush=True)

    started = time.perf_counter()
    databases: dict[str, dict[str, Any]] = {}
    with sqlite_url() as url:
        databases["SQLite"] = run_database("SQLite", url, seconds)
    unreachable = "--no-postgres" if args.no_postgres else postgres_unreachable(args.postgres)
    if unreachable is None:
        with postgres_url(args.postgres) as url:
            databases["PostgreSQL"] = run_database("PostgreSQL", url, seconds)
    else:
        print(f"PostgreSQL skipped: {unreachable}")
    bulk = run_bulk(bulk_count) if bulk_count > 0 else None
    print(_report(databases, bulk))
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"databases": databases, "bulk": bulk}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
