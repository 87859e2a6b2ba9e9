"""Errors of the authorization server that are not OAuth error codes (STYLE §3.3).

The OAuth errors of the token and introspection endpoints (RFC 9200 §5.8.3, §5.9.3) are the
:class:`~ace_core.errors.OAuthError` subclasses of :mod:`ace_core.errors`. The two classes here are statuses
without an OAuth error payload; each transport renders them at its single catch site:

* :class:`TooManyRequests` -- 4.29 / 429 with ``Max-Age`` (CoAP, RFC 8516 §4) or ``Retry-After`` (HTTP,
  RFC 6585 §4) set to :attr:`TooManyRequests.retry_after`, and no payload.
* :class:`Forbidden` -- 4.03 / 403 with **no payload**: the introspection caller authenticated but may not
  introspect (RFC 9200 §5.9.3).
"""

from __future__ import annotations

from ace_core.errors import AceError
from ace_core.status import Status

__all__ = ["Forbidden", "TooManyRequests"]


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
