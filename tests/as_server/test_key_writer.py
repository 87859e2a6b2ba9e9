"""The operational key writer of the SQL storage (issue #7, "Benchmark"): concurrent ``add_operational_key`` calls
(first bootstraps of many locks at once) share one transaction, one registry-version bump and one commit; each call
still returns only once its own rows are committed, and a row that breaks a constraint fails only its own call,
leaving nothing of itself behind. SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import pytest

from as_server.bootstrap.operational import OperationalCredentials, RsTemplate
from as_server.models import OperationalKey, ResourceServer
from as_server.sealing import MasterKey
from as_server.storage.base import AuditQuery, DuplicateError
from as_server.storage.sqlalchemy.store import SqlStorage
from tests.as_server.test_storage import OpenSql

T0 = 1_750_000_000
WAIT = 30.0


def new_key(audience: str, generation: int = 1, *, fill: int = 1) -> OperationalKey:
    return OperationalKey(
        audience=audience, generation=generation, key=bytes([fill]) * 16, created_at=T0, delivered_at=T0
    )


def lock_rs(key: OperationalKey) -> ResourceServer:
    return RsTemplate().resource_server(key.audience, key.cose_key(), now=T0)


@pytest.fixture
def sql(sql_url: str, master_key: MasterKey, open_sql: OpenSql) -> SqlStorage:
    storage = open_sql(sql_url, master_key)
    assert isinstance(storage, SqlStorage)
    return storage


@contextmanager
def one_batch(storage: SqlStorage, monkeypatch: pytest.MonkeyPatch, expected: int) -> Iterator[futures.Executor]:
    """Hold the key writer inside a first write until ``expected`` calls made through the yielded pool have queued
    behind it, so that they form the next batch, one transaction."""
    committer = storage._key_committer  # noqa: SLF001 - a seam for a deterministic batch
    original = committer._write_batch  # noqa: SLF001
    release, entered = threading.Event(), threading.Event()

    def held(rows: Any) -> Any:
        if not entered.is_set():
            entered.set()
            assert release.wait(WAIT)
        return original(rows)

    monkeypatch.setattr(committer, "_write_batch", held)
    with futures.ThreadPoolExecutor(expected + 1) as pool:
        first = pool.submit(storage.add_operational_key, new_key("holder"), resource_server=None, actor="system")
        assert entered.wait(WAIT)
        try:
            yield pool
            deadline = time.monotonic() + WAIT
            while len(committer._queue) < expected:  # noqa: SLF001
                assert time.monotonic() < deadline, "the calls did not queue"
                time.sleep(0.005)
        finally:
            release.set()
        first.result(timeout=WAIT)


def add_all(
    pool: futures.Executor, storage: SqlStorage, calls: Sequence[tuple[OperationalKey, ResourceServer | None]]
) -> list[futures.Future[None]]:
    return [pool.submit(storage.add_operational_key, key, resource_server=rs, actor="system") for key, rs in calls]


def outcomes(pending: Sequence[futures.Future[None]]) -> list[BaseException | None]:
    return [f.exception(timeout=WAIT) for f in pending]


def test_concurrent_first_keys_share_one_transaction(sql: SqlStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [new_key(f"L1-{n:08d}", fill=n) for n in range(1, 13)]
    version = sql.registry_version()
    with one_batch(sql, monkeypatch, len(keys)) as pool:
        pending = add_all(pool, sql, [(key, lock_rs(key)) for key in keys])
    assert outcomes(pending) == [None] * len(keys)
    stats = sql.key_commit_stats
    assert stats.largest_batch == len(keys) and stats.rows == len(keys) + 1 and stats.batches == 2
    assert sql.registry_version() == (version or 0) + 2  # once for the holder's batch, once for this one
    for key in keys:
        assert sql.operational_keys(key.audience) == [key]
        rs = sql.get_resource_server(key.audience)
        assert rs == lock_rs(key) and rs.enabled and rs.shared_key is not None and rs.shared_key.k == key.key
    created = sql.list_audit(AuditQuery(action="resource_server.key_created", limit=100))
    assert sorted(e.audience or "" for e in created) == sorted(["holder", *(k.audience for k in keys)])


def test_a_duplicate_in_a_batch_fails_only_its_own_call(sql: SqlStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    taken = new_key("taken")
    sql.add_operational_key(taken, resource_server=lock_rs(taken), actor="system")
    fresh = [new_key(f"fresh-{n}", fill=n) for n in range(4)]
    twice = new_key("twice", fill=7)
    calls: list[tuple[OperationalKey, ResourceServer | None]] = [
        (fresh[0], lock_rs(fresh[0])),
        (dataclasses.replace(taken, key=b"\x09" * 16), lock_rs(taken)),  # the generation exists
        (fresh[1], lock_rs(fresh[1])),
        (twice, lock_rs(twice)),
        (dataclasses.replace(twice, key=b"\x08" * 16), lock_rs(twice)),  # the same new generation again
        (fresh[2], None),
        (fresh[3], lock_rs(fresh[3])),
    ]
    version = sql.registry_version()
    with one_batch(sql, monkeypatch, len(calls)) as pool:
        pending = add_all(pool, sql, calls)
    failed = [n for n, exc in enumerate(outcomes(pending)) if exc is not None]
    # calls 3 and 4 race from two threads into the same batch: whichever was queued second is the duplicate
    assert len(failed) == 2 and failed[0] == 1 and failed[1] in (3, 4)
    winner = calls[7 - failed[1]][0]
    assert all(isinstance(pending[n].exception(), DuplicateError) for n in failed)
    assert sql.key_commit_stats.largest_batch == len(calls)
    assert sql.registry_version() == (version or 0) + 2  # still one bump for the batch
    assert sql.operational_keys("taken") == [taken]  # the loser changed nothing
    rs = sql.get_resource_server("taken")
    assert rs is not None and rs.shared_key is not None and rs.shared_key.k == taken.key
    assert sql.operational_keys("twice") == [winner]  # the first of the two in the batch won
    for key in fresh:
        assert sql.operational_keys(key.audience) == [key]
    assert sql.get_resource_server(fresh[2].audience) is None  # stored without a resource server, as asked
    created = sql.list_audit(AuditQuery(action="resource_server.key_created", limit=100))
    audiences = sorted(e.audience or "" for e in created)
    assert audiences == sorted(["taken", "holder", "twice", *(k.audience for k in fresh)])  # none for the losers


def test_a_batch_adds_new_resource_servers_and_replaces_existing_ones(
    sql: SqlStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = OperationalCredentials(sql, rotation_age=3600)
    first = creds.key_for_delivery("revoked", now=T0, delivered=True)
    creds.revoke("revoked", now=T0 + 1)
    revoked = sql.get_resource_server("revoked")
    assert revoked is not None and not revoked.enabled and revoked.shared_key is None
    again = new_key("revoked", first.generation + 1, fill=5)
    enabled = dataclasses.replace(revoked, enabled=True, shared_key=again.cose_key())
    new = new_key("new", fill=6)
    with one_batch(sql, monkeypatch, 2) as pool:
        pending = add_all(pool, sql, [(again, enabled), (new, lock_rs(new))])
    assert outcomes(pending) == [None, None]
    assert sql.get_resource_server("revoked") == enabled
    assert sql.get_resource_server("new") == lock_rs(new)
    assert [k.generation for k in sql.operational_keys("revoked")] == [1, 2]


def test_every_call_waits_for_its_own_commit(sql: SqlStorage) -> None:
    """Without a seam: many threads delivering first keys at once, each sees its key stored when its call returns."""
    creds = OperationalCredentials(sql, rotation_age=3600)
    audiences = [f"L1-{n:08d}" for n in range(64)]

    def deliver(audience: str) -> OperationalKey:
        key = creds.key_for_delivery(audience, now=T0, delivered=True)
        assert sql.operational_keys(audience) == [key]  # committed before the call returned
        return key

    with futures.ThreadPoolExecutor(16) as pool:
        delivered = list(pool.map(deliver, audiences))
    assert [k.generation for k in delivered] == [1] * len(audiences)
    assert all(k.delivered_at == T0 for k in delivered)
    stats = sql.key_commit_stats
    assert stats.rows == len(audiences) and stats.batches <= stats.rows


def test_concurrent_creators_of_one_generation_one_wins_the_others_read_again(sql: SqlStorage) -> None:
    """Many threads deliver to the same new lock at once: one generation, one resource server, every caller gets
    that generation (the losers' DuplicateError makes them read again)."""
    creds = OperationalCredentials(sql, rotation_age=3600)
    start = threading.Barrier(12)

    def deliver(_: int) -> OperationalKey:
        start.wait(timeout=WAIT)
        return creds.key_for_delivery("contended", now=T0, delivered=True)

    with futures.ThreadPoolExecutor(12) as pool:
        keys = list(pool.map(deliver, range(12)))
    assert len({(k.generation, k.key) for k in keys}) == 1
    assert sql.operational_keys("contended") == [keys[0]]
    rs = sql.get_resource_server("contended")
    assert rs is not None and rs.shared_key is not None and rs.shared_key.k == keys[0].key


def test_a_failing_batch_fails_every_call_and_writes_nothing(sql: SqlStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [new_key(f"doomed-{n}", fill=n) for n in range(3)]
    original: Callable[..., Any] = sql._insert_keys  # noqa: SLF001

    def insert(cursor: Any, batch: Any) -> None:
        original(cursor, batch)  # written, then the transaction fails
        if any(key["audience"].startswith("doomed") for key, _, _ in batch):
            raise RuntimeError("disk on fire")

    monkeypatch.setattr(sql, "_insert_keys", insert)
    with one_batch(sql, monkeypatch, len(keys)) as pool:
        pending = add_all(pool, sql, [(key, lock_rs(key)) for key in keys])
    assert [type(exc) for exc in outcomes(pending)] == [RuntimeError] * len(keys)
    for key in keys:
        assert sql.operational_keys(key.audience) == [] and sql.get_resource_server(key.audience) is None
    assert not sql.list_audit(AuditQuery(action="resource_server.key_created", audience="doomed-0"))
