"""The composition root of the user-facing flows: sign-in, authorization codes, code exchange, refresh tokens.

:class:`OAuthFlows` is built by :class:`as_server.app.AuthorizationServer` and used by the HTTP transport
(:mod:`as_server.transport.authorize`), which owns the Authlib ``AuthorizationServer`` (Flask integration) and the
sign-in page. It registers two grant handlers with the token endpoint:

* ``refresh_token`` -> :class:`~as_server.oauth.refresh.RefreshTokenGrant`;
* ``authorization_code`` -> :meth:`OAuthFlows.exchange_code`, which runs Authlib's grant (a framework-free
  ``authlib.oauth2.rfc6749.AuthorizationServer``, :class:`_TokenSideAuthlib`) on the parameters of the decoded token
  request.

Both therefore work wherever the token endpoint does: an HTTP form (RFC 6749 §4.1.3, what apps send), JSON or ACE
CBOR over HTTP, and ACE CBOR over CoAP. RFC 9200 registers no CBOR abbreviation for ``code_verifier``, so in CBOR it
travels under its name as a text key (kept by :class:`~ace_core.messages.TokenRequest` in ``extra``); ``code`` and
``refresh_token`` are byte strings (Table 5: 29, 37), base64url text in forms and JSON. Refusals go through the
token endpoint's logging and ``token.refused`` audit like any other.

**The code exchange** (:meth:`exchange`, after Authlib's checks and PKCE): the code is redeemed with one
conditional write (only one request can win it); the token is issued by the token endpoint's shared issuance
(:meth:`~as_server.endpoints.token.TokenEndpoint.issue`) for the code's audience and scope with the user as
``subject`` (the ``sub`` claim) and their groups, so the policy decides exactly as for any request -- PoP key from
``req_cnf`` or generated, profile, lifetime; then the exchange is completed with the family's first refresh token
(when the client may use the ``refresh_token`` grant). A code presented again after it was used is ``invalid_grant``
and revokes every token issued from it (RFC 6749 §4.1.2 "SHOULD revoke"), also when the two requests race
(:class:`~as_server.storage.base.AuthorizationCodeStore`). A ``req_cnf`` by ``kid`` is accepted as at
``client_credentials`` (update of access rights); such a family's tokens can only be refreshed while the RS holds
the key, since no token of the family carries the key by value.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from authlib.oauth2.rfc6749 import AuthorizationServer as AuthlibServer
from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload

from ace_core.errors import (
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    OAuthError,
    UnauthorizedClient,
    UnsupportedGrantType,
    WireFormatError,
)
from ace_core.keys import b64url_decode, b64url_encode
from ace_core.messages import AccessInformation, TokenRequest
from ace_core.registry import GrantType
from ace_core.scope import AifScope, TextScope, decode_scope
from as_server.audit import AuditLog, describe_scope
from as_server.auth import ClientCredentials, FailureRateLimiter
from as_server.config import Settings
from as_server.endpoints.token import UNKNOWN_AUDIENCE, IssueRequest, TokenEndpoint
from as_server.identity import IdentityProvider
from as_server.models import AuditEntry, AuthorizationCode, Client, ScopeFormat, User
from as_server.oauth.authorization_code import OstiaryAuthorizationCodeGrant, S256CodeChallenge
from as_server.oauth.clients import AuthlibClient, auth_method, authenticate_client
from as_server.oauth.opaque import new_family_id, new_opaque, opaque_hash
from as_server.oauth.refresh import RefreshTokenGrant, first_refresh_token
from as_server.oauth.signin import CsrfTokens, Sealer, SignIn
from as_server.storage.base import Storage

__all__ = ["CodeExchange", "OAuthFlows", "Target"]

log = logging.getLogger("ostiary.as.oauth")

#: Authlib error codes -> the ACE error classes the transports render (RFC 6749 §5.2).
_ERRORS: Final[Mapping[str, type[OAuthError]]] = {
    "invalid_request": InvalidRequest,
    "invalid_client": InvalidClient,
    "invalid_grant": InvalidGrant,
    "unauthorized_client": UnauthorizedClient,
    "unsupported_grant_type": UnsupportedGrantType,
    "invalid_scope": InvalidScope,
}
#: The nominal URI of token requests handed to Authlib (RFC 6761 §6.4 ``.invalid``: it names no real host).
_TOKEN_SIDE_URI: Final = "https://token-endpoint.invalid/token"


@dataclass(frozen=True, slots=True)
class Target:
    """What an authorization request asks for, checked: the audience and the scope as sent (text form).

    :param rights: the scope for people, one ``(resource, rights)`` pair per line of the sign-in page.
    """

    audience: str
    scope: str
    parsed: TextScope | AifScope
    rights: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class CodeExchange:
    """What the transport and the pre-authentication know about a code exchange, handed through Authlib."""

    request: TokenRequest
    client: Client
    auth_method: str
    peer: str
    now: int


class CodeExchangeRequest(OAuth2Request):  # type: ignore[misc]  # Authlib ships no type information
    """An Authlib token request built from a decoded token request (:func:`_exchange_fields`; never a secret: the
    client is authenticated before Authlib runs)."""

    def __init__(self, uri: str, fields: Mapping[str, str], exchange: CodeExchange):
        super().__init__("POST", uri, headers={})
        self._fields = dict(fields)
        self.payload = BasicOAuth2Payload(self._fields)
        self.ostiary_exchange = exchange

    @property
    def form(self) -> Mapping[str, str]:
        return self._fields

    @property
    def args(self) -> Mapping[str, str]:
        return {}


class _TokenSideAuthlib(AuthlibServer):  # type: ignore[misc]  # Authlib ships no type information
    """Authlib's framework-free authorization server, for the code exchange at the token endpoint (requests are
    built from decoded token requests, :class:`CodeExchangeRequest`; responses are ACE messages, never Authlib's)."""

    def __init__(self, flows: OAuthFlows) -> None:
        super().__init__()
        self._flows = flows

    def query_client(self, client_id: str) -> AuthlibClient | None:
        return self._flows.query_client(client_id)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """Authlib's signals are not used."""


def _exchange_fields(request: TokenRequest) -> dict[str, str]:
    """The RFC 6749 §4.1.3 parameters of a decoded token request, as Authlib reads them."""
    fields = {"grant_type": "authorization_code"}
    if request.code is not None:
        fields["code"] = b64url_encode(request.code)
    if request.redirect_uri is not None:
        fields["redirect_uri"] = request.redirect_uri
    if request.client_id is not None:
        fields["client_id"] = request.client_id
    verifier = request.extra.get("code_verifier")
    if verifier is not None:
        if not isinstance(verifier, str):
            raise InvalidRequest("code_verifier must be text")
        fields["code_verifier"] = verifier
    return fields


def _rights(scope: TextScope | AifScope) -> tuple[tuple[str, str], ...]:
    if isinstance(scope, AifScope):
        lines = []
        for path in scope.paths():
            spec = AifScope({path: scope.methods_for(path)}).to_spec()
            lines.append((path, spec.partition(":")[2].replace(",", ", ")))
        return tuple(lines)
    return tuple((token, "") for token in scope.tokens)


class OAuthFlows:
    """Sign-in, authorization codes, code exchange and refresh for one AS (see the module documentation).

    :param settings: lifetimes and limits (``authorization_code_lifetime``, ``refresh_*``, ``signin_*``).
    :param storage: clients, resource servers, codes, refresh tokens, issued tokens.
    :param endpoint: the token endpoint: its shared issuance, and where the grant handlers are registered.
    :param identity: users and groups.
    :param sealer: seals CSRF tokens (the master key, shared by every process of the deployment).
    :param audit: where sign-in failures are queued.
    :param clock: seconds since the epoch.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        storage: Storage,
        endpoint: TokenEndpoint,
        identity: IdentityProvider,
        sealer: Sealer,
        audit: AuditLog | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._storage = storage
        self._endpoint = endpoint
        self._identity = identity
        self._clock = clock
        self.csrf = CsrfTokens(sealer, lifetime=settings.signin_page_lifetime)
        limiter = FailureRateLimiter(
            limit=settings.signin_failure_limit, window=settings.auth_failure_window, key_name="user"
        )
        self.signin = SignIn(identity, limiter, audit)
        self.refresh_grant = RefreshTokenGrant(settings=settings, storage=storage, endpoint=endpoint, identity=identity)
        endpoint.register_grant(GrantType.REFRESH_TOKEN, self.refresh_grant)
        self._authlib = _TokenSideAuthlib(self)
        self.configure(self._authlib)
        endpoint.register_grant(GrantType.AUTHORIZATION_CODE, self)

    def now(self) -> int:
        """The current time (seconds), from the injected clock."""
        return int(self._clock())

    # -- Authlib wiring ------------------------------------------------------------------------------------------

    def configure(self, server: AuthlibServer) -> None:
        """Register the grant, PKCE and the client hand-over on an Authlib authorization server."""
        server.ostiary_flows = self
        server.register_grant(OstiaryAuthorizationCodeGrant, [S256CodeChallenge(required=True)])
        for method in OstiaryAuthorizationCodeGrant.TOKEN_ENDPOINT_AUTH_METHODS:
            server.register_client_auth_method(method, self._client_auth(method))

    @staticmethod
    def _client_auth(method: str) -> Callable[[Any, Any], AuthlibClient | None]:
        """Authlib auth method ``method``: the client authenticated before Authlib ran, if it used ``method``."""

        def authenticate(query_client: Any, request: Any) -> AuthlibClient | None:
            exchange: CodeExchange | None = getattr(request, "ostiary_exchange", None)
            if exchange is None or exchange.auth_method != method:
                return None
            return AuthlibClient(exchange.client)

        return authenticate

    def query_client(self, client_id: str) -> AuthlibClient | None:
        """Authlib's ``query_client``: the enabled client ``client_id``."""
        client = self._storage.get_client(client_id) if isinstance(client_id, str) else None
        return AuthlibClient(client) if client is not None and client.enabled else None

    # -- authorization endpoint ----------------------------------------------------------------------------------

    def authorization_target(self, client: Client, audience: str | None, scope: str | None) -> Target:
        """The audience and scope of an authorization request, checked as the token endpoint will check them.

        :raises InvalidRequest: unknown, disabled or not allowed audience (one answer for all, as at /token).
        :raises InvalidScope: scope missing without a default, malformed, or empty.
        """
        name = audience or client.default_audience
        rs = self._storage.get_resource_server(name) if name and name in client.audiences else None
        if rs is None or not rs.enabled:
            raise InvalidRequest(UNKNOWN_AUDIENCE)
        aif = rs.scope_format == ScopeFormat.AIF
        raw: str | None = scope
        if raw is None and client.default_scope is not None:
            default = client.default_scope
            raw = AifScope.from_cbor(default).to_json_text() if isinstance(default, bytes) else default
        if not raw:
            raise InvalidScope("scope missing")
        try:
            parsed = decode_scope(raw, aif=aif, max_size=self.settings.max_payload)
        except WireFormatError:
            raise InvalidScope("malformed scope") from None
        if parsed.is_empty:
            raise InvalidScope("empty scope")
        return Target(audience=rs.audience, scope=raw, parsed=parsed, rights=_rights(parsed))

    def new_code(self) -> tuple[str, bytes]:
        """A new authorization code (base64url text for the redirect) and its hash."""
        value, code_hash = new_opaque()
        return b64url_encode(value), code_hash

    def save_code(
        self,
        *,
        code_hash: bytes,
        client: Client,
        redirect_uri: str,
        user: User,
        target: Target,
        code_challenge: str | None,
        code_challenge_method: str | None,
    ) -> None:
        """Store a code bound to everything it stands for, and audit the authorization (RFC 6749 §4.1.2)."""
        now = self.now()
        self._storage.add_authorization_code(
            AuthorizationCode(
                code_hash=code_hash,
                client_id=client.client_id,
                redirect_uri=redirect_uri,
                subject=user.name,
                audience=target.audience,
                scope=target.scope,
                code_challenge=code_challenge,
                code_challenge_method=code_challenge_method if code_challenge else None,
                created_at=now,
                expires_at=now + self.settings.authorization_code_lifetime,
            )
        )
        self._storage.append_audit(
            [
                AuditEntry(
                    at=now,
                    action="authorization.granted",
                    actor=f"user:{user.name}",
                    client_id=client.client_id,
                    subject=user.name,
                    audience=target.audience,
                    scope=describe_scope(target.parsed),
                    detail=f"authorization code for {redirect_uri or 'the registered redirect URI'}",
                )
            ]
        )
        log.info(
            "authorization code issued: client_id=%r user=%r audience=%r", client.client_id, user.name, target.audience
        )

    # -- token endpoint: the code exchange -----------------------------------------------------------------------

    def handle(
        self, request: TokenRequest, credentials: ClientCredentials | None, *, peer: str, now: int
    ) -> AccessInformation:
        """The token endpoint's ``authorization_code`` handler (:class:`~as_server.endpoints.token.GrantHandler`)."""
        return self.exchange_code(request, credentials, peer=peer, now=now)

    def exchange_code(
        self, request: TokenRequest, credentials: ClientCredentials | None, *, peer: str, now: int
    ) -> AccessInformation:
        """``grant_type=authorization_code``: authenticate the client, let Authlib check the code, the redirect URI
        and the PKCE verifier, and issue (:meth:`exchange`).

        :raises OAuthError: Authlib's errors translated, or the issuance's.
        """
        client = authenticate_client(self._endpoint, self._storage, request, credentials, peer=peer, now=now)
        exchange = CodeExchange(request, client, auth_method(client, credentials), peer, now)
        # Authlib wants the request URI only to check for TLS. This request may have come over CoAP, and the token
        # endpoint leaves transport security to the deployment for every grant; /authorize, where the user types a
        # password, checks the configured public URL (as_server.transport.authorize).
        uri = _TOKEN_SIDE_URI
        try:
            oauth_request = CodeExchangeRequest(uri, _exchange_fields(request), exchange)
            grant = self._authlib.get_token_grant(oauth_request)
            grant.validate_token_request()
            _status, info, _headers = grant.create_token_response()
        except OAuth2Error as exc:
            raise _ace_error(exc) from None
        assert isinstance(info, AccessInformation)
        return info

    def find_code(self, code: str, client: Client) -> tuple[AuthorizationCode, bytes] | None:
        """The unused, unexpired code ``code`` of ``client``; a used one is a replay (:meth:`_replayed`)."""
        try:
            code_hash = opaque_hash(b64url_decode(code))
        except WireFormatError:
            return None
        found = self._storage.get_authorization_code(code_hash)
        if found is None or found.client_id != client.client_id:
            return None
        now = self.now()
        if found.used_at is not None:
            self._replayed(code_hash, client, now)
            return None
        if found.expires_at <= now:
            return None
        return found, code_hash

    def code_user(self, code: AuthorizationCode) -> User | None:
        """The enabled user the code was issued to."""
        user = self._identity.user(code.subject)
        return user if user is not None and user.enabled else None

    def _replayed(self, code_hash: bytes, client: Client, now: int) -> None:
        count = self._storage.authorization_code_reused(code_hash, actor=f"client:{client.client_id}", now=now)
        log.warning("authorization code replayed by client_id=%r: %d tokens revoked", client.client_id, count)

    def exchange(self, exchange: CodeExchange, code: AuthorizationCode, code_hash: bytes) -> AccessInformation:
        """Redeem, issue, complete (see the module documentation). :raises OAuthError:"""
        request, client, now = exchange.request, exchange.client, exchange.now
        if request.audience is not None and request.audience != code.audience:
            raise InvalidRequest("the audience was fixed by the authorization request")
        if request.scope is not None:
            raise InvalidRequest("the scope was fixed by the authorization request")
        family_id = new_family_id()
        redeemed = self._storage.redeem_authorization_code(code_hash, family_id=family_id, now=now)
        if redeemed is None:  # used (or expired) since Authlib looked it up: another request won it
            current = self._storage.get_authorization_code(code_hash)
            if current is not None and current.used_at is not None:
                self._replayed(code_hash, client, now)
            raise InvalidGrant("Invalid 'code' in request.", detail="code redeemed concurrently or expired")
        access = IssueRequest(
            client=client,
            audience=code.audience,
            scope=code.scope,
            subject=code.subject,
            subject_groups=self._identity.groups_of(code.subject),
        )
        issued = self._endpoint.issue(request, access, peer=exchange.peer, now=now)
        value: bytes | None = None
        refresh = None
        if GrantType.REFRESH_TOKEN in client.grant_types:
            value, refresh = first_refresh_token(self.settings, family_id=family_id, record=issued.record, now=now)
        if not self._storage.complete_code_exchange(code_hash, access_cti=issued.record.cti, refresh=refresh):
            self._storage.revoke(issued.record.cti)
            raise InvalidGrant("Invalid 'code' in request.", detail="code replayed while it was exchanged")
        log.info(
            "code exchanged: client_id=%r user=%r family=%s cti=%s",
            client.client_id,
            code.subject,
            family_id,
            issued.record.cti.hex(),
        )
        return dataclasses.replace(issued.info, refresh_token=value)


def _ace_error(exc: OAuth2Error) -> OAuthError:
    """An Authlib error as the ACE error class of its code (unknown codes: ``invalid_request``)."""
    cls = _ERRORS.get(str(exc.error), InvalidRequest)
    description = exc.description or None
    try:
        return cls(description, detail=f"authlib: {exc.error}: {exc.description}")
    except ValueError:  # a description outside the RFC 6749 §5.2 set
        return cls(None, detail=f"authlib: {exc.error}: {exc.description}")
