"""``ostiary factory`` end to end (issue #7): batch, show-bundle, claim (first wins, also between processes),
release, list, batches, discard-batch; one-line errors; the PSK only where it is asked for."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ace_core.keys import CoseKey
from ace_core.lwm2m.bundle import BundleKey, parse_key_file
from ace_core.registry import CoseAlgorithm
from as_server.bootstrap.manifest import parse_manifest_csv
from as_server.sealing import MasterKey
from ostiary.cli import main
from ostiary.progress import Progress

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("OSTIARY_HOME", "OSTIARY_MASTER_KEY", "OSTIARY_DATABASE_URL", "OSTIARY_COAP_HOST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    MasterKey.create_file(home / "master.key")
    return home


def run(home: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["factory", "--home", str(home), *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def batch(home: Path, capsys: pytest.CaptureFixture[str], *extra: str, out: str = "b1") -> Path:
    code, stdout, stderr = run(home, capsys, "batch", "--count", "6", "--model", "L1", "--out", out, *extra)
    assert code == 0, stderr
    return Path(out).resolve()


def psks_of(directory: Path) -> list[bytes]:
    key = BundleKey(parse_key_file((directory / "bundle.key").read_text()))
    with zipfile.ZipFile(directory / "bundles.zip") as archive:
        return [key.open(archive.read(name)).psk for name in archive.namelist()]


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["factory", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for command in ("batch", "show-bundle", "claim", "release", "list", "batches", "discard-batch"):
        assert command in out
    assert "manufacturing time" in out and "not implemented" not in out


def test_batch_writes_and_reports_without_the_psk(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(home, capsys, "batch", "--count", "6", "--model", "L1", "--out", "b1")
    assert code == 0, err
    directory = Path("b1").resolve()
    assert out.startswith("batch L1-") and "6 devices of model L1" in out
    assert "serials L1-00000001 .. L1-00000006, unclaimed" in out
    assert "coaps://127.0.0.1:5684" in out and str(home / "devices.db") in out
    assert "loopback" in err  # the default URI is flagged
    assert "[" not in err  # stderr is not a terminal: no progress bar
    for psk in psks_of(directory):
        assert psk.hex() not in out + err
    rows = parse_manifest_csv((directory / "manifest.csv").read_text())
    assert [r.serial for r in rows] == [f"L1-0000000{i}" for i in range(1, 7)]


@pytest.mark.parametrize(
    ("env", "uri"),
    [
        ({"OSTIARY_BOOTSTRAP_DTLS_PORT": "5999"}, "coaps://127.0.0.1:5999"),
        ({"OSTIARY_BOOTSTRAP_SERVER_URI": "coaps://as.example.com:5684"}, "coaps://as.example.com:5684"),
        ({"OSTIARY_BOOTSTRAP_DTLS_PORT": "0", "OSTIARY_BOOTSTRAP_PLAIN_PORT": "5997"}, "coap://127.0.0.1:5997"),
    ],
    ids=["dtls-port", "server-uri", "plain-only"],
)
def test_the_default_bootstrap_uri_follows_the_as_settings(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str], uri: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    extra = ("--plain-coap",) if uri.startswith("coap:") else ()
    directory = batch(home, capsys, *extra)
    key = BundleKey(parse_key_file((directory / "bundle.key").read_text()))
    with zipfile.ZipFile(directory / "bundles.zip") as archive:
        assert {key.open(archive.read(name)).bootstrap_uri for name in archive.namelist()} == {uri}


def test_batch_help_names_the_settings_the_default_uri_follows(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["factory", "batch", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "bootstrap_server_uri" in out and "<bootstrap_dtls_port>" in out and "bootstrap_plain_port" in out


def test_show_bundle_from_archive_directory_file_and_store(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = batch(home, capsys)
    key = str(directory / "bundle.key")
    code, out, err = run(home, capsys, "show-bundle", str(directory / "bundles.zip"), "--serial", "L1-00000003",
                         "--key", key)  # fmt: skip
    assert code == 0, err
    psk = psks_of(directory)[2]
    assert "serial:        L1-00000003" in out and psk.hex() in out and "PSK" in err  # warned
    code, out_json, _ = run(home, capsys, "show-bundle", str(directory), "--serial", "L1-00000003", "--json")
    view = json.loads(out_json)  # no --key: from the device store
    assert view["psk_hex"] == psk.hex() and view["endpoint"] == "urn:dev:ops:ostiary-L1-00000003"
    assert view["bootstrap_uri"] == "coaps://127.0.0.1:5684" and view["psk_identity"].startswith("bs-")
    single = directory.parent / "one.bundle"
    with zipfile.ZipFile(directory / "bundles.zip") as archive:
        single.write_bytes(archive.read("L1-00000003.bundle"))
    code, out_single, _ = run(home, capsys, "show-bundle", str(single), "--key", key, "--json")
    assert code == 0 and json.loads(out_single) == view


def test_show_bundle_errors(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = batch(home, capsys)
    archive = str(directory / "bundles.zip")
    code, _, err = run(home, capsys, "show-bundle", archive)
    assert code == 2 and "--serial" in err
    code, _, err = run(home, capsys, "show-bundle", archive, "--serial", "L1-00000099")
    assert code == 1 and "no member" in err
    other = directory.parent / "other.key"
    other.write_text("# another batch\n" + "A" * 43 + "\n")
    code, _, err = run(home, capsys, "show-bundle", archive, "--serial", "L1-00000001", "--key", str(other))
    assert code == 1 and "another bundle key" in err
    with zipfile.ZipFile(directory / "bundles.zip") as zf:
        blob = bytearray(zf.read("L1-00000001.bundle"))
    blob[-1] ^= 1
    tampered = directory.parent / "tampered.bundle"
    tampered.write_bytes(bytes(blob))
    code, out, err = run(home, capsys, "show-bundle", str(tampered), "--key", str(directory / "bundle.key"))
    assert code == 1 and "altered" in err and out == ""
    (directory.parent / "junk").write_bytes(b"junk")
    code, _, err = run(home, capsys, "show-bundle", str(directory.parent / "junk"), "--key", str(other))
    assert code == 1 and "not an Ostiary bundle" in err


def test_claim_release_list(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = batch(home, capsys)
    rows = parse_manifest_csv((directory / "manifest.csv").read_text())
    typed = rows[1].enrolment_id.lower().replace("-", " ")
    code, out, err = run(home, capsys, "claim", typed, "--site", "building-a")
    assert code == 0, err
    assert out == f"claimed L1-00000002 ({rows[1].endpoint}) for site building-a\n"
    code, _, err = run(home, capsys, "claim", rows[1].enrolment_id, "--site", "building-b")
    assert code == 1 and "already claimed" in err and "first claim won" in err
    wrong_check = "Y" if rows[1].enrolment_id.endswith("X") else "X"  # any other check character is detected
    code, _, err = run(home, capsys, "claim", rows[1].enrolment_id[:-1] + wrong_check, "--site", "building-b")
    assert code == 2 and "not an enrolment id" in err
    code, _, err = run(home, capsys, "claim", "0000-0000-0000-0000", "--site", "building-b")
    assert code == 1 and "no device has this enrolment id" in err
    code, _, err = run(home, capsys, "claim", rows[2].enrolment_id, "--site", "bad site")
    assert code == 2 and "invalid site" in err

    code, out, _ = run(home, capsys, "list", "--site", "building-a", "--json")
    listed = json.loads(out)
    assert [d["serial"] for d in listed] == ["L1-00000002"] and listed[0]["assignment"] == "claimed"
    code, out, _ = run(home, capsys, "list", "--unclaimed", "--limit", "2")
    assert "L1-00000001" in out and "L1-00000003" in out and "L1-00000004" not in out and "--limit 0" in out
    assert out.split()[:6] == ["SERIAL", "ENDPOINT", "SITE", "ASSIGNED", "STATE", "BATCH"]
    assert listed[0]["state"] is None  # a factory-only home: the AS's side (bootstrapped or not) is unknown here

    code, out, err = run(home, capsys, "release", rows[1].enrolment_id)
    assert code == 0, err
    assert "released L1-00000002 from site building-a" in out and "never bootstrapped" in out
    code, _, err = run(home, capsys, "release", "L1-00000002")
    assert code == 1 and "not assigned to a site" in err
    code, out, _ = run(home, capsys, "claim", rows[1].enrolment_id, "--site", "building-b", "--json")
    claimed = json.loads(out)
    assert claimed["site"] == "building-b" and claimed["revoked_at"] is not None
    code, out, _ = run(home, capsys, "release", "L1-00000002", "--json")
    assert json.loads(out)["site"] is None
    code, out, _ = run(home, capsys, "list", "--json")
    assert {d["serial"]: d["state"] for d in json.loads(out)}["L1-00000002"] == "revoked"  # released
    code, _, err = run(home, capsys, "release", "L1-00000099")
    assert code == 1 and "no device L1-00000099" in err
    code, _, err = run(home, capsys, "release", "neither")
    assert code == 2 and "not an enrolment id" in err


def test_pre_assigned_batch_and_batches(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pub = home.parent / "as.pub"
    key = CoseKey.generate(CoseAlgorithm.EDDSA)
    pub.write_text(key.public().to_cbor().hex())
    directory = batch(home, capsys, "--site", "building-a", "--vendor", "00A0C6", "--bootstrap-uri",
                      "coaps://bs.example.com", "--as-public-key", str(pub))  # fmt: skip
    code, out, _ = run(home, capsys, "show-bundle", str(directory), "--serial", "L1-00000001", "--json")
    view = json.loads(out)
    assert view["as_public_key_hex"] == key.public().to_cbor().hex()
    assert view["endpoint"] == "urn:dev:ops:00A0C6-L1-00000001" and view["bootstrap_uri"] == "coaps://bs.example.com"
    code, out, _ = run(home, capsys, "list", "--site", "building-a")
    assert out.count("factory") == 6
    code, out, _ = run(home, capsys, "batches", "--json")
    (only,) = json.loads(out)
    assert only["state"] == "complete" and only["site"] == "building-a" and only["count"] == 6
    code, _, err = run(home, capsys, "discard-batch", only["batch"])
    assert code == 1 and "complete" in err
    private = home.parent / "as.key"
    private.write_text(key.to_cbor().hex())
    code, _, err = run(home, capsys, "batch", "--count", "1", "--model", "L1", "--as-public-key", str(private))
    assert code == 1 and "only a public key" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--count", "0", "--model", "L1"], "count"),
        (["--count", "1", "--model", "L-1"], "invalid model"),
        (["--count", "1", "--model", "L1", "--bootstrap-uri", "coap://bs.example"], "development"),
        (["--count", "1", "--model", "L1", "--site", "a b"], "invalid site"),
    ],
)
def test_batch_usage_errors(home: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, _, err = run(home, capsys, "batch", *argv)
    assert code == 2 and message in err and err.count("\n") == 1


def test_plain_coap_needs_its_flag_and_warns(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(home, capsys, "batch", "--count", "1", "--model", "L1", "--out", "p",
                       "--bootstrap-uri", "coap://127.0.0.1:5683", "--plain-coap")  # fmt: skip
    assert code == 0 and "without DTLS" in err


def test_existing_output_is_refused(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    batch(home, capsys)
    code, _, err = run(home, capsys, "batch", "--count", "1", "--model", "L1", "--out", "b1")
    assert code == 1 and "exists" in err


def test_without_a_deployment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OSTIARY_MASTER_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "nowhere"
    code, _, err = run(missing, capsys, "batch", "--count", "1", "--model", "L1")
    assert code == 1 and "ostiary as init" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(empty, capsys, "batch", "--count", "1", "--model", "L1")
    assert code == 1 and "no master key" in err
    code, _, err = run(empty, capsys, "list")
    assert code == 1 and "no devices recorded yet" in err


def test_two_processes_claiming_the_same_device(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = batch(home, capsys)
    eid = parse_manifest_csv((directory / "manifest.csv").read_text())[0].enrolment_id
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "ostiary", "factory", "--home", str(home), "claim", eid, "--site", f"site-{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for i in range(3)
    ]
    results = [(p.wait(timeout=120), *p.communicate()) for p in processes]
    assert sorted(code for code, _, _ in results) == [0, 1, 1], results
    winner = next(out for code, out, _ in results if code == 0)
    site = winner.strip().rsplit(" ", 1)[-1]
    code, out, _ = run(home, capsys, "list", "--site", site, "--json")
    assert [d["serial"] for d in json.loads(out)] == ["L1-00000001"]


def test_progress_bar_draws_only_on_a_terminal() -> None:
    quiet = io.StringIO()
    with Progress(10, "devices", stream=quiet) as bar:
        bar.update(10)
    assert quiet.getvalue() == ""
    ticks = iter([0.0, 1.0, 1.05, 2.0])
    drawn = io.StringIO()
    with Progress(100, "devices", stream=drawn, enabled=True, clock=lambda: next(ticks)) as bar:
        bar.update(50)  # drawn (t=1.0)
        bar.update(60)  # t=1.05: too soon, skipped
        bar.update(100)  # the end is always drawn
    text = drawn.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n")
    assert "50/100 devices (50%) 50/s, 1 s left" in text and "100/100 devices (100%)" in text


def test_show_bundle_elsewhere_needs_the_key_file(
    home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    directory = batch(home, capsys)
    elsewhere = tmp_path / "line-station"  # a flashing station: no deployment, only the batch's files
    elsewhere.mkdir()
    code, _, err = run(elsewhere, capsys, "show-bundle", str(directory), "--serial", "L1-00000001")
    assert code == 1 and "--key KEYFILE" in err
    code, out, _ = run(elsewhere, capsys, "show-bundle", str(directory), "--serial", "L1-00000001",
                       "--key", str(directory / "bundle.key"), "--json")  # fmt: skip
    assert code == 0 and json.loads(out)["serial"] == "L1-00000001"
