"""Errors of the authorization server that are not OAuth error codes (STYLE §3.3).

The OAuth errors of the token and introspection endpoints (RFC 9200 §5.8.3, §5.9.3) are the
:class:`~ace_core.errors.OAuthError` subclasses of :mod:`ace_core.errors`. The two classes here are statuses
without an OAuth error payload; each transport renders them at its single catch site:

* :class:`TooManyRequests` -- 4.29 / 429 with ``Max-Age`` (CoAP, RFC 8516 §4) or ``Retry-After`` (HTTP,
  RFC 6585 §4) set to :attr:`TooManyRequests.retry_after`, and no payload.
* :class:`Forbidden` -- 4.03 / 403 with **no payload**: the introspection caller authenticated but may not
  introspect (RFC 9200 §5.9.3).

:class:`ConsentPending` is the token endpoint's ``invalid_scope`` when the policy asks for consent
(:mod:`as_server.consent`): it carries the access request's id, and each transport turns it into the ``error_uri``
of its own side (``http(s)://.../access-requests/ID`` or ``coap://.../access-requests/ID``).

The consent API (:mod:`as_server.endpoints.consent`; HTTP JSON, not an OAuth endpoint) raises :class:`ApiError`
subclasses, one per HTTP status, rendered as ``{"error": code, "error_description": text}``.
"""

from __future__ import annotations

from typing import ClassVar

from ace_core.errors import AceError, InvalidScope
from ace_core.status import Status

__all__ = [
    "ApiBadRequest",
    "ApiConflict",
    "ApiError",
    "ApiForbidden",
    "ApiNotFound",
    "ApiUnauthorized",
    "ApiUnsupportedMediaType",
    "ConsentPending",
    "Forbidden",
    "TooManyRequests",
]


class TooManyRequests(AceError):
    """Too many failed authentications from this client id or source address. RFC 8516 §3 (4.29), RFC 6585 §4.

    :param retry_after: seconds until a new attempt may succeed (at least 1); the transport sends it as
        ``Max-Age`` (CoAP, RFC 8516 §4) or ``Retry-After`` (HTTP).
    :param detail: internal explanation for logs only.
    """

    status = Status.TOO_MANY_REQUESTS

    def __init__(self, retry_after: int, detail: str | None = None) -> None:
        super().__init__(detail or f"rate limited; retry after {retry_after} s")
        self.retry_after = max(1, int(retry_after))


class Forbidden(AceError):
    """The caller is authenticated but not allowed to use this endpoint: 4.03 without payload. RFC 9200 §5.9.3."""

    status = Status.FORBIDDEN


class ConsentPending(InvalidScope):
    """The requested scope needs someone's consent; an access request records it. RFC 9200 §5.8.3 ``invalid_scope``
    (RFC 6749 §5.2: "exceeds the scope granted by the resource owner").

    :param request_id: the access request; the transport makes it the ``error_uri``
        (:meth:`with_uri`), which the client follows to learn the decision.
    """

    DESCRIPTION: ClassVar[str] = "consent pending: follow error_uri for the decision"

    def __init__(self, request_id: str, *, detail: str | None = None) -> None:
        super().__init__(self.DESCRIPTION, detail=detail or f"access request {request_id} pending")
        self.request_id = request_id

    def with_uri(self, base: str) -> ConsentPending:
        """This error with ``error_uri`` = ``<base>/access-requests/<id>`` (``base`` without a trailing slash)."""
        error = ConsentPending(self.request_id, detail=self.detail)
        error.uri = f"{base.rstrip('/')}/access-requests/{self.request_id}"
        return error


class ApiError(AceError):
    """An error of the consent JSON API: HTTP :attr:`http_status` with ``{"error": code, "error_description": ...}``.

    :param description: short fixed text for people (no request data, no stack traces).
    :param detail: internal explanation for logs only.
    """

    error: ClassVar[str] = "invalid_request"
    http_status: ClassVar[int] = 400

    def __init__(self, description: str, *, detail: str | None = None) -> None:
        super().__init__(detail or description)
        self.description = description

    def to_json(self) -> dict[str, str]:
        """The response body."""
        return {"error": self.error, "error_description": self.description}


class ApiBadRequest(ApiError):
    """Malformed input: a body that is not a JSON object, an unknown field, a value of the wrong type (400)."""


class ApiUnauthorized(ApiError):
    """No or wrong user credentials (401, with ``WWW-Authenticate: Basic``)."""

    error = "unauthorized"
    http_status = 401
    status = Status.UNAUTHORIZED


class ApiForbidden(ApiError):
    """The user is authenticated but may not do this: wrong role, not an approver, their own request (403)."""

    error = "forbidden"
    http_status = 403
    status = Status.FORBIDDEN


class ApiNotFound(ApiError):
    """No such access request or grant, or one the caller may not see (404)."""

    error = "not_found"
    http_status = 404
    status = Status.NOT_FOUND


class ApiConflict(ApiError):
    """The request is already decided or expired; the grant already revoked (409)."""

    error = "conflict"
    http_status = 409


class ApiUnsupportedMediaType(ApiError):
    """A body that is not ``application/json`` (415)."""

    error = "unsupported_media_type"
    http_status = 415
    status = Status.UNSUPPORTED_CONTENT_FORMAT
