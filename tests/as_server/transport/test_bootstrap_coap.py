"""The bootstrap server over real sockets (issue #7): DTLS with per-device PSKs and, for development, plain CoAP.

The device side here is plain aiocoap, as any standard LwM2M client would be (the library's own device side,
resource_server.bootstrap_client, has its end-to-end tests elsewhere): these tests pin the wire behaviour.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiocoap
import aiocoap.resource as resource
import pytest
from aiocoap import Code
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ace_core.keys import CoseKey
from ace_core.lwm2m.identifiers import make_endpoint, make_enrolment_id, make_psk_identity, make_serial
from ace_core.lwm2m.messages import parse_bootstrap_pack
from ace_core.lwm2m.objects import SecurityInstance, ServerInstance
from ace_core.lwm2m.registry import Lwm2mContentFormat
from as_server.app import AuthorizationServer
from as_server.bootstrap.device_db import DEVICE_DB_FILE, SqliteDeviceStore
from as_server.bootstrap.devices import BatchRecord, FactoryDevice
from as_server.bootstrap.server import PACK_SECURITY_INSTANCE, BootstrapService, open_bootstrap_service
from as_server.sealing import MasterKey
from as_server.transport.bootstrap_coap import BootstrapCoapServer, dtls_available
from tests.as_server.transport.harness import LoopThread, init_home


def test_dtls_is_installed() -> None:
    """`make test` installs the dtls extra (DTLSSocket); without it these tests must fail, not skip."""
    assert dtls_available()


NOW_BATCH = "L1-20261123-000000-0000"
SITE = "building-a"
TIMEOUT = 20.0


def _device(n: int, *, site: str | None = SITE) -> FactoryDevice:
    seed = n.to_bytes(4, "big")
    serial = make_serial("L1", n)
    return FactoryDevice(
        serial=serial,
        model="L1",
        endpoint=make_endpoint("ostiary", serial),
        psk_identity=make_psk_identity(seed + b"\x00" * 6),
        psk=seed * 4,
        enrolment_id=make_enrolment_id(seed + b"\x01" * 6),
        batch_id=NOW_BATCH,
        site=site,
    )


CLAIMED = _device(1)
OTHER = _device(2)
UNCLAIMED = _device(3, site=None)


@dataclass
class Bs:
    server: AuthorizationServer
    service: BootstrapService
    transport: BootstrapCoapServer
    loops: LoopThread
    home: Path

    @property
    def dtls_uri(self) -> str:
        return f"coaps://127.0.0.1:{self.transport.dtls_port}"

    @property
    def plain_uri(self) -> str:
        return f"coap://127.0.0.1:{self.transport.plain_port}"


@pytest.fixture(scope="module")
def loops() -> Iterator[LoopThread]:
    loop_thread = LoopThread()
    yield loop_thread
    loop_thread.close()


@pytest.fixture(scope="module")
def bs(tmp_path_factory: pytest.TempPathFactory, loops: LoopThread) -> Iterator[Bs]:
    home = tmp_path_factory.mktemp("home")
    settings = init_home(home, bootstrap_plain_port=1)  # non-zero: the service accepts plain-CoAP peers
    devices = SqliteDeviceStore(home / DEVICE_DB_FILE, MasterKey.load(settings.master_key_file))
    devices.add_batch(BatchRecord(batch_id=NOW_BATCH, model="L1", count=3, site=None, created_at=0), b"k" * 32)
    devices.add_many([CLAIMED, OTHER, UNCLAIMED], now=0)
    devices.complete_batch(NOW_BATCH)
    devices.close()
    server = _with_signing_key(settings)
    service, close_service = open_bootstrap_service(server)
    transport = loops.run(
        BootstrapCoapServer.start(service, host="127.0.0.1", dtls_port=0, plain_port=0, exchange_timeout=2.0)
    )
    # the Server URI written to locks names the port this test's server really listens on
    service.server_uri = f"coaps://127.0.0.1:{transport.dtls_port}"
    yield Bs(server, service, transport, loops, home)
    loops.run(transport.close())
    close_service()
    server.close()


def _with_signing_key(settings: Any) -> AuthorizationServer:
    """The AS of ``settings`` with a token-signing key, as ``ostiary as init`` leaves it."""
    from ostiary.as_cli import _new_signing_key

    server = AuthorizationServer.from_settings(settings)
    if server.storage.signing_key() is None:
        server.storage.add_signing_key(_new_signing_key())
    return server


def _dtls_client_credentials(ctx: aiocoap.Context, uri: str, identity: bytes, psk: bytes) -> None:
    ctx.client_credentials.load_from_dict({f"{uri}/*": {"dtls": {"psk": psk, "client-identity": identity}}})


async def _request(
    uri: str, message: aiocoap.Message, *, identity: bytes | None = None, psk: bytes | None = None, site: Any = None
) -> aiocoap.Message:
    ctx = await aiocoap.Context.create_client_context(transports=["tinydtls", "udp6"])
    try:
        if identity is not None and psk is not None:
            _dtls_client_credentials(ctx, uri, identity, psk)
        return await asyncio.wait_for(ctx.request(message).response, 8)
    finally:
        await ctx.shutdown()


def _pack_request(base: str, endpoint: str) -> aiocoap.Message:
    message = aiocoap.Message(code=Code.GET, uri=f"{base}/bspack?ep={endpoint}")
    message.opt.accept = int(Lwm2mContentFormat.SENML_CBOR)
    return message


def _pull(bs: Bs, device: FactoryDevice, *, endpoint: str | None = None, psk: bytes | None = None) -> aiocoap.Message:
    """A Bootstrap-Pack-Request over DTLS with ``device``'s bootstrap identity (and its PSK unless ``psk``)."""
    message = _pack_request(bs.dtls_uri, endpoint or device.endpoint)
    return bs.loops.run(
        _request(bs.dtls_uri, message, identity=device.psk_identity, psk=device.psk if psk is None else psk)
    )


async def _sessions_ended(server: BootstrapCoapServer) -> None:
    """Wait (bounded) until every classic session the server runs has ended and recorded its outcome."""
    if server.sessions:
        await asyncio.wait_for(asyncio.gather(*list(server.sessions), return_exceptions=True), TIMEOUT)


# -- Bootstrap-Pack over DTLS --------------------------------------------------------------------------------


def test_pack_over_dtls_delivers_the_lock_account_and_registers_the_rs(bs: Bs) -> None:
    response = _pull(bs, CLAIMED)
    assert response.code == Code.CONTENT, response.payload
    assert response.opt.content_format == Lwm2mContentFormat.SENML_CBOR
    pack = parse_bootstrap_pack(bytes(response.payload))
    account = pack.account(1)
    assert account.security is pack.security[PACK_SECURITY_INSTANCE]
    identity = account.security.public_key_or_identity
    assert identity.startswith(CLAIMED.serial.encode() + b"#")
    key = account.security.secret_key
    assert key is not None and len(key) == 16 and key != CLAIMED.psk
    assert account.security.server_uri.startswith("coaps://")
    signing = bs.server.storage.signing_key()
    assert signing is not None
    assert CoseKey.from_cbor(account.security.server_public_key) == signing.key.public()
    # the lock is now a resource server whose token key is the delivered key
    rs = bs.server.storage.get_resource_server(CLAIMED.serial)
    assert rs is not None and rs.shared_key is not None and rs.shared_key.k == key
    # asking again before a rotation is due re-delivers the same key (idempotent)
    again = _pull(bs, CLAIMED)
    assert parse_bootstrap_pack(bytes(again.payload)).account(1).security.secret_key == key


def test_a_wrong_psk_fails_the_handshake_and_writes_nothing(bs: Bs) -> None:
    with pytest.raises((TimeoutError, aiocoap.error.Error)):
        _pull(bs, OTHER, psk=b"\x00" * 16)
    assert bs.server.storage.get_resource_server(OTHER.serial) is None


def test_another_devices_endpoint_is_refused(bs: Bs) -> None:
    response = _pull(bs, CLAIMED, endpoint=OTHER.endpoint)
    assert response.code == Code.BAD_REQUEST
    assert b"another device" in response.payload
    assert bs.server.storage.get_resource_server(OTHER.serial) is None


def test_an_unclaimed_device_is_refused(bs: Bs) -> None:
    response = _pull(bs, UNCLAIMED)
    assert response.code == Code.BAD_REQUEST
    assert b"not assigned to a site" in response.payload
    assert bs.server.storage.get_resource_server(UNCLAIMED.serial) is None


def test_malformed_queries_and_accept(bs: Bs) -> None:
    creds = {"identity": CLAIMED.psk_identity, "psk": CLAIMED.psk}
    no_ep = aiocoap.Message(code=Code.GET, uri=f"{bs.dtls_uri}/bspack")
    assert bs.loops.run(_request(bs.dtls_uri, no_ep, **creds)).code == Code.BAD_REQUEST
    json_accept = _pack_request(bs.dtls_uri, CLAIMED.endpoint)
    json_accept.opt.accept = 110
    assert bs.loops.run(_request(bs.dtls_uri, json_accept, **creds)).code == Code.NOT_ACCEPTABLE


# -- the classic flow (server-driven operations over the same DTLS session) -----------------------------------


class _Lwm2mDevice(resource.Resource):  # type: ignore[misc]
    """A minimal standard LwM2M client's data model: answers Discover, records Delete/Write, checks Finish."""

    def __init__(self, *, refuse_finish: bool = False, ignore_writes: bool = False) -> None:
        super().__init__()
        self.requests: list[tuple[str, str, bytes]] = []
        self.finished = asyncio.Event()
        self.refuse_finish = refuse_finish
        self.ignore_writes = ignore_writes

    async def render(self, request: aiocoap.Message) -> aiocoap.Message:
        path = "/" + "/".join(request.opt.uri_path)
        self.requests.append((str(request.code), path, bytes(request.payload)))
        if request.code == Code.GET:
            assert request.opt.accept == 40
            return aiocoap.Message(code=Code.CONTENT, payload=b"</>;lwm2m=1.1,</0/0>,</1>,</3/0>", content_format=40)
        if request.code == Code.DELETE:
            return aiocoap.Message(code=Code.DELETED)
        if request.code == Code.PUT:
            if self.ignore_writes:
                await asyncio.Event().wait()  # never answers; cancelled when the device's context shuts down
            return aiocoap.Message(code=Code.CHANGED)
        if request.code == Code.POST and path == "/bs":
            self.finished.set()
            return aiocoap.Message(code=Code.NOT_ACCEPTABLE if self.refuse_finish else Code.CHANGED)
        return aiocoap.Message(code=Code.NOT_FOUND)


async def _classic(
    server: BootstrapCoapServer, uri: str, device: FactoryDevice, model: _Lwm2mDevice, *, dtls: bool
) -> aiocoap.Message:
    ctx = await aiocoap.Context.create_client_context(transports=["tinydtls", "udp6"])
    ctx.serversite = model  # a Resource whose render() sees every path (aiocoap leaves uri_path in place)
    try:
        if dtls:
            _dtls_client_credentials(ctx, uri, device.psk_identity, device.psk)
        request = aiocoap.Message(code=Code.POST, uri=f"{uri}/bs?pct=112&ep={device.endpoint}")
        response = await asyncio.wait_for(ctx.request(request).response, 8)
        if response.code == Code.CHANGED:
            await asyncio.wait_for(model.finished.wait(), TIMEOUT)
            await _sessions_ended(server)  # the server has the Finish answer and recorded the outcome
        return response
    finally:
        await ctx.shutdown()


def test_classic_bootstrap_over_dtls(bs: Bs) -> None:
    model = _Lwm2mDevice()
    response = bs.loops.run(_classic(bs.transport, bs.dtls_uri, OTHER, model, dtls=True), timeout=TIMEOUT + 10)
    assert response.code == Code.CHANGED
    methods = [(code.split()[0], path) for code, path, _ in model.requests]
    assert methods == [("GET", "/"), ("PUT", "/0/1"), ("PUT", "/1/0"), ("POST", "/bs")]
    security = SecurityInstance.from_tlv(model.requests[1][2], 1)
    server_instance = ServerInstance.from_tlv(model.requests[2][2], 0)
    assert security.short_server_id == server_instance.short_server_id == 1
    assert security.public_key_or_identity.startswith(OTHER.serial.encode() + b"#")
    rs = bs.server.storage.get_resource_server(OTHER.serial)
    assert rs is not None and rs.shared_key is not None and rs.shared_key.k == security.secret_key


# -- plain CoAP (development) and the registration interface ------------------------------------------------


def test_plain_coap_bootstrap_is_refused_for_operational_and_serves_devices(bs: Bs, caplog: Any) -> None:
    response = bs.loops.run(_request(bs.plain_uri, _pack_request(bs.plain_uri, CLAIMED.endpoint)))
    assert response.code == Code.CONTENT
    # no /rd on the plain side
    register = aiocoap.Message(code=Code.POST, uri=f"{bs.plain_uri}/rd?ep={CLAIMED.endpoint}")
    assert bs.loops.run(_request(bs.plain_uri, register)).code == Code.NOT_FOUND


def test_registration_with_the_operational_identity(bs: Bs) -> None:
    pack = _pull(bs, CLAIMED)
    security = parse_bootstrap_pack(bytes(pack.payload)).account(1).security
    creds = {"identity": security.public_key_or_identity, "psk": security.secret_key}

    async def flow() -> tuple[aiocoap.Message, ...]:
        ctx = await aiocoap.Context.create_client_context(transports=["tinydtls"])
        try:
            _dtls_client_credentials(ctx, bs.dtls_uri, creds["identity"], creds["psk"])
            register = aiocoap.Message(
                code=Code.POST,
                uri=f"{bs.dtls_uri}/rd?ep={CLAIMED.endpoint}&lt=300&lwm2m=1.1&b=U",
                payload=b"</1/0>,</3/0>",
                content_format=40,
            )
            created = await asyncio.wait_for(ctx.request(register).response, 8)
            location = "/".join(created.opt.location_path)
            update = aiocoap.Message(code=Code.POST, uri=f"{bs.dtls_uri}/{location}?lt=600")
            updated = await asyncio.wait_for(ctx.request(update).response, 8)
            bad_bootstrap = await asyncio.wait_for(
                ctx.request(_pack_request(bs.dtls_uri, CLAIMED.endpoint)).response, 8
            )
            delete = aiocoap.Message(code=Code.DELETE, uri=f"{bs.dtls_uri}/{location}")
            deleted = await asyncio.wait_for(ctx.request(delete).response, 8)
            again = await asyncio.wait_for(ctx.request(delete).response, 8)
            return created, updated, bad_bootstrap, deleted, again
        finally:
            await ctx.shutdown()

    created, updated, bad_bootstrap, deleted, again = bs.loops.run(flow(), timeout=40)
    assert created.code == Code.CREATED and created.opt.location_path[0] == "rd"
    assert updated.code == Code.CHANGED
    assert bad_bootstrap.code == Code.UNAUTHORIZED  # operational credentials cannot bootstrap
    assert deleted.code == Code.DELETED
    assert again.code == Code.NOT_FOUND


def test_bootstrap_identities_cannot_register(bs: Bs) -> None:
    register = aiocoap.Message(code=Code.POST, uri=f"{bs.dtls_uri}/rd?ep={CLAIMED.endpoint}&lt=300")
    response = bs.loops.run(_request(bs.dtls_uri, register, identity=CLAIMED.psk_identity, psk=CLAIMED.psk))
    assert response.code == Code.UNAUTHORIZED


def test_the_plain_port_warns_loudly(tmp_path: Path, loops: LoopThread, caplog: Any) -> None:
    settings = init_home(tmp_path / "home", bootstrap_plain_port=1)
    server = _with_signing_key(settings)
    service, close_service = open_bootstrap_service(server)
    try:
        with caplog.at_level(logging.WARNING, logger="ostiary.bootstrap.coap"):
            transport = loops.run(BootstrapCoapServer.start(service, host="127.0.0.1", dtls_port=None, plain_port=0))
            loops.run(transport.close())
        assert any("NOT authenticated" in r.getMessage() for r in caplog.records)
    finally:
        close_service()
        server.close()


# -- failures that must write nothing ------------------------------------------------------------------------

INTERRUPTED = _device(4)
REPLAYED = _device(5)
DECOMMISSIONED = _device(6)


@pytest.fixture(scope="module")
def more_devices(bs: Bs) -> None:
    devices = SqliteDeviceStore(bs.home / DEVICE_DB_FILE, MasterKey.load(bs.server.settings.master_key_file))
    batch = "L1-20261123-000000-0001"
    devices.add_batch(BatchRecord(batch_id=batch, model="L1", count=3, site=None, created_at=0), b"k" * 32)
    devices.add_many(
        [FactoryDevice(**{**_fields(d), "batch_id": batch}) for d in (INTERRUPTED, REPLAYED, DECOMMISSIONED)],
        now=0,
    )
    devices.complete_batch(batch)
    devices.decommission(DECOMMISSIONED.serial, now=1)
    devices.close()


def _fields(device: FactoryDevice) -> dict[str, Any]:
    return {name: getattr(device, name) for name in FactoryDevice.__dataclass_fields__}


def _confirmed_generations(bs: Bs, audience: str) -> list[int]:
    return [k.generation for k in bs.service.credentials.keys(audience) if k.delivered_at is not None]


def test_an_interrupted_classic_bootstrap_confirms_nothing(bs: Bs, more_devices: None) -> None:
    model = _Lwm2mDevice(ignore_writes=True)  # the device stops answering at the first Write

    async def run() -> aiocoap.Message:
        ctx = await aiocoap.Context.create_client_context(transports=["tinydtls"])
        ctx.serversite = model
        try:
            _dtls_client_credentials(ctx, bs.dtls_uri, INTERRUPTED.psk_identity, INTERRUPTED.psk)
            request = aiocoap.Message(code=Code.POST, uri=f"{bs.dtls_uri}/bs?ep={INTERRUPTED.endpoint}")
            response = await asyncio.wait_for(ctx.request(request).response, 8)
            await _sessions_ended(bs.transport)  # the server gives up after its 2 s exchange timeout
            return response
        finally:
            await ctx.shutdown()

    assert bs.loops.run(run(), timeout=30).code == Code.CHANGED
    assert not bs.transport.sessions
    assert _confirmed_generations(bs, INTERRUPTED.serial) == []
    rs = bs.server.storage.get_resource_server(INTERRUPTED.serial)
    assert rs is None or rs.shared_key is None or not _confirmed_generations(bs, INTERRUPTED.serial)


def test_a_decommissioned_devices_bootstrap_identity_is_refused(bs: Bs, more_devices: None) -> None:
    with pytest.raises((TimeoutError, aiocoap.error.Error)):
        _pull(bs, DECOMMISSIONED)
    assert bs.service.credentials.keys(DECOMMISSIONED.serial) == []


class _RecordingProxy(asyncio.DatagramProtocol):
    """A UDP relay between one client and the server that records what the client sent (an on-path observer)."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.sent: list[bytes] = []
        self.transport: Any = None
        self.client: Any = None
        self.upstream: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if addr == self.server:
            if self.client is not None:
                self.transport.sendto(data, self.client)
            return
        self.client = addr
        self.sent.append(data)
        self.transport.sendto(data, self.server)


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(data)


def test_a_replayed_exchange_gets_nothing_and_writes_nothing(bs: Bs, more_devices: None) -> None:
    assert bs.transport.dtls_port is not None
    server = ("127.0.0.1", bs.transport.dtls_port)

    async def bootstrap_through_proxy() -> tuple[aiocoap.Message, list[bytes]]:
        loop = asyncio.get_running_loop()
        proxy_transport, proxy = await loop.create_datagram_endpoint(
            lambda: _RecordingProxy(server), local_addr=("127.0.0.1", 0)
        )
        uri = f"coaps://127.0.0.1:{proxy_transport.get_extra_info('sockname')[1]}"
        try:
            response = await _request(
                uri, _pack_request(uri, REPLAYED.endpoint), identity=REPLAYED.psk_identity, psk=REPLAYED.psk
            )
        finally:
            proxy_transport.close()
        return response, proxy.sent

    async def replay(datagrams: list[bytes]) -> list[bytes]:
        """An on-path observer replays every datagram the device sent, from its own socket."""
        loop = asyncio.get_running_loop()
        transport, collector = await loop.create_datagram_endpoint(_Collector, local_addr=("127.0.0.1", 0))
        try:
            for datagram in datagrams:
                transport.sendto(datagram, server)
                await asyncio.sleep(0.05)  # the device's own pacing, roughly: one flight at a time
            # What must be shown is an *absence* (no answer carrying application data), which no event signals:
            # a quiet second on loopback, where the real exchange took a few milliseconds.
            await asyncio.sleep(1.0)
        finally:
            transport.close()
        return collector.received

    response, sent = bs.loops.run(bootstrap_through_proxy(), timeout=40)
    assert response.code == Code.CONTENT and sent
    before = bs.service.credentials.keys(REPLAYED.serial)
    assert len(before) == 1 and before[0].delivered_at is not None
    answers = bs.loops.run(replay(sent), timeout=40)
    # DTLS record content type 23 is application data: the replay never got a CoAP answer through
    assert not [a for a in answers if a[:1] == b"\x17"]
    assert bs.service.credentials.keys(REPLAYED.serial) == before


def _dtls_sessions(bs: Bs) -> int:
    assert bs.transport.dtls_context is not None
    for interface in bs.transport.dtls_context.request_interfaces:
        pool = getattr(interface.token_interface.message_interface, "_pool", None)
        if pool is not None and hasattr(pool, "_connections"):
            return len(pool._connections)
    raise AssertionError("no DTLS server transport")


def test_a_session_the_device_closes_is_dropped(bs: Bs) -> None:
    """A device's close_notify ends its session at the server (aiocoap alone kept it: a device reconnecting from the
    same address and port then met a dead session)."""

    async def bootstrap_and_close() -> tuple[Code, int]:
        ctx = await aiocoap.Context.create_client_context(transports=["tinydtls"])
        _dtls_client_credentials(ctx, bs.dtls_uri, CLAIMED.psk_identity, CLAIMED.psk)
        try:
            response = await asyncio.wait_for(ctx.request(_pack_request(bs.dtls_uri, CLAIMED.endpoint)).response, 8)
            during = _dtls_sessions(bs)
        finally:
            await ctx.shutdown()  # sends close_notify
        return response.code, during

    before = _dtls_sessions(bs)
    code, during = bs.loops.run(bootstrap_and_close())
    assert code == Code.CONTENT and during == before + 1

    async def settled() -> int:
        for _ in range(50):
            if _dtls_sessions(bs) == before:
                break
            await asyncio.sleep(0.05)
        return _dtls_sessions(bs)

    assert bs.loops.run(settled()) == before


def test_register_takes_the_query_as_coap_delivers_it(bs: Bs) -> None:
    """Uri-Query options arrive percent-decoded: ``%41`` in an endpoint name is three characters, not ``A``; a
    parameter without a value, or a missing ``ep``, is a 4.00."""
    from ace_core.lwm2m.errors import InvalidBootstrapRequest
    from as_server.bootstrap.server import Peer, PeerKind

    security = parse_bootstrap_pack(bytes(_pull(bs, CLAIMED).payload)).account(1).security
    identity = security.public_key_or_identity
    peer = Peer(PeerKind.OPERATIONAL, identity, CLAIMED.serial, int(identity.rsplit(b"#", 1)[1]))
    location = bs.service.register(("lt=300", "ep=lock%41", "future=1"), b"</1/0>", peer, "127.0.0.1:1")
    registration = bs.server.storage.get_registration(location.split("/")[1])
    assert registration is not None and registration.endpoint == "lock%41" and registration.lifetime == 300
    for query in (("ep=x", "lt"), ("lt=300",), ("ep=x", "ep=y")):
        with pytest.raises(InvalidBootstrapRequest):
            bs.service.register(query, b"", peer, "127.0.0.1:1")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    query=st.lists(
        st.one_of(st.text(max_size=20), st.sampled_from(["ep=x", "lt=30", "lt=0", "b=UQ", "b="])), max_size=8
    ),
    payload=st.one_of(st.binary(max_size=64), st.binary(min_size=2040, max_size=2100)),
)
def test_registration_input_is_fuzzed(bs: Bs, query: list[str], payload: bytes) -> None:
    """Register and Update with any query and payload: stored, or refused with 4.00/4.03/4.04/4.13, nothing else."""
    from ace_core.lwm2m.errors import InvalidBootstrapRequest
    from as_server.bootstrap.server import Lwm2mRefused, Peer, PeerKind

    if not bs.service.credentials.keys(CLAIMED.serial):
        assert _pull(bs, CLAIMED).code == Code.CONTENT
    newest = bs.service.credentials.keys(CLAIMED.serial)[-1]
    peer = Peer(PeerKind.OPERATIONAL, newest.identity, CLAIMED.serial, newest.generation)
    for call in (
        lambda: bs.service.register(tuple(query), payload, peer, "127.0.0.1:1"),
        lambda: bs.service.update("00000000", tuple(query), payload, peer, "127.0.0.1:1"),
    ):
        try:
            call()
        except (InvalidBootstrapRequest, Lwm2mRefused):
            pass


def test_the_pack_is_the_accounts_pack_and_follows_the_account_settings(bs: Bs) -> None:
    """The service encodes its packs from a template (issue #7 benchmark): byte for byte the pack of the account
    :func:`build_server_account` makes, rebuilt when the account's settings change."""
    from ace_core.lwm2m.messages import build_bootstrap_pack
    from as_server.bootstrap.server import PACK_SERVER_INSTANCE, UNAUTHENTICATED

    service = bs.service
    query = (f"ep={CLAIMED.endpoint}",)
    uri, lifetime = service.server_uri, service.lifetime

    def expected() -> bytes:
        key = service.credentials.key_for_delivery(CLAIMED.serial, now=service._now())
        return build_bootstrap_pack(
            service._account(key), security_instance_id=PACK_SECURITY_INSTANCE, server_instance_id=PACK_SERVER_INSTANCE
        )

    try:
        payload, _fmt = service.pack(query, None, UNAUTHENTICATED)
        assert payload == expected()
        service.server_uri, service.lifetime = "coaps://elsewhere.example:5684", 120
        payload, _fmt = service.pack(query, None, UNAUTHENTICATED)
        assert payload == expected()
        account = parse_bootstrap_pack(payload).account(1)
        assert account.security.server_uri == "coaps://elsewhere.example:5684" and account.server.lifetime == 120
    finally:
        service.server_uri, service.lifetime = uri, lifetime


def test_a_second_bootstrap_server_on_the_dtls_port_refuses_to_start(bs: Bs) -> None:
    """aiocoap's DTLS server binds with SO_REUSEPORT; ours checks first (as_server.transport.udp)."""
    from as_server.transport.udp import PortInUseError

    port = bs.transport.dtls_port
    with pytest.raises(PortInUseError, match=rf"UDP port {port} on 127.0.0.1 .*bootstrap_dtls_port"):
        bs.loops.run(BootstrapCoapServer.start(bs.service, host="127.0.0.1", dtls_port=port))


def test_a_stop_with_open_dtls_sessions_logs_no_warning(bs: Bs, caplog: Any) -> None:
    """aiocoap's own shutdown order (message manager first, then the DTLS sessions) logged "Internal shutdown
    sequence mismatch" once per open session; :meth:`BootstrapCoapServer.close` drops the sessions first."""

    async def flow() -> tuple[Code, int]:
        server = await BootstrapCoapServer.start(bs.service, host="127.0.0.1", dtls_port=0, exchange_timeout=2.0)
        uri = f"coaps://127.0.0.1:{server.dtls_port}"
        ctx = await aiocoap.Context.create_client_context(transports=["tinydtls"])
        _dtls_client_credentials(ctx, uri, CLAIMED.psk_identity, CLAIMED.psk)
        try:
            response = await asyncio.wait_for(ctx.request(_pack_request(uri, CLAIMED.endpoint)).response, 8)
            sessions = len(server._dtls_interface._pool._connections)
            await server.close()  # the device's session is still open
        finally:
            await ctx.shutdown()
        return response.code, sessions

    with caplog.at_level(logging.INFO):
        code, sessions = bs.loops.run(flow())
    assert code == Code.CONTENT and sessions == 1
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [], [r.getMessage() for r in warnings]
