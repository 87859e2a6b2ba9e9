"""Numbers typed by users are ASCII digits of bounded length: ``"¹".isdigit()`` is true but ``int("¹")`` fails, and
``int()`` refuses more than 4,300 digits. These parsers used to let both through to ``int()`` (a traceback)."""

from __future__ import annotations

import pytest

from ace_core.lwm2m.errors import InvalidBootstrapRequest
from as_server.bootstrap.server import BootstrapService
from ostiary.admin_cli import _time
from ostiary.as_cli import CommandError


@pytest.mark.parametrize("raw", ["\u00b9", "\u0661\u0662", "9" * 5000, "-5", "1.5"])
def test_bootstrap_lifetime_refuses_what_is_not_ascii_digits(raw: str) -> None:
    with pytest.raises(InvalidBootstrapRequest, match="lt must be"):
        BootstrapService._lifetime(raw, 86400)  # noqa: SLF001 - the parser of the lt query parameter


def test_bootstrap_lifetime_takes_seconds() -> None:
    assert BootstrapService._lifetime(None, 86400) == 86400  # noqa: SLF001
    assert BootstrapService._lifetime("3600", 86400) == 3600  # noqa: SLF001


@pytest.mark.parametrize("text", ["\u00b9", "\u00b9d", "9" * 5000 + "d", "9" * 5000])
def test_cli_times_refuse_what_is_not_ascii_digits(text: str) -> None:
    with pytest.raises(CommandError, match="not a time"):
        _time(text, now=1_700_000_000, future=True)


def test_cli_times_take_epochs_durations_and_iso() -> None:
    assert _time("1700000100", now=1_700_000_000, future=True) == 1_700_000_100
    assert _time("2d", now=1_700_000_000, future=True) == 1_700_000_000 + 2 * 86400
    assert _time("2023-11-14T22:15:00Z", now=0, future=True) == 1_700_000_100
