"""A small deployment for the client SDK's end-to-end tests: the AS of the tests/as_server harness (CoAP and HTTP,
in-process), extra doors and apps registered in it, and the reference door lock
(``resource_server.examples.door_lock`` behind ``AceSiteWrapper``) on loopback UDP ports.

Everything runs on one :class:`~tests.as_server.transport.harness.LoopThread`; every wait is bounded.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any

from ace_core import cose
from ace_core.keys import CoseKey
from ace_core.messages import AccessInformation
from ace_core.registry import AceProfile, CoseAlgorithm
from ace_core.scope import AifScope
from as_server.models import Client, PopKeyType, ResourceServer, ScopeFormat, TokenForm
from as_server.sealing import hash_secret
from client_sdk.client import AceClient
from resource_server.aiocoap_site import LockServer
from resource_server.config import LockConfig, RsConfig
from resource_server.examples import door_lock
from resource_server.server import ResourceServer as LockRs
from tests.as_server.transport.harness import ISSUER, LoopThread, Running, free_port

DOOR_APP, DOOR_SECRET = "door-app", "door-app-secret-Vb72Lq"
BACK_APP, BACK_SECRET = "back-app", "back-app-secret-Hn41Xe"
SHORT_LIFETIME = 30  # seconds: the short-door RS's max_lifetime at the AS
LOCK_SCOPE = "/lock:GET,PUT /battery:GET"

POLICY = """\
rules:
  - client: "*"
    audience: front-door
    scope: "/lock:GET,PUT /battery:GET"
  - client: "*"
    audience: short-door
    scope: "/lock:GET,PUT"
  - client: "*"
    audience: back-door
    scope: "/lock:GET,PUT"
"""


@dataclass
class World:
    """The AS and what the locks need to know about it."""

    running: Running
    keys: dict[str, CoseKey]

    @property
    def coap_as(self) -> str:
        return f"coap://127.0.0.1:{self.running.coap.port}/token"

    @property
    def http_as(self) -> str:
        return f"{self.running.http.base}/token"


def register(running: Running) -> dict[str, CoseKey]:
    """Two more doors besides the harness's front door (one with short-lived tokens) and two apps: door-app may
    open front and short door, back-app only the back door."""
    server = running.server
    now = int(time.time())
    keys: dict[str, CoseKey] = {"front-door": running.provisioned.lock_key}
    for audience, lifetime in (("short-door", SHORT_LIFETIME), ("back-door", 3600)):
        key = CoseKey.generate(CoseAlgorithm.AES_CCM_16_64_128)
        keys[audience] = key
        server.storage.add_resource_server(
            ResourceServer(
                audience=audience,
                shared_key=key,
                profiles=frozenset({AceProfile.COAP_OSCORE}),
                scope_format=ScopeFormat.AIF,
                resources=AifScope.parse_spec(LOCK_SCOPE).to_cbor(),
                token_form=TokenForm.ENCRYPT0,
                max_lifetime=lifetime,
                created_at=now,
            )
        )
    for client_id, secret, audiences in (
        (DOOR_APP, DOOR_SECRET, {"front-door", "short-door"}),
        (BACK_APP, BACK_SECRET, {"back-door"}),
    ):
        server.storage.add_client(
            Client(
                client_id=client_id,
                secret_hash=hash_secret(secret),
                audiences=frozenset(audiences),
                pop_key_types=frozenset({PopKeyType.SYMMETRIC}),
                created_at=now,
            )
        )
    return keys


class Lock:
    """A door lock on a loopback UDP port, restartable on the same port."""

    def __init__(self, world: World, loops: LoopThread, audience: str, **rs: Any) -> None:
        self.loops = loops
        self.port = free_port(socket.SOCK_DGRAM)
        self.config = LockConfig(
            rs=RsConfig(
                audiences=(audience,),
                issuer=ISSUER,
                as_uri=world.coap_as,
                keys=cose.KeySet([world.keys[audience]]),
                **rs,
            ),
            host="127.0.0.1",
            port=self.port,
        )
        self.server: LockServer | None = None
        self.door: door_lock.DoorLock | None = None
        self.start()

    @property
    def uri(self) -> str:
        return f"coap://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server, self.door = self.loops.run(door_lock.start(self.config, rs=LockRs(self.config.rs)))

    def stop(self) -> None:
        if self.server is not None:
            self.loops.run(self.server.shutdown())
            self.server = None

    def restart(self) -> None:
        """A power cycle without a state file: every token and security context is gone."""
        self.stop()
        self.start()


class CountingClient(AceClient):
    """An ``AceClient`` that counts and keeps the token responses it gets."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.issued: list[AccessInformation] = []

    async def request_token(self, *args: Any, **kwargs: Any) -> AccessInformation:
        info = await super().request_token(*args, **kwargs)
        self.issued.append(info)
        return info
