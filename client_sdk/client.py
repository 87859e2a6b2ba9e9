"""``AceClient``: what an app uses to obtain access tokens (RFC 9200 §5.8) and talk to door locks with them over
the OSCORE profile (RFC 9203).

In a few lines::

    async with AceClient("coap://as.example/token", "phone-app", secret) as client:
        scope = AifScope.parse_spec("/lock:PUT")  # AIF (RFC 9237); a str is an RFC 6749 text scope
        response = await client.request("PUT", "coap://lock.example/lock", b"unlock", scope=scope)

:meth:`AceClient.request` does everything the OSCORE profile needs, as required:

1. **Discovery** (RFC 9200 §5.2, §5.3): without a known audience/scope for the lock, it sends the request
   *unprotected* (without payload) and reads the AS Request Creation Hints of the 4.01 (AS, audience, scope,
   cnonce). :meth:`AceClient.discover` does only this step.
2. **Token** (RFC 9200 §5.8.1): a cached token for the audience, if more than a margin of its lifetime remains
   (:class:`~client_sdk.session.RefreshPolicy`); otherwise a token request with the client credentials, the
   audience and scope, ``ace_profile`` asked for (§5.8.4.3) and the hints' ``cnonce`` (§5.3.1).
3. **Upload** (RFC 9203 §4.1): ``POST /authz-info`` unprotected with ``{1: token, 40: nonce1, 43: ID1}``; the lock
   answers 2.01 ``{42: nonce2, 44: ID2}``. With ID2 = ID1 no context is derived (§4.2).
4. **Context** (RFC 9203 §4.3): :func:`ace_core.oscore.context_parameters` with role CLIENT; the context is
   installed for the lock's origin. :meth:`AceClient.connect` does steps 1-4.
5. **Protected request** (RFC 8613). A 4.01 from the lock -- it restarted, the token was superseded or expired,
   the context is unknown -- drops the token and the context, and the request is retried **once** with a fresh
   token and context. If that fails too, :class:`~client_sdk.errors.AccessDenied` or, when the fresh context
   itself was unusable, :class:`~client_sdk.errors.ContextMismatch` (which names the likely cause).

The AS transport follows the AS URI's scheme: ``coap://`` sends the token request as an ``application/ace+cbor``
payload with the client credentials inside it; ``http(s)://`` sends the same CBOR body with the credentials in
HTTP Basic (RFC 6749 §2.3.1). Errors from the AS come back as the :class:`~ace_core.errors.OAuthError` subclass of
the RFC 9200 §5.8.3 error code, so an app can handle ``InvalidScope`` or ``InvalidClient`` specifically.

**Which AS gets the credentials.** The hints arrive in an unprotected 4.01, so anyone on the path can forge them.
The client therefore sends its secret to the AS it was configured with (``as_uri``) and ignores the AS named by
hints, unless the app opts in with ``accept_hinted_as`` (a set of AS URIs it trusts, or ``True`` for any).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlsplit

from ace_core.errors import WireFormatError
from ace_core.messages import (
    ACE_PROFILE_REQUESTED,
    AccessInformation,
    AuthzInfoResponse,
    CreationHints,
    ErrorResponse,
    TokenRequest,
)
from ace_core.registry import MEDIA_TYPE_ACE_CBOR, AceProfile, ContentFormat
from ace_core.status import Status
from client_sdk.errors import (
    AccessDenied,
    ContextMismatch,
    DiscoveryFailed,
    ResponseProtectionFailed,
    TokenRequestFailed,
    TokenUploadFailed,
    TransportTimeout,
    UntrustedAuthorizationServer,
)
from client_sdk.session import (
    CachedToken,
    Clock,
    OscoreSession,
    RefreshPolicy,
    SessionBook,
    TokenCache,
    origin_of,
)
from client_sdk.transport import CoapLike, Response

__all__ = ["AceClient", "ScopeLike", "SessionInfo", "TokenRequestFailed"]

log = logging.getLogger("client_sdk")

#: RFC 9200 §5.10.1: the default path of the authz-info endpoint.
AUTHZ_INFO_PATH = "/authz-info"
_AS_SCHEMES = ("coap", "coaps", "http", "https")


class _ScopeObject(Protocol):
    def encode_cbor_value(self) -> str | bytes: ...


#: A scope as the SDK accepts it: a text scope (RFC 6749 §3.3), AIF bytes (RFC 9237, ``application/aif+cbor``), or
#: an :class:`~ace_core.scope.AifScope` / :class:`~ace_core.scope.TextScope`.
ScopeLike = str | bytes | _ScopeObject


def _scope_value(scope: ScopeLike) -> str | bytes:
    if isinstance(scope, str | bytes):
        return scope
    return scope.encode_cbor_value()


def _check_as_uri(uri: str) -> str:
    scheme = urlsplit(uri).scheme
    if scheme not in _AS_SCHEMES:
        raise ValueError(f"unsupported AS URI scheme {scheme!r}: use coap:// or http(s)://")
    return uri


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionInfo:
    """What the app may see of an established session (no key material).

    ``expires_at`` is on the client's clock (``time.monotonic`` by default); ``seconds_left`` is relative to when
    the info was taken (and ignored by ``==``).
    """

    origin: str
    audience: str
    scope: str | bytes
    access_token: bytes = dataclasses.field(repr=False)
    expires_at: float
    seconds_left: float = dataclasses.field(compare=False)
    client_recipient_id: bytes
    server_recipient_id: bytes
    confirmed: bool


@dataclass(frozen=True, slots=True)
class _Target:
    """Where a token for an origin comes from: the AS, and what to ask it for."""

    as_uri: str
    audience: str
    scope: str | bytes


def _hints_of(response: Response) -> CreationHints | None:
    """The AS Request Creation Hints of a 4.01 (RFC 9200 §5.3), if its payload is one."""
    if response.status != Status.UNAUTHORIZED or not response.payload:
        return None
    if response.content_type not in (None, MEDIA_TYPE_ACE_CBOR):
        return None
    try:
        return CreationHints.from_cbor(response.payload)
    except WireFormatError:
        return None


def _describe(response: Response) -> str:
    text = response.status_text()
    if response.payload and response.content_type in (None, "text/plain"):
        try:
            diagnostic = response.payload.decode("utf-8")
        except UnicodeDecodeError:
            return text
        if diagnostic.isprintable() and len(diagnostic) <= 80:
            return f'{text} "{diagnostic}"'
    return text


class AceClient:
    """A client with pre-established credentials at an AS (RFC 9200 §5.8.1, client_credentials grant).

    Use it from one asyncio event loop; concurrent requests to one lock share a single connect.

    :param as_uri: the token endpoint, e.g. ``coap://as.example.org/token`` or ``https://as.example.org/token``;
        ``None`` to take it from a lock's AS Request Creation Hints (requires ``accept_hinted_as``).
    :param client_id: the client's identifier at the AS.
    :param client_secret: its secret. Kept in memory only, never in ``repr`` or error messages.
    :param timeout: bound in seconds on every single exchange (AS, discovery, upload, protected request).
    :param accept_hinted_as: which AS named by hints may receive the credentials when ``as_uri`` is ``None``:
        ``False`` (none), a collection of trusted token endpoint URIs, or ``True`` (any -- the hints are
        unauthenticated, so only for tools whose user vouches for the lock, such as ``ostiary client open``).
    :param refresh: when a cached token counts as used up (default: 10% of its lifetime, at most 60 s early).
    :param default_token_lifetime: seconds to assume when the AS sends no ``expires_in``; by default such a token is
        refused (RFC 9200 §5.10.4).
    :param authz_info_path: the locks' authz-info path (RFC 9200 §5.10.1 default ``/authz-info``).
    :param clock: monotonic seconds for the token cache (tests inject a fake).
    :param random_bytes: source of the RFC 9203 nonce1 (tests may inject a fixed one).
    :param coap: a CoAP transport (tests inject a scripted double); default :class:`~client_sdk.transport.coap.
        CoapTransport`, created on first use.
    :param interop_omit_absent_salt: **interop testing only** -- derive the Master Salt without the ``salt`` item
        when the token has none (the convention Ostiary does *not* use, see :mod:`ace_core.oscore`), to test that a
        mismatch fails loudly. Never set it in an app.
    """

    def __init__(
        self,
        as_uri: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        *,
        timeout: float = 10.0,
        accept_hinted_as: bool | Collection[str] = False,
        refresh: RefreshPolicy | None = None,
        default_token_lifetime: float | None = None,
        authz_info_path: str = AUTHZ_INFO_PATH,
        clock: Clock = time.monotonic,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
        coap: CoapLike | None = None,
        interop_omit_absent_salt: bool = False,
    ) -> None:
        if not client_id or client_secret is None:
            raise TypeError("AceClient needs a client_id and a client_secret")
        self.as_uri = None if as_uri is None else _check_as_uri(as_uri)
        self.client_id = client_id
        self._secret = client_secret
        self._timeout = timeout
        self._accept_hinted_as = accept_hinted_as
        self._authz_info_path = "/" + authz_info_path.lstrip("/")
        self._clock = clock
        self._tokens = TokenCache(clock=clock, policy=refresh, default_lifetime=default_token_lifetime)
        self._sessions = SessionBook(clock=clock, random_bytes=random_bytes, omit_absent_salt=interop_omit_absent_salt)
        self._coap: CoapLike | None = coap
        self._http: Any = None
        self._targets: dict[str, _Target] = {}
        self._hints: dict[str, CreationHints] = {}
        self._cnonces: dict[str, bytes] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"AceClient({self.as_uri!r}, client_id={self.client_id!r})"

    async def __aenter__(self) -> AceClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- transports ------------------------------------------------------------------------------------------

    def _coap_transport(self) -> CoapLike:
        if self._coap is None:
            from client_sdk.transport.coap import CoapTransport

            self._coap = CoapTransport(timeout=self._timeout)
        return self._coap

    def _http_transport(self) -> Any:
        if self._http is None:
            from client_sdk.transport.http import HttpTransport

            self._http = HttpTransport(timeout=self._timeout)
        return self._http

    # --- RFC 9200 §5.8: token requests ----------------------------------------------------------------------

    async def request_token(
        self,
        audience: str,
        scope: ScopeLike,
        *,
        ace_profile: AceProfile | None = None,
        req_cnf: Mapping[int, Any] | None = None,
        cnonce: bytes | None = None,
        as_uri: str | None = None,
    ) -> AccessInformation:
        """Ask the AS for an access token (RFC 9200 §5.8.1) and return the access information (§5.8.2).

        Without ``ace_profile`` the AS is asked to name the profile it chose (§5.8.4.3). The token is not cached;
        :meth:`connect` and :meth:`request` manage tokens themselves.

        :param as_uri: this AS instead of the configured one.
        :raises OAuthError: the AS refused (the subclass names the RFC 9200 error code).
        :raises TokenRequestFailed: any other failure response.
        :raises TransportTimeout: no answer within the timeout.
        """
        uri = _check_as_uri(as_uri) if as_uri is not None else self.as_uri
        if uri is None:
            raise ValueError("no AS URI: pass as_uri to AceClient or to this call")
        request = TokenRequest(
            audience=audience,
            scope=_scope_value(scope),
            ace_profile=ACE_PROFILE_REQUESTED if ace_profile is None else ace_profile,
            req_cnf=req_cnf,
            cnonce=cnonce,
        )
        if urlsplit(uri).scheme.startswith("coap"):
            with_credentials = dataclasses.replace(
                request, client_id=self.client_id, client_secret=self._secret.encode()
            )
            response = await self._coap_transport().request(
                "POST", uri, with_credentials.to_cbor(), content_format=ContentFormat.ACE_CBOR
            )
        else:
            response = await self._http_transport().post(
                uri,
                request.to_cbor(),
                content_type=MEDIA_TYPE_ACE_CBOR,
                basic_auth=(self.client_id, self._secret),
            )
        if response.ok:
            try:
                return AccessInformation.from_cbor(response.payload)
            except WireFormatError as exc:
                raise TokenRequestFailed(response.status, f"unreadable token response: {exc}") from exc
        try:
            error = ErrorResponse.from_cbor(response.payload)
        except WireFormatError:
            raise TokenRequestFailed(response.status, response.payload[:200].decode(errors="replace")) from None
        refusal = error.to_exception()
        if refusal is None:
            raise TokenRequestFailed(response.status, f"unknown error code {error.error}")
        raise refusal

    # --- RFC 9200 §5.2/§5.3: discovery ----------------------------------------------------------------------

    async def discover(self, rs_uri: str, method: str = "GET", path: str | None = None) -> CreationHints:
        """Send an unprotected request (without payload) and return the AS Request Creation Hints of the lock's
        4.01 (RFC 9200 §5.2, §5.3): ``as_uri``, ``audience``, ``scope``, ``cnonce``.

        The hints are remembered for the origin: a later :meth:`connect`/:meth:`request` uses their audience and
        scope (unless told otherwise) and sends their cnonce in the token request (§5.3.1).

        :param rs_uri: a protected resource of the lock, or its origin when ``path`` is given.
        :raises DiscoveryFailed: the lock answered anything but a 4.01 with hints.
        """
        origin = origin_of(rs_uri)
        uri = rs_uri if path is None else origin + "/" + path.lstrip("/")
        response = await self._coap_transport().request(method, uri)
        if response.ok:
            raise DiscoveryFailed(
                f"{method} {uri} answered {_describe(response)} without a token: the resource is not protected"
            )
        hints = _hints_of(response)
        if hints is None:
            raise DiscoveryFailed(
                f"{method} {uri} answered {_describe(response)}, not 4.01 with AS Request Creation Hints "
                "(application/ace+cbor, RFC 9200 §5.3)"
            )
        self._hints[origin] = hints
        if hints.cnonce is not None:
            self._cnonces[origin] = hints.cnonce
        return hints

    # --- RFC 9203 §4: token upload and context derivation -------------------------------------------------

    async def connect(
        self,
        rs_uri: str,
        *,
        audience: str | None = None,
        scope: ScopeLike | None = None,
        as_uri: str | None = None,
    ) -> SessionInfo:
        """Make sure an OSCORE context with the lock at ``rs_uri``'s origin exists and its token is usable.

        Reuses the current session if its token is not about to expire (and audience/scope, when given, match).
        Otherwise: a cached or new token, the ``/authz-info`` upload and the context derivation (RFC 9203 §4.1-4.3).
        Without ``audience``/``scope`` (given now, at an earlier connect, or by earlier hints) the lock is asked
        for hints first, with a GET of ``rs_uri`` -- so pass the URI of a protected resource.

        :raises DiscoveryFailed, UntrustedAuthorizationServer: no usable target for the token request.
        :raises OAuthError, TokenRequestFailed, TokenUnusable: the token request failed.
        :raises TokenUploadFailed: the lock refused the token or its answer was unusable.
        """
        session = await self._ensure_session(
            rs_uri, "GET", audience=audience, scope=None if scope is None else _scope_value(scope), as_uri=as_uri
        )
        return self._info(session)

    async def request(
        self,
        method: str,
        uri: str,
        payload: bytes = b"",
        *,
        content_format: int | None = None,
        audience: str | None = None,
        scope: ScopeLike | None = None,
        as_uri: str | None = None,
    ) -> Response:
        """Send an OSCORE-protected request to a lock (RFC 8613 §8.1, RFC 9203 §4.3), connecting first if needed
        (see :meth:`connect`; discovery uses ``method`` on ``uri``).

        A 4.01 or any unprotected answer makes the client drop the session and its token and retry **once**
        with a fresh token and context (the lock may have restarted, or superseded or expired the token).

        :returns: the lock's (verified) response, whatever its code -- 4.03/4.05 say the token does not cover
            the resource/method (RFC 9200 §5.10.2).
        :raises AccessDenied: 4.01 again after the retry.
        :raises ContextMismatch: the freshly derived context was unusable for the lock (see its docstring).
        :raises TransportTimeout: no answer in time on a context that had worked.
        """
        origin = origin_of(uri)
        scope_value = None if scope is None else _scope_value(scope)
        for attempt in (1, 2):
            session = await self._ensure_session(uri, method, audience=audience, scope=scope_value, as_uri=as_uri)
            try:
                response = await self._coap_transport().protected_request(
                    method, uri, payload, content_format=content_format
                )
            except TransportTimeout:
                if session.confirmed:
                    raise
                self._invalidate(session)
                raise ContextMismatch(
                    f"{origin} did not answer the first OSCORE request of a freshly derived security context within "
                    f"{self._timeout:g} s. A lock that silently drops requests it cannot decrypt behaves like this: "
                    "the two ends likely derived different keys (RFC 9203 §4.3 Master Salt convention for an absent "
                    "salt, or OSCORE algorithms / ID Context)"
                ) from None
            except ResponseProtectionFailed as exc:
                self._invalidate(session)
                raise ContextMismatch(
                    f"{origin}'s OSCORE response did not verify with our context ({exc}); the two ends derived "
                    "different keys (likely the RFC 9203 §4.3 Master Salt convention for an absent salt)"
                ) from None
            if response.protected and response.status != Status.UNAUTHORIZED:
                session.confirmed = True
                return response
            hints = _hints_of(response)
            self._invalidate(session)
            if hints is not None:
                self._hints[origin] = hints
                if hints.cnonce is not None:
                    self._cnonces[origin] = hints.cnonce
            if attempt == 1:
                log.info(
                    "%s answered %s %s; retrying once with a fresh token and security context",
                    origin,
                    _describe(response),
                    "(protected)" if response.protected else "(unprotected)",
                )
                continue
            if not response.protected and not session.confirmed:
                raise ContextMismatch(
                    f"{origin} answered the first OSCORE request of a freshly derived security context unprotected "
                    f"with {_describe(response)} (also after one retry with a new token): it cannot use the context "
                    "it has just agreed to. Likely cause: the two ends derive different keys -- the RFC 9203 §4.3 "
                    "Master Salt convention for an absent salt, or OSCORE algorithms / ID Context",
                    status=response.status,
                )
            raise AccessDenied(
                f"{origin} answered {_describe(response)} to {method} {urlsplit(uri).path or '/'} "
                "also with a fresh token and security context",
                status=response.status,
                hints=hints,
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def session_info(self, rs_uri: str) -> SessionInfo | None:
        """The session with ``rs_uri``'s origin, if one is established (no key material)."""
        session = self._sessions.get(origin_of(rs_uri))
        return None if session is None else self._info(session)

    def forget(self, rs_uri: str) -> None:
        """Drop the session with ``rs_uri``'s origin (its token stays cached for other uploads)."""
        session = self._sessions.get(origin_of(rs_uri))
        if session is not None:
            self._invalidate(session, drop_token=False)

    async def close(self) -> None:
        """Release the transports and forget every session and token."""
        for origin in self._sessions.origins():
            session = self._sessions.get(origin)
            if session is not None:
                self._invalidate(session)
        self._tokens.clear()
        self._cnonces.clear()
        for transport in (self._coap, self._http):
            if transport is not None:
                await transport.close()
        self._coap = self._http = None

    # --- internals -------------------------------------------------------------------------------------------

    def _info(self, session: OscoreSession) -> SessionInfo:
        return SessionInfo(
            origin=session.origin,
            audience=session.token.audience,
            scope=session.token.scope,
            access_token=session.token.info.access_token,
            expires_at=session.token.expires_at,
            seconds_left=session.token.expires_at - self._clock(),
            client_recipient_id=session.client_recipient_id,
            server_recipient_id=session.server_recipient_id,
            confirmed=session.confirmed,
        )

    def _invalidate(self, session: OscoreSession, *, drop_token: bool = True) -> None:
        """Forget a session that failed (and, by default, its token): RFC 9203 §6 lets the client discard a
        context after 4.01s; a fresh token gives the lock no reason to refuse it as superseded or stale."""
        if self._sessions.drop(session.origin, session) is not None and self._coap is not None:
            self._coap.remove_oscore(session.origin)
        if drop_token:
            self._tokens.discard(session.token.audience, session.token)

    def _lock(self, origin: str) -> asyncio.Lock:
        lock = self._locks.get(origin)
        if lock is None:
            lock = self._locks[origin] = asyncio.Lock()
        return lock

    async def _ensure_session(
        self,
        uri: str,
        method: str,
        *,
        audience: str | None,
        scope: str | bytes | None,
        as_uri: str | None,
    ) -> OscoreSession:
        origin = origin_of(uri)
        async with self._lock(origin):
            session = self._sessions.get(origin)
            if (
                session is not None
                and self._tokens.usable(session.token)
                and audience in (None, session.token.audience)
                and scope in (None, session.token.scope)
            ):
                return session
            if session is not None:
                self._invalidate(session, drop_token=False)
            target = await self._target(origin, uri, method, audience, scope, as_uri)
            self._targets[origin] = target
            token = self._tokens.get(target.audience, target.scope)
            return await self._upload(origin, target, token)

    async def _target(
        self,
        origin: str,
        uri: str,
        method: str,
        audience: str | None,
        scope: str | bytes | None,
        as_uri: str | None,
    ) -> _Target:
        """AS, audience and scope for ``origin``: explicit values, then the last target, then the lock's hints
        (asked for now if needed)."""
        known = self._targets.get(origin)
        if known is not None:
            audience = audience or known.audience
            scope = scope if scope is not None else known.scope
        hints = self._hints.get(origin)
        if audience is None or scope is None or (as_uri is None and self.as_uri is None and known is None):
            if hints is None:
                hints = await self.discover(uri, method)
            audience = audience or hints.audience
            scope = scope if scope is not None else hints.scope
        if audience is None:
            raise DiscoveryFailed(f"{origin}'s hints name no audience and none was given")
        if scope is None:
            raise DiscoveryFailed(f"{origin}'s hints name no scope and none was given")
        chosen = as_uri or self.as_uri or (known.as_uri if known is not None else None)
        if chosen is None:
            hinted = hints.as_uri if hints is not None else None
            if hinted is None:
                raise DiscoveryFailed(f"{origin}'s hints name no AS and this client has no as_uri")
            trusted = self._accept_hinted_as
            if trusted is False or (trusted is not True and hinted not in trusted):
                raise UntrustedAuthorizationServer(
                    f"{origin} names the AS {hinted} in unauthenticated hints; this client does not send its "
                    "credentials there (configure as_uri, or accept_hinted_as with the AS URIs you trust)"
                )
            chosen = hinted
        elif hints is not None and hints.as_uri not in (None, chosen):
            log.debug("%s's hints name AS %s; using the configured %s", origin, hints.as_uri, chosen)
        return _Target(as_uri=_check_as_uri(chosen), audience=audience, scope=scope)

    async def _fetch_token(self, origin: str, target: _Target) -> CachedToken:
        cnonce = self._cnonces.pop(origin, None)
        requested_at = self._clock()
        info = await self.request_token(target.audience, target.scope, cnonce=cnonce, as_uri=target.as_uri)
        log.debug("new token for %s from %s (expires_in %s)", target.audience, target.as_uri, info.expires_in)
        return self._tokens.put(target.audience, target.scope, info, requested_at=requested_at)

    async def _upload(self, origin: str, target: _Target, token: CachedToken | None) -> OscoreSession:
        """RFC 9203 §4.1/§4.2: POST the token with nonce1 and ID1; derive the context from nonce2 and ID2. A
        cached token refused with 4.01 is replaced by a fresh one once (it may have been superseded or lack the
        lock's cnonce, RFC 9200 §5.3.1)."""
        coap = self._coap_transport()
        for attempt in (1, 2):
            fresh = token is None
            if token is None:
                token = await self._fetch_token(origin, target)
            pending = self._sessions.begin(origin, token)
            try:
                response = await coap.request(
                    "POST",
                    origin + self._authz_info_path,
                    pending.request().to_cbor(),
                    content_format=ContentFormat.ACE_CBOR,
                )
            except BaseException:
                self._sessions.abandon(pending)
                raise
            if response.status == Status.CREATED:
                try:
                    answer = AuthzInfoResponse.from_cbor(response.payload)
                    session = self._sessions.complete(pending, answer)
                except (WireFormatError, ValueError) as exc:
                    self._sessions.abandon(pending)
                    raise TokenUploadFailed(
                        f"{origin}{self._authz_info_path} answered 2.01 but no security context can be derived: {exc}",
                        status=response.status,
                    ) from None
                coap.install_oscore(origin, session.params)
                return session
            self._sessions.abandon(pending)
            hints = _hints_of(response)
            if hints is not None and hints.cnonce is not None:
                self._cnonces[origin] = hints.cnonce
            if response.status == Status.UNAUTHORIZED and not fresh and attempt == 1:
                log.info("%s refused the cached token (%s); requesting a fresh one", origin, _describe(response))
                self._tokens.discard(token.audience, token)
                token = None
                continue
            reasons: dict[int, str] = {
                Status.UNAUTHORIZED: "the token is not (or no longer) valid for it, e.g. expired, superseded, from "
                "an AS it does not trust, or without its cnonce",
                Status.FORBIDDEN: f"the token's audience {target.audience!r} is not this lock",
                Status.BAD_REQUEST: "the token or its parameters are not usable (scope not recognised, missing "
                "RFC 9203 parameters)",
            }
            reason = reasons.get(response.status, "unexpected answer")
            raise TokenUploadFailed(
                f"{origin}{self._authz_info_path} refused the token with {_describe(response)}: {reason}",
                status=response.status,
                hints=hints,
            )
        raise AssertionError("unreachable")  # pragma: no cover
