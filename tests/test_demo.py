"""`ostiary demo` (what `make demo` runs) completes and every step behaves: a real AS process (CoAP + gunicorn),
the client SDK over both transports, the lock-side checks."""

from __future__ import annotations

import io
from pathlib import Path

from ostiary.demo import run


def test_demo_runs_every_step_ok(tmp_path: Path) -> None:
    out = io.StringIO()
    assert run(out, home=tmp_path / "as") == 0, out.getvalue()
    text = out.getvalue()
    assert "FAIL" not in text
    for expected in (
        "4.01 SecurityWrapperFailed",
        "4.03 AudienceMismatch",
        "4.01 TokenExpired",
        "4.00 TokenMalformed",
        "InvalidClient (4.01)",
        "InvalidScope (4.00)",
        "exited with status 0",
    ):
        assert expected in text
