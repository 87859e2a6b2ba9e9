"""CoAP transport of the authorization server: aiocoap resources that only translate (STYLE §3.1).

* ``POST /token`` -- RFC 9200 §5.8: the payload is the ``application/ace+cbor`` token request (RFC 9200 §5,
  Content-Format 19); a granted token is **2.01 (Created)** with the Access Information (§5.8.2).
* ``POST /introspect`` -- RFC 9200 §5.9: ``application/ace+cbor`` in, 2.01 with the introspection response out
  (an inactive token is a 2.01 with ``active`` false, §5.9.2).
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

The endpoints are synchronous and reach the database, so each request runs in a thread pool
(:meth:`asyncio.loop.run_in_executor`): the event loop keeps receiving while a request waits on a commit, and
concurrent requests can share one group commit.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, Final

import aiocoap
from aiocoap import resource
from aiocoap.numbers import ContentFormat
from aiocoap.numbers.codes import Code
from aiocoap.util import hostportsplit

from ace_core.errors import PayloadTooLarge
from ace_core.messages import IntrospectionRequest, TokenRequest
from as_server.app import INTROSPECTION_PATH, TOKEN_PATH, AuthorizationServer
from as_server.transport.common import (
    ACE_CBOR,
    UnsupportedContentFormat,
    error_outcome,
    introspection_credentials,
)

__all__ = ["AceEndpointResource", "create_coap_site", "start_coap"]

log = logging.getLogger("ostiary.as.coap")

#: ``application/ace+cbor``, RFC 9200 §8.16 (from aiocoap's registry, STYLE §1).
ACE_CBOR_FORMAT: Final = ContentFormat.by_media_type(ACE_CBOR)


class AceEndpointResource(resource.Resource):  # type: ignore[misc]  # aiocoap ships no type information
    """A POST-only resource taking an ``application/ace+cbor`` payload and answering with one.

    :param handle: the synchronous work: payload bytes and peer address in, response CBOR out. It raises the
        :class:`~ace_core.errors.AceError` the endpoint raises; it runs in ``executor``.
    :param max_payload: the request size limit (4.13 above it).
    """

    ct = int(ACE_CBOR_FORMAT)  # shown as ct=19 in /.well-known/core (RFC 6690 §3.2 / RFC 7252 §7.2.1)

    def __init__(
        self, handle: Callable[[bytes, str], bytes], *, max_payload: int, executor: Executor | None = None
    ) -> None:
        super().__init__()
        self._handle = handle
        self._max_payload = max_payload
        self._executor = executor

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
            loop = asyncio.get_running_loop()
            body = await loop.run_in_executor(self._executor, self._handle, bytes(request.payload), _peer(request))
        except Exception as exc:  # noqa: BLE001 - the one catch site; error_outcome logs unexpected ones
            return self._error(exc)
        return aiocoap.Message(code=Code.CREATED, payload=body, content_format=ACE_CBOR_FORMAT)

    def _error(self, exc: BaseException) -> aiocoap.Message:
        outcome = error_outcome(exc, max_payload=self._max_payload)
        message = aiocoap.Message(code=Code(outcome.status.coap_code))
        if outcome.body is not None:
            message.payload = outcome.body.to_cbor()
            message.opt.content_format = ACE_CBOR_FORMAT
        if outcome.retry_after is not None:
            message.opt.max_age = outcome.retry_after  # RFC 8516 §2: Max-Age = seconds until a retry
        if outcome.size_limit is not None:
            message.opt.size1 = outcome.size_limit  # RFC 7252 §5.10.9: the largest acceptable request
        return message


def _peer(request: aiocoap.Message) -> str:
    """The remote's IP address (without port); IPv4-mapped IPv6 addresses are unmapped."""
    try:
        host, _port = hostportsplit(request.remote.hostinfo)
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except (ValueError, AttributeError):
        return str(getattr(request.remote, "hostinfo", ""))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def create_coap_site(server: AuthorizationServer, *, executor: Executor | None = None) -> resource.Site:
    """The aiocoap site serving ``server``: ``/token``, ``/introspect`` and ``/.well-known/core``.

    :param executor: where the synchronous endpoints run; ``None`` uses the event loop's default thread pool
        (which :func:`asyncio.run` shuts down with the loop, so there is nothing else to clean up).
    """
    max_payload = server.settings.max_payload

    def token(payload: bytes, peer: str) -> bytes:
        token_request = TokenRequest.from_cbor(payload, max_size=max_payload)
        return server.token_endpoint.handle(token_request, credentials=None, peer=peer).to_cbor()

    def introspect(payload: bytes, peer: str) -> bytes:
        intro_request = IntrospectionRequest.from_cbor(payload, max_size=max_payload)
        credentials, intro_request = introspection_credentials(intro_request, None, cbor=True)
        return server.introspection_endpoint.handle(intro_request, credentials=credentials, peer=peer).to_cbor()

    site = resource.Site()
    site.add_resource([".well-known", "core"], resource.WKCResource(site.get_resources_as_linkheader, impl_info=None))
    site.add_resource([TOKEN_PATH.strip("/")], AceEndpointResource(token, max_payload=max_payload, executor=executor))
    site.add_resource(
        [INTROSPECTION_PATH.strip("/")], AceEndpointResource(introspect, max_payload=max_payload, executor=executor)
    )
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
    site = create_coap_site(server, executor=executor)
    if _is_unicast_literal(host):
        try:
            return await aiocoap.Context.create_server_context(
                site, bind=(host, port), transports=["simplesocketserver"]
            )
        except OSError as exc:
            log.warning("simplesocketserver could not bind %s:%s (%s); using udp6", host, port, exc.strerror)
    return await aiocoap.Context.create_server_context(site, bind=(host, port), transports=["udp6"])
