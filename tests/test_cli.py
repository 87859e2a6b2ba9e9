"""The ``ostiary`` command line: parser, help texts, exit statuses and ``as keys generate/show``."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ace_core import __version__
from ostiary.cli import ALGORITHMS, build_parser, main

GROUPS = ("as", "lock", "client", "factory", "bootstrap", "demo")

# What each group's --help must say it is for.
GROUP_PURPOSE = {
    "as": "authorization server",
    "lock": "resource server",
    "client": "smartphone app",
    "factory": "manufacturing time",
    "bootstrap": "bootstrap server",
    "demo": "end-to-end scenario",
}


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_build_parser() -> None:
    parser = build_parser()
    assert parser.prog == "ostiary"


def test_top_level_help_lists_the_groups(capsys: pytest.CaptureFixture[str]) -> None:
    out = _help([], capsys)
    for group in GROUPS:
        assert re.search(rf"^ +{group}( |$)", out, re.MULTILINE), group


@pytest.mark.parametrize("group", GROUPS)
def test_group_help_says_what_it_is_for(group: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = " ".join(_help([group], capsys).split())
    assert GROUP_PURPOSE[group] in out


def test_the_bootstrap_group_points_to_where_the_bootstrap_server_runs(capsys: pytest.CaptureFixture[str]) -> None:
    out = " ".join(_help(["bootstrap"], capsys).split())
    assert "not implemented" not in out
    assert "runs inside 'ostiary as serve'" in out and "ostiary lock serve --bootstrap" in out


def test_lock_help_lists_the_lock_commands(capsys: pytest.CaptureFixture[str]) -> None:
    out = " ".join(_help(["lock"], capsys).split())
    assert "not implemented" not in out
    for command in ("serve", "init-config"):
        assert command in out
    assert "ostiary lock init-config" in out and "ostiary lock serve --config" in out


def test_client_help_lists_the_client_commands(capsys: pytest.CaptureFixture[str]) -> None:
    out = " ".join(_help(["client"], capsys).split())
    assert "not implemented" not in out
    for command in ("token", "open", "get", "--secret-env", "--secret-file", "OSTIARY_CLIENT_SECRET"):
        assert command in out
    assert "ostiary client token" in out and "ostiary client open" in out and "ostiary client get" in out


@pytest.mark.parametrize("command", ["token", "open", "get"])
def test_client_commands_take_no_secret_value(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The secret comes from an environment variable or a file, never from argv (visible in ps)."""
    out = _help(["client", command], capsys)
    assert "--secret-env VAR" in out and "--secret-file FILE" in out
    assert not re.search(r"--(client-)?secret[ =]", out)
    assert "examples:" in out


def test_as_help_lists_the_server_commands(capsys: pytest.CaptureFixture[str]) -> None:
    out = " ".join(_help(["as"], capsys).split())
    assert "not implemented" not in out
    for command in ("keys", "init", "upgrade", "serve", "client", "rs", "token", "--home DIR"):
        assert command in out
    assert "ostiary as init" in out and "ostiary as serve" in out


@pytest.mark.parametrize(
    "argv",
    [[], ["as"], ["as", "keys"], ["as", "client"], ["as", "rs"], ["as", "token"]]
    + [["lock"], ["client"], ["factory"], ["bootstrap"]],
)
def test_group_without_command_prints_help_and_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("usage: ostiary")
    assert captured.out == ""


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"ostiary {__version__}"


def test_unknown_group_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_alg_names_map_to_registry_members() -> None:
    from ace_core.registry import CoseAlgorithm

    assert set(ALGORITHMS) == {
        "EdDSA",
        "ES256",
        "ES384",
        "HMAC256/64",
        "HMAC256/256",
        "AES-CCM-16-64-128",
        "AES-CCM-16-64-256",
        "A128GCM",
        "A256GCM",
    }
    assert ALGORITHMS["EdDSA"] is CoseAlgorithm.EDDSA
    assert ALGORITHMS["HMAC256/64"] is CoseAlgorithm.HMAC_256_64
    assert ALGORITHMS["AES-CCM-16-64-128"] is CoseAlgorithm.AES_CCM_16_64_128


# --- as keys generate / show ------------------------------------------------------------------------------


@pytest.fixture
def keys_module() -> ModuleType:
    """:mod:`ace_core.keys`; the key commands' tests skip only while that module cannot be imported."""
    return pytest.importorskip("ace_core.keys")


def _params(key: Any) -> dict[int, Any]:
    """The COSE_Key map of ``key`` (RFC 9052 §7), decoded from its CBOR encoding."""
    from ace_core import cbor

    params = cbor.loads(key.to_cbor())
    assert isinstance(params, dict)
    return params


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _secret_spellings(secret: bytes) -> list[str]:
    return [
        secret.hex(),
        secret.hex().upper(),
        base64.b64encode(secret).decode().rstrip("="),
        base64.urlsafe_b64encode(secret).decode().rstrip("="),
    ]


@pytest.mark.parametrize("fmt", ["cbor-hex", "json", "pem"])
@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_generate_private_key_file_is_0600(keys_module: ModuleType, tmp_path: Path, alg: str, fmt: str) -> None:
    out = tmp_path / "key"
    assert main(["as", "keys", "generate", "--alg", alg, "--format", fmt, "--kid", "lock-1", "--out", str(out)]) == 0
    assert _mode(out) == 0o600
    key = _load(keys_module, out, fmt)
    assert -4 in _params(key)  # d (RFC 9053 §7.1): the file holds the private key
    if fmt != "pem":  # PEM has no place for a kid
        assert key.kid == b"lock-1"


@pytest.mark.parametrize("alg", ["HMAC256/64", "HMAC256/256", "AES-CCM-16-64-128", "A256GCM"])
def test_generate_symmetric_key_file_is_0600(keys_module: ModuleType, tmp_path: Path, alg: str) -> None:
    out = tmp_path / "key.hex"
    assert main(["as", "keys", "generate", "--alg", alg, "--kid", "hex:0a0b", "--out", str(out)]) == 0
    assert _mode(out) == 0o600
    key = _load(keys_module, out, "cbor-hex")
    assert key.kid == b"\x0a\x0b"
    assert int(key.alg) == int(ALGORITHMS[alg])


def test_generate_public_key(keys_module: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["as", "keys", "generate", "--alg", "ES256", "--public", "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert '"d"' not in out
    key = keys_module.CoseKey.from_json(json.loads(out))
    assert -4 not in _params(key)


@pytest.mark.parametrize("extra", [["--public"], ["--format", "pem"]])
def test_symmetric_key_has_no_public_or_pem_form(
    keys_module: ModuleType,
    tmp_path: Path,
    extra: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "key"
    assert main(["as", "keys", "generate", "--alg", "HMAC256/256", "--out", str(out), *extra]) == 2
    assert "symmetric" in capsys.readouterr().err
    assert not out.exists()


def test_generate_refuses_to_overwrite_without_force(
    keys_module: ModuleType,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "key"
    out.write_bytes(b"precious")
    out.chmod(0o644)
    assert main(["as", "keys", "generate", "--alg", "EdDSA", "--out", str(out)]) == 1
    assert "--force" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"

    assert main(["as", "keys", "generate", "--alg", "EdDSA", "--out", str(out), "--force"]) == 0
    assert out.read_bytes() != b"precious"
    assert _mode(out) == 0o600  # the replaced file does not keep the old, wider mode
    _load(keys_module, out, "cbor-hex")
    assert [p.name for p in tmp_path.iterdir()] == ["key"]  # no temporary file left behind


@pytest.mark.parametrize("fmt", ["cbor-hex", "json"])
@pytest.mark.parametrize("alg", ["HMAC256/256", "AES-CCM-16-64-128", "A128GCM"])
def test_show_never_prints_symmetric_secret(
    keys_module: ModuleType,
    tmp_path: Path,
    alg: str,
    fmt: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "key"
    assert main(["as", "keys", "generate", "--alg", alg, "--format", fmt, "--kid", "door", "--out", str(out)]) == 0
    key = _load(keys_module, out, fmt)
    secret = _params(key)[-1]  # COSE_Key label -1 is k for Symmetric keys (RFC 9053 §6.1)
    assert isinstance(secret, bytes) and len(secret) >= 16
    capsys.readouterr()

    assert main(["as", "keys", "show", str(out)]) == 0
    shown = capsys.readouterr().out
    for spelling in _secret_spellings(secret):
        assert spelling not in shown
    assert f"(secret, {len(secret)} bytes)" in shown
    assert "Symmetric (4)" in shown
    assert f"{alg} ({int(ALGORITHMS[alg])})" in shown
    assert "h'646f6f72' (\"door\")" in shown
    assert key.thumbprint().hex() in shown


@pytest.mark.parametrize("fmt", ["cbor-hex", "json", "pem"])
def test_show_never_prints_private_key(
    keys_module: ModuleType, tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "key"
    assert main(["as", "keys", "generate", "--alg", "EdDSA", "--format", fmt, "--out", str(out)]) == 0
    key = _load(keys_module, out, fmt)
    d = _params(key)[-4]  # COSE_Key label -4 is d (RFC 9053 §7.1)
    capsys.readouterr()

    assert main(["as", "keys", "show", str(out)]) == 0
    shown = capsys.readouterr().out
    for spelling in _secret_spellings(d):
        assert spelling not in shown
    assert "(secret, 32 bytes)" in shown
    assert "OKP (1)" in shown
    assert "private:    yes" in shown
    assert key.thumbprint().hex() in shown


def test_show_rejects_garbage_without_echoing_it(
    keys_module: ModuleType,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "key"
    out.write_text("deadbeefcafe\n")
    assert main(["as", "keys", "show", str(out)]) == 1
    err = capsys.readouterr().err
    assert "is not a COSE key" in err
    assert "deadbeefcafe" not in err


def _load(keys_module, path: Path, fmt: str):
    data = path.read_bytes()
    if fmt == "cbor-hex":
        return keys_module.CoseKey.from_cbor(bytes.fromhex(data.decode()))
    if fmt == "json":
        return keys_module.CoseKey.from_json(json.loads(data))
    return keys_module.CoseKey.from_pem(data)


#: Bound on a CLI subprocess (interpreter start-up and imports included).
SUBPROCESS_TIMEOUT = 60.0


@pytest.mark.parametrize(
    ("argv", "unbuffered"),
    [
        (["as", "keys", "generate", "--alg", "EdDSA"], False),  # the output fails at the final flush
        (["as", "keys", "generate", "--alg", "EdDSA"], True),  # ... or while the command writes
        (["--help"], False),  # argparse prints, then exits through SystemExit
    ],
    ids=["flush", "write", "help"],
)
def test_a_reader_that_goes_away_ends_the_command_quietly(argv: list[str], unbuffered: bool) -> None:
    """``ostiary ... | head``: once the reader has gone, no "Broken pipe" error and no interpreter complaint
    ("Exception ignored ... BrokenPipeError"), exit status 1 (what Python's documentation recommends)."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte: every write fails with EPIPE
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "OSTIARY_DEBUG")}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "ostiary", *argv],
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            timeout=SUBPROCESS_TIMEOUT,
            check=False,
        )
    finally:
        os.close(write_end)
    assert done.stderr.decode() == ""
    assert done.returncode == 1
