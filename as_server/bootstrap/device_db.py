"""The device registry in a SQLite file of its own (``$OSTIARY_HOME/devices.db``), through the standard library's
:mod:`sqlite3`: :class:`SqliteDeviceStore` implements :class:`~as_server.bootstrap.devices.EditableDeviceStore`.

A stop-gap with a real job: the AS's SQLAlchemy database and its migrations are owned elsewhere, and the device
registry moves there behind the same Protocols later. Until then this file is what ``ostiary factory`` writes and
what the bootstrap server will read.

* **At rest**, as the AS keeps key material (:mod:`as_server.sealing`): each bootstrap PSK and each batch's bundle key
  is sealed under the deployment's :class:`~as_server.sealing.MasterKey` (AES-256-GCM), with associated data naming
  table, column and primary key (the format of :func:`as_server.storage.sqlalchemy.rows.aad`), so a blob copied
  into another row does not open. Enrolment ids are kept only as their digest
  (:func:`~ace_core.lwm2m.identifiers.enrolment_digest`). PSK uniqueness is enforced on a keyed BLAKE2b
  fingerprint (BLAKE2 as a MAC, RFC 7693 §2.5) under a random key that is itself sealed in the ``meta`` table, so
  the index reveals nothing about the PSKs. The file is created mode 0600.
* **Writes** run in ``BEGIN IMMEDIATE`` transactions (SQLite's single writer lock, taken up front), so a claim's
  check and update are one atomic step even between processes: the first claim wins, every other one sees it.
  :meth:`SqliteDeviceStore.add_many` is one transaction per call, with a savepoint, so a refused call leaves
  nothing behind. The factory calls it with large chunks (:data:`~as_server.bootstrap.factory.DEFAULT_STORE_CHUNK`
  devices): the unique indexes take random keys, so every transaction rewrites most of their pages, and fewer,
  larger transactions write far less (measured: 100,000 devices took 8.4-10.6 s in 1,000-device transactions,
  3.9-4.2 s in 50,000-device ones). WAL with ``synchronous=NORMAL``: a commit does not wait for the disk; a crash
  loses at most the last commits, never consistency.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from ace_core.lwm2m.identifiers import enrolment_digest
from as_server.bootstrap.devices import (
    DEVICE_FIELDS,
    AlreadyClaimed,
    Assignment,
    BatchRecord,
    BatchStateError,
    BootstrapRefusal,
    Conflict,
    DeviceRecord,
    DeviceStoreError,
    DuplicateDeviceError,
    FactoryDevice,
    NotClaimed,
    UnknownDevice,
    decide_bootstrap_target,
    find_conflicts,
)
from as_server.sealing import MasterKey

__all__ = ["DEVICE_DB_FILE", "SCHEMA_VERSION", "SqliteDeviceStore"]

#: The file name in ``OSTIARY_HOME``.
DEVICE_DB_FILE: Final = "devices.db"
#: Version 2 (issue #7) adds ``devices.decommissioned_at``; a version 1 file is upgraded when opened.
SCHEMA_VERSION: Final = 2
_FINGERPRINT_KEY = "psk_fingerprint_key"
_IN_CHUNK = 500  # values per "IN (...)" query, well under SQLite's variable limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS serial_counters (
    model TEXT PRIMARY KEY,
    last INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    count INTEGER NOT NULL,
    site TEXT,
    created_at INTEGER NOT NULL,
    complete INTEGER NOT NULL DEFAULT 0,
    bundle_key BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
    serial TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    endpoint TEXT NOT NULL UNIQUE,
    psk_identity BLOB NOT NULL UNIQUE,
    psk BLOB NOT NULL,
    psk_fingerprint BLOB NOT NULL UNIQUE,
    enrolment_digest BLOB NOT NULL UNIQUE,
    batch_id TEXT NOT NULL REFERENCES batches (batch_id),
    created_at INTEGER NOT NULL,
    site TEXT,
    assignment TEXT NOT NULL CHECK (assignment IN ('unclaimed', 'factory', 'claimed')),
    assigned_at INTEGER,
    released_at INTEGER,
    revoked_at INTEGER,
    decommissioned_at INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS devices_site ON devices (site);
"""

_RECORD_COLUMNS = (
    "d.serial, d.model, d.endpoint, d.psk_identity, d.batch_id, d.created_at, d.site, d.assignment, "
    "d.assigned_at, d.released_at, d.revoked_at, d.decommissioned_at"
)
_INSERT = (
    "INSERT INTO devices (serial, model, endpoint, psk_identity, psk, psk_fingerprint, enrolment_digest, batch_id, "
    "created_at, site, assignment, assigned_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# Column holding each unique field (the PSK and the enrolment id are matched by fingerprint and digest).
_UNIQUE_COLUMNS = {
    "serial": "serial",
    "endpoint": "endpoint",
    "psk_identity": "psk_identity",
    "psk": "psk_fingerprint",
    "enrolment_id": "enrolment_digest",
}
assert set(_UNIQUE_COLUMNS) == set(DEVICE_FIELDS)


def _aad(table: str, column: str, key: str) -> bytes:
    """Associated data binding a sealed value to its table, column and primary key."""
    return f"ostiary/{table}.{column}\x00".encode() + key.encode()


def _record(row: Sequence[Any]) -> DeviceRecord:
    return DeviceRecord(
        serial=row[0],
        model=row[1],
        endpoint=row[2],
        psk_identity=bytes(row[3]),
        batch_id=row[4],
        created_at=row[5],
        site=row[6],
        assignment=Assignment(row[7]),
        assigned_at=row[8],
        released_at=row[9],
        revoked_at=row[10],
        decommissioned_at=row[11],
    )


def _batch(row: Sequence[Any]) -> BatchRecord:
    return BatchRecord(
        batch_id=row[0], model=row[1], count=row[2], site=row[3], created_at=row[4], complete=bool(row[5])
    )


def _create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (SQLite gives its -wal and -shm files the same mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


class SqliteDeviceStore:
    """:class:`~as_server.bootstrap.devices.EditableDeviceStore` in a SQLite file (see the module documentation).

    Writes go through one connection per object, shared by its threads under a lock; reads through a connection
    per thread, without a lock (WAL readers do not block each other or the writer). A shared read connection made
    the bootstrap server's threads queue behind whichever one held it while it waited for the GIL, and the DTLS
    PSK lookup runs on the event loop, which then stood still (issue #7, "Benchmark"). Separate objects (or
    processes) on the same file coordinate through SQLite's locks (``timeout`` seconds of waiting for the writer
    lock).

    :raises DeviceStoreError: the file has an unknown schema version.
    :raises ~as_server.sealing.SealingError: the file was created under another master key.
    """

    def __init__(self, path: Path | str, master_key: MasterKey, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self._master_key = master_key
        self._lock = threading.Lock()
        self._timeout = timeout
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []  # every thread's read connection (guarded by _lock)
        self._closed = False
        _create_private(self.path)
        self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        try:
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: the unique indexes take random inserts
            self._fingerprint_key = self._init_schema()
        except BaseException:
            self._conn.close()
            raise

    def __repr__(self) -> str:
        return f"SqliteDeviceStore({str(self.path)!r})"

    def close(self) -> None:
        """Close the connections."""
        with self._lock:
            self._closed = True
            self._conn.close()
            for reader in self._readers:
                reader.close()
            self._readers.clear()

    def __enter__(self) -> SqliteDeviceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _init_schema(self) -> bytes:
        with self._write() as c:
            # One statement at a time: executescript() would commit the transaction opened above.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    c.execute(statement)
            row = c.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
            if row is not None and str(row[0]) == "1":
                # Version 1 -> 2 (issue #7): CREATE TABLE IF NOT EXISTS kept the old devices table; add the column.
                columns = {info[1] for info in c.execute("PRAGMA table_info(devices)")}
                if "decommissioned_at" not in columns:
                    c.execute("ALTER TABLE devices ADD COLUMN decommissioned_at INTEGER")
                c.execute("UPDATE meta SET value = ? WHERE name = 'schema'", (str(SCHEMA_VERSION),))
                row = (str(SCHEMA_VERSION),)
            if row is None:
                c.execute("INSERT INTO meta (name, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif str(row[0]) != str(SCHEMA_VERSION):
                raise DeviceStoreError(
                    f"{self.path} has device schema version {row[0]}; this Ostiary knows version {SCHEMA_VERSION}"
                )
            row = c.execute("SELECT value FROM meta WHERE name = ?", (_FINGERPRINT_KEY,)).fetchone()
            if row is None:
                key = secrets.token_bytes(32)
                sealed = self._master_key.seal(key, aad=_aad("meta", "value", _FINGERPRINT_KEY))
                c.execute("INSERT INTO meta (name, value) VALUES (?, ?)", (_FINGERPRINT_KEY, sealed))
                return key
        return self._master_key.open(bytes(row[0]), aad=_aad("meta", "value", _FINGERPRINT_KEY))

    def _fingerprint(self, psk: bytes) -> bytes:
        return hashlib.blake2b(psk, key=self._fingerprint_key, digest_size=16).digest()

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection (opened at its first read)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            with self._lock:
                if self._closed:
                    raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
                conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA query_only = ON")
                self._readers.append(conn)
            self._local.conn = conn
        return conn

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """One read statement (its own read transaction) on this thread's connection."""
        return self._reader().execute(sql, params).fetchall()

    def _one(self, where: str, value: Any) -> DeviceRecord | None:
        rows = self._query(f"SELECT {_RECORD_COLUMNS} FROM devices d WHERE {where} = ?", (value,))
        return _record(rows[0]) if rows else None

    # -- reading -------------------------------------------------------------------------------------------------

    def get(self, serial: str) -> DeviceRecord | None:
        return self._one("d.serial", serial)

    def by_endpoint(self, endpoint: str) -> DeviceRecord | None:
        return self._one("d.endpoint", endpoint)

    def by_identity(self, psk_identity: bytes) -> DeviceRecord | None:
        return self._one("d.psk_identity", psk_identity)

    def by_enrolment_id(self, enrolment_id: str) -> DeviceRecord | None:
        return self._one("d.enrolment_digest", enrolment_digest(enrolment_id))

    def bootstrap_psk(self, psk_identity: bytes) -> bytes | None:
        found = self.bootstrap_credentials(psk_identity)
        return None if found is None else found[0]

    def bootstrap_credentials(self, psk_identity: bytes) -> tuple[bytes, str] | None:
        rows = self._query(
            "SELECT d.serial, d.psk FROM devices d JOIN batches b ON b.batch_id = d.batch_id "
            "WHERE d.psk_identity = ? AND b.complete AND d.decommissioned_at IS NULL",
            (psk_identity,),
        )
        if not rows:
            return None
        serial, sealed = rows[0]
        return self._master_key.open(bytes(sealed), aad=_aad("devices", "psk", serial)), serial

    def bootstrap_target(self, endpoint: str, *, psk_identity: bytes | None = None) -> str | BootstrapRefusal:
        return self.bootstrap_device(endpoint, psk_identity=psk_identity)[1]

    def bootstrap_device(
        self, endpoint: str, *, psk_identity: bytes | None = None
    ) -> tuple[DeviceRecord | None, str | BootstrapRefusal]:
        rows = self._query(
            f"SELECT {_RECORD_COLUMNS}, b.complete FROM devices d JOIN batches b ON b.batch_id = d.batch_id "
            "WHERE d.endpoint = ?",
            (endpoint,),
        )
        if not rows:
            return None, decide_bootstrap_target(None, batch_complete=False, psk_identity=psk_identity)
        record = _record(rows[0])
        return record, decide_bootstrap_target(record, batch_complete=bool(rows[0][-1]), psk_identity=psk_identity)

    def list_devices(
        self,
        *,
        site: str | None = None,
        unclaimed: bool = False,
        batch_id: str | None = None,
        limit: int | None = None,
    ) -> Sequence[DeviceRecord]:
        where: list[str] = ["1"]
        params: list[Any] = []
        if site is not None:
            where.append("d.site = ?")
            params.append(site)
        if unclaimed:
            where.append("d.site IS NULL")
        if batch_id is not None:
            where.append("d.batch_id = ?")
            params.append(batch_id)
        sql = f"SELECT {_RECORD_COLUMNS} FROM devices d WHERE {' AND '.join(where)} ORDER BY d.serial"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(0, limit))
        return [_record(row) for row in self._query(sql, params)]

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        rows = self._query(
            "SELECT batch_id, model, count, site, created_at, complete FROM batches WHERE batch_id = ?", (batch_id,)
        )
        return _batch(rows[0]) if rows else None

    def list_batches(self) -> Sequence[BatchRecord]:
        rows = self._query(
            "SELECT batch_id, model, count, site, created_at, complete FROM batches ORDER BY created_at, batch_id"
        )
        return [_batch(row) for row in rows]

    def bundle_key(self, batch_id: str) -> bytes | None:
        rows = self._query("SELECT bundle_key FROM batches WHERE batch_id = ?", (batch_id,))
        if not rows:
            return None
        return self._master_key.open(bytes(rows[0][0]), aad=_aad("batches", "bundle_key", batch_id))

    # -- changing ------------------------------------------------------------------------------------------------

    def reserve_serials(self, model: str, count: int) -> int:
        if count < 1:
            raise ValueError("reserve at least one serial number")
        with self._write() as c:
            row = c.execute("SELECT last FROM serial_counters WHERE model = ?", (model,)).fetchone()
            first = (0 if row is None else int(row[0])) + 1
            c.execute(
                "INSERT INTO serial_counters (model, last) VALUES (?, ?) "
                "ON CONFLICT (model) DO UPDATE SET last = excluded.last",
                (model, first + count - 1),
            )
        return first

    def add_batch(self, batch: BatchRecord, bundle_key: bytes) -> None:
        sealed = self._master_key.seal(bundle_key, aad=_aad("batches", "bundle_key", batch.batch_id))
        with self._write() as c:
            try:
                c.execute(
                    "INSERT INTO batches (batch_id, model, count, site, created_at, complete, bundle_key) "
                    "VALUES (?, ?, ?, ?, ?, 0, ?)",
                    (batch.batch_id, batch.model, batch.count, batch.site, batch.created_at, sealed),
                )
            except sqlite3.IntegrityError:
                raise BatchStateError(f"batch {batch.batch_id} exists") from None

    def add_many(self, devices: Sequence[FactoryDevice], *, now: int) -> None:
        if not devices:
            return
        seal, fingerprint = self._master_key.seal, self._fingerprint
        rows = [
            (
                d.serial,
                d.model,
                d.endpoint,
                d.psk_identity,
                seal(d.psk, aad=_aad("devices", "psk", d.serial)),
                fingerprint(d.psk),
                enrolment_digest(d.enrolment_id),
                d.batch_id,
                now,
                d.site,
                "unclaimed" if d.site is None else "factory",
                None if d.site is None else now,
            )
            for d in devices
        ]
        with self._write() as c:
            for batch_id in {d.batch_id for d in devices}:
                row = c.execute("SELECT complete FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
                if row is None or row[0]:
                    raise BatchStateError(f"batch {batch_id} does not exist or is complete")
            c.execute("SAVEPOINT add_many")
            try:
                c.executemany(_INSERT, rows)
            except sqlite3.IntegrityError:
                c.execute("ROLLBACK TO add_many")
                raise DuplicateDeviceError(self._conflicts(c, devices, rows)) from None
            c.execute("RELEASE add_many")

    def _conflicts(
        self, c: sqlite3.Connection, devices: Sequence[FactoryDevice], rows: Sequence[tuple[Any, ...]]
    ) -> list[Conflict]:
        """Which of ``devices`` repeat a value recorded before the call or earlier in it."""
        positions = {"serial": 0, "endpoint": 2, "psk_identity": 3, "psk": 5, "enrolment_id": 6}
        taken: dict[str, set[Any]] = {}
        for name, column in _UNIQUE_COLUMNS.items():
            values = [row[positions[name]] for row in rows]
            existing: set[Any] = set()
            for start in range(0, len(values), _IN_CHUNK):
                part = values[start : start + _IN_CHUNK]
                marks = ", ".join("?" * len(part))
                existing.update(
                    bytes(v) if isinstance(v, bytes | memoryview) else v
                    for (v,) in c.execute(f"SELECT {column} FROM devices WHERE {column} IN ({marks})", part)
                )
            # find_conflicts compares raw PSKs and enrolment digests; map fingerprints back to this call's PSKs.
            if name == "psk":
                taken[name] = {d.psk for d, row in zip(devices, rows, strict=True) if row[5] in existing}
            else:
                taken[name] = existing
        return find_conflicts(devices, taken)

    def complete_batch(self, batch_id: str) -> None:
        with self._write() as c:
            if c.execute("UPDATE batches SET complete = 1 WHERE batch_id = ?", (batch_id,)).rowcount != 1:
                raise BatchStateError(f"no batch {batch_id}")

    def discard_batch(self, batch_id: str) -> int:
        with self._write() as c:
            row = c.execute("SELECT complete FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
            if row is None:
                raise BatchStateError(f"no batch {batch_id}")
            if row[0]:
                raise BatchStateError(f"batch {batch_id} is complete; release its devices instead")
            removed = c.execute("DELETE FROM devices WHERE batch_id = ?", (batch_id,)).rowcount
            c.execute("DELETE FROM batches WHERE batch_id = ?", (batch_id,))
        return int(removed)

    def _visible(self, c: sqlite3.Connection, where: str, value: Any) -> DeviceRecord | None:
        row = c.execute(
            f"SELECT {_RECORD_COLUMNS} FROM devices d JOIN batches b ON b.batch_id = d.batch_id "
            f"WHERE {where} = ? AND b.complete",
            (value,),
        ).fetchone()
        return None if row is None else _record(row)

    def claim(self, enrolment_id: str, site: str, *, now: int) -> DeviceRecord:
        with self._write() as c:
            record = self._visible(c, "d.enrolment_digest", enrolment_digest(enrolment_id))
            if record is None or record.decommissioned_at is not None:
                raise UnknownDevice("no device has this enrolment id")
            if record.site is not None:
                raise AlreadyClaimed(f"device {record.serial} is already claimed")
            c.execute(
                "UPDATE devices SET site = ?, assignment = 'claimed', assigned_at = ? WHERE serial = ?",
                (site, now, record.serial),
            )
            claimed = self._visible(c, "d.serial", record.serial)
        assert claimed is not None
        return claimed

    def release(self, serial: str, *, now: int) -> DeviceRecord:
        with self._write() as c:
            record = self._visible(c, "d.serial", serial)
            if record is None:
                raise UnknownDevice(f"no device {serial}")
            if record.site is None:
                raise NotClaimed(f"device {serial} is not assigned to a site")
            c.execute(
                "UPDATE devices SET site = NULL, assignment = 'unclaimed', assigned_at = NULL, released_at = ?, "
                "revoked_at = ? WHERE serial = ?",
                (now, now, serial),
            )
            released = self._visible(c, "d.serial", serial)
        assert released is not None
        return released

    def mark_provisioned(self, serial: str, *, now: int) -> DeviceRecord:
        with self._write() as c:
            if c.execute("UPDATE devices SET revoked_at = NULL WHERE serial = ?", (serial,)).rowcount != 1:
                raise UnknownDevice(f"no device {serial}")
            row = c.execute(f"SELECT {_RECORD_COLUMNS} FROM devices d WHERE d.serial = ?", (serial,)).fetchone()
        return _record(row)

    def decommission(self, serial: str, *, now: int) -> DeviceRecord:
        with self._write() as c:
            changed = c.execute(
                # Both expressions see the row as it was: only the first decommission sets revoked_at.
                "UPDATE devices SET decommissioned_at = COALESCE(decommissioned_at, ?), "
                "revoked_at = CASE WHEN decommissioned_at IS NULL THEN COALESCE(revoked_at, ?) ELSE revoked_at END "
                "WHERE serial = ?",
                (now, now, serial),
            ).rowcount
            if changed != 1:
                raise UnknownDevice(f"no device {serial}")
            row = c.execute(f"SELECT {_RECORD_COLUMNS} FROM devices d WHERE d.serial = ?", (serial,)).fetchone()
        return _record(row)
