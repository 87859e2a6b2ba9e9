"""The reference door lock: lock firmware built only from the resource-server library.

Resources (all need an ACE token over OSCORE, RFC 9203; the scope is AIF, RFC 9237):

==========  ===========  ==================================================================================
path        methods      what
==========  ===========  ==================================================================================
``/lock``   GET          the state, ``{"locked": true}`` as JSON (default) or CBOR (Accept
                         ``application/cbor``); other Accept values get 4.06
``/lock``   PUT, POST    payload ``lock`` or ``unlock`` (text) -> 2.04; anything else 4.00
``/battery`` GET         ``{"battery": 87}`` (percent), JSON or CBOR
``/log``    GET          the access log (maintenance scopes): the last accesses, newest last, each
                         ``{"t": uptime, "method", "path", "pop_id", "cti", "action"}``
==========  ===========  ==================================================================================

Every request that reaches a resource is recorded in the access log (the guard has already allowed it); refusals
are logged by the library (logger ``ostiary.lock``). Run it with ``ostiary lock serve --config FILE``; SIGTERM or
SIGINT stops it cleanly (exit status 0) after writing the state file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ace_core import cbor
from ace_core.status import Status
from resource_server.aiocoap_site import LockServer, ensure_udp_port_free, resource_site, serve
from resource_server.config import LockConfig, RsConfig
from resource_server.resources import Request, Resource, Response
from resource_server.server import ResourceServer

if TYPE_CHECKING:
    from resource_server.transport.lwm2m_client import BootstrapClient

__all__ = ["DoorLock", "main", "run", "run_bootstrapped"]

log = logging.getLogger("ostiary.lock.door")

JSON = "application/json"
CBOR = "application/cbor"
TEXT = "text/plain; charset=utf-8"
#: Access-log entries kept (oldest dropped first).
LOG_SIZE = 100
#: Seconds the LwM2M link gets to de-register when the lock stops.
LINK_SHUTDOWN_TIMEOUT = 10.0


@dataclass
class DoorLock:
    """The lock's state and its resources.

    :param uptime: where log timestamps come from (the resource server's monotonic clock).
    """

    uptime: Callable[[], float]
    locked: bool = True
    battery: int = 87
    accesses: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=LOG_SIZE))

    def resources(self) -> list[Resource]:
        """The lock's resources, for :func:`resource_server.aiocoap_site.resource_site`."""
        return [
            Resource(
                "/lock",
                self.lock,
                methods=frozenset({"GET", "PUT", "POST"}),
                rt="ostiary.lock",
                content_types=(JSON, CBOR),
            ),
            Resource("/battery", self.battery_level, rt="ostiary.battery", content_types=(JSON, CBOR)),
            Resource("/log", self.access_log, rt="ostiary.log", content_types=(JSON,)),
        ]

    # -- resources -------------------------------------------------------------------------------------------

    def lock(self, request: Request) -> Response:
        """GET: the state; PUT/POST ``lock``/``unlock``: change it (2.04)."""
        if request.method == "GET":
            self._record(request, "read")
            return _represent({"locked": self.locked}, request.accept)
        command = request.payload.decode("utf-8", "replace").strip().lower()
        if command not in ("lock", "unlock"):
            self._record(request, f"rejected command {command[:16]!r}")
            return Response(Status.BAD_REQUEST, b"payload must be 'lock' or 'unlock'", TEXT)
        self.locked = command == "lock"
        self._record(request, command)
        log.info("door %sed by %s", command, request.authorization.describe())
        return Response(Status.CHANGED)

    def battery_level(self, request: Request) -> Response:
        """GET: battery level in percent."""
        self._record(request, "read")
        return _represent({"battery": self.battery}, request.accept)

    def access_log(self, request: Request) -> Response:
        """GET: the access log (JSON)."""
        if request.accept not in (None, JSON):
            return Response(Status.NOT_ACCEPTABLE)
        entries = list(self.accesses)
        self._record(request, "read")
        return Response(Status.CONTENT, json.dumps(entries).encode(), JSON)

    def _record(self, request: Request, action: str) -> None:
        token = request.authorization
        self.accesses.append(
            {
                "t": round(self.uptime(), 3),
                "method": request.method,
                "path": request.path,
                "pop_id": token.pop_id.hex(),
                "cti": token.cti.hex() if token.cti is not None else None,
                "action": action,
            }
        )


def _represent(value: dict[str, Any], accept: str | None) -> Response:
    if accept in (None, JSON):
        return Response(Status.CONTENT, json.dumps(value).encode(), JSON)
    if accept == CBOR:
        return Response(Status.CONTENT, cbor.dumps(value), CBOR)
    return Response(Status.NOT_ACCEPTABLE)


async def start(config: LockConfig, *, rs: ResourceServer | None = None) -> tuple[LockServer, DoorLock]:
    """Start a door lock serving ``config`` (restoring persisted tokens first)."""
    rs = rs if rs is not None else ResourceServer(config.rs)
    door = DoorLock(uptime=rs.monotonic)
    server = await serve(rs, resource_site(door.resources()), host=config.host, port=config.port)
    return server, door


async def run(config: LockConfig, *, out: TextIO = sys.stdout, stop: asyncio.Event | None = None) -> int:
    """Serve until SIGTERM/SIGINT (or ``stop`` is set); returns the exit status (0 on a clean stop)."""
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        server, _door = await start(config)
        try:
            audiences = ", ".join(config.rs.audiences)
            print(f"ostiary lock: serving {server.uri} (audience {audiences})", file=out, flush=True)
            await stop.wait()
            log.info("stopping")
        finally:
            await server.shutdown()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0


def _describe(exc: BaseException) -> str:
    """``Type: message``, or just the type when the message is empty (as for most timeouts)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def main(config: LockConfig) -> int:
    """``ostiary lock serve``: run the lock in a fresh event loop."""
    return asyncio.run(run(config))


async def run_bootstrapped(
    client: BootstrapClient,
    *,
    issuer: str,
    as_uri: str,
    host: str = "127.0.0.1",
    port: int = 5683,
    state_file: Path | None = None,
    method: str = "pack",
    pull_interval: float = 3600.0,
    out: TextIO = sys.stdout,
    stop: asyncio.Event | None = None,
) -> int:
    """Serve a lock whose credentials come from the bootstrap server (issue #7) until SIGTERM/SIGINT or ``stop``.

    Without stored credentials it bootstraps first (``method`` ``"pack"``: Bootstrap-Pack-Request, falling back
    to the classic flow on 4.04; ``"classic"``: the classic flow). Tokens are verified with the credentials' key
    slots (a token under the ``next`` key promotes it); the lock registers at the AS, keeps the registration
    updated, bootstraps again every ``pull_interval`` seconds with ``method`` (:class:`DeviceLink`) and
    de-registers when it stops. When the AS refused the lock's identity and a bootstrap brought a new key (a
    revocation, noticed at the next pull, registration update or restart), the old keys are dropped at once and so
    is every token the lock holds (the AS revoked them all).

    :raises BootstrapError: the first bootstrap failed (nothing was stored).
    :raises OSError: ``host:port`` is taken (checked before bootstrapping, so a lock that cannot serve does not
        take delivery of a key the AS then counts as delivered).
    """
    from resource_server.credentials import DEFAULT_OVERLAP, KeySlot
    from resource_server.transport.lwm2m_client import DeviceLink

    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    keeper = client.keeper
    keeper.overlap = keeper.overlap or DEFAULT_OVERLAP
    try:
        ensure_udp_port_free(host, port)
        if keeper.credentials is None:
            await (client.classic() if method == "classic" else client.bootstrap())
        creds = keeper.credentials
        assert creds is not None
        rs_config = RsConfig(
            audiences=(creds.audience,), issuer=issuer, as_uri=as_uri, keys=keeper.keys, state_file=state_file
        )
        rs = ResourceServer(rs_config, on_verified_key=keeper.on_verified_key)

        def drop_tokens(retired: tuple[KeySlot, ...]) -> None:
            # The AS revoked every token of this lock with its keys; the store does not record which key verified
            # a token, and it need not: all of them were revoked, whichever key protects them.
            removals = rs.drop_all_tokens()
            log.warning("dropped the %d token(s) held: the AS revoked every token of this lock", len(removals))

        keeper.retirement_listeners.append(drop_tokens)
        server, _door = await start(LockConfig(rs=rs_config, host=host, port=port), rs=rs)
        link = DeviceLink(client, pull_interval=pull_interval, method=method)
        try:
            print(
                f"ostiary lock: serving {server.uri} (audience {creds.audience}, "
                f"key {creds.newest.identity.decode(errors='replace')})",
                file=out,
                flush=True,
            )
            link_task = loop.create_task(link.run(stop), name="ostiary lwm2m link")
            await stop.wait()
            log.info("stopping")
            try:
                await asyncio.wait_for(link_task, LINK_SHUTDOWN_TIMEOUT)
            except TimeoutError:  # str() of a TimeoutError is empty: say what did not finish
                log.warning("LwM2M link: not stopped within %g s (de-registration unfinished)", LINK_SHUTDOWN_TIMEOUT)
            except Exception as exc:  # a failed link must not keep the lock from stopping cleanly
                log.warning("LwM2M link failed: %s", _describe(exc))
        finally:
            await server.shutdown()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0
