"""The manager console in headless Chromium (issue #6), against a real AS on loopback (HTTP and CoAP sockets):
a client asks over CoAP and is told to wait for consent -> a manager signs in, sees the request on the dashboard,
approves it with a narrower weekly window -> the client's next token expires by the window's end -> a revocation
in the console makes introspection answer inactive. Also: a POST without the CSRF token, a ``user``-role account and
a manager who is not an approver (and manages another site) are refused. And a manager claims a device of the
factory's batch for their site with the devices page's form (issue #7, "Ownership").

Driven by Playwright with the system's Chromium (Debian ``chromium``, installed by ``make test`` when missing; no
``playwright install``). Skipped when either is missing. Every wait has an explicit bound (:data:`STEP_MS`). The run
writes the two screenshots of the README to ``docs/`` when ``OSTIARY_SCREENSHOTS=1``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ace_core.messages import (
    AccessInformation,
    ErrorResponse,
    IntrospectionRequest,
    IntrospectionResponse,
    TokenRequest,
)
from ace_core.scope import AifScope
from as_server.app import AuthorizationServer
from as_server.bootstrap.device_db import DEVICE_DB_FILE, SqliteDeviceStore
from as_server.bootstrap.devices import BatchRecord
from as_server.sealing import MasterKey
from tests.as_server.consent_fixtures import PASSWORDS, add_people
from tests.as_server.transport.harness import (
    LOCK_INTROSPECTION_SECRET,
    SECRETS,
    LoopThread,
    Running,
    init_home,
    start,
)
from tests.as_server.transport.wire import basic
from tests.browser import launched_chromium, new_page, requires_chromium
from tests.console.test_console_devices import BATCH, DEVICES

DOCS = Path(__file__).resolve().parents[2] / "docs"

POLICY = """\
rules:
  - id: ask-facility
    effect: consent
    client: phone-app
    audience: front-door
    scope: "/lock:GET,PUT"
    approvers: {users: [frank], groups: [facility]}
"""

pytestmark = requires_chromium


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, loops: LoopThread) -> Iterator[Running]:
    with contextlib.ExitStack() as stack:
        home = tmp_path_factory.mktemp("console-home")
        settings = init_home(home)
        (home / "policy.yaml").write_text(POLICY)
        server = AuthorizationServer.from_settings(settings)
        stack.callback(server.close)
        running = start(server, loops)
        stack.callback(running.stop)
        registry = server.console.device_registry
        assert registry is not None and registry.path == home / DEVICE_DB_FILE
        stack.callback(registry.close)
        add_people(server.storage)
        now = int(datetime.now(UTC).timestamp())
        server.storage.set_manager_sites("frank", ["front-door"], actor="cli:test", now=now)
        server.storage.set_manager_sites("mallory", ["building-b/*"], actor="cli:test", now=now)
        with SqliteDeviceStore(registry.path, MasterKey.load(settings.master_key_file)) as devices:
            devices.add_batch(BatchRecord(batch_id=BATCH, model="L1", count=1, site=None, created_at=now), bytes(32))
            devices.add_many(DEVICES[:1], now=now)
            devices.complete_batch(BATCH)
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launched_chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    with new_page(browser, viewport={"width": 1100, "height": 900}) as opened:
        yield opened


def coap_token(dep: Running) -> tuple[str, bytes]:
    request = TokenRequest(
        client_id="phone-app",
        client_secret=SECRETS["phone-app"].encode(),
        audience="front-door",
        scope=AifScope.parse_spec("/lock:PUT").to_cbor(),
    )
    reply = dep.coap.post("/token", request.to_cbor())
    return reply.code.dotted, reply.payload


def sign_in(page: Any, dep: Running, name: str) -> None:
    page.goto(dep.http.base + "/console/")
    page.fill("#username", name)
    page.fill("#password", PASSWORDS[name])
    page.click("button[type=submit]")
    page.wait_for_load_state()


def narrow_window(now: datetime) -> tuple[str, str, datetime]:
    """A daily window from a minute ago to ten minutes from now, in a fixed-offset zone whose local time is about
    noon (so the window never crosses midnight, whatever the hour in UTC), and its end as a UTC instant."""
    offset = 12 - now.hour  # hours east of UTC: -11 .. +12, all of which have an Etc/GMT zone
    zone = "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"  # POSIX sign: Etc/GMT-3 is UTC+3
    local = now + timedelta(hours=offset)
    start = (local - timedelta(minutes=1)).replace(second=0, microsecond=0)
    end = (local + timedelta(minutes=11)).replace(second=0, microsecond=0)
    window = f"daily {start.strftime('%H:%M')}-{end.strftime('%H:%M')}"
    return window, zone, end - timedelta(hours=offset)


def introspect(dep: Running, token: bytes) -> IntrospectionResponse:
    reply = dep.http.post(
        "/introspect",
        content=IntrospectionRequest(token=token).to_cbor(),
        headers={
            "Content-Type": "application/ace+cbor",
            "Authorization": basic("front-door", LOCK_INTROSPECTION_SECRET),
        },
    )
    assert reply.status_code == 200
    return IntrospectionResponse.from_cbor(reply.content)


def test_manager_approves_a_coap_request_with_a_window_then_revokes_the_token(deployment: Running, page: Any) -> None:
    dep = deployment
    screenshots = os.environ.get("OSTIARY_SCREENSHOTS") == "1"
    # 1. The app asks over CoAP: consent pending.
    code, payload = coap_token(dep)
    assert code == "4.00"
    error = ErrorResponse.from_cbor(payload)
    assert error.error_uri is not None
    request_id = error.error_uri.rsplit("/", 1)[1]

    # 2. The manager signs in and sees it on the dashboard.
    sign_in(page, dep, "frank")
    assert page.url.endswith("/console/")
    assert page.inner_text("#pending-count") == "1"
    assert "phone-app" in page.inner_text("main")
    if screenshots:
        DOCS.mkdir(exist_ok=True)
        page.screenshot(path=str(DOCS / "console-dashboard.png"), full_page=True)

    # 3. ... opens it and approves with a narrower window.
    page.click(f"a[href='/console/requests/{request_id}']")
    page.wait_for_load_state()
    assert page.inner_text("#requested-scope") == "/lock:PUT"
    window, zone, window_end = narrow_window(datetime.now(UTC))
    page.fill("#windows", window)
    page.fill("#timezone", zone)
    page.fill("#note", "during the cleaning round only")
    if screenshots:
        page.screenshot(path=str(DOCS / "console-approve.png"), full_page=True)
    page.click("#approve")
    page.wait_for_load_state()
    assert "The access request is approved" in page.inner_text("#notice")

    # 4. The client's next token request succeeds, and the token expires by the window's end.
    code, payload = coap_token(dep)
    assert code == "2.01", payload
    info = AccessInformation.from_cbor(payload)
    record = dep.server.storage.list_tokens(client_id="phone-app", audience="front-door", limit=1)[0]
    assert record.exp <= int(window_end.timestamp())
    assert info.expires_in is not None and info.expires_in <= 12 * 60
    assert introspect(dep, info.access_token).active is True

    # 5. The manager revokes the token in the console: introspection answers inactive.
    page.goto(dep.http.base + "/console/tokens?client=phone-app")
    page.click(f"form[action='/console/tokens/{record.cti.hex()}/revoke'] button")
    page.wait_for_load_state()
    assert "introspection now answers inactive" in page.inner_text("#notice")
    assert introspect(dep, info.access_token).active is False

    # 6. A POST without the CSRF token (with the session cookie) is refused.
    refused = page.request.post(dep.http.base + "/console/grants/" + request_id + "/revoke", form={"x": "1"})
    assert refused.status == 403
    assert dep.server.storage.get_grant(request_id).status.value == "active"


def test_wrong_roles_are_refused(deployment: Running, page: Any) -> None:
    dep = deployment
    # A user-role account cannot sign in to the console.
    sign_in(page, dep, "alice")
    assert page.url.endswith("/console/signin")
    assert "for managers and administrators" in page.inner_text("#error")
    # A manager of another site, not an approver: no requests, no tokens, and a request's page is refused.
    code, payload = coap_token(dep)
    request_id = ErrorResponse.from_cbor(payload).error_uri.rsplit("/", 1)[1] if code == "4.00" else None
    sign_in(page, dep, "mallory")
    assert page.url.endswith("/console/")
    assert page.inner_text("#pending-count") == "0"
    page.goto(dep.http.base + "/console/tokens")
    assert "No tokens match in your sites" in page.inner_text("main")
    if request_id is not None:
        response = page.goto(dep.http.base + f"/console/requests/{request_id}")
        assert response is not None and response.status == 403


def test_manager_claims_a_device_with_the_form(deployment: Running, page: Any) -> None:
    dep = deployment
    sign_in(page, dep, "frank")
    page.click("nav a[href='/console/devices']")
    page.wait_for_load_state()
    assert "L1-00000001" not in page.inner_text("main")  # unclaimed: not shown to a manager
    page.fill("#enrolment_id", DEVICES[0].enrolment_id.lower().replace("-", " "))
    page.select_option("#claim-site", "front-door")
    page.click("#claim")
    page.wait_for_load_state()
    assert "Claimed L1-00000001" in page.inner_text("#notice")
    assert "L1-00000001" in page.inner_text("#devices")
    page.fill("#enrolment_id", DEVICES[0].enrolment_id)  # the same id again: the first claim won
    page.click("#claim")
    page.wait_for_load_state()
    assert "already claimed" in page.inner_text("#error")
