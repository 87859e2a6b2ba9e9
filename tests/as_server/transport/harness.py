"""A real AS deployment on loopback sockets for the transport tests: SQLite (or PostgreSQL) storage opened from an
``OSTIARY_HOME``, the allow-list policy from its file, HTTP through Werkzeug's WSGI server in a thread and CoAP
through an aiocoap server context on an event loop in a thread.

Every response body that passes through :class:`Http` or :class:`Coap` is checked for traceback text.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiocoap
import httpx
from aiocoap.numbers.codes import Code
from werkzeug.serving import BaseWSGIServer, make_server

from ace_core.keys import CoseKey
from ace_core.registry import AceProfile, CoseAlgorithm
from ace_core.scope import AifScope
from as_server.app import AuthorizationServer
from as_server.config import Settings
from as_server.models import Client, PopKeyType, ResourceServer, ScopeFormat, SigningKey, TokenForm
from as_server.sealing import MasterKey, hash_secret
from as_server.transport.coap import start_coap
from as_server.transport.http import create_app

T = TypeVar("T")

ISSUER = "coap://as.test/token"
#: Bound on every network wait in these tests (seconds).
TIMEOUT = 10.0

#: Distinctive secrets, so tests can assert that they never show up in logs.
SECRETS = {
    "phone-app": "phone-app-secret-Qv7mX2pL9",
    "odd id:+&%/é": "odd-client-secret-Wz3n",
    "no-grant": "no-grant-secret-Rt5c",
    "dtls-only": "dtls-only-secret-Hy8k",
}
LOCK_INTROSPECTION_SECRET = "front-door-introspection-Kp4w"
LOCK_SCOPE = "/lock:GET,PUT /battery:GET"

POLICY = """\
rules:
  - client: "*"
    audience: front-door
    scope: "/lock:GET,PUT /battery:GET"
  - client: "*"
    audience: sensors
    scope: "read"
"""

TRACEBACK_MARKERS = (b"Traceback", b'File "', b"most recent call")


def assert_no_traceback(body: bytes) -> None:
    """No stack trace or exception text on the wire."""
    for marker in TRACEBACK_MARKERS:
        assert marker not in body, f"{marker!r} in response body {body[:200]!r}"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A free loopback port below 32768 (ephemeral ports may be held in TIME_WAIT, library-notes §5e)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port < 32768:
            return int(port)
        # Outside the range we want: ask for a random low port instead.
        import random

        candidate = random.randrange(20000, 32000)
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind(("127.0.0.1", candidate))
            except OSError:
                continue
        return candidate
    raise RuntimeError("no free port")


def init_home(home: Path, database_url: str | None = None, **settings: Any) -> Settings:
    """Create a deployment directory (master key, policy, migrated database, signing key); return its settings."""
    from as_server.storage.sqlalchemy import upgrade

    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not (home / "master.key").exists():
        MasterKey.create_file(home / "master.key")
    (home / "policy.yaml").write_text(POLICY)
    overrides = {"issuer": ISSUER, "auth_failure_limit": 1000, **settings}
    if database_url is not None:
        overrides["database_url"] = database_url
    result = Settings.load(home, env={}, **overrides)
    upgrade(result.effective_database_url)
    return result


@dataclass
class Provisioned:
    """What the tests need to know about the registered clients and resource servers."""

    lock_key: CoseKey
    sensors_key: CoseKey


def provision(server: AuthorizationServer) -> Provisioned:
    """Register the test clients and resource servers (idempotent per storage)."""
    storage = server.storage
    now = int(time.time())
    if storage.get_resource_server("front-door") is not None:
        rs = storage.get_resource_server("front-door")
        sensors = storage.get_resource_server("sensors")
        assert rs is not None and rs.shared_key is not None and sensors is not None and sensors.shared_key is not None
        return Provisioned(rs.shared_key, sensors.shared_key)
    if storage.signing_key() is None:
        key = CoseKey.generate(CoseAlgorithm.EDDSA)
        assert key.kid is not None
        storage.add_signing_key(SigningKey(kid=key.kid, alg=CoseAlgorithm.EDDSA, key=key, created_at=now))
    lock_key = CoseKey.generate(CoseAlgorithm.AES_CCM_16_64_128)
    sensors_key = CoseKey.generate(CoseAlgorithm.AES_CCM_16_64_128)
    storage.add_resource_server(
        ResourceServer(
            audience="front-door",
            shared_key=lock_key,
            profiles=frozenset({AceProfile.COAP_OSCORE}),
            scope_format=ScopeFormat.AIF,
            resources=AifScope.parse_spec(LOCK_SCOPE).to_cbor(),
            token_form=TokenForm.ENCRYPT0,
            introspection_secret_hash=hash_secret(LOCK_INTROSPECTION_SECRET),
            created_at=now,
        )
    )
    storage.add_resource_server(
        ResourceServer(
            audience="sensors",
            shared_key=sensors_key,
            profiles=frozenset({AceProfile.COAP_OSCORE, AceProfile.COAP_DTLS}),
            scope_format=ScopeFormat.TEXT,
            resources="read write",
            token_form=TokenForm.ENCRYPT0,
            created_at=now,  # no introspection secret: introspecting as "sensors" is 4.03
        )
    )
    both = frozenset({"front-door", "sensors"})
    clients: dict[str, dict[str, Any]] = {
        "phone-app": {"audiences": both},
        "odd id:+&%/é": {"audiences": both},
        "no-grant": {"audiences": both, "grant_types": frozenset()},
        "dtls-only": {"audiences": both, "profiles": frozenset({AceProfile.COAP_DTLS})},
    }
    for client_id, extra in clients.items():
        storage.add_client(
            Client(
                client_id=client_id,
                secret_hash=hash_secret(SECRETS[client_id]),
                pop_key_types=frozenset({PopKeyType.SYMMETRIC}),
                created_at=now,
                **extra,
            )
        )
    return Provisioned(lock_key, sensors_key)


class LoopThread:
    """An asyncio event loop running in a daemon thread; :meth:`run` waits (bounded) for a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="coap-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = TIMEOUT) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def _drain() -> None:
            await self.loop.shutdown_default_executor()

        self.run(_drain())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(TIMEOUT)
        self.loop.close()


@dataclass
class CoapReply:
    """A CoAP response as the tests look at it."""

    code: Code
    payload: bytes
    content_format: int | None
    max_age: int | None
    size1: int | None


class Coap:
    """An aiocoap client against one server, on a :class:`LoopThread`."""

    def __init__(self, loops: LoopThread, port: int, client: aiocoap.Context) -> None:
        self.loops = loops
        self.port = port
        self.client = client
        self.base = f"coap://127.0.0.1:{port}"

    def request(
        self, path: str, payload: bytes = b"", *, code: Code = Code.POST, content_format: int | None = 19
    ) -> CoapReply:
        message = aiocoap.Message(code=code, uri=self.base + path, payload=payload)
        if content_format is not None:
            message.opt.content_format = content_format

        async def send() -> aiocoap.Message:
            return await self.client.request(message).response

        response = self.loops.run(send())
        assert_no_traceback(response.payload)
        fmt = response.opt.content_format
        return CoapReply(
            response.code,
            bytes(response.payload),
            None if fmt is None else int(fmt),
            response.opt.max_age,
            response.opt.size1,
        )

    def post(self, path: str, payload: bytes, **kwargs: Any) -> CoapReply:
        return self.request(path, payload, **kwargs)


class Http:
    """An httpx client against one server; checks every body for tracebacks."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.client = httpx.Client(base_url=base, timeout=TIMEOUT)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.client.request(method, path, **kwargs)
        assert_no_traceback(response.content)
        return response

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def close(self) -> None:
        self.client.close()


@dataclass
class Running:
    """One AS instance serving on both transports."""

    server: AuthorizationServer
    http: Http
    coap: Coap
    provisioned: Provisioned
    _stops: list[Any] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return self.server.settings

    def stop(self) -> None:
        for stop in reversed(self._stops):
            stop()
        self._stops.clear()


def start(server: AuthorizationServer, loops: LoopThread) -> Running:
    """Serve ``server`` on fresh loopback ports: Werkzeug (threaded) for HTTP, aiocoap for CoAP."""
    provisioned = provision(server)
    stops: list[Any] = []
    httpd: BaseWSGIServer = make_server("127.0.0.1", 0, create_app(server), threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, name="http", daemon=True)
    thread.start()

    def stop_http() -> None:
        httpd.shutdown()
        httpd.server_close()
        thread.join(TIMEOUT)

    stops.append(stop_http)
    http = Http(f"http://127.0.0.1:{httpd.server_port}")
    stops.append(http.close)

    port = free_port(socket.SOCK_DGRAM)
    context = loops.run(start_coap(server, "127.0.0.1", port))
    stops.append(lambda: loops.run(context.shutdown()))
    client = loops.run(aiocoap.Context.create_client_context())
    stops.append(lambda: loops.run(client.shutdown()))
    return Running(server, http, Coap(loops, port, client), provisioned, stops)
