"""HTTP transport of the authorization server: a Flask app factory that only translates (STYLE §3.1).

``create_app(server)`` serves:

* ``POST /token`` -- RFC 9200 §5.8 over HTTP. The body is ``application/x-www-form-urlencoded`` (RFC 6749 §4.4.2,
  Appendix B; what RFC 9200 §5.8.1 prescribes for HTTP), ``application/json`` (the same parameters as a JSON
  object, :mod:`ace_core.messages`) or ``application/ace+cbor`` (the CoAP payload, RFC 9200 §5). Client
  credentials come from HTTP Basic (RFC 6749 §2.3.1: client id and secret are form-urlencoded *before* the
  Basic encoding, so they are form-decoded here) or from the body (``client_secret_post``).
* ``POST /introspect`` -- RFC 9200 §5.9 / RFC 7662 §2 with the same three body formats.
* ``GET /.well-known/oauth-authorization-server`` -- the RFC 8414 metadata document (and the RFC 8414 §3 form
  with the issuer's path appended).
* ``GET``/``POST /authorize`` -- the authorization endpoint with its sign-in page, for apps signing users in
  (RFC 6749 §4.1, issue #5; :mod:`as_server.transport.authorize`). The code and refresh grants are served by
  ``POST /token`` like any other.
* ``/console/`` -- the facility manager console (issue #6), server-rendered pages and their JSON API
  (:mod:`as_server.transport.console`); errors under ``/console`` are rendered by that module.
* ``GET /access-requests/<id>`` and the approvers' API under ``/consent/`` -- the consent workflow (issue #5), JSON,
  framework-free in :mod:`as_server.endpoints.consent` (which lists the routes). A token request refused for
  consent carries ``error_uri`` = ``<base>/access-requests/<id>``, where ``<base>`` is
  :attr:`Settings.http_base_url` when configured, else the scheme and host the request was made to.

**Response family.** A CBOR request gets ``application/ace+cbor`` answers; every other request (form, JSON, or an
unreadable one) gets ``application/json`` (RFC 6749 §5.1). Success is 200 (RFC 6749 §5.1, RFC 7662 §2.2; CoAP's
2.01 has no HTTP counterpart here). Every response carries ``Cache-Control: no-store`` and ``Pragma: no-cache``
(RFC 6749 §5.1: responses hold credentials).

**Errors** are caught at one place, :func:`_on_error` (a Flask error handler for every exception), and mapped by
:func:`as_server.transport.common.error_outcome`. Decisions beyond that table:

* ``invalid_client`` is 401 and always carries ``WWW-Authenticate: Basic realm="ostiary"``: RFC 6749 §5.2 requires
  401 when Basic was tried and allows it otherwise, and RFC 9110 §15.5.2 requires the header on every 401.
* An unsupported ``Content-Type`` is 415 (RFC 9110 §15.5.16) with an ``invalid_request`` body, mirroring CoAP's
  4.15; 400 would hide the fact that the body format, not its content, is wrong.
* The body limit (:attr:`Settings.max_payload`) is enforced before the body is read: a larger ``Content-Length``
  is refused at once, and ``MAX_CONTENT_LENGTH`` makes Werkzeug stop reading a chunked body one byte past the
  limit. Both are 413.
* Unknown paths (404) and wrong methods (405, with ``Allow``) keep their HTTP status and get a small JSON body.
* Anything unexpected is 500 with a fixed JSON body; the traceback goes to the server log only.

The peer passed to the endpoints (for failure rate limiting) is the socket's remote address; ``X-Forwarded-For``
is not trusted, so a reverse proxy in front needs its own limiting or a trusted-proxy middleware.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
from typing import Any, Final
from urllib.parse import parse_qsl, unquote_plus

from flask import Flask, Response, g, request
from werkzeug.exceptions import BadRequest, HTTPException, InternalServerError, RequestEntityTooLarge
from werkzeug.wrappers import Response as BaseResponse

from ace_core.errors import InvalidClient, OAuthError, PayloadTooLarge, UnsupportedGrantType, WireFormatError
from ace_core.messages import (
    AccessInformation,
    ErrorResponse,
    IntrospectionRequest,
    IntrospectionResponse,
    TokenRequest,
    parse_json,
)
from ace_core.registry import GrantType
from ace_core.status import Status
from as_server.app import ACCESS_REQUESTS_PATH, INTROSPECTION_PATH, TOKEN_PATH, AuthorizationServer
from as_server.auth import METHOD_BASIC, METHOD_POST, ClientCredentials
from as_server.errors import ApiBadRequest, ApiUnauthorized, ApiUnsupportedMediaType
from as_server.transport import authorize, console
from as_server.transport.common import (
    ACE_CBOR,
    UnsupportedContentFormat,
    error_outcome,
    generic_server_error,
    introspection_credentials,
    json_body,
)

__all__ = ["create_app"]

log = logging.getLogger("ostiary.as.http")

FORM: Final = "application/x-www-form-urlencoded"
JSON: Final = "application/json"
#: RFC 6749 §5.1: token (and introspection) responses must not be cached.
NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}
#: RFC 9110 §11.6.1 challenge for the one scheme the endpoints accept.
CHALLENGE: Final = 'Basic realm="ostiary"'
#: The ``grant_type`` names of RFC 9200 §5.8.4.1 Table 4 (the registry's member names, as ace_core.messages writes
#: them); any other name is ``unsupported_grant_type`` (:func:`_refuse_unknown_grant_name`).
GRANT_TYPE_NAMES: Final = frozenset(g.name.lower() for g in GrantType)
#: Far more than any ACE request has; bounds the work of parsing a hostile form body.
MAX_FORM_FIELDS: Final = 64


def create_app(server: AuthorizationServer) -> Flask:
    """The Flask application serving ``server`` over HTTP (the app factory, Flask's ``create_app`` pattern).

    The app does not own ``server``: whoever created the server closes it.
    """
    app = Flask("as_server.transport.http")
    max_payload = server.settings.max_payload
    app.config.update(
        # Werkzeug stops reading a chunked body at MAX_CONTENT_LENGTH *without* an error (LimitedStream.readall
        # returns the first MAX_CONTENT_LENGTH bytes), so allow one byte more and refuse what exceeds the limit.
        MAX_CONTENT_LENGTH=max_payload + 1,
        MAX_FORM_PARTS=MAX_FORM_FIELDS,
        PROPAGATE_EXCEPTIONS=False,  # even under app.testing, errors go through _on_error
        TRAP_HTTP_EXCEPTIONS=False,
    )
    app.extensions["ostiary.authorization_server"] = server
    # A path with "//" is unknown (404), not redirected to its merged form (Werkzeug's default, a 308): an API
    # answers what it was asked or says why not.
    app.url_map.merge_slashes = False

    @app.post(TOKEN_PATH)
    def token() -> Response:
        """RFC 9200 §5.8: a token request in, Access Information (RFC 9200 §5.8.2) out."""
        kind = _request_kind()
        body = _read_body(max_payload)
        token_request: TokenRequest
        try:
            if kind == ACE_CBOR:
                token_request = TokenRequest.from_cbor(body, max_size=max_payload)
            elif kind == JSON:
                token_request = TokenRequest.from_json_bytes(body, max_size=max_payload)
            else:
                token_request = TokenRequest.from_form(_parse_form(body), max_size=max_payload)
        except WireFormatError:
            _refuse_unknown_grant_name(body, kind, max_payload)
            raise
        credentials, moved = _basic_or_post(token_request.client_id, token_request.client_secret, kind)
        if moved:
            token_request = dataclasses.replace(token_request, client_secret=None)
        info = server.token_endpoint.handle(token_request, credentials=credentials, peer=_peer())
        return _success(info, kind)

    @app.post(INTROSPECTION_PATH)
    def introspect() -> Response:
        """RFC 9200 §5.9 / RFC 7662 §2: a token in, its state out (inactive is a success, RFC 9200 §5.9.2)."""
        kind = _request_kind()
        body = _read_body(max_payload)
        intro_request: IntrospectionRequest
        if kind == ACE_CBOR:
            intro_request = IntrospectionRequest.from_cbor(body, max_size=max_payload)
        elif kind == JSON:
            intro_request = IntrospectionRequest.from_json_bytes(body, max_size=max_payload)
        else:
            intro_request = IntrospectionRequest.from_form(_parse_form(body), max_size=max_payload)
        basic = _basic_credentials()
        transport = None if basic is None else ClientCredentials(basic[0], basic[1], METHOD_BASIC)
        credentials, intro_request = introspection_credentials(intro_request, transport, cbor=kind == ACE_CBOR)
        response = server.introspection_endpoint.handle(intro_request, credentials=credentials, peer=_peer())
        return _success(response, kind)

    def metadata() -> Response:
        """RFC 8414 §3: the authorization server metadata, JSON, cacheable for a short while."""
        body = json.dumps(server.metadata(), separators=(",", ":"), sort_keys=True).encode()
        return Response(body, status=200, content_type=JSON, headers={"Cache-Control": "max-age=300"})

    for i, path in enumerate(server.metadata_paths):
        app.add_url_rule(path, endpoint=f"metadata_{i}", view_func=metadata, methods=["GET"])

    # Issue #5, apps signing users in: GET/POST /authorize and its sign-in page (as_server.transport.authorize).
    authorize.install(app, server)

    # Issue #6, the facility manager console: pages under /console/ (as_server.transport.console).
    console.install(app, server)

    api = server.consent_api

    @app.get(ACCESS_REQUESTS_PATH + "/<request_id>")
    def access_request(request_id: str) -> Response:
        """The access request's state, for the app that made it (the id is the capability; issue #5)."""
        g.ace_kind = JSON
        return _json(200, api.poll(request_id))

    @app.get("/consent/requests")
    def consent_requests() -> Response:
        g.ace_kind = JSON
        return _json(200, api.list_requests(_user_credentials(), _query(), peer=_peer()))

    @app.get("/consent/requests/<request_id>")
    def consent_request(request_id: str) -> Response:
        g.ace_kind = JSON
        return _json(200, api.show_request(_user_credentials(), request_id, peer=_peer()))

    @app.post("/consent/requests/<request_id>/approve")
    def consent_approve(request_id: str) -> Response:
        g.ace_kind = JSON
        body = _api_body(max_payload)
        return _json(200, api.approve(_user_credentials(), request_id, body, peer=_peer()))

    @app.post("/consent/requests/<request_id>/deny")
    def consent_deny(request_id: str) -> Response:
        g.ace_kind = JSON
        body = _api_body(max_payload)
        return _json(200, api.deny(_user_credentials(), request_id, body, peer=_peer()))

    @app.get("/consent/grants")
    def consent_grants() -> Response:
        g.ace_kind = JSON
        return _json(200, api.list_grants(_user_credentials(), _query(), peer=_peer()))

    @app.get("/consent/grants/<grant_id>")
    def consent_grant(grant_id: str) -> Response:
        g.ace_kind = JSON
        return _json(200, api.show_grant(_user_credentials(), grant_id, peer=_peer()))

    @app.post("/consent/grants/<grant_id>/revoke")
    def consent_revoke(grant_id: str) -> Response:
        g.ace_kind = JSON
        _api_body(max_payload)  # no fields, but a body that is not JSON is still refused
        return _json(200, api.revoke(_user_credentials(), grant_id, peer=_peer()))

    configured_base = server.settings.http_base_url.rstrip("/")

    def base_uri() -> str:
        return configured_base or request.host_url.rstrip("/")

    @app.errorhandler(Exception)
    def _on_error(exc: Exception) -> BaseResponse:
        """The one catch site of this transport (STYLE §3.3)."""
        if request.path == console.CONSOLE_PATH or request.path.startswith(console.CONSOLE_PATH + "/"):
            if isinstance(exc, InternalServerError) and exc.original_exception is not None:
                return console.render_error(exc.original_exception)
            return console.render_error(exc)  # HTML pages (JSON under /console/api/), never a traceback
        kind = g.get("ace_kind", JSON)
        if isinstance(exc, HTTPException):
            if isinstance(exc, RequestEntityTooLarge):
                return _error(PayloadTooLarge("body over MAX_CONTENT_LENGTH"), kind, max_payload)
            if isinstance(exc, InternalServerError):  # Flask wraps what escaped a view or this handler
                return _error(exc.original_exception or exc, kind, max_payload, base_uri())
            if isinstance(exc, BadRequest) and exc.code == 400:
                return _error(WireFormatError("Werkzeug refused the request"), kind, max_payload)
            return _http_error(exc)
        return _error(exc, kind, max_payload, base_uri())

    return app


# --- request side ---------------------------------------------------------------------------------------------


def _request_kind() -> str:
    """The body format, from ``Content-Type`` (parameters such as ``charset`` ignored), remembered for errors.

    :raises UnsupportedContentFormat: anything but form, JSON or ACE CBOR.
    """
    mimetype = request.mimetype  # lower-cased, without parameters
    kind = mimetype if mimetype in (FORM, JSON, ACE_CBOR) else None
    g.ace_kind = ACE_CBOR if kind == ACE_CBOR else JSON
    if kind is None:
        raise UnsupportedContentFormat(f"Content-Type {mimetype[:60]!r}")
    return kind


def _read_body(max_payload: int) -> bytes:
    """The request body, refused before reading when ``Content-Length`` is over the limit.

    :raises PayloadTooLarge: ``Content-Length`` over ``max_payload``, or a chunked body that goes over it (read no
        further than one byte past the limit).
    """
    length = request.content_length
    if length is not None and length > max_payload:
        raise PayloadTooLarge(f"Content-Length {length} over {max_payload}")
    body = request.get_data(cache=False)  # at most max_payload + 1 bytes (MAX_CONTENT_LENGTH)
    if len(body) > max_payload:
        raise PayloadTooLarge(f"chunked body over {max_payload}")
    return body


def _refuse_unknown_grant_name(body: bytes, kind: str, max_payload: int) -> None:
    """A ``grant_type`` name outside RFC 9200 §5.8.4.1 Table 4 (``urn:...:device_code``, ``implicit``, ...) is
    ``unsupported_grant_type`` (RFC 6749 §5.2), not a malformed request: the message layer cannot represent an unknown
    name, so the failed parse is looked at again here (only then: the successful path pays nothing).

    :raises UnsupportedGrantType: the body names a grant type that has no registered name.
    """
    try:
        fields = parse_json(body, max_size=max_payload) if kind == JSON else _parse_form(body) if kind == FORM else {}
    except WireFormatError:
        return
    name = fields.get("grant_type") if isinstance(fields, dict) else None
    if isinstance(name, str) and name not in GRANT_TYPE_NAMES:
        raise UnsupportedGrantType("unsupported grant_type", detail=f"grant_type {name[:60]!r}")


def _parse_form(body: bytes) -> dict[str, str]:
    """Decode an ``application/x-www-form-urlencoded`` body (RFC 6749 Appendix B; WHATWG URL §5.1).

    :raises WireFormatError: not ASCII, not UTF-8 after percent-decoding, malformed pairs, too many fields, or a
        repeated name (RFC 6749 §3.2: parameters MUST NOT be included more than once).
    """
    try:
        text = body.decode("ascii")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=bool(text),
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise WireFormatError(f"malformed form body ({type(exc).__name__})") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise WireFormatError(f"form parameter {name[:40]!r} repeated")
        fields[name] = value
    return fields


def _basic_credentials() -> tuple[str, bytes] | None:
    """``(client_id, secret)`` from ``Authorization: Basic``, form-decoded per RFC 6749 §2.3.1; ``None`` if absent.

    :raises InvalidClient: another scheme, or a Basic value that does not decode (authentication failed,
        RFC 6749 §5.2).
    """
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClient("unsupported authentication scheme")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidClient("malformed Basic credentials") from None
    user, sep, password = decoded.partition(":")
    if not sep or not user:
        raise InvalidClient("malformed Basic credentials")
    try:
        client_id = unquote_plus(user, errors="strict")
        secret = unquote_plus(password, errors="strict")
    except UnicodeDecodeError:
        raise InvalidClient("malformed Basic credentials") from None
    return client_id, secret.encode("utf-8")


def _basic_or_post(client_id: str | None, secret: bytes | None, kind: str) -> tuple[ClientCredentials | None, bool]:
    """The credentials the transport hands the endpoint, and whether the body's secret moved into them.

    * ``Authorization: Basic`` -> ``client_secret_basic`` (the body is left alone: a secret there too is the
      endpoint's ``invalid_request``, RFC 6749 §2.3, :func:`as_server.auth.select_credentials`);
    * a ``client_id`` + ``client_secret`` in a form or JSON body -> ``client_secret_post`` (RFC 6749 §2.3.1),
      taken out of the message so the endpoint does not see it twice;
    * a secret inside an ACE CBOR body, or none at all -> ``None``: the endpoint reads the payload exactly as it
      does for CoAP (RFC 9200 §5.8.1 puts ``client_id``/``client_secret`` in the CBOR map).
    """
    basic = _basic_credentials()
    if basic is not None:
        return ClientCredentials(client_id=basic[0], secret=basic[1], method=METHOD_BASIC), False
    if kind != ACE_CBOR and client_id is not None and secret is not None:
        return ClientCredentials(client_id=client_id, secret=secret, method=METHOD_POST), True
    return None, False


def _peer() -> str:
    return request.remote_addr or ""


def _user_credentials() -> ClientCredentials | None:
    """An approver's user name and password from ``Authorization: Basic`` (RFC 7617), or ``None``.

    :raises ApiUnauthorized: another scheme, or a value that does not decode.
    """
    try:
        basic = _basic_credentials()
    except OAuthError:
        raise ApiUnauthorized("malformed credentials") from None
    return None if basic is None else ClientCredentials(basic[0], basic[1], METHOD_BASIC)


def _query() -> dict[str, str]:
    """The query parameters; a repeated one is refused."""
    args = request.args
    if any(len(args.getlist(key)) > 1 for key in args):
        raise ApiBadRequest("a query parameter is repeated")
    return {key: args[key] for key in args}


def _api_body(max_payload: int) -> dict[str, Any]:
    """The JSON object of a consent API request (an empty body is ``{}``).

    :raises ApiUnsupportedMediaType: a body that is not ``application/json``.
    :raises ApiBadRequest: malformed JSON, or JSON that is not an object.
    """
    body = _read_body(max_payload)
    if not body:
        return {}
    if request.mimetype != JSON:
        raise ApiUnsupportedMediaType("the body must be application/json")
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiBadRequest("the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise ApiBadRequest("the body must be a JSON object")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json(status: int, value: Any) -> Response:
    return _response(status, json.dumps(value, separators=(",", ":"), sort_keys=True).encode(), JSON)


# --- response side --------------------------------------------------------------------------------------------


def _success(message: AccessInformation | IntrospectionResponse, kind: str) -> Response:
    if kind == ACE_CBOR:
        return _response(200, message.to_cbor(), ACE_CBOR)
    return _response(200, json_body(message), JSON)


def _response(status: int, body: bytes, content_type: str | None, headers: dict[str, str] | None = None) -> Response:
    response = Response(body, status=status, headers={**NO_STORE, **(headers or {})})
    if content_type is None:
        del response.headers["Content-Type"]
    else:
        response.content_type = content_type
    return response


def _error(exc: BaseException, kind: str, max_payload: int, base_uri: str | None = None) -> Response:
    """Render an exception as the HTTP response of :func:`error_outcome`."""
    outcome = error_outcome(exc, max_payload=max_payload, base_uri=base_uri)
    headers: dict[str, str] = {}
    if outcome.status == Status.UNAUTHORIZED:
        headers["WWW-Authenticate"] = CHALLENGE
    if outcome.retry_after is not None:
        headers["Retry-After"] = str(outcome.retry_after)
    if outcome.api_body is not None:
        assert outcome.http_status is not None
        body = json.dumps(outcome.api_body, separators=(",", ":")).encode()
        return _response(outcome.http_status, body, JSON, headers)
    if outcome.status == Status.INTERNAL_SERVER_ERROR:
        body = json.dumps(generic_server_error(), separators=(",", ":")).encode()
        return _response(500, body, JSON, headers)
    if outcome.body is None:
        return _response(outcome.status.http_status, b"", None, headers)
    return _response(outcome.status.http_status, _error_body(outcome.body, kind), kind, headers)


def _error_body(message: ErrorResponse, kind: str) -> bytes:
    return message.to_cbor() if kind == ACE_CBOR else json_body(message)


def _http_error(exc: HTTPException) -> BaseResponse:
    """404, 405 (with ``Allow``) and other routing errors: their status, a small JSON body, no HTML."""
    response = exc.get_response()
    payload: dict[str, Any] = {"error": (exc.name or "error").lower().replace(" ", "_")}
    response.set_data(json.dumps(payload, separators=(",", ":")).encode())
    response.content_type = JSON
    response.headers.update(NO_STORE)
    return response
