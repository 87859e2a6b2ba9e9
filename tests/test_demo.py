"""`ostiary demo` (what `make demo` runs) completes and every step behaves: a factory batch, a claim, the AS
(`ostiary as serve`, with its bootstrap server) and a door lock that bootstraps from its factory bundle (`ostiary lock
serve --bootstrap`) as separate processes, the phone apps (client SDK) in this one, and a key rotation."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ostiary.demo import run


def test_demo_runs_every_step_ok(tmp_path: Path) -> None:
    out = io.StringIO()
    assert run(out, home=tmp_path / "demo") == 0, out.getvalue()
    text = out.getvalue()
    assert "FAIL" not in text
    for expected in (
        "$ ostiary factory batch --count 3 --model L1",
        "claimed L1-00000001 (urn:dev:ops:ostiary-L1-00000001) for site building-a",
        "the front door is lock L1-00000001",
        "audience L1-00000001, key L1-00000001#1",
        "last contact:",
        "without a token: 4.01 with hints",
        "audience L1-00000001, scope",
        "PUT /lock 'unlock' over OSCORE: 2.04",
        "outside this token's scope: 4.03",
        "outside it too: 4.05",
        "InvalidScope (4.00)",
        "refused at /authz-info: 4.01",
        "uploaded after it expired: 4.01",
        "created key generation 2 of L1-00000001",
        "the phone app's new token opens the door: PUT /lock over OSCORE: 2.04",
        "the lock's current key (lock: generation 2)",
        "lock exited with status 0",
        "as exited with status 0",
        "bootstrap PSK or batch key appears in their logs",
    ):
        assert expected in text, expected


def test_demo_reports_a_step_that_cannot_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command that fails stops the demo with a readable message and status 1, not a traceback."""
    monkeypatch.setattr("ostiary.demo.BATCH_SIZE", 0)  # `ostiary factory batch --count 0` is refused
    out = io.StringIO()
    assert run(out, home=tmp_path / "demo") == 1
    assert "The demo stopped: ostiary factory batch failed: count must be 1..1,000,000" in out.getvalue()
