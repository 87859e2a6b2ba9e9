"""``ostiary user|group|consent|audit`` (issue #5): accounts with passwords never taken from the command line, the
consent workflow as a named approver, the audit log, and help texts that teach."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ace_core.messages import TokenRequest
from ace_core.scope import AifScope
from ostiary.cli import build_parser, main

pytest.importorskip("as_server.storage.sqlalchemy")

from as_server.app import AuthorizationServer  # noqa: E402
from as_server.auth import METHOD_BASIC, ClientCredentials  # noqa: E402
from as_server.config import Settings  # noqa: E402
from as_server.errors import ConsentPending  # noqa: E402
from as_server.identity import AuthenticationFailed, LocalIdentityProvider  # noqa: E402

POLICY = """\
rules:
  - id: ask-facility
    effect: consent
    client: phone-app
    audience: front-door
    scope: "/lock:GET,PUT"
    approvers: {users: [frank], groups: [facility]}
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Path:
    for var in ("OSTIARY_HOME", "OSTIARY_MASTER_KEY", "OSTIARY_DATABASE_URL", "OSTIARY_POLICY_FILE"):
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / "home"
    assert main(["as", "--home", str(path), "init"]) == 0
    (path / "policy.yaml").write_text(POLICY)
    capsys.readouterr()
    return path


def run(home: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--home", str(home)])
    out = capsys.readouterr()
    return code, out.out, out.err


def password_file(tmp_path: Path, name: str, password: str) -> str:
    path = tmp_path / f"{name}.pw"
    path.write_text(password + "\n")
    path.chmod(0o600)
    return str(path)


def test_users_and_groups(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pw = password_file(tmp_path, "frank", "frank's secret 1")
    code, out, err = run(home, capsys, "user", "add", "frank", "--role", "manager", "--password-file", pw)
    assert (code, out.strip()) == (0, "added user frank (role manager)"), err
    assert "frank's secret" not in out + err
    code, out, err = run(home, capsys, "user", "add", "frank", "--password-file", pw)
    assert code == 1 and "exists" in err
    # No password source and no terminal: refused, and no option takes the password itself.
    code, out, err = run(home, capsys, "user", "add", "alice")
    assert code == 2 and "--password-file" in err and "deliberately no option" in err
    os.environ["TEST_ALICE_PASSWORD"] = "alice pw"
    try:
        assert run(home, capsys, "user", "add", "alice", "--password-env", "TEST_ALICE_PASSWORD")[0] == 0
    finally:
        del os.environ["TEST_ALICE_PASSWORD"]
    assert run(home, capsys, "user", "add", "bob", "--password-env", "TEST_UNSET_VARIABLE")[0] == 2
    (tmp_path / "open.pw").write_text("pw\n")
    (tmp_path / "open.pw").chmod(0o644)
    code, _, err = run(home, capsys, "user", "add", "carol", "--password-file", str(tmp_path / "open.pw"))
    assert code == 0 and "readable by other users" in err

    assert run(home, capsys, "group", "add", "facility", "--description", "Facility managers")[0] == 0
    assert run(home, capsys, "group", "add-member", "facility", "frank")[0] == 0
    assert run(home, capsys, "group", "add-member", "facility", "alice")[0] == 0
    code, _, err = run(home, capsys, "group", "add-member", "facility", "nobody")
    assert code == 1 and "no user 'nobody'" in err
    code, out, _ = run(home, capsys, "group", "list")
    assert "facility" in out and "alice,frank" in out
    assert run(home, capsys, "group", "remove-member", "facility", "alice")[0] == 0
    code, out, _ = run(home, capsys, "user", "list")
    assert code == 0 and "frank" in out and "manager" in out and "facility" in out
    code, out, _ = run(home, capsys, "user", "show", "frank")
    assert "argon2id hash" in out and "$argon2id$" not in out

    code, out, _ = run(home, capsys, "user", "disable", "alice")
    assert (code, out.strip()) == (0, "disabled user alice; 0 tokens revoked")
    settings = Settings.load(home, env={})
    server = AuthorizationServer.from_settings(settings)
    try:
        identity = LocalIdentityProvider(server.storage)
        with pytest.raises(AuthenticationFailed, match="disabled"):
            identity.authenticate("alice", "alice pw")
        assert run(home, capsys, "user", "enable", "alice")[0] == 0
        assert identity.authenticate("alice", "alice pw").name == "alice"
        os.environ["TEST_NEW_PASSWORD"] = "new alice pw"
        try:
            assert run(home, capsys, "user", "passwd", "alice", "--password-env", "TEST_NEW_PASSWORD")[0] == 0
        finally:
            del os.environ["TEST_NEW_PASSWORD"]
        with pytest.raises(AuthenticationFailed):
            identity.authenticate("alice", "alice pw")
        assert identity.authenticate("alice", "new alice pw").name == "alice"
    finally:
        server.close()
    code, out, _ = run(home, capsys, "audit", "--action", "user", "--json")
    entries = json.loads(out)
    assert [e["action"] for e in entries] == [
        "user.created",
        "user.created",
        "user.created",
        "user.disabled",
        "user.enabled",
        "user.password_changed",
    ]
    assert all(e["actor"].startswith("cli:") for e in entries)


@pytest.fixture
def deployment(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[AuthorizationServer]:
    """A deployment with front-door, phone-app (its secret in ``server.phone_secret``), frank and grace (managers;
    grace in facility), alice (user), root (admin)."""
    assert run(home, capsys, "as", "rs", "add", "front-door", "--resources", "/lock:GET,PUT")[0] == 0
    main(["as", "--home", str(home), "client", "add", "phone-app", "--audience", "front-door"])
    secret = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("client_secret:"))
    for name, role in (("frank", "manager"), ("grace", "manager"), ("alice", "user"), ("root", "admin")):
        pw = password_file(tmp_path, name, f"{name}-pw")
        assert run(home, capsys, "user", "add", name, "--role", role, "--password-file", pw)[0] == 0
    assert run(home, capsys, "group", "add", "facility")[0] == 0
    assert run(home, capsys, "group", "add-member", "facility", "grace")[0] == 0
    server = AuthorizationServer.from_settings(Settings.load(home, env={}))
    server.phone_secret = secret.split(":", 1)[1].strip()  # type: ignore[attr-defined]
    yield server
    server.close()


def ask(server: AuthorizationServer, scope: str = "/lock:PUT") -> str:
    request = TokenRequest(audience="front-door", scope=AifScope.parse_spec(scope).to_cbor())
    credentials = ClientCredentials("phone-app", server.phone_secret.encode(), METHOD_BASIC)  # type: ignore[attr-defined]
    with pytest.raises(ConsentPending) as info:
        server.token_endpoint.handle(request, credentials=credentials, peer="127.0.0.1")
    return info.value.request_id


def test_consent_commands(home: Path, deployment: AuthorizationServer, capsys: pytest.CaptureFixture[str]) -> None:
    server = deployment
    first = ask(server, "/lock:GET,PUT")
    second = ask(server, "/lock:GET")

    code, out, _ = run(home, capsys, "consent", "list", "--as", "frank")
    assert code == 0 and first in out and second in out and "pending" in out
    code, out, _ = run(home, capsys, "consent", "list", "--as", "grace", "--json")
    assert {r["id"] for r in json.loads(out)} == {first, second}
    code, out, _ = run(home, capsys, "consent", "show", first, "--as", "frank")
    assert "user:frank, group:facility" in out and "/lock:GET,PUT" in out and "(once, last " in out
    ask(server, "/lock:GET,PUT")  # merged into the pending request
    code, out, _ = run(home, capsys, "consent", "show", first, "--as", "frank")
    assert "(2 times, last " in out

    code, _, err = run(home, capsys, "consent", "list", "--as", "alice")
    assert (code, err.strip()) == (1, "ostiary: error: approvers need the role manager or admin")
    code, _, err = run(home, capsys, "consent", "list", "--as", "nobody")
    assert code == 1 and "no enabled user 'nobody'" in err
    code, _, err = run(home, capsys, "consent", "approve", "A" * 22, "--as", "frank")
    assert code == 1 and "no such access request" in err
    code, _, err = run(home, capsys, "consent", "approve", first, "--as", "frank", "--scope", "/lock:DELETE")
    assert code == 1 and "subset" in err
    code, _, err = run(home, capsys, "consent", "approve", first, "--as", "frank", "--until", "not a time")
    assert code == 2 and "not a time" in err

    argv = ["consent", "approve", first, "--as", "frank", "--scope", "/lock:PUT", "--window", "Mon-Fri 08:00-18:00"]
    argv += ["--timezone", "Europe/Berlin", "--until", "30d", "--note", "for the renovation", "--json"]
    code, out, err = run(home, capsys, *argv)
    assert code == 0, err
    shown = json.loads(out)
    assert shown["status"] == "approved" and shown["decided_by"] == "user:frank"
    assert shown["grant"]["windows"] == ["Mon-Fri 08:00-18:00"] and shown["grant"]["timezone"] == "Europe/Berlin"
    assert shown["grant"]["scope"] == '[["/lock",4]]' and shown["grant"]["valid_until"] is not None
    code, _, err = run(home, capsys, "consent", "approve", first, "--as", "grace")
    assert code == 1 and "approved" in err  # decided already (409 in the API)

    code, out, _ = run(home, capsys, "consent", "deny", second, "--as", "grace", "--note", "no")
    assert code == 0 and f"denied access request {second} as user:grace" in out
    code, out, _ = run(home, capsys, "consent", "grants", "--as", "root")
    assert first in out and "Mon-Fri 08:00-18:00 Europe/Berlin" in out
    code, out, _ = run(home, capsys, "consent", "revoke", first, "--as", "grace")
    assert code == 0 and "0 tokens revoked" in out
    code, _, err = run(home, capsys, "consent", "revoke", first, "--as", "grace")
    assert code == 1 and "already revoked" in err
    code, out, _ = run(home, capsys, "consent", "grants", "--as", "root", "--status", "revoked", "--json")
    assert [g["revoked_by"] for g in json.loads(out)] == ["user:grace"]

    code, out, _ = run(home, capsys, "audit", "--action", "access_request", "--json")
    actions = [(e["action"], e["request_id"]) for e in json.loads(out)]
    assert actions == [
        ("access_request.created", first),
        ("access_request.created", second),
        ("access_request.merged", first),
        ("access_request.approved", first),
        ("access_request.denied", second),
    ]
    code, out, _ = run(home, capsys, "audit", "--user", "frank", "--since", "1h")
    assert code == 0 and "access_request.approved" in out and "grant.created" in out
    code, out, _ = run(home, capsys, "audit", "--client", "phone-app", "--action", "token.refused", "--limit", "1")
    server.audit_log.flush()
    code, out, _ = run(home, capsys, "audit", "--client", "phone-app", "--action", "token.refused")
    assert out.count("token.refused") == 3 and "consent required" in out  # asked twice, then merged once
    assert run(home, capsys, "audit", "--since", "yesterday-ish")[0] == 2


def test_audit_refuses_an_unknown_action(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An action filter that can match nothing is a typo: one line naming the families, not an empty table."""
    code, out, err = run(home, capsys, "audit", "--action", "bogus")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("ostiary: error: unknown --action 'bogus'; families: access_request, audit, ")
    assert run(home, capsys, "audit", "--action", "token.bogus")[0] == 2
    for wanted in ("grant", "client.secret_rotated", "user"):
        assert run(home, capsys, "audit", "--action", wanted)[0] == 0, wanted
    with pytest.raises(SystemExit):
        main(["audit", "--help"])
    listed = capsys.readouterr().out.split("actions:\n", 1)[1]
    assert "  client.secret_rotated " in listed and "  access_request.merged " in listed


def test_client_disable_revokes_its_tokens(
    home: Path, deployment: AuthorizationServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(home, capsys, "as", "client", "disable", "phone-app")
    assert (code, out.strip()) == (0, "disabled client phone-app; 0 tokens revoked")
    code, out, _ = run(home, capsys, "audit", "--action", "client.disabled")
    assert "client.disabled" in out and "phone-app" in out


def _leaves(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.extend(_leaves(sub, (*prefix, name)))
    return found or [(prefix, parser)]


def test_every_new_command_help_teaches() -> None:
    leaves = [(p, sub) for p, sub in _leaves(build_parser()) if p[:1] in (("user",), ("group",), ("consent",))]
    assert len(leaves) == 7 + 4 + 7  # user: add list show disable enable passwd sites (issue #6); consent: + grant
    for path, sub in leaves:
        text = sub.format_help()
        assert "example:" in text and f"ostiary {path[0]}" in text.split("example:")[1], path
        assert sub.description and len(sub.description) > 20, path
        assert "--password " not in text, path  # never a password option taking the value
    audit = build_parser().parse_args(["audit", "--since", "24h"])
    assert audit.since == "24h"


def test_the_password_prompt_asks_twice(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter(["typed pw", "typed pw", "one", "other"])
    prompts: list[str] = []

    def getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("getpass.getpass", getpass)
    assert run(home, capsys, "user", "add", "dora")[0] == 0
    assert prompts == ["password: ", "password again: "]
    code, _, err = run(home, capsys, "user", "passwd", "dora")
    assert code == 1 and "the passwords differ" in err
    with pytest.raises(SystemExit):  # no option takes the password itself
        main(["user", "add", "eve", "--password", "x", "--home", str(home)])


def test_consent_grant_creates_a_database_rule(
    home: Path, deployment: AuthorizationServer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["consent", "grant", "--client", "phone-app", "--audience", "front-door", "--scope", "/lock:PUT"]
    code, _, err = run(home, capsys, *argv, "--as", "frank")
    assert code == 1 and "only administrators" in err
    code, _, err = run(home, capsys, *argv[:-1], "/nope:FLY", "--as", "root")
    assert code == 2 and "--scope" in err
    code, _, err = run(
        home,
        capsys,
        "consent",
        "grant",
        "--client",
        "ghost",
        "--audience",
        "front-door",
        "--scope",
        "/lock:PUT",
        "--as",
        "root",
    )
    assert (code, err.strip()) == (1, "ostiary: error: no client 'ghost'")
    code, out, err = run(home, capsys, *argv, "--as", "root", "--until", "30d", "--json")
    assert code == 0, err
    grant = json.loads(out)
    assert grant["created_by"] == "user:root" and grant["valid_until"] is not None
    # The database rule lets phone-app get the token without asking: the running AS sees the grant once its
    # registry cache re-validates (every 0.1 s), so retry for a bounded time.
    request = TokenRequest(audience="front-door", scope=AifScope.parse_spec("/lock:PUT").to_cbor())
    credentials = ClientCredentials("phone-app", server_secret(deployment).encode(), METHOD_BASIC)
    deadline = time.monotonic() + 5.0
    while True:
        try:
            info = deployment.token_endpoint.handle(request, credentials=credentials, peer="127.0.0.1")
            break
        except ConsentPending:
            assert time.monotonic() < deadline, "the AS never saw the grant"
            time.sleep(0.05)
    assert info.access_token
    code, out, _ = run(home, capsys, "consent", "revoke", grant["id"], "--as", "root")
    assert code == 0 and "1 tokens revoked" in out


def server_secret(server: AuthorizationServer) -> str:
    return str(server.phone_secret)  # type: ignore[attr-defined]


def test_grants_of_a_disabled_user_say_so(
    home: Path, deployment: AuthorizationServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A disabled user's grants stay active (enabling the user brings them back) but do not count meanwhile: the
    grant views tell approvers so."""
    argv = ["consent", "grant", "--as", "root", "--client", "phone-app", "--user", "alice", "--audience", "front-door"]
    assert run(home, capsys, *argv, "--scope", "/lock:PUT")[0] == 0

    def shown() -> tuple[bool, str]:
        grants = json.loads(run(home, capsys, "consent", "grants", "--as", "root", "--json")[1])
        table = run(home, capsys, "consent", "grants", "--as", "root")[1]
        return grants[0]["user_disabled"], table.splitlines()[1]

    disabled, row = shown()
    assert not disabled and " active " in row and "user disabled" not in row
    assert run(home, capsys, "user", "disable", "alice")[0] == 0
    disabled, row = shown()
    assert disabled and " active (user disabled) " in row
    assert run(home, capsys, "user", "enable", "alice")[0] == 0
    assert not shown()[0]
