"""`ostiary demo` (what `make demo` runs) completes and every step behaves."""

from __future__ import annotations

import io

from ostiary.demo import run


def test_demo_runs_every_step_ok() -> None:
    out = io.StringIO()
    assert run(out) == 0
    text = out.getvalue()
    assert "FAIL" not in text
    for expected in ("4.01 SecurityWrapperFailed", "4.03 AudienceMismatch", "4.01 TokenExpired", "4.00 TokenMalformed"):
        assert expected in text
