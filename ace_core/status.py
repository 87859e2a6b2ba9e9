"""Transport-neutral response status (STYLE §3.3).

A :class:`Status` is stored as ``class * 100 + detail`` (Leshan's convention), so ``401`` is both HTTP 401 and
CoAP 4.01. CoAP adapters convert with :attr:`Status.coap_code`; HTTP adapters with :attr:`Status.http_status`.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["Status"]


class Status(IntEnum):
    """Response status shared by the CoAP and HTTP transports (RFC 7252 §12.1.2, RFC 8516 for 4.29)."""

    CREATED = 201
    DELETED = 202
    VALID = 203
    CHANGED = 204
    CONTENT = 205
    BAD_REQUEST = 400
    UNAUTHORIZED = 401
    BAD_OPTION = 402
    FORBIDDEN = 403
    NOT_FOUND = 404
    METHOD_NOT_ALLOWED = 405
    NOT_ACCEPTABLE = 406
    REQUEST_ENTITY_TOO_LARGE = 413
    UNSUPPORTED_CONTENT_FORMAT = 415
    TOO_MANY_REQUESTS = 429
    INTERNAL_SERVER_ERROR = 500
    SERVICE_UNAVAILABLE = 503

    @property
    def coap_code(self) -> int:
        """The CoAP code byte (``c.dd`` -> ``c << 5 | dd``): 4.01 -> 129."""
        return (self // 100) << 5 | self % 100

    @property
    def coap_dotted(self) -> str:
        """The CoAP code in dotted notation, e.g. ``"4.01"``."""
        return f"{self // 100}.{self % 100:02d}"

    @property
    def http_status(self) -> int:
        """The HTTP status code. CoAP-only success details (2.01-2.05) keep their numeric HTTP meaning."""
        return int(self)

    @classmethod
    def from_coap_code(cls, code: int) -> Status:
        """Inverse of :attr:`coap_code`; raises ``ValueError`` for codes this project does not use."""
        return cls((code >> 5) * 100 + (code & 0x1F))
