"""The durable-floor baselines of ``bench_as`` (``benchmarks/baselines/durable_floor.py``) answer only after their
write is committed, over the AS's group committer, on HTTP (Flask) and on CoAP (a real aiocoap server on loopback).
"""

from __future__ import annotations

import asyncio
import importlib
import socket
import sqlite3
import threading
from pathlib import Path
from types import ModuleType

import aiocoap
import pytest

from tests.as_server.transport.harness import free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def floor(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("benchmarks.baselines.durable_floor")


def _stored(db: Path, key: bytes | None = None) -> int:
    """Rows seen by a new connection (so only committed ones), or whether ``key`` is one of them."""
    conn = sqlite3.connect(db)
    try:
        if key is None:
            return int(conn.execute("SELECT count(*) FROM records").fetchone()[0])
        return int(conn.execute("SELECT count(*) FROM records WHERE k = ?", (key,)).fetchone()[0])
    finally:
        conn.close()


def test_each_record_is_committed_before_it_returns(floor: ModuleType, tmp_path: Path) -> None:
    db = tmp_path / "floor.db"
    floor.prepare(db)
    log = floor.DurableLog(db)
    missing: list[bytes] = []

    def work() -> None:
        for _ in range(25):
            key = log.record()
            if _stored(db, key) != 1:
                missing.append(key)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    log.close()
    assert not missing
    assert _stored(db) == 200
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_http_floor_answers_after_its_write(floor: ModuleType, tmp_path: Path) -> None:
    db = tmp_path / "floor.db"
    floor.prepare(db)
    client = floor.create_app(str(db)).test_client()
    for n in range(1, 4):
        response = client.post(floor.PATH, data=b"grant_type=client_credentials")
        assert response.status_code == 200 and response.get_json() == {"ok": True}
        assert _stored(db) == n


def test_coap_floor_answers_after_its_write(floor: ModuleType, tmp_path: Path) -> None:
    db = tmp_path / "floor.db"
    floor.prepare(db)
    port = free_port(socket.SOCK_DGRAM)

    async def scenario() -> list[tuple[str, bytes, int]]:
        ready = asyncio.Event()
        server = asyncio.create_task(floor.serve("127.0.0.1", port, str(db), "simplesocketserver", ready))
        client = await aiocoap.Context.create_client_context()
        seen = []
        try:
            await asyncio.wait_for(ready.wait(), 10)
            for _ in range(3):
                request = aiocoap.Message(code=aiocoap.POST, uri=f"coap://127.0.0.1:{port}/{floor.COAP_PATH}")
                response = await asyncio.wait_for(client.request(request).response, 10)
                seen.append((str(response.code), response.payload, _stored(db)))
        finally:
            await client.shutdown()
            server.cancel()
            with pytest.raises(asyncio.CancelledError):
                await server
        return seen

    seen = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert [(code, payload) for code, payload, _ in seen] == [("2.04 Changed", floor.BODY)] * 3
    assert [count for _, _, count in seen] == [1, 2, 3]
