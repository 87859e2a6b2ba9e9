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
from typing import Any, TextIO

from ace_core import cbor
from ace_core.status import Status
from resource_server.aiocoap_site import LockServer, resource_site, serve
from resource_server.config import LockConfig
from resource_server.resources import Request, Resource, Response
from resource_server.server import ResourceServer

__all__ = ["DoorLock", "main", "run"]

log = logging.getLogger("ostiary.lock.door")

JSON = "application/json"
CBOR = "application/cbor"
TEXT = "text/plain; charset=utf-8"
#: Access-log entries kept (oldest dropped first).
LOG_SIZE = 100


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


def main(config: LockConfig) -> int:
    """``ostiary lock serve``: run the lock in a fresh event loop."""
    return asyncio.run(run(config))
