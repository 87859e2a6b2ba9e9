"""The bootstrap server on CoAP (issue #7): DTLS with per-device PSKs (aiocoap's ``tinydtls_server``), and plain
CoAP for development only.

Resources (docs/bootstrap-design.md):

=====================  =========================================================  ============================
``POST /bs``           Bootstrap-Request; then Discover, Delete, Write, Finish     bootstrap identities
                       sent back over the same socket and DTLS session
``GET /bspack``        Bootstrap-Pack-Request (LwM2M 1.2): the SenML CBOR pack     bootstrap identities
``POST /rd``           Register (2.01, Location-Path ``rd/{id}``)                 operational identities (DTLS)
``POST /rd/{id}``      Update (2.04)
``DELETE /rd/{id}``    De-register (2.02)
=====================  =========================================================  ============================

aiocoap's DTLS server (``shared/reference/lwm2m-bootstrap.md`` §4) needs five adjustments, all in
:class:`_DtlsServer`, each a small override of a documented-as-experimental class:

1. it binds *port + 1* (so that "5683" means coaps on 5684); we bind exactly the port asked for;
2. it cannot send a request over a session a client opened (``recognize_remote`` only knows plain addresses), which
   the classic bootstrap needs: the server's operations must come from the same socket and DTLS session (ref. §1,
   "Session binding"). We recognise our own sessions' addresses;
3. it never evicts sessions (its ``max_sockets`` is unused); we cap them and drop the least recently used;
4. it keeps a session after the peer's close_notify (tinydtls reports it at warning level, aiocoap acts on fatal
   alerts only), so a device reconnecting from the same address and port met a dead session; we drop it;
5. its shutdown drops the open sessions only after the message manager has shut down (``MessageManager.shutdown``
   clears its exchanges, then calls the transport's ``shutdown``, which reports ``LibraryShutdown`` per session
   back through the manager), so aiocoap logged "Internal shutdown sequence mismatch" once per session;
   :meth:`BootstrapCoapServer.close` drops them first (:meth:`close_sessions`), while the manager still runs.

The PSK lookup is :meth:`~as_server.bootstrap.server.BootstrapService.find_psk`, through a
:class:`~aiocoap.credentials.CredentialsMap` whose ``find_dtls_psk`` is overridden: the claim it returns is the
:class:`~as_server.bootstrap.server.Peer`, which aiocoap hands back as ``request.remote.authenticated_claims``.
Errors are translated at one place, :func:`_response_for` (STYLE §3.3): a refusal's code and a short diagnostic
payload (RFC 7252 §5.5.2), 4.00 for malformed input, 5.00 with no detail for anything unexpected.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

import aiocoap
import aiocoap.resource as resource
from aiocoap import Code
from aiocoap.credentials import CredentialsMap
from aiocoap.numbers import COAP_PORT

from ace_core.errors import WireFormatError
from ace_core.lwm2m.errors import BootstrapFailed
from ace_core.lwm2m.messages import NotAcceptable, Operation
from ace_core.lwm2m.registry import EXCHANGE_LIFETIME
from ace_core.status import Status
from as_server.bootstrap.server import UNAUTHENTICATED, BootstrapService, Lwm2mRefused, Peer, PeerKind
from as_server.bootstrap.session import BootstrapSession
from as_server.transport.udp import ensure_udp_port_free

__all__ = ["BootstrapCoapServer", "dtls_available"]

log = logging.getLogger("ostiary.bootstrap.coap")

T = TypeVar("T")

#: DTLS sessions kept at most; the least recently active is closed first. Each costs a tinydtls context (a few KiB).
MAX_DTLS_SESSIONS = 1024
#: Classic bootstrap sessions running at once; more Bootstrap-Requests get 5.03 with Max-Age (RFC 7252 §5.9.3.4).
MAX_CLASSIC_SESSIONS = 256
#: How long a PSK lookup is remembered: tinydtls asks up to three times per handshake; revocations and rotations
#: take effect at most this much later.
PSK_CACHE_SECONDS = 2.0
_DIAGNOSTIC_LIMIT = 120
#: How often retired operational keys are erased (seconds).
HOUSEKEEPING_INTERVAL = 60.0


def dtls_available() -> bool:
    """Whether aiocoap's DTLS transports can load (DTLSSocket, the ``dtls`` extra, is installed)."""
    try:
        import DTLSSocket  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return False
    return True


class _PskLookup(CredentialsMap):  # type: ignore[misc]  # aiocoap ships no type information
    """aiocoap's server-credentials map, answering DTLS PSK lookups from the bootstrap service (with a short cache:
    tinydtls asks for the same identity several times in one handshake)."""

    def __init__(self, find: Callable[[bytes], tuple[bytes, Peer] | None]) -> None:
        super().__init__()
        self._find = find
        self._cache: OrderedDict[bytes, tuple[float, tuple[bytes, Peer] | None]] = OrderedDict()

    def find_dtls_psk(self, identity: bytes) -> tuple[bytes, Peer]:
        identity = bytes(identity)
        now = time.monotonic()
        cached = self._cache.get(identity)
        if cached is not None and now - cached[0] < PSK_CACHE_SECONDS:
            found = cached[1]
        else:
            try:
                found = self._find(identity)
            except Exception:  # noqa: BLE001 - a storage failure must fail the handshake, not the event loop
                log.exception("PSK lookup failed")
                found = None
            self._cache[identity] = (now, found)
            self._cache.move_to_end(identity)
            while len(self._cache) > 4096:
                self._cache.popitem(last=False)
        if found is None:
            raise KeyError("unknown PSK identity")
        return found


def _dtls_server_class() -> type:
    """aiocoap's DTLS server with the adjustments of the module documentation (imported lazily: DTLSSocket is an
    optional extra)."""
    from aiocoap.transports import tinydtls_server as ts
    from aiocoap.transports.tinydtls import LEVEL_WARNING

    class _Session(ts._AddressDTLS):  # type: ignore[misc]
        def _event(self, level: int, code: int) -> None:
            # tinydtls reports a peer's close_notify at *warning* level; aiocoap only acts on fatal alerts and would
            # keep the dead session, so a device reconnecting from the same port found a stale one.
            if (level, code) == (LEVEL_WARNING, ts.CODE_CLOSE_NOTIFY):
                self._inject_error(ts.CloseNotifyReceived())
                return
            super()._event(level, code)

    class _Pool(ts._DatagramServerSocketSimpleDTLS):  # type: ignore[misc]
        _Address = _Session
        max_sockets = MAX_DTLS_SESSIONS
        closing = False

        def datagram_received(self, data: bytes, sockaddr: Any) -> None:
            if sockaddr not in self._connections:
                if self.closing:  # shutting down: no new session (it would outlive close_sessions)
                    return
                self._maybe_purge_sockets()
            super().datagram_received(data, sockaddr)

        def _maybe_purge_sockets(self) -> None:
            while len(self._connections) >= self.max_sockets:
                _address, oldest = next(iter(self._connections.items()))
                oldest._inject_error(aiocoap.error.LibraryShutdown("DTLS session closed for lack of activity"))

    class _DtlsServer(ts.MessageInterfaceTinyDTLSServer):  # type: ignore[misc]
        _serversocket = _Pool

        @classmethod
        async def create_server(cls, bind: Any, ctx: Any, log: Any, loop: Any, server_credentials: Any) -> Any:
            # aiocoap adds (COAPS_PORT - COAP_PORT) to the port asked for; undo it to bind exactly ``bind``.
            host, port = bind
            return await super().create_server(
                (host, port - (cls._default_port - COAP_PORT)), ctx, log, loop, server_credentials
            )

        async def recognize_remote(self, remote: Any) -> bool:
            return isinstance(remote, ts._AddressDTLS) and remote._protocol is self._pool

        def close_sessions(self) -> None:
            """Drop every session (its pending exchanges fail with ``LibraryShutdown``) and take no new ones; call
            it before the context's shutdown (adjustment 5 of the module documentation)."""
            self._pool.closing = True
            for session in list(self._pool._connections.values()):
                session._inject_error(aiocoap.error.LibraryShutdown("the bootstrap server is shutting down"))

    return _DtlsServer


def _peer_of(request: aiocoap.Message, *, plain: bool) -> Peer:
    if plain:
        return UNAUTHENTICATED
    claims = getattr(request.remote, "authenticated_claims", None) or []
    for claim in claims:
        if isinstance(claim, Peer):
            return claim
    raise Lwm2mRefused(Status.UNAUTHORIZED, "no authenticated DTLS identity")


def _address(request: aiocoap.Message) -> str:
    return str(getattr(request.remote, "hostinfo", ""))[:64]


def _response_for(exc: BaseException) -> aiocoap.Message:
    """The single catch site of the bootstrap transport."""
    code: Status
    detail: str
    if isinstance(exc, Lwm2mRefused):
        code, detail = exc.code, exc.detail or ""
    elif isinstance(exc, NotAcceptable):
        code, detail = Status.NOT_ACCEPTABLE, "only SenML CBOR (112) is offered"
    elif isinstance(exc, WireFormatError):
        # The parser's message may quote device input: send and log the class-level reason only.
        code, detail = Status.BAD_REQUEST, f"malformed request ({type(exc).__name__})"
        log.info("malformed bootstrap request (%s)", type(exc).__name__)
    else:
        log.error("internal error in the bootstrap server", exc_info=exc)
        return aiocoap.Message(code=Code.INTERNAL_SERVER_ERROR)
    return aiocoap.Message(code=Code(code.coap_code), payload=detail[:_DIAGNOSTIC_LIMIT].encode())


class _Base(resource.Resource):  # type: ignore[misc]
    def __init__(self, server: BootstrapCoapServer, *, plain: bool) -> None:
        super().__init__()
        self._server = server
        self._plain = plain

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._server.executor, fn, *args)


class _BootstrapResource(_Base):
    """``POST /bs``: Bootstrap-Request (2.04), then the server-driven operations; ``POST /bs`` is also where the
    server's Bootstrap-Finish goes, but on the device, not here."""

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        try:
            peer = _peer_of(request, plain=self._plain)
            if len(self._server.sessions) >= self._server.max_sessions:
                response = aiocoap.Message(code=Code.SERVICE_UNAVAILABLE, payload=b"too many bootstraps running")
                response.opt.max_age = 10
                return response
            session = await self._call(self._server.service.start_session, tuple(request.opt.uri_query), peer)
        except Exception as exc:  # noqa: BLE001 - the one catch site
            return _response_for(exc)
        self._server.run_session(session, peer, request.remote)
        return aiocoap.Message(code=Code.CHANGED)


class _PackResource(_Base):
    """``GET /bspack``: Bootstrap-Pack-Request (2.05, SenML CBOR)."""

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        try:
            peer = _peer_of(request, plain=self._plain)
            accept = request.opt.accept
            payload, fmt = await self._call(
                self._server.service.pack,
                tuple(request.opt.uri_query),
                None if accept is None else int(accept),
                peer,
            )
        except Exception as exc:  # noqa: BLE001 - the one catch site
            return _response_for(exc)
        return aiocoap.Message(code=Code.CONTENT, payload=payload, content_format=int(fmt))


class _RegisterResource(_Base):
    """``POST /rd``: LwM2M Register (2.01 with Location-Path ``rd/{id}``)."""

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        try:
            peer = _peer_of(request, plain=False)
            location = await self._call(
                self._server.service.register,
                tuple(request.opt.uri_query),
                bytes(request.payload),
                peer,
                _address(request),
            )
        except Exception as exc:  # noqa: BLE001 - the one catch site
            return _response_for(exc)
        response = aiocoap.Message(code=Code.CREATED)
        response.opt.location_path = tuple(location.split("/"))
        return response


class _RegistrationResource(_Base, resource.PathCapable):  # type: ignore[misc]
    """``/rd/{id}``: LwM2M Update (``POST``, 2.04) and De-register (``DELETE``, 2.02). aiocoap hands a
    path-capable resource only the paths *below* its own, so ``POST /rd`` is :class:`_RegisterResource`'s."""

    async def render(self, request: aiocoap.Message) -> aiocoap.Message:
        try:
            peer = _peer_of(request, plain=False)
            path = tuple(request.opt.uri_path)
            service = self._server.service
            if len(path) != 1:
                raise Lwm2mRefused(Status.NOT_FOUND, "no such registration")
            if request.code == Code.POST:
                await self._call(
                    service.update,
                    path[0],
                    tuple(request.opt.uri_query),
                    bytes(request.payload),
                    peer,
                    _address(request),
                )
                return aiocoap.Message(code=Code.CHANGED)
            if request.code == Code.DELETE:
                await self._call(service.deregister, path[0], peer)
                return aiocoap.Message(code=Code.DELETED)
            raise Lwm2mRefused(Status.METHOD_NOT_ALLOWED, "Update is POST, De-register is DELETE")
        except Exception as exc:  # noqa: BLE001 - the one catch site
            return _response_for(exc)


def _site(server: BootstrapCoapServer, *, plain: bool) -> resource.Site:
    site = resource.Site()
    site.add_resource([".well-known", "core"], resource.WKCResource(site.get_resources_as_linkheader))
    site.add_resource(["bs"], _BootstrapResource(server, plain=plain))
    site.add_resource(["bspack"], _PackResource(server, plain=plain))
    if not plain:
        site.add_resource(["rd"], _RegisterResource(server, plain=plain))
        site.add_resource(["rd"], _RegistrationResource(server, plain=plain))
    return site


PLAIN_WARNING = (
    "PLAIN-COAP BOOTSTRAP IS ON (port %d): devices are NOT authenticated there; anyone who knows or guesses an "
    "endpoint name receives that lock's operational key. Use it for development only; never expose the port."
)


class BootstrapCoapServer:
    """The bootstrap server's CoAP endpoints. Start with :meth:`start`, stop with :meth:`close`.

    :param exchange_timeout: how long to wait for the device's answer to each server-driven operation (seconds;
        aiocoap's own retransmissions run inside it). A client waits EXCHANGE_LIFETIME for the next command.
    """

    def __init__(
        self,
        service: BootstrapService,
        *,
        executor: Executor | None = None,
        exchange_timeout: float = EXCHANGE_LIFETIME,
        max_sessions: int = MAX_CLASSIC_SESSIONS,
    ) -> None:
        self.service = service
        self.executor = executor
        self.exchange_timeout = exchange_timeout
        self.max_sessions = max_sessions
        self.sessions: set[asyncio.Task[None]] = set()
        self.dtls_context: aiocoap.Context | None = None
        self.plain_context: aiocoap.Context | None = None
        self.dtls_port: int | None = None
        self.plain_port: int | None = None
        self._dtls_interface: Any = None  # the _DtlsServer message interface, for close()
        self._housekeeping: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls,
        service: BootstrapService,
        *,
        host: str,
        dtls_port: int | None,
        plain_port: int | None = None,
        executor: Executor | None = None,
        exchange_timeout: float = EXCHANGE_LIFETIME,
        max_sessions: int = MAX_CLASSIC_SESSIONS,
    ) -> BootstrapCoapServer:
        """Bind the DTLS endpoint (``dtls_port``; ``None`` = none) and, for development, the plain one.

        :raises RuntimeError: DTLS asked for but DTLSSocket is not installed (the ``dtls`` extra).
        """
        self = cls(service, executor=executor, exchange_timeout=exchange_timeout, max_sessions=max_sessions)
        try:
            if dtls_port is not None:
                if not dtls_available():
                    raise RuntimeError("DTLS needs DTLSSocket: pip install 'ostiary[dtls]'")
                self.dtls_context = await self._start_dtls(host, dtls_port)
            if plain_port is not None:
                if not service.allow_unauthenticated:
                    raise RuntimeError("plain-CoAP bootstrap needs BootstrapService(allow_unauthenticated=True)")
                ensure_udp_port_free(host, plain_port, setting="bootstrap_plain_port (OSTIARY_BOOTSTRAP_PLAIN_PORT)")
                self.plain_context = await aiocoap.Context.create_server_context(
                    _site(self, plain=True), bind=(host, plain_port), transports=["udp6"]
                )
                self.plain_port = _bound_port(self.plain_context, plain_port)
                log.warning(PLAIN_WARNING, self.plain_port)
            self._housekeeping = asyncio.get_running_loop().create_task(self._housekeep())
        except BaseException:
            await self.close()
            raise
        return self

    async def _housekeep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(self.executor, self.service.housekeeping)
            except Exception:  # noqa: BLE001 - a background task: log and try again next time
                log.exception("bootstrap housekeeping failed")
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)

    async def _start_dtls(self, host: str, port: int) -> aiocoap.Context:
        # aiocoap's DTLS server would share a taken port silently
        ensure_udp_port_free(host, port, setting="bootstrap_dtls_port (OSTIARY_BOOTSTRAP_DTLS_PORT)")
        server_class: Any = _dtls_server_class()
        context = aiocoap.Context(serversite=_site(self, plain=False), loggername="ostiary.bootstrap.aiocoap")
        context.server_credentials = _PskLookup(self.service.find_psk)
        loop = asyncio.get_running_loop()

        async def create(mman: Any) -> Any:
            self._dtls_interface = await server_class.create_server(
                (host, port), mman, log=context.log, loop=loop, server_credentials=context.server_credentials
            )
            return self._dtls_interface

        await context._append_tokenmanaged_messagemanaged_transport(create)
        self.dtls_port = _bound_port(context, port)
        return context

    def run_session(self, session: BootstrapSession, peer: Peer, remote: Any) -> None:
        """Drive a classic bootstrap in the background after its Bootstrap-Request was answered 2.04."""
        task = asyncio.get_running_loop().create_task(self._drive(session, peer, remote))
        self.sessions.add(task)
        task.add_done_callback(self.sessions.discard)

    async def _drive(self, session: BootstrapSession, peer: Peer, remote: Any) -> None:
        context = self.plain_context if peer.kind is PeerKind.UNAUTHENTICATED else self.dtls_context
        assert context is not None
        endpoint = session.request.endpoint
        try:
            op: Operation | None = session.start(now=time.time())
            while op is not None:
                message = aiocoap.Message(code=Code(int(op.method)), uri_path=op.uri_path, payload=op.payload)
                if op.content_format is not None:
                    message.opt.content_format = int(op.content_format)
                if op.accept is not None:
                    message.opt.accept = int(op.accept)
                message.remote = remote
                try:
                    response = await asyncio.wait_for(context.request(message).response, self.exchange_timeout)
                except (TimeoutError, aiocoap.error.Error) as exc:
                    log.warning("bootstrap of %r: no answer to %s (%s)", endpoint, op, type(exc).__name__)
                    session.on_timeout(now=time.time())
                    return  # pragma: no cover - on_timeout always raises
                code = (int(response.code) >> 5) * 100 + (int(response.code) & 0x1F)  # class*100+detail
                op = session.on_response(code, bytes(response.payload), now=time.time())
        except BootstrapFailed as exc:
            log.warning("bootstrap of %r failed: %s", endpoint, exc)
        except asyncio.CancelledError:
            log.info("bootstrap of %r cancelled", endpoint)
            raise
        except Exception:  # noqa: BLE001 - a background task: log, never crash the server
            log.exception("bootstrap of %r failed", endpoint)
        finally:
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(self.executor, self.service.session_ended, session, peer)
            except Exception:  # noqa: BLE001
                log.exception("recording the end of the bootstrap of %r failed", endpoint)

    async def close(self) -> None:
        """Cancel running bootstraps and close the sockets."""
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            await asyncio.gather(self._housekeeping, return_exceptions=True)
            self._housekeeping = None
        for task in list(self.sessions):
            task.cancel()
        if self.sessions:
            await asyncio.gather(*self.sessions, return_exceptions=True)
        if self._dtls_interface is not None:
            self._dtls_interface.close_sessions()  # before the message manager goes (module documentation, 5.)
            self._dtls_interface = None
        for context in (self.dtls_context, self.plain_context):
            if context is not None:
                await context.shutdown()
        self.dtls_context = self.plain_context = None


def _bound_port(context: aiocoap.Context, asked: int) -> int:
    """The UDP port a context's transport is bound to (``asked`` unless it was 0: then the one the OS chose)."""
    if asked:
        return asked
    for interface in context.request_interfaces:
        message_interface = getattr(getattr(interface, "token_interface", None), "message_interface", None)
        pool = getattr(message_interface, "_pool", None)
        for transport in (getattr(message_interface, "transport", None), getattr(pool, "_transport", None)):
            sock = transport.get_extra_info("socket") if transport is not None else None
            if sock is not None:
                return int(sock.getsockname()[1])
    raise RuntimeError("cannot tell which port the bootstrap server bound")
