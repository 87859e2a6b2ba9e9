"""Factory batches (issue #7, "Factory side"): N devices with unique bootstrap credentials, recorded in the device
store, one sealed credential bundle per device and a manifest for the line. ``ostiary factory batch`` runs
:func:`run_batch`; ``benchmarks/bench_bootstrap.py`` times it.

Per device: a serial number from the store's per-model counter, the Endpoint Client Name derived from it, a
128-bit PSK, an 80-bit PSK identity and a 75-bit enrolment id (formats in :mod:`.identifiers`), all random bytes
from one ``random(n)`` call per chunk (``os.urandom`` unless a test injects another source).

**Uniqueness.** Each chunk goes to :meth:`~.devices.EditableDeviceStore.add_many`, which refuses the whole chunk
if any device repeats a serial, endpoint, identity, PSK or enrolment id of an earlier device -- in the store, in
this batch or in the chunk -- and names them; those devices get fresh random values and the chunk is offered
again. A source that keeps repeating itself (a broken generator) makes the batch fail after ``max_attempts``
instead of looping; a repeated serial or endpoint (which random values cannot fix) fails it at once.

**All or nothing.** The batch is recorded *pending* first; the archive and manifests are written into a hidden
staging directory next to ``out_dir``, which is renamed to ``out_dir`` and the batch marked complete only when
everything is written and synced. Any failure -- or Ctrl-C -- discards the batch's devices and the staging
directory. A process killed outright leaves a pending batch whose devices can be neither claimed nor
bootstrapped (``ostiary factory discard-batch`` removes it) and a ``.partial`` directory.

**Output** (``out_dir``, mode 0700, files 0600): ``bundles.zip`` (one sealed bundle per device, see
:mod:`.archive` for why one archive rather than 100,000 files), ``manifest.csv`` and ``manifest.jsonl``
(:mod:`.manifest`), ``bundle.key`` (the batch key, :mod:`.bundle`; ``key_file`` puts it elsewhere) and
``BATCH.txt`` (what is what, for the people on the line).

**Cost.** 100,000 devices must take under a minute. Per device the work is a few microseconds of Python, two
AES-GCM seals (bundle under the batch key, PSK under the master key), a keyed BLAKE2b (the store's PSK fingerprint)
and a SHA-256 (the enrolment id's digest); the store takes the devices in large transactions
(:data:`DEFAULT_STORE_CHUNK`); the archive and manifests are appended to, and synced once at the end.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Final, TextIO
from urllib.parse import urlsplit

from ace_core.lwm2m.bundle import BundleKey, BundleTemplate, format_key_file
from ace_core.lwm2m.identifiers import (
    ENROLMENT_RANDOM_BYTES,
    IDENTITY_RANDOM_BYTES,
    MAX_SEQUENCE,
    PSK_BYTES,
    InvalidName,
    check_model,
    check_site,
    check_vendor,
    make_batch_id,
    make_endpoint,
    make_enrolment_id,
    make_psk_identity,
    make_serial,
)
from as_server.bootstrap.archive import ArchiveWriter
from as_server.bootstrap.devices import (
    BatchRecord,
    BatchStateError,
    DuplicateDeviceError,
    EditableDeviceStore,
    FactoryDevice,
)
from as_server.bootstrap.manifest import ManifestRow, ManifestWriter

__all__ = [
    "DEFAULT_CHUNK",
    "DEFAULT_STORE_CHUNK",
    "ARCHIVE_FILE",
    "DEFAULT_VENDOR",
    "KEY_FILE",
    "MANIFEST_CSV",
    "MANIFEST_JSONL",
    "MAX_BATCH",
    "STAGES",
    "BatchResult",
    "BatchSpec",
    "FactoryError",
    "RandomSource",
    "bundle_member",
    "check_bootstrap_uri",
    "run_batch",
]

RandomSource = Callable[[int], bytes]

#: Placeholder organisation in endpoint names; a manufacturer gives its IEEE OUI (``--vendor``).
DEFAULT_VENDOR: Final = "ostiary"
MAX_BATCH: Final = 1_000_000
#: Devices per :meth:`~.devices.EditableDeviceStore.add_many` call (one store transaction; see
#: :mod:`.device_db` for why large).
DEFAULT_STORE_CHUNK: Final = 50_000
#: Devices per progress update (bundles sealed and written, manifest rows appended).
DEFAULT_CHUNK: Final = 1000
#: How often one chunk is offered to the store before a repeating random source fails the batch.
DEFAULT_MAX_ATTEMPTS: Final = 8
MANIFEST_CSV: Final = "manifest.csv"
MANIFEST_JSONL: Final = "manifest.jsonl"
KEY_FILE: Final = "bundle.key"
README_FILE: Final = "BATCH.txt"
#: The bundle archive in the batch directory (:mod:`.archive`).
ARCHIVE_FILE: Final = "bundles.zip"
#: Where the time goes, as :attr:`BatchResult.timings` reports it.
STAGES: Final = ("generate", "store", "seal", "write", "manifest", "finish")
_PER_DEVICE = PSK_BYTES + IDENTITY_RANDOM_BYTES + ENROLMENT_RANDOM_BYTES
_SECURE_SCHEMES = ("coaps", "coaps+tcp")
_PLAIN_SCHEMES = ("coap", "coap+tcp")
_MAX_URI_BYTES = 255  # Security /0 resource 0 (ref. §2.1)


class FactoryError(Exception):
    """A batch could not be made (the message says why); nothing of it was kept."""


def check_bootstrap_uri(uri: str, *, allow_plain: bool = False) -> str:
    """The bootstrap server URI a bundle carries: ``coaps://host[:port]`` (or ``coaps+tcp``), since a bundle's PSK
    is for DTLS; ``coap://`` only with ``allow_plain`` (development). :raises FactoryError:"""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise FactoryError(f"invalid bootstrap URI {uri!r}: {exc}") from None
    schemes = _SECURE_SCHEMES + (_PLAIN_SCHEMES if allow_plain else ())
    if parts.scheme not in schemes:
        hint = "" if allow_plain or parts.scheme not in _PLAIN_SCHEMES else " (plain CoAP only for development)"
        raise FactoryError(f"bootstrap URI must be {' or '.join(s + '://' for s in schemes)}...{hint}")
    if not parts.hostname or parts.username or parts.password or parts.query or parts.fragment:
        raise FactoryError("bootstrap URI must be scheme://host[:port][/path], without user, query or fragment")
    if port == 0 or len(uri.encode()) > _MAX_URI_BYTES or not uri.isprintable():
        raise FactoryError(f"bootstrap URI must be printable, at most {_MAX_URI_BYTES} bytes, with a non-zero port")
    return uri


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchSpec:
    """What to make. :raises FactoryError: a value out of range or of the wrong form."""

    count: int
    model: str
    bootstrap_uri: str
    vendor: str = DEFAULT_VENDOR
    #: Pre-assign every device to this site; ``None`` leaves them unclaimed.
    site: str | None = None
    #: The AS's token-signing public key (CBOR COSE_Key) to put in every bundle.
    as_public_key: bytes | None = None
    allow_plain: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_BATCH:
            raise FactoryError(f"count must be 1..{MAX_BATCH:,}")
        try:
            check_model(self.model)
            check_vendor(self.vendor)
            if self.site is not None:
                check_site(self.site)
        except InvalidName as exc:
            raise FactoryError(str(exc)) from None
        check_bootstrap_uri(self.bootstrap_uri, allow_plain=self.allow_plain)


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchResult:
    """A completed batch and where its files are."""

    batch: BatchRecord
    first_serial: str
    last_serial: str
    directory: Path
    key_file: Path
    #: Devices that got fresh random values after the store refused a repeated one.
    redrawn: int
    #: Seconds spent per :data:`STAGES` entry.
    timings: Mapping[str, float] = field(default_factory=dict)


def bundle_member(serial: str) -> str:
    """A device's bundle's name in the batch's archive (:data:`ARCHIVE_FILE`)."""
    return f"{serial}.bundle"


class _Clock:
    """Accumulates wall time per stage."""

    def __init__(self) -> None:
        self.spent = dict.fromkeys(STAGES, 0.0)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.spent[name] += time.perf_counter() - started


def _manifest_row(device: FactoryDevice) -> ManifestRow:
    return ManifestRow(
        serial=device.serial,
        model=device.model,
        endpoint=device.endpoint,
        enrolment_id=device.enrolment_id,
        psk_identity=device.psk_identity.decode("ascii"),
        site=device.site,
        batch=device.batch_id,
        bundle=bundle_member(device.serial),
    )


def _write_private(path: Path | str, data: bytes, *, fsync: bool = True) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _open_private_binary(path: Path) -> BinaryIO:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return open(fd, "wb", buffering=1 << 20)


def _open_private_text(path: Path) -> TextIO:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return open(fd, "w", encoding="utf-8", newline="")


def _check_target(path: Path, what: str) -> None:
    if path.exists() or path.is_symlink():
        if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
            return
        raise FactoryError(f"{what} {path} exists; choose another")


class _Generator:
    """Draws the random part of devices: one ``random()`` call per chunk."""

    def __init__(self, spec: BatchSpec, batch_id: str, random: RandomSource) -> None:
        self._spec = spec
        self._batch_id = batch_id
        self._random = random

    def _draw(self, n: int) -> bytes:
        data = self._random(n * _PER_DEVICE)
        if not isinstance(data, bytes) or len(data) != n * _PER_DEVICE:
            raise FactoryError("the random source returned the wrong number of bytes")
        return data

    def devices(self, sequences: range) -> list[FactoryDevice]:
        data = self._draw(len(sequences))
        return [self._device(seq, data, i * _PER_DEVICE) for i, seq in enumerate(sequences)]

    def redraw(self, sequence: int) -> FactoryDevice:
        return self._device(sequence, self._draw(1), 0)

    def _device(self, sequence: int, data: bytes, offset: int) -> FactoryDevice:
        spec = self._spec
        serial = make_serial(spec.model, sequence)
        psk_end = offset + PSK_BYTES
        identity_end = psk_end + IDENTITY_RANDOM_BYTES
        return FactoryDevice(
            serial=serial,
            model=spec.model,
            endpoint=make_endpoint(spec.vendor, serial),
            psk_identity=make_psk_identity(data[psk_end:identity_end]),
            psk=data[offset:psk_end],
            enrolment_id=make_enrolment_id(data[identity_end : identity_end + ENROLMENT_RANDOM_BYTES]),
            batch_id=self._batch_id,
            site=spec.site,
        )


def _store_chunk(
    store: EditableDeviceStore,
    devices: list[FactoryDevice],
    first_sequence: int,
    generator: _Generator,
    *,
    now: int,
    max_attempts: int,
) -> int:
    """Offer ``devices`` to the store until it takes them all; returns how many were drawn again."""
    redrawn = 0
    for _attempt in range(max_attempts):
        try:
            store.add_many(devices, now=now)
            return redrawn
        except DuplicateDeviceError as exc:
            for conflict in exc.conflicts:
                device = devices[conflict.index]
                if conflict.field in ("serial", "endpoint"):
                    raise FactoryError(
                        f"{conflict.field} of {device.serial} is already recorded; the store's serial counter for "
                        f"model {device.model} is behind its devices"
                    ) from None
                devices[conflict.index] = generator.redraw(first_sequence + conflict.index)
                redrawn += 1
    raise FactoryError(
        f"the random source kept repeating values after {max_attempts} attempts; refusing to make devices with it"
    )


def _readme(spec: BatchSpec, batch: BatchRecord, first: str, last: str, key_file: Path, out_dir: Path) -> str:
    created = datetime.fromtimestamp(batch.created_at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    key_note = KEY_FILE if key_file.parent == out_dir else f"{key_file} (written outside this directory)"
    return (
        f"Ostiary factory batch {batch.batch_id}\n"
        f"model {spec.model}, {spec.count} devices, serials {first} .. {last}, created {created}\n"
        f"site: {spec.site or '(none: devices are unclaimed until claimed by their enrolment id)'}\n"
        f"bootstrap server: {spec.bootstrap_uri}\n\n"
        f"{MANIFEST_CSV}, {MANIFEST_JSONL}  one row per device: serial, model, endpoint, enrolment_id,\n"
        "    psk_identity, site, batch, bundle (no keys; but an enrolment id claims an unclaimed device)\n"
        f"{ARCHIVE_FILE}  one member SERIAL.bundle per device (ZIP, stored), sealed (AES-256-GCM) under the batch\n"
        "    key: unzip -p bundles.zip L1-00000001.bundle > L1-00000001.bundle\n"
        f"{key_note}  the batch key: keep it apart from the bundles, destroy both after flashing\n\n"
        "Open a bundle: ostiary factory show-bundle bundles.zip --serial SERIAL --key bundle.key [--json]\n"
        "Format: 'OSTB' 0x01 keyid(4) len batch len serial | nonce(12) | AES-256-GCM ciphertext+tag,\n"
        "associated data = everything before the nonce; plaintext = CBOR map (ace_core/lwm2m/bundle.py).\n"
    )


def run_batch(
    spec: BatchSpec,
    store: EditableDeviceStore,
    *,
    now: int,
    out_dir: Path | None = None,
    parent: Path | None = None,
    key_file: Path | None = None,
    random: RandomSource = os.urandom,
    progress: Callable[[int], None] | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    store_chunk: int = DEFAULT_STORE_CHUNK,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> BatchResult:
    """Make the batch ``spec`` describes (see the module documentation).

    :param out_dir: the batch directory to create (it must not exist, or be empty); default ``parent/BATCH_ID``.
    :param parent: where ``out_dir`` goes by default (default: the current directory).
    :param key_file: where the batch key goes (default ``out_dir/bundle.key``).
    :param progress: called with the number of devices done after each chunk.
    :raises FactoryError: the output exists, the random source repeats itself, ...; nothing was kept.
    """
    if chunk_size < 1 or store_chunk < 1:
        raise ValueError("chunk sizes must be positive")
    batch_id = make_batch_id(spec.model, now, random(3))
    out_dir = Path(out_dir) if out_dir is not None else (Path.cwd() if parent is None else Path(parent)) / batch_id
    key_path = Path(key_file) if key_file is not None else out_dir / KEY_FILE
    _check_target(out_dir, "output directory")
    if key_path.parent != out_dir:
        _check_target(key_path, "key file")
    clock = _Clock()

    first_sequence = store.reserve_serials(spec.model, spec.count)
    last_sequence = first_sequence + spec.count - 1
    if last_sequence > MAX_SEQUENCE:
        raise FactoryError(f"model {spec.model} has run out of serial numbers (at most {MAX_SEQUENCE:,})")
    bundle_key, raw_key = BundleKey.generate(random)
    batch = BatchRecord(
        batch_id=batch_id, model=spec.model, count=spec.count, site=spec.site, created_at=now, complete=False
    )
    try:
        store.add_batch(batch, raw_key)
    except BatchStateError:
        raise FactoryError(f"batch id {batch_id} is taken; run the batch again") from None

    staging = out_dir.parent / f".{out_dir.name}.partial-{secrets.token_hex(4)}"
    wrote_key_outside = renamed = False
    try:
        staging.mkdir(mode=0o700, parents=True)
        generator = _Generator(spec, batch_id, random)
        encode = BundleTemplate(
            model=spec.model, bootstrap_uri=spec.bootstrap_uri, as_public_key=spec.as_public_key
        ).encode
        seal = bundle_key.sealer(batch_id)
        redrawn = 0
        with (
            _open_private_binary(staging / ARCHIVE_FILE) as archive_file,
            _open_private_text(staging / MANIFEST_CSV) as csv_file,
            _open_private_text(staging / MANIFEST_JSONL) as jsonl_file,
        ):
            archive = ArchiveWriter(archive_file, now=now)
            manifest = ManifestWriter(csv_file, jsonl_file)
            for start in range(first_sequence, last_sequence + 1, store_chunk):
                stored = range(start, min(start + store_chunk, last_sequence + 1))
                with clock.stage("generate"):
                    devices = generator.devices(stored)
                with clock.stage("store"):
                    redrawn += _store_chunk(store, devices, start, generator, now=now, max_attempts=max_attempts)
                for offset in range(0, len(devices), chunk_size):
                    part = devices[offset : offset + chunk_size]
                    with clock.stage("seal"):
                        sealed = [
                            seal(
                                d.serial,
                                encode(endpoint=d.endpoint, serial=d.serial, psk_identity=d.psk_identity, psk=d.psk),
                            )
                            for d in part
                        ]
                    with clock.stage("write"):
                        for device, blob in zip(part, sealed, strict=True):
                            archive.add(bundle_member(device.serial), blob)
                    with clock.stage("manifest"):
                        manifest.write([_manifest_row(d) for d in part])
                    if progress is not None:
                        progress(stored.start - first_sequence + offset + len(part))
            with clock.stage("finish"):
                archive.close()
                for fp in (archive_file, csv_file, jsonl_file):
                    fp.flush()
                    os.fsync(fp.fileno())
        with clock.stage("finish"):
            first_serial, last_serial = make_serial(spec.model, first_sequence), make_serial(spec.model, last_sequence)
            key_text = format_key_file(raw_key, batch_id=batch_id).encode("ascii")
            if key_path.parent == out_dir:
                _write_private(staging / key_path.name, key_text)
            else:
                _write_private(key_path, key_text)
                wrote_key_outside = True
            readme = _readme(spec, batch, first_serial, last_serial, key_path, out_dir)
            _write_private(staging / README_FILE, readme.encode("utf-8"))
            if out_dir.exists():
                out_dir.rmdir()  # empty (checked above); rename() cannot replace a directory on every platform
            staging.rename(out_dir)
            renamed = True
            store.complete_batch(batch_id)
    except BaseException:
        with contextlib.suppress(Exception):
            store.discard_batch(batch_id)
        shutil.rmtree(out_dir if renamed else staging, ignore_errors=True)
        if wrote_key_outside:
            key_path.unlink(missing_ok=True)
        raise
    done = store.get_batch(batch_id) or batch
    return BatchResult(
        batch=done,
        first_serial=first_serial,
        last_serial=last_serial,
        directory=out_dir,
        key_file=key_path,
        redrawn=redrawn,
        timings=dict(clock.spent),
    )
