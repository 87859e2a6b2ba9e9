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

**Audit log** (logger ``ostiary.lock``; PoP id and ``cti`` of the token, never key material):

* refused requests and tokens: always, at INFO (no or unknown security context, token gone, 4.01/4.03/4.05 of the
  guard) or WARNING (replays, decryption failures, refused uploads);
* granted requests (``authorized PUT /lock from 192.0.2.7 (pop_id=... cti=...)``) and accepted tokens: at DEBUG,
  or at INFO when the configuration sets ``audit_granted = true``
  (:attr:`~resource_server.config.RsConfig.audit_granted`). One emitted log line costs about as much CPU as the
  whole OSCORE request it records, so a lock that must keep up with its clients does not write one per request by
  default; the door lock example logs each lock/unlock at INFO itself (``door unlocked by pop_id=... cti=...``), so
  who opened the door is in the log at the default level either way.

Log arguments (the client's address, the token's description) are only formatted for lines that are emitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import ipaddress
import logging
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterable
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
from ace_core.oscore import DEFAULT_AEAD, DEFAULT_HKDF, OscoreContextParameters
from ace_core.registry import MEDIA_TYPE_ACE_CBOR, MEDIA_TYPE_CWT, CoseAlgorithm
from ace_core.status import Status
from resource_server.errors import RateLimited
from resource_server.guard import GuardDecision
from resource_server.oscore_keys import derive_keys
from resource_server.resources import Request, Resource, Response
from resource_server.server import ResourceServer
from resource_server.token_store import OscoreAssociation, Removal, StoredToken, TokenStore

__all__ = [
    "ACE_CBOR_FORMAT",
    "AUTHZ_INFO_PATH",
    "AceSiteWrapper",
    "IndexedOscoreCredentials",
    "LockServer",
    "MemoryOscoreContext",
    "ensure_udp_port_free",
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
#: Client addresses whose text form is remembered (:func:`_peer`).
PEER_CACHE_SIZE: Final = 1024

_AEAD_BY_ID: Final = {alg.value: alg for alg in oscore.algorithms.values()}
_HASH_BY_HKDF: Final[dict[int, Any]] = {
    CoseAlgorithm.HMAC_256_256: oscore.hashfunctions["sha256"],
    CoseAlgorithm.HMAC_384_384: oscore.hashfunctions["sha384"],
    CoseAlgorithm.HMAC_512_512: oscore.hashfunctions["sha512"],
}


# --------------------------------------------------------------------------------------------------------------
# security contexts
# --------------------------------------------------------------------------------------------------------------


def _ignore_strike_out() -> None:
    """The replay window's strike-out callback: nothing to persist (RFC 8613 B.1.2 recovery uses Echo instead).
    One function shared by every window, rather than a closure per context."""


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

    A lock holds one context per stored token, so the defaults (the RFC 8613 §3.2 algorithms, no ID Context, no
    Echo, no callbacks) are class attributes, which an instance overrides only where it differs.
    """

    alg_aead = _AEAD_BY_ID[DEFAULT_AEAD]
    hashfun = _HASH_BY_HKDF[DEFAULT_HKDF]
    id_context: bytes | None = None
    echo_recovery: bytes | None = None
    #: The PoP key identifier of the token this context belongs to (RFC 9203: the Input Material ``id``).
    pop_id: bytes | None = None
    _on_sequence: Callable[[int], None] | None = None
    _claims: Callable[[], list[Any]] | None = None

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
        self._set_algorithms(params.aead_alg, params.hkdf_alg)
        if params.id_context is not None:
            self.id_context = params.id_context
        self.sender_id = params.sender_id
        self.recipient_id = params.recipient_id
        if derive:
            self.derive_keys(params.master_salt, params.master_secret)
        else:
            self.sender_key, self.recipient_key, self.common_iv = derive_keys(params)
        self._set_sequence_state(sender_sequence_number, echo_recovery, replay_window_size)
        if on_sequence is not None:
            self._on_sequence = on_sequence
        if claims is not None:
            self._claims = claims
        if pop_id is not None:
            self.pop_id = pop_id

    def _set_algorithms(self, aead_alg: int, hkdf_alg: int) -> None:
        if aead_alg == DEFAULT_AEAD and hkdf_alg == DEFAULT_HKDF:
            return
        try:
            self.alg_aead = _AEAD_BY_ID[aead_alg]
            self.hashfun = _HASH_BY_HKDF[hkdf_alg]
        except KeyError:
            raise ValueError(f"aiocoap cannot use alg={aead_alg} hkdf={hkdf_alg}") from None

    def _set_sequence_state(self, sender_sequence_number: int, echo_recovery: bytes | None, window: int) -> None:
        self.sender_sequence_number = sender_sequence_number
        self.recipient_replay_window = oscore.ReplayWindow(window, _ignore_strike_out)
        if echo_recovery is None:
            self.recipient_replay_window.initialize_empty()
        else:
            self.echo_recovery = echo_recovery

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


class TokenOscoreContext(MemoryOscoreContext):
    """The security context of a token the lock holds, built from its
    :class:`~resource_server.token_store.OscoreAssociation` (whose derived keys it shares).

    It authenticates the token the store holds for its PoP key (after an update of access rights, RFC 9203 §4.1,
    that is the new token) and reserves Sender Sequence Numbers through the store (RFC 8613 B.1.1), without a
    closure per context.

    :param echo_recovery: as for :class:`MemoryOscoreContext` (bytes for a context that may have been used before).
    """

    pop_id: bytes

    def __init__(
        self,
        association: OscoreAssociation,
        store: TokenStore,
        pop_id: bytes,
        *,
        echo_recovery: bytes | None = None,
        replay_window_size: int = REPLAY_WINDOW_SIZE,
    ) -> None:
        # Not MemoryOscoreContext.__init__, which derives keys from OscoreContextParameters: these were derived
        # once, at the upload, and are the association's own bytes objects.
        self._set_algorithms(association.aead_alg, association.hkdf_alg)
        if association.id_context is not None:
            self.id_context = association.id_context
        self.sender_id = association.client_recipient_id
        self.recipient_id = association.server_recipient_id
        self.sender_key = association.sender_key
        self.recipient_key = association.recipient_key
        self.common_iv = association.common_iv
        self._set_sequence_state(association.sender_sequence_reserved, echo_recovery, replay_window_size)
        self.association = association
        self.pop_id = pop_id
        self._store = store

    @property
    def authenticated_claims(self) -> list[Any]:
        """The token held for this context's PoP key (none once it is gone)."""
        token = self._store.get(self.pop_id)
        return [] if token is None else [token]

    def post_seqnoincrease(self) -> None:
        """RFC 8613 B.1.1: reserve (and persist) before the number is used."""
        self._store.reserve_sequence_numbers(self.association, self.sender_sequence_number)


class IndexedOscoreCredentials(CredentialsMap):  # type: ignore[misc]
    """Server credentials whose ``find_oscore`` is an O(1) lookup by ``(kid, kid context)`` (aiocoap's default
    scans every entry). A context without an ID Context is indexed by its kid alone (no tuple per context)."""

    def __init__(self) -> None:
        super().__init__()
        self._by_kid: dict[bytes | tuple[bytes, bytes], MemoryOscoreContext] = {}

    def __bool__(self) -> bool:
        return True  # an empty map must not be replaced by aiocoap (library-notes §0.4)

    def __len__(self) -> int:
        return len(self._by_kid)

    @staticmethod
    def _key(kid: bytes, kid_context: bytes | None) -> bytes | tuple[bytes, bytes]:
        return kid if kid_context is None else (kid, kid_context)

    def add(self, context: MemoryOscoreContext) -> None:
        """Index ``context`` by its Recipient ID and ID Context."""
        self._by_kid[self._key(context.recipient_id, context.id_context)] = context

    def discard(self, context: MemoryOscoreContext) -> None:
        """Forget ``context`` (if it is the one indexed under its key)."""
        key = self._key(context.recipient_id, context.id_context)
        if self._by_kid.get(key) is context:
            del self._by_kid[key]

    def find_oscore(self, unprotected: dict[int, Any]) -> MemoryOscoreContext:
        """The context for a request's unprotected header; ``KeyError`` if none."""
        kid = unprotected.get(oscore.COSE_KID)
        if not isinstance(kid, bytes):
            raise KeyError(kid)
        kid_context = unprotected.get(oscore.COSE_KID_CONTEXT)
        return self._by_kid[kid if kid_context is None or not isinstance(kid_context, bytes) else (kid, kid_context)]

    def find_all_used_contextless_oscore_kid(self) -> set[bytes]:
        """Recipient IDs in use without an ID Context (aiocoap asks this when it allocates EDHOC identifiers)."""
        return {key for key in self._by_kid if isinstance(key, bytes)}


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
        self._installed: dict[bytes, TokenOscoreContext] = {}  # pop_id -> the context of the token held for it
        #: Log granted requests at INFO rather than DEBUG (module docstring); from the configuration's
        #: ``audit_granted``, and may be changed while serving.
        self.audit_granted = rs.config.audit_granted
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
        if log.isEnabledFor(logging.INFO):
            status = decision.status.coap_dotted if decision.status is not None else "?"
            log.info(
                "refused %s %s from %s: %s (unprotected request)", request.code, _path(path), _peer(request), status
            )
        pipe.add_response(_refusal(decision), is_last=True)

    # -- protected requests ----------------------------------------------------------------------------------

    async def _render_protected(self, pipe: Any) -> None:
        # Per-request work only: the client's address and the token's description are formatted only for a log
        # line that is emitted (granted requests log at DEBUG unless audit_granted; see the module docstring).
        request = pipe.request
        confirmable = request.mtype == aiocoap.CON
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
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "refused OSCORE request from %s: 4.01 (no security context for kid %s)",
                    _peer(request),
                    _kid(header),
                )
            if confirmable:
                pipe.add_response(_refusal(self._unknown_context()), is_last=True)
            return
        pop_id = context.pop_id
        token = None
        if pop_id is not None and self._installed.get(pop_id) is context:
            token = self.rs.token_for(pop_id)
        if token is None:
            # The token expired or was superseded/evicted: its context must not be used (RFC 9203 §4.3).
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "refused OSCORE request from %s: 4.01 (the token of context %s is gone)",
                    _peer(request),
                    _kid(header),
                )
            if confirmable:
                pipe.add_response(_refusal(self._unknown_context()), is_last=True)
            return
        try:
            inner, request_id = context.unprotect(request)
        except oscore.ReplayErrorWithEcho as exc:
            # RFC 8613 B.1.2: a restored context learns its replay window from a request returning this Echo.
            log.info(
                "OSCORE Echo challenge to %s (%s): replay window recovery after restart",
                _peer(request),
                token.describe(),
            )
            pipe.add_response(exc.to_message(), is_last=True)
            return
        except oscore.ReplayError:
            log.warning("refused OSCORE request from %s: 4.01 replay detected (%s)", _peer(request), token.describe())
            if confirmable:
                message = aiocoap.Message(code=Code.UNAUTHORIZED, max_age=0, payload=b"Replay detected")
                pipe.add_response(message, is_last=True)
            return
        except oscore.DecodeError:
            log.warning("refused OSCORE request from %s: 4.02 undecodable OSCORE data", _peer(request))
            if confirmable:
                pipe.add_response(aiocoap.Message(code=Code.BAD_OPTION), is_last=True)
            return
        except oscore.ProtectionInvalid:
            log.warning(
                "refused OSCORE request from %s: 4.00 decryption failed (%s); if its OSCORE_Input_Material has no "
                "salt, the client may omit the absent salt from the Master Salt instead of encoding it as h'' "
                "(RFC 9203 §4.3, see ace_core.oscore) and so derive other keys",
                _peer(request),
                token.describe(),
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
            local = _path(path)
            decision = self.rs.check(int(inner.code), local, token)
            if not decision.allowed:
                if log.isEnabledFor(logging.INFO):
                    log.info(
                        "refused %s %s from %s: %s (%s)",
                        inner.code,
                        local,
                        _peer(request),
                        decision.status.coap_dotted if decision.status else "",
                        decision.reason,
                    )
                message = _refusal(decision)
            else:
                level = logging.INFO if self.audit_granted else logging.DEBUG
                if log.isEnabledFor(level):
                    log.log(
                        level,
                        "authorized %s %s from %s (%s)",
                        inner.code,
                        local,
                        _peer(request),
                        token.describe(),
                    )
                await self._render_inner(pipe, inner, response_context, request_id)
                return
        protected, _ = response_context.protect(message, request_id)
        pipe.add_response(protected, is_last=True)

    async def _render_inner(self, pipe: Any, inner: aiocoap.Message, context: Any, request_id: Any) -> None:
        """Render an allowed request with the inner site and protect every response, as ``OscoreSiteWrapper`` does,
        but awaiting the inner site here instead of in a task of its own feeding a queue (the task, the queue and
        the task's name, a formatted request, cost as much as the guard). An observation keeps this coroutine
        waiting in the inner resource; its notifications are protected as they come, and the loss of interest
        cancels it (aiocoap cancels the task that renders the outer request), as the pipe protocol intends.
        """
        inner_pipe = aiocoap.pipe.Pipe(inner, log)

        def forward(event: Any) -> bool:
            if event.exception is not None:
                message, is_last = _error_response(event.exception), True
            elif event.message is None:
                return False  # the end of interest, nothing to send
            else:
                message, is_last = event.message, event.is_last
            if not is_last:
                message.opt.observe = 0
            protected, _ = context.protect(message, request_id)
            if message.opt.observe is not None:
                protected.opt.observe = context.sender_sequence_number & 0xFFFFFFFF
            pipe.add_response(protected, is_last=is_last)
            return not is_last

        inner_pipe.on_event(forward)
        try:
            await self._inner.render_to_pipe(inner_pipe)
        except Exception as exc:  # noqa: BLE001 - becomes the protected error response (_error_response)
            inner_pipe.add_exception(exc)

    # -- contexts --------------------------------------------------------------------------------------------

    def install(self, token: StoredToken) -> MemoryOscoreContext:
        """Install (or replace) the security context of ``token``, just derived by a successful upload."""
        return self._install(token, fresh=True)

    def _install(self, token: StoredToken, *, fresh: bool) -> TokenOscoreContext:
        association = token.association
        assert association is not None
        previous = self._installed.pop(token.pop_id, None)
        if previous is not None:
            self.credentials.discard(previous)
        context = TokenOscoreContext(
            association,
            self.rs.store,
            token.pop_id,
            echo_recovery=None if fresh and not association.restored else secrets.token_bytes(ECHO_LENGTH),
        )
        self._installed[token.pop_id] = context
        self.credentials.add(context)
        return context

    def _on_removal(self, removal: Removal) -> None:
        if removal.keeps_context:
            return
        token = removal.token
        installed = self._installed.get(token.pop_id)
        if installed is not None and installed.association is token.association:
            del self._installed[token.pop_id]
            self.credentials.discard(installed)
            if log.isEnabledFor(logging.DEBUG):  # a full store drops one on every upload
                log.debug("dropped the security context of %s (%s)", token.describe(), removal.reason)

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
        if request.code == Code.POST and block1 is None and request.opt.block2 is None:
            # The usual upload: one datagram. Nothing to reassemble, and the answer (at most the few bytes of
            # nonce2 and ID2) fits any block size, so aiocoap's blockwise bookkeeping (a cache key per request,
            # RFC 7959) is skipped; it is as much work as the rest of the transport's part of an upload.
            message = self._post(request, None)
            no_response = request.opt.no_response
            if no_response is not None:  # as resource.Resource.render does (_post never sets one)
                message.opt.no_response = no_response
            if len(message.payload) > request.remote.maximum_payload_size:
                message = await self._block2.extract_or_insert(request, _returning(message))
            pipe.add_response(message, is_last=True)
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
            fmt = result.content_format
            message.opt.content_format = ACE_CBOR_FORMAT if fmt == ACE_CBOR_FORMAT else ContentFormat(fmt)
        return message


def _error_response(exc: BaseException) -> aiocoap.Message:
    """The answer to a resource that raised (what ``aiocoap.pipe.error_to_message`` makes of it): a renderable error
    becomes its message (e.g. 4.04 from the site), anything else 5.00, logged with its traceback."""
    if isinstance(exc, coap_error.RenderableError):
        try:
            message: aiocoap.Message | None = exc.to_message()
        except Exception:  # noqa: BLE001 - as aiocoap: a renderable error that cannot render is a 5.00
            log.exception("rendering %r failed", exc)
            message = None
        if message is not None:
            log.info("resource raised a renderable error (%r), responding accordingly", exc)
            return message
    else:
        log.error("resource raised %r; answering 5.00", exc, exc_info=exc)
    return aiocoap.Message(code=Code.INTERNAL_SERVER_ERROR)


def _returning(message: aiocoap.Message) -> Callable[[], Awaitable[aiocoap.Message]]:
    async def build() -> aiocoap.Message:
        return message

    return build


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
        hostinfo = request.remote.hostinfo
    except AttributeError:
        return ""
    return _address_of(hostinfo) if isinstance(hostinfo, str) else str(hostinfo)


@functools.lru_cache(maxsize=PEER_CACHE_SIZE)
def _address_of(hostinfo: str) -> str:
    # Cached: every token upload needs its peer (rate limiting), and parsing the address costs more than a lookup.
    try:
        host, _port = hostportsplit(hostinfo)
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return hostinfo
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
    ensure_udp_port_free(host, port)
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


def ensure_udp_port_free(host: str, port: int) -> None:
    """Raise :class:`OSError` (``EADDRINUSE``) if another socket holds UDP ``host:port`` (port 0 passes).

    aiocoap binds its server sockets with ``SO_REUSEPORT``, so a lock on a taken port would start without an error
    and the kernel would spread the datagrams over both servers by source address: a client's token upload could
    reach the lock and its OSCORE requests the other server. A probe socket that does not share fails to bind
    instead. (``as_server.transport.udp`` does the same for the AS; the packages do not import each other.)
    """
    if port == 0:
        return
    try:
        family, _, _, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror:
        return  # the real bind reports it
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # as aiocoap's udp6 binds
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                message = f"UDP port {port} on {host or 'every address'} is already in use by another server"
                raise OSError(errno.EADDRINUSE, message) from None


def _is_unicast_literal(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not (address.is_unspecified or address.is_multicast)
