"""``ostiary client token|open|get`` against a live AS and door lock on loopback (fixtures in ``conftest.py``).

The commands run in the test's thread (``asyncio.run`` inside ``main``); the AS and the lock run on the fixtures'
event-loop thread.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from ostiary.cli import main
from tests.as_server.transport.harness import LoopThread
from tests.client_sdk.lockworld import DOOR_APP, DOOR_SECRET, Lock, World


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSTIARY_CLIENT_SECRET", DOOR_SECRET)
    for var in ("OSTIARY_CLIENT_ID", "OSTIARY_AS_URI"):
        monkeypatch.delenv(var, raising=False)


def _token(world: World, *extra: str) -> list[str]:
    return ["client", "token", "--as", world.coap_as, "--client-id", DOOR_APP, "--audience", "front-door", *extra]


def test_token_shows_the_access_information_but_not_the_master_secret(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_token(world, "--scope", "/lock:PUT")) == 0
    out = capsys.readouterr().out
    assert "access token for front-door" in out
    assert "ace_profile:  coap_oscore" in out and "expires_in:   3600 s" in out
    assert "OSCORE_Input_Material" in out and "ms:        (secret, 16 bytes)" in out
    assert re.search(r"id: +h'[0-9a-f]+'", out)
    assert DOOR_SECRET not in out


@pytest.mark.parametrize("transport", ["coap", "http"])
def test_token_json(world: World, transport: str, capsys: pytest.CaptureFixture[str]) -> None:
    as_uri = world.coap_as if transport == "coap" else world.http_as
    argv = ["client", "token", "--as", as_uri, "--client-id", DOOR_APP]
    assert main([*argv, "--audience", "front-door", "--scope", "/lock:GET,PUT", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["ace_profile"] == "coap_oscore" and shown["token_type"] == "POP"
    assert shown["scope"] == "/lock:GET,PUT (AIF) -- as requested"  # the AS omits a scope granted as asked
    assert shown["cnf"]["osc"]["ms"] == "(secret, 16 bytes)"
    assert shown["access_token"]


def test_open_discovers_the_as_and_unlocks(world: World, lock: Lock, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["client", "open", lock.uri, "--client-id", DOOR_APP]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith("PUT /lock unprotected: 4.01 with hints: AS " + world.coap_as)
    assert "audience front-door" in lines[0]
    assert lines[1].startswith("token uploaded to /authz-info: 2.01, token for front-door")
    assert "/lock:PUT (AIF)" in lines[1] and "recipient ids" in lines[1]
    assert lines[2] == "PUT /lock 'unlock' over OSCORE: 2.04 Changed"
    assert "hints are unauthenticated -- pass --as to pin it" in captured.err
    assert lock.door is not None and lock.door.locked is False


def test_open_with_pinned_as_and_audience_skips_discovery(
    world: World, lock: Lock, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["client", "open", lock.uri, "--client-id", DOOR_APP, "--as", world.coap_as, "--audience", "front-door"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "unprotected" not in captured.out and captured.err == ""
    assert captured.out.splitlines()[-1] == "PUT /lock 'unlock' over OSCORE: 2.04 Changed"


def test_get_prints_the_response(world: World, lock: Lock, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["client", "get", lock.uri + "/battery", "--client-id", DOOR_APP, "--as", world.coap_as]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == ["2.05 Content (application/json)", '{"battery": 87}']


def test_get_not_covered_exits_1(world: World, lock: Lock, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["client", "get", lock.uri + "/battery", "--client-id", DOOR_APP, "--as", world.coap_as]
    assert main([*argv, "--scope", "/lock:GET"]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "4.03 Forbidden"


def test_secret_from_a_file(
    world: World, lock: Lock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OSTIARY_CLIENT_SECRET")
    secret = tmp_path / "app.secret"
    secret.write_text(DOOR_SECRET + "\n")
    secret.chmod(0o600)
    argv = ["client", "get", lock.uri + "/lock", "--client-id", DOOR_APP, "--secret-file", str(secret)]
    assert main([*argv, "--as", world.coap_as]) == 0
    assert "warning" not in capsys.readouterr().err
    secret.chmod(0o644)
    assert main([*argv, "--as", world.coap_as]) == 0
    assert "readable by other users" in capsys.readouterr().err


def test_secret_from_a_named_variable(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OSTIARY_CLIENT_SECRET")
    monkeypatch.setenv("DOOR_APP_SECRET", DOOR_SECRET)
    assert main(_token(world, "--scope", "/lock:GET", "--secret-env", "DOOR_APP_SECRET")) == 0


def test_missing_secret_is_a_usage_error(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OSTIARY_CLIENT_SECRET")
    assert main(_token(world, "--scope", "/lock:GET")) == 2
    assert "--secret-env VAR or --secret-file FILE" in capsys.readouterr().err


def test_wrong_secret_is_reported_without_echoing_it(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OSTIARY_CLIENT_SECRET", "not-the-secret-Qq9")
    assert main(_token(world, "--scope", "/lock:GET")) == 1
    err = capsys.readouterr().err
    assert "the AS refused: invalid_client" in err and "not-the-secret-Qq9" not in err


def test_lock_that_does_not_answer(world: World, loops: LoopThread, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.as_server.transport.harness import free_port

    silent = f"coap://127.0.0.1:{free_port()}"
    argv = ["client", "get", silent + "/lock", "--client-id", DOOR_APP, "--as", world.coap_as, "--timeout", "0.5"]
    assert main(argv) == 1
    assert "cannot reach coap://127.0.0.1:" in capsys.readouterr().err  # ICMP port unreachable, not a hang


def test_lock_that_stays_silent_times_out(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """A bound UDP port that never answers: bounded by --timeout, not a hang."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        uri = f"coap://127.0.0.1:{silent.getsockname()[1]}/lock"
        argv = ["client", "get", uri, "--client-id", DOOR_APP, "--as", world.coap_as, "--timeout", "0.3"]
        assert main(argv) == 1
    assert "within 0.3 s" in capsys.readouterr().err


def test_a_refusal_with_an_error_uri_shows_it(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Consent pending (RFC 6749 §5.2 ``error_uri``): the user needs the access request's URI to poll or hand on."""
    from ace_core.errors import InvalidScope
    from client_sdk.client import AceClient

    uri = "coap://127.0.0.1:5683/access-requests/He7PjoBL1oaXuBkSZjH2Rg"

    async def pending(self: AceClient, *args: object, **kwargs: object) -> object:
        raise InvalidScope("consent pending: follow error_uri for the decision", uri=uri)

    monkeypatch.setattr(AceClient, "request_token", pending)
    assert main(_token(world, "--scope", "/lock:GET")) == 1
    assert f"the AS refused: invalid_scope: consent pending: follow error_uri for the decision ({uri})" in (
        capsys.readouterr().err
    )
