"""A deployment for the apps-signing-users-in tests, and what a native app and its browser do (RFC 8252).

* :func:`start_oauth` runs a real AS (SQLite or PostgreSQL, HTTP and CoAP on loopback) with users, groups, a policy
  that decides per user and group, and app clients: a public native app with a loopback and a private-use redirect
  URI, a confidential app, a public app without the refresh grant. Its clock is adjustable (:class:`Clock`).
* :class:`LoopbackApp` is the app's side of RFC 8252 §7.3: an HTTP listener on a loopback port that receives the
  redirect.
* :class:`Browser` drives ``/authorize`` like a browser: GET the page, parse the form (:func:`parse_page`), POST
  the sign-in with the CSRF token and the cookie, follow the redirect.
"""

from __future__ import annotations

import hashlib
import html.parser
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from ace_core import cose, cwt
from ace_core.keys import b64url_encode
from ace_core.messages import AccessInformation, ErrorResponse, IntrospectionRequest, IntrospectionResponse
from ace_core.registry import GrantType
from ace_core.scope import AifScope
from as_server.app import AuthorizationServer
from as_server.auth import FailureRateLimiter
from as_server.consent import GrantRuleSource
from as_server.identity import LocalIdentityProvider, PasswordHasher
from as_server.models import Client, Group, PopKeyType, User
from as_server.sealing import MasterKey, hash_secret
from as_server.storage.sqlalchemy import open_storage
from policies.engine import PolicyEngine
from tests.as_server.transport.harness import (
    ISSUER,
    LOCK_INTROSPECTION_SECRET,
    TIMEOUT,
    LoopThread,
    Running,
    assert_no_traceback,
    init_home,
    start,
)

#: The policy: alice may use the lock, staff the battery, bob only read the lock; service clients as before.
POLICY = """\
rules:
  - id: alice-lock
    client: "*"
    users: [alice]
    audience: front-door
    scope: "/lock:GET,PUT"
  - id: staff-battery
    client: "*"
    groups: [staff]
    audience: front-door
    scope: "/battery:GET"
  - id: readers
    client: "*"
    users: [bob, dave, erin, gina]
    audience: front-door
    scope: "/lock:GET"
  - id: sensors
    client: "*"
    users: ["*"]
    audience: sensors
    scope: "read"
  - id: service
    client: phone-app
    audience: front-door
    scope: "/lock:GET"
"""

PASSWORDS = {
    "alice": "alice-pw-Tq3v8",
    "bob": "bob-pw-Lm5x2",
    "dave": "dave-pw-Zr7k1",
    "erin": "erin-pw-Uc4n6",
    "frank": "frank-pw-Hb2w9",
    "gina": "gina-pw-Ks8d3",
}
APP = "mobile-app"  # public, loopback + private-use redirect URIs, code + refresh
WEB = "web-app"  # confidential, code + refresh
NO_REFRESH = "no-refresh-app"  # public, code only
WEB_SECRET = "web-app-secret-Nc6p"
PRIVATE_REDIRECT = "com.example.app:/callback"
LOOPBACK_REGISTERED = "http://127.0.0.1/callback"
#: Argon2id parameters cheap enough for tests (production uses RFC 9106's, :class:`PasswordHasher` defaults).
CHEAP = {"time_cost": 1, "memory_cost": 8, "parallelism": 1}


class Clock:
    """The AS's clock: the wall clock plus an offset the tests move."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def now(self) -> int:
        return int(self())


@dataclass
class OAuthDeployment:
    """A running AS with the app clients and users, its clock, and a loopback app listener."""

    running: Running
    clock: Clock
    app: LoopbackApp

    @property
    def server(self) -> AuthorizationServer:
        return self.running.server

    @property
    def base(self) -> str:
        return self.running.http.base

    def verify(self, token: bytes, *, now: int | None = None) -> cwt.Claims:
        """Verify a front-door token with the lock's key, as the lock does (RFC 9200 §5.10.1.1)."""
        keys = cose.KeySet([self.running.provisioned.lock_key])
        at = self.clock.now() if now is None else now
        return cwt.verify(token, keys, now=at, audience="front-door", issuer=ISSUER)

    def introspect(self, token: bytes) -> IntrospectionResponse:
        """Introspection by the lock (RFC 9200 §5.9)."""
        reply = self.running.http.post(
            "/introspect",
            content=IntrospectionRequest(token=token).to_json_bytes(),
            headers={"content-type": "application/json"},
            auth=("front-door", LOCK_INTROSPECTION_SECRET),
        )
        assert reply.status_code == 200, reply.text
        return IntrospectionResponse.from_json_bytes(reply.content)

    def token(self, data: dict[str, str], *, auth: tuple[str, str] | None = None) -> httpx.Response:
        """``POST /token`` with a form."""
        return self.running.http.post("/token", data=data, auth=auth)

    def exchange(self, code: str, verifier: str | None, *, redirect_uri: str, client_id: str = APP) -> httpx.Response:
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "client_id": client_id}
        if verifier is not None:
            data["code_verifier"] = verifier
        return self.token(data)

    def refresh(self, refresh_token: bytes, *, client_id: str = APP) -> httpx.Response:
        return self.token(
            {"grant_type": "refresh_token", "refresh_token": b64url_encode(refresh_token), "client_id": client_id}
        )


def access_information(response: httpx.Response) -> AccessInformation:
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return AccessInformation.from_json_bytes(response.content)


def error_of(response: httpx.Response) -> ErrorResponse:
    assert response.headers["content-type"] == "application/json"
    return ErrorResponse.from_json_bytes(response.content)


def pkce() -> tuple[str, str]:
    """A fresh ``(code_verifier, code_challenge)`` pair, S256 (RFC 7636 §4.1-§4.2)."""
    verifier = b64url_encode(secrets.token_bytes(48))
    challenge = b64url_encode(hashlib.sha256(verifier.encode("ascii")).digest())
    return verifier, challenge


def lock_scope(spec: str) -> str:
    """An AIF scope as it travels in URLs and forms (``application/aif+json`` text)."""
    return AifScope.parse_spec(spec).to_json_text()


class LoopbackApp:
    """A native app's loopback redirect listener (RFC 8252 §7.3): records every query it receives."""

    def __init__(self) -> None:
        received: list[dict[str, str]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                received.append(dict(parse_qsl(urlsplit(self.path).query)))
                body = b"You can close this window."
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="loopback-app", daemon=True)
        self._thread.start()

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/callback"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(TIMEOUT)


@dataclass
class Page:
    """What the sign-in page offers: the form's action and CSRF token, its error message, the rights shown."""

    action: str | None = None
    csrf_token: str | None = None
    error: str | None = None
    rights: list[str] = field(default_factory=list)
    title: str = ""


def parse_page(text: str) -> Page:
    """Read the sign-in page as a browser would see it."""
    page = Page()

    class Parser(html.parser.HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.in_alert = False
            self.in_li = False
            self.in_title = False

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = dict(attrs)
            if tag == "form":
                page.action = a.get("action")
            elif tag == "input" and a.get("name") == "csrf_token":
                page.csrf_token = a.get("value")
            elif tag == "p" and a.get("role") == "alert":
                self.in_alert = True
                page.error = ""
            elif tag == "li":
                self.in_li = True
                page.rights.append("")
            elif tag == "title":
                self.in_title = True

        def handle_endtag(self, tag: str) -> None:
            if tag == "p":
                self.in_alert = False
            elif tag == "li":
                self.in_li = False
            elif tag == "title":
                self.in_title = False

        def handle_data(self, data: str) -> None:
            if self.in_alert:
                page.error = (page.error or "") + data
            if self.in_li:
                page.rights[-1] += data
            if self.in_title:
                page.title += data

    Parser().feed(text)
    return page


class Browser:
    """The system browser an app opens (RFC 8252 §6): keeps cookies, does not follow redirects by itself."""

    def __init__(self, dep: OAuthDeployment) -> None:
        self.dep = dep
        self.client = httpx.Client(base_url=dep.base, timeout=TIMEOUT, follow_redirects=False)

    def get(self, params: dict[str, str]) -> httpx.Response:
        response = self.client.get("/authorize", params=params)
        assert_no_traceback(response.content)
        return response

    def post(self, action: str, data: dict[str, str]) -> httpx.Response:
        response = self.client.post(action, data=data)
        assert_no_traceback(response.content)
        return response

    def close(self) -> None:
        self.client.close()


def authorization_params(
    *,
    client_id: str = APP,
    redirect_uri: str,
    challenge: str | None,
    scope: str | None = None,
    audience: str | None = "front-door",
    state: str | None = "state-xyz",
    method: str | None = "S256",
) -> dict[str, str]:
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri}
    if scope is None:
        scope = lock_scope("/lock:GET,PUT /battery:GET")
    params["scope"] = scope
    if audience is not None:
        params["audience"] = audience
    if state is not None:
        params["state"] = state
    if challenge is not None:
        params["code_challenge"] = challenge
    if method is not None:
        params["code_challenge_method"] = method
    return params


def sign_in(
    dep: OAuthDeployment,
    params: dict[str, str],
    *,
    user: str = "alice",
    password: str | None = None,
    decision: str = "allow",
) -> httpx.Response:
    """GET the page, POST the sign-in; the response to the POST (a redirect when it worked)."""
    browser = Browser(dep)
    try:
        page = browser.get(params)
        assert page.status_code == 200, page.text
        form = parse_page(page.text)
        assert form.action is not None and form.csrf_token is not None
        data = {"csrf_token": form.csrf_token, "decision": decision, "username": user}
        data["password"] = PASSWORDS.get(user, "x") if password is None else password
        return browser.post(form.action, data)
    finally:
        browser.close()


def authorize(dep: OAuthDeployment, *, user: str = "alice", client_id: str = APP, **kwargs: Any) -> tuple[str, str]:
    """The whole front channel: sign in, follow the redirect to the loopback app. Returns ``(code, verifier)``."""
    verifier, challenge = pkce()
    params = authorization_params(client_id=client_id, redirect_uri=dep.app.redirect_uri, challenge=challenge, **kwargs)
    response = sign_in(dep, params, user=user)
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(dep.app.redirect_uri + "?")
    before = len(dep.app.received)
    assert httpx.get(location, timeout=TIMEOUT).status_code == 200  # the browser follows it to the app
    query = dep.app.received[before]
    assert query["state"] == params.get("state", query.get("state"))
    return query["code"], verifier


def start_oauth(home: Path, loops: LoopThread, database_url: str | None = None) -> Iterator[OAuthDeployment]:
    """Run the deployment (see the module documentation); yields once, then stops it."""
    settings = init_home(home, database_url, signin_failure_limit=1000)
    (home / "policy.yaml").write_text(POLICY)
    master_key = MasterKey.load(settings.master_key_file)
    storage = open_storage(settings.effective_database_url, master_key)
    clock = Clock()
    identity = LocalIdentityProvider(storage, PasswordHasher(**CHEAP))
    policy = PolicyEngine.from_file(settings.effective_policy_file, sources=[GrantRuleSource(storage)])
    server = AuthorizationServer(
        settings=settings,
        storage=storage,
        policy=policy,
        limiter=FailureRateLimiter.from_settings(settings),
        clock=clock,
        identity=identity,
        sealer=master_key,
    )
    running = start(server, loops)
    app = LoopbackApp()
    try:
        _provision(server, app)
        yield OAuthDeployment(running, clock, app)
    finally:
        app.close()
        running.stop()
        server.close()


def _provision(server: AuthorizationServer, app: LoopbackApp) -> None:
    storage = server.storage
    now = int(time.time())
    hasher = PasswordHasher(**CHEAP)
    for name, password in PASSWORDS.items():
        storage.add_user(
            User(name=name, password_hash=hasher.hash(password), created_at=now), actor="cli:test", now=now
        )
    storage.add_group(Group(name="staff", created_at=now), actor="cli:test", now=now)
    storage.add_member("staff", "alice", actor="cli:test", now=now)
    user_grants = frozenset({GrantType.AUTHORIZATION_CODE, GrantType.REFRESH_TOKEN})
    common: dict[str, Any] = {
        "audiences": frozenset({"front-door", "sensors"}),
        "pop_key_types": frozenset({PopKeyType.SYMMETRIC}),
        "created_at": now,
    }
    storage.add_client(
        Client(
            client_id=APP,
            secret_hash=b"",
            display_name="Door app",
            grant_types=user_grants,
            redirect_uris=(LOOPBACK_REGISTERED, PRIVATE_REDIRECT),
            public=True,
            **common,
        )
    )
    storage.add_client(
        Client(
            client_id=WEB,
            secret_hash=hash_secret(WEB_SECRET),
            grant_types=user_grants,
            redirect_uris=(LOOPBACK_REGISTERED,),
            **common,
        )
    )
    storage.add_client(
        Client(
            client_id=NO_REFRESH,
            secret_hash=b"",
            grant_types=frozenset({GrantType.AUTHORIZATION_CODE}),
            redirect_uris=(LOOPBACK_REGISTERED,),
            public=True,
            **common,
        )
    )
