"""``ostiary as rs rotate-key|revoke|keys`` and the last contact in ``rs list|show`` (issue #7): operational keys of
bootstrapped locks from the command line; key bytes are never printed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from as_server.bootstrap.device_db import DEVICE_DB_FILE, SqliteDeviceStore
from as_server.bootstrap.devices import BootstrapRefusal
from as_server.bootstrap.operational import OperationalCredentials, register
from as_server.config import Settings
from as_server.sealing import MasterKey
from as_server.storage.base import Storage
from as_server.storage.sqlalchemy import open_storage
from ostiary.cli import main
from tests.bootstrap.test_factory_store import device, recorded

LOCK = "L1-00000001"  # the serial of tests.bootstrap.test_factory_store.device(1)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Path:
    for var in ("OSTIARY_HOME", "OSTIARY_MASTER_KEY", "OSTIARY_DATABASE_URL", "OSTIARY_POLICY_FILE"):
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / "home"
    assert main(["as", "--home", str(path), "init"]) == 0
    capsys.readouterr()
    return path


def run(home: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["as", "--home", str(home), *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@contextmanager
def deployment(home: Path) -> Iterator[tuple[Storage, OperationalCredentials]]:
    settings = Settings.load(home)
    storage = open_storage(settings.effective_database_url, MasterKey.load(settings.master_key_file))
    try:
        yield storage, OperationalCredentials(storage, rotation_age=settings.key_rotation_age)
    finally:
        storage.close()


def bootstrapped(home: Path) -> bytes:
    """A lock bootstrapped a minute ago (delivered and confirmed); its key."""
    now = int(time.time()) - 60
    with deployment(home) as (_, creds):
        key = creds.key_for_delivery(LOCK, now=now)
        creds.confirm_delivery(LOCK, key.generation, now=now)
    assert key.key is not None
    return key.key


def test_rotate_key_then_keys_lists_generations_without_key_bytes(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = bootstrapped(home)
    code, out, _ = run(home, capsys, "rs", "rotate-key", LOCK)
    assert code == 0
    assert f"generation 2 of {LOCK}" in out and f"{LOCK}#2" in out and "next pull" in out
    code, out, _ = run(home, capsys, "rs", "keys", LOCK)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["GENERATION", "IDENTITY", "CREATED", "DELIVERED", "RETIRES", "STATE"]
    assert lines[1].split()[0:2] == ["1", f"{LOCK}#1"] and lines[1].endswith("current")
    assert lines[2].split()[0:2] == ["2", f"{LOCK}#2"] and lines[2].endswith("pending")
    assert first.hex() not in out
    code, _, err = run(home, capsys, "rs", "rotate-key", "nobody")
    assert code == 1 and "nobody" in err


def test_revoke_disables_the_lock_and_erases_its_keys(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bootstrapped(home)
    code, out, _ = run(home, capsys, "rs", "revoke", LOCK)
    assert code == 0 and "0 tokens revoked" in out and "--decommission" in out
    code, out, _ = run(home, capsys, "rs", "keys", LOCK)
    assert code == 0 and out.splitlines()[1].endswith("erased")
    code, out, _ = run(home, capsys, "rs", "show", LOCK)
    assert "enabled:" in out and "no" in out.split("enabled:")[1].split("\n")[0]
    code, _, err = run(home, capsys, "rs", "rotate-key", LOCK)
    assert code == 1 and "revoked" in err
    code, _, err = run(home, capsys, "rs", "revoke", "nobody")
    assert code == 1 and "nobody" in err


def test_revoke_with_decommission(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bootstrapped(home)
    code, out, _ = run(home, capsys, "rs", "revoke", LOCK, "--decommission")
    assert code == 0 and "nothing to decommission" in out  # no device store yet
    settings = Settings.load(home)
    with SqliteDeviceStore(home / DEVICE_DB_FILE, MasterKey.load(settings.master_key_file)) as store:
        recorded(store, [device(1, site="building-a")])
    code, out, _ = run(home, capsys, "rs", "revoke", LOCK, "--decommission")
    assert code == 0 and f"decommissioned device {LOCK}" in out
    with SqliteDeviceStore(home / DEVICE_DB_FILE, MasterKey.load(settings.master_key_file)) as store:
        assert store.bootstrap_psk(device(1).psk_identity) is None
        assert store.bootstrap_target("urn:dev:ops:ostiary-L1-00000001") is BootstrapRefusal.DECOMMISSIONED


def test_factory_list_gives_the_state_the_console_shows(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``ostiary factory list``'s STATE (and ``state`` in ``--json``, beside the unchanged fields) uses the Devices
    page's words: a decommissioned or released lock is no longer just ``claimed``/``unclaimed``."""
    settings = Settings.load(home)
    with SqliteDeviceStore(home / DEVICE_DB_FILE, MasterKey.load(settings.master_key_file)) as store:
        recorded(store, [device(n, site="building-a") for n in (1, 2, 3, 4)])
    now = int(time.time()) - 60
    with deployment(home) as (_, creds):
        for serial in ("L1-00000001", "L1-00000002"):
            key = creds.key_for_delivery(serial, now=now)
            creds.confirm_delivery(serial, key.generation, now=now)
    assert run(home, capsys, "rs", "revoke", "L1-00000002", "--decommission")[0] == 0
    assert main(["factory", "--home", str(home), "release", "L1-00000003"]) == 0
    capsys.readouterr()

    assert main(["factory", "--home", str(home), "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["SERIAL", "ENDPOINT", "SITE", "ASSIGNED", "STATE", "BATCH"]
    states = {line.split()[0]: line.split()[4:-1] for line in lines[1:]}
    assert states == {
        "L1-00000001": ["bootstrapped"],
        "L1-00000002": ["decommissioned"],
        "L1-00000003": ["revoked"],
        "L1-00000004": ["not", "bootstrapped"],
    }
    assert main(["factory", "--home", str(home), "list", "--json"]) == 0
    listed = {d["serial"]: d for d in json.loads(capsys.readouterr().out)}
    assert [listed[s]["state"] for s in sorted(listed)] == [
        "bootstrapped",
        "decommissioned",
        "revoked",
        "not bootstrapped",
    ]
    assert listed["L1-00000003"]["assignment"] == "unclaimed" and listed["L1-00000003"]["revoked_at"] is not None


def test_rs_list_and_show_give_the_last_contact(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bootstrapped(home)
    code, out, _ = run(home, capsys, "rs", "list")
    assert code == 0 and out.splitlines()[0].split()[7] == "LAST_CONTACT" and out.splitlines()[1].split()[7] == "never"
    contact = int(time.time()) - 120
    with deployment(home) as (storage, _):
        register(storage, audience=LOCK, endpoint="urn:dev:ops:ostiary-L1-00000001", lifetime=300, now=contact,
                 source="127.0.0.1:5700")  # fmt: skip
    code, out, _ = run(home, capsys, "rs", "list")
    assert code == 0 and out.splitlines()[1].split()[7] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(contact))
    code, out, _ = run(home, capsys, "rs", "show", LOCK)
    assert code == 0 and "last contact:" in out and "2 min ago" in out and "127.0.0.1:5700" in out
    assert "key generations:  1" in out or "key generations: 1" in out


def test_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("rotate-key", "revoke", "keys"):
        with pytest.raises(SystemExit) as exit_info:
            main(["as", "rs", command, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert "example:" in out and "LOCK" in out
