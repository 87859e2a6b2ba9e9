"""Factory batches (issue #7): every credential unique, guaranteed even when the random source repeats itself,
bundles and manifest consistent with the store, no PSK outside the bundles, all-or-nothing on failure, and a
small untimed run of the throughput benchmark."""

from __future__ import annotations

import importlib
import json
import logging
import os
import stat
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from ace_core.lwm2m.bundle import BundleKey, parse_key_file, peek_header
from ace_core.lwm2m.identifiers import MAX_PSK_IDENTITY_BYTES, PSK_BYTES, parse_enrolment_id
from as_server.bootstrap.device_db import DEVICE_DB_FILE, SqliteDeviceStore
from as_server.bootstrap.devices import Assignment, BootstrapRefusal, EditableDeviceStore, MemoryDeviceStore
from as_server.bootstrap.factory import (
    ARCHIVE_FILE,
    KEY_FILE,
    MANIFEST_CSV,
    MANIFEST_JSONL,
    STAGES,
    BatchSpec,
    FactoryError,
    check_bootstrap_uri,
    run_batch,
)
from as_server.bootstrap.manifest import parse_manifest_csv, parse_manifest_jsonl
from as_server.sealing import MasterKey

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_774_279_812
URI = "coaps://bs.example:5684"
PER_DEVICE = 36  # random bytes per device: PSK 16, identity 10, enrolment id 10


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EditableDeviceStore]:
    if request.param == "memory":
        yield MemoryDeviceStore()
        return
    sqlite_store = SqliteDeviceStore(tmp_path / DEVICE_DB_FILE, MasterKey.generate()[0])
    yield sqlite_store
    sqlite_store.close()


def _spec(count: int, **changes: object) -> BatchSpec:
    return BatchSpec(count=count, model="L1", bootstrap_uri=URI, **changes)  # type: ignore[arg-type]


def _open_all(directory: Path) -> dict[str, object]:
    key = BundleKey(parse_key_file((directory / KEY_FILE).read_text()))
    with zipfile.ZipFile(directory / ARCHIVE_FILE) as archive:
        return {name: key.open(archive.read(name)) for name in archive.namelist()}


def test_batch_output_store_and_manifest_agree(store: EditableDeviceStore, tmp_path: Path) -> None:
    progress: list[int] = []
    result = run_batch(_spec(250), store, now=NOW, out_dir=tmp_path / "b", progress=progress.append, chunk_size=100)
    out = result.directory
    assert progress == [100, 200, 250]
    assert (result.first_serial, result.last_serial) == ("L1-00000001", "L1-00000250")
    assert result.batch.complete and result.batch.count == 250 and result.redrawn == 0
    assert set(result.timings) == set(STAGES)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["BATCH.txt", ARCHIVE_FILE, KEY_FILE, MANIFEST_CSV, MANIFEST_JSONL]
    )
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in out.iterdir())
    assert not list(tmp_path.glob(".b.partial-*"))

    rows = parse_manifest_csv((out / MANIFEST_CSV).read_text())
    assert rows == parse_manifest_jsonl((out / MANIFEST_JSONL).read_text())
    bundles = _open_all(out)
    assert len(rows) == len(bundles) == 250
    for row in rows:
        record = store.get(row.serial)
        bundle = bundles[row.bundle]
        assert record is not None and record.endpoint == row.endpoint == bundle.endpoint  # type: ignore[attr-defined]
        assert record.psk_identity == row.psk_identity.encode() == bundle.psk_identity  # type: ignore[attr-defined]
        assert store.bootstrap_psk(record.psk_identity) == bundle.psk  # type: ignore[attr-defined]
        assert bundle.bootstrap_uri == URI and bundle.as_public_key is None  # type: ignore[attr-defined]
        assert store.by_enrolment_id(row.enrolment_id) == record
        assert record.site is None and record.assignment is Assignment.UNCLAIMED
        assert store.bootstrap_target(row.endpoint) is BootstrapRefusal.UNCLAIMED
    for field in ("serial", "endpoint", "enrolment_id", "psk_identity"):
        assert len({getattr(r, field) for r in rows}) == 250, field
    psks = [b.psk for b in bundles.values()]  # type: ignore[attr-defined]
    assert len(set(psks)) == 250 and all(len(p) == PSK_BYTES for p in psks)
    assert all(len(r.psk_identity) <= MAX_PSK_IDENTITY_BYTES for r in rows)
    assert store.bundle_key(result.batch.batch_id) == parse_key_file((out / KEY_FILE).read_text())
    assert result.batch.batch_id in (out / "BATCH.txt").read_text()


def test_no_psk_in_manifest_readme_or_logs(
    store: EditableDeviceStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    result = run_batch(_spec(50, site="building-a"), store, now=NOW, out_dir=tmp_path / "b")
    psks = [b.psk for b in _open_all(result.directory).values()]  # type: ignore[attr-defined]
    texts = [(result.directory / name).read_bytes() for name in (MANIFEST_CSV, MANIFEST_JSONL, "BATCH.txt")]
    texts.append(caplog.text.encode())
    texts.append(repr(result).encode())
    for psk in psks:
        for text in texts:
            for form in (psk, psk.hex().encode(), psk.hex().upper().encode()):
                assert form not in text
    archive = (result.directory / ARCHIVE_FILE).read_bytes()
    assert not any(psk in archive for psk in psks)  # sealed


def test_pre_assigned_batch_is_bootstrappable(store: EditableDeviceStore, tmp_path: Path) -> None:
    as_key = bytes.fromhex("a401010327200621582000")  # any public COSE_Key bytes; carried opaque
    result = run_batch(_spec(3, site="building-a", vendor="00A0C6", as_public_key=as_key), store, now=NOW,
                       out_dir=tmp_path / "b")  # fmt: skip
    rows = parse_manifest_jsonl((result.directory / MANIFEST_JSONL).read_text())
    assert all(r.site == "building-a" and r.endpoint.startswith("urn:dev:ops:00A0C6-L1-") for r in rows)
    assert store.bootstrap_target(rows[0].endpoint) == "building-a"
    assert all(b.as_public_key == as_key for b in _open_all(result.directory).values())  # type: ignore[attr-defined]


def test_consecutive_batches_continue_the_serials(store: EditableDeviceStore, tmp_path: Path) -> None:
    first = run_batch(_spec(5), store, now=NOW, out_dir=tmp_path / "one")
    second = run_batch(_spec(5), store, now=NOW + 1, out_dir=tmp_path / "two")
    other = run_batch(BatchSpec(count=2, model="L2", bootstrap_uri=URI), store, now=NOW, out_dir=tmp_path / "three")
    assert (first.last_serial, second.first_serial, other.first_serial) == ("L1-00000005", "L1-00000006", "L2-00000001")
    assert len(store.list_batches()) == 3


def test_default_directory_is_named_after_the_batch(store: EditableDeviceStore, tmp_path: Path) -> None:
    result = run_batch(_spec(2), store, now=NOW, parent=tmp_path)
    assert result.directory == tmp_path / result.batch.batch_id
    assert result.batch.batch_id.startswith("L1-20260323-153012-")


# -- forced collisions ---------------------------------------------------------------------------------------


class Replaying:
    """A random source that first replays ``replay`` (the device bytes an earlier batch drew), then draws fresh
    bytes; it records the device bytes it draws."""

    def __init__(self, replay: bytes = b"") -> None:
        self.replay = replay
        self.drawn: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        if n % PER_DEVICE:  # batch id, bundle key
            return os.urandom(n)
        if len(self.replay) >= n:
            data, self.replay = self.replay[:n], self.replay[n:]
            return data
        data = os.urandom(n)
        self.drawn.append(data)
        return data


def test_collisions_within_a_chunk_are_redrawn(store: EditableDeviceStore, tmp_path: Path) -> None:
    calls = {"n": 0}

    def stuck_at_first(n: int) -> bytes:
        calls["n"] += 1
        if n == 8 * PER_DEVICE and calls["n"] <= 3:  # the first chunk: eight identical devices
            return os.urandom(PER_DEVICE) * 8
        return os.urandom(n)

    result = run_batch(_spec(8), store, now=NOW, out_dir=tmp_path / "b", random=stuck_at_first, chunk_size=8)
    assert result.redrawn == 7
    rows = parse_manifest_csv((result.directory / MANIFEST_CSV).read_text())
    assert len({r.psk_identity for r in rows}) == len({r.enrolment_id for r in rows}) == 8
    assert len({b.psk for b in _open_all(result.directory).values()}) == 8  # type: ignore[attr-defined]


def test_collisions_with_recorded_devices_are_redrawn(store: EditableDeviceStore, tmp_path: Path) -> None:
    source = Replaying()
    run_batch(_spec(20), store, now=NOW, out_dir=tmp_path / "one", random=source)
    # The second batch's source first replays the first batch's bytes: every device collides with a recorded one.
    replay = Replaying(b"".join(source.drawn))
    result = run_batch(_spec(20), store, now=NOW, out_dir=tmp_path / "two", random=replay)
    assert result.redrawn == 20
    everything = store.list_devices()
    assert len(everything) == 40
    assert len({d.psk_identity for d in everything}) == 40
    rows = parse_manifest_csv((tmp_path / "one" / MANIFEST_CSV).read_text())
    rows += parse_manifest_csv((tmp_path / "two" / MANIFEST_CSV).read_text())
    assert len({r.enrolment_id for r in rows}) == 40
    psks = {store.bootstrap_psk(d.psk_identity) for d in everything}
    assert len(psks) == 40


def test_a_source_that_keeps_repeating_fails_the_batch_and_keeps_nothing(
    store: EditableDeviceStore, tmp_path: Path
) -> None:
    constant: Callable[[int], bytes] = lambda n: b"\x42" * n  # noqa: E731
    with pytest.raises(FactoryError, match="kept repeating"):
        run_batch(_spec(5), store, now=NOW, out_dir=tmp_path / "b", random=constant, max_attempts=4)
    assert store.list_devices() == [] and store.list_batches() == []
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.partial-*"))


def test_a_failure_half_way_discards_the_batch(
    store: EditableDeviceStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import as_server.bootstrap.factory as factory

    def broken(*args: object, **kwargs: object) -> object:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(factory, "format_key_file", broken)
    with pytest.raises(OSError, match="No space"):
        run_batch(_spec(30), store, now=NOW, out_dir=tmp_path / "b", chunk_size=10)
    assert store.list_devices() == [] and store.list_batches() == []
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.partial-*"))
    monkeypatch.undo()
    result = run_batch(_spec(3), store, now=NOW, out_dir=tmp_path / "b")  # serials are not reused
    assert result.first_serial == "L1-00000031"


def test_existing_output_is_never_overwritten(store: EditableDeviceStore, tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "precious").write_text("x")
    with pytest.raises(FactoryError, match="exists"):
        run_batch(_spec(2), store, now=NOW, out_dir=tmp_path / "b")
    (tmp_path / "key").write_text("x")
    with pytest.raises(FactoryError, match="exists"):
        run_batch(_spec(2), store, now=NOW, out_dir=tmp_path / "c", key_file=tmp_path / "key")
    assert store.list_devices() == []
    (tmp_path / "empty").mkdir()
    result = run_batch(_spec(2), store, now=NOW, out_dir=tmp_path / "empty", key_file=tmp_path / "elsewhere.key")
    assert (tmp_path / "elsewhere.key").exists() and not (tmp_path / "empty" / KEY_FILE).exists()
    assert result.key_file == tmp_path / "elsewhere.key"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"count": 0}, "count"),
        ({"model": "L-1"}, "model"),
        ({"vendor": "a b"}, "vendor"),
        ({"site": "a*"}, "site"),
        ({"bootstrap_uri": "coap://bs.example"}, "development"),
        ({"bootstrap_uri": "https://bs.example"}, "coaps://"),
        ({"bootstrap_uri": "coaps://"}, "host"),
        ({"bootstrap_uri": "coaps://u:p@bs.example"}, "user"),
        ({"bootstrap_uri": "coaps://bs.example:99999"}, "invalid"),
    ],
)
def test_invalid_specs(changes: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"count": 1, "model": "L1", "bootstrap_uri": URI, **changes}
    with pytest.raises(FactoryError, match=message):
        BatchSpec(**fields)  # type: ignore[arg-type]


def test_plain_coap_only_when_allowed() -> None:
    assert check_bootstrap_uri("coap://127.0.0.1:5683", allow_plain=True)
    assert check_bootstrap_uri("coaps+tcp://[::1]:5684")


def test_bundle_headers_name_batch_and_serial(store: EditableDeviceStore, tmp_path: Path) -> None:
    result = run_batch(_spec(3), store, now=NOW, out_dir=tmp_path / "b")
    with zipfile.ZipFile(result.directory / ARCHIVE_FILE) as archive:
        headers = [peek_header(archive.read(n)) for n in archive.namelist()]
    assert [h.serial for h in headers] == ["L1-00000001", "L1-00000002", "L1-00000003"]
    assert {h.batch_id for h in headers} == {result.batch.batch_id}


def test_enrolment_ids_in_the_manifest_parse(store: EditableDeviceStore, tmp_path: Path) -> None:
    result = run_batch(_spec(40), store, now=NOW, out_dir=tmp_path / "b")
    for row in parse_manifest_jsonl((result.directory / MANIFEST_JSONL).read_text()):
        assert parse_enrolment_id(row.enrolment_id.lower().replace("-", " ")) == row.enrolment_id


# -- throughput sanity (not timed) ---------------------------------------------------------------------------


def test_a_few_thousand_devices_in_a_sqlite_store(tmp_path: Path) -> None:
    """The factory path at a size where chunking and store transactions matter; correctness only."""
    with SqliteDeviceStore(tmp_path / DEVICE_DB_FILE, MasterKey.generate()[0]) as store:
        result = run_batch(_spec(3_000), store, now=NOW, out_dir=tmp_path / "b", store_chunk=1_000)
        assert len(store.list_devices(unclaimed=True)) == 3_000
    with zipfile.ZipFile(result.directory / ARCHIVE_FILE) as archive:
        assert len(archive.namelist()) == 3_000 and archive.testzip() is None
    assert len((result.directory / MANIFEST_CSV).read_text().splitlines()) == 3_001


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("benchmarks.bench_bootstrap")


def test_benchmark_runs_end_to_end(bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    argv = ["--part", "factory", "--sizes", "50,120", "--dir", str(tmp_path), "--json", str(out)]
    assert bench.main(argv) == 0
    text = capsys.readouterr().out
    assert "goal: 100,000 devices in < 60 s" in text and "extrapolated from 120 devices" in text
    summary = json.loads(out.read_text())
    assert [r["devices"] for r in summary["runs"]] == [50, 120]
    assert set(summary["runs"][0]["stages"]) == set(STAGES)
    assert summary["goal"]["pass"] in ("PASS", "FAIL")
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]  # temporary deployments removed
