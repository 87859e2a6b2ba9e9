"""`ostiary demo` (what `make demo` runs) completes and every step behaves: the AS and the door lock as separate
processes (`ostiary as serve`, `ostiary lock serve`), the phone apps (client SDK) in this one."""

from __future__ import annotations

import io
from pathlib import Path

from ostiary.demo import run


def test_demo_runs_every_step_ok(tmp_path: Path) -> None:
    out = io.StringIO()
    assert run(out, home=tmp_path / "demo") == 0, out.getvalue()
    text = out.getvalue()
    assert "FAIL" not in text
    for expected in (
        "without a token: 4.01 with hints",
        "PUT /lock 'unlock' over OSCORE: 2.04",
        "outside this token's scope: 4.03",
        "outside it too: 4.05",
        "InvalidScope (4.00)",
        "refused at /authz-info: 4.01",
        "uploaded after it expired: 4.01",
        "lock exited with status 0",
        "as exited with status 0",
    ):
        assert expected in text, expected
