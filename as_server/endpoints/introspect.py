"""The introspection endpoint: RFC 9200 §5.9 (RFC 7662), for resource servers.

A resource server authenticates as client ``<its audience>`` with its introspection secret
(:attr:`~as_server.models.ResourceServer.introspection_secret_hash`), through the transport (HTTP Basic); the
same failure rate limit as at the token endpoint applies. Outcomes:

====================================================  =======================================================
situation                                             result
====================================================  =======================================================
no credentials, unknown caller, wrong secret          :class:`~ace_core.errors.InvalidClient` (4.01, §5.9.3)
too many failed authentications                       :class:`~as_server.errors.TooManyRequests` (4.29)
RS without introspection secret, RS disabled, or a    :class:`~as_server.errors.Forbidden` (4.03, no
client (not an RS) with correct credentials           payload, §5.9.3)
``client_id`` in the payload naming someone else      :class:`~ace_core.errors.InvalidRequest` (4.00)
token unknown, expired, revoked, or issued for        ``IntrospectionResponse(active=False)`` (2.01; not an
another audience                                      error, §5.9.2)
otherwise                                             ``active`` with ``iss``, ``aud``, ``exp`` (``exi``
                                                      instead for an ``exi`` token), ``iat``, ``cti``,
                                                      ``scope``, ``cnf``, ``client_id``, ``ace_profile``,
                                                      ``token_type`` PoP
====================================================  =======================================================

The token is looked up by its RFC 9770 §4 hash, i.e. by exactly the bytes the AS issued; nothing is decrypted.
A token issued for another audience is reported inactive rather than refused, so an RS learns nothing about
other audiences' tokens (RFC 7662 §4). ``cnf`` is REQUIRED for PoP tokens (RFC 9201 §4, §5) and may hold the
OSCORE master secret or PSK meant for this RS, so the transport must protect responses (OSCORE/DTLS/TLS).
``scope`` is returned as stored, in CBOR form (bytes for AIF); an HTTP transport converts it with
:func:`as_server.tokens.json_scope`.

**Tokens with ``exi``** (resource servers without a clock, RFC 9200 §5.10.3). Their lifetime starts when the RS
first receives them, which the AS cannot know, so the response carries ``exi`` (§5.9.2 lists it among the
response parameters) and no ``exp``. Their record's ``exp`` is the AS's bound on their end: issue time + ``exi`` +
the ``exi_upload_window`` setting (:mod:`as_server.endpoints.token`). Until that bound such a token is reported
``active`` (unless revoked); after it, inactive, like an expired ``exp`` token. The bound errs on the side of
``active``: a token uploaded soon after issue has really expired at the RS well before it, but only the RS knows
that (the RS's own ``exi`` clock and sequence numbers decide at the RS; introspection is the AS's view). A token
uploaded later than the window would be refused here although the RS could still hold it; the window is a
setting so that deployments whose clients keep tokens for offline use can raise it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ace_core import cbor
from ace_core.errors import InvalidClient, InvalidRequest, OAuthError, WireFormatError
from ace_core.messages import IntrospectionRequest, IntrospectionResponse
from ace_core.registry import TokenType
from as_server.auth import ClientCredentials, FailureRateLimiter, check_secret
from as_server.config import Settings
from as_server.errors import Forbidden
from as_server.models import ResourceServer, TokenStatus
from as_server.storage.base import Storage
from as_server.tokens import token_hash

__all__ = ["IntrospectionEndpoint"]

logger = logging.getLogger(__name__)

_INACTIVE = IntrospectionResponse(active=False)


class IntrospectionEndpoint:
    """The introspection endpoint of RFC 9200 §5.9 (see the module documentation).

    :param settings: ``issuer`` is reported as ``iss``.
    :param storage: resource servers, clients and the record of issued tokens.
    :param limiter: the failure rate limit, shared with the token endpoint.
    :param clock: seconds since the epoch; read once per request.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        storage: Storage,
        limiter: FailureRateLimiter,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._storage = storage
        self._limiter = limiter
        self._clock = clock

    def handle(
        self, request: IntrospectionRequest, *, credentials: ClientCredentials | None, peer: str
    ) -> IntrospectionResponse:
        """Introspect ``request.token`` for the authenticated resource server (RFC 9200 §5.9.1-§5.9.2).

        :param credentials: the caller's credentials from the transport (HTTP Basic), or ``None``.
        :param peer: the source address (without port), for the rate limit and logs.
        :raises InvalidClient: missing or wrong credentials (4.01).
        :raises Forbidden: the caller may not introspect (4.03, no payload).
        :raises InvalidRequest: ``client_id`` in the payload contradicts the credentials.
        :raises TooManyRequests: the rate limit for failed authentications is reached.
        """
        now = int(self._clock())
        try:
            rs = self._authenticate(request, credentials, peer, now)
        except (OAuthError, Forbidden) as exc:
            logger.info(
                "introspection refused: %s (%s) caller=%r peer=%r",
                type(exc).__name__,
                exc.detail,
                credentials.client_id if credentials is not None else None,
                peer,
            )
            raise
        record = self._storage.get_by_hash(token_hash(request.token))
        if record is None:
            reason = "unknown token"
        elif record.audience != rs.audience:
            reason = "token of another audience"
        elif record.status != TokenStatus.ACTIVE:
            reason = f"token {record.status}"
        elif record.exp <= now:
            reason = "token expired"
        else:
            reason = ""
        if reason or record is None:
            logger.info("introspection by %r: inactive (%s)", rs.audience, reason)
            return _INACTIVE
        try:
            cnf = cbor.loads(record.cnf)
        except WireFormatError:  # pragma: no cover - the AS wrote it
            logger.error("stored cnf of token cti=%s does not decode", record.cti.hex())
            return _INACTIVE
        logger.info("introspection by %r: active cti=%s", rs.audience, record.cti.hex())
        return IntrospectionResponse(
            active=True,
            iss=self._settings.issuer,
            sub=record.subject,
            aud=record.audience,
            exp=record.exp if record.exi is None else None,
            exi=record.exi,
            iat=record.iat,
            cti=record.cti,
            cnf=cnf,
            scope=record.scope,
            client_id=record.client_id,
            token_type=TokenType.POP,
            ace_profile=record.profile,
        )

    def _authenticate(
        self, request: IntrospectionRequest, credentials: ClientCredentials | None, peer: str, now: int
    ) -> ResourceServer:
        """The calling RS, authenticated with its introspection secret (RFC 9200 §5.9.1, RFC 7662 §2.1)."""
        if credentials is not None and request.client_id is not None and request.client_id != credentials.client_id:
            raise InvalidRequest("client_id does not match the authenticated client")
        self._limiter.check(credentials.client_id if credentials is not None else None, peer, now)
        if credentials is None:
            raise InvalidClient("client authentication required", detail="no credentials")
        rs = self._storage.get_resource_server(credentials.client_id)
        stored = rs.introspection_secret_hash if rs is not None else None
        rs_ok = check_secret(credentials, stored)
        # A registered client with the right secret is authenticated but not allowed (4.03). The comparison is made
        # in every case so that the time taken does not tell RS ids from client ids.
        client = self._storage.get_client(credentials.client_id) if rs is None else None
        client_ok = check_secret(credentials, client.secret_hash if client is not None and client.enabled else None)
        if rs_ok:
            assert rs is not None
            if not rs.enabled:
                raise Forbidden("resource server disabled")
            return rs
        if rs is not None and stored is None:
            raise Forbidden("resource server has no introspection secret")
        if client_ok:
            raise Forbidden("clients may not introspect")
        self._limiter.record_failure(credentials.client_id, peer, now)
        logger.warning(
            "introspection authentication failed: caller=%r peer=%r method=%s",
            credentials.client_id,
            peer,
            credentials.method,
        )
        raise InvalidClient("client authentication failed", detail="unknown caller or wrong secret")
