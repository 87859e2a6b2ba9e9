"""Test support for the resource server: tokens minted exactly as the AS mints them, an in-process door lock on
loopback UDP, and a client that speaks RFC 9203 by hand (nonce1/ID1 -> context derived with ace_core.oscore in the
client role -> OSCORE requests through aiocoap). The client context derives its keys with aiocoap's own HKDF, so
every successful exchange also cross-checks the lock's derivation (ace_core) against aiocoap's."""

from __future__ import annotations

import asyncio
import secrets
import socket
from dataclasses import dataclass, field
from typing import Any

import aiocoap
from aiocoap import oscore
from aiocoap.numbers import ContentFormat
from aiocoap.numbers.codes import Code

from ace_core import cose, cwt
from ace_core.keys import CoseKey
from ace_core.messages import AuthzInfoRequest, AuthzInfoResponse
from ace_core.oscore import OscoreContextParameters, Role, context_parameters
from ace_core.pop import Confirmation, OscoreMaterial
from ace_core.registry import AceProfile, CoseAlgorithm
from ace_core.scope import AifScope
from resource_server.aiocoap_site import AceSiteWrapper, LockServer
from resource_server.clock import ManualClock
from resource_server.config import LockConfig, RsConfig
from resource_server.examples.door_lock import DoorLock, start
from resource_server.server import ResourceServer
from tests.as_server.transport.harness import TIMEOUT, LoopThread, free_port

ISSUER = "coap://as.test/token"
AS_URI = "coap://127.0.0.1:5683/token"
AUDIENCE = "front-door"
#: A fixed wall-clock time for minted tokens (2023-11-14); the locks under test use a ManualClock.
T0 = 1_700_000_000
LIFETIME = 3600


def shared_key() -> CoseKey:
    """An AS<->RS key as ``ostiary as rs add`` generates it."""
    return CoseKey.generate(CoseAlgorithm.AES_CCM_16_64_128)


def material(*, id_: bytes | None = None, ms: bytes | None = None, **extra: Any) -> OscoreMaterial:
    """OSCORE_Input_Material as the AS generates it: 6-byte id, 16-byte master secret, nothing else."""
    return OscoreMaterial(
        id=id_ if id_ is not None else secrets.token_bytes(6),
        ms=ms if ms is not None else secrets.token_bytes(16),
        **extra,
    )


def mint(
    key: CoseKey,
    *,
    osc: OscoreMaterial | None = None,
    cnf: Confirmation | None = None,
    scope: str | bytes | None = "/lock:GET,PUT,POST /battery:GET",
    iss: str | None = ISSUER,
    aud: str | None = AUDIENCE,
    iat: int = T0,
    exp: int | None = T0 + LIFETIME,
    exi: int | None = None,
    cti: bytes | None = None,
    cnonce: bytes | None = None,
    ace_profile: int | None = AceProfile.COAP_OSCORE,
) -> bytes:
    """A token protected like the AS protects OSCORE-profile tokens: COSE_Encrypt0 under the shared key, tag 61.

    ``scope`` as an AIF spec string (``"/lock:GET"``) is encoded as AIF CBOR bytes; bytes are used as they are.
    """
    scope_claim = AifScope.parse_spec(scope).to_cbor() if isinstance(scope, str) else scope
    if cnf is None and osc is not None:
        cnf = Confirmation(osc=osc)
    claims = cwt.Claims(
        iss=iss,
        aud=aud,
        exp=exp,
        iat=iat,
        cti=cti if cti is not None else secrets.token_bytes(16),
        cnf=cnf,
        scope=scope_claim,
        ace_profile=ace_profile,
        cnonce=cnonce,
        exi=exi,
    )
    return cwt.issue(claims, encrypt_key=key, cwt_tag=True)


def rs_config(key: CoseKey, **overrides: Any) -> RsConfig:
    """The lock configuration the tests start from."""
    settings: dict[str, Any] = {
        "audiences": (AUDIENCE,),
        "issuer": ISSUER,
        "as_uri": AS_URI,
        "keys": cose.KeySet([key]),
        **overrides,
    }
    return RsConfig(**settings)


class ClientContext(oscore.CanProtect, oscore.CanUnprotect, oscore.SecurityContextUtils):  # type: ignore[misc]
    """The client's OSCORE context, written independently of the lock's: aiocoap derives the keys itself."""

    def __init__(self, params: OscoreContextParameters, *, master_salt: bytes | None = None) -> None:
        self.alg_aead = oscore.algorithms["AES-CCM-16-64-128"]
        self.hashfun = oscore.hashfunctions["sha256"]
        self.id_context = params.id_context
        self.sender_id = params.sender_id
        self.recipient_id = params.recipient_id
        self.derive_keys(params.master_salt if master_salt is None else master_salt, params.master_secret)
        self.sender_sequence_number = 0
        self.recipient_replay_window = oscore.ReplayWindow(32, lambda: None)
        self.recipient_replay_window.initialize_empty()
        self.echo_recovery = None

    def post_seqnoincrease(self) -> None:
        pass


@dataclass
class Reply:
    """A response as the tests look at it (after OSCORE, if the request was protected)."""

    code: Code
    payload: bytes = b""
    content_format: int | None = None
    max_age: int | None = None
    size1: int | None = None
    protected: bool = False
    echo: bytes | None = None

    @property
    def dotted(self) -> str:
        return str(self.code.dotted)

    @classmethod
    def of(cls, message: aiocoap.Message, *, protected: bool) -> Reply:
        fmt = message.opt.content_format
        return cls(
            message.code,
            bytes(message.payload),
            None if fmt is None else int(fmt),
            message.opt.max_age,
            message.opt.size1,
            protected,
            message.opt.echo,
        )


@dataclass
class Session:
    """An established OSCORE association with the lock (RFC 9203 §4.3, client side)."""

    client: Client
    context: ClientContext
    params: OscoreContextParameters
    nonce2: bytes
    id2: bytes
    coap: aiocoap.Context

    def request(
        self,
        code: Code,
        path: str,
        payload: bytes = b"",
        *,
        accept: str | None = None,
        content_format: int | None = None,
    ) -> Reply:
        """An OSCORE-protected request; an unprotected answer (e.g. 4.01 from a dropped context) is returned too."""
        message = aiocoap.Message(code=code, uri=self.client.base + path, payload=payload)
        if accept is not None:
            message.opt.accept = ContentFormat.by_media_type(accept)
        if content_format is not None:
            message.opt.content_format = ContentFormat(content_format)
        return self.client.send(self.coap, message)

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request(Code.GET, path, **kwargs)

    def put(self, path: str, payload: bytes) -> Reply:
        return self.request(Code.PUT, path, payload)

    def protect(self, code: Code, path: str, payload: bytes = b"") -> tuple[aiocoap.Message, Any]:
        """Protect a request by hand (for replays): the outer message, ready to send, and its request id."""
        inner = aiocoap.Message(code=code, uri=self.client.base + path, payload=payload)
        outer, request_id = self.context.protect(inner)
        wire = aiocoap.Message(code=outer.code, payload=outer.payload, oscore=outer.opt.oscore, uri=self.client.base)
        return wire, request_id

    def send_raw(self, wire: aiocoap.Message) -> aiocoap.Message:
        """Send an already protected message as it is (through a context without OSCORE credentials)."""
        return self.client.send_message(self.client.plain, wire.copy())


@dataclass
class Client:
    """A CoAP client of one lock that performs the RFC 9203 exchange by hand."""

    loops: LoopThread
    base: str
    plain: aiocoap.Context
    _sessions: list[aiocoap.Context] = field(default_factory=list)

    @classmethod
    def create(cls, loops: LoopThread, base: str) -> Client:
        return cls(loops, base, loops.run(aiocoap.Context.create_client_context()))

    def close(self) -> None:
        for ctx in [*self._sessions, self.plain]:
            self.loops.run(ctx.shutdown())
        self._sessions.clear()

    def send_message(self, ctx: aiocoap.Context, message: aiocoap.Message) -> aiocoap.Message:
        async def go() -> aiocoap.Message:
            return await asyncio.wait_for(ctx.request(message).response, TIMEOUT)

        return self.loops.run(go(), timeout=TIMEOUT + 1)

    def send(self, ctx: aiocoap.Context, message: aiocoap.Message) -> Reply:
        try:
            response = self.send_message(ctx, message)
        except oscore.NotAProtectedMessage as exc:
            return Reply.of(exc.plain_message, protected=False)
        return Reply.of(response, protected=response.opt.oscore is not None or ctx is not self.plain)

    def post(self, path: str, payload: bytes, *, content_format: int | None = 19, code: Code = Code.POST) -> Reply:
        """An unprotected request (the token upload)."""
        message = aiocoap.Message(code=code, uri=self.base + path, payload=payload)
        if content_format is not None:
            message.opt.content_format = ContentFormat(content_format)
        return self.send(self.plain, message)

    def upload(self, token: bytes, *, nonce1: bytes | None = None, id1: bytes | None = b"\x01") -> Reply:
        """POST /authz-info with ``{1: token, 40: nonce1, 43: ID1}`` (RFC 9203 §4.1)."""
        request = AuthzInfoRequest(access_token=token, nonce1=nonce1, ace_client_recipientid=id1)
        return self.post("/authz-info", request.to_cbor())

    def establish(
        self,
        token: bytes,
        osc: OscoreMaterial,
        *,
        id1: bytes = b"\x01",
        nonce1: bytes | None = None,
        master_salt: bytes | None = None,
    ) -> Session:
        """Upload ``token``, check the 2.01, derive the client context (RFC 9203 §4.3) and install it."""
        nonce1 = nonce1 if nonce1 is not None else secrets.token_bytes(8)
        reply = self.upload(token, nonce1=nonce1, id1=id1)
        assert reply.dotted == "2.01", reply
        assert reply.content_format == 19
        answer = AuthzInfoResponse.from_cbor(reply.payload)
        assert len(answer.nonce2) == 8
        assert answer.ace_server_recipientid != id1
        params = context_parameters(
            osc,
            nonce1=nonce1,
            nonce2=answer.nonce2,
            client_recipient_id=id1,
            server_recipient_id=answer.ace_server_recipientid,
            role=Role.CLIENT,
        )
        context = ClientContext(params, master_salt=master_salt)
        coap = self.loops.run(aiocoap.Context.create_client_context())
        coap.client_credentials[self.base + "/*"] = context
        self._sessions.append(coap)
        return Session(self, context, params, answer.nonce2, answer.ace_server_recipientid, coap)


@dataclass
class Lock:
    """An in-process door lock on a loopback port, driven by a manual clock."""

    loops: LoopThread
    server: LockServer
    door: DoorLock
    rs: ResourceServer
    clock: ManualClock
    stopped: bool = False

    @property
    def base(self) -> str:
        return self.server.uri

    @property
    def site(self) -> AceSiteWrapper:
        return self.server.site

    def stop(self) -> None:
        self.stopped = True
        self.loops.run(self.server.shutdown())


def start_lock(
    loops: LoopThread, config: RsConfig, *, clock: ManualClock | None = None, port: int | None = None
) -> Lock:
    """Start a door lock for ``config`` on 127.0.0.1 (restoring its state file, if any)."""
    clock = clock if clock is not None else ManualClock(wall=float(T0), uptime=1000.0)
    rs = ResourceServer(config, clock=clock)
    lock_config = LockConfig(
        rs=config, host="127.0.0.1", port=port if port is not None else free_port(socket.SOCK_DGRAM)
    )
    server, door = loops.run(start(lock_config, rs=rs))
    return Lock(loops, server, door, rs, clock)
