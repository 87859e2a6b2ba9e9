"""The console's actions that the CLI lacked (issue #6): ``ostiary user sites`` and ``ostiary as token revoke``,
with the same checks as the console (sites of a manager, ``--as``)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from as_server.config import Settings
from as_server.models import IssuedToken, User, UserRole
from as_server.sealing import MasterKey
from as_server.storage.sqlalchemy import open_storage
from ostiary.cli import main


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Path:
    for var in ("OSTIARY_HOME", "OSTIARY_MASTER_KEY", "OSTIARY_DATABASE_URL", "OSTIARY_POLICY_FILE"):
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / "home"
    assert main(["as", "--home", str(path), "init"]) == 0
    capsys.readouterr()
    return path


def run(home: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--home", str(home)])
    out = capsys.readouterr()
    return code, out.out, out.err


def seed(home: Path) -> bytes:
    """A manager, an admin and one token for ``front-door``; the token's cti."""
    settings = Settings.load(home, env={})
    storage = open_storage(settings.effective_database_url, MasterKey.load(settings.master_key_file))
    now = int(time.time())
    try:
        for name, role in (("frank", UserRole.MANAGER), ("root", UserRole.ADMIN)):
            storage.add_user(User(name=name, role=role, created_at=now), actor="cli:test", now=now)
        cti = b"\x01\x02\x03\x04"
        storage.record(
            IssuedToken(
                cti=cti,
                client_id="phone-app",
                audience="front-door",
                scope="read",
                profile=None,
                iat=now,
                exp=now + 3600,
                token_hash=b"\x01" + bytes(32),
                cnf=b"\xa0",
            )
        )
    finally:
        storage.close()
    return cti


def test_user_sites_and_token_revoke(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cti = seed(home).hex()
    assert run(home, capsys, "user", "sites", "frank")[1].strip() == "sites of frank: (none)"
    code, out, err = run(home, capsys, "user", "sites", "frank", "building-b/*", "back-door")
    assert code == 0 and out.strip() == "sites of frank: back-door building-b/*", err
    code, out, err = run(home, capsys, "user", "sites", "nobody", "x")
    assert code == 1 and "no user" in err
    code, out, err = run(home, capsys, "as", "token", "revoke", cti, "--as", "frank")
    assert code == 1 and "No such token" in err  # front-door is not one of frank's sites
    code, out, err = run(home, capsys, "as", "token", "revoke", cti, "--as", "root")
    assert code == 0 and "revoked token" in out, err
    code, out, err = run(home, capsys, "as", "token", "revoke", cti)
    assert code == 1 and "already revoked" in err
    assert run(home, capsys, "user", "sites", "frank", "--clear")[1].strip() == "sites of frank: (none)"
