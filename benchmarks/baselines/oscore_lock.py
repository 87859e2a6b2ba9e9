"""The OSCORE baseline of ``bench_rs``: the door lock's resources behind aiocoap's own ``OscoreSiteWrapper``, with a
fixed set of security contexts in aiocoap's default ``CredentialsMap`` and no ACE at all.

What differs from the real lock (``ostiary lock serve``) is only the wrapper: no ``/authz-info``, no token store, no
guard, no per-request token lookup or expiry check, no "authorized ..." log line, and aiocoap's linear
``find_oscore`` over the few contexts instead of the indexed one. The inner site is the same
(:func:`resource_server.aiocoap_site.resource_site` over :class:`resource_server.examples.door_lock.DoorLock`), the
contexts are the same class (:class:`resource_server.aiocoap_site.MemoryOscoreContext`), the transport is the same
(``simplesocketserver``, what ``serve()`` picks for a unicast address) and logging is configured as ``ostiary lock
serve`` does it (the door logs "door unlocked by ..." in both). Each context authenticates a stand-in
:class:`~resource_server.token_store.StoredToken` granting ``/lock`` GET/PUT, because the door's resources read the
token from ``authenticated_claims`` (they answer 4.01 without one).

The contexts come from a JSON file: ``[{"master_secret": hex, "master_salt": hex, "sender_id": hex,
"recipient_id": hex, "id_context": hex | null}, ...]`` (the server role). Stops cleanly on SIGTERM or SIGINT.

Run: ``python -m benchmarks.baselines.oscore_lock --port 15710 --contexts contexts.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiocoap
from aiocoap.credentials import CredentialsMap
from aiocoap.oscore_sitewrapper import OscoreSiteWrapper

from ace_core.cwt import Claims
from ace_core.oscore import OscoreContextParameters
from ace_core.scope import AifScope
from benchmarks.oscore_wire import ClientContext
from resource_server.aiocoap_site import MemoryOscoreContext, resource_site
from resource_server.examples.door_lock import DoorLock
from resource_server.token_store import StoredToken

__all__ = ["load_contexts", "main", "make_contexts", "serve", "stand_in_token"]

#: The rights of the stand-in token each baseline context authenticates.
RIGHTS = "/lock:GET,PUT"


def _hex(value: str | None) -> bytes | None:
    return None if value is None else bytes.fromhex(value)


def load_contexts(path: Path) -> list[OscoreContextParameters]:
    """The server-role context parameters from the JSON file (module docstring)."""
    return server_contexts(json.loads(path.read_text()))


def make_contexts(n: int) -> tuple[list[dict[str, Any]], list[ClientContext]]:
    """``n`` random security contexts: the server sides (the JSON this module reads) and the client sides (for the
    load generator). The clients' Sender IDs are two bytes, like most of a lock's once it holds thousands."""
    servers, clients = [], []
    for k in range(n):
        secret, salt = secrets.token_bytes(16), secrets.token_bytes(8)
        client_id, server_id = (0x2700 + k).to_bytes(2, "big"), bytes([k])
        client = OscoreContextParameters(
            master_secret=secret, master_salt=salt, sender_id=client_id, recipient_id=server_id
        )
        servers.append(
            {
                "master_secret": secret.hex(),
                "master_salt": salt.hex(),
                "sender_id": server_id.hex(),
                "recipient_id": client_id.hex(),
                "id_context": None,
            }
        )
        clients.append(ClientContext.from_params(client))
    return servers, clients


def server_contexts(docs: list[dict[str, Any]]) -> list[OscoreContextParameters]:
    """Server-role parameters from the JSON documents (module docstring)."""
    return [
        OscoreContextParameters(
            master_secret=bytes.fromhex(doc["master_secret"]),
            master_salt=bytes.fromhex(doc["master_salt"]),
            sender_id=bytes.fromhex(doc["sender_id"]),
            recipient_id=bytes.fromhex(doc["recipient_id"]),
            id_context=_hex(doc.get("id_context")),
        )
        for doc in docs
    ]


def site(contexts: list[OscoreContextParameters], door: DoorLock) -> tuple[OscoreSiteWrapper, CredentialsMap]:
    """The baseline site: ``OscoreSiteWrapper`` around the door's resources, with one context per parameter set."""
    credentials = CredentialsMap()
    for k, params in enumerate(contexts):
        token = stand_in_token(k)
        credentials[f":client{k}"] = MemoryOscoreContext(params, claims=lambda token=token: [token])
    return OscoreSiteWrapper(resource_site(door.resources()), credentials), credentials


def stand_in_token(k: int) -> StoredToken:
    """The token context ``k`` authenticates (the door's resources need one in ``authenticated_claims``)."""
    return StoredToken(
        token=b"",
        claims=Claims(cti=b"baseline-%d" % k),
        pop_id=b"baseline-%d" % k,
        audience="front-door",
        rights=AifScope.parse_spec(RIGHTS),
        received=0.0,
    )


async def serve(host: str, port: int, transport: str, contexts: list[OscoreContextParameters]) -> None:
    """Serve until SIGTERM/SIGINT."""
    wrapper, credentials = site(contexts, DoorLock(uptime=time.monotonic))
    ctx = await aiocoap.Context.create_server_context(
        wrapper, bind=(host, port), transports=[transport], server_credentials=credentials
    )
    print(f"oscore_lock: serving coap://{host}:{port} with {len(contexts)} contexts", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await ctx.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baselines.oscore_lock")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--transport", default="simplesocketserver", choices=["udp6", "simplesocketserver"])
    parser.add_argument("--contexts", type=Path, required=True, help="JSON file of server-role contexts")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    # The same logging set-up as `ostiary lock serve` (ostiary/lock_cli.py).
    logging.basicConfig(
        level=args.log_level.upper(),
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S %z",
        stream=sys.stderr,
    )
    asyncio.run(serve(args.host, args.port, args.transport, load_contexts(args.contexts)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
