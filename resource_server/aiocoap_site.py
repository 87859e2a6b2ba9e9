"""The resource server on aiocoap: :class:`AceSiteWrapper` protects a whole aiocoap site with ACE + OSCORE (RFC 9200
§5.10, RFC 9203), in the manner of aiocoap's ``OscoreSiteWrapper`` (STYLE §1). This is the only module of
:mod:`resource_server` that imports aiocoap.

What the wrapper does with each request:

* ``POST /authz-info`` (unprotected): the token upload of RFC 9200 §5.10.1 / RFC 9203 §4.1, decided by
  :meth:`~resource_server.authz_info.AuthzInfo.handle`; on success the security context is installed. Other
  methods on ``/authz-info`` get 4.05. The resource is listed in ``/.well-known/core`` as
  ``</authz-info>;rt="ace.ai";ct="19 61"`` (RFC 9200 §8.2 registers ``ace.ai``), whatever the inner site lists:
  the wrapper answers ``/.well-known/core`` itself from the inner site's links plus this one.
* An **unprotected** request to anything else (except ``/.well-known/core`` and the ``public_paths`` given) never
  reaches the inner site: 4.01 with AS Request Creation Hints (``application/ace+cbor``, RFC 9200 §5.2/§5.3).
* A **protected** request: the context is found by ``(kid, kid context)`` in O(1) (:class:`IndexedOscoreCredentials`;
  aiocoap's own ``find_oscore`` is a linear scan). If there is none, or its token has expired, been superseded or
  evicted, the answer is an *unprotected* 4.01 with hints (RFC 9203 §4.3: a context must not outlive its token).
  Otherwise the request is unprotected (replay window checked before decryption: a replayed request gets 4.01
  "Replay detected"), the guard decides (4.01 + hints / 4.03 / 4.05, RFC 9200 §5.10.2), and an allowed request is
  rendered by the inner site. Every response to a protected request is protected with the same context.
* A protected ``POST /authz-info`` is an update of access rights (RFC 9203 §4.1): 2.01 without payload, protected.

Security contexts are :class:`MemoryOscoreContext` objects built from
:class:`~ace_core.oscore.OscoreContextParameters` (keys derived by :mod:`ace_core.oscore`; a test checks that
aiocoap's own derivation agrees). Sender sequence numbers are reserved in chunks through the token store, and
contexts restored after a restart recover their replay windows with Echo (RFC 8613 Appendix B.1; the rule is
documented in :mod:`resource_server.token_store`).

Every authorised or refused request is logged (logger ``ostiary.lock``) with the PoP id and ``cti`` of the token,
never key material.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import aiocoap
import aiocoap.pipe
from aiocoap import error as coap_error
from aiocoap import interfaces, oscore, resource
from aiocoap.credentials import CredentialsMap
from aiocoap.numbers import ContentFormat
from aiocoap.numbers.codes import Code
from aiocoap.transports.oscore import OSCOREAddress
from aiocoap.util import hostportsplit
from aiocoap.util.linkformat import Link, LinkFormat

from ace_core.errors import AceError
from ace_core.oscore import OscoreContextParameters
from ace_core.registry import MEDIA_TYPE_ACE_CBOR, MEDIA_TYPE_CWT, CoseAlgorithm
from ace_core.status import Status
from resource_server.errors import RateLimited
from resource_server.guard import GuardDecision
from resource_server.resources import Request, Resource, Response
from resource_server.server import ResourceServer
from resource_server.token_store import OscoreAssociation, Removal, StoredToken

__all__ = [
    "ACE_CBOR_FORMAT",
    "AUTHZ_INFO_PATH",
    "AceSiteWrapper",
    "IndexedOscoreCredentials",
    "LockServer",
    "MemoryOscoreContext",
    "resource_site",
    "serve",
]

log = logging.getLogger("ostiary.lock")

#: ``application/ace+cbor`` (RFC 9200 §8.16) and ``application/cwt`` (RFC 8392 §9.4), from aiocoap's registry.
ACE_CBOR_FORMAT: Final = ContentFormat.by_media_type(MEDIA_TYPE_ACE_CBOR)
CWT_FORMAT: Final = ContentFormat.by_media_type(MEDIA_TYPE_CWT)
#: The token upload resource (RFC 9200 §5.10.1; ``rt="ace.ai"``, §8.2).
AUTHZ_INFO_PATH: Final = ("authz-info",)
WELL_KNOWN_CORE: Final = (".well-known", "core")
#: RFC 8613 §3.2.2 default replay window size.
REPLAY_WINDOW_SIZE: Final = 32
#: Length of the Echo value of RFC 8613 B.1.2 replay-window recovery (RFC 9175 §2.3 suggests 8 bytes or more).
ECHO_LENGTH: Final = 8

_AEAD_BY_ID: Final = {alg.value: alg for alg in oscore.algorithms.values()}
_HASH_BY_HKDF: Final[dict[int, Any]] = {
    CoseAlgorithm.HMAC_256_256: oscore.hashfunctions["sha256"],
    CoseAlgorithm.HMAC_384_384: oscore.hashfunctions["sha384"],
    CoseAlgorithm.HMAC_512_512: oscore.hashfunctions["sha512"],
}


# --------------------------------------------------------------------------------------------------------------
# security contexts
# --------------------------------------------------------------------------------------------------------------


class MemoryOscoreContext(oscore.CanProtect, oscore.CanUnprotect, oscore.SecurityContextUtils):  # type: ignore[misc]
    """An OSCORE security context held in memory (RFC 8613 §3), built from
    :class:`~ace_core.oscore.OscoreContextParameters`.

    aiocoap has no public in-memory context (library-notes §2.3); this one adds what the ACE resource server needs:

    :param sender_sequence_number: where the Sender Sequence Number starts (the persisted reservation after a
        restart, RFC 8613 B.1.1).
    :param echo_recovery: ``None`` for a fresh context (empty replay window); bytes for a restored one: its replay
        window stays uninitialised until a request returns this Echo value (RFC 8613 B.1.2).
    :param on_sequence: called with the next Sender Sequence Number each time one is taken, *before* it is used
        (persist the reservation there).
    :param claims: returns ``authenticated_claims`` (the token that authorises the context's requests).
    :param pop_id: the Input Material ``id`` of the token the context was derived for.
    :param derive: derive the keys with aiocoap's own HKDF instead of taking them from ``params`` (for cross-checks).
    """

    def __init__(
        self,
        params: OscoreContextParameters,
        *,
        sender_sequence_number: int = 0,
        echo_recovery: bytes | None = None,
        replay_window_size: int = REPLAY_WINDOW_SIZE,
        on_sequence: Callable[[int], None] | None = None,
        claims: Callable[[], list[Any]] | None = None,
        pop_id: bytes | None = None,
        derive: bool = False,
    ) -> None:
        try:
            self.alg_aead = _AEAD_BY_ID[params.aead_alg]
            self.hashfun = _HASH_BY_HKDF[params.hkdf_alg]
        except KeyError:
            raise ValueError(f"aiocoap cannot use alg={params.aead_alg} hkdf={params.hkdf_alg}") from None
        self.id_context = params.id_context
        self.sender_id = params.sender_id
        self.recipient_id = params.recipient_id
        if derive:
            self.derive_keys(params.master_salt, params.master_secret)
        else:
            self.sender_key = params.sender_key()
            self.recipient_key = params.recipient_key()
            self.common_iv = params.common_iv()
        self.sender_sequence_number = sender_sequence_number
        self.recipient_replay_window = oscore.ReplayWindow(replay_window_size, lambda: None)
        self.echo_recovery = echo_recovery
        if echo_recovery is None:
            self.recipient_replay_window.initialize_empty()
        self._on_sequence = on_sequence
        self._claims = claims
        #: The PoP key identifier of the token this context belongs to (RFC 9203: the Input Material ``id``).
        self.pop_id = pop_id

    @property
    def authenticated_claims(self) -> list[Any]:
        """What the security context authenticates: here, the ACE token authorising it."""
        return self._claims() if self._claims is not None else []

    def post_seqnoincrease(self) -> None:
        """RFC 8613 B.1.1: let the owner persist the reservation before the number is used."""
        if self._on_sequence is not None:
            self._on_sequence(self.sender_sequence_number)

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} sender_id={self.sender_id.hex()} recipient_id={self.recipient_id.hex()} "
            f"id_context={None if self.id_context is None else self.id_context.hex()}>"
        )


class IndexedOscoreCredentials(CredentialsMap):  # type: ignore[misc]
    """Server credentials whose ``find_oscore`` is an O(1) lookup by ``(kid, kid context)`` (aiocoap's default
    scans every entry)."""

    def __init__(self) -> None:
        super().__init__()
        self._by_kid: dict[tuple[bytes, bytes | None], MemoryOscoreContext] = {}

    def __bool__(self) -> bool:
        return True  # an empty map must not be replaced by aiocoap (library-notes §0.4)

    def __len__(self) -> int:
        return len(self._by_kid)

    def add(self, context: MemoryOscoreContext) -> None:
        """Index ``context`` by its Recipient ID and ID Context."""
        self._by_kid[(context.recipient_id, context.id_context)] = context

    def discard(self, context: MemoryOscoreContext) -> None:
        """Forget ``context`` (if it is the one indexed under its key)."""
        key = (context.recipient_id, context.id_context)
        if self._by_kid.get(key) is context:
            del self._by_kid[key]

    def find_oscore(self, unprotected: dict[int, Any]) -> MemoryOscoreContext:
        """The context for a request's unprotected header; ``KeyError`` if none."""
        kid = unprotected.get(oscore.COSE_KID)
        if not isinstance(kid, bytes):
            raise KeyError(kid)
        kid_context = unprotected.get(oscore.COSE_KID_CONTEXT)
        return self._by_kid[(kid, kid_context if isinstance(kid_context, bytes) else None)]

    def find_all_used_contextless_oscore_kid(self) -> set[bytes]:
        """Recipient IDs in use without an ID Context (aiocoap asks this when it allocates EDHOC identifiers)."""
        return {kid for (kid, ctx) in self._by_kid if ctx is None}


@dataclass(eq=False)
class _Installed:
    context: MemoryOscoreContext
    association: OscoreAssociation


# --------------------------------------------------------------------------------------------------------------
# the site wrapper
# --------------------------------------------------------------------------------------------------------------


class AceSiteWrapper(interfaces.Resource):  # type: ignore[misc]
    """Serve ``inner_site`` only to clients holding a valid ACE token, over OSCORE (module docstring).

    :param inner_site: the application's aiocoap site (e.g. from :func:`resource_site`).
    :param rs: the resource server; contexts are installed for the tokens it already holds (restore first).
    :param public_paths: further paths served without a token (``/.well-known/core`` always is).
    """

    def __init__(self, inner_site: Any, rs: ResourceServer, *, public_paths: Iterable[tuple[str, ...]] = ()) -> None:
        self._inner = inner_site
        self.rs = rs
        self.credentials = IndexedOscoreCredentials()
        self._installed: dict[bytes, _Installed] = {}
        self._public = frozenset(tuple(p) for p in public_paths)
        self._wkc = resource.WKCResource(self.get_resources_as_linkheader, impl_info=None)
        self._authz_info = _AuthzInfoResource(self)
        rs.store.add_listener(self._on_removal)
        for token in rs.store:
            # Tokens held before this wrapper existed (restored after a restart, or a wrapper re-created in the
            # same process): their contexts may have been used, so continue above the reserved sequence numbers
            # and recover the replay window with Echo (RFC 8613 B.1).
            self._install(token, fresh=False)

    def close(self) -> None:
        """Stop following the token store (call when the server shuts down)."""
        with contextlib.suppress(ValueError):
            self.rs.store.remove_listener(self._on_removal)

    # -- aiocoap Resource interface --------------------------------------------------------------------------

    def get_resources_as_linkheader(self) -> LinkFormat:
        """The inner site's links plus ``</authz-info>;rt="ace.ai";ct="19 61"`` (RFC 9200 §5.10.1, §8.2)."""
        links = [link for link in self._inner.get_resources_as_linkheader().links if link.href != "/authz-info"]
        links.append(Link("/authz-info", rt="ace.ai", ct=f"{int(ACE_CBOR_FORMAT)} {int(CWT_FORMAT)}"))
        return LinkFormat(links)

    async def render(self, request: aiocoap.Message) -> aiocoap.Message:
        raise RuntimeError("AceSiteWrapper can only be used through the render_to_pipe interface")

    async def needs_blockwise_assembly(self, request: aiocoap.Message) -> bool:
        raise RuntimeError("AceSiteWrapper can only be used through the render_to_pipe interface")

    async def render_to_pipe(self, pipe: Any) -> None:
        """Dispatch one request (module docstring)."""
        request = pipe.request
        if request.opt.oscore is None:
            await self._render_unprotected(pipe)
        else:
            await self._render_protected(pipe)

    # -- unprotected requests --------------------------------------------------------------------------------

    async def _render_unprotected(self, pipe: Any) -> None:
        request = pipe.request
        path = tuple(request.opt.uri_path)
        if path == AUTHZ_INFO_PATH:
            await self._authz_info.render_to_pipe(pipe)
            return
        if path == WELL_KNOWN_CORE:
            pipe.add_response(await _render_resource(self._wkc, request), is_last=True)
            return
        if path in self._public:
            await self._inner.render_to_pipe(pipe)
            return
        decision = self.rs.check(int(request.code), _path(path), None)
        status = decision.status.coap_dotted if decision.status is not None else "?"
        log.info("refused %s %s from %s: %s (unprotected request)", request.code, _path(path), _peer(request), status)
        pipe.add_response(_refusal(decision), is_last=True)

    # -- protected requests ----------------------------------------------------------------------------------

    async def _render_protected(self, pipe: Any) -> None:
        request = pipe.request
        confirmable = request.mtype == aiocoap.CON
        peer = _peer(request)
        try:
            header = oscore.verify_start(request)
        except oscore.DecodeError:
            if confirmable:
                pipe.add_response(aiocoap.Message(code=Code.BAD_OPTION), is_last=True)
            return
        if request.code not in (Code.FETCH, Code.POST):
            pipe.add_response(aiocoap.Message(code=Code.METHOD_NOT_ALLOWED), is_last=True)
            return
        try:
            context = self.credentials.find_oscore(header)
        except KeyError:
            log.info("refused OSCORE request from %s: 4.01 (no security context for kid %s)", peer, _kid(header))
            if confirmable:
                pipe.add_response(_refusal(self._unknown_context()), is_last=True)
            return
        pop_id = context.pop_id
        installed = self._installed.get(pop_id) if pop_id is not None else None
        token = None
        if pop_id is not None and installed is not None and installed.context is context:
            token = self.rs.token_for(pop_id)
        if token is None:
            # The token expired or was superseded/evicted: its context must not be used (RFC 9203 §4.3).
            log.info("refused OSCORE request from %s: 4.01 (the token of context %s is gone)", peer, _kid(header))
            if confirmable:
                pipe.add_response(_refusal(self._unknown_context()), is_last=True)
            return
        try:
            inner, request_id = context.unprotect(request)
        except oscore.ReplayErrorWithEcho as exc:
            # RFC 8613 B.1.2: a restored context learns its replay window from a request returning this Echo.
            log.info("OSCORE Echo challenge to %s (%s): replay window recovery after restart", peer, token.describe())
            pipe.add_response(exc.to_message(), is_last=True)
            return
        except oscore.ReplayError:
            log.warning("refused OSCORE request from %s: 4.01 replay detected (%s)", peer, token.describe())
            if confirmable:
                message = aiocoap.Message(code=Code.UNAUTHORIZED, max_age=0, payload=b"Replay detected")
                pipe.add_response(message, is_last=True)
            return
        except oscore.DecodeError:
            log.warning("refused OSCORE request from %s: 4.02 undecodable OSCORE data", peer)
            if confirmable:
                pipe.add_response(aiocoap.Message(code=Code.BAD_OPTION), is_last=True)
            return
        except oscore.ProtectionInvalid:
            salt = token.claims.cnf.osc.salt if token.claims.cnf and token.claims.cnf.osc else None
            log.warning(
                "refused OSCORE request from %s: 4.00 decryption failed (%s)%s",
                peer,
                token.describe(),
                ""
                if salt
                else "; the token has no salt: a client that omits the absent salt from the Master Salt instead of "
                "encoding it as h'' (RFC 9203 §4.3, see ace_core.oscore) derives other keys",
            )
            if confirmable:
                pipe.add_response(aiocoap.Message(code=Code.BAD_REQUEST, payload=b"Decryption failed"), is_last=True)
            return
        inner.remote = OSCOREAddress(context, request.remote)
        response_context = context.context_for_response()
        path = tuple(inner.opt.uri_path)
        if path == AUTHZ_INFO_PATH:
            message = await self._authz_info.render_protected(inner, token)
        elif path == WELL_KNOWN_CORE:
            message = await _render_resource(self._wkc, inner)
        else:
            decision = self.rs.check(int(inner.code), _path(path), token)
            if not decision.allowed:
                log.info(
                    "refused %s %s from %s: %s (%s)",
                    inner.code,
                    _path(path),
                    peer,
                    decision.status.coap_dotted if decision.status else "",
                    decision.reason,
                )
                message = _refusal(decision)
            else:
                log.info("authorized %s %s from %s (%s)", inner.code, _path(path), peer, token.describe())
                await self._render_inner(pipe, inner, response_context, request_id)
                return
        protected, _ = response_context.protect(message, request_id)
        pipe.add_response(protected, is_last=True)

    async def _render_inner(self, pipe: Any, inner: aiocoap.Message, context: Any, request_id: Any) -> None:
        """Render an allowed request with the inner site and protect every response (as OscoreSiteWrapper)."""
        inner_pipe = aiocoap.pipe.IterablePipe(inner)
        errors_to_messages = aiocoap.pipe.error_to_message(inner_pipe, log)
        aiocoap.pipe.run_driving_pipe(
            errors_to_messages, self._inner.render_to_pipe(inner_pipe), name=f"ACE rendering of {inner!r}"
        )
        async for event in inner_pipe:
            if event.exception is not None:
                log.warning("resource raised %r; answering 5.00", event.exception)
                message, is_last = aiocoap.Message(code=Code.INTERNAL_SERVER_ERROR), True
            else:
                message, is_last = event.message, event.is_last
            if not is_last:
                message.opt.observe = 0
            protected, _ = context.protect(message, request_id)
            if message.opt.observe is not None:
                protected.opt.observe = context.sender_sequence_number & 0xFFFFFFFF
            pipe.add_response(protected, is_last=is_last)
            if is_last:
                break

    # -- contexts --------------------------------------------------------------------------------------------

    def install(self, token: StoredToken) -> MemoryOscoreContext:
        """Install (or replace) the security context of ``token``, just derived by a successful upload."""
        return self._install(token, fresh=True)

    def _install(self, token: StoredToken, *, fresh: bool) -> MemoryOscoreContext:
        association = token.association
        assert association is not None
        previous = self._installed.pop(token.pop_id, None)
        if previous is not None:
            self.credentials.discard(previous.context)
        store = self.rs.store
        pop_id = token.pop_id
        context = MemoryOscoreContext(
            association.params,
            sender_sequence_number=association.sender_sequence_reserved,
            echo_recovery=None if fresh and not association.restored else secrets.token_bytes(ECHO_LENGTH),
            on_sequence=lambda next_to_send: store.reserve_sequence_numbers(association, next_to_send),
            claims=lambda: [t for t in (store.get(pop_id),) if t is not None],
            pop_id=pop_id,
        )
        self._installed[pop_id] = _Installed(context, association)
        self.credentials.add(context)
        return context

    def _on_removal(self, removal: Removal) -> None:
        if removal.keeps_context:
            return
        installed = self._installed.get(removal.token.pop_id)
        if installed is not None and installed.association is removal.token.association:
            del self._installed[removal.token.pop_id]
            self.credentials.discard(installed.context)
            log.info("dropped the security context of %s (%s)", removal.token.describe(), removal.reason)

    def _unknown_context(self) -> GuardDecision:
        return GuardDecision(Status.UNAUTHORIZED, self.rs.guard.hints(monotonic=self.rs.monotonic()), "no context")

    @property
    def contexts(self) -> int:
        """How many security contexts are installed."""
        return len(self._installed)


class _AuthzInfoResource(resource.Resource):  # type: ignore[misc]
    """``/authz-info``: POST only; the single catch site of the token upload (STYLE §3.3)."""

    def __init__(self, wrapper: AceSiteWrapper) -> None:
        super().__init__()
        self._wrapper = wrapper

    async def render_to_pipe(self, pipe: Any) -> None:
        """Refuse an oversized upload before aiocoap reassembles its blocks (RFC 7959 §2.5: 4.13 + Size1)."""
        request = pipe.request
        limit = self._wrapper.rs.config.max_token_size
        block1 = request.opt.block1
        size = max(request.opt.size1 or 0, len(request.payload) + (block1.start if block1 is not None else 0))
        if request.code == Code.POST and size > limit:
            log.warning("refused token from %s: 4.13 upload of %d+ bytes", _peer(request), size)
            pipe.add_response(aiocoap.Message(code=Code.REQUEST_ENTITY_TOO_LARGE, size1=limit), is_last=True)
            return
        await super().render_to_pipe(pipe)

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        return self._post(request, None)

    async def render_protected(self, request: aiocoap.Message, token: StoredToken) -> aiocoap.Message:
        """A POST that arrived over OSCORE: update of access rights (RFC 9203 §4.1)."""
        if request.code != Code.POST:
            return aiocoap.Message(code=Code.METHOD_NOT_ALLOWED)
        if len(request.payload) > self._wrapper.rs.config.max_token_size:
            return aiocoap.Message(code=Code.REQUEST_ENTITY_TOO_LARGE, size1=self._wrapper.rs.config.max_token_size)
        return self._post(request, token)

    def _post(self, request: aiocoap.Message, protected_by: StoredToken | None) -> aiocoap.Message:
        fmt = request.opt.content_format
        rs = self._wrapper.rs
        try:
            result = rs.handle_authz_info(
                bytes(request.payload),
                None if fmt is None else int(fmt),
                peer=_peer(request),
                protected_by=protected_by,
            )
        except AceError as exc:
            message = aiocoap.Message(code=Code(exc.status.coap_code))
            if isinstance(exc, RateLimited):
                message.opt.max_age = exc.retry_after  # RFC 8516 §2
            if exc.status == Status.REQUEST_ENTITY_TOO_LARGE:
                message.opt.size1 = rs.config.max_token_size  # RFC 7252 §5.10.9
            return message
        except Exception:  # noqa: BLE001 - the one catch site: anything unexpected is 5.00, logged with traceback
            log.exception("unexpected error in /authz-info")
            return aiocoap.Message(code=Code.INTERNAL_SERVER_ERROR)
        if result.context is not None:
            self._wrapper.install(result.token)
        message = aiocoap.Message(code=Code(result.status.coap_code), payload=result.payload)
        if result.content_format is not None:
            message.opt.content_format = ContentFormat(result.content_format)
        return message


async def _render_resource(res: Any, request: aiocoap.Message) -> aiocoap.Message:
    try:
        message: aiocoap.Message = await res.render(request)
    except coap_error.RenderableError as exc:
        message = exc.to_message()
    return message


def _refusal(decision: GuardDecision) -> aiocoap.Message:
    assert decision.status is not None
    message = aiocoap.Message(code=Code(decision.status.coap_code))
    if decision.hints is not None:
        message.payload = decision.hints.to_cbor()
        message.opt.content_format = ACE_CBOR_FORMAT
    return message


def _path(parts: Iterable[str]) -> str:
    return "/" + "/".join(parts)


def _kid(header: dict[int, Any]) -> str:
    kid = header.get(oscore.COSE_KID)
    return kid.hex() if isinstance(kid, bytes) else "-"


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


# --------------------------------------------------------------------------------------------------------------
# application resources (sans-IO handlers) as an aiocoap site
# --------------------------------------------------------------------------------------------------------------


def _media_type(fmt: Any) -> str | None:
    if fmt is None:
        return None
    try:
        media = ContentFormat(int(fmt)).media_type
    except (AttributeError, ValueError):
        return None
    return str(media) if media else None


class _HandlerResource(resource.Resource):  # type: ignore[misc]
    """An aiocoap resource around a sans-IO :class:`~resource_server.resources.Resource`."""

    def __init__(self, spec: Resource) -> None:
        super().__init__()
        self.spec = spec
        if spec.rt is not None:
            self.rt = spec.rt
        if spec.content_types:
            self.ct = " ".join(str(int(ContentFormat.by_media_type(t))) for t in spec.content_types)

    async def needs_blockwise_assembly(self, request: aiocoap.Message) -> bool:
        return True

    async def render(self, request: aiocoap.Message) -> aiocoap.Message:
        method = str(request.code)
        if method not in self.spec.methods:
            return aiocoap.Message(code=Code.METHOD_NOT_ALLOWED)
        claims = getattr(request.remote, "authenticated_claims", None) or []
        token = next((c for c in claims if isinstance(c, StoredToken)), None)
        if token is None:  # defence in depth: the wrapper never lets such a request through
            return aiocoap.Message(code=Code.UNAUTHORIZED)
        response: Response = self.spec.handler(
            Request(
                method=method,
                path=self.spec.path,
                payload=bytes(request.payload),
                content_type=_media_type(request.opt.content_format),
                accept=_media_type(request.opt.accept),
                authorization=token,
                peer=_peer(request),
            )
        )
        message = aiocoap.Message(code=Code(response.status.coap_code), payload=response.payload)
        if response.content_type is not None:
            message.opt.content_format = ContentFormat.by_media_type(response.content_type)
        return message


def resource_site(resources: Iterable[Resource]) -> resource.Site:
    """An aiocoap site serving sans-IO resources (wrap it in :class:`AceSiteWrapper`)."""
    site = resource.Site()
    for spec in resources:
        site.add_resource([part for part in spec.path.split("/") if part], _HandlerResource(spec))
    return site


# --------------------------------------------------------------------------------------------------------------
# serving
# --------------------------------------------------------------------------------------------------------------

#: How often expired tokens are purged in the background (each request also checks its own token).
PURGE_INTERVAL = 30.0


@dataclass
class LockServer:
    """A running lock: the aiocoap server context, the site wrapper and the resource server."""

    context: aiocoap.Context
    site: AceSiteWrapper
    rs: ResourceServer
    host: str
    port: int
    _purger: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def uri(self) -> str:
        """``coap://host:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"coap://{host}:{self.port}"

    async def shutdown(self) -> None:
        """Stop serving, stop following the store and write the state file."""
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
        await self.context.shutdown()
        self.site.close()
        self.rs.save()


async def serve(
    rs: ResourceServer,
    inner_site: Any,
    *,
    host: str,
    port: int,
    purge_interval: float = PURGE_INTERVAL,
    public_paths: Iterable[tuple[str, ...]] = (),
) -> LockServer:
    """Restore persisted tokens, wrap ``inner_site`` and serve it on ``host:port`` (UDP).

    A single unicast address is served with aiocoap's ``simplesocketserver`` transport; other hosts use ``udp6``.
    """
    rs.restore()
    wrapper = AceSiteWrapper(inner_site, rs, public_paths=public_paths)
    transports = ["simplesocketserver"] if _is_unicast_literal(host) else ["udp6"]
    try:
        context = await aiocoap.Context.create_server_context(wrapper, bind=(host, port), transports=transports)
    except BaseException:
        wrapper.close()
        raise
    server = LockServer(context, wrapper, rs, host, port)

    async def purge_forever() -> None:
        while True:
            await asyncio.sleep(purge_interval)
            rs.purge()

    server._purger = asyncio.get_running_loop().create_task(purge_forever(), name="ostiary token purge")
    return server


def _is_unicast_literal(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not (address.is_unspecified or address.is_multicast)
