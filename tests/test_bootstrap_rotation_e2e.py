"""A bootstrapped lock with tokens from the real AS, over real sockets (issue #7): the whole life of its operational
credentials.

* the lock built from a bootstrap (pull or classic, over DTLS) verifies the tokens the AS's token endpoint issues
  for its audience: the client SDK gets one, uploads it to the lock's ``/authz-info`` and talks OSCORE;
* rotation: tokens made before and after the switch, the ``next`` slot promoted by the first token under it, the
  previous key accepted during the overlap, and after the retirement the old identity refused at DTLS and the
  old key gone on both sides;
* an interrupted classic bootstrap (the server falls silent mid-flow, or stops before its Finish) leaves the
  lock's credentials file byte for byte as it was;
* revocation: the operational identity refused at DTLS, the tokens revoked at the AS; a decommissioned device
  cannot bootstrap; a DTLS session opened before the revocation is refused too;
* a registration keeps its DTLS session between Register and Update;
* after a revocation the running (or restarted) lock takes the new key alone, at once: the old key verifies
  nothing from then on and the tokens the lock held are gone.

Every lock here runs in the test's own event loop (``asyncio.run``; :func:`run_bootstrapped` installs signal
handlers, which only the main thread may); the AS (token endpoint and bootstrap server) runs on a loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiocoap
import aiocoap.resource as resource
import pytest
from aiocoap import Code

from ace_core import cwt
from ace_core.errors import AceError
from ace_core.lwm2m.bundle import DeviceBundle
from ace_core.lwm2m.identifiers import make_endpoint, make_enrolment_id, make_psk_identity, make_serial
from ace_core.lwm2m.messages import BootstrapRequest, Operation
from ace_core.lwm2m.objects import build_server_account
from ace_core.messages import AccessInformation, AuthzInfoRequest
from ace_core.scope import AifScope
from as_server.app import AuthorizationServer
from as_server.bootstrap.device_db import DEVICE_DB_FILE, SqliteDeviceStore
from as_server.bootstrap.devices import BatchRecord, FactoryDevice
from as_server.bootstrap.server import BootstrapService, open_bootstrap_service
from as_server.bootstrap.session import BootstrapSession
from as_server.models import Client, PopKeyType, TokenStatus
from as_server.sealing import MasterKey, hash_secret
from as_server.transport import bootstrap_coap
from as_server.transport.bootstrap_coap import BootstrapCoapServer, dtls_available
from client_sdk.client import AceClient
from resource_server import bootstrap_client
from resource_server.bootstrap_client import BootstrapError
from resource_server.credentials import CredentialKeeper, Credentials, CredentialStore, KeySlot
from resource_server.examples.door_lock import run_bootstrapped
from resource_server.token_store import TokenStore
from resource_server.transport.lwm2m_client import BootstrapClient, Registration, RegistrationFailed
from tests.as_server.transport.harness import ISSUER, LoopThread, Running, free_port, init_home, start

# `make test` installs the dtls extra; without DTLSSocket these tests fail (see test_bootstrap_coap.py).
assert dtls_available(), "DTLSSocket (the dtls extra) is not installed: pip install 'ostiary[dtls]'"

T = TypeVar("T")

BATCH = "L1-20261124-000000-0000"
SITE = "building-b"
APP = "lock-app"
APP_SECRET = "lock-app-secret-" + secrets.token_hex(8)
SCOPE = "/lock:GET,PUT,POST /battery:GET"
POLICY = f'rules:\n  - client: {APP}\n    audience: "L1-*"\n    scope: "{SCOPE}"\n'
#: Bound on one whole test flow (seconds); every single network wait inside is bounded more tightly.
FLOW_TIMEOUT = 45.0
#: Bound on one bootstrap or registration request.
REQUEST_TIMEOUT = 5.0
#: Bound on a request whose DTLS handshake the AS is expected to refuse (a refused handshake ends in an alert or
#: in silence; either way the request fails within this).
REFUSED_TIMEOUT = 3.0
#: The rotation test's lock pulls this often (seconds).
PULL_INTERVAL = 0.5
POLL = 0.05


def _device(n: int) -> FactoryDevice:
    seed = (1000 + n).to_bytes(4, "big")
    serial = make_serial("L1", 100 + n)
    return FactoryDevice(
        serial=serial,
        model="L1",
        endpoint=make_endpoint("ostiary", serial),
        psk_identity=make_psk_identity(seed + b"\x02" * 6),
        psk=secrets.token_bytes(16),
        enrolment_id=make_enrolment_id(seed + b"\x03" * 6),
        batch_id=BATCH,
        site=SITE,
    )


PULLED = _device(1)
CLASSIC = _device(2)
ROTATED = _device(3)
INTERRUPTED = _device(4)
CUT_SHORT = _device(5)
REVOKED = _device(6)
STALE_SESSION = _device(7)
REREGISTERED = _device(8)
REVOKED_RUNNING = _device(9)
REVOKED_STOPPED = _device(10)
DEVICES = (
    PULLED,
    CLASSIC,
    ROTATED,
    INTERRUPTED,
    CUT_SHORT,
    REVOKED,
    STALE_SESSION,
    REREGISTERED,
    REVOKED_RUNNING,
    REVOKED_STOPPED,
)


@dataclass
class Deployment:
    """The AS (token endpoint over CoAP and HTTP) and its bootstrap server (DTLS) on loopback."""

    running: Running
    service: BootstrapService
    transport: BootstrapCoapServer
    loops: LoopThread
    home: Path

    @property
    def server(self) -> AuthorizationServer:
        return self.running.server

    @property
    def dtls_uri(self) -> str:
        return f"coaps://127.0.0.1:{self.transport.dtls_port}"

    @property
    def token_uri(self) -> str:
        return self.running.coap.base + "/token"

    def devices(self) -> SqliteDeviceStore:
        return SqliteDeviceStore(self.home / DEVICE_DB_FILE, MasterKey.load(self.server.settings.master_key_file))


@pytest.fixture(scope="module")
def loops() -> Iterator[LoopThread]:
    loop_thread = LoopThread()
    yield loop_thread
    loop_thread.close()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, loops: LoopThread) -> Iterator[Deployment]:
    from ostiary.as_cli import _new_signing_key

    home = tmp_path_factory.mktemp("home")
    settings = init_home(home)
    (home / "policy.yaml").write_text(POLICY)  # the app may ask for every L1 lock
    devices = SqliteDeviceStore(home / DEVICE_DB_FILE, MasterKey.load(settings.master_key_file))
    devices.add_batch(BatchRecord(batch_id=BATCH, model="L1", count=len(DEVICES), site=SITE, created_at=0), b"k" * 32)
    devices.add_many(list(DEVICES), now=0)
    devices.complete_batch(BATCH)
    devices.close()
    server = AuthorizationServer.from_settings(settings)
    server.storage.add_signing_key(_new_signing_key())  # as `ostiary as init` does: /0/x/4 is its public part
    server.storage.add_client(
        Client(
            client_id=APP,
            secret_hash=hash_secret(APP_SECRET),
            audiences=frozenset(d.serial for d in DEVICES),
            pop_key_types=frozenset({PopKeyType.SYMMETRIC}),
            created_at=int(time.time()),
        )
    )
    running = start(server, loops)  # the token endpoint (CoAP and HTTP)
    service, close_service = open_bootstrap_service(server)
    transport = loops.run(BootstrapCoapServer.start(service, host="127.0.0.1", dtls_port=0, exchange_timeout=2.0))
    service.server_uri = f"coaps://127.0.0.1:{transport.dtls_port}"  # where this test's server really listens
    dep = Deployment(running, service, transport, loops, home)
    yield dep
    loops.run(dep.transport.close())  # a test may have restarted it
    close_service()
    running.stop()
    server.close()


@pytest.fixture
def fresh_psk_lookups(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bootstrap server remembers a PSK lookup for 2 s (tinydtls asks several times per handshake): without
    the cache a rotation, retirement or revocation shows at the very next handshake."""
    monkeypatch.setattr(bootstrap_coap, "PSK_CACHE_SECONDS", 0.0)


def _bundle(dep: Deployment, device: FactoryDevice, *, uri: str | None = None) -> DeviceBundle:
    return DeviceBundle(
        endpoint=device.endpoint,
        serial=device.serial,
        model="L1",
        psk_identity=device.psk_identity,
        psk=device.psk,
        bootstrap_uri=uri if uri is not None else dep.dtls_uri,
    )


def _run(flow: Callable[[], Awaitable[T]], timeout: float = FLOW_TIMEOUT) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(flow(), timeout)

    return asyncio.run(bounded())


async def _until(what: str, check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``check`` (blocking calls run in a thread) until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(POLL)


@dataclass
class RunningLock:
    """A lock served by :func:`run_bootstrapped` in the current event loop."""

    client: BootstrapClient
    keeper: CredentialKeeper
    uri: str
    stop: asyncio.Event
    task: asyncio.Task[int]

    @property
    def credentials(self) -> Credentials:
        assert self.keeper.credentials is not None
        return self.keeper.credentials

    async def close(self) -> int:
        self.stop.set()
        return await asyncio.wait_for(self.task, 15)


@contextlib.asynccontextmanager
async def _serve_lock(
    dep: Deployment,
    device: FactoryDevice,
    state_dir: Path,
    *,
    method: str = "pack",
    clock: Callable[[], float] = time.time,
    pull_interval: float = 3600.0,
) -> Any:
    """Bootstrap ``device`` and serve it as the reference door lock until the block ends; the lock is registered
    at the AS when the block starts."""
    keeper = CredentialKeeper(CredentialStore(state_dir / "credentials.cbor"), clock=clock)
    client = BootstrapClient(_bundle(dep, device), keeper, timeout=REQUEST_TIMEOUT)
    port = free_port(socket.SOCK_DGRAM)
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(
        run_bootstrapped(
            client,
            issuer=ISSUER,
            as_uri=dep.token_uri,
            port=port,
            state_file=state_dir / "lock.state",
            method=method,
            pull_interval=pull_interval,
            out=io.StringIO(),
            stop=stop,
        )
    )
    lock = RunningLock(client, keeper, f"coap://127.0.0.1:{port}", stop, task)
    try:
        await _until(
            "the lock's registration", lambda: task.done() or dep.server.storage.registration_of(device.serial)
        )
        if task.done():
            task.result()  # raise what stopped it
            raise AssertionError("the lock stopped before it registered")
        yield lock
    finally:
        if not task.done():
            assert await lock.close() == 0


def _app(dep: Deployment) -> AceClient:
    return AceClient(dep.token_uri, APP, APP_SECRET, timeout=REQUEST_TIMEOUT)


async def _upload(lock_uri: str, token: bytes) -> aiocoap.Message:
    """POST the token to the lock's /authz-info as RFC 9203 §4.1 does (nonce1, ID1)."""
    request = AuthzInfoRequest(access_token=token, nonce1=secrets.token_bytes(8), ace_client_recipientid=b"\x07")
    ctx = await aiocoap.Context.create_client_context()
    try:
        message = aiocoap.Message(code=Code.POST, uri=lock_uri + "/authz-info", payload=request.to_cbor())
        message.opt.content_format = 19
        return await asyncio.wait_for(ctx.request(message).response, REQUEST_TIMEOUT)
    finally:
        await ctx.shutdown()


async def _register(dep: Deployment, device: FactoryDevice, slot: KeySlot, *, timeout: float) -> tuple[str, ...]:
    """A one-off LwM2M Register (new DTLS session) with ``slot``'s identity, de-registered again at once."""
    registration = Registration(device.endpoint, dep.dtls_uri, slot, lifetime=60, timeout=timeout)
    try:
        location = await registration.register()
    except BaseException:
        await registration.close()
        raise
    await registration.deregister()
    return location


def _token_key(dep: Deployment, audience: str) -> bytes | None:
    rs = dep.server.storage.get_resource_server(audience)
    return None if rs is None or rs.shared_key is None else rs.shared_key.k


# -- 1. the bootstrapped lock verifies the AS's tokens ---------------------------------------------------------


@pytest.mark.parametrize(("device", "method"), [(PULLED, "pack"), (CLASSIC, "classic")], ids=["pull", "classic"])
def test_a_bootstrapped_lock_takes_tokens_from_the_as(
    deployment: Deployment, tmp_path: Path, device: FactoryDevice, method: str
) -> None:
    dep = deployment

    async def flow() -> None:
        async with _serve_lock(dep, device, tmp_path, method=method) as lock:
            creds = lock.credentials
            assert creds.audience == device.serial and creds.next is None
            assert _token_key(dep, device.serial) == creds.current.key  # the AS makes its tokens with that key
            async with _app(dep) as app:
                scope = AifScope.parse_spec("/lock:GET,PUT")
                response = await app.request("PUT", lock.uri + "/lock", b"unlock", audience=device.serial, scope=scope)
                assert response.status == 204 and response.protected  # 2.04 over OSCORE
                battery = await app.request("GET", lock.uri + "/battery", audience=device.serial, scope=scope)
                assert battery.status == 403  # the token's rights, not more
            registration = dep.server.storage.registration_of(device.serial)
            assert registration is not None and registration.endpoint == device.endpoint
        # stopping de-registers
        assert dep.server.storage.registration_of(device.serial) is None

    _run(flow)


def test_a_registration_keeps_its_dtls_session_between_requests(
    deployment: Deployment, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """aiocoap holds client DTLS sessions weakly: a :class:`Registration` must keep its own, or a garbage
    collection between Register and Update tears the session down (aiocoap then warns, which this repository's
    ``filterwarnings = error`` turns into a failure) and the Update needs a new handshake."""
    dep = deployment

    async def flow() -> bytes:
        client = BootstrapClient(_bundle(dep, PULLED), tmp_path / "credentials.cbor", timeout=REQUEST_TIMEOUT)
        creds = await client.pull()
        registration = Registration(PULLED.endpoint, dep.dtls_uri, creds.current, lifetime=60, timeout=REQUEST_TIMEOUT)
        try:
            await registration.register()
            gc.collect()
            await registration.update()
            gc.collect()
            await registration.update()
        finally:
            await registration.deregister()
        return creds.current.identity

    with caplog.at_level(logging.INFO, logger="coap"):
        identity = _run(flow)
    # aiocoap logs each new client DTLS session: one handshake for Register, both Updates and the De-register
    handshakes = [r for r in caplog.records if "creating one" in r.getMessage() and repr(identity) in r.getMessage()]
    assert len(handshakes) == 1


# -- 2. rotation: tokens before and after the switch ------------------------------------------------------------


def test_rotation_with_tokens_before_and_after_the_switch(
    deployment: Deployment, tmp_path: Path, fresh_psk_lookups: None
) -> None:
    dep = deployment
    serial = ROTATED.serial
    credentials = dep.service.credentials
    lock_shift = [0.0]  # seconds the lock's credential clock runs ahead (its overlap is driven with it)

    def lock_clock() -> float:
        return time.time() + lock_shift[0]

    scope = AifScope.parse_spec("/lock:GET,PUT")

    async def token(app: AceClient) -> AccessInformation:
        return await app.request_token(serial, scope)

    async def flow() -> None:
        serving = _serve_lock(dep, ROTATED, tmp_path, clock=lock_clock, pull_interval=PULL_INTERVAL)
        async with serving as lock, _app(dep) as app:
            old = lock.credentials.current
            assert _token_key(dep, serial) == old.key

            # T1, made with the old key: used over OSCORE now, and a second one kept for after the switch
            unlocked = await app.request("PUT", lock.uri + "/lock", b"unlock", audience=serial, scope=scope)
            assert unlocked.status == 204 and unlocked.protected
            t1 = await token(app)
            before = dep.server.storage.registration_of(serial)
            assert before is not None

            # `ostiary as rs rotate-key`: a new generation, not delivered yet (the lock pulls every PULL_INTERVAL,
            # so whether the AS still makes tokens with the old key at this point is a race: not checked here)
            new_key = credentials.rotate(serial, now=int(time.time()))
            assert new_key.generation == old.generation + 1 and new_key.delivered_at is None

            # the lock's next periodic pull brings it into `next`; the delivery switches the AS's token key at once
            await _until("the periodic pull", lambda: lock.credentials.next is not None, timeout=4 * PULL_INTERVAL)
            creds = lock.credentials
            assert creds.current == old and creds.next is not None
            assert (creds.next.generation, creds.next.key) == (new_key.generation, new_key.key)
            assert _token_key(dep, serial) == new_key.key
            generations = {k.generation: k for k in credentials.keys(serial)}
            assert generations[old.generation].retire_at is not None  # retiring after the overlap
            assert generations[new_key.generation].delivered_at is not None
            # ... and the lock registers again with the new identity
            await _until(
                "the registration with the new identity",
                lambda: (r := dep.server.storage.registration_of(serial)) is not None and r.location != before.location,
            )

            # T2, made with the new key, verifies and promotes `next` to `current` (stored before it is used)
            t2 = await token(app)
            assert (await _upload(lock.uri, t2.access_token)).code == Code.CREATED
            promoted = lock.credentials
            assert promoted.current.generation == new_key.generation and promoted.next is None
            assert promoted.previous == old and promoted.previous_until is not None
            assert CredentialStore(tmp_path / "credentials.cbor").load() == promoted

            # T1 still verifies during the overlap (the `previous` slot): a rotation, not a revocation -- the lock
            # asked the AS with the old identity after the pull and it was taken -- and the AS still takes it
            # (these one-off registrations replace the lock's own; it registers again at its next Update)
            assert (await _upload(lock.uri, t1.access_token)).code == Code.CREATED
            assert (await _register(dep, ROTATED, old, timeout=REQUEST_TIMEOUT))[0] == "rd"

            # after the overlap: the AS erases the old generation and refuses its identity at DTLS ...
            overlap = credentials.overlap_for(serial)
            real_clock = dep.service.clock
            dep.service.clock = lambda: real_clock() + overlap + 1
            try:
                assert dep.service.housekeeping() >= 1
                generations = {k.generation: k for k in credentials.keys(serial)}
                assert generations[old.generation].key is None  # the T1-era key is gone at the AS
                with pytest.raises(RegistrationFailed):
                    await _register(dep, ROTATED, old, timeout=REFUSED_TIMEOUT)
                assert (await _register(dep, ROTATED, promoted.current, timeout=REQUEST_TIMEOUT))[0] == "rd"
            finally:
                dep.service.clock = real_clock

            # ... and the lock drops the previous slot once its own overlap is over: T1 no longer verifies
            assert promoted.previous_until is not None
            lock_shift[0] = promoted.previous_until - time.time() + 1
            lock.keeper.refresh()
            assert lock.credentials.previous is None
            stored = CredentialStore(tmp_path / "credentials.cbor").load()
            assert stored is not None and old.key not in {slot.key for slot in stored.slots()}
            with pytest.raises(AceError):
                cwt.verify_token(t1.access_token, lock.keeper.keys, now=time.time(), audience=serial, issuer=ISSUER)
            assert (await _upload(lock.uri, t1.access_token)).code == Code.UNAUTHORIZED
            cwt.verify_token(t2.access_token, lock.keeper.keys, now=time.time(), audience=serial, issuer=ISSUER)

    _run(flow)


# -- 3. an interrupted classic bootstrap changes nothing on the lock ---------------------------------------------


class _CuttingRelay(asyncio.DatagramProtocol):
    """A UDP relay between one device and the bootstrap server that stops passing the server's datagrams on once
    ``cut`` is set: to the device, the server falls silent in the middle of the flow."""

    def __init__(self, server: tuple[str, int], cut: asyncio.Event) -> None:
        self.server = server
        self.cut = cut
        self.device: Any = None
        self.transport: Any = None
        self.dropped = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if addr != self.server:
            self.device = addr
            self.transport.sendto(data, self.server)
        elif self.cut.is_set():
            self.dropped += 1
        elif self.device is not None:
            self.transport.sendto(data, self.device)


def _staging_spy(monkeypatch: pytest.MonkeyPatch) -> tuple[list[tuple[str, ...]], asyncio.Event]:
    """Record every Bootstrap-Write the lock stages; the event is set at the first."""
    writes: list[tuple[str, ...]] = []
    staged = asyncio.Event()
    real = bootstrap_client.DeviceBootstrap.write

    def write(self: Any, path: tuple[str, ...], content_format: int | None, payload: bytes) -> None:
        real(self, path, content_format, payload)
        writes.append(path)
        staged.set()

    monkeypatch.setattr(bootstrap_client.DeviceBootstrap, "write", write)
    return writes, staged


def _state_of(directory: Path) -> tuple[bytes, list[str]]:
    """The credentials file's bytes and what else the directory holds (no temporary file may be left)."""
    return (directory / "credentials.cbor").read_bytes(), sorted(p.name for p in directory.iterdir())


def test_a_classic_bootstrap_cut_off_by_the_server_leaves_the_file_byte_identical(
    deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dep = deployment
    serial = INTERRUPTED.serial
    store = CredentialStore(tmp_path / "credentials.cbor")
    assert dep.transport.dtls_port is not None
    server = ("127.0.0.1", dep.transport.dtls_port)

    async def flow() -> int:
        first = await BootstrapClient(_bundle(dep, INTERRUPTED), store, timeout=REQUEST_TIMEOUT).pull()
        before = _state_of(tmp_path)
        # a rotation is pending: a completed bootstrap would bring a new key (and change the file)
        pending = dep.service.credentials.rotate(serial, now=int(time.time()))
        writes, staged = _staging_spy(monkeypatch)
        loop = asyncio.get_running_loop()
        relay_transport, relay = await loop.create_datagram_endpoint(
            lambda: _CuttingRelay(server, staged), local_addr=("127.0.0.1", 0)
        )
        try:
            port = relay_transport.get_extra_info("sockname")[1]
            client = BootstrapClient(_bundle(dep, INTERRUPTED, uri=f"coaps://127.0.0.1:{port}"), store, timeout=1.5)
            with pytest.raises(BootstrapError, match="Bootstrap-Finish"):
                await client.classic()
        finally:
            relay_transport.close()
        assert writes and relay.dropped > 0  # the lock had staged a write; the rest of the flow never reached it
        assert _state_of(tmp_path) == before
        assert client.keeper.credentials == first
        # the server gives up too (its exchange timeout) and confirms nothing: tokens keep the old key
        await _until("the server to give up", lambda: not dep.transport.sessions)
        assert {k.generation: k.delivered_at for k in dep.service.credentials.keys(serial)}[pending.generation] is None
        assert _token_key(dep, serial) == first.current.key
        return pending.generation

    pending = _run(flow)

    # a later, complete bootstrap brings the pending key
    monkeypatch.undo()
    after = _run(lambda: BootstrapClient(_bundle(dep, INTERRUPTED), store, timeout=REQUEST_TIMEOUT).pull())
    assert after.next is not None and after.next.generation == pending


class _StopsBeforeFinish(resource.Resource):  # type: ignore[misc]
    """A bootstrap server (plain CoAP) that runs the real server-driven session -- Discover, Writes of a complete,
    valid account -- and then stops (its socket closed) instead of sending Bootstrap-Finish."""

    def __init__(self, account: Any) -> None:
        super().__init__()
        self.account = account
        self.context: aiocoap.Context | None = None
        self.sent: list[str] = []
        self.stopped = asyncio.Event()

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        session = BootstrapSession(BootstrapRequest.from_query(tuple(request.opt.uri_query)), self.account)
        asyncio.get_running_loop().create_task(self._drive(session, request.remote))
        return aiocoap.Message(code=Code.CHANGED)

    async def _drive(self, session: BootstrapSession, remote: Any) -> None:
        assert self.context is not None
        try:
            op: Operation | None = session.start(now=time.time())
            while op is not None and op.uri_path != ("bs",):  # Bootstrap-Finish is POST /bs: never sent
                message = aiocoap.Message(code=Code(int(op.method)), uri_path=op.uri_path, payload=op.payload)
                if op.content_format is not None:
                    message.opt.content_format = int(op.content_format)
                if op.accept is not None:
                    message.opt.accept = int(op.accept)
                message.remote = remote
                self.sent.append(f"{op.method.name} /{'/'.join(op.uri_path)}")
                response = await asyncio.wait_for(self.context.request(message).response, REQUEST_TIMEOUT)
                code = (int(response.code) >> 5) * 100 + (int(response.code) & 0x1F)
                op = session.on_response(code, bytes(response.payload), now=time.time())
        finally:
            await self.context.shutdown()
            self.stopped.set()


def test_a_classic_bootstrap_whose_server_stops_before_finish_leaves_the_file_byte_identical(
    deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dep = deployment
    store = CredentialStore(tmp_path / "credentials.cbor")
    signing = dep.server.storage.signing_key()
    assert signing is not None

    async def flow() -> None:
        first = await BootstrapClient(_bundle(dep, CUT_SHORT), store, timeout=REQUEST_TIMEOUT).pull()
        before = _state_of(tmp_path)
        account = build_server_account(
            server_uri=dep.dtls_uri,
            identity=f"{CUT_SHORT.serial}#{first.current.generation + 1}".encode(),
            psk=secrets.token_bytes(16),
            server_public_key=signing.key.public(),
            short_server_id=1,
            lifetime=300,
        )
        fake = _StopsBeforeFinish(account)
        port = free_port(socket.SOCK_DGRAM)
        fake.context = await aiocoap.Context.create_server_context(fake, bind=("127.0.0.1", port), transports=["udp6"])
        writes, _staged = _staging_spy(monkeypatch)
        client = BootstrapClient(_bundle(dep, CUT_SHORT, uri=f"coap://127.0.0.1:{port}"), store, timeout=1.5)
        try:
            with pytest.raises(BootstrapError, match="Bootstrap-Finish"):
                await client.classic()
        finally:
            if not fake.stopped.is_set():
                await fake.context.shutdown()
        assert fake.stopped.is_set()
        # the lock received the whole account (Security and Server instance), just no Finish
        assert fake.sent[0] == "GET /" and sum(s.startswith("PUT") for s in fake.sent) >= 2 and len(writes) >= 2
        assert _state_of(tmp_path) == before
        assert client.keeper.credentials == first

    _run(flow)


# -- 4. revocation and decommissioning ---------------------------------------------------------------------------


def test_revocation_refuses_the_identity_and_revokes_the_tokens(
    deployment: Deployment, tmp_path: Path, fresh_psk_lookups: None
) -> None:
    dep = deployment
    serial = REVOKED.serial
    storage = dep.server.storage
    store = CredentialStore(tmp_path / "credentials.cbor")
    scope = AifScope.parse_spec("/lock:GET")

    async def flow() -> None:
        client = BootstrapClient(_bundle(dep, REVOKED), store, timeout=REQUEST_TIMEOUT)
        creds = await client.pull()
        assert (await _register(dep, REVOKED, creds.current, timeout=REQUEST_TIMEOUT))[0] == "rd"
        async with _app(dep) as app:
            tokens = [await app.request_token(serial, scope) for _ in range(2)]
            assert all(t.access_token for t in tokens)

            # `ostiary as rs revoke`: keys erased, RS disabled, tokens revoked
            assert dep.service.credentials.revoke(serial, now=int(time.time())) == 2
            issued = storage.list_tokens(audience=serial)
            assert len(issued) == 2 and {t.status for t in issued} == {TokenStatus.REVOKED}
            assert all(k.key is None for k in dep.service.credentials.keys(serial))
            rs = storage.get_resource_server(serial)
            assert rs is not None and not rs.enabled and rs.shared_key is None
            with pytest.raises(AceError):
                await app.request_token(serial, scope)
            # the lock's operational identity is refused at DTLS
            with pytest.raises(RegistrationFailed):
                await _register(dep, REVOKED, creds.current, timeout=REFUSED_TIMEOUT)

            # a bootstrap gives it a new key and enables it again ...
            again = await client.pull()
            assert again.next is not None and again.next.generation > creds.current.generation
            assert _token_key(dep, serial) == again.next.key
            assert (await _register(dep, REVOKED, again.next, timeout=REQUEST_TIMEOUT))[0] == "rd"
            assert (await app.request_token(serial, scope)).access_token

        # ... unless the device is decommissioned: revoked again, then its bootstrap identity is refused
        dep.service.credentials.revoke(serial, now=int(time.time()))
        devices = dep.devices()
        try:
            devices.decommission(serial, now=int(time.time()))
        finally:
            devices.close()
        before = _state_of(tmp_path)
        generations = [k.generation for k in dep.service.credentials.keys(serial)]
        refused = BootstrapClient(_bundle(dep, REVOKED), store, timeout=REFUSED_TIMEOUT)
        with pytest.raises(BootstrapError) as pulled:
            await refused.pull()
        with pytest.raises(BootstrapError) as classic:
            await refused.classic()
        # the lock can tell a refusal from an unreachable server (its log says so: DeviceLink)
        assert pulled.value.handshake_refused and classic.value.handshake_refused, (pulled.value, classic.value)
        assert _state_of(tmp_path) == before
        assert [k.generation for k in dep.service.credentials.keys(serial)] == generations  # no new key
        rs = storage.get_resource_server(serial)
        assert rs is not None and not rs.enabled

    _run(flow)


def test_a_dtls_session_opened_before_the_revocation_is_refused_too(
    deployment: Deployment, tmp_path: Path, fresh_psk_lookups: None
) -> None:
    """The PSK is looked up at the handshake only, and a DTLS session outlives a revocation: the registration
    interface checks the identity again for every request."""
    dep = deployment

    async def flow() -> None:
        client = BootstrapClient(_bundle(dep, STALE_SESSION), tmp_path / "credentials.cbor", timeout=REQUEST_TIMEOUT)
        creds = await client.pull()
        registration = Registration(
            STALE_SESSION.endpoint, dep.dtls_uri, creds.current, lifetime=60, timeout=REFUSED_TIMEOUT
        )
        try:
            await registration.register()
            dep.service.credentials.revoke(STALE_SESSION.serial, now=int(time.time()))
            with pytest.raises(RegistrationFailed, match="4.01"):
                await registration.update()  # over the session opened with the now revoked identity
        finally:
            await registration.close()

    _run(flow)


#: How soon a lock whose identity was revoked must be registered again with its new one (its pulls come every
#: PULL_INTERVAL; without the fix it first waited for a De-register of the revoked identity: REQUEST_TIMEOUT, 93 s).
REREGISTER_BOUND = 5.0


def test_after_a_revocation_the_lock_registers_its_new_identity_at_once(
    deployment: Deployment, tmp_path: Path, fresh_psk_lookups: None
) -> None:
    """The README walk-through: the AS restarted while the lock runs (the lock's DTLS session to ``/rd`` is unknown
    to the new process), then ``ostiary as rs revoke``. The revocation drops the registration; the lock's next pull
    brings generation 2, and the lock registers it promptly: it does not de-register the revoked identity first
    over the dead session (that De-register got no answer and was retransmitted for a whole exchange)."""
    dep = deployment
    serial = REREGISTERED.serial
    storage = dep.server.storage

    async def flow() -> None:
        async with _serve_lock(dep, REREGISTERED, tmp_path, pull_interval=PULL_INTERVAL) as lock:
            old = lock.credentials.current
            # a restart of the AS's bootstrap server on the same port: the lock's DTLS session is gone there
            port = dep.transport.dtls_port
            assert port is not None
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(dep.transport.close(), dep.loops.loop))
            dep.transport = await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(
                    BootstrapCoapServer.start(dep.service, host="127.0.0.1", dtls_port=port, exchange_timeout=2.0),
                    dep.loops.loop,
                )
            )

            before = storage.registration_of(serial)
            assert before is not None
            dep.service.credentials.revoke(serial, now=int(time.time()))  # drops that registration too
            started = asyncio.get_running_loop().time()
            registration = await _until(
                "the registration with the new identity",
                lambda: (r := storage.registration_of(serial)) is not None and r.location != before.location and r,
                timeout=REREGISTER_BOUND,
            )
            assert asyncio.get_running_loop().time() - started < REREGISTER_BOUND
            creds = lock.credentials
            assert creds.newest.generation > old.generation
            assert registration.endpoint == REREGISTERED.endpoint
            assert _token_key(dep, serial) == creds.newest.key
        assert storage.registration_of(serial) is None  # stopping de-registers the new identity

    _run(flow)


# -- 5. after a revocation the lock drops the old key at once, not after an overlap -------------------------------


def _held_tokens(state_dir: Path) -> int:
    """How many tokens the lock's state file holds."""
    state = TokenStore(max_tokens=1, path=state_dir / "lock.state").load()
    return 0 if state is None else len(state.tokens)


def test_a_running_lock_drops_the_revoked_key_at_its_next_pull(
    deployment: Deployment, tmp_path: Path, fresh_psk_lookups: None
) -> None:
    """``ostiary as rs revoke`` while the lock runs: its next pull brings generation 2, and because the AS refuses
    generation 1 (it erased it), the lock takes generation 2 as ``current`` with no ``previous`` overlap. A token
    made with the old key -- what whoever leaked it could still make -- is refused at once, the tokens the lock held
    are gone, and a token under the new key works."""
    dep = deployment
    serial = REVOKED_RUNNING.serial
    scope = AifScope.parse_spec("/lock:GET,PUT")

    async def flow() -> None:
        async with _serve_lock(dep, REVOKED_RUNNING, tmp_path, pull_interval=PULL_INTERVAL) as lock:
            old = lock.credentials.current
            async with _app(dep) as app:
                held = await app.request_token(serial, scope)
                assert (await _upload(lock.uri, held.access_token)).code == Code.CREATED
                made_with_old_key = await app.request_token(serial, scope)  # not uploaded yet
            assert _held_tokens(tmp_path) == 1

            assert dep.service.credentials.revoke(serial, now=int(time.time())) == 2
            await _until("the new key", lambda: lock.credentials.current.key != old.key, timeout=4 * PULL_INTERVAL + 5)
            creds = lock.credentials
            assert creds.current.generation > old.generation and creds.current.key == _token_key(dep, serial)
            assert (creds.next, creds.previous, creds.previous_until) == (None, None, None)  # no overlap
            assert CredentialStore(tmp_path / "credentials.cbor").load() == creds
            assert _held_tokens(tmp_path) == 0  # every token of a revoked lock was revoked at the AS

            with pytest.raises(AceError):
                cwt.verify_token(
                    made_with_old_key.access_token, lock.keeper.keys, now=time.time(), audience=serial, issuer=ISSUER
                )
            assert (await _upload(lock.uri, made_with_old_key.access_token)).code == Code.UNAUTHORIZED
            assert (await _upload(lock.uri, held.access_token)).code == Code.UNAUTHORIZED

            async with _app(dep) as app:  # a new token, under the new key
                response = await app.request("PUT", lock.uri + "/lock", b"unlock", audience=serial, scope=scope)
                assert response.status == 204 and response.protected
            assert lock.credentials == creds  # nothing to promote: the new key is current already

    _run(flow)


def test_a_lock_restarted_after_a_revocation_drops_the_revoked_key_at_once(
    deployment: Deployment, tmp_path: Path, fresh_psk_lookups: None
) -> None:
    """Revoked while the lock was down: at its restart it restores its tokens and registers with generation 1,
    which the AS refuses; the re-bootstrap brings generation 2, which replaces every old key at once, and the
    restored tokens are dropped."""
    dep = deployment
    serial = REVOKED_STOPPED.serial
    scope = AifScope.parse_spec("/lock:GET")

    async def flow() -> None:
        async with _serve_lock(dep, REVOKED_STOPPED, tmp_path) as lock, _app(dep) as app:
            old = lock.credentials.current
            held = await app.request_token(serial, scope)
            assert (await _upload(lock.uri, held.access_token)).code == Code.CREATED
        assert _held_tokens(tmp_path) == 1

        dep.service.credentials.revoke(serial, now=int(time.time()))
        async with _serve_lock(dep, REVOKED_STOPPED, tmp_path) as lock:
            creds = lock.credentials
            assert creds.current.generation > old.generation and creds.slots() == (creds.current,)
            assert _held_tokens(tmp_path) == 0
            assert (await _upload(lock.uri, held.access_token)).code == Code.UNAUTHORIZED

    _run(flow)
