"""Cost of one token request inside the AS, per call: ``TokenEndpoint.handle()`` and the storage calls it makes.

Single thread, no transport: what one request costs the process, which bounds what a worker (or the CoAP
process) can serve. Measured against a SQLite database (a temporary file; WAL, ``synchronous=FULL``, opened with
``open_storage`` as ``ostiary as serve`` does) and, as the baseline, against :class:`MemoryStorage` with the same
records, clock, policy and master key:

* ``handle()`` -- a ``client_credentials`` request with HTTP Basic credentials for an ``encrypt0`` audience (the
  AS generates OSCORE input material, RFC 9203 §3.2) and for a ``sign1+encrypt0`` audience (signed, then
  encrypted), each token recorded durably before ``handle()`` returns;
* the storage calls of one request: ``get_client``, ``get_resource_server`` (the shared key unsealed),
  ``signing_key`` (the private key unsealed), ``find_by_pop_kid`` (an unknown kid), and ``record`` (one token,
  one commit: no other thread shares it).

Run: ``python -m benchmarks.bench_token_endpoint [--seconds S | --quick] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import platform
import secrets
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ace_core.keys import CoseKey
from ace_core.messages import TokenRequest
from ace_core.registry import AceProfile, CoseAlgorithm
from as_server.auth import METHOD_BASIC, ClientCredentials, FailureRateLimiter
from as_server.config import Settings
from as_server.endpoints.token import TokenEndpoint
from as_server.models import Client, IssuedToken, ResourceServer, ScopeFormat, SigningKey, TokenForm
from as_server.sealing import MasterKey, hash_secret
from as_server.storage.base import Storage
from as_server.storage.memory import MemoryStorage
from as_server.storage.sqlalchemy import open_storage
from benchmarks._timing import Measurement, measure_interleaved
from policies.builtin.allow_list import AllowList

DEFAULT_SECONDS = 2.0
QUICK_SECONDS = 0.5
NOW = 1_800_000_000
CLIENT_ID = "bench-client"
SECRET = "bench-secret-" + "x" * 20
AUDIENCE = "front-door"
SIGNED_AUDIENCE = "back-door"
SCOPE = "lock:open"
POLICY = f"""
rules:
  - client: {CLIENT_ID}
    audience: "*-door"
    scope: "{SCOPE}"
"""


def _records() -> tuple[Client, list[ResourceServer], SigningKey]:
    client = Client(
        client_id=CLIENT_ID,
        secret_hash=hash_secret(SECRET),
        audiences=frozenset({AUDIENCE, SIGNED_AUDIENCE}),
        profiles=frozenset({AceProfile.COAP_OSCORE}),
    )
    servers = [
        ResourceServer(
            audience=audience,
            shared_key=CoseKey.generate(CoseAlgorithm.AES_CCM_16_64_128),
            scope_format=ScopeFormat.TEXT,
            resources=SCOPE,
            token_form=form,
        )
        for audience, form in ((AUDIENCE, TokenForm.ENCRYPT0), (SIGNED_AUDIENCE, TokenForm.SIGN1_ENCRYPT0))
    ]
    key = CoseKey.generate(CoseAlgorithm.EDDSA)
    assert key.kid is not None
    return client, servers, SigningKey(kid=key.kid, alg=CoseAlgorithm.EDDSA, key=key, created_at=NOW - 10)


def _fill(storage: Storage, client: Client, servers: list[ResourceServer], key: SigningKey) -> None:
    storage.add_client(client)
    for rs in servers:
        storage.add_resource_server(rs)
    storage.add_signing_key(key)


def _tokens() -> Callable[[], IssuedToken]:
    serial = itertools.count()
    cnf = bytes.fromhex("a104a2004101024c") + os.urandom(16)

    def make() -> IssuedToken:
        cti = next(serial).to_bytes(8, "big") + secrets.token_bytes(8)
        return IssuedToken(
            cti=cti,
            client_id=CLIENT_ID,
            audience=AUDIENCE,
            scope=SCOPE,
            profile=AceProfile.COAP_OSCORE,
            iat=NOW,
            exp=NOW + 3600,
            token_hash=b"\x01" + hashlib.sha256(cti).digest(),
            cnf=cnf,
            pop_kid=secrets.token_bytes(6),
        )

    return make


def _operations(storage: Storage, settings: Settings, policy: AllowList) -> dict[str, Callable[[], object]]:
    endpoint = TokenEndpoint(
        settings=settings,
        storage=storage,
        policy=policy,
        limiter=FailureRateLimiter.from_settings(settings),
        clock=lambda: NOW,
    )
    credentials = ClientCredentials(CLIENT_ID, SECRET.encode(), METHOD_BASIC)
    requests = {aud: TokenRequest(audience=aud, scope=SCOPE) for aud in (AUDIENCE, SIGNED_AUDIENCE)}
    token = _tokens()
    unknown_kid = secrets.token_bytes(6)
    return {
        "handle() encrypt0": lambda: endpoint.handle(requests[AUDIENCE], credentials=credentials, peer="127.0.0.1"),
        "handle() sign1+encrypt0": lambda: endpoint.handle(
            requests[SIGNED_AUDIENCE], credentials=credentials, peer="127.0.0.1"
        ),
        "record": lambda: storage.record(token()),
        "get_client": lambda: storage.get_client(CLIENT_ID),
        "get_resource_server": lambda: storage.get_resource_server(AUDIENCE),
        "signing_key": lambda: storage.signing_key(),
        "find_by_pop_kid": lambda: storage.find_by_pop_kid(CLIENT_ID, AUDIENCE, unknown_kid),
    }


def run(seconds: float, workdir: Path) -> dict[str, dict[str, Measurement]]:
    """Per operation: the SQLite and the memory measurement (interleaved batches)."""
    master_key = MasterKey.generate()[0]
    settings = Settings(home=workdir, issuer="coap://as.example/token")
    policy = AllowList.from_yaml(POLICY)
    client, servers, key = _records()
    sql = open_storage(f"sqlite:///{workdir / 'ostiary.db'}", master_key, create=True)
    memory = MemoryStorage(master_key)
    try:
        for storage in (sql, memory):
            _fill(storage, client, servers, key)
        sql_ops, memory_ops = _operations(sql, settings, policy), _operations(memory, settings, policy)
        results: dict[str, dict[str, Measurement]] = {}
        for name in sql_ops:
            print(f"  measuring {name} ...", file=sys.stderr, flush=True)
            measured = measure_interleaved({"sqlite": sql_ops[name], "memory": memory_ops[name]}, seconds)
            results[name] = measured
        return results
    finally:
        sql.close()
        memory.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_token_endpoint", description=__doc__)
    parser.add_argument("--seconds", type=float, help=f"seconds per operation and backend (default {DEFAULT_SECONDS})")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SECONDS} s per operation")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    args = parser.parse_args(argv)
    seconds = args.seconds or (QUICK_SECONDS if args.quick else DEFAULT_SECONDS)

    print("bench_token_endpoint: per-call cost of a token request, single thread, SQLite vs memory storage")
    print(
        f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}; {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; {seconds:g} s per operation and backend"
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_token_endpoint-") as tmp:
        results = run(seconds, Path(tmp))
    width = max(len(name) for name in results)
    print()
    print(f"{'operation':<{width}} | {'SQLite us':>10} | {'memory us':>10} | {'SQLite/memory':>13}")
    print(f"{'-' * width}-+-{'-' * 10}-+-{'-' * 10}-+-{'-' * 13}")
    for name, pair in results.items():
        sql_us, mem_us = pair["sqlite"].us_per_op, pair["memory"].us_per_op
        print(f"{name:<{width}} | {sql_us:>10.1f} | {mem_us:>10.1f} | {sql_us / mem_us:>13.1f}")
    print("(median of 5 interleaved batches; 'record' commits one token alone, with its fsync)")
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    if args.json:
        doc: dict[str, Any] = {
            "benchmark": "bench_token_endpoint",
            "seconds": seconds,
            "results": {n: {b: m.as_dict() for b, m in pair.items()} for n, pair in results.items()},
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
