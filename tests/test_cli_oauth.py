"""``ostiary as client add`` for apps signing users in: redirect URIs (RFC 8252 §7), public clients without a
secret, and the grant types a client may use."""

from __future__ import annotations

from pathlib import Path

import pytest

from ace_core.registry import GrantType
from as_server.config import Settings
from as_server.sealing import MasterKey
from ostiary.cli import main

pytest.importorskip("as_server.storage.sqlalchemy")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("OSTIARY_HOME", "OSTIARY_MASTER_KEY", "OSTIARY_DATABASE_URL", "OSTIARY_POLICY_FILE"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "home"


def run(home: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["as", "--home", str(home), *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _client(home: Path, client_id: str):  # type: ignore[no-untyped-def]
    from as_server.storage.sqlalchemy import open_storage

    settings = Settings.load(home, env={})
    storage = open_storage(settings.effective_database_url, MasterKey.load(settings.master_key_file))
    try:
        return storage.get_client(client_id)
    finally:
        storage.close()


def test_public_app_with_redirect_uris(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(home, capsys, "init")
    code, out, _ = run(
        home,
        capsys,
        "client",
        "add",
        "door-app",
        "--public",
        "--audience",
        "front-door",
        "--redirect-uri",
        "http://127.0.0.1:8123/callback",
        "--redirect-uri",
        "com.example.doorapp:/callback",
    )
    assert code == 0
    assert "client_secret" not in out and "public client" in out
    client = _client(home, "door-app")
    assert client.public and client.secret_hash == b""
    assert client.redirect_uris == ("http://127.0.0.1/callback", "com.example.doorapp:/callback")  # no port
    assert client.grant_types == {GrantType.AUTHORIZATION_CODE, GrantType.REFRESH_TOKEN}
    code, out, _ = run(home, capsys, "client", "show", "door-app")
    assert "none (public client)" in out and "com.example.doorapp:/callback" in out


def test_confidential_app_and_explicit_grant_types(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(home, capsys, "init")
    code, out, _ = run(
        home,
        capsys,
        "client",
        "add",
        "web-app",
        "--redirect-uri",
        "https://app.example/cb",
        "--grant-type",
        "authorization_code",
    )
    assert code == 0 and "client_secret:" in out
    client = _client(home, "web-app")
    assert not client.public and client.grant_types == {GrantType.AUTHORIZATION_CODE}
    code, _, _ = run(home, capsys, "client", "add", "svc")
    assert _client(home, "svc").grant_types == {GrantType.CLIENT_CREDENTIALS}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--redirect-uri", "http://app.example/cb"], "loopback"),
        (["--redirect-uri", "myapp:/cb"], "reverse domain"),
        (["--public", "--grant-type", "client_credentials"], "cannot use client_credentials"),
        (["--grant-type", "authorization_code"], "needs at least one --redirect-uri"),
        (["--redirect-uri", "https://a.example/cb", "--grant-type", "client_credentials"], "only used by"),
    ],
)
def test_refused_registrations(home: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    run(home, capsys, "init")
    code, _, err = run(home, capsys, "client", "add", "bad-app", *argv)
    assert code == 1 and message in err and err.count("\n") == 1
    assert _client(home, "bad-app") is None


def test_password_grant_cannot_be_registered(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(home, capsys, "init")
    with pytest.raises(SystemExit) as exc:
        main(["as", "--home", str(home), "client", "add", "x", "--grant-type", "password"])
    assert exc.value.code == 2
    capsys.readouterr()
