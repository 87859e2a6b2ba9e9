"""The error model (STYLE §3.3): every error raised on purpose is an :class:`AceError`.

* :class:`WireFormatError` -- bytes could not be turned into a message (always ``4.00``/400, or ``4.13``/413 for
  :class:`PayloadTooLarge`).
* :class:`OAuthError` -- one subclass per RFC 9200 §5.8.3 error code, rendered as an error response
  ``{30: code, ?31: description, ?32: uri}`` by the single catch site of each transport.
* :class:`TokenRejected` -- a resource server refusing a token (RFC 9200 §5.10.1.1), carrying the status the RS
  must answer with. The reason a token failed stays in :attr:`AceError.detail` for logs only (as Fernet's
  ``InvalidToken``); what goes on the wire is fixed text.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar

from ace_core.registry import ErrorCode
from ace_core.status import Status

if TYPE_CHECKING:  # messages imports errors; the runtime import happens inside to_message()
    from ace_core.messages import ErrorResponse

__all__ = [
    "AceError",
    "AudienceMismatch",
    "ClaimsUnavailable",
    "CnonceInvalid",
    "IncompatibleAceProfiles",
    "InvalidClient",
    "InvalidGrant",
    "InvalidRequest",
    "InvalidScope",
    "IssuerMismatch",
    "OAuthError",
    "PayloadTooLarge",
    "ScopeNotRecognized",
    "SecurityWrapperFailed",
    "TokenExpired",
    "TokenMalformed",
    "TokenRejected",
    "UnauthorizedClient",
    "UnsupportedGrantType",
    "UnsupportedPopKey",
    "WireFormatError",
    "oauth_error_class",
]

# RFC 6749 §5.2: error_description is restricted to %x20-21 / %x23-5B / %x5D-7E (no '"' and no '\').
_RFC6749_DESCRIPTION = re.compile(r"^[\x20\x21\x23-\x5b\x5d-\x7e]*$")


class AceError(Exception):
    """Base of every error this project raises on purpose.

    :param detail: internal explanation for logs; never sent on the wire.
    """

    status: ClassVar[Status] = Status.BAD_REQUEST

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.__class__.__doc__ or self.__class__.__name__)
        self.detail = detail


class WireFormatError(AceError, ValueError):
    """Bytes could not be decoded into the expected message (malformed CBOR/JSON, wrong types)."""

    status = Status.BAD_REQUEST


class PayloadTooLarge(WireFormatError):
    """The payload exceeds the configured size limit and was refused before parsing (4.13 / 413)."""

    status = Status.REQUEST_ENTITY_TOO_LARGE


class OAuthError(AceError):
    """An error response of the token or introspection endpoint. RFC 9200 §5.8.3.

    :param description: short fixed text for ``error_description``, restricted to the RFC 6749 §5.2 ASCII set.
    :param uri: optional ``error_uri``.
    :param detail: internal explanation for logs only.
    """

    code: ClassVar[ErrorCode]
    status = Status.BAD_REQUEST

    def __init__(self, description: str | None = None, *, uri: str | None = None, detail: str | None = None):
        if description is not None and not _RFC6749_DESCRIPTION.match(description):
            raise ValueError("error_description must use the RFC 6749 section 5.2 character set")
        super().__init__(detail or description)
        self.description = description
        self.uri = uri

    def to_message(self) -> ErrorResponse:
        """The wire message for this error (RFC 9200 §5.8.3)."""
        from ace_core.messages import ErrorResponse

        return ErrorResponse(error=self.code, error_description=self.description, error_uri=self.uri)


class InvalidRequest(OAuthError):
    """The request is missing a parameter, or is otherwise malformed. RFC 6749 §5.2."""

    code = ErrorCode.INVALID_REQUEST


class InvalidClient(OAuthError):
    """Client authentication failed. RFC 6749 §5.2; CoAP 4.01 per RFC 9200 §5.8.3."""

    code = ErrorCode.INVALID_CLIENT
    status = Status.UNAUTHORIZED


class InvalidGrant(OAuthError):
    """The grant is invalid, expired, revoked, or was issued to another client. RFC 6749 §5.2."""

    code = ErrorCode.INVALID_GRANT


class UnauthorizedClient(OAuthError):
    """The client may not use this grant type. RFC 6749 §5.2."""

    code = ErrorCode.UNAUTHORIZED_CLIENT


class UnsupportedGrantType(OAuthError):
    """The grant type is not supported by the AS. RFC 6749 §5.2."""

    code = ErrorCode.UNSUPPORTED_GRANT_TYPE


class InvalidScope(OAuthError):
    """The requested scope is invalid, unknown or malformed. RFC 6749 §5.2."""

    code = ErrorCode.INVALID_SCOPE


class UnsupportedPopKey(OAuthError):
    """The client's PoP key is not supported by the RS (or by the AS). RFC 9200 §5.8.3."""

    code = ErrorCode.UNSUPPORTED_POP_KEY


class IncompatibleAceProfiles(OAuthError):
    """The client and the RS support no common ACE profile. RFC 9200 §5.8.3."""

    code = ErrorCode.INCOMPATIBLE_ACE_PROFILES


def oauth_error_class(code: ErrorCode | int) -> type[OAuthError] | None:
    """The :class:`OAuthError` subclass for a registered error code, or ``None`` if unregistered."""
    for cls in OAuthError.__subclasses__():
        if cls.code == code:
            return cls
    return None


class TokenRejected(AceError):
    """A resource server refuses an access token. RFC 9200 §5.10.1.1 (default 4.01).

    Subclasses narrow the reason and, where the RFC says so, the status. The wire carries only the status;
    :attr:`detail` (unknown kid, MAC mismatch, ...) is for logs.
    """

    status = Status.UNAUTHORIZED


class TokenMalformed(TokenRejected):
    """The payload does not parse to a token (RFC 9200 §5.10.1.1: 4.00)."""

    status = Status.BAD_REQUEST


class SecurityWrapperFailed(TokenRejected):
    """The COSE signature, MAC or decryption failed, or no key is known for the issuer (4.01)."""


class ClaimsUnavailable(TokenRejected):
    """The claims cannot be obtained, e.g. the decrypted payload is not a claims map (4.00)."""

    status = Status.BAD_REQUEST


class IssuerMismatch(TokenRejected):
    """``iss`` does not name the AS that protected the token (4.01)."""


class TokenExpired(TokenRejected):
    """``exp`` is not in the future, or ``nbf`` is in the future (4.01)."""


class AudienceMismatch(TokenRejected):
    """``aud`` names no audience this RS identifies with (4.03)."""

    status = Status.FORBIDDEN


class ScopeNotRecognized(TokenRejected):
    """``scope`` is missing or not understood by this RS (4.00)."""

    status = Status.BAD_REQUEST


class CnonceInvalid(TokenRejected):
    """The token lacks the ``cnonce`` this RS requires, or it is not fresh. RFC 9200 §5.3.1 (4.01)."""
