"""CoAP transport of the authorization server: aiocoap resources that only translate (STYLE §3.1).

* ``POST /token`` -- RFC 9200 §5.8: the payload is the ``application/ace+cbor`` token request (RFC 9200 §5,
  Content-Format 19); a granted token is **2.01 (Created)** with the Access Information (§5.8.2).
* ``POST /introspect`` -- RFC 9200 §5.9: ``application/ace+cbor`` in, 2.01 with the introspection response out
  (an inactive token is a 2.01 with ``active`` false, §5.9.2).
* ``GET /access-requests/<id>`` -- an access request of the consent workflow (issue #5, :mod:`as_server.consent`),
  the resource a token request refused for consent names in its ``error_uri``. 2.05 with a CBOR map
  (``application/cbor``; ``application/json`` with ``Accept: 50``) of the same fields as the HTTP JSON
  (:func:`as_server.endpoints.consent.public_view`, scopes as in CBOR token requests); 4.04 for an unknown or
  malformed id. It is **observable** (RFC 7641): a client that registers with Observe gets a notification when the
  request is decided, expires, or its grant is revoked. Decisions made in this process notify at once; decisions
  made by other processes (gunicorn workers, ``ostiary consent approve``) are found by re-reading the observed
  requests every :attr:`~as_server.config.Settings.consent_poll_interval` seconds -- one query per interval, only
  while something is observed, and only for requests whose state can still change. At most
  :attr:`~as_server.config.Settings.consent_max_observations` observations are kept; beyond that a GET with Observe
  is answered once, without registering (RFC 7641 §4.1 leaves that to the server).
* ``/.well-known/core`` -- RFC 6690 link format listing ``</token>;ct=19`` and ``</introspect>;ct=19``. RFC 9200
  registers a resource type only for the RS's authz-info (``ace.ai``, §8.2), so the AS endpoints carry no ``rt``;
  ``ct=19`` (RFC 7252 §7.2.1) tells what they accept.

Client credentials travel in the payload (``client_id``/``client_secret``, RFC 9200 §5.8.1); the token endpoint
reads them from there (``credentials=None``). A resource server calling ``/introspect`` sends ``client_id`` (24)
and its secret under key 25 (:func:`as_server.transport.common.introspection_credentials`).
A secure channel (DTLS or OSCORE; RFC 9200 §5.8 asks the AS to authenticate the client and protect the exchange)
is the deployment's to add in front of, or around, this site.

**Errors** are rendered at one place (:meth:`AceEndpointResource.render_post`) from
:func:`as_server.transport.common.error_outcome`: OAuth errors 4.00 (4.01 for ``invalid_client``, RFC 9200 §5.8.3)
with the ``{30: code, ...}`` body; forbidden introspection 4.03 without payload (§5.9.3); rate limiting 4.29 with
Max-Age (RFC 8516 §2); a payload over :attr:`Settings.max_payload` 4.13 with Size1 (RFC 7252 §5.9.2.9, §5.10.9),
refused before parsing and, for block-wise transfers (RFC 7959), before the blocks are reassembled; anything
unexpected 5.00 with no payload. A request whose Content-Format is present and is not 19 is **4.15 (Unsupported
Content-Format)**, RFC 7252 §5.9.2.10 -- the precise code for it -- with an ``invalid_request`` body; a request
without Content-Format is read as ACE CBOR (RFC 9200 §5 leaves no alternative).

The endpoints are synchronous and reach the database, so requests run in a thread pool
(:meth:`asyncio.loop.run_in_executor`): the event loop keeps receiving while a request waits on a commit, and
concurrent requests can share one group commit. The exception is the hot path, a ``client_credentials`` token
request (:class:`TokenResource`): its work runs on the loop and only its queued commit is awaited, which saves a
thread hand-off and a parked thread per token (issue #3).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, Final

import aiocoap
from aiocoap import interfaces, resource
from aiocoap.numbers import ContentFormat
from aiocoap.numbers.codes import Code
from aiocoap.util import hostportsplit

from ace_core import cbor
from ace_core.errors import PayloadTooLarge
from ace_core.messages import IntrospectionRequest, TokenRequest
from as_server.app import ACCESS_REQUESTS_PATH, INTROSPECTION_PATH, TOKEN_PATH, AuthorizationServer, coap_base_url
from as_server.consent import is_request_id
from as_server.endpoints.consent import public_view
from as_server.models import AccessRequestStatus, ConsentRequest, Grant, GrantStatus
from as_server.storage.base import DuplicateError
from as_server.tokens import json_scope
from as_server.transport.common import (
    ACE_CBOR,
    UnsupportedContentFormat,
    error_outcome,
    introspection_credentials,
)
from as_server.transport.udp import ensure_udp_port_free

__all__ = ["AccessRequestResource", "AceEndpointResource", "create_coap_site", "start_coap"]

log = logging.getLogger("ostiary.as.coap")

#: ``application/ace+cbor``, RFC 9200 §8.16 (from aiocoap's registry, STYLE §1).
ACE_CBOR_FORMAT: Final = ContentFormat.by_media_type(ACE_CBOR)
#: The access-request resource's representations (RFC 8949 §9.5, RFC 7252 §12.3).
CBOR_FORMAT: Final = ContentFormat.by_media_type("application/cbor")
JSON_FORMAT: Final = ContentFormat.by_media_type("application/json")


class AceEndpointResource(resource.Resource):  # type: ignore[misc]  # aiocoap ships no type information
    """A POST-only resource taking an ``application/ace+cbor`` payload and answering with one.

    :param handle: the synchronous work: payload bytes and peer address in, response CBOR out. It raises the
        :class:`~ace_core.errors.AceError` the endpoint raises; it runs in ``executor``.
    :param max_payload: the request size limit (4.13 above it).
    """

    ct = int(ACE_CBOR_FORMAT)  # shown as ct=19 in /.well-known/core (RFC 6690 §3.2 / RFC 7252 §7.2.1)

    def __init__(
        self,
        handle: Callable[[bytes, str], bytes],
        *,
        max_payload: int,
        executor: Executor | None = None,
        base_uri: str | None = None,
    ) -> None:
        super().__init__()
        self._handle = handle
        self._max_payload = max_payload
        self._executor = executor
        self._base_uri = base_uri

    async def render_to_pipe(self, pipe: Any) -> None:
        """Refuse an oversized request before aiocoap reassembles its blocks (RFC 7959 §2.5: 4.13 + Size1)."""
        request = pipe.request
        declared = request.opt.size1  # RFC 7959 §4: the client's indication of the total size
        block1 = request.opt.block1
        size = max(declared or 0, len(request.payload) + (block1.start if block1 is not None else 0))
        if size > self._max_payload:
            pipe.add_response(self._error(PayloadTooLarge(f"request of {size}+ bytes")), is_last=True)
            return
        await super().render_to_pipe(pipe)

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        """The single catch site of the CoAP transport (STYLE §3.3)."""
        try:
            fmt = request.opt.content_format
            if fmt is not None and fmt != ACE_CBOR_FORMAT:
                raise UnsupportedContentFormat(f"Content-Format {int(fmt)}")
            if len(request.payload) > self._max_payload:
                raise PayloadTooLarge(f"payload of {len(request.payload)} bytes")
            body = await self._run(bytes(request.payload), _peer(request))
        except Exception as exc:  # noqa: BLE001 - the one catch site; error_outcome logs unexpected ones
            return self._error(exc)
        return aiocoap.Message(code=Code.CREATED, payload=body, content_format=ACE_CBOR_FORMAT)

    async def _run(self, payload: bytes, peer: str) -> bytes:
        """The endpoint's work, in the executor."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._handle, payload, peer)

    def _error(self, exc: BaseException) -> aiocoap.Message:
        outcome = error_outcome(exc, max_payload=self._max_payload, base_uri=self._base_uri)
        message = aiocoap.Message(code=Code(outcome.status.coap_code))
        if outcome.body is not None:
            message.payload = outcome.body.to_cbor()
            message.opt.content_format = ACE_CBOR_FORMAT
        if outcome.retry_after is not None:
            message.opt.max_age = outcome.retry_after  # RFC 8516 §2: Max-Age = seconds until a retry
        if outcome.size_limit is not None:
            message.opt.size1 = outcome.size_limit  # RFC 7252 §5.10.9: the largest acceptable request
        return message


class TokenResource(AceEndpointResource):
    """``POST /token`` (RFC 9200 §5.8). A ``client_credentials`` request is served on the event loop and only its
    commit is awaited (:meth:`TokenEndpoint.handle_queued <as_server.endpoints.token.TokenEndpoint.handle_queued>`):
    no thread hand-off and no thread parked on the commit (with the executor, each token cost two thread wake-ups
    and a contended GIL hand-off besides the work itself). What ``handle_queued`` declines (other grants, resource
    servers counting ``exi`` numbers, requests the policy refers to consent) and the rare retry after a duplicate
    identifier run in the executor, as every request did before.

    On the loop the request reads only what the storage's registry cache holds (clients, resource servers, keys,
    re-validated by one small query at most every 0.1 s) and, for ``req_cnf`` by ``kid``, one indexed lookup.
    """

    def __init__(
        self, server: AuthorizationServer, *, executor: Executor | None = None, base_uri: str | None = None
    ) -> None:
        max_payload = server.settings.max_payload
        endpoint = server.token_endpoint

        def token(payload: bytes, peer: str) -> bytes:
            token_request = TokenRequest.from_cbor(payload, max_size=max_payload)
            return endpoint.handle(token_request, credentials=None, peer=peer).to_cbor()

        super().__init__(token, max_payload=max_payload, executor=executor, base_uri=base_uri)
        self._endpoint = endpoint

    async def _run(self, payload: bytes, peer: str) -> bytes:
        request = TokenRequest.from_cbor(payload, max_size=self._max_payload)
        queued = self._endpoint.handle_queued(request, credentials=None, peer=peer)
        if queued is None:
            return await super()._run(payload, peer)
        info, record = queued
        try:
            await asyncio.wrap_future(record.commit)
        except DuplicateError:  # a drawn identifier was taken; nothing was written: draw new ones
            return await super()._run(payload, peer)
        record.announce()
        return info.to_cbor()


def _peer(request: aiocoap.Message) -> str:
    """The remote's IP address (without port); IPv4-mapped IPv6 addresses are unmapped."""
    hostinfo = getattr(request.remote, "hostinfo", None)
    return "" if hostinfo is None else _address_of(str(hostinfo))


@functools.lru_cache(maxsize=4096)
def _address_of(hostinfo: str) -> str:
    """:func:`_peer` of a ``host:port`` (cached: a client sends from one address many times)."""
    try:
        host, _port = hostportsplit(hostinfo)
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return hostinfo
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _state(found: tuple[ConsentRequest, Grant | None] | None) -> tuple[str, str | None] | None:
    """What observers are notified about: the request's status and its grant's."""
    if found is None:
        return None
    request, grant = found
    return request.status.value, None if grant is None else grant.status.value


def _final(state: tuple[str, str | None] | None) -> bool:
    """A state that cannot change any more (nothing left to poll for)."""
    if state is None:
        return True
    status, grant = state
    if status == AccessRequestStatus.PENDING.value:
        return False
    return not (status == AccessRequestStatus.APPROVED.value and grant == GrantStatus.ACTIVE.value)


class AccessRequestResource(resource.Resource, interfaces.ObservableResource, resource.PathCapable):  # type: ignore[misc]
    """``GET /access-requests/<id>``, observable (see the module documentation). A path-capable resource: aiocoap
    hands it the requests below its path with the id as the remaining ``Uri-Path``.

    :param server: the AS (its :attr:`~as_server.app.AuthorizationServer.consent` service).
    :param executor: where the database reads run.
    """

    def __init__(self, server: AuthorizationServer, *, executor: Executor | None = None) -> None:
        super().__init__()
        self._consent = server.consent
        self._clock = server.clock
        self._executor = executor
        self._interval = server.settings.consent_poll_interval
        self._max = server.settings.consent_max_observations
        self._observers: dict[str, set[Any]] = {}
        self._states: dict[str, tuple[str, str | None] | None] = {}  # last state rendered to observers
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._poller: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None

    @property
    def observations(self) -> int:
        """Observations currently registered."""
        return sum(len(v) for v in self._observers.values())

    async def needs_blockwise_assembly(self, request: aiocoap.Message) -> bool:
        return False

    def get_link_description(self) -> dict[str, Any] | None:
        return None  # the resources are capabilities: not listed in /.well-known/core

    # -- reading ---------------------------------------------------------------------------------------------

    def _read(self, request_id: str) -> tuple[ConsentRequest, Grant | None] | None:
        return self._consent.poll(request_id, now=int(self._clock()))

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        """The request's state, or 4.04; 4.06 for an Accept other than CBOR or JSON."""
        path = request.opt.uri_path
        accept = request.opt.accept
        if accept is not None and accept not in (CBOR_FORMAT, JSON_FORMAT):
            return aiocoap.Message(code=Code.NOT_ACCEPTABLE)
        if len(path) != 1 or not is_request_id(path[0]):
            return aiocoap.Message(code=Code.NOT_FOUND)
        request_id = path[0]
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(self._executor, self._read, request_id)
        except Exception as exc:  # noqa: BLE001 - the catch site of this resource
            outcome = error_outcome(exc, max_payload=0)
            return aiocoap.Message(code=Code(outcome.status.coap_code))
        if request_id in self._observers:
            self._states[request_id] = _state(found)
        if found is None:
            return aiocoap.Message(code=Code.NOT_FOUND)
        if accept == JSON_FORMAT:
            view = public_view(*found, scope_form=json_scope)
            payload = json.dumps(view, separators=(",", ":"), sort_keys=True).encode()
            return aiocoap.Message(code=Code.CONTENT, payload=payload, content_format=JSON_FORMAT)
        view = public_view(*found, scope_form=lambda scope: scope)
        return aiocoap.Message(code=Code.CONTENT, payload=cbor.dumps(view), content_format=CBOR_FORMAT)

    # -- observing (RFC 7641) --------------------------------------------------------------------------------

    def _observable(self, request: aiocoap.Message) -> bool:
        path = request.opt.uri_path
        return request.code == Code.GET and len(path) == 1 and is_request_id(path[0]) and self.observations < self._max

    async def render_to_pipe(self, pipe: Any) -> None:
        """A request that cannot be observed (not a GET, a malformed id, too many observers) is answered once, as
        if it carried no Observe option (RFC 7641 §4.1: the server then does not add the client)."""
        if pipe.request.opt.observe == 0 and not self._observable(pipe.request):
            await interfaces.Resource._render_to_pipe(self, pipe)  # noqa: SLF001 - aiocoap's non-observe path
            return
        await super().render_to_pipe(pipe)

    async def add_observation(self, request: aiocoap.Message, serverobservation: Any) -> None:
        """Register an observer of an access request (:meth:`render_to_pipe` sent the others elsewhere)."""
        path = request.opt.uri_path
        if not self._observable(request):
            return
        request_id = path[0]
        self._observers.setdefault(request_id, set()).add(serverobservation)

        def cancel(observation: Any = serverobservation, key: str = request_id) -> None:
            observers = self._observers.get(key)
            if observers is not None:
                observers.discard(observation)
                if not observers:
                    del self._observers[key]
                    self._states.pop(key, None)
            if not self._observers and self._wake is not None:
                self._wake.set()  # the poller ends

        serverobservation.accept(cancel)
        self._start()

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._unsubscribe is None or self._loop is not loop:
            self._loop = loop
            self._unsubscribe = self._consent.subscribe(self._changed_elsewhere)
        if self._poller is None or self._poller.done():
            self._wake = asyncio.Event()
            self._poller = loop.create_task(self._poll(), name="ostiary-access-request-observer")

    def _changed_elsewhere(self, request_id: str) -> None:
        """A decision in this process (any thread): poll at once if the request is observed."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to notify any more
            loop.call_soon_threadsafe(self._wake_for, request_id)

    def _wake_for(self, request_id: str) -> None:
        if request_id in self._observers and self._wake is not None:
            self._wake.set()

    def _poll_many(self, request_ids: list[str]) -> dict[str, tuple[ConsentRequest, Grant | None]]:
        return self._consent.poll_many(request_ids, now=int(self._clock()))

    async def _poll(self) -> None:
        """Re-read the observed requests whose state can still change; notify observers of changes."""
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while self._observers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            watched = [key for key in self._observers if not _final(self._states.get(key, ("pending", None)))]
            if not watched:
                continue
            try:
                found = await loop.run_in_executor(self._executor, self._poll_many, watched)
            except Exception:  # noqa: BLE001 - keep observing; the next round tries again
                log.exception("re-reading observed access requests failed")
                continue
            for key in watched:
                state = _state(found.get(key))
                if key in self._observers and state != self._states.get(key):
                    self._states[key] = state
                    for observation in list(self._observers.get(key, ())):
                        observation.trigger()


def create_coap_site(
    server: AuthorizationServer, *, executor: Executor | None = None, base_uri: str | None = None
) -> resource.Site:
    """The aiocoap site serving ``server``: ``/token``, ``/introspect``, ``/access-requests/<id>`` and
    ``/.well-known/core``.

    :param executor: where the synchronous endpoints run; ``None`` uses the event loop's default thread pool
        (which :func:`asyncio.run` shuts down with the loop, so there is nothing else to clean up).
    :param base_uri: ``coap://host:port`` of this side, for the ``error_uri`` of token requests refused for
        consent (default: :func:`~as_server.app.coap_base_url` of the settings).
    """
    max_payload = server.settings.max_payload
    base = base_uri or coap_base_url(server.settings)

    def introspect(payload: bytes, peer: str) -> bytes:
        intro_request = IntrospectionRequest.from_cbor(payload, max_size=max_payload)
        credentials, intro_request = introspection_credentials(intro_request, None, cbor=True)
        return server.introspection_endpoint.handle(intro_request, credentials=credentials, peer=peer).to_cbor()

    site = resource.Site()
    site.add_resource([".well-known", "core"], resource.WKCResource(site.get_resources_as_linkheader, impl_info=None))
    site.add_resource(
        [TOKEN_PATH.strip("/")],
        TokenResource(server, executor=executor, base_uri=base),
    )
    site.add_resource(
        [INTROSPECTION_PATH.strip("/")], AceEndpointResource(introspect, max_payload=max_payload, executor=executor)
    )
    site.add_resource([ACCESS_REQUESTS_PATH.strip("/")], AccessRequestResource(server, executor=executor))
    return site


def _is_unicast_literal(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not (address.is_unspecified or address.is_multicast)


async def start_coap(
    server: AuthorizationServer, host: str, port: int, *, executor: Executor | None = None
) -> aiocoap.Context:
    """Bind the AS's CoAP site to ``host:port`` and start serving; stop it with ``await context.shutdown()``.

    A single unicast address is served with aiocoap's ``simplesocketserver`` transport (about 1.5x the
    throughput of ``udp6``, shared/reference/library-notes.md §2.6); the wildcard address, a host name, or a
    failure to bind that way fall back to the default ``udp6`` server transport.
    """
    # aiocoap would share a taken port silently (as_server.transport.udp)
    ensure_udp_port_free(host, port, setting="coap_port (OSTIARY_COAP_PORT, --coap-port)")
    literal = f"[{host}]" if ":" in host else host
    site = create_coap_site(server, executor=executor, base_uri=f"coap://{literal}:{port}" if port else None)
    if _is_unicast_literal(host):
        try:
            return await aiocoap.Context.create_server_context(
                site, bind=(host, port), transports=["simplesocketserver"]
            )
        except OSError as exc:
            log.warning("simplesocketserver could not bind %s:%s (%s); using udp6", host, port, exc.strerror)
    return await aiocoap.Context.create_server_context(site, bind=(host, port), transports=["udp6"])
