"""CoAP transport of the client SDK (aiocoap). RFC 7252; ACE payloads are ``application/ace+cbor`` (RFC 9200 §5);
OSCORE (RFC 8613) for requests to resource servers with the OSCORE profile (RFC 9203).

Two aiocoap client contexts, created on first use:

* a **plain** one for everything that must go out unprotected: token requests to the AS, discovery requests
  (RFC 9200 §5.2) and the token upload to ``/authz-info`` (RFC 9203 §4.1). It has no client credentials, so aiocoap
  can never protect these by accident -- not even after a context for the same origin has been installed;
* a **secure** one whose ``client_credentials`` map each resource server origin (``coap://host:port/*``) to an
  :class:`OscoreContext`. :meth:`CoapTransport.protected_request` refuses to send when the origin has none, rather
  than letting aiocoap send the request in the clear.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import aiocoap
from aiocoap import oscore
from aiocoap.numbers import ContentFormat

from ace_core.oscore import OscoreContextParameters
from ace_core.registry import CoseAlgorithm
from ace_core.status import Status
from client_sdk.errors import NoSecurityContext, ResponseProtectionFailed, TransportError, TransportTimeout
from client_sdk.transport import Response

__all__ = ["CoapTransport", "OscoreContext"]

#: aiocoap's AEAD algorithm objects by COSE algorithm value (RFC 9053 §4).
_AEAD_BY_COSE: dict[int, Any] = {alg.value: alg for alg in oscore.algorithms.values()}
#: aiocoap's hash functions by the COSE HMAC algorithm that names the HKDF (RFC 9203 §3.2.1 ``hkdf``).
_HASH_BY_COSE: dict[int, str] = {
    CoseAlgorithm.HMAC_256_256: "sha256",
    CoseAlgorithm.HMAC_384_384: "sha384",
    CoseAlgorithm.HMAC_512_512: "sha512",
}
#: RFC 8613 §3.2.2 default replay window size.
REPLAY_WINDOW = 32
#: Transports of the secure client context: OSCORE over UDP (RFC 8613 §8) and over TCP (RFC 8323).
SECURE_TRANSPORTS = ["oscore", "udp6", "tcpclient"]
#: Default port per scheme (RFC 7252 §6.1), for the credential patterns of an origin written without its port.
_DEFAULT_PORTS = {"coap": 5683, "coaps": 5684, "coap+tcp": 5683, "coaps+tcp": 5684}


class OscoreContext(oscore.CanProtect, oscore.CanUnprotect, oscore.SecurityContextUtils):  # type: ignore[misc]
    """An in-memory OSCORE security context (RFC 8613 §3) for aiocoap, built from the parameters that
    :func:`ace_core.oscore.context_parameters` derived (RFC 9203 §4.3).

    The keys come from :mod:`ace_core.oscore`, not from aiocoap's own derivation, so client and resource server
    share one implementation of the Master Salt rules; a test checks that aiocoap's ``derive_keys`` agrees.

    Sequence numbers live only in memory (``post_seqnoincrease`` does not persist): a context is never reused
    across a restart, because RFC 9203 derives a new one from fresh nonces for every token upload, so no
    (key, nonce) pair can repeat (RFC 8613 §7.2.1 / Appendix B.1 do not apply).

    :param params: the role-specific context parameters.
    :param claims: what aiocoap reports as ``authenticated_claims`` of requests unprotected with this context.
    """

    def __init__(self, params: OscoreContextParameters, *, claims: tuple[Any, ...] = ()) -> None:
        try:
            self.alg_aead = _AEAD_BY_COSE[params.aead_alg]
            self.hashfun = oscore.hashfunctions[_HASH_BY_COSE[params.hkdf_alg]]
        except KeyError:
            unsupported = f"alg {params.aead_alg} / hkdf {params.hkdf_alg}"
            raise ValueError(f"aiocoap has no OSCORE support for {unsupported}") from None
        self.id_context = params.id_context
        self.sender_id = params.sender_id
        self.recipient_id = params.recipient_id
        self.sender_key = params.sender_key()
        self.recipient_key = params.recipient_key()
        self.common_iv = params.common_iv()
        self.sender_sequence_number = 0
        self.recipient_replay_window = oscore.ReplayWindow(REPLAY_WINDOW, lambda: None)
        self.recipient_replay_window.initialize_empty()
        # No Appendix B.1.2 Echo recovery: the replay window starts initialised, as the context is new.
        self.echo_recovery = None
        self.authenticated_claims = list(claims)

    def post_seqnoincrease(self) -> None:
        """Nothing to persist (see the class docstring)."""

    def __repr__(self) -> str:
        return (
            f"<OscoreContext sender_id={self.sender_id.hex()} recipient_id={self.recipient_id.hex()} "
            f"seq={self.sender_sequence_number}>"
        )


def _code(method: str) -> aiocoap.Code:
    try:
        code = aiocoap.Code[method.upper()]
    except KeyError:
        raise ValueError(f"not a CoAP method: {method!r}") from None
    if not code.is_request():
        raise ValueError(f"not a CoAP method: {method!r}")
    return code


def _status(code: aiocoap.Code) -> int:
    value = int(code)
    status = (value >> 5) * 100 + (value & 0x1F)
    return Status(status) if status in Status._value2member_map_ else status


def _media_type(message: aiocoap.Message) -> str | None:
    cf = message.opt.content_format
    if cf is None:
        return None
    media_type: str | None = cf.media_type if cf.is_known() else None
    return media_type


def _response(message: aiocoap.Message, *, protected: bool) -> Response:
    return Response(
        status=_status(message.code),
        payload=bytes(message.payload),
        content_type=_media_type(message),
        protected=protected,
    )


def origin_patterns(uri: str) -> Iterator[str]:
    """The ``client_credentials`` keys that cover every resource of ``uri``'s origin, spelled the way aiocoap
    spells request URIs (lower-case host, port only when given). A default port is covered both ways."""
    parts = urlsplit(uri)
    if not parts.scheme or not parts.hostname:
        raise ValueError(f"not an absolute CoAP URI: {uri!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    for netloc in (f"{host}:{port}", host) if port == _DEFAULT_PORTS.get(parts.scheme) else (f"{host}:{port}",):
        probe = aiocoap.Message(code=aiocoap.GET, uri=f"{parts.scheme}://{netloc}/")
        yield probe.get_request_uri() + "*"


class CoapTransport:
    """The client's CoAP side: unprotected requests, and OSCORE-protected requests per installed origin.

    Every request is bounded by ``timeout`` seconds.
    """

    def __init__(self, *, timeout: float = 10.0) -> None:
        self._plain: aiocoap.Context | None = None
        self._secure: aiocoap.Context | None = None
        self._contexts: dict[str, OscoreContext] = {}
        self._starting = asyncio.Lock()
        self._timeout = timeout

    async def _plain_ctx(self) -> aiocoap.Context:
        async with self._starting:
            if self._plain is None:
                self._plain = await aiocoap.Context.create_client_context()
            return self._plain

    async def _secure_ctx(self) -> aiocoap.Context:
        async with self._starting:
            if self._secure is None:
                # Name the transports: aiocoap's defaults silently omit "oscore" when its dependencies are
                # missing, and a request matching client_credentials would then go out in the clear.
                self._secure = await aiocoap.Context.create_client_context(transports=SECURE_TRANSPORTS)
                for pattern, context in self._contexts.items():
                    self._secure.client_credentials[pattern] = context
            return self._secure

    async def _exchange(self, ctx: aiocoap.Context, message: aiocoap.Message) -> aiocoap.Message:
        request = ctx.request(message)
        try:
            return await asyncio.wait_for(request.response, self._timeout)
        except (TimeoutError, aiocoap.error.TimeoutError):
            raise TransportTimeout(f"no response from {message.get_request_uri()} within {self._timeout:g} s") from None
        except aiocoap.error.NetworkError as exc:
            cause = exc.__cause__ or (exc.args[0] if exc.args else type(exc).__name__)
            raise TransportError(f"cannot reach {message.get_request_uri()}: {cause}") from None

    async def request(
        self, method: str, uri: str, payload: bytes = b"", *, content_format: int | None = None
    ) -> Response:
        """Send an unprotected request; returns the response whatever its code."""
        message = aiocoap.Message(code=_code(method), uri=uri, payload=payload)
        if content_format is not None:
            message.opt.content_format = ContentFormat(content_format)
        return _response(await self._exchange(await self._plain_ctx(), message), protected=False)

    async def post(self, uri: str, payload: bytes, *, content_format: int) -> Response:
        """POST ``payload`` unprotected with the given Content-Format; returns the response (any code)."""
        return await self.request("POST", uri, payload, content_format=content_format)

    def install_oscore(self, uri: str, params: OscoreContextParameters) -> None:
        """Protect every later :meth:`protected_request` to ``uri``'s origin with a context from ``params``."""
        context = OscoreContext(params)
        for pattern in origin_patterns(uri):
            self._contexts[pattern] = context
            if self._secure is not None:
                self._secure.client_credentials[pattern] = context

    def remove_oscore(self, uri: str) -> None:
        """Forget ``uri``'s origin's context."""
        for pattern in origin_patterns(uri):
            self._contexts.pop(pattern, None)
            if self._secure is not None:
                self._secure.client_credentials.pop(pattern, None)

    def has_oscore(self, uri: str) -> bool:
        """Whether a context is installed for ``uri``'s origin."""
        return any(pattern in self._contexts for pattern in origin_patterns(uri))

    async def protected_request(
        self, method: str, uri: str, payload: bytes = b"", *, content_format: int | None = None
    ) -> Response:
        """Send an OSCORE-protected request (RFC 8613 §8.1) with the origin's context.

        An unprotected answer (aiocoap's ``NotAProtectedMessage``, e.g. 4.01 "Security context not found" or 4.00
        "Decryption failed" from the server) is returned with ``protected=False``.
        """
        if not self.has_oscore(uri):
            raise NoSecurityContext(f"no OSCORE context installed for {uri}: not sending it unprotected")
        message = aiocoap.Message(code=_code(method), uri=uri, payload=payload)
        if content_format is not None:
            message.opt.content_format = ContentFormat(content_format)
        try:
            return _response(await self._exchange(await self._secure_ctx(), message), protected=True)
        except oscore.NotAProtectedMessage as exc:
            return _response(exc.plain_message, protected=False)
        except oscore.ProtectionInvalid as exc:
            raise ResponseProtectionFailed(f"the response from {uri} did not verify: {exc}") from None

    async def close(self) -> None:
        """Shut both client contexts down."""
        for ctx in (self._plain, self._secure):
            if ctx is not None:
                await ctx.shutdown()
        self._plain = self._secure = None
