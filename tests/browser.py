"""Headless Chromium for the page tests (Playwright with the system's Chromium: Debian ``chromium``, installed by
``make test`` when missing; no ``playwright install``). Every wait has an explicit bound (:data:`STEP_MS`).

A developer machine without Chromium skips these tests (:data:`requires_chromium`); CI sets
``OSTIARY_REQUIRE_BROWSER=1`` (``.ci/run``), so there a missing browser fails the run instead of silently skipping
it (as ``OSTIARY_REQUIRE_POSTGRES`` does for PostgreSQL).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
CHROMIUM_ARGS += ["--disable-component-update"]
#: Bound on each browser step (milliseconds).
STEP_MS = 10_000

requires_chromium = pytest.mark.skipif(
    not os.environ.get("OSTIARY_REQUIRE_BROWSER") and not Path(CHROMIUM).exists() and shutil.which("chromium") is None,
    reason="no chromium (apt-get install chromium; `make test` installs it)",
)


@contextmanager
def launched_chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright ``Browser``), closed afterwards."""
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        executable = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, timeout=STEP_MS * 3)
        try:
            yield launched
        finally:
            launched.close()


@contextmanager
def new_page(browser: Any, **context_options: Any) -> Iterator[Any]:
    """A page in a fresh browser context (its own cookies) whose every wait is bounded by :data:`STEP_MS`."""
    context = browser.new_context(**context_options)
    context.set_default_timeout(STEP_MS)
    try:
        yield context.new_page()
    finally:
        context.close()
