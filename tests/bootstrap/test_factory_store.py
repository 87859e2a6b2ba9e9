"""Device stores (issue #7, "Ownership"): both backends behave alike -- uniqueness of every credential enforced
(whole calls refused, conflicts named), pending batches, claim/release semantics, the bootstrap server's question,
first claim wins under concurrency (threads and processes) -- and the SQLite file keeps secrets sealed."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ace_core.lwm2m.identifiers import (
    enrolment_digest,
    make_endpoint,
    make_enrolment_id,
    make_psk_identity,
    make_serial,
)
from as_server.bootstrap.device_db import DEVICE_DB_FILE, SqliteDeviceStore
from as_server.bootstrap.devices import (
    AlreadyClaimed,
    Assignment,
    BatchRecord,
    BatchStateError,
    BootstrapRefusal,
    Conflict,
    DuplicateDeviceError,
    EditableDeviceStore,
    FactoryDevice,
    MemoryDeviceStore,
    NotClaimed,
    UnknownDevice,
)
from as_server.sealing import MasterKey, SealingError

NOW = 1_774_279_812
BATCH = "L1-20260323-153012-0000"
MASTER_KEY_RAW = bytes(range(32))
THREADS = 8


def device(n: int, *, batch: str = BATCH, site: str | None = None) -> FactoryDevice:
    """Deterministic device ``n`` (all unique values derived from n)."""
    seed = n.to_bytes(4, "big")
    serial = make_serial("L1", n)
    return FactoryDevice(
        serial=serial,
        model="L1",
        endpoint=make_endpoint("ostiary", serial),
        psk_identity=make_psk_identity(seed + b"\x00" * 6),
        psk=seed * 4,
        enrolment_id=make_enrolment_id(seed + b"\x01" * 6),
        batch_id=batch,
        site=site,
    )


def open_sqlite(path: Path) -> SqliteDeviceStore:
    return SqliteDeviceStore(path, MasterKey(MASTER_KEY_RAW))


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EditableDeviceStore]:
    if request.param == "memory":
        yield MemoryDeviceStore()
        return
    sqlite_store = open_sqlite(tmp_path / DEVICE_DB_FILE)
    yield sqlite_store
    sqlite_store.close()


def new_batch(store: EditableDeviceStore, batch: str = BATCH, *, key: bytes = b"k" * 32) -> None:
    store.add_batch(BatchRecord(batch_id=batch, model="L1", count=0, site=None, created_at=NOW), key)


def recorded(store: EditableDeviceStore, devices: list[FactoryDevice], batch: str = BATCH) -> None:
    new_batch(store, batch)
    store.add_many(devices, now=NOW)
    store.complete_batch(batch)


# -- uniqueness ----------------------------------------------------------------------------------------------


def test_add_many_and_reads(store: EditableDeviceStore) -> None:
    devices = [device(1), device(2, site="building-a")]
    recorded(store, devices)
    one = store.get("L1-00000001")
    assert one is not None and one.site is None and one.assignment is Assignment.UNCLAIMED
    two = store.by_endpoint("urn:dev:ops:ostiary-L1-00000002")
    assert two is not None and two.site == "building-a" and two.assignment is Assignment.FACTORY
    assert two.assigned_at == NOW and two.created_at == NOW
    assert store.by_identity(devices[0].psk_identity) == one
    assert store.by_enrolment_id(devices[1].enrolment_id) == two
    assert store.bootstrap_psk(devices[0].psk_identity) == devices[0].psk
    assert store.bootstrap_psk(b"bs-unknown") is None
    assert store.get("L1-00000009") is None
    assert store.bundle_key(BATCH) == b"k" * 32 and store.bundle_key("nope") is None


@pytest.mark.parametrize("field", ["serial", "endpoint", "psk_identity", "psk", "enrolment_id"])
def test_a_repeated_value_refuses_the_whole_call(store: EditableDeviceStore, field: str) -> None:
    recorded(store, [device(1)])
    new_batch(store, "B2")
    choices: dict[str, dict[str, Any]] = {
        "serial": {"serial": "L1-00000001", "endpoint": "urn:dev:ops:other-L1-00000001"},
        "endpoint": {"endpoint": "urn:dev:ops:ostiary-L1-00000001"},
        "psk_identity": {"psk_identity": device(1).psk_identity},
        "psk": {"psk": device(1).psk},
        "enrolment_id": {"enrolment_id": device(1).enrolment_id},
    }
    values = choices[field]
    clash = dataclasses.replace(device(3, batch="B2"), **values)
    batch = [device(2, batch="B2"), clash, device(4, batch="B2")]
    with pytest.raises(DuplicateDeviceError) as exc:
        store.add_many(batch, now=NOW)
    assert exc.value.conflicts == (Conflict(1, field),)
    assert store.get("L1-00000002") is None and store.get("L1-00000004") is None  # nothing of the call
    # Within one call too: the later device is the conflicting one.
    twin = dataclasses.replace(device(5, batch="B2"), **{k: getattr(device(2, batch="B2"), k) for k in values})
    with pytest.raises(DuplicateDeviceError) as exc:
        store.add_many([device(2, batch="B2"), twin], now=NOW)
    assert exc.value.conflicts == (Conflict(1, field),)
    store.add_many([device(2, batch="B2")], now=NOW)  # the store is usable afterwards
    assert store.get("L1-00000002") is not None


def test_every_conflict_is_named(store: EditableDeviceStore) -> None:
    recorded(store, [device(1), device(2)])
    new_batch(store, "B2")
    batch = [
        dataclasses.replace(device(10, batch="B2"), psk=device(1).psk),
        device(11, batch="B2"),
        dataclasses.replace(device(12, batch="B2"), enrolment_id=device(2).enrolment_id),
    ]
    with pytest.raises(DuplicateDeviceError) as exc:
        store.add_many(batch, now=NOW)
    assert exc.value.conflicts == (Conflict(0, "psk"), Conflict(2, "enrolment_id"))
    assert "psk" in str(exc.value) and "enrolment_id" in str(exc.value)


def test_devices_need_a_pending_batch(store: EditableDeviceStore) -> None:
    with pytest.raises(BatchStateError):
        store.add_many([device(1)], now=NOW)
    recorded(store, [device(1)])
    with pytest.raises(BatchStateError):
        store.add_many([device(2)], now=NOW)  # the batch is complete
    with pytest.raises(BatchStateError):
        new_batch(store)  # ids are unique


def test_serial_reservations_never_overlap(store: EditableDeviceStore) -> None:
    assert store.reserve_serials("L1", 10) == 1
    assert store.reserve_serials("L1", 5) == 11
    assert store.reserve_serials("L2", 1) == 1
    assert store.reserve_serials("L1", 1) == 16
    with pytest.raises(ValueError):
        store.reserve_serials("L1", 0)


# -- batches -------------------------------------------------------------------------------------------------


def test_a_pending_batch_is_invisible_to_claims_and_bootstrap(store: EditableDeviceStore) -> None:
    new_batch(store)
    store.add_many([device(1), device(2, site="building-a")], now=NOW)
    assert store.bootstrap_psk(device(1).psk_identity) is None
    assert store.bootstrap_target("urn:dev:ops:ostiary-L1-00000002") is BootstrapRefusal.BATCH_INCOMPLETE
    with pytest.raises(UnknownDevice):
        store.claim(device(1).enrolment_id, "building-b", now=NOW)
    with pytest.raises(UnknownDevice):
        store.release("L1-00000002", now=NOW)
    pending = store.get_batch(BATCH)
    assert pending is not None and not pending.complete
    store.complete_batch(BATCH)
    done = store.get_batch(BATCH)
    assert done is not None and done.complete
    assert store.bootstrap_target("urn:dev:ops:ostiary-L1-00000002") == "building-a"


def test_discard_removes_only_a_pending_batch(store: EditableDeviceStore) -> None:
    recorded(store, [device(1, batch="DONE")], batch="DONE")
    new_batch(store)
    store.add_many([device(2), device(3)], now=NOW)
    assert store.discard_batch(BATCH) == 2
    assert store.get("L1-00000002") is None and store.get_batch(BATCH) is None
    assert [b.batch_id for b in store.list_batches()] == ["DONE"]
    with pytest.raises(BatchStateError, match="complete"):
        store.discard_batch("DONE")
    with pytest.raises(BatchStateError):
        store.discard_batch("nope")
    # Their values are free again (the batch never existed).
    new_batch(store, "AGAIN")
    store.add_many([device(2, batch="AGAIN")], now=NOW)


# -- ownership -----------------------------------------------------------------------------------------------


def test_claim_then_release(store: EditableDeviceStore) -> None:
    recorded(store, [device(1)])
    eid = device(1).enrolment_id
    assert store.bootstrap_target("urn:dev:ops:ostiary-L1-00000001") is BootstrapRefusal.UNCLAIMED
    claimed = store.claim(eid, "building-a", now=NOW + 10)
    assert (claimed.site, claimed.assignment, claimed.assigned_at) == ("building-a", Assignment.CLAIMED, NOW + 10)
    assert store.bootstrap_target("urn:dev:ops:ostiary-L1-00000001") == "building-a"
    with pytest.raises(AlreadyClaimed):
        store.claim(eid, "building-b", now=NOW + 11)
    with pytest.raises(AlreadyClaimed):
        store.claim(eid, "building-a", now=NOW + 11)  # even for the same site: the first claim won
    released = store.release("L1-00000001", now=NOW + 20)
    assert released.site is None and released.assignment is Assignment.UNCLAIMED
    assert released.released_at == released.revoked_at == NOW + 20 and released.assigned_at is None
    assert store.bootstrap_target("urn:dev:ops:ostiary-L1-00000001") is BootstrapRefusal.UNCLAIMED
    with pytest.raises(NotClaimed):
        store.release("L1-00000001", now=NOW + 21)
    again = store.claim(eid, "building-b", now=NOW + 30)  # claimable again, by its enrolment id
    assert again.site == "building-b" and again.revoked_at == NOW + 20  # the BS re-keys before it serves


def test_pre_assigned_devices_cannot_be_claimed_but_can_be_released(store: EditableDeviceStore) -> None:
    recorded(store, [device(1, site="building-a")])
    with pytest.raises(AlreadyClaimed):
        store.claim(device(1).enrolment_id, "building-b", now=NOW)
    assert store.release("L1-00000001", now=NOW).site is None
    assert store.claim(device(1).enrolment_id, "building-b", now=NOW).site == "building-b"


def test_unknown_devices(store: EditableDeviceStore) -> None:
    recorded(store, [device(1)])
    with pytest.raises(UnknownDevice):
        store.claim(make_enrolment_id(bytes(10)), "x", now=NOW)
    with pytest.raises(UnknownDevice):
        store.release("L1-00000099", now=NOW)


def test_bootstrap_target_refusals(store: EditableDeviceStore) -> None:
    recorded(store, [device(1, site="building-a"), device(2)])
    ep1 = "urn:dev:ops:ostiary-L1-00000001"
    assert store.bootstrap_target("urn:dev:ops:ostiary-L1-00000099") is BootstrapRefusal.UNKNOWN_ENDPOINT
    assert store.bootstrap_target(ep1, psk_identity=device(1).psk_identity) == "building-a"
    assert store.bootstrap_target(ep1, psk_identity=device(2).psk_identity) is BootstrapRefusal.IDENTITY_MISMATCH
    assert store.bootstrap_target("urn:dev:ops:ostiary-L1-00000002") is BootstrapRefusal.UNCLAIMED
    assert all(isinstance(r.value, str) and r.value for r in BootstrapRefusal)


def test_list_devices_filters(store: EditableDeviceStore) -> None:
    recorded(store, [device(3, batch="B1", site="a"), device(1, batch="B1"), device(2, batch="B1", site="b")], "B1")
    recorded(store, [device(4, batch="B2", site="a")], batch="B2")
    assert [r.serial for r in store.list_devices()] == [f"L1-0000000{i}" for i in (1, 2, 3, 4)]
    assert [r.serial for r in store.list_devices(site="a")] == ["L1-00000003", "L1-00000004"]
    assert [r.serial for r in store.list_devices(unclaimed=True)] == ["L1-00000001"]
    assert [r.serial for r in store.list_devices(batch_id="B2")] == ["L1-00000004"]
    assert [r.serial for r in store.list_devices(limit=2)] == ["L1-00000001", "L1-00000002"]
    assert [b.batch_id for b in store.list_batches()] == ["B1", "B2"]


# -- concurrency ---------------------------------------------------------------------------------------------


def _race(claim: object, eid: str) -> list[str]:
    """Run ``claim(eid, site)`` from THREADS threads released together; returns the outcomes."""
    barrier = threading.Barrier(THREADS)
    outcomes: list[str] = []
    lock = threading.Lock()

    def contender(i: int) -> None:
        barrier.wait()
        try:
            claim(eid, f"site-{i}")  # type: ignore[operator]
            result = f"won site-{i}"
        except AlreadyClaimed:
            result = "refused"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_first_claim_wins_between_threads(store: EditableDeviceStore) -> None:
    recorded(store, [device(1)])
    outcomes = _race(lambda eid, site: store.claim(eid, site, now=NOW), device(1).enrolment_id)
    winners = [o for o in outcomes if o.startswith("won")]
    assert len(winners) == 1 and outcomes.count("refused") == THREADS - 1
    record = store.get("L1-00000001")
    assert record is not None and f"won {record.site}" == winners[0]


def test_first_claim_wins_between_connections(tmp_path: Path) -> None:
    path = tmp_path / DEVICE_DB_FILE
    with open_sqlite(path) as setup:
        recorded(setup, [device(1)])
    stores = [open_sqlite(path) for _ in range(THREADS)]
    try:
        barrier = threading.Barrier(THREADS)
        outcomes: list[str] = []

        def contender(i: int) -> None:
            barrier.wait()
            try:
                stores[i].claim(device(1).enrolment_id, f"site-{i}", now=NOW)
                outcomes.append("won")
            except AlreadyClaimed:
                outcomes.append("refused")

        threads = [threading.Thread(target=contender, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for s in stores:
            s.close()
    assert sorted(outcomes) == ["refused"] * (THREADS - 1) + ["won"]


def _claim_in_process(path: str, eid: str, site: str, start: object, results: object) -> None:
    with SqliteDeviceStore(path, MasterKey(MASTER_KEY_RAW)) as store:
        start.wait()  # type: ignore[attr-defined]
        try:
            store.claim(eid, site, now=NOW)
            results.put(("won", site))  # type: ignore[attr-defined]
        except AlreadyClaimed:
            results.put(("refused", site))  # type: ignore[attr-defined]


def test_first_claim_wins_between_processes(tmp_path: Path) -> None:
    path = tmp_path / DEVICE_DB_FILE
    with open_sqlite(path) as setup:
        recorded(setup, [device(1)])
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    processes = [
        ctx.Process(target=_claim_in_process, args=(str(path), device(1).enrolment_id, f"site-{i}", start, results))
        for i in range(4)
    ]
    for p in processes:
        p.start()
    start.set()
    outcomes = [results.get(timeout=60) for _ in processes]
    for p in processes:
        p.join(timeout=60)
        assert p.exitcode == 0
    results.close()
    results.join_thread()
    winners = [site for outcome, site in outcomes if outcome == "won"]
    assert len(winners) == 1
    with open_sqlite(path) as check:
        record = check.get("L1-00000001")
    assert record is not None and record.site == winners[0]


# -- the SQLite file -----------------------------------------------------------------------------------------


def test_secrets_are_sealed_at_rest(tmp_path: Path) -> None:
    path = tmp_path / DEVICE_DB_FILE
    devices = [device(n) for n in range(1, 6)]
    with open_sqlite(path) as store:
        recorded(store, devices)
        store.claim(devices[0].enrolment_id, "building-a", now=NOW)
    assert os.stat(path).st_mode & 0o777 == 0o600
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith(DEVICE_DB_FILE))
    for d in devices:
        assert d.psk not in raw
        assert d.enrolment_id.encode() not in raw and d.enrolment_id.replace("-", "").encode() not in raw
        assert enrolment_digest(d.enrolment_id) in raw  # only the digest
    assert b"k" * 32 not in raw  # the bundle key is sealed too
    # Reopened under the same master key, everything opens.
    with open_sqlite(path) as again:
        assert again.bootstrap_psk(devices[2].psk_identity) == devices[2].psk
        assert again.bundle_key(BATCH) == b"k" * 32


def test_a_row_copied_elsewhere_does_not_open(tmp_path: Path) -> None:
    path = tmp_path / DEVICE_DB_FILE
    with open_sqlite(path) as store:
        recorded(store, [device(1), device(2)])
    with sqlite3.connect(path) as conn:  # an attacker with write access swaps two sealed PSKs
        psk1 = conn.execute("SELECT psk FROM devices WHERE serial = 'L1-00000001'").fetchone()[0]
        conn.execute("UPDATE devices SET psk = ? WHERE serial = 'L1-00000002'", (psk1,))
    conn.close()
    with open_sqlite(path) as store, pytest.raises(SealingError):
        store.bootstrap_psk(device(2).psk_identity)


def test_another_master_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / DEVICE_DB_FILE
    open_sqlite(path).close()
    with pytest.raises(SealingError):
        SqliteDeviceStore(path, MasterKey(bytes(32)))


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / DEVICE_DB_FILE
    open_sqlite(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE name = 'schema'")
    conn.close()
    with pytest.raises(Exception, match="schema version 99"):
        open_sqlite(path)
