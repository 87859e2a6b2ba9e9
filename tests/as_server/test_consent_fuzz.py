"""Malformed input to the consent workflow's parsers and endpoints gets a clear 4xx, never a 5xx or a traceback
(hypothesis). The HTTP API runs in Flask's test client on an AS with memory storage; the CoAP resource is fuzzed
over a real socket in transport/test_consent_e2e.py."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ace_core.scope import AifScope, TextScope
from as_server.consent import Approval, parse_approval
from as_server.errors import ApiBadRequest
from as_server.storage.memory import MemoryStorage
from as_server.transport.http import create_app
from tests.as_server.consent_fixtures import NOW, PASSWORDS, ConsentWorld
from tests.as_server.transport.harness import assert_no_traceback

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
approval_fields = st.sampled_from(
    ["scope", "valid_from", "valid_until", "windows", "timezone", "max_lifetime", "note", "extra"]
)
plausible = {
    "scope": st.sampled_from(["/lock:PUT", "/lock:GET,PUT", '[["/lock",4]]', "read", "/lock:FLY", "", "/"]),
    "valid_from": st.one_of(st.integers(-5, 2**40), st.sampled_from(["2027-01-01T00:00:00Z", "yesterday", ""])),
    "valid_until": st.one_of(st.integers(-5, 2**40), st.sampled_from(["2030-01-01T00:00:00+01:00", "Z"])),
    "windows": st.lists(st.sampled_from(["Mon-Fri 09:00-18:00", "daily 22:00-06:00", "Mon 25:00-26:00", "x"])),
    "timezone": st.sampled_from(["Europe/Berlin", "UTC", "Mars/Olympus", "../etc/passwd", ""]),
    "max_lifetime": st.one_of(st.integers(-5, 2**33), st.booleans()),
    "note": st.text(max_size=600),
}
approval_bodies = st.dictionaries(approval_fields, json_values, max_size=5) | st.fixed_dictionaries(
    {}, optional={k: v | json_values for k, v in plausible.items()}
)


@FUZZ
@given(body=approval_bodies, aif=st.booleans())
def test_parse_approval_accepts_or_refuses_with_400(body: dict[str, Any], aif: bool) -> None:
    requested = AifScope.parse_spec("/lock:GET,PUT") if aif else TextScope.parse("read write")
    try:
        approval = parse_approval(body, requested, now=NOW)
    except ApiBadRequest as exc:
        assert exc.http_status == 400 and exc.description
        return
    assert isinstance(approval, Approval)


@pytest.fixture
def app_world() -> Iterator[tuple[ConsentWorld, Any]]:
    world = ConsentWorld.create(MemoryStorage())
    world.server.consent._limiter.limit = 10**9  # noqa: SLF001 - fuzzing sends many wrong passwords
    client = create_app(world.server).test_client()
    yield world, client
    world.server.close()


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _check(response: Any) -> None:
    assert 400 <= response.status_code < 500 or response.status_code == 200, response.status_code
    assert_no_traceback(response.data)
    if response.data:
        assert response.headers["Content-Type"].startswith("application/json")
        json.loads(response.data)


paths = st.one_of(
    st.builds(lambda i: f"/access-requests/{quote(i, safe='')}", st.text(max_size=30)),
    st.builds(
        lambda kind, i, action: f"/consent/{kind}/{i}{action}",
        st.sampled_from(["requests", "grants", "other"]),
        st.from_regex(r"[A-Za-z0-9_%.-]{0,30}", fullmatch=True),
        st.sampled_from(["", "/approve", "/deny", "/revoke", "/x"]),
    ),
    st.sampled_from(["/consent/requests", "/consent/grants", "/consent"]),
)
auth_headers = st.one_of(
    st.none(),
    st.sampled_from(
        [
            _basic("frank", PASSWORDS["frank"]),
            _basic("alice", PASSWORDS["alice"]),
            _basic("frank", "wrong"),
            "Basic !!!",
            "Bearer abc",
            "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),
        ]
    ),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
)


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    path=paths,
    query=st.dictionaries(st.sampled_from(["status", "limit", "x"]), st.text(max_size=8), max_size=3),
    body=st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())),
    content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", None]),
    auth=auth_headers,
)
def test_the_http_api_answers_malformed_requests_with_4xx(
    app_world: tuple[ConsentWorld, Any],
    method: str,
    path: str,
    query: dict[str, str],
    body: bytes,
    content_type: str | None,
    auth: str | None,
) -> None:
    _, client = app_world
    headers = {}
    if auth is not None:
        headers["Authorization"] = auth
    if content_type is not None:
        headers["Content-Type"] = content_type
    _check(client.open(path, method=method, query_string=query, data=body, headers=headers))


@FUZZ
@given(body=approval_bodies)
def test_approve_bodies_from_an_approver_get_200_or_4xx(app_world: tuple[ConsentWorld, Any], body: Any) -> None:
    world, client = app_world
    request_id = world.pending("/lock:GET,PUT")
    response = client.post(
        f"/consent/requests/{request_id}/approve",
        data=json.dumps(body),
        headers={"Authorization": _basic("frank", PASSWORDS["frank"]), "Content-Type": "application/json"},
    )
    _check(response)
    if response.status_code == 200:
        # Start over with a fresh request: revoke, so the next example asks again.
        client.post(
            f"/consent/grants/{request_id}/revoke", headers={"Authorization": _basic("root", PASSWORDS["root"])}
        )


@pytest.mark.parametrize("limit", ["\u00b9", "\u0661", "9" * 5000, "0", "-1", "1001"])
def test_a_bad_limit_is_400_not_500(app_world: tuple[ConsentWorld, Any], limit: str) -> None:
    """``"¹".isdigit()`` is true but ``int("¹")`` fails, and ``int()`` refuses more than 4,300 digits."""
    _, client = app_world
    for path in ("/consent/requests", "/consent/grants"):
        response = client.get(
            path, query_string={"limit": limit}, headers={"Authorization": _basic("root", PASSWORDS["root"])}
        )
        assert response.status_code == 400, (path, limit, response.data)
        assert b"limit must be a number from 1 to" in response.data


def test_a_good_limit_is_taken(app_world: tuple[ConsentWorld, Any]) -> None:
    _, client = app_world
    response = client.get(
        "/consent/requests", query_string={"limit": "5"}, headers={"Authorization": _basic("root", PASSWORDS["root"])}
    )
    assert response.status_code == 200
