"""Errors the resource server raises on purpose, beyond the token checks of :mod:`ace_core.errors`.

Every class carries the status the RS answers with (STYLE §3.3); the transport renders only that status (plus
Max-Age for :class:`RateLimited`, RFC 8516 §2), never the detail, which is for logs. Token refusals are
:class:`~ace_core.errors.TokenRejected` subclasses, as RFC 9200 §5.10.1.1 and RFC 9203 §4.1 describe them.
"""

from __future__ import annotations

from ace_core.errors import AceError, TokenExpired, TokenRejected
from ace_core.status import Status

__all__ = [
    "ExiSequenceExpired",
    "ExiSequenceInvalid",
    "OscoreParametersInvalid",
    "ProfileNotSupported",
    "RateLimited",
    "UnsupportedContentFormat",
    "UpdateRejected",
]


class UnsupportedContentFormat(TokenRejected):
    """The ``/authz-info`` payload is neither ``application/cwt`` nor ``application/ace+cbor`` (RFC 7252
    §5.9.2.10: 4.15)."""

    status = Status.UNSUPPORTED_CONTENT_FORMAT


class RateLimited(AceError):
    """Too many token submissions from one peer: 4.29 with Max-Age (RFC 8516 §2; RFC 9200 §5.10.1 asks the RS to
    rate-limit submissions).

    :param retry_after: whole seconds until the peer may submit again (the Max-Age value).
    """

    status = Status.TOO_MANY_REQUESTS

    def __init__(self, detail: str | None = None, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class ProfileNotSupported(TokenRejected):
    """The token is valid but not for the OSCORE profile: ``ace_profile`` is not ``coap_oscore`` or ``cnf`` holds
    no OSCORE_Input_Material (RFC 9203 §4.1: claims the RS cannot process, 4.00)."""

    status = Status.BAD_REQUEST


class OscoreParametersInvalid(TokenRejected):
    """``nonce1`` or ``ace_client_recipientid`` is missing or unusable, or the OSCORE_Input_Material carries
    parameters this RS does not recognise (RFC 9203 §4.1: 4.00)."""

    status = Status.BAD_REQUEST


class UpdateRejected(TokenRejected):
    """A token posted over OSCORE does not name the Input Material of the security context it arrived on
    (RFC 9203 §4.1, update of access rights: 4.01)."""


class ExiSequenceInvalid(TokenRejected):
    """An ``exi`` token whose ``cti`` is not ``UTF-8(audience) || sequence number`` (RFC 9200 §5.10.3; the layout
    is documented in :mod:`resource_server.token_store`): claims the RS cannot process, 4.00."""

    status = Status.BAD_REQUEST


class ExiSequenceExpired(TokenExpired):
    """An ``exi`` token whose sequence number is not above the highest one this RS saw expire (RFC 9200 §5.10.3:
    treated as expired, 4.01)."""
