"""What both transports share: exception -> wire outcome, and the JSON forms of AS messages (sans-IO).

Each transport catches at exactly one place (STYLE §3.3) and hands the exception to :func:`error_outcome`, which
decides the status, the error body and the rate-limit delay without knowing whether the answer travels as a CoAP
message or an HTTP response. The transports then only spell the outcome in their framework.

==============================================  ==========  ======================================================
exception                                       status      body
==============================================  ==========  ======================================================
:class:`~ace_core.errors.OAuthError`            4.00 / 400  its ``ErrorResponse`` (RFC 9200 §5.8.3, RFC 6749 §5.2)
``InvalidClient``                               4.01 / 401  ``invalid_client``
:class:`~as_server.errors.Forbidden`            4.03 / 403  none (RFC 9200 §5.9.3: "no payload")
:class:`~as_server.errors.TooManyRequests`      4.29 / 429  none; Max-Age / Retry-After (RFC 8516 §2, RFC 6585 §4)
:class:`~ace_core.errors.PayloadTooLarge`       4.13 / 413  ``invalid_request``; Size1 on CoAP (RFC 7252 §5.10.9)
:class:`UnsupportedContentFormat`               4.15 / 415  ``invalid_request``
:class:`~ace_core.errors.WireFormatError`       4.00 / 400  ``invalid_request``, fixed text (never the parser's)
:class:`~as_server.errors.ConsentPending`       4.00 / 400  ``invalid_scope`` with ``error_uri`` =
                                                            ``<this transport's base URI>/access-requests/<id>``
:class:`~as_server.errors.ApiError`             its HTTP    ``{"error", "error_description"}`` (the consent API;
                                                status      4.04 without payload on CoAP)
any other :class:`~ace_core.errors.AceError`    its status  none
anything else                                   5.00 / 500  none (the traceback is logged, never sent)
==============================================  ==========  ======================================================
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Final

from ace_core.errors import AceError, InvalidRequest, OAuthError, PayloadTooLarge, WireFormatError
from ace_core.messages import AccessInformation, ErrorResponse, IntrospectionRequest, IntrospectionResponse
from ace_core.registry import TokenParam
from ace_core.status import Status
from as_server.auth import METHOD_PAYLOAD, METHOD_POST, ClientCredentials, select_credentials
from as_server.errors import ApiError, ConsentPending, Forbidden, TooManyRequests
from as_server.tokens import json_scope

__all__ = [
    "ACE_CBOR",
    "ErrorOutcome",
    "UnsupportedContentFormat",
    "error_outcome",
    "introspection_credentials",
    "json_body",
]

log = logging.getLogger("ostiary.as.transport")

#: The media type of ACE CBOR payloads. RFC 9200 §8.15 (CoAP Content-Format 19, §8.16).
ACE_CBOR: Final = "application/ace+cbor"

# Fixed error_description texts (STYLE §3.3: short, fixed, RFC 6749 §5.2 character set; no parser output).
MALFORMED = "malformed request"
TOO_LARGE = "request too large"
UNSUPPORTED = "unsupported content format"


class UnsupportedContentFormat(WireFormatError):
    """The request's Content-Format / Content-Type is not one the endpoint reads (4.15 / 415, RFC 7252 §5.9.2.10,
    RFC 9110 §15.5.16)."""

    status = Status.UNSUPPORTED_CONTENT_FORMAT


@dataclass(frozen=True, slots=True)
class ErrorOutcome:
    """How to answer a failed request, independent of the transport.

    :param status: the response code.
    :param body: the error response to send, or ``None`` for an empty payload.
    :param retry_after: seconds before the client may retry (4.29 Max-Age, 429 Retry-After).
    :param size_limit: the largest acceptable request (4.13 Size1, RFC 7252 §5.10.9).
    :param api_body: the JSON body of a consent API error (:class:`~as_server.errors.ApiError`), with
        :attr:`http_status` (409 has no CoAP counterpart in :class:`~ace_core.status.Status`).
    """

    status: Status
    body: ErrorResponse | None = None
    retry_after: int | None = None
    size_limit: int | None = None
    api_body: dict[str, str] | None = None
    http_status: int | None = None


def error_outcome(exc: BaseException, *, max_payload: int, base_uri: str | None = None) -> ErrorOutcome:
    """Translate an exception raised while serving a request into its :class:`ErrorOutcome` (see module table).

    Non-:class:`~ace_core.errors.AceError` exceptions are programming or infrastructure errors: they are logged
    here with their traceback and become 5.00 / 500 with no detail on the wire.

    :param base_uri: the transport's own base URI (``coap://host:port``, ``http://host:port``), for the
        ``error_uri`` of :class:`~as_server.errors.ConsentPending`.
    """
    if isinstance(exc, ConsentPending) and base_uri is not None:
        exc = exc.with_uri(base_uri)
    if isinstance(exc, ApiError):
        return ErrorOutcome(exc.status, api_body=exc.to_json(), http_status=exc.http_status)
    if isinstance(exc, TooManyRequests):
        return ErrorOutcome(Status.TOO_MANY_REQUESTS, retry_after=max(0, int(exc.retry_after)))
    if isinstance(exc, Forbidden):
        return ErrorOutcome(Status.FORBIDDEN)
    if isinstance(exc, OAuthError):
        return ErrorOutcome(exc.status, exc.to_message())
    if isinstance(exc, PayloadTooLarge):
        body = InvalidRequest(TOO_LARGE).to_message()
        return ErrorOutcome(Status.REQUEST_ENTITY_TOO_LARGE, body, size_limit=max_payload)
    if isinstance(exc, UnsupportedContentFormat):
        return ErrorOutcome(Status.UNSUPPORTED_CONTENT_FORMAT, InvalidRequest(UNSUPPORTED).to_message())
    if isinstance(exc, WireFormatError):
        # The parser's message may quote the (secret-bearing) input: log the class only.
        log.info("malformed request (%s)", type(exc).__name__)
        return ErrorOutcome(Status.BAD_REQUEST, InvalidRequest(MALFORMED).to_message())
    if isinstance(exc, AceError):
        return ErrorOutcome(exc.status)
    log.error("internal error while serving a request", exc_info=exc)
    return ErrorOutcome(Status.INTERNAL_SERVER_ERROR)


def json_body(message: AccessInformation | IntrospectionResponse | ErrorResponse) -> bytes:
    """The JSON text of an AS response (RFC 6749 §5.1, RFC 7662 §2.2), with an AIF scope as ``aif+json`` text.

    A binary (AIF, RFC 9237) scope has no JSON form of its own; the HTTP side writes the RFC 9237 §5.3
    ``application/aif+json`` text, which is also how HTTP clients send AIF scopes (see :mod:`ace_core.scope`).
    """
    if isinstance(message, AccessInformation | IntrospectionResponse) and isinstance(message.scope, bytes):
        message = replace(message, scope=json_scope(message.scope))
    return message.to_json_bytes()


def introspection_credentials(
    request: IntrospectionRequest, transport: ClientCredentials | None, *, cbor: bool
) -> tuple[ClientCredentials | None, IntrospectionRequest]:
    """The introspection caller's credentials, with a secret sent in the payload taken out of the request.

    RFC 7662 §2.1 leaves the caller's authentication to the OAuth client authentication methods, and RFC 9200
    Table 6 maps no ``client_secret`` for introspection. An RS without DTLS/OSCORE to the AS therefore sends its
    secret the way clients do at the token endpoint: as ``client_secret`` in a form or JSON body, or, in CBOR, under
    the OAuth Parameters CBOR key of ``client_secret`` (25, RFC 9200 §5.8.5 Table 5) next to ``client_id`` (24).
    That CBOR key is an Ostiary convention for introspection, not a registered Table 6 entry.

    :param transport: credentials from the transport (HTTP Basic), or ``None``.
    :param cbor: the request came as ``application/ace+cbor`` (key 25) rather than form/JSON (``client_secret``).
    :raises InvalidRequest: a malformed secret, a secret without ``client_id``, or a secret both in the payload
        and in the transport (RFC 6749 §2.3, :func:`as_server.auth.select_credentials`).
    """
    key: int | str = int(TokenParam.CLIENT_SECRET) if cbor else "client_secret"
    raw = request.extra.get(key)
    secret: bytes | None = None
    if raw is not None:
        if cbor and isinstance(raw, bytes):
            secret = raw
        elif not cbor and isinstance(raw, str):
            secret = raw.encode("utf-8")
        else:
            raise InvalidRequest("malformed client_secret")
        request = replace(request, extra={k: v for k, v in request.extra.items() if k != key})
    credentials = select_credentials(transport, request.client_id, secret)
    if credentials is not None and not cbor and credentials.method == METHOD_PAYLOAD:
        credentials = replace(credentials, method=METHOD_POST)
    return credentials, request


def generic_server_error() -> dict[str, Any]:
    """The JSON body of an HTTP 500: fixed text only."""
    return {"error": "server_error", "error_description": "internal server error"}
