"""``ostiary as``: init/upgrade, client, rs, token and keys administration (secrets printed once, never shown
again), one-line errors, and help texts that teach."""

from __future__ import annotations

import argparse
import json
import stat
import time
from pathlib import Path

import pytest

from ace_core.keys import CoseKey, b64url_encode
from ace_core.messages import TokenRequest
from ace_core.registry import CoseAlgorithm
from ace_core.scope import AifScope
from ostiary.cli import build_parser, main

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


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _secret(out: str, label: str) -> str:
    lines = [line for line in out.splitlines() if line.startswith(label)]
    assert len(lines) == 1, out
    return lines[0].split(":", 1)[1].strip()


def test_init_is_idempotent_and_says_what_it_did(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(home, capsys, "init")
    assert code == 0
    assert "created" in out and "master key: created" in out and "migrated" in out and "signing key: created" in out
    assert _mode(home) == 0o700
    assert _mode(home / "master.key") == 0o600
    assert (home / "ostiary.toml").read_text().startswith("# Ostiary")
    code, out, _ = run(home, capsys, "init")
    assert code == 0
    assert "exists" in out and "nothing to do" in out and "in use" in out
    code, out, _ = run(home, capsys, "upgrade")
    assert code == 0 and "nothing to do" in out


def test_the_config_init_writes_names_every_setting_at_its_default() -> None:
    """Every :class:`Settings` field (but ``home``, the directory itself) is in the template once, commented out
    at its real default; a field whose default is computed ("" or None) shows an example instead."""
    import dataclasses
    import re
    import tomllib

    from as_server.config import Settings
    from ostiary.as_cli import DEFAULT_CONFIG

    shown = dict(re.findall(r"^# ([a-z_]+) = (.+)$", DEFAULT_CONFIG, flags=re.MULTILINE))
    fields = {f.name: f.default for f in dataclasses.fields(Settings) if f.name != "home"}
    assert sorted(set(fields) - set(shown)) == []  # missing from the template
    assert sorted(set(shown) - set(fields)) == []  # not a setting
    for name, default in fields.items():
        assert len(re.findall(rf"^# {name} = ", DEFAULT_CONFIG, flags=re.MULTILINE)) == 1, name
        value = tomllib.loads(f"v = {shown[name]}")["v"]
        if default in ("", None):
            assert value, name  # an example of the computed default
        else:
            assert value == default and type(value) is type(default), name


def test_init_with_master_key_in_the_environment(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OSTIARY_MASTER_KEY", b64url_encode(bytes(32)))
    code, out, _ = run(home, capsys, "init")
    assert code == 0 and "OSTIARY_MASTER_KEY" in out
    assert not (home / "master.key").exists()


def test_home_after_the_command_name(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["as", "init", "--home", str(home)]) == 0
    assert (home / "master.key").exists()
    capsys.readouterr()


def test_client_lifecycle_prints_the_secret_once(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(home, capsys, "init")
    code, out, err = run(
        home, capsys, "client", "add", "phone-app", "--name", "Phone", "--audience", "front-door",
        "--default-scope", "/lock:GET,PUT", "--profile", "coap_oscore", "--pop-key", "symmetric",
    )  # fmt: skip
    assert code == 0
    secret = _secret(out, "client_secret")
    assert len(secret) == 43 and "only this once" in err

    for argv in (("client", "show", "phone-app"), ("client", "list")):
        code, shown, _ = run(home, capsys, *argv)
        assert code == 0 and secret not in shown
    assert "(secret hash, 32 bytes)" in run(home, capsys, "client", "show", "phone-app")[1]

    code, out, _ = run(home, capsys, "client", "rotate-secret", "phone-app")
    assert code == 0
    assert _secret(out, "client_secret") != secret

    assert run(home, capsys, "client", "disable", "phone-app")[0] == 0
    assert "enabled:          no" in run(home, capsys, "client", "show", "phone-app")[1]

    code, _, err = run(home, capsys, "client", "add", "phone-app")
    assert code == 1 and err.count("\n") == 1 and "exists" in err


def test_client_and_rs_changes_are_audited(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI records what the console records (client.created, client.secret_rotated, resource_server.created),
    with the actor cli:OS-USER; a public client has no secret to rotate."""
    monkeypatch.setattr("getpass.getuser", lambda: "ops")
    run(home, capsys, "init")
    assert run(home, capsys, "rs", "add", "front-door")[0] == 0
    assert run(home, capsys, "client", "add", "phone-app", "--audience", "front-door")[0] == 0
    assert run(home, capsys, "client", "rotate-secret", "phone-app")[0] == 0
    uri = ["--redirect-uri", "http://127.0.0.1/cb"]
    assert run(home, capsys, "client", "add", "door-app", "--public", *uri)[0] == 0
    code, _, err = run(home, capsys, "client", "rotate-secret", "door-app")
    assert (code, err.strip()) == (1, "ostiary: error: client 'door-app' is public: it has no secret")

    assert main(["audit", "--home", str(home), "--json"]) == 0
    entries = [(e["action"], e["actor"], e["client_id"] or e["audience"]) for e in json.loads(capsys.readouterr().out)]
    assert entries == [
        ("resource_server.created", "cli:ops", "front-door"),
        ("client.created", "cli:ops", "phone-app"),
        ("client.secret_rotated", "cli:ops", "phone-app"),
        ("client.created", "cli:ops", "door-app"),
    ]


def test_rs_add_prints_the_key_once_and_show_hides_it(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(home, capsys, "init")
    code, out, _ = run(
        home, capsys, "rs", "add", "front-door", "--resources", "/lock:GET,PUT", "--introspection-secret",
        "--max-lifetime", "600",
    )  # fmt: skip
    assert code == 0
    key_hex = _secret(out, "  hex")
    key = CoseKey.from_cbor(bytes.fromhex(key_hex))
    assert key.alg == CoseAlgorithm.AES_CCM_16_64_128 and key.k is not None and len(key.k) == 16
    assert b64url_encode(key.to_cbor()) == _secret(out, "  base64url")
    intro = _secret(out, "introspection secret")

    code, shown, _ = run(home, capsys, "rs", "show", "front-door")
    assert code == 0
    for secret in (key_hex, key.k.hex(), b64url_encode(key.k), intro):
        assert secret not in shown
    assert "(secret, 16 bytes)" in shown and "/lock:GET,PUT (AIF)" in shown
    assert "front-door" in run(home, capsys, "rs", "list")[1]


def test_rs_add_allocates_the_smallest_unused_kid(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """1-byte AS<->RS key ids (every token carries one): 01, 02, ...; --kid chooses one; a taken kid is refused."""
    run(home, capsys, "init")

    def add(audience: str, *argv: str) -> bytes:
        code, out, err = run(home, capsys, "rs", "add", audience, *argv)
        assert code == 0, err
        key = CoseKey.from_cbor(bytes.fromhex(_secret(out, "  hex")))  # what the lock configuration takes
        assert key.kid is not None and f"kid h'{key.kid.hex()}'" in out
        return key.kid

    assert add("door-a") == b"\x01"
    assert add("door-b") == b"\x02"
    assert add("door-c", "--kid", "04") == b"\x04"
    assert add("door-d") == b"\x03"
    assert add("door-e") == b"\x05"
    assert add("door-f", "--kid", "0A1b") == b"\x0a\x1b"

    code, out, err = run(home, capsys, "rs", "add", "door-g", "--kid", "02")
    assert code == 1 and out == "" and err.count("\n") == 1
    assert "kid 02 is already the AS<->RS key id of resource server 'door-b'" in err
    for bad in ("zz", "", "00" * 17):
        code, _, err = run(home, capsys, "rs", "add", "door-g", "--kid", bad)
        assert code == 2 and "--kid" in err and "Traceback" not in err
    code, _, err = run(home, capsys, "rs", "add", "door-a", "--kid", "09")
    assert code == 1 and "exists" in err
    assert "door-g" not in run(home, capsys, "rs", "list")[1]  # nothing was added by the refused commands

    code, listed, _ = run(home, capsys, "rs", "list")
    assert code == 0 and "KID" in listed.splitlines()[0]
    kids = {line.split()[0]: line.split()[6] for line in listed.splitlines()[1:]}
    assert kids == {"door-a": "01", "door-b": "02", "door-c": "04", "door-d": "03", "door-e": "05", "door-f": "0a1b"}


def test_rs_add_token_options(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Compact claims by default, --full-claims keeps iat and ace_profile; --no-clock gives exi tokens with a
    numbered cti (RFC 9200 section 5.10.3); show and list say which."""
    from ace_core import cose, cwt
    from as_server.app import AuthorizationServer
    from as_server.config import Settings

    run(home, capsys, "init")
    (home / "policy.yaml").write_text('rules:\n  - client: "*"\n    audience: "*"\n    scope: "/lock:GET"\n')
    code, out, _ = run(home, capsys, "rs", "add", "compact", "--resources", "/lock:GET")
    assert code == 0 and "token claims: compact (no iat; no ace_profile" in out and "expiry: exp" in out
    keys = {"compact": CoseKey.from_cbor(bytes.fromhex(_secret(out, "  hex")))}
    code, out, _ = run(
        home, capsys, "rs", "add", "clockless", "--resources", "/lock:GET", "--full-claims", "--no-clock"
    )
    assert code == 0 and "token claims: full" in out and "expiry: exi" in out and "has_clock = false" in out
    keys["clockless"] = CoseKey.from_cbor(bytes.fromhex(_secret(out, "  hex")))

    shown = run(home, capsys, "rs", "show", "clockless")[1]
    assert "token claims:  full (iat and ace_profile in every token)" in shown
    assert "expiry:        exi + sequence-numbered cti" in shown
    assert "compact (no iat; no ace_profile" in run(home, capsys, "rs", "show", "compact")[1]
    listed = {line.split()[0]: line.split()[-2:] for line in run(home, capsys, "rs", "list")[1].splitlines()[1:]}
    assert listed == {"compact": ["compact", "exp"], "clockless": ["full", "exi"]}

    secret = _secret(run(home, capsys, "client", "add", "app", "--audience", "compact", "--audience", "clockless")[1],
                     "client_secret")  # fmt: skip
    with AuthorizationServer.from_settings(Settings.load(home, env={})) as server:
        tokens = {
            audience: server.token_endpoint.handle(
                TokenRequest(
                    client_id="app",
                    client_secret=secret.encode(),
                    audience=audience,
                    scope=AifScope.parse_spec("/lock:GET").to_cbor(),
                ),
                credentials=None,
                peer="127.0.0.1",
            ).access_token
            for audience in ("compact", "clockless")
        }
    claims = {
        audience: cwt.verify(token, cose.KeySet([keys[audience]]), now=time.time(), audience=audience)
        for audience, token in tokens.items()
    }
    assert claims["compact"].iat is None and claims["compact"].ace_profile is None and claims["compact"].exp
    full = claims["clockless"]
    assert full.iat is not None and full.ace_profile == 2 and full.exp is None and full.exi == 3600
    assert full.cti == b"clockless\x01"
    shown = run(home, capsys, "token", "show", full.cti.hex())[1]
    assert "3600 s from first receipt by the RS" in shown and "(AS bound)" in shown


def test_token_list_and_show_without_key_material(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from as_server.app import AuthorizationServer
    from as_server.config import Settings

    run(home, capsys, "init")
    (home / "policy.yaml").write_text('rules:\n  - client: "*"\n    audience: front-door\n    scope: "/lock:GET"\n')
    run(home, capsys, "rs", "add", "front-door", "--resources", "/lock:GET")
    secret = _secret(run(home, capsys, "client", "add", "app", "--audience", "front-door")[1], "client_secret")
    with AuthorizationServer.from_settings(Settings.load(home, env={})) as server:
        info = server.token_endpoint.handle(
            TokenRequest(
                client_id="app",
                client_secret=secret.encode(),
                audience="front-door",
                scope=AifScope.parse_spec("/lock:GET").to_cbor(),
            ),
            credentials=None,
            peer="127.0.0.1",
        )
        (record,) = server.storage.list_tokens()
    assert info.cnf is not None
    code, out, _ = run(home, capsys, "token", "list", "--client", "app")
    assert code == 0 and record.cti.hex() in out and "/lock:GET (AIF)" in out
    code, out, _ = run(home, capsys, "token", "show", record.cti.hex())
    assert code == 0 and "(key material, not shown" in out
    ms = dict(info.cnf)[4][2]  # the OSCORE master secret (RFC 9203 §3.2.1: cnf 4 = osc, ms = 2)
    assert ms.hex() not in out and b64url_encode(ms) not in out
    assert run(home, capsys, "token", "show", "zz")[0] == 2


def test_keys_rotate_retires_the_old_key(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from as_server.config import Settings
    from as_server.sealing import MasterKey
    from as_server.storage.sqlalchemy import open_storage

    run(home, capsys, "init")
    code, out, _ = run(home, capsys, "keys", "rotate")
    assert code == 0 and "retired" in out
    settings = Settings.load(home, env={})
    storage = open_storage(settings.effective_database_url, MasterKey.load(settings.master_key_file))
    try:
        now = int(time.time())
        active = storage.signing_key()
        assert active is not None and active.kid.hex() in out
        kids = {k.kid for k in storage.verification_keys(now)}
        assert len(kids) == 2  # the old key still verifies
        assert not {k.kid for k in storage.verification_keys(now + settings.token_lifetime + 1)} - {active.kid}
    finally:
        storage.close()


def test_errors_are_one_line(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(home, capsys, "client", "list")  # no init yet
    assert code == 1 and err.startswith("ostiary: error: no master key") and err.count("\n") == 1
    run(home, capsys, "init")
    code, _, err = run(home, capsys, "client", "show", "nobody")
    assert code == 1 and err == "ostiary: error: no client 'nobody'\n"
    code, _, err = run(home, capsys, "rs", "add", "x", "--resources", "lock-without-slash")
    assert code == 2 and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:
        main(["as", "--home", str(home), "rs", "add"])
    assert exc.value.code == 2
    capsys.readouterr()


def _leaf_parsers(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.extend(_leaf_parsers(sub, (*prefix, name)))
    return found or [(prefix, parser)]


def test_every_as_command_help_teaches() -> None:
    parser = build_parser()
    leaves = [(path, p) for path, p in _leaf_parsers(parser) if path[:1] == ("as",) and path[1:2] != ("keys",)]
    leaves.append((("as", "keys", "rotate"), dict(_leaf_parsers(parser))[("as", "keys", "rotate")]))
    assert len(leaves) >= 14
    for path, sub in leaves:
        text = sub.format_help()
        assert "example:" in text, path
        assert "ostiary as" in text.split("example:")[1], path
        assert sub.description and len(sub.description) > 20, path


README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_policy_appends() -> list[str]:
    """The YAML the README's shell blocks append to the policy file that ``as init`` wrote (``cat >> ... <<'YAML'``)."""
    lines, blocks, current = README.read_text().splitlines(), [], None
    for line in lines:
        if current is not None:
            if line == "YAML":
                blocks.append("\n".join(current) + "\n")
                current = None
            else:
                current.append(line)
        elif line.startswith("cat >> $OSTIARY_HOME/policy.yaml <<'YAML'"):
            current = []
    return blocks


def test_the_readme_policy_steps_give_a_policy_the_server_loads(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A new user follows the README: ``as init``, then each ``cat >>`` of rules onto the file it wrote."""
    from policies.engine import PolicyEngine

    run(home, capsys, "init")
    blocks = _readme_policy_appends()
    assert len(blocks) >= 3  # the quick start, the sign-in app and the bootstrapped lock
    policy = home / "policy.yaml"
    with policy.open("a") as f:
        for block in blocks:
            f.write(block)
    engine = PolicyEngine.from_file(policy)  # what `ostiary as serve` does at start
    assert {client for rule in engine.rules for client in rule.clients} >= {"phone-app", "door-app", "lock-app"}


def test_client_audiences_are_exact_names_not_globs(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The token endpoint compares a client's audiences as names: 'L1-*' would be accepted and never match."""
    run(home, capsys, "init")
    code, out, err = run(home, capsys, "client", "add", "glob-app", "--audience", "L1-*", "--audience", "front-door")
    assert code == 2 and out == ""
    assert "a client's audiences are exact lock names, not patterns (L1-*)" in err
    assert run(home, capsys, "client", "list")[1].count("glob-app") == 0  # nothing registered
