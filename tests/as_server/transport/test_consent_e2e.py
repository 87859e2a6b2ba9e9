"""The consent workflow end to end over real sockets (issue #5): an app asks over CoAP -> 4.00 ``invalid_scope`` with
``error_uri`` -> it observes the access request over CoAP (RFC 7641) while a manager approves through the HTTP
JSON API -> the observer is notified -> the next token request succeeds -> the token opens a real lock -> the
manager revokes the grant -> introspection answers inactive and the next token request is refused. Also: HTTP
polling, decisions made by another process (the CLI) reaching observers, the API's refusals (401, 403) as JSON
without tracebacks, and the audit trail of every step. SQLite, and PostgreSQL for the flow."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiocoap
import pytest
from aiocoap.numbers.codes import Code
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ace_core import cbor
from ace_core.messages import (
    AccessInformation,
    ErrorResponse,
    IntrospectionRequest,
    IntrospectionResponse,
    TokenRequest,
)
from ace_core.pop import Confirmation
from ace_core.registry import ErrorCode
from ace_core.scope import AifScope
from as_server.app import AuthorizationServer
from as_server.storage.base import AuditQuery
from ostiary.cli import main
from tests.as_server.consent_fixtures import PASSWORDS, add_people
from tests.as_server.transport.harness import (
    ISSUER,
    LOCK_INTROSPECTION_SECRET,
    SECRETS,
    TIMEOUT,
    LoopThread,
    Running,
    assert_no_traceback,
    init_home,
    start,
)
from tests.as_server.transport.wire import basic
from tests.resource_server.support import Client, rs_config, start_lock

CONSENT_POLICY = """\
rules:
  - id: ask-facility
    effect: consent
    client: phone-app
    audience: front-door
    scope: "/lock:GET,PUT"
    approvers: {users: [frank], groups: [facility]}
  - id: sensors
    client: "*"
    audience: sensors
    scope: "read"
"""
#: How often the CoAP side re-reads observed requests in these tests (seconds): decisions by other processes.
POLL_INTERVAL = 0.2


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, loops: LoopThread
) -> Iterator[Running]:
    """An AS with the consent policy and the people of consent_fixtures, serving HTTP and CoAP on loopback."""
    from tests.as_server.conftest import _throwaway_postgres_database

    with contextlib.ExitStack() as stack:
        url = stack.enter_context(_throwaway_postgres_database()) if request.param == "postgresql" else None
        home = tmp_path_factory.mktemp("home")
        settings = init_home(home, url, consent_poll_interval=POLL_INTERVAL)
        (home / "policy.yaml").write_text(CONSENT_POLICY)
        server = AuthorizationServer.from_settings(settings)
        stack.callback(server.close)
        running = start(server, loops)
        stack.callback(running.stop)
        add_people(server.storage)
        yield running


def token_request(scope: str = "/lock:PUT") -> TokenRequest:
    return TokenRequest(
        client_id="phone-app",
        client_secret=SECRETS["phone-app"].encode(),
        audience="front-door",
        scope=AifScope.parse_spec(scope).to_cbor(),
    )


def coap_token(dep: Running, scope: str = "/lock:PUT") -> tuple[str, bytes]:
    reply = dep.coap.post("/token", token_request(scope).to_cbor())
    return reply.code.dotted, reply.payload


def api(
    dep: Running, method: str, path: str, user: str | None = None, password: str | None = None, **kwargs: Any
) -> Any:
    headers = kwargs.pop("headers", {})
    if user is not None:
        headers["Authorization"] = basic(user, password if password is not None else PASSWORDS[user])
    return dep.http.request(method, path, headers=headers, **kwargs)


class Observation:
    """A CoAP GET with Observe (RFC 7641) on the client's event loop: the first response and the notifications."""

    def __init__(self, dep: Running, uri: str) -> None:
        self.loops = dep.coap.loops
        self.client = dep.coap.client
        message = aiocoap.Message(code=Code.GET, uri=uri, observe=0)
        self.request = self.client.request(message)

    def first(self) -> aiocoap.Message:
        async def go() -> aiocoap.Message:
            return await asyncio.wait_for(self.request.response, TIMEOUT)

        return self.loops.run(go(), TIMEOUT + 1)

    def next(self) -> aiocoap.Message:
        async def go() -> aiocoap.Message:
            return await asyncio.wait_for(self.request.observation.__aiter__().__anext__(), TIMEOUT)

        return self.loops.run(go(), TIMEOUT + 1)

    def cancel(self) -> None:
        async def go() -> None:
            self.request.observation.cancel()

        self.loops.run(go())


def state(message: aiocoap.Message) -> dict[str, Any]:
    assert message.code == Code.CONTENT, message
    assert message.opt.content_format == 60  # application/cbor
    return dict(cbor.loads(bytes(message.payload)))


def test_consent_over_coap_observe_approval_over_http_then_the_lock_opens_and_revocation(
    deployment: Running, loops: LoopThread
) -> None:
    dep = deployment
    storage = dep.server.storage
    # 1. The app asks over CoAP: 4.00 invalid_scope, error_uri on the CoAP side.
    code, payload = coap_token(dep)
    assert code == "4.00"
    error = ErrorResponse.from_cbor(payload)
    assert error.error == ErrorCode.INVALID_SCOPE
    assert error.error_description == "consent pending: follow error_uri for the decision"
    assert error.error_uri is not None and error.error_uri.startswith(dep.coap.base + "/access-requests/")
    request_id = error.error_uri.rsplit("/", 1)[1]
    # Asking again merges into the same request.
    assert ErrorResponse.from_cbor(coap_token(dep)[1]).error_uri == error.error_uri

    # 2. It observes the request.
    observation = Observation(dep, error.error_uri)
    first = observation.first()
    assert first.opt.observe is not None
    pending = state(first)
    assert pending["status"] == "pending" and pending["id"] == request_id and "granted" not in pending
    assert AifScope.from_cbor(pending["scope"]) == AifScope.parse_spec("/lock:PUT")

    # 3. A manager sees it and approves through the HTTP API.
    listed = api(dep, "GET", "/consent/requests", "frank")
    assert listed.status_code == 200
    (shown,) = listed.json()["requests"]
    assert (shown["id"], shown["request_count"], shown["approvers"]) == (
        request_id,
        2,
        ["user:frank", "group:facility"],
    )
    approved = api(dep, "POST", f"/consent/requests/{request_id}/approve", "frank", json={"note": "ok for today"})
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved" and approved.json()["grant"]["status"] == "active"

    # 4. The observer is notified.
    notified = state(observation.next())
    assert notified["status"] == "approved"
    assert AifScope.from_cbor(notified["granted"]["scope"]) == AifScope.parse_spec("/lock:PUT")
    observation.cancel()

    # 5. The next token request succeeds.
    code, payload = coap_token(dep)
    assert code == "2.01"
    info = AccessInformation.from_cbor(payload)
    assert info.cnf is not None
    osc = Confirmation.from_cbor_map(dict(info.cnf)).osc
    assert osc is not None

    # 6. The token opens a real lock.
    lock = start_lock(loops, rs_config(dep.provisioned.lock_key, issuer=ISSUER, as_uri=dep.coap.base + "/token"))
    client = Client.create(loops, lock.base)
    try:
        lock.clock.wall = time.time()
        session = client.establish(info.access_token, osc)
        assert session.put("/lock", b"unlock").dotted == "2.04"
    finally:
        client.close()
        lock.stop()

    # 7. The manager revokes the grant: introspection says inactive; the next token request is refused again.
    revoked = api(dep, "POST", f"/consent/grants/{request_id}/revoke", "frank")
    assert revoked.status_code == 200 and revoked.json()["tokens_revoked"] == 1
    intro = dep.http.post(
        "/introspect",
        content=IntrospectionRequest(token=info.access_token).to_cbor(),
        headers={
            "Content-Type": "application/ace+cbor",
            "Authorization": basic("front-door", LOCK_INTROSPECTION_SECRET),
        },
    )
    assert intro.status_code == 200 and IntrospectionResponse.from_cbor(intro.content).active is False
    code, payload = coap_token(dep)
    assert code == "4.00"
    again = ErrorResponse.from_cbor(payload)
    assert again.error == ErrorCode.INVALID_SCOPE and again.error_uri != error.error_uri

    # 8. Every step is in the audit log.
    dep.server.audit_log.flush()
    trail = [e.action for e in reversed(storage.list_audit(AuditQuery(client_id="phone-app", limit=1000)))]
    for action in (
        "token.refused",
        "access_request.created",
        "access_request.merged",
        "access_request.approved",
        "grant.created",
        "token.issued",
        "grant.revoked",
    ):
        assert action in trail, action
    approval = storage.list_audit(AuditQuery(action="access_request.approved", limit=1))[0]
    assert approval.actor == "user:frank" and "ok for today" in approval.detail


def test_http_polling_and_a_denial(deployment: Running) -> None:
    dep = deployment
    response = dep.http.post(
        "/token",
        data={"audience": "front-door", "scope": AifScope.parse_spec("/lock:GET").to_json_text()},
        headers={"Authorization": basic("phone-app", SECRETS["phone-app"])},
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_scope"
    assert body["error_uri"].startswith(dep.http.base + "/access-requests/")
    path = body["error_uri"].removeprefix(dep.http.base)
    polled = dep.http.request("GET", path)
    assert polled.status_code == 200 and polled.headers["Cache-Control"] == "no-store"
    view = polled.json()
    assert (view["status"], view["audience"], view["scope"]) == ("pending", "front-door", '[["/lock",1]]')
    assert set(view) == {"id", "status", "client_id", "audience", "scope", "requested_at", "expires_at", "decided_at"}
    request_id = view["id"]
    denied = api(dep, "POST", f"/consent/requests/{request_id}/deny", "grace", json={"note": "no"})  # by group
    assert denied.status_code == 200 and denied.json()["status"] == "denied"
    assert dep.http.request("GET", path).json()["status"] == "denied"
    again = api(dep, "POST", f"/consent/requests/{request_id}/approve", "frank")
    assert again.status_code == 409 and again.json()["error"] == "conflict"


def test_a_decision_by_another_process_reaches_the_observer(
    deployment: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dep = deployment
    error = ErrorResponse.from_cbor(coap_token(dep, "/lock:GET,PUT")[1])
    assert error.error_uri is not None
    request_id = error.error_uri.rsplit("/", 1)[1]
    observation = Observation(dep, error.error_uri)
    assert state(observation.first())["status"] == "pending"
    # `ostiary consent approve` opens its own storage: the AS process learns of it only from the database.
    settings = dep.server.settings
    monkeypatch.setenv("OSTIARY_DATABASE_URL", settings.effective_database_url)
    argv = ["consent", "approve", request_id, "--as", "grace", "--home", str(settings.home), "--scope", "/lock:GET"]
    assert main([*argv, "--until", "1h"]) == 0, capsys.readouterr().err
    assert "approved access request" in capsys.readouterr().out
    started = time.monotonic()
    notified = state(observation.next())
    assert time.monotonic() - started < 10 * POLL_INTERVAL + 2
    assert notified["status"] == "approved"
    assert AifScope.from_cbor(notified["granted"]["scope"]) == AifScope.parse_spec("/lock:GET")
    assert notified["granted"]["valid_until"] is not None
    observation.cancel()
    # The grant reaches this process's policy within the registry cache bound (0.1 s).
    time.sleep(0.2)
    code, payload = coap_token(dep, "/lock:GET,PUT")
    assert code == "2.01"
    assert AifScope.from_cbor(AccessInformation.from_cbor(payload).scope) == AifScope.parse_spec("/lock:GET")  # type: ignore[arg-type]


def test_the_api_refuses_without_credentials_or_the_right_role(deployment: Running) -> None:
    dep = deployment
    error = ErrorResponse.from_cbor(coap_token(dep, "/lock:PUT")[1])
    assert error.error_uri is not None
    request_id = error.error_uri.rsplit("/", 1)[1]
    path = f"/consent/requests/{request_id}/approve"
    cases = [
        (None, None, 401, "unauthorized"),
        ("frank", "wrong", 401, "unauthorized"),
        ("nobody", "whatever", 401, "unauthorized"),
        ("alice", None, 403, "forbidden"),  # role user
        ("mallory", None, 403, "forbidden"),  # a manager, but not an approver of this request
    ]
    for user, password, status, code in cases:
        response = api(dep, "POST", path, user, password)
        assert response.status_code == status, (user, response.text)
        assert response.headers["Content-Type"] == "application/json"
        assert response.json()["error"] == code
        assert_no_traceback(response.content)
        if status == 401:
            assert response.headers["WWW-Authenticate"].startswith("Basic")
    malformed = api(dep, "POST", path, headers={"Authorization": "Basic !!!"})
    assert malformed.status_code == 401
    assert api(dep, "GET", "/consent/requests", "alice").status_code == 403
    unknown = api(dep, "GET", "/consent/requests/" + "A" * 22, "root")
    assert (unknown.status_code, unknown.json()["error"]) == (404, "not_found")
    assert dep.http.request("GET", "/access-requests/" + "A" * 22).status_code == 404
    assert dep.http.request("GET", "/access-requests/not-an-id").status_code == 404
    # The request is still pending, untouched by the refused attempts.
    assert dep.http.request("GET", f"/access-requests/{request_id}").json()["status"] == "pending"


def test_coap_get_without_observe_and_in_json(deployment: Running) -> None:
    dep = deployment
    error = ErrorResponse.from_cbor(coap_token(dep, "/lock:PUT")[1])
    assert error.error_uri is not None
    path = error.error_uri.removeprefix(dep.coap.base)
    reply = dep.coap.request(path, code=Code.GET, content_format=None)
    assert reply.code == Code.CONTENT and cbor.loads(reply.payload)["status"] == "pending"

    async def get_json() -> aiocoap.Message:
        message = aiocoap.Message(code=Code.GET, uri=error.error_uri)
        message.opt.accept = 50
        return await dep.coap.client.request(message).response

    answer = dep.coap.loops.run(get_json())
    assert answer.opt.content_format == 50 and json.loads(answer.payload)["status"] == "pending"
    assert dep.coap.request("/access-requests/" + "A" * 22, code=Code.GET, content_format=None).code == Code.NOT_FOUND
    assert dep.coap.request("/access-requests/x/y", code=Code.GET, content_format=None).code == Code.NOT_FOUND
    assert dep.coap.request(path, code=Code.POST, content_format=None).code == Code.METHOD_NOT_ALLOWED
    # The capability URIs are not advertised.
    wkc = dep.coap.request("/.well-known/core", code=Code.GET, content_format=None)
    assert b"access-requests" not in wkc.payload


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    segments=st.lists(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30), max_size=3),
    accept=st.sampled_from([None, 50, 60, 0, 19, 65000]),
    code=st.sampled_from([Code.GET, Code.POST, Code.PUT, Code.FETCH, Code.DELETE]),
    observe=st.booleans(),
)
def test_malformed_coap_requests_get_4xx(
    deployment: Running, segments: list[str], accept: int | None, code: Code, observe: bool
) -> None:
    dep = deployment
    message = aiocoap.Message(code=code, uri=dep.coap.base)
    message.opt.uri_path = ("access-requests", *segments)
    if accept is not None:
        message.opt.accept = accept
    if observe:
        message.opt.observe = 0

    async def send() -> aiocoap.Message:
        request = dep.coap.client.request(message)
        response = await asyncio.wait_for(request.response, TIMEOUT)
        if observe and response.opt.observe is not None:
            request.observation.cancel()
        return response

    response = dep.coap.loops.run(send(), TIMEOUT + 1)
    assert response.code.is_successful() or response.code.class_ == 4, response.code
    assert_no_traceback(bytes(response.payload))
