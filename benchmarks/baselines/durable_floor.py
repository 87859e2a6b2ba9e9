"""The durability floor: the trivial endpoints plus the one thing every token request must do, a durable write.

Issue #3 asks that every issued token be durably recorded before the response leaves. These baselines do exactly
that and nothing else: each request writes one fresh 16-byte random key into a one-column SQLite table (the key
is the primary key, ``WITHOUT ROWID``: one B-tree, one unique check), in WAL mode with ``synchronous=FULL`` like
ours and Authlib's, through the AS's own group committer (:class:`~as_server.storage.sqlalchemy.group_commit.
GroupCommitter`: a request thread that finds no write in progress commits its row itself, others queue and share
the next commit), and answers only after the commit. There is no parsing, no authentication, no policy, no
cryptography and no token.

So their rate bounds from above what any endpoint recording each request durably can reach on the same server
stack and machine, and ``bench_as`` reports ours against it beside the trivial endpoints.

* HTTP: a Flask ``POST /record`` returning the trivial endpoint's body; ``gunicorn ... 'benchmarks.baselines.
  durable_floor:create_app(db="/tmp/x/floor.db")'`` after :func:`prepare`. Each worker process opens its own
  connection and writer (gunicorn without ``--preload`` calls the factory after the fork).
* CoAP: an aiocoap POST resource answering 2.04 after the commit; the event loop awaits the write's future, as
  ours does: ``python -m benchmarks.baselines.durable_floor --port P --db FILE``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path

import aiocoap
import aiocoap.resource as resource
from flask import Flask, Response, jsonify, request

from as_server.storage.sqlalchemy.group_commit import GroupCommitter

__all__ = ["COAP_PATH", "KEY_BYTES", "PATH", "TABLE", "DurableLog", "create_app", "main", "prepare"]

PATH = "/record"
COAP_PATH = "record"
TABLE = "records"
#: Bytes of the random key each request writes (a token hash is 32 bytes, a ``cti`` 8).
KEY_BYTES = 16
BODY = b'{"ok":true}'


def _connect(db: str | Path) -> sqlite3.Connection:
    """A connection in autocommit mode (one statement, one durable transaction), WAL, ``synchronous=FULL``."""
    conn = sqlite3.connect(str(db), isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def prepare(db: str | Path) -> None:
    """Create the database (WAL) and its table; run once before any server opens it."""
    conn = _connect(db)
    try:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (k BLOB PRIMARY KEY) WITHOUT ROWID")
    finally:
        conn.close()


class DurableLog:
    """One connection and one group committer: :meth:`record` and :meth:`submit` write a fresh random key.

    Like the AS's token writer, a batch is one multi-row ``INSERT`` in autocommit mode (one statement, one commit).
    """

    def __init__(self, db: str | Path) -> None:
        self._conn = _connect(db)
        self._statements: dict[int, str] = {}
        self._committer: GroupCommitter[bytes] = GroupCommitter(self._write, name="durable-floor-writer")

    def _write(self, batch: Sequence[bytes]) -> list[BaseException | None]:
        sql = self._statements.get(len(batch))
        if sql is None:
            sql = self._statements[len(batch)] = f"INSERT INTO {TABLE} (k) VALUES " + ", ".join(["(?)"] * len(batch))
        self._conn.execute(sql, list(batch))
        return [None] * len(batch)

    def record(self) -> bytes:
        """Write one key; returns it once it is committed (blocking: for request threads)."""
        key = os.urandom(KEY_BYTES)
        self._committer.write(key)
        return key

    def submit(self) -> tuple[bytes, Future[None]]:
        """Queue one key; the future completes once it is committed (never blocks: for an event loop)."""
        key = os.urandom(KEY_BYTES)
        return key, self._committer.submit(key)

    def close(self) -> None:
        self._committer.close()
        self._conn.close()


def create_app(db: str) -> Flask:
    """The Flask application with one route, ``POST /record`` (this process's own :class:`DurableLog`)."""
    log = DurableLog(db)
    app = Flask(__name__)

    @app.post(PATH)
    def record() -> Response:
        request.get_data()
        log.record()
        return jsonify(ok=True)

    return app


class Record(resource.Resource):  # type: ignore[misc]
    """POST: one durable write, then 2.04 Changed with the trivial resource's body."""

    def __init__(self, log: DurableLog) -> None:
        super().__init__()
        self._log = log

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        _, written = self._log.submit()
        await asyncio.wrap_future(written)
        return aiocoap.Message(code=aiocoap.CHANGED, payload=BODY)


async def serve(host: str, port: int, db: str, transport: str, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM or SIGINT (or cancellation); ``ready`` is set once the socket is bound."""
    log = DurableLog(db)
    site = resource.Site()
    site.add_resource([COAP_PATH], Record(log))
    ctx = await aiocoap.Context.create_server_context(site, bind=(host, port), transports=[transport])
    if ready is not None:
        ready.set()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await ctx.shutdown()
        log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baselines.durable_floor")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True, help="SQLite file (created with its table if missing)")
    parser.add_argument("--transport", default="simplesocketserver", choices=["udp6", "simplesocketserver"])
    args = parser.parse_args(argv)
    prepare(args.db)
    asyncio.run(serve(args.host, args.port, args.db, args.transport))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
