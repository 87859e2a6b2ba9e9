"""``ostiary policy validate`` and ``ostiary policy explain``: output, exit statuses and help texts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ostiary.cli import main

POLICY = """\
timezone: Europe/Berlin
audience_groups:
  floor-3: ["building-a/floor-3/*", building-a/lobby]
rules:
  - id: office-hours
    groups: [staff]
    audience_groups: [floor-3]
    scope: "/lock:GET,PUT"
    windows: ["Mon-Fri 09:00-18:00"]
    max_lifetime: 3600
  - id: no-delete
    effect: deny
    client: "*"
    audience_groups: [floor-3]
    scope: "/lock:DELETE"
  - id: visitors-ask
    effect: consent
    users: "*"
    audience_groups: [floor-3]
    scope: "/lock:PUT /log:GET"
    approvers: {users: [frank], groups: [facility]}
"""

BROKEN = """\
rules:
  - client: a
    audience: b
    scope: /x:FLY
  - client: a
    audience: b
    scope: /x:GET
    max_lifetime: soon
    windows: [Mon 09:00-18:00]
"""


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


# --------------------------------------------------------------------------------------------------------------
# validate
# --------------------------------------------------------------------------------------------------------------


def test_validate_a_valid_file(policy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(["policy", "validate", str(policy)], capsys)
    assert status == 0 and err == ""
    assert out == f"{policy}: valid, 3 rules (1 permit, 1 deny, 1 consent), 1 audience groups\n"


def test_validate_warns_about_rules_that_have_ended(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A rule past its valid_until is valid but never applies again: a warning with its line, exit status 0."""
    path = tmp_path / "policy.yaml"
    path.write_text(
        POLICY
        + "  - {id: last-year, client: a, audience: b, scope: r, valid_until: 2020-01-01T00:00:00+01:00}\n"
        + "  - {id: far-future, client: a, audience: b, scope: r, valid_until: 2999-01-01T00:00:00Z}\n"
    )
    status, out, err = run(["policy", "validate", str(path)], capsys)
    assert status == 0 and out.startswith(f"{path}: valid, 5 rules")
    warning = "warning: rule last-year ended 2019-12-31T23:00:00Z (valid_until); it no longer applies"
    assert err == f"{path}:22: {warning}\n"  # the rule's line


def test_validate_lists_every_mistake_with_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    status, out, err = run(["policy", "validate", str(path)], capsys)
    assert status == 1 and out == ""
    lines = err.splitlines()
    assert lines[0].startswith(f"{path}:4: invalid scope '/x:FLY'")
    assert lines[1].startswith(f"{path}:8: 'max_lifetime' must be an integer")
    assert lines[2].startswith(f"{path}:9: windows need a 'timezone'")
    assert lines[3] == f"{path}: 3 mistakes"


def test_validate_several_files(policy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(["policy", "validate", str(policy), str(tmp_path / "absent.yaml")], capsys)
    assert status == 1 and "valid" in out and err == f"{tmp_path / 'absent.yaml'}: no such file\n"


def test_validate_defaults_to_the_deployment_file(
    policy: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OSTIARY_HOME", str(policy.parent))
    status, out, _ = run(["policy", "validate"], capsys)
    assert status == 0 and out.startswith(f"{policy}: valid")


def test_validate_the_files_ostiary_as_init_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ostiary.as_cli import DEFAULT_POLICY

    path = tmp_path / "policy.yaml"
    path.write_text(DEFAULT_POLICY)
    status, out, _ = run(["policy", "validate", str(path)], capsys)
    assert status == 0 and "no rules" in out
    # Its header describes the policy engine (permit, deny, consent), and its commented example is a valid policy.
    header = DEFAULT_POLICY.split("\nrules:\n")[0]
    assert all(word in header for word in ("permit", "deny", "consent", "README")) and "allow list" not in header
    example = "\n".join(line[2:] for line in header.splitlines() if line.startswith(("# rules:", "#   ")))
    path.write_text(example)
    status, out, _ = run(["policy", "validate", str(path)], capsys)
    assert status == 0 and "2 rules (1 permit, 1 consent)" in out


# --------------------------------------------------------------------------------------------------------------
# explain
# --------------------------------------------------------------------------------------------------------------


def test_explain_a_grant_in_part(policy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["policy", "explain", "--file", str(policy), "--client", "phone-app", "--user", "alice"]
    argv += ["--group", "staff", "--audience", "building-a/floor-3/door-1"]
    argv += ["--scope", "/lock:GET,PUT,DELETE /log:GET", "--at", "2025-03-31T17:55:00+02:00"]
    status, out, err = run(argv, capsys)
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert lines[:7] == [
        "decision:      granted in part (the rest needs consent)",
        "granted:       /lock:GET,PUT",
        "not after:     2025-03-31T18:00:00+02:00 (in 5 min)",
        "max lifetime:  3600 s",
        "needs consent: /log:GET",
        "approvers:     user:frank, group:facility",
        "reason:        permitted by office-hours; /log:GET needs consent of user:frank, group:facility",
    ]
    assert lines[7] == "rules (* decided):"
    assert lines[8].split() == [
        "*",
        "office-hours",
        f"{policy}:5",
        "permit",
        "grants",
        "/lock:GET,PUT",
        "[Mon-Fri",
        "09:00-18:00",
        "Europe/Berlin,",
        "tokens",
        "at",
        "most",
        "3600",
        "s]",
    ]
    assert lines[9].split()[:4] == ["no-delete", f"{policy}:11", "deny", "denies"]
    assert lines[10].split()[:5] == ["*", "visitors-ask", f"{policy}:16", "consent", "needs"]


def test_explain_times_in_the_offset_of_at(policy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["policy", "explain", "--file", str(policy), "--client", "c", "--user", "a", "--group", "staff"]
    argv += ["--audience", "building-a/lobby", "--scope", "/lock:GET", "--at", "2025-03-31T15:55:00Z"]
    _, out, _ = run(argv, capsys)
    assert "not after:    2025-03-31T16:00:00+00:00 (in 5 min)" in out


def test_explain_consent_required(policy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["policy", "explain", "--file", str(policy), "--client", "phone-app", "--user", "bob"]
    argv += ["--audience", "building-a/lobby", "--scope", '[["/lock",4]]', "--at", "2025-03-31T12:00:00+02:00"]
    status, out, _ = run(argv, capsys)
    assert status == 0
    assert "decision:      consent required (nothing is granted until someone approves)" in out
    assert "approvers:     user:frank, group:facility" in out and "granted:" not in out


def test_explain_refusals(policy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["policy", "explain", "--file", str(policy), "--client", "c", "--scope", "/lock:GET"]
    _, out, _ = run([*base, "--audience", "elsewhere"], capsys)
    assert out.splitlines() == [
        "decision: refused",
        "reason:   no rule matches the client, user and audience",
        "rules:    none match the client, user and audience",
    ]
    argv = [*base, "--audience", "building-a/lobby", "--user", "a", "--group", "staff"]
    _, out, _ = run([*argv, "--at", "2025-04-05T12:00:00+02:00"], capsys)  # a Saturday
    assert "reason:   office-hours not in force at this time" in out
    assert "not in force at this time (outside Mon-Fri 09:00-18:00 Europe/Berlin)" in out


def test_explain_text_scopes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("rules:\n  - {client: '*', audience: sensors, scope: 'read write', max_lifetime: 300}\n")
    argv = ["policy", "explain", "--file", str(path), "--client", "c", "--audience", "sensors", "--scope", "read x"]
    _, out, _ = run(argv, capsys)
    assert "granted:      read\n" in out and "max lifetime: 300 s" in out and "not after" not in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--at", "2025-03-31T17:55:00"], "needs a UTC offset"),
        (["--at", "yesterday"], "not an ISO 8601 time"),
        (["--scope", "/lock:FLY"], "--scope '/lock:FLY'"),
        (["--scope", "[1]"], "--scope"),
        (["--group", "staff"], "--group needs --user"),
    ],
)
def test_explain_usage_errors(policy: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["policy", "explain", "--file", str(policy), "--client", "c", "--audience", "a", "--scope", "/lock:GET"]
    status, out, err = run([*argv, *extra], capsys)
    assert status == 2 and out == "" and message in err and err.startswith("ostiary: error: ")


def test_explain_a_broken_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    argv = ["policy", "explain", "--file", str(path), "--client", "c", "--audience", "a", "--scope", "/lock:GET"]
    status, _, err = run(argv, capsys)
    assert status == 1 and f"{path}:4: invalid scope" in err
    status, _, err = run([*argv[:3], str(tmp_path / "absent.yaml"), *argv[4:]], capsys)
    assert status == 1 and "no such file" in err


# --------------------------------------------------------------------------------------------------------------
# help texts teach
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["policy"], ["validate", "explain", "ostiary policy explain --file", "deny, consent"]),
        (["policy", "validate"], ["FILE:LINE: message", "ostiary policy validate policy.yaml"]),
        (["policy", "explain"], ["--at TIME", "UTC offset", "aif+json", "ostiary policy explain --file", "--group"]),
    ],
)
def test_help(argv: list[str], fragments: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for fragment in fragments:
        assert fragment in out, fragment


def test_console_script(policy: Path) -> None:
    """The installed entry point runs the group (a real process, as a user would)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    result = subprocess.run(
        [sys.executable, "-m", "ostiary", "policy", "validate", str(policy)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.startswith(f"{policy}: valid")
