"""Credential bundles (issue #7): contents, the seal/open round trip, tamper detection, the key file, the batch
archive (readable by standard ZIP tools, ZIP64 past 65,535 entries) and hostile input."""

from __future__ import annotations

import io
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ace_core import cbor
from ace_core.keys import CoseKey
from ace_core.lwm2m.bundle import (
    MAGIC,
    BundleError,
    BundleKey,
    BundleLabel,
    BundleTemplate,
    DeviceBundle,
    format_key_file,
    parse_key_file,
    peek_header,
)
from ace_core.registry import CoseAlgorithm
from as_server.bootstrap.archive import ArchiveError, ArchiveWriter, read_member

FUZZ = settings(max_examples=400, deadline=None)
BATCH = "L1-20260323-153012-0000"
PSK = bytes.fromhex("000102030405060708090a0b0c0d0e0f")


def _bundle(**changes: object) -> DeviceBundle:
    fields: dict[str, object] = {
        "endpoint": "urn:dev:ops:ostiary-L1-00000001",
        "serial": "L1-00000001",
        "model": "L1",
        "psk_identity": b"bs-aaaaaaaaaaaaaaaa",
        "psk": PSK,
        "bootstrap_uri": "coaps://bs.example:5684",
    }
    fields.update(changes)
    return DeviceBundle(**fields)  # type: ignore[arg-type]


def test_contents_are_what_a_bootstrap_account_needs() -> None:
    as_key = CoseKey.generate(CoseAlgorithm.EDDSA).public().to_cbor()
    bundle = _bundle(as_public_key=as_key)
    decoded = cbor.loads(bundle.to_cbor())
    assert decoded == {
        BundleLabel.ENDPOINT: "urn:dev:ops:ostiary-L1-00000001",
        BundleLabel.SERIAL: "L1-00000001",
        BundleLabel.MODEL: "L1",
        BundleLabel.PSK_IDENTITY: b"bs-aaaaaaaaaaaaaaaa",
        BundleLabel.PSK: PSK,
        BundleLabel.BOOTSTRAP_URI: "coaps://bs.example:5684",
        BundleLabel.AS_PUBLIC_KEY: as_key,
    }
    assert list(decoded) == sorted(decoded)
    assert DeviceBundle.from_cbor(bundle.to_cbor()) == bundle
    assert CoseKey.from_cbor(decoded[BundleLabel.AS_PUBLIC_KEY]).to_cbor() == as_key


def test_psk_never_in_repr() -> None:
    assert PSK.hex() not in repr(_bundle()) and repr(PSK) not in repr(_bundle())
    key, raw = BundleKey.generate()
    assert raw.hex() not in repr(key)


def test_unknown_labels_round_trip() -> None:
    data = cbor.dumps({**cbor.loads(_bundle().to_cbor()), 99: "future", -1: b"x"})
    bundle = DeviceBundle.from_cbor(data)
    assert bundle.extra == {99: "future", -1: b"x"}
    assert DeviceBundle.from_cbor(bundle.to_cbor()) == bundle


@pytest.mark.parametrize(
    "changes",
    [
        {"psk": bytes(15)},
        {"psk": bytes(17)},
        {"psk_identity": b""},
        {"psk_identity": b"x" * 33},
        {"endpoint": ""},
        {"endpoint": "a\nb"},
        {"bootstrap_uri": "coaps://" + "x" * 250},
        {"as_public_key": b""},
        {"extra": {1: "clash"}},
    ],
)
def test_invalid_bundles_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(BundleError):
        _bundle(**changes)


def test_template_encodes_exactly_like_the_dataclass() -> None:
    as_key = CoseKey.generate(CoseAlgorithm.ES256).public().to_cbor()
    for key in (None, as_key):
        template = BundleTemplate(model="L1", bootstrap_uri="coaps://bs.example:5684", as_public_key=key)
        bundle = _bundle(as_public_key=key)
        encoded = template.encode(
            endpoint=bundle.endpoint, serial=bundle.serial, psk_identity=bundle.psk_identity, psk=bundle.psk
        )
        assert encoded == bundle.to_cbor()
    with pytest.raises(BundleError):
        BundleTemplate(model="L1", bootstrap_uri="")
    with pytest.raises(BundleError):
        template.encode(endpoint="e", serial="s", psk_identity=b"i", psk=bytes(8))


def test_seal_open_round_trip_and_header() -> None:
    key, raw = BundleKey.generate()
    bundle = _bundle()
    blob = key.seal(bundle, batch_id=BATCH)
    assert blob.startswith(MAGIC + b"\x01" + key.key_id)
    assert PSK not in blob  # encrypted
    header = peek_header(blob)
    assert (header.batch_id, header.serial, header.key_id) == (BATCH, "L1-00000001", key.key_id)
    assert key.open(blob) == bundle
    assert BundleKey(raw).open(blob) == bundle
    # The factory's fast path seals the same format.
    fast = key.sealer(BATCH)(bundle.serial, bundle.to_cbor())
    assert peek_header(fast) == header and key.open(fast) == bundle
    assert key.seal(bundle, batch_id=BATCH) != blob  # fresh nonce every time


def test_every_altered_byte_is_detected() -> None:
    key, _ = BundleKey.generate()
    blob = key.seal(_bundle(), batch_id=BATCH)
    for i in range(len(blob)):
        altered = bytearray(blob)
        altered[i] ^= 0x01
        with pytest.raises(BundleError):
            key.open(bytes(altered))
    for cut in range(len(blob)):
        with pytest.raises(BundleError):
            key.open(blob[:cut])
    with pytest.raises(BundleError):
        key.open(blob + b"\x00")


def test_wrong_key_and_swapped_serial_are_refused() -> None:
    key, _ = BundleKey.generate()
    other, _ = BundleKey.generate()
    blob = key.seal(_bundle(), batch_id=BATCH)
    with pytest.raises(BundleError, match="another bundle key"):
        other.open(blob)
    # A bundle moved into another device's slot: the header is bound by the tag ...
    moved = key.header(batch_id=BATCH, serial="L1-00000002") + blob[peek_header(blob).size :]
    with pytest.raises(BundleError, match="does not open"):
        key.open(moved)
    # ... and a header that names another serial than the sealed content is refused even if it opens.
    mismatch = key.sealer(BATCH)("L1-00000002", _bundle().to_cbor())
    with pytest.raises(BundleError, match="different serial"):
        key.open(mismatch)


def test_key_file_round_trip_and_errors() -> None:
    _, raw = BundleKey.generate()
    text = format_key_file(raw, batch_id=BATCH)
    assert BATCH in text and parse_key_file(text) == raw
    for bad in ("", "# only a comment\n", "abc\n", text + text, "AAAA\n"):
        with pytest.raises(BundleError):
            parse_key_file(bad)
    with pytest.raises(BundleError) as exc:
        parse_key_file("!" * 43)
    assert "!" * 10 not in str(exc.value)  # the key line is never quoted


# -- the archive ---------------------------------------------------------------------------------------------


def _archive(entries: int, tmp_path: Path) -> Path:
    path = tmp_path / "bundles.zip"
    with open(path, "wb") as fp, ArchiveWriter(fp, now=1774279812) as archive:
        for i in range(entries):
            archive.add(f"L1-{i:08d}.bundle", f"bundle {i}".encode())
        assert len(archive) == entries
    return path


def test_archive_is_a_standard_zip(tmp_path: Path) -> None:
    path = _archive(3, tmp_path)
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == ["L1-00000000.bundle", "L1-00000001.bundle", "L1-00000002.bundle"]
        info = archive.getinfo("L1-00000001.bundle")
        assert info.compress_type == zipfile.ZIP_STORED and info.date_time == (2026, 3, 23, 15, 30, 12)
        assert (info.external_attr >> 16) & 0o777 == 0o600
    assert read_member(path, "L1-00000002.bundle") == b"bundle 2"
    with pytest.raises(ArchiveError, match="no member"):
        read_member(path, "L1-00000009.bundle")


@pytest.mark.slow
def test_archive_past_65535_entries_uses_zip64(tmp_path: Path) -> None:
    path = _archive(65_540, tmp_path)
    with zipfile.ZipFile(path) as archive:
        assert len(archive.infolist()) == 65_540
        assert archive.read("L1-00065539.bundle") == b"bundle 65539"
    if shutil.which("unzip"):
        done = subprocess.run(["unzip", "-tq", str(path)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


def test_archive_refuses_bad_names(tmp_path: Path) -> None:
    archive = ArchiveWriter(io.BytesIO(), now=0)
    archive.add("a.bundle", b"")
    for name in ("a.bundle", "", "dir/x", "..\\x", "ü"):
        with pytest.raises((ArchiveError, UnicodeEncodeError)):
            archive.add(name, b"")


def test_reading_a_non_archive_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "x.zip"
    path.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ArchiveError, match="not a readable ZIP"):
        read_member(path, "x")


# -- hostile input -------------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_bundle_content_parser(data: bytes) -> None:
    try:
        bundle = DeviceBundle.from_cbor(data)
    except BundleError as exc:
        assert str(exc)
    else:
        assert DeviceBundle.from_cbor(bundle.to_cbor()) == bundle


@FUZZ
@given(
    st.dictionaries(
        st.integers(min_value=-3, max_value=9),
        st.one_of(st.text(max_size=40), st.binary(max_size=40), st.integers(), st.none(), st.booleans()),
        max_size=9,
    )
)
def test_fuzz_bundle_maps(obj: dict[int, object]) -> None:
    try:
        DeviceBundle.from_cbor(cbor.dumps(obj))
    except BundleError as exc:
        assert str(exc)


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_sealed_bundle_parser(data: bytes) -> None:
    key = BundleKey(bytes(32))
    for blob in (data, MAGIC + b"\x01" + key.key_id + data):
        try:
            peek_header(blob)
            key.open(blob)
        except BundleError as exc:
            assert str(exc)


@FUZZ
@given(st.text(max_size=200))
def test_fuzz_key_file_parser(text: str) -> None:
    try:
        assert len(parse_key_file(text)) == 32
    except BundleError as exc:
        assert str(exc)
