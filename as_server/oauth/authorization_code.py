"""The authorization code grant with PKCE, as Authlib grant classes (RFC 6749 §4.1, RFC 7636, RFC 8252).

Authlib's protocol core (``authlib.oauth2.rfc6749``, no web framework) validates the authorization request
(``response_type``, client, redirect URI) and the code exchange (client, grant type allowed, code, redirect URI
identical, RFC 6749 §4.1.3); :class:`S256CodeChallenge` is its ``CodeChallenge`` extension (RFC 7636) restricted to
``S256``. What is ours, through :class:`~as_server.oauth.flows.OAuthFlows` (``server.ostiary_flows``):

* where codes live (hashed, :class:`~as_server.storage.base.AuthorizationCodeStore`) and what they are bound to:
  client, redirect URI as sent, user, audience, scope, PKCE challenge (:meth:`save_authorization_code`);
* the audience and scope of the authorization request, checked against the client's audiences and the audience's
  scope format before the user sees the page (``audience`` is the ACE parameter of RFC 9200 §5.8.1, accepted at the
  authorization endpoint as a request parameter, RFC 6749 §3.1 "MAY ... include additional parameters");
* what the exchange returns: not Authlib's bearer token but the ACE Access Information with a PoP CWT whose
  ``sub`` is the user, issued by the token endpoint's shared issuance, and a refresh token
  (:meth:`~as_server.oauth.flows.OAuthFlows.exchange`).

**PKCE** (:class:`S256CodeChallenge`). ``S256`` only: RFC 7636 §4.2 lets servers refuse ``plain`` ("Clients are
permitted to use plain only if they cannot support S256"), and every platform can hash. A challenge without
``code_challenge_method`` means ``plain`` (RFC 7636 §4.3) and is refused too. Public clients must send a challenge
(RFC 8252 §8.1, RFC 9700 §2.1.1) and, at the token endpoint, its verifier (Authlib's ``required=True``); a
confidential client may use PKCE, and once its authorization request had a challenge the verifier is required. A
wrong verifier is ``invalid_grant`` (RFC 7636 §4.6); the code stays usable by the legitimate client until it
expires, since a failed verification proves nothing about who holds it. The comparison is constant-time.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any, Final

from authlib.oauth2.rfc6749 import AuthorizationCodeMixin
from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidRequestError, InvalidScopeError, OAuth2Error
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant
from authlib.oauth2.rfc7636 import CodeChallenge, create_s256_code_challenge

from ace_core.errors import InvalidScope, OAuthError
from as_server.models import AuthorizationCode
from as_server.oauth.clients import AUTH_NONE, AuthlibClient

if TYPE_CHECKING:
    from as_server.oauth.flows import OAuthFlows

__all__ = ["S256", "OstiaryAuthorizationCodeGrant", "S256CodeChallenge", "StoredCode"]

#: The one PKCE method accepted (RFC 7636 §4.2).
S256: Final = "S256"


def _compare_s256(code_verifier: str, code_challenge: str) -> bool:
    """RFC 7636 §4.6: ``BASE64URL(SHA256(ASCII(code_verifier))) == code_challenge``, in constant time."""
    return hmac.compare_digest(create_s256_code_challenge(code_verifier).encode(), code_challenge.encode())


class S256CodeChallenge(CodeChallenge):  # type: ignore[misc]  # Authlib ships no type information
    """Authlib's PKCE extension with ``S256`` only, required for public clients (see the module documentation)."""

    DEFAULT_CODE_CHALLENGE_METHOD = S256  # only consulted for stored codes, which always name S256
    SUPPORTED_CODE_CHALLENGE_METHOD = [S256]
    CODE_CHALLENGE_METHODS = {S256: _compare_s256}

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        challenge, method = data.get("code_challenge"), data.get("code_challenge_method")
        client = grant.request.client
        if not challenge and not method:
            if self.required and isinstance(client, AuthlibClient) and client.client.public:
                raise InvalidRequestError("A public client must use PKCE with S256 (RFC 7636).")
            return
        if challenge and not method:
            raise InvalidRequestError("code_challenge_method must be S256 (plain is not accepted).")
        super().validate_code_challenge(grant, redirect_uri)


class StoredCode(AuthorizationCodeMixin):  # type: ignore[misc]
    """A stored :class:`~as_server.models.AuthorizationCode` as Authlib's ``AuthorizationCodeMixin``."""

    def __init__(self, record: AuthorizationCode, code_hash: bytes) -> None:
        self.record = record
        self.code_hash = code_hash
        self.code_challenge = record.code_challenge
        self.code_challenge_method = record.code_challenge_method

    def get_redirect_uri(self) -> str:
        return self.record.redirect_uri

    def get_scope(self) -> str:
        return self.record.scope or ""


def to_authlib_error(exc: OAuthError, redirect_uri: str | None = None) -> OAuth2Error:
    """An ACE error raised while validating an authorization request, as the Authlib error that redirects it."""
    cls = InvalidScopeError if isinstance(exc, InvalidScope) else InvalidRequestError
    return cls(description=exc.description, redirect_uri=redirect_uri)


class OstiaryAuthorizationCodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    """Authlib's authorization code grant with Ostiary's storage, targets and tokens (see the module documentation).

    The client is authenticated before Authlib sees the token request (by
    :func:`~as_server.oauth.clients.authenticate_client`, with the rate limit of the other grants); the auth
    methods registered on the server only hand that client over (:meth:`OAuthFlows.authlib_client_auth`).
    """

    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", AUTH_NONE]

    @property
    def flows(self) -> OAuthFlows:
        flows: OAuthFlows = self.server.ostiary_flows
        return flows

    # -- authorization endpoint (RFC 6749 §4.1.1 - §4.1.2) -------------------------------------------------------

    def validate_authorization_request(self) -> str:
        """Authlib's checks, then the audience and scope (redirected as ``invalid_request``/``invalid_scope``)."""
        redirect_uri: str = super().validate_authorization_request()
        data = self.request.payload.data
        try:
            self.request.ostiary_target = self.flows.authorization_target(
                self.request.client.client, data.get("audience"), data.get("scope")
            )
        except OAuthError as exc:
            raise to_authlib_error(exc, redirect_uri) from None
        return redirect_uri

    @staticmethod
    def validate_authorization_redirect_uri(request: Any, client: AuthlibClient) -> str:
        """RFC 6749 §3.1.2.3 with fixed error texts (Authlib's quotes the URI, which may hold any character)."""
        redirect_uri: str | None = request.payload.redirect_uri
        if redirect_uri:
            if not client.check_redirect_uri(redirect_uri):
                raise InvalidRequestError("The redirect_uri is not registered for this client.")
            return redirect_uri
        default: str | None = client.get_default_redirect_uri()
        if not default:
            raise InvalidRequestError("Missing 'redirect_uri' in request.")
        return default

    def generate_authorization_code(self) -> str:
        code, self.request.ostiary_code_hash = self.flows.new_code()
        return code

    def save_authorization_code(self, code: str, request: Any) -> None:
        data = request.payload.data
        self.flows.save_code(
            code_hash=request.ostiary_code_hash,
            client=request.client.client,
            redirect_uri=data.get("redirect_uri") or "",
            user=request.user,
            target=request.ostiary_target,
            code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
        )

    # -- token endpoint (RFC 6749 §4.1.3 - §4.1.4) ---------------------------------------------------------------

    def query_authorization_code(self, code: str, client: AuthlibClient) -> StoredCode | None:
        found = self.flows.find_code(code, client.client)
        return None if found is None else StoredCode(*found)

    def authenticate_user(self, authorization_code: StoredCode) -> Any:
        return self.flows.code_user(authorization_code.record)

    def create_token_response(self) -> tuple[int, Any, list[tuple[str, str]]]:
        """The ACE Access Information instead of a bearer token (:meth:`OAuthFlows.exchange`)."""
        code: StoredCode = self.request.authorization_code
        user = self.authenticate_user(code)
        if user is None:
            raise InvalidGrantError("Invalid 'code' in request.")
        info = self.flows.exchange(self.request.ostiary_exchange, code.record, code.code_hash)
        return 200, info, self.TOKEN_RESPONSE_HEADER

    def delete_authorization_code(self, authorization_code: StoredCode) -> None:  # pragma: no cover
        """Codes are marked used, not deleted: a replay must still find them (RFC 6749 §4.1.2)."""
