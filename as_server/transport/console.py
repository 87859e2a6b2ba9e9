"""HTTP side of the facility manager console (issue #6): server-rendered pages under ``/console/`` and their JSON
twins under ``/console/api/``. The logic and every permission check are in :class:`as_server.console.ConsoleService`
(and :class:`~as_server.consent.ConsentService`); this module only adapts (STYLE §3.1).

* **Sessions**: one cookie (:data:`SESSION_COOKIE`, ``Path=/console``, ``HttpOnly``, ``SameSite=Strict``) holding
  the session sealed with the master key (:class:`~as_server.console.SessionCodec`), re-sealed on every request
  (sliding idle timeout). It is ``Secure`` unless the AS's public base URL is plain ``http`` on a loopback address
  (development on one machine, ``http://127.0.0.1:8080/console/``); behind a TLS proxy set ``http_base_url =
  "https://..."``. A deployment reached over plain http on another address gets a ``Secure`` cookie the browser
  never sends back: sign-in then fails safe.
* **CSRF**: every form has a ``csrf_token``; a POST without a valid one gets a 403 page. The sign-in form's token
  is bound to a pre-session cookie (:data:`PRE_SESSION_COOKIE`), the others to the session id.
* **Errors**: an :class:`~as_server.errors.ApiError` is rendered as a page with its fixed description and status;
  anything else as a plain 500 page, with the traceback in the server log only. Pages carry ``Cache-Control:
  no-store``, a CSP without scripts (the inline style by nonce, no external assets) and ``frame-ancestors 'none'``.
* **JSON API** (HTTP Basic with a manager's or admin's user name and password, counted by the same failure limit;
  the consent actions are at ``/consent/...``, :mod:`as_server.endpoints.consent`): ``GET /console/api/tokens``
  (``client``, ``user``, ``lock``, ``page``), ``POST /console/api/tokens/<cti>/revoke``, ``GET /console/api/locks``,
  ``GET /console/api/clients``, ``POST /console/api/clients`` (``client_id``, ``name``, ``audiences``),
  ``POST /console/api/clients/<id>/rotate|disable|enable``, ``POST /console/api/locks`` (``audience``,
  ``max_lifetime``), ``GET /console/api/users``, ``POST /console/api/users`` (``name``, ``role``, ``password``...),
  ``POST /console/api/users/<name>/disable|enable``, ``PUT /console/api/users/<name>/sites`` (``{"sites": [...]}``),
  ``GET /console/api/audit`` (the audit page's filters), ``GET /console/api/devices`` (``site``, ``page``),
  ``POST /console/api/devices/claim`` (``enrolment_id``, ``site``), ``POST /console/api/devices/<serial>/release``
  (``tokens_revoked``: ``null`` when the lock was never bootstrapped).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import quote, urlencode, urlsplit

from flask import Flask, Response, g, redirect, render_template, request
from werkzeug.exceptions import HTTPException

from ace_core.errors import AceError
from as_server.app import AuthorizationServer
from as_server.console import (
    CONSOLE_BINDING,
    NO_DEVICES,
    ConsoleService,
    ConsoleUser,
    DeviceRow,
    contact_text,
    iso,
    page_number,
    scope_text,
)
from as_server.errors import ApiBadRequest, ApiError, ApiForbidden, ApiUnauthorized, TooManyRequests
from as_server.oauth.signin import SignInFailed
from policies.scopes import format_scope

__all__ = ["CONSOLE_PATH", "PRE_SESSION_COOKIE", "SESSION_COOKIE", "install", "render_error"]

log = logging.getLogger("ostiary.as.console")

CONSOLE_PATH: Final = "/console"
SESSION_COOKIE: Final = "ostiary_console"
PRE_SESSION_COOKIE: Final = "ostiary_console_csrf"
EXPIRED: Final = "This form has expired or was not sent by this server. Please try again."
SIGNED_OUT: Final = "Your session has ended. Please sign in again."
NOTICES: Final = {
    "approved": "The access request is approved.",
    "denied": "The access request is denied.",
    "grant-revoked": "The grant is revoked; its tokens are revoked too.",
    "token-revoked": "The token is revoked; introspection now answers inactive.",
    "client-disabled": "The client is disabled and its tokens are revoked.",
    "client-enabled": "The client is enabled.",
    "user-added": "The user is added.",
    "user-disabled": "The user is disabled and their tokens are revoked.",
    "user-enabled": "The user is enabled.",
    "sites-saved": "The sites are saved.",
    "group-added": "The group is added.",
    "member-added": "The member is added.",
    "signed-out": "You are signed out.",
}
_LOOPBACK: Final = frozenset({"127.0.0.1", "::1", "localhost"})


def _nav(who: ConsoleUser) -> list[tuple[str, str]]:
    items = [
        ("/console/", "Dashboard"),
        ("/console/requests", "Requests"),
        ("/console/grants", "Grants"),
        ("/console/tokens", "Tokens"),
        ("/console/locks", "Locks"),
        ("/console/devices", "Devices"),
        ("/console/clients", "Clients"),
    ]
    if who.is_admin:
        items.append(("/console/users", "Users"))
    items += [("/console/policy", "Policy"), ("/console/audit", "Audit")]
    return items


def _headers(response: Response, nonce: str) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src 'nonce-{nonce}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    return response


def render_error(exc: BaseException) -> Response:
    """The console's page for an error escaping a view (see the module documentation)."""
    if isinstance(exc, ApiError):
        status, title, message = exc.http_status, "Cannot do that", exc.description
    elif isinstance(exc, TooManyRequests):
        status, title, message = 429, "Too many attempts", "Too many failed sign-ins. Please wait and try again."
    elif isinstance(exc, HTTPException) and exc.code is not None and exc.code < 500:
        status, title = exc.code, exc.name or "Error"
        message = "There is no such page." if exc.code == 404 else "The request cannot be handled."
    else:
        log.error("console: unexpected error", exc_info=exc)
        status, title, message = 500, "Something went wrong", "The server could not do that. It has been logged."
    if request.path.startswith(CONSOLE_PATH + "/api/"):
        body = json.dumps({"error": title.lower().replace(" ", "_"), "error_description": message})
        return Response(body, status=status, content_type="application/json", headers={"Cache-Control": "no-store"})
    nonce = secrets.token_urlsafe(16)
    who = g.get("console_user")
    context = {"who": who, "nav": _nav(who) if who else [], "csrf_token": g.get("console_csrf", "")}
    body = render_template("console/error.html", nonce=nonce, title=title, message=message, **context)
    response = _headers(Response(body, status=status, content_type="text/html; charset=utf-8"), nonce)
    if isinstance(exc, TooManyRequests):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def install(app: Flask, server: AuthorizationServer) -> None:
    """Add the console's pages and JSON API to ``app``."""
    console: ConsoleService = server.console
    base = server.settings.effective_http_base_url
    secure = not (base.startswith("http://") and (urlsplit(base).hostname or "") in _LOOPBACK)
    app.extensions["ostiary.console_error"] = render_error
    console.attach_devices(server.settings)  # the device registry in $OSTIARY_HOME, opened at first use

    def set_cookie(response: Response, name: str, value: str, *, max_age: int | None = None) -> None:
        response.set_cookie(
            name, value, path=CONSOLE_PATH, httponly=True, secure=secure, samesite="Strict", max_age=max_age
        )

    def page(template: str, code: int = 200, **context: Any) -> Response:
        nonce = secrets.token_urlsafe(16)
        who: ConsoleUser | None = g.get("console_user")
        notice = NOTICES.get(request.args.get("done", ""))
        body = render_template(
            f"console/{template}",
            nonce=nonce,
            who=who,
            nav=_nav(who) if who else [],
            current=request.path,
            csrf_token=g.get("console_csrf", ""),
            notice=context.pop("notice", notice),
            error=context.pop("error", None),
            scope=scope_text,
            fmt=format_scope,
            when=iso,
            contact=contact_text,
            now=console.now(),
            **context,
        )
        return _headers(Response(body, status=code, content_type="text/html; charset=utf-8"), nonce)

    def done(path: str, code: str) -> Response:
        response = redirect(f"{path}?done={code}", code=303)
        assert isinstance(response, Response)
        return response

    # -- sessions ------------------------------------------------------------------------------------------------

    @app.before_request
    def _load_session() -> None:
        if not request.path.startswith(CONSOLE_PATH):
            return
        now = console.now()
        session = console.sessions.open(request.cookies.get(SESSION_COOKIE), now=now)
        if session is None:
            return
        who = console.principal(session.user)
        if who is None:  # disabled, or no longer a manager or admin
            return
        g.console_session = console.sessions.touch(session, now=now)
        g.console_user = who
        g.console_csrf = console.csrf.issue(session.csrf_cookie, CONSOLE_BINDING, now=now)

    @app.after_request
    def _store_session(response: Response) -> Response:
        session = g.get("console_session")
        if session is not None and not g.get("console_signed_out"):
            set_cookie(response, SESSION_COOKIE, console.sessions.seal(session))
        return response

    def signed_in() -> ConsoleUser:
        who: ConsoleUser | None = g.get("console_user")
        if who is None:
            raise _SignInRequired
        return who

    def check_csrf() -> None:
        session = g.get("console_session")
        token = request.form.get("csrf_token")
        if session is None or not console.csrf.check(session.csrf_cookie, token, CONSOLE_BINDING, now=console.now()):
            raise ApiForbidden(EXPIRED)

    def view(func: Callable[..., Response]) -> Callable[..., Response]:
        """Signed in (else to the sign-in page), CSRF-checked for POST, errors as pages."""

        def wrapper(**kwargs: Any) -> Response:
            try:
                who = signed_in()
                if request.method == "POST":
                    check_csrf()
                return func(who, **kwargs)
            except _SignInRequired:
                if request.method == "POST":
                    return render_error(ApiForbidden(SIGNED_OUT))
                to_signin = redirect(CONSOLE_PATH + "/signin", code=303)
                assert isinstance(to_signin, Response)
                return to_signin

        wrapper.__name__ = func.__name__
        return wrapper

    def signin_page(status: int = 200, *, error: str | None = None, username: str = "") -> Response:
        cookie = request.cookies.get(PRE_SESSION_COOKIE)
        if not console.csrf.valid_cookie(cookie):
            cookie = console.csrf.new_cookie()
        assert cookie is not None
        g.console_csrf = console.csrf.issue(cookie, CONSOLE_BINDING, now=console.now())
        response = page("signin.html", status, title="Sign in", error=error, username=username[:256])
        set_cookie(response, PRE_SESSION_COOKIE, cookie)
        return response

    @app.route(CONSOLE_PATH + "/signin", methods=["GET", "POST"])
    def console_signin() -> Response:
        if request.method != "POST":
            if g.get("console_user") is not None:
                return done(CONSOLE_PATH + "/", "")
            return signin_page()
        now = console.now()
        if not console.csrf.check(
            request.cookies.get(PRE_SESSION_COOKIE), request.form.get("csrf_token"), CONSOLE_BINDING, now=now
        ):
            return signin_page(403, error=EXPIRED)
        username = request.form.get("username", "")
        try:
            who = console.sign_in(username, request.form.get("password", ""), peer=request.remote_addr or "", now=now)
        except SignInFailed as exc:
            return signin_page(400, error=str(exc), username=username)
        except TooManyRequests as exc:
            response = signin_page(429, error="Too many failed sign-ins. Please wait and try again.")
            response.headers["Retry-After"] = str(exc.retry_after)
            return response
        except ApiForbidden as exc:
            return signin_page(403, error=exc.description, username=username)
        session = console.sessions.new(who.name, now=now)
        log.info("console: %s signed in from %r", who.actor, request.remote_addr)
        g.console_session = session  # stored by _store_session
        moved = redirect(CONSOLE_PATH + "/", code=303)
        assert isinstance(moved, Response)
        moved.delete_cookie(PRE_SESSION_COOKIE, path=CONSOLE_PATH, secure=secure, httponly=True, samesite="Strict")
        return moved

    @app.post(CONSOLE_PATH + "/signout")
    @view
    def console_signout(who: ConsoleUser) -> Response:
        g.console_signed_out = True
        response = done(CONSOLE_PATH + "/signin", "signed-out")
        response.delete_cookie(SESSION_COOKIE, path=CONSOLE_PATH, secure=secure, httponly=True, samesite="Strict")
        return response

    # -- pages ---------------------------------------------------------------------------------------------------

    def args_for(**fixed: str | None) -> Callable[[int], str]:
        kept = {k: v for k, v in fixed.items() if v}
        return lambda number: urlencode({**kept, "page": number})

    @app.get(CONSOLE_PATH + "/")
    @view
    def console_dashboard(who: ConsoleUser) -> Response:
        return page("dashboard.html", title="Dashboard", data=console.dashboard(who, now=console.now()))

    @app.get(CONSOLE_PATH)
    def console_root() -> Response:
        response = redirect(CONSOLE_PATH + "/", code=308)
        assert isinstance(response, Response)
        return response

    @app.get(CONSOLE_PATH + "/requests")
    @view
    def console_requests(who: ConsoleUser) -> Response:
        status = request.args.get("status", "pending")
        found = console.requests(who, status, page_number(request.args.get("page")), now=console.now())
        return page("requests.html", title="Access requests", page=found, status=status, args=args_for(status=status))

    @app.get(CONSOLE_PATH + "/requests/<request_id>")
    @view
    def console_request(who: ConsoleUser, request_id: str) -> Response:
        found, grant = console.request(who, request_id, now=console.now())
        return page(
            "request.html",
            title="Access request",
            r=found,
            grant=grant,
            form={},
            default_tz=server.settings.consent_timezone,
        )

    @app.post(CONSOLE_PATH + "/requests/<request_id>/approve")
    @view
    def console_approve(who: ConsoleUser, request_id: str) -> Response:
        now = console.now()
        try:
            console.approve(who, request_id, request.form, now=now)
        except ApiBadRequest as exc:  # show the form again, with what was entered
            found, grant = console.request(who, request_id, now=now)
            return page(
                "request.html",
                400,
                title="Access request",
                r=found,
                grant=grant,
                form=request.form,
                default_tz=server.settings.consent_timezone,
                error=exc.description,
            )
        return done(f"{CONSOLE_PATH}/requests/{quote(request_id)}", "approved")

    @app.post(CONSOLE_PATH + "/requests/<request_id>/deny")
    @view
    def console_deny(who: ConsoleUser, request_id: str) -> Response:
        console.deny(who, request_id, request.form.get("reason", ""), now=console.now())
        return done(f"{CONSOLE_PATH}/requests/{quote(request_id)}", "denied")

    @app.get(CONSOLE_PATH + "/grants")
    @view
    def console_grants(who: ConsoleUser) -> Response:
        status = request.args.get("status", "active")
        q = request.args.get("q", "")
        found = console.grants(who, status, q, page_number(request.args.get("page")))
        return page(
            "grants.html",
            title="Grants",
            page=found,
            status=status,
            q=q,
            args=args_for(status=status, q=q),
            disabled_users=console.consent.disabled_users(),
        )

    @app.post(CONSOLE_PATH + "/grants/<grant_id>/revoke")
    @view
    def console_revoke_grant(who: ConsoleUser, grant_id: str) -> Response:
        console.revoke_grant(who, grant_id, now=console.now())
        return done(CONSOLE_PATH + "/grants", "grant-revoked")

    @app.get(CONSOLE_PATH + "/tokens")
    @view
    def console_tokens(who: ConsoleUser) -> Response:
        filters = {k: request.args.get(k, "") for k in ("client", "user", "lock")}
        found = console.tokens(who, **filters, number=page_number(request.args.get("page")))
        return page("tokens.html", title="Tokens", page=found, filters=filters, args=args_for(**filters))

    @app.post(CONSOLE_PATH + "/tokens/<cti>/revoke")
    @view
    def console_revoke_token(who: ConsoleUser, cti: str) -> Response:
        console.revoke_token(who, cti, now=console.now())
        return done(CONSOLE_PATH + "/tokens", "token-revoked")

    @app.get(CONSOLE_PATH + "/clients")
    @view
    def console_clients(who: ConsoleUser) -> Response:
        found = console.clients(who, page_number(request.args.get("page")))
        return page("clients.html", title="Clients", page=found, args=args_for())

    @app.post(CONSOLE_PATH + "/clients")
    @view
    def console_add_client(who: ConsoleUser) -> Response:
        client, secret = console.register_client(who, request.form, now=console.now())
        found = console.clients(who, 1)
        return page(
            "clients.html",
            title="Clients",
            page=found,
            args=args_for(),
            secret=secret,
            secret_for=client.client_id,
            notice="The client is registered.",
        )

    @app.post(CONSOLE_PATH + "/clients/<path:client_id>/<action>")
    @view
    def console_client_action(who: ConsoleUser, client_id: str, action: str) -> Response:
        now = console.now()
        if action == "rotate":
            secret = console.rotate_secret(who, client_id, now=now)
            found = console.clients(who, 1)
            notice = "The secret is replaced; the old one no longer works."
            return page(
                "clients.html", title="Clients", page=found, args=args_for(), secret=secret, secret_for=client_id,
                notice=notice,
            )  # fmt: skip
        if action not in ("disable", "enable"):
            raise ApiBadRequest("Unknown action.")
        console.set_client_enabled(who, client_id, action == "enable", now=now)
        return done(CONSOLE_PATH + "/clients", f"client-{action}d")

    @app.get(CONSOLE_PATH + "/locks")
    @view
    def console_locks(who: ConsoleUser) -> Response:
        found = console.locks(who, page_number(request.args.get("page")))
        contacts = console.last_contacts(found.rows)
        return page("locks.html", title="Locks", page=found, args=args_for(), contacts=contacts)

    @app.post(CONSOLE_PATH + "/locks")
    @view
    def console_add_lock(who: ConsoleUser) -> Response:
        rs, key = console.register_lock(who, request.form, now=console.now())
        found = console.locks(who, 1)
        return page(
            "locks.html", title="Locks", page=found, args=args_for(), key=key, key_for=rs.audience,
            contacts=console.last_contacts(found.rows), notice="The lock is registered.",
        )  # fmt: skip

    def devices_page(who: ConsoleUser, code: int = 200, **context: Any) -> Response:
        site = request.args.get("site", "")
        found = console.devices(who, page_number(request.args.get("page")), site=site)
        return page(
            "devices.html", code, title="Devices", page=found, site=site, args=args_for(site=site),
            no_devices=NO_DEVICES, sites=console.claim_sites(who), type_site=console.may_type_site(who),
            form=context.pop("form", {}), **context,
        )  # fmt: skip

    @app.get(CONSOLE_PATH + "/devices")
    @view
    def console_devices(who: ConsoleUser) -> Response:
        return devices_page(who)

    @app.post(CONSOLE_PATH + "/devices/claim")
    @view
    def console_claim_device(who: ConsoleUser) -> Response:
        typed = (request.form.get("site_other") or "").strip()
        site = typed or request.form.get("site", "")
        try:
            record = console.claim_device(who, request.form.get("enrolment_id", ""), site, now=console.now())
        except ApiError as exc:  # the form again, with what was entered and why not
            return devices_page(who, exc.http_status, error=exc.description, form=request.form)
        notice = f"Claimed {record.serial} ({record.endpoint}) for site {record.site}."
        return devices_page(who, notice=notice)

    @app.get(CONSOLE_PATH + "/devices/<serial>/release")
    @view
    def console_confirm_release(who: ConsoleUser, serial: str) -> Response:
        row = console.device(who, serial)
        return page("release.html", title="Release a device", row=row)

    @app.post(CONSOLE_PATH + "/devices/<serial>/release")
    @view
    def console_release_device(who: ConsoleUser, serial: str) -> Response:
        record, site, revoked = console.release_device(who, serial, now=console.now())
        what = (
            "it was never bootstrapped, so there were no credentials to revoke"
            if revoked is None
            else f"its operational keys are erased, its resource server disabled and {revoked} token(s) revoked"
        )
        notice = f"Released {record.serial} from site {site}: it is unclaimed now; {what}."
        return devices_page(who, notice=notice)

    @app.get(CONSOLE_PATH + "/users")
    @view
    def console_users(who: ConsoleUser) -> Response:
        found = console.users(who, page_number(request.args.get("page")))
        return page("users.html", title="Users", page=found, groups=console.groups(who), args=args_for())

    @app.post(CONSOLE_PATH + "/users")
    @view
    def console_add_user(who: ConsoleUser) -> Response:
        console.add_user(who, request.form, now=console.now())
        return done(CONSOLE_PATH + "/users", "user-added")

    @app.post(CONSOLE_PATH + "/users/<name>/<action>")
    @view
    def console_user_action(who: ConsoleUser, name: str, action: str) -> Response:
        now = console.now()
        if action == "sites":
            console.set_sites(who, name, request.form.get("sites", "").split(), now=now)
            return done(CONSOLE_PATH + "/users", "sites-saved")
        if action not in ("disable", "enable"):
            raise ApiBadRequest("Unknown action.")
        console.set_user_enabled(who, name, action == "enable", now=now)
        return done(CONSOLE_PATH + "/users", f"user-{action}d")

    @app.post(CONSOLE_PATH + "/groups")
    @view
    def console_add_group(who: ConsoleUser) -> Response:
        console.add_group(who, request.form.get("name", ""), now=console.now())
        return done(CONSOLE_PATH + "/users", "group-added")

    @app.post(CONSOLE_PATH + "/groups/members")
    @view
    def console_add_member(who: ConsoleUser) -> Response:
        console.add_member(who, request.form.get("group", ""), request.form.get("user", ""), now=console.now())
        return done(CONSOLE_PATH + "/users", "member-added")

    @app.get(CONSOLE_PATH + "/policy")
    @view
    def console_policy(who: ConsoleUser) -> Response:
        path, source = console.policy_source()
        form = {k: request.args.get(k, "") for k in ("client", "user", "groups", "audience", "scope", "at")}
        explanation, error = None, None
        if form["client"] or form["audience"] or form["scope"]:
            try:
                explanation = console.explain(form, now=console.now())
            except ApiError as exc:
                error = exc.description
        status = 400 if error else 200
        return page(
            "policy.html", status, title="Policy", path=path, source=source, form=form, explanation=explanation,
            error=error,
        )  # fmt: skip

    audit_fields = ("action", "user", "client", "audience", "since", "until")

    @app.get(CONSOLE_PATH + "/audit")
    @view
    def console_audit(who: ConsoleUser) -> Response:
        filters = {k: request.args.get(k, "") for k in audit_fields}
        found = console.audit(who, filters, page_number(request.args.get("page")))
        query = urlencode({k: v for k, v in filters.items() if v})
        return page("audit.html", title="Audit log", page=found, filters=filters, query=query, args=args_for(**filters))

    @app.get(CONSOLE_PATH + "/audit.csv")
    @view
    def console_audit_csv(who: ConsoleUser) -> Response:
        filters = {k: request.args.get(k, "") for k in audit_fields}
        body = console.audit_csv(who, filters)
        return Response(
            body,
            content_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="ostiary-audit.csv"', "Cache-Control": "no-store"},
        )

    _install_api(app, server, console)


class _SignInRequired(Exception):
    """No valid session: the views send the browser to the sign-in page."""


def _install_api(app: Flask, server: AuthorizationServer, console: ConsoleService) -> None:
    """The console's actions as JSON (see the module documentation): the same service calls, HTTP Basic."""
    api = CONSOLE_PATH + "/api"

    def caller() -> ConsoleUser:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            raise ApiUnauthorized("authentication required")
        try:
            name, _, password = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise ApiUnauthorized("authentication failed") from None
        try:
            return console.sign_in(name, password, peer=request.remote_addr or "", now=console.now())
        except SignInFailed:
            raise ApiUnauthorized("authentication failed") from None

    def body() -> dict[str, Any]:
        if not request.data:
            return {}
        try:
            value = json.loads(request.get_data(as_text=True))
        except ValueError:
            raise ApiBadRequest("the body is not valid JSON") from None
        if not isinstance(value, dict):
            raise ApiBadRequest("the body must be a JSON object")
        return value

    def form() -> dict[str, str]:
        return {k: v if isinstance(v, str) else " ".join(map(str, v)) for k, v in body().items()}

    def reply(value: Any, status: int = 200) -> Response:
        return Response(
            json.dumps(value, separators=(",", ":"), sort_keys=True),
            status=status,
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    def token_json(t: Any) -> dict[str, Any]:
        return {
            "cti": t.cti.hex(),
            "client_id": t.client_id,
            "subject": t.subject,
            "audience": t.audience,
            "scope": scope_text(t.scope),
            "iat": t.iat,
            "exp": t.exp,
            "status": t.status.value,
        }

    def endpoint(rule: str, methods: list[str]) -> Callable[[Callable[..., Any]], Any]:
        def decorate(func: Callable[..., Any]) -> Any:
            def wrapper(**kwargs: Any) -> Response:
                try:
                    return reply(func(caller(), **kwargs))
                except (AceError, HTTPException) as exc:
                    return render_error(exc)

            wrapper.__name__ = "console_api_" + func.__name__
            app.add_url_rule(api + rule, endpoint=wrapper.__name__, view_func=wrapper, methods=methods)
            return wrapper

        return decorate

    @endpoint("/tokens", ["GET"])
    def tokens(who: ConsoleUser) -> Any:
        a = request.args
        found = console.tokens(
            who, client=a.get("client"), user=a.get("user"), lock=a.get("lock"), number=page_number(a.get("page"))
        )
        return {"tokens": [token_json(t) for t in found.rows], "page": found.number, "has_next": found.has_next}

    @endpoint("/tokens/<cti>/revoke", ["POST"])
    def revoke_token(who: ConsoleUser, cti: str) -> Any:
        return token_json(console.revoke_token(who, cti, now=console.now())) | {"status": "revoked"}

    @endpoint("/locks", ["GET"])
    def locks(who: ConsoleUser) -> Any:
        found = console.list_locks(who)
        contacts = console.last_contacts(found)
        return {
            "locks": [
                {
                    "audience": rs.audience,
                    "enabled": rs.enabled,
                    "max_lifetime": rs.max_lifetime,
                    "last_contact": contacts.get(rs.audience),
                }
                for rs in found
            ]
        }

    @endpoint("/locks", ["POST"])
    def add_lock(who: ConsoleUser) -> Any:
        rs, key = console.register_lock(who, form(), now=console.now())
        return {"audience": rs.audience, "key": key}

    def device_json(row: DeviceRow) -> dict[str, Any]:
        r = row.record
        return {
            "serial": r.serial,
            "model": r.model,
            "endpoint": r.endpoint,
            "batch": r.batch_id,
            "site": r.site,
            "assignment": r.assignment.value,
            "assigned_at": r.assigned_at,
            "released_at": r.released_at,
            "revoked_at": r.revoked_at,
            "decommissioned_at": r.decommissioned_at,
            "state": row.state,
            "last_contact": row.last_contact,
        }

    @endpoint("/devices", ["GET"])
    def devices(who: ConsoleUser) -> Any:
        found = console.devices(who, page_number(request.args.get("page")), site=request.args.get("site"))
        if found is None:
            return {"recorded": False, "devices": [], "page": 1, "has_next": False}
        rows = [device_json(row) for row in found.rows]
        return {"recorded": True, "devices": rows, "page": found.number, "has_next": found.has_next}

    @endpoint("/devices/claim", ["POST"])
    def claim_device(who: ConsoleUser) -> Any:
        values = form()
        record = console.claim_device(who, values.get("enrolment_id", ""), values.get("site", ""), now=console.now())
        return device_json(console.device(who, record.serial))

    @endpoint("/devices/<serial>/release", ["POST"])
    def release_device(who: ConsoleUser, serial: str) -> Any:
        record, site, revoked = console.release_device(who, serial, now=console.now())
        return {"serial": record.serial, "released_from": site, "assignment": record.assignment.value,
                "tokens_revoked": revoked}  # fmt: skip

    @endpoint("/clients", ["GET"])
    def clients(who: ConsoleUser) -> Any:
        found = console.clients(who, page_number(request.args.get("page")))
        return {
            "clients": [
                {
                    "client_id": c.client_id,
                    "name": c.display_name,
                    "enabled": c.enabled,
                    "audiences": sorted(c.audiences),
                }
                for c in found.rows
            ],
            "has_next": found.has_next,
        }

    @endpoint("/clients", ["POST"])
    def add_client(who: ConsoleUser) -> Any:
        client, secret = console.register_client(who, form(), now=console.now())
        return {"client_id": client.client_id, "client_secret": secret}

    @endpoint("/clients/<path:client_id>/<action>", ["POST"])
    def client_action(who: ConsoleUser, client_id: str, action: str) -> Any:
        if action == "rotate":
            return {"client_id": client_id, "client_secret": console.rotate_secret(who, client_id, now=console.now())}
        if action not in ("disable", "enable"):
            raise ApiBadRequest("unknown action")
        revoked = console.set_client_enabled(who, client_id, action == "enable", now=console.now())
        return {"client_id": client_id, "enabled": action == "enable", "tokens_revoked": revoked}

    @endpoint("/users", ["GET"])
    def users(who: ConsoleUser) -> Any:
        found = console.users(who, page_number(request.args.get("page")))
        return {
            "users": [
                {"name": u.name, "role": u.role.value, "enabled": u.enabled, "groups": groups, "sites": list(sites)}
                for u, groups, sites in found.rows
            ],
            "has_next": found.has_next,
        }

    @endpoint("/users", ["POST"])
    def add_user(who: ConsoleUser) -> Any:
        user = console.add_user(who, form(), now=console.now())
        return {"name": user.name, "role": user.role.value}

    @endpoint("/users/<name>/<action>", ["POST"])
    def user_action(who: ConsoleUser, name: str, action: str) -> Any:
        if action not in ("disable", "enable"):
            raise ApiBadRequest("unknown action")
        revoked = console.set_user_enabled(who, name, action == "enable", now=console.now())
        return {"name": name, "enabled": action == "enable", "tokens_revoked": revoked}

    @endpoint("/users/<name>/sites", ["PUT"])
    def user_sites(who: ConsoleUser, name: str) -> Any:
        sites = body().get("sites")
        if not isinstance(sites, list) or not all(isinstance(s, str) for s in sites):
            raise ApiBadRequest("sites must be a list of audience patterns")
        return {"name": name, "sites": list(console.set_sites(who, name, sites, now=console.now()))}

    @endpoint("/audit", ["GET"])
    def audit_entries(who: ConsoleUser) -> Any:
        filters = {k: request.args.get(k, "") for k in ("action", "user", "client", "audience", "since", "until")}
        found = console.audit(who, filters, page_number(request.args.get("page")))
        return {
            "entries": [
                {
                    "at": e.at,
                    "action": e.action,
                    "actor": e.actor,
                    "client_id": e.client_id,
                    "subject": e.subject,
                    "audience": e.audience,
                    "scope": e.scope,
                    "detail": e.detail,
                }
                for e in found.rows
            ],
            "has_next": found.has_next,
        }
