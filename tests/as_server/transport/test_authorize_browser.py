"""``/authorize`` in headless Chromium (RFC 6749 §4.1, RFC 8252 §7.3): the user signs in on the page and the
browser follows the redirect to the app's loopback listener, which gets the code; "Deny" brings the app
``access_denied``.

The HTTP-level tests (test_authorization_code.py) follow the redirect themselves; a browser enforces the page's
Content-Security-Policy, whose ``form-action`` applies to the redirect that answers the form in Chromium. With
``form-action 'self'`` alone the browser stayed on the sign-in page: the code was issued and never delivered.
Driven by Playwright with the system's Chromium, like tests/console/test_console_browser.py (every wait bounded).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.as_server.transport.harness import LoopThread
from tests.as_server.transport.oauth_apps import (
    PASSWORDS,
    OAuthDeployment,
    access_information,
    authorization_params,
    pkce,
    start_oauth,
)
from tests.browser import launched_chromium, new_page, requires_chromium

pytestmark = requires_chromium


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory, loops: LoopThread) -> Iterator[OAuthDeployment]:
    yield from start_oauth(tmp_path_factory.mktemp("home"), loops)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launched_chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    with new_page(browser) as opened:
        yield opened


def open_sign_in(page: Any, dep: OAuthDeployment) -> str:
    """Open the sign-in page for the loopback app, as the app's call to the system browser does; returns the
    PKCE verifier."""
    verifier, challenge = pkce()
    params = authorization_params(redirect_uri=dep.app.redirect_uri, challenge=challenge)
    page.goto(f"{dep.base}/authorize?{urlencode(params)}")
    assert "Door app" in page.title() or page.locator("h1").count() == 1
    return verifier


def test_allow_in_the_browser_delivers_the_code_to_the_loopback_app(page: Any, dep: OAuthDeployment) -> None:
    verifier = open_sign_in(page, dep)
    page.fill("#username", "alice")
    page.fill("#password", PASSWORDS["alice"])
    before = len(dep.app.received)
    page.click("button[value=allow]")
    page.wait_for_url(f"{dep.app.redirect_uri}?*")  # the browser followed the redirect to the app
    assert "You can close this window." in page.content()
    query = dep.app.received[before]
    assert query["state"] == "state-xyz"
    info = access_information(dep.exchange(query["code"], verifier, redirect_uri=dep.app.redirect_uri))
    assert dep.verify(info.access_token).sub == "alice"


def test_deny_in_the_browser_tells_the_app(page: Any, dep: OAuthDeployment) -> None:
    open_sign_in(page, dep)
    before = len(dep.app.received)
    page.click("button[value=deny]")
    page.wait_for_url(f"{dep.app.redirect_uri}?*")
    query = dep.app.received[before]
    assert query["error"] == "access_denied" and query["state"] == "state-xyz" and "code" not in query
