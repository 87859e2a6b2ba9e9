"""Refresh tokens: RFC 6749 §6 at the ACE token endpoint (RFC 9200 §5.8.1), on both transports.

RFC 9200 §5.8.1: "the client MAY use a refresh token ... to request an access token with the same audience and
the same PoP key". A refresh request is a token request with ``grant_type`` ``refresh_token`` (Table 4: 3) and
``refresh_token`` (Table 5: 37), in a form or JSON over HTTP or in ACE CBOR over CoAP; the client authenticates as
for its other grants (:func:`as_server.oauth.clients.authenticate_client`: public clients by ``client_id``).

What a refresh does, in order (:meth:`RefreshTokenGrant.handle`):

1. The client is authenticated and must be allowed the ``refresh_token`` grant (``unauthorized_client``).
2. The refresh token must exist, be this client's, be active and unexpired, in a family that has not reached its
   absolute end (``refresh_family_lifetime``): else ``invalid_grant``. A token that was already **used** is a replay
   -- either it leaked and someone else is using it, or the legitimate client is; the AS cannot tell which, so it
   revokes the whole family (every refresh token, and every access token issued with them, which introspection
   then reports inactive; RFC 9700 §4.14.2 "refresh token rotation") and audits it
   (``refresh_token.family_revoked``).
3. The user must still exist and be enabled (``invalid_grant``), and the **policy is decided again** with the
   user and their groups as they are now (:meth:`~as_server.endpoints.token.TokenEndpoint.issue`): a revoked
   grant, a rule that no longer applies, a time window that has closed all refuse the refresh with
   ``invalid_grant`` (RFC 6749 §5.2: "revoked"). The refresh token stays usable: a window opens again. No access
   request is filed on a refresh: it keeps what was granted and asks for nothing new.
4. The scope is the family's (what was granted when it began), or a narrower one the request names (RFC 6749 §6:
   "MUST NOT include any scope not originally granted"; anything else is ``invalid_scope``); the audience cannot
   change (``invalid_request`` if the request names another).
5. The new access token is bound to the same PoP key (:class:`~as_server.endpoints.token.Rebind`): by ``kid``
   while the previous access token is active (the RS holds the key or OSCORE security context: the token updates
   its access rights, RFC 9203 §3.1), by value from the family's first token once it is not (expired or revoked:
   the RS has dropped the key; the response then carries ``cnf`` as when the key was generated).
6. The refresh token is **rotated**: it is marked used and a new one issued (same family, same absolute end), in one
   transaction (:meth:`~as_server.storage.base.RefreshTokenStore.rotate_refresh_token`). If another request used it
   between steps 2 and 6, that is a replay too: the access token just issued and the family are revoked.

Refresh tokens are 256-bit random values, stored as SHA-256 hashes (:mod:`as_server.oauth.opaque`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from ace_core.errors import InvalidGrant, InvalidRequest, InvalidScope, UnauthorizedClient, WireFormatError
from ace_core.messages import AccessInformation, TokenRequest
from ace_core.registry import GrantType
from ace_core.scope import AifScope, TextScope, decode_scope
from as_server.auth import ClientCredentials
from as_server.config import Settings
from as_server.endpoints.token import IssueRequest, Rebind, TokenEndpoint
from as_server.identity import IdentityProvider
from as_server.models import Client, IssuedToken, RefreshToken, RefreshTokenStatus
from as_server.oauth.clients import authenticate_client
from as_server.oauth.opaque import new_opaque, opaque_hash
from as_server.storage.base import Storage

__all__ = ["RefreshTokenGrant", "first_refresh_token"]

log = logging.getLogger("ostiary.as.refresh")

#: What every refused refresh token says (no detail about which check failed goes on the wire).
INVALID_REFRESH = "invalid refresh token"


def first_refresh_token(
    settings: Settings, *, family_id: str, record: IssuedToken, now: int
) -> tuple[bytes, RefreshToken]:
    """The first refresh token of a family that begins with the access token ``record`` (a code exchange): the
    value to hand out and what is stored."""
    value, token_hash = new_opaque()
    family_end = now + settings.refresh_family_lifetime
    assert record.pop_kid is not None  # every issued token is bound to a PoP key
    token = RefreshToken(
        token_hash=token_hash,
        family_id=family_id,
        client_id=record.client_id,
        subject=record.subject,
        audience=record.audience,
        scope=record.scope,
        pop_kid=record.pop_kid,
        key_cti=record.cti,
        access_cti=record.cti,
        created_at=now,
        expires_at=min(now + settings.refresh_token_lifetime, family_end),
        family_expires_at=family_end,
    )
    return value, token


def _scope_of(value: str | bytes, *, aif: bool) -> TextScope | AifScope:
    return decode_scope(value, aif=aif)


class RefreshTokenGrant:
    """The ``refresh_token`` grant (see the module documentation); a :class:`~as_server.endpoints.token.GrantHandler`.

    :param settings: refresh token lifetimes.
    :param storage: clients, refresh tokens, issued tokens.
    :param endpoint: the token endpoint whose shared issuance it uses.
    :param identity: the users behind the tokens.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        storage: Storage,
        endpoint: TokenEndpoint,
        identity: IdentityProvider,
        random_opaque: Callable[[], tuple[bytes, bytes]] = new_opaque,
    ) -> None:
        self._settings = settings
        self._storage = storage
        self._endpoint = endpoint
        self._identity = identity
        self._new_opaque = random_opaque

    def handle(
        self, request: TokenRequest, credentials: ClientCredentials | None, *, peer: str, now: int
    ) -> AccessInformation:
        """Exchange a refresh token for a new access token and a new refresh token (RFC 6749 §6).

        :raises OAuthError: ``invalid_client``, ``unauthorized_client``, ``invalid_request``, ``invalid_grant``,
            ``invalid_scope``, or what the shared issuance raises.
        """
        client = authenticate_client(self._endpoint, self._storage, request, credentials, peer=peer, now=now)
        if GrantType.REFRESH_TOKEN not in client.grant_types:
            raise UnauthorizedClient("client may not use refresh_token")
        if request.refresh_token is None:
            raise InvalidRequest("refresh_token missing")
        token_hash = opaque_hash(request.refresh_token)
        current = self._valid_token(token_hash, client, now)
        if request.audience is not None and request.audience != current.audience:
            raise InvalidRequest("a refresh keeps the audience", detail=f"asked for {request.audience!r}")
        scope = self._scope(request, current)
        subject_groups: frozenset[str] = frozenset()
        if current.subject is not None:
            user = self._identity.user(current.subject)
            if user is None or not user.enabled:
                raise InvalidGrant(INVALID_REFRESH, detail=f"user {current.subject!r} is disabled or gone")
            subject_groups = self._identity.groups_of(current.subject)
        previous = self._storage.get_by_cti(current.access_cti)
        holder = self._storage.get_by_cti(current.key_cti)
        if previous is None or holder is None:
            raise InvalidGrant(INVALID_REFRESH, detail="the family's access tokens are not recorded")
        access = IssueRequest(
            client=client,
            audience=current.audience,
            scope=scope,
            subject=current.subject,
            subject_groups=subject_groups,
            rebind=Rebind(previous=previous, holder=holder),
            ask_consent=False,
        )
        try:
            issued = self._endpoint.issue(request, access, peer=peer, now=now)
        except InvalidScope as exc:
            # The policy, decided again, no longer grants it (a revoked grant, a closed window): RFC 6749 §5.2.
            raise InvalidGrant("access no longer granted", detail=f"policy on refresh: {exc.detail}") from exc
        value, new_hash = self._new_opaque()
        successor = dataclasses.replace(
            current,
            token_hash=new_hash,
            pop_kid=issued.record.pop_kid or current.pop_kid,
            access_cti=issued.record.cti,
            created_at=now,
            expires_at=min(now + self._settings.refresh_token_lifetime, current.family_expires_at),
            status=RefreshTokenStatus.ACTIVE,
            used_at=None,
        )
        if not self._storage.rotate_refresh_token(token_hash, successor, now=now):
            # Used by another request since step 2: a replay after all (see the module documentation).
            self._storage.revoke(issued.record.cti)
            self._revoke_family(current, client, now, "a refresh token was used twice at the same time")
            raise InvalidGrant(INVALID_REFRESH, detail="refresh token used concurrently")
        log.info(
            "refreshed: family=%s client_id=%r subject=%r cti=%s",
            current.family_id,
            client.client_id,
            current.subject,
            issued.record.cti.hex(),
        )
        return dataclasses.replace(issued.info, refresh_token=value)

    def _valid_token(self, token_hash: bytes, client: Client, now: int) -> RefreshToken:
        """Step 2 of the module documentation. :raises InvalidGrant:"""
        current = self._storage.get_refresh_token(token_hash)
        if current is None or current.client_id != client.client_id:
            raise InvalidGrant(INVALID_REFRESH, detail="unknown refresh token, or another client's")
        if current.status == RefreshTokenStatus.USED:
            count = self._revoke_family(current, client, now, "a used refresh token was presented again")
            log.warning(
                "refresh token replayed: family %s of client_id=%r revoked (%d tokens)",
                current.family_id,
                client.client_id,
                count,
            )
            raise InvalidGrant(INVALID_REFRESH, detail="refresh token already used: family revoked")
        if current.status != RefreshTokenStatus.ACTIVE:
            raise InvalidGrant(INVALID_REFRESH, detail="refresh token revoked")
        if current.expires_at <= now or current.family_expires_at <= now:
            raise InvalidGrant(INVALID_REFRESH, detail="refresh token expired")
        return current

    def _revoke_family(self, current: RefreshToken, client: Client, now: int, reason: str) -> int:
        return self._storage.revoke_refresh_family(
            current.family_id, actor=f"client:{client.client_id}", now=now, reason=reason
        )

    @staticmethod
    def _scope(request: TokenRequest, current: RefreshToken) -> str | bytes:
        """The family's scope, or the narrower one the request names (RFC 6749 §6). :raises InvalidScope:"""
        if request.scope is None:
            return current.scope
        aif = isinstance(current.scope, bytes)
        try:
            asked = _scope_of(request.scope, aif=aif)
            ceiling = _scope_of(current.scope, aif=aif)
        except WireFormatError as exc:
            raise InvalidScope("malformed scope", detail=exc.detail) from exc
        if isinstance(asked, AifScope) and isinstance(ceiling, AifScope):
            narrower = asked.issubset(ceiling)
        elif isinstance(asked, TextScope) and isinstance(ceiling, TextScope):
            narrower = asked.issubset(ceiling)
        else:  # pragma: no cover - both are parsed with the same aif flag
            narrower = False
        if not narrower:
            raise InvalidScope("scope exceeds what was granted", detail="refresh asked for more than the family has")
        return request.scope
