"""Clients of the user-facing grants: public apps and confidential clients (RFC 6749 §2.1, §2.3; RFC 8252 §8.4).

* A **confidential** client authenticates with its secret at ``/token``, exactly as for ``client_credentials``
  (HTTP Basic, ``client_secret_post``, or ``client_id``/``client_secret`` in the ACE CBOR payload), with the same
  failure rate limit (:meth:`~as_server.endpoints.token.TokenEndpoint.authenticate_client`).
* A **public** client (:attr:`~as_server.models.Client.public`: a native app, which cannot keep a secret, RFC 8252
  §8.4) only names itself with ``client_id``; what it presents then proves the rest: the PKCE verifier of its code
  (RFC 7636), or a refresh token issued to it (rotated on every use, RFC 9700 §4.14.2). It cannot use
  ``client_credentials``: its empty secret hash matches no secret.

:class:`AuthlibClient` adapts a :class:`~as_server.models.Client` to Authlib's ``ClientMixin`` for the
authorization endpoint and the code exchange (:mod:`as_server.oauth.authorization_code`).
"""

from __future__ import annotations

from typing import Final

from authlib.oauth2.rfc6749 import ClientMixin

from ace_core.errors import InvalidClient
from ace_core.messages import TokenRequest
from ace_core.registry import GrantType
from as_server.auth import METHOD_BASIC, ClientCredentials
from as_server.endpoints.token import TokenEndpoint
from as_server.models import Client
from as_server.oauth import redirect_uris
from as_server.storage.base import ClientStore

__all__ = ["AUTH_NONE", "AuthlibClient", "authenticate_client", "auth_method"]

#: RFC 7591 §2 name of "no client authentication" (a public client).
AUTH_NONE: Final = "none"
#: RFC 6749 §4.1.1 ``response_type`` of the authorization code grant.
RESPONSE_TYPE_CODE: Final = "code"
_GRANT_BY_NAME: Final = {g.name.lower(): g for g in GrantType}


def authenticate_client(
    endpoint: TokenEndpoint,
    clients: ClientStore,
    request: TokenRequest,
    credentials: ClientCredentials | None,
    *,
    peer: str,
    now: int,
) -> Client:
    """The client of a token request for a user-facing grant: a public client by its ``client_id``, any other by
    its secret (see the module documentation).

    :raises InvalidClient: unknown or disabled client, a confidential client without its secret, wrong secret.
    :raises TooManyRequests: the failure rate limit is reached.
    """
    if credentials is None and request.client_secret is None and request.client_id is not None:
        client = clients.get_client(request.client_id)
        if client is None or not client.public:
            # An unknown id and a confidential client without a secret look the same (no probing of client ids).
            raise InvalidClient("client authentication required", detail="no secret and not a public client")
        if not client.enabled:
            raise InvalidClient("client authentication failed", detail="client disabled")
        return client
    return endpoint.authenticate_client(request, credentials, peer=peer, now=now)


def auth_method(client: Client, credentials: ClientCredentials | None) -> str:
    """The RFC 7591 name of how ``client`` authenticated (``none`` for a public client)."""
    if client.public:
        return AUTH_NONE
    return (
        credentials.method if credentials is not None and credentials.method == METHOD_BASIC else "client_secret_post"
    )


class AuthlibClient(ClientMixin):  # type: ignore[misc]  # Authlib ships no type information
    """A :class:`~as_server.models.Client` as Authlib's ``ClientMixin`` (RFC 6749 §2, RFC 7591 §2 metadata)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def get_client_id(self) -> str:
        return self.client.client_id

    def get_default_redirect_uri(self) -> str | None:
        """The only registered redirect URI, when there is exactly one and it needs no port (RFC 6749 §3.1.2.3)."""
        uris = self.client.redirect_uris
        if len(uris) == 1 and not redirect_uris.is_loopback(uris[0]):
            return uris[0]
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        """Scopes are checked against the audience and decided by the policy (:mod:`as_server.oauth.flows`)."""
        return scope or ""

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        """RFC 6749 §3.1.2.3 exact match, any port for loopback URIs (RFC 8252 §7.3)."""
        return redirect_uris.find_match(self.client.redirect_uris, redirect_uri) is not None

    def check_client_secret(self, client_secret: str) -> bool:  # pragma: no cover - clients authenticate before
        return False

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        """Public clients use ``none`` (only), confidential clients their secret (RFC 6749 §3.2.1)."""
        if endpoint != "token":
            return True
        return (method == AUTH_NONE) == self.client.public

    def check_response_type(self, response_type: str) -> bool:
        return (
            response_type == RESPONSE_TYPE_CODE
            and self.client.enabled
            and GrantType.AUTHORIZATION_CODE in self.client.grant_types
        )

    def check_grant_type(self, grant_type: str) -> bool:
        grant = _GRANT_BY_NAME.get(grant_type)
        return grant is not None and grant in self.client.grant_types
