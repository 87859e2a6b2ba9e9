"""HTTP side of apps signing users in: ``/authorize`` and its sign-in page (RFC 6749 §4.1.1-§4.1.2, RFC 8252).

The protocol work is Authlib's ``AuthorizationServer`` (Flask integration,
:class:`authlib.integrations.flask_oauth2.AuthorizationServer`) configured by
:meth:`as_server.oauth.flows.OAuthFlows.configure`; this module only adapts (STYLE §3.1):

* ``GET /authorize`` (RFC 6749 §4.1.1) validates the authorization request and shows the sign-in page
  (``templates/authorize.html``: plain server-rendered HTML, labelled fields, no scripts, no external assets);
* ``POST /authorize`` checks the page's CSRF token (:mod:`as_server.oauth.signin`), then either denies
  (``error=access_denied``, RFC 6749 §4.1.2.1) or signs the user in and redirects with ``code`` and ``state``.

The code is exchanged at ``/token`` like any grant (:mod:`as_server.oauth.flows`): no HTTP-specific code here.

The authorization request is read from the query string only -- a POST carries it in its ``action`` URL and the
form holds only the page's own fields -- so what the user approves is exactly what the CSRF token is bound to.

**Errors.** A request whose client or redirect URI is not valid must not be redirected (RFC 6749 §4.1.2.1): the
page says so (400) in fixed text. Any other error is redirected to the client with ``error`` and ``state``. A failed
sign-in shows the page again (400) with one message for every reason (no user enumeration); too many failures 429
with ``Retry-After``; a missing or stale CSRF token 403. Responses carry ``Cache-Control: no-store``, a restrictive
``Content-Security-Policy`` (no scripts; the inline style by nonce; ``frame-ancestors 'none'``, with
``X-Frame-Options: DENY``, against clickjacking, RFC 6749 §10.13) and ``Referrer-Policy: no-referrer``. The page's
``form-action`` names this AS and the request's (validated) redirect URI, see :func:`redirect_source`: Chromium and
Safari apply ``form-action`` to the redirect that answers the form, so ``'self'`` alone stopped the user's browser
on the sign-in page after "Sign in and allow" (the code issued, never delivered).

Authlib checks that the AS is reached over TLS (RFC 6749 §3.1): the URL it checks is the configured public base
URL (:attr:`~as_server.config.Settings.http_base_url`) plus the path, so a deployment behind a TLS proxy sets
``http_base_url = "https://..."``; plain ``http`` works only on loopback addresses (development).
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any, Final
from urllib.parse import urlsplit

from authlib.integrations.flask_oauth2 import AuthorizationServer as FlaskAuthorizationServer
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Payload, FlaskOAuth2Request
from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc6749.errors import InvalidRequestError, OAuth2Error
from flask import Flask, Response, render_template, request
from werkzeug.datastructures import MultiDict

from as_server.app import AUTHORIZE_PATH, AuthorizationServer
from as_server.errors import TooManyRequests
from as_server.oauth.flows import OAuthFlows
from as_server.oauth.signin import SignInFailed, request_binding

__all__ = ["CSRF_COOKIE", "install"]

log = logging.getLogger("ostiary.as.authorize")

#: The sign-in page's CSRF cookie (scoped to the authorization endpoint).
CSRF_COOKIE: Final = "ostiary_csrf"
#: Fixed texts of the page (never request data).
EXPIRED: Final = "This page has expired or was not sent by this server. Please try again."
TOO_MANY: Final = "Too many failed sign-ins. Please wait and try again later."
INVALID_REQUEST: Final = "The app sent a request this server cannot accept."
UNKNOWN_CLIENT: Final = "The app is not known to this server, or its return address is not registered."
INSECURE: Final = "This server must be reached over HTTPS."


class _QueryPayload(FlaskOAuth2Payload):  # type: ignore[misc]  # Authlib ships no type information
    """The authorization request is the query string, also on a POST (see the module documentation)."""

    @property
    def data(self) -> MultiDict[str, str]:
        args: MultiDict[str, str] = self._request.args
        return args


class _AuthlibServer(FlaskAuthorizationServer):  # type: ignore[misc]
    """Authlib's Flask authorization server, reading requests against the configured public URL."""

    def __init__(self, app: Flask, flows: OAuthFlows, public_base: str) -> None:
        super().__init__(app, query_client=flows.query_client, save_token=_not_used)
        self._public_base = public_base.rstrip("/")

    def get_authorization_grant(self, oauth_request: OAuth2Request) -> Any:
        """Authlib's, but an unknown ``response_type`` that Authlib cannot quote (characters outside RFC 6749 §5.2)
        is refused without quoting it."""
        try:
            return super().get_authorization_grant(oauth_request)
        except ValueError:
            raise InvalidRequestError("The response_type is not supported.") from None

    def create_oauth2_request(self, req: Any) -> OAuth2Request:
        if isinstance(req, OAuth2Request):
            return req
        oauth_request = FlaskOAuth2Request.__new__(FlaskOAuth2Request)
        full_path = request.full_path if request.query_string else request.path
        OAuth2Request.__init__(oauth_request, request.method, self._public_base + full_path, headers=request.headers)
        oauth_request._request = request
        oauth_request.payload = _QueryPayload(request)
        return oauth_request


def _not_used(token: Any, oauth_request: Any) -> None:  # pragma: no cover - tokens are recorded by the endpoint
    raise AssertionError("Authlib's save_token is not used: the token endpoint records ACE tokens")


#: A CSP source expression we build from a redirect URI: a scheme, or a scheme with a host (and port); nothing that
#: could end the directive or add another (CSP3 §2.3.1 ``scheme-source`` / ``host-source``).
_CSP_SOURCE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:(//(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+)(:[0-9]{1,5})?)?")


def redirect_source(redirect_uri: str | None) -> str | None:
    """The CSP source that lets the sign-in form's answer redirect to ``redirect_uri`` (already validated against
    the client's registration, RFC 6749 §3.1.2.3): its origin for ``http``/``https`` (a loopback port of RFC 8252
    §7.3 included), its scheme for a private-use scheme (RFC 8252 §7.1: ``com.example.app:``). ``None`` when there
    is none or it would not be a plain source expression.

    >>> redirect_source("http://127.0.0.1:53682/callback"), redirect_source("com.example.doorapp:/callback")
    ('http://127.0.0.1:53682', 'com.example.doorapp:')
    """
    if not redirect_uri:
        return None
    parts = urlsplit(redirect_uri)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        host = parts.hostname or ""
        try:
            port = parts.port
        except ValueError:
            return None
        source = f"{scheme}://{f'[{host}]' if ':' in host else host}{f':{port}' if port is not None else ''}"
    elif "." in scheme:  # a private-use scheme is a reverse domain name (as_server.oauth.redirect_uris)
        source = f"{scheme}:"
    else:
        return None
    return source if _CSP_SOURCE.fullmatch(source) else None


def _security_headers(response: Response, nonce: str, *, form_target: str | None = None) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    form_action = "'self'" if form_target is None else f"'self' {form_target}"
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src 'nonce-{nonce}'; form-action {form_action}; frame-ancestors 'none'; "
        "base-uri 'none'"
    )
    return response


def install(app: Flask, server: AuthorizationServer) -> None:
    """Add ``/authorize`` (and its sign-in page) to ``app``."""
    flows = server.oauth
    base = server.settings.effective_http_base_url.rstrip("/")
    secure_cookie = base.startswith("https://")
    authlib = _AuthlibServer(app, flows, base)
    flows.configure(authlib)

    def page(status: int, *, cookie: str | None = None, form_target: str | None = None, **context: Any) -> Response:
        nonce = secrets.token_urlsafe(16)
        body = render_template("authorize.html", nonce=nonce, **{"fatal": False, "error": None, **context})
        response = Response(body, status=status, content_type="text/html; charset=utf-8")
        if cookie is not None:
            response.set_cookie(
                CSRF_COOKIE,
                cookie,
                path=AUTHORIZE_PATH,
                httponly=True,
                secure=secure_cookie,
                samesite="Strict",
            )
        return _security_headers(response, nonce, form_target=form_target)

    def fatal(message: str) -> Response:
        return page(400, fatal=True, error=message)

    def redirect_error(error: OAuth2Error) -> Response:
        response: Response = authlib.handle_error_response(None, error)
        return _security_headers(response, secrets.token_urlsafe(16))

    def show(grant: Any, *, status: int = 200, error: str | None = None, username: str = "") -> Response:
        cookie = request.cookies.get(CSRF_COOKIE)
        if not flows.csrf.valid_cookie(cookie):
            cookie = flows.csrf.new_cookie()
        assert cookie is not None
        token = flows.csrf.issue(cookie, request_binding(request.args.items(multi=True)), now=flows.now())
        target = grant.request.ostiary_target
        client = grant.request.client.client
        return page(
            status,
            cookie=cookie,
            form_target=redirect_source(grant.redirect_uri),  # where the answer to the form redirects
            error=error,
            username=username,
            client_name=client.display_name or client.client_id,
            audience=target.audience,
            rights=target.rights,
            csrf_token=token,
            action=request.full_path if request.query_string else request.path,
        )

    @app.route(AUTHORIZE_PATH, methods=["GET", "POST"])
    def authorize() -> Response:
        """RFC 6749 §4.1.1-§4.1.2: the sign-in page, and the user's decision."""
        try:
            grant = authlib.get_consent_grant(end_user=None)
        except OAuth2Error as error:
            if error.redirect_uri:
                return redirect_error(error)
            log.info("authorization request refused without redirect: %s (%s)", error.error, error.description)
            if error.error == "insecure_transport":
                return fatal(INSECURE)
            return fatal(UNKNOWN_CLIENT if error.error == "invalid_client" else INVALID_REQUEST)
        if request.method != "POST":  # GET (and HEAD)
            return show(grant)
        now = flows.now()
        form = request.form
        binding = request_binding(request.args.items(multi=True))
        if not flows.csrf.check(request.cookies.get(CSRF_COOKIE), form.get("csrf_token"), binding, now=now):
            return show(grant, status=403, error=EXPIRED)
        decision = form.get("decision")
        if decision == "deny":
            response: Response = authlib.create_authorization_response(grant=grant, grant_user=None)
            return _security_headers(response, secrets.token_urlsafe(16))
        if decision != "allow":
            return show(grant, status=400, error=INVALID_REQUEST)
        username = form.get("username", "")
        try:
            user = flows.signin.authenticate(
                username,
                form.get("password", ""),
                client_id=grant.request.client.client.client_id,
                peer=request.remote_addr or "",
                now=now,
            )
        except SignInFailed as exc:
            return show(grant, status=400, error=str(exc), username=username[:256])
        except TooManyRequests as exc:
            response = show(grant, status=429, error=TOO_MANY, username=username[:256])
            response.headers["Retry-After"] = str(exc.retry_after)
            return response
        response = authlib.create_authorization_response(grant=grant, grant_user=user)
        return _security_headers(response, secrets.token_urlsafe(16))
