"""The lock's TOML configuration and ``ostiary lock init-config`` / ``serve`` argument handling."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ace_core.keys import CoseKey, b64url_encode
from ostiary.cli import main
from resource_server.config import ConfigError, ScopeFormat, load_config


def _init(tmp_path: Path, key: CoseKey, *extra: str) -> Path:
    out = tmp_path / "lock.toml"
    argv = ["lock", "init-config", "--audience", "front-door", "--issuer", "coap://as/token"]
    argv += ["--as-uri", "coap://as:5683/token", "--key", key.to_cbor().hex(), "--out", str(out), *extra]
    assert main(argv) == 0
    return out


def test_init_config_writes_a_private_file_that_loads(tmp_path: Path, key: CoseKey) -> None:
    out = _init(tmp_path, key, "--port", "5690", "--state-file", "state.cbor", "--no-clock")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    config = load_config(out)
    assert config.port == 5690 and config.host == "127.0.0.1"
    rs = config.rs
    assert rs.audiences == ("front-door",) and rs.issuer == "coap://as/token"
    assert rs.as_uri == "coap://as:5683/token"
    assert list(rs.keys.keys) == [key]
    assert rs.has_clock is False and rs.scope_format is ScopeFormat.AIF
    assert rs.state_file == tmp_path / "state.cbor"  # relative to the config file


def test_init_config_does_not_overwrite_without_force(
    tmp_path: Path, key: CoseKey, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _init(tmp_path, key)
    argv = ["lock", "init-config", "--audience", "a", "--issuer", "i", "--as-uri", "u", "--key", key.to_cbor().hex()]
    assert main([*argv, "--out", str(out)]) == 1
    assert "--force" in capsys.readouterr().err
    assert main([*argv, "--out", str(out), "--force"]) == 0
    assert load_config(out).rs.audiences == ("a",)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lock.toml"]


def test_init_config_rejects_a_bad_key_without_echoing_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["lock", "init-config", "--audience", "a", "--issuer", "i", "--as-uri", "u", "--key", "deadbeefcafe42"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "COSE_Key" in err and "deadbeefcafe42" not in err


def test_keys_in_base64url_and_key_files(tmp_path: Path, key: CoseKey) -> None:
    other = CoseKey.symmetric(b"k" * 16)
    (tmp_path / "as.key").write_text(other.to_cbor().hex() + "\n")
    path = tmp_path / "lock.toml"
    path.write_text(
        "[rs]\n"
        'audiences = ["front-door", "coap://lock-7"]\n'
        'issuer = "coap://as/token"\n'
        'as_uri = "coap://as/token"\n'
        f'keys = ["{b64url_encode(key.to_cbor())}"]\n'
        'key_files = ["as.key"]\n'
        'scope_format = "text"\n'
        "cnonce = true\n"
        "cnonce_lifetime = 45\n"
        "[scopes]\n"
        'open = "/lock:PUT"\n'
    )
    rs = load_config(path).rs
    assert list(rs.keys.keys) == [key, other]
    assert rs.audience == "front-door" and rs.audiences[1] == "coap://lock-7"
    assert rs.use_cnonce and rs.cnonce_lifetime == 45.0
    assert rs.scope_format is ScopeFormat.TEXT and set(rs.scope_map) == {"open"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "missing [rs]"),
        ('[rs]\nissuer = "i"\nas_uri = "u"\nkeys = []\n', "audience"),
        ('[rs]\naudience = "a"\nissuer = "i"\nas_uri = "u"\nkeys = []\n', "key"),
        ('[rs]\naudience = "a"\nissuer = "i"\nas_uri = "u"\nkeys = ["zz"]\n', "COSE_Key"),
        ('[rs]\naudience = "a"\nissuer = "i"\nas_uri = "u"\nkeys = ["K"]\nmax_tokens = 0\n', "max_tokens"),
        ('[rs]\naudience = "a"\nissuer = "i"\nas_uri = "u"\nkeys = ["K"]\nhas_clock = "yes"\n', "has_clock"),
        ('[rs]\naudience = "a"\nissuer = "i"\nas_uri = "u"\nkeys = ["K"]\nscope_format = "text"\n', "[scopes]"),
        ('[rs]\naudience = "a"\nissuer = "i"\nas_uri = "u"\nkeys = ["K"]\n[listen]\nport = 70000\n', "port"),
        ("[rs\n", "lock.toml"),
    ],
)
def test_bad_configurations_say_what_is_wrong(tmp_path: Path, key: CoseKey, text: str, message: str) -> None:
    path = tmp_path / "lock.toml"
    path.write_text(text.replace('"K"', f'"{key.to_cbor().hex()}"'))
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(path)


def test_serve_with_a_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "lock.toml"
    path.write_text("[rs]\n")
    assert main(["lock", "serve", "--config", str(path)]) == 2
    assert "audience" in capsys.readouterr().err
    assert main(["lock", "serve", "--config", str(tmp_path / "missing.toml")]) == 2
