"""The device store's one-read answers to the bootstrap server (issue #7, "Benchmark"): ``bootstrap_credentials``
(the DTLS handshake's PSK and the device's serial) and ``bootstrap_device`` (the Bootstrap-Pack's decision and the
device's record) agree with the separate reads they replace, on both backends; the SQLite store reads through a
connection per thread, which sees what another thread committed and is closed with the store."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import pytest

from as_server.bootstrap.device_db import DEVICE_DB_FILE, SqliteDeviceStore
from as_server.bootstrap.devices import BootstrapRefusal, EditableDeviceStore, MemoryDeviceStore
from as_server.sealing import MasterKey
from tests.bootstrap.test_factory_store import BATCH, MASTER_KEY_RAW, NOW, device, new_batch, recorded

EP1 = "urn:dev:ops:ostiary-L1-00000001"
EP2 = "urn:dev:ops:ostiary-L1-00000002"


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EditableDeviceStore]:
    if request.param == "memory":
        yield MemoryDeviceStore()
        return
    sqlite_store = SqliteDeviceStore(tmp_path / DEVICE_DB_FILE, MasterKey(MASTER_KEY_RAW))
    yield sqlite_store
    sqlite_store.close()


def test_bootstrap_credentials_is_the_psk_and_the_serial(store: EditableDeviceStore) -> None:
    new_batch(store)
    store.add_many([device(1), device(2, site="building-a")], now=NOW)
    assert store.bootstrap_credentials(device(1).psk_identity) is None  # the batch is pending
    store.complete_batch(BATCH)
    for n in (1, 2):
        found = store.bootstrap_credentials(device(n).psk_identity)
        assert found == (device(n).psk, device(n).serial)
        assert found[0] == store.bootstrap_psk(device(n).psk_identity)
        record = store.by_identity(device(n).psk_identity)
        assert record is not None and record.serial == found[1]
    assert store.bootstrap_credentials(b"bs-unknown") is None
    store.decommission(device(1).serial, now=NOW + 1)
    assert store.bootstrap_credentials(device(1).psk_identity) is None
    assert store.bootstrap_credentials(device(2).psk_identity) == (device(2).psk, device(2).serial)


def test_bootstrap_device_is_the_target_and_the_record(store: EditableDeviceStore) -> None:
    recorded(store, [device(1, site="building-a"), device(2)])
    cases = [
        ("urn:dev:ops:ostiary-L1-00000099", None),
        (EP1, device(1).psk_identity),
        (EP1, device(2).psk_identity),
        (EP1, None),
        (EP2, device(2).psk_identity),
    ]
    for endpoint, identity in cases:
        record, target = store.bootstrap_device(endpoint, psk_identity=identity)
        assert target == store.bootstrap_target(endpoint, psk_identity=identity)
        assert record == store.by_endpoint(endpoint)
    assert store.bootstrap_device(EP1, psk_identity=device(1).psk_identity)[1] == "building-a"
    assert store.bootstrap_device(EP1, psk_identity=device(2).psk_identity)[1] is BootstrapRefusal.IDENTITY_MISMATCH
    assert store.bootstrap_device(EP2)[1] is BootstrapRefusal.UNCLAIMED
    assert store.bootstrap_device("urn:dev:ops:ostiary-L1-00000099") == (None, BootstrapRefusal.UNKNOWN_ENDPOINT)


def test_a_pending_batch_is_reported_with_its_record(store: EditableDeviceStore) -> None:
    new_batch(store)
    store.add_many([device(1, site="building-a")], now=NOW)
    record, target = store.bootstrap_device(EP1, psk_identity=device(1).psk_identity)
    assert target is BootstrapRefusal.BATCH_INCOMPLETE
    assert record is not None and record.serial == device(1).serial


def test_sqlite_reads_from_many_threads_see_what_other_threads_committed(tmp_path: Path) -> None:
    store = SqliteDeviceStore(tmp_path / DEVICE_DB_FILE, MasterKey(MASTER_KEY_RAW))
    try:
        recorded(store, [device(n) for n in range(1, 33)])
        start = threading.Barrier(8)

        def read(n: int) -> tuple[bytes, str] | None:
            start.wait(timeout=10)
            for _ in range(20):
                found = store.bootstrap_credentials(device(n).psk_identity)
                assert found == (device(n).psk, device(n).serial)
            return store.bootstrap_credentials(device(n).psk_identity)

        with futures.ThreadPoolExecutor(8) as pool:
            assert all(pool.map(read, range(1, 9)))
            # A write in this thread is seen by the pool's threads, whose read connections are already open.
            store.claim(device(3).enrolment_id, "building-b", now=NOW + 5)
            seen = pool.submit(store.bootstrap_device, "urn:dev:ops:ostiary-L1-00000003").result(timeout=10)
            assert seen[1] == "building-b" and seen[0] is not None and seen[0].assigned_at == NOW + 5
    finally:
        store.close()


def test_closing_the_sqlite_store_closes_every_read_connection(tmp_path: Path) -> None:
    store = SqliteDeviceStore(tmp_path / DEVICE_DB_FILE, MasterKey(MASTER_KEY_RAW))
    recorded(store, [device(1)])
    other = threading.Thread(target=store.get, args=(device(1).serial,))
    other.start()
    other.join()
    assert store.get(device(1).serial) is not None
    store.close()
    with pytest.raises(sqlite3.ProgrammingError):
        store.get(device(1).serial)  # this thread's read connection is closed
    failed: list[BaseException] = []

    def late() -> None:
        try:
            store.get(device(1).serial)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            failed.append(exc)

    thread = threading.Thread(target=late)  # a thread without a read connection yet
    thread.start()
    thread.join()
    assert len(failed) == 1 and isinstance(failed[0], sqlite3.ProgrammingError)
