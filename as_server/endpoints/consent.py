"""The consent API: the access-request resource apps poll, and the approvers' JSON API (issue #5, consent workflow).

Framework-free, like the token endpoint: each method takes decoded input (the path's id, the query's fields, the
JSON body as a mapping, the caller's credentials) and returns a JSON-able ``dict`` or raises an
:class:`~as_server.errors.ApiError` (a status and a fixed ``error_description``). The HTTP transport
(:mod:`as_server.transport.http`) only parses and renders; the web console of a later issue can call the same
methods with a session instead of HTTP Basic. The authorization rules live in
:class:`~as_server.consent.ConsentService`.

=====================================================  ==========================================================
HTTP                                                   what
=====================================================  ==========================================================
``GET /access-requests/{id}``                          the request's state for the app; no authentication: the id
                                                       is the capability (:mod:`as_server.consent`)
``GET /consent/requests?status=pending&limit=100``     requests the caller may decide (``status``: ``pending``
                                                       (default), ``approved``, ``denied``, ``expired``, ``all``)
``GET /consent/requests/{id}``                         one of them, with the approvers, reason and grant
``POST /consent/requests/{id}/approve``                approve; JSON body (all optional): ``scope``,
                                                       ``valid_from``, ``valid_until``, ``windows``, ``timezone``,
                                                       ``max_lifetime``, ``note``
                                                       (:func:`~as_server.consent.parse_approval`)
``POST /consent/requests/{id}/deny``                   deny; JSON body (optional): ``note``
``GET /consent/grants?status=active&limit=100``        grants the caller may revoke (``active``, ``revoked``, ``all``)
``GET /consent/grants/{id}``                           one grant and the tokens issued under it
``POST /consent/grants/{id}/revoke``                   revoke it and its tokens
=====================================================  ==========================================================

Approvers authenticate with their user name and password (HTTP Basic, RFC 7617) for now; failures are counted
like client authentication failures (429 beyond the limit). Errors: 400 malformed input, 401 no or wrong
credentials, 403 wrong role / not an approver of this request / one's own request, 404 unknown, 409 already decided
or revoked, 415 a body that is not JSON.

Times are seconds since the epoch. Scopes are in the form the token endpoint uses over HTTP: a text scope string,
or AIF as ``application/aif+json`` text (:func:`as_server.tokens.json_scope`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from as_server.auth import ClientCredentials
from as_server.consent import Approver, ConsentService, grant_scope, parse_approval
from as_server.errors import ApiBadRequest, ApiNotFound, ApiUnauthorized
from as_server.models import AccessRequestStatus, ConsentRequest, Grant, GrantStatus
from as_server.tokens import json_scope

__all__ = ["ConsentApi", "grant_view", "public_view", "request_view"]

#: Most records one listing returns.
MAX_LIMIT: Final = 1000
_REQUEST_STATUSES = {s.value: s for s in AccessRequestStatus}
_GRANT_STATUSES = {s.value: s for s in GrantStatus}


def _window(grant: Grant) -> dict[str, Any]:
    return {
        "valid_from": grant.valid_from,
        "valid_until": grant.valid_until,
        "windows": list(grant.windows),
        "timezone": grant.timezone,
        "max_lifetime": grant.max_lifetime,
    }


def public_view(
    request: ConsentRequest, grant: Grant | None, *, scope_form: Callable[[bytes | str], Any]
) -> dict[str, Any]:
    """What the app sees at the request's URI: status, audience, scope, times, and the approved grant.

    :param scope_form: how scopes are written (JSON: :func:`~as_server.tokens.json_scope`; CBOR: as stored).
    """
    view: dict[str, Any] = {
        "id": request.id,
        "status": request.status.value,
        "client_id": request.client_id,
        "audience": request.audience,
        "scope": scope_form(request.scope),
        "requested_at": request.created_at,
        "expires_at": request.expires_at,
        "decided_at": request.decided_at,
    }
    if grant is not None:
        view["granted"] = {"scope": scope_form(grant.scope), "status": grant.status.value, **_window(grant)}
    return view


def request_view(request: ConsentRequest, grant: Grant | None) -> dict[str, Any]:
    """What approvers see of a request."""
    return {
        "id": request.id,
        "status": request.status.value,
        "client_id": request.client_id,
        "subject": request.subject,
        "audience": request.audience,
        "scope": json_scope(request.scope),
        "reason": request.reason,
        "approvers": list(request.approvers),
        "rules": list(request.rules),
        "requested_from": request.requested_from,
        "requested_until": request.requested_until,
        "created_at": request.created_at,
        "updated_at": request.updated_at,
        "request_count": request.request_count,
        "expires_at": request.expires_at,
        "decided_at": request.decided_at,
        "decided_by": request.decided_by,
        "note": request.note,
        "grant": None if grant is None else grant_view(grant),
    }


def grant_view(grant: Grant, *, disabled_users: frozenset[str] = frozenset()) -> dict[str, Any]:
    """What approvers see of a grant. ``user_disabled``: the grant is for a user whose account is disabled, so it
    does not count until the user is enabled again (:meth:`~as_server.consent.ConsentService.disabled_users`)."""
    return {
        "id": grant.id,
        "request_id": grant.request_id,
        "status": grant.status.value,
        "client_id": grant.client_id,
        "subject": grant.subject,
        "audience": grant.audience,
        "scope": json_scope(grant.scope),
        **_window(grant),
        "approvers": list(grant.approvers),
        "created_at": grant.created_at,
        "created_by": grant.created_by,
        "revoked_at": grant.revoked_at,
        "revoked_by": grant.revoked_by,
        "user_disabled": grant.subject is not None and grant.subject in disabled_users,
    }


def _limit(query: Mapping[str, str]) -> int:
    raw = query.get("limit", "100")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9 or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiBadRequest(f"limit must be a number from 1 to {MAX_LIMIT}")
    return int(raw)


def _check_query(query: Mapping[str, str]) -> None:
    unknown = sorted(k for k in query if k not in ("status", "limit"))
    if unknown:
        raise ApiBadRequest("unknown query parameter; expected status and limit")


class ConsentApi:
    """The consent API's operations (see the module documentation).

    :param consent: the workflow.
    :param clock: seconds since the epoch; read once per call.
    """

    def __init__(self, consent: ConsentService, *, clock: Callable[[], float] = time.time) -> None:
        self._consent = consent
        self._clock = clock

    def _now(self) -> int:
        return int(self._clock())

    # -- the app's side ----------------------------------------------------------------------------------------

    def poll(self, request_id: str) -> dict[str, Any]:
        """``GET /access-requests/{id}``. :raises ApiNotFound: unknown or malformed id (the same answer)."""
        found = self._consent.poll(request_id, now=self._now())
        if found is None:
            raise ApiNotFound("no such access request")
        return public_view(*found, scope_form=json_scope)

    # -- approvers ---------------------------------------------------------------------------------------------

    def _approver(self, credentials: ClientCredentials | None, peer: str) -> Approver:
        if credentials is None:
            raise ApiUnauthorized("authentication required")
        try:
            password = credentials.secret.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiUnauthorized("authentication failed") from None
        return self._consent.authenticate(credentials.client_id, password, peer=peer, now=self._now())

    def list_requests(
        self, credentials: ClientCredentials | None, query: Mapping[str, str], *, peer: str
    ) -> dict[str, Any]:
        """``GET /consent/requests``."""
        _check_query(query)
        raw = query.get("status", "pending")
        if raw != "all" and raw not in _REQUEST_STATUSES:
            raise ApiBadRequest("status must be pending, approved, denied, expired or all")
        limit = _limit(query)
        approver = self._approver(credentials, peer)
        status = None if raw == "all" else _REQUEST_STATUSES[raw]
        found = self._consent.list_requests(approver, now=self._now(), status=status, limit=limit)
        return {"requests": [request_view(r, None) for r in found]}

    def show_request(self, credentials: ClientCredentials | None, request_id: str, *, peer: str) -> dict[str, Any]:
        """``GET /consent/requests/{id}``."""
        approver = self._approver(credentials, peer)
        return request_view(*self._consent.get_request(approver, request_id, now=self._now()))

    def approve(
        self, credentials: ClientCredentials | None, request_id: str, body: Mapping[str, Any], *, peer: str
    ) -> dict[str, Any]:
        """``POST /consent/requests/{id}/approve``."""
        approver = self._approver(credentials, peer)
        now = self._now()
        request, _ = self._consent.get_request(approver, request_id, now=now)
        approval = parse_approval(body, grant_scope(request.scope), now=now)
        grant = self._consent.approve(approver, request_id, approval, now=now)
        found = self._consent.poll(request_id, now=now)
        assert found is not None
        return request_view(found[0], grant)

    def deny(
        self, credentials: ClientCredentials | None, request_id: str, body: Mapping[str, Any], *, peer: str
    ) -> dict[str, Any]:
        """``POST /consent/requests/{id}/deny``."""
        unknown = sorted(k for k in body if k != "note")
        if unknown:
            raise ApiBadRequest("unknown field; a denial takes only a note")
        note = body.get("note") or ""
        if not isinstance(note, str):
            raise ApiBadRequest("note must be text")
        approver = self._approver(credentials, peer)
        return request_view(self._consent.deny(approver, request_id, note=note, now=self._now()), None)

    def list_grants(
        self, credentials: ClientCredentials | None, query: Mapping[str, str], *, peer: str
    ) -> dict[str, Any]:
        """``GET /consent/grants``."""
        _check_query(query)
        raw = query.get("status", "active")
        if raw != "all" and raw not in _GRANT_STATUSES:
            raise ApiBadRequest("status must be active, revoked or all")
        limit = _limit(query)
        approver = self._approver(credentials, peer)
        status = None if raw == "all" else _GRANT_STATUSES[raw]
        found = self._consent.list_grants(approver, status=status, limit=limit)
        disabled = self._consent.disabled_users()
        return {"grants": [grant_view(g, disabled_users=disabled) for g in found]}

    def show_grant(self, credentials: ClientCredentials | None, grant_id: str, *, peer: str) -> dict[str, Any]:
        """``GET /consent/grants/{id}``, with the tokens issued under the grant."""
        approver = self._approver(credentials, peer)
        grant = self._consent.get_grant(approver, grant_id)
        view = grant_view(grant, disabled_users=self._consent.disabled_users())
        view["tokens"] = [
            {"cti": t.cti.hex(), "status": t.status.value, "iat": t.iat, "exp": t.exp}
            for t in self._consent.tokens_of(grant)
        ]
        return view

    def revoke(self, credentials: ClientCredentials | None, grant_id: str, *, peer: str) -> dict[str, Any]:
        """``POST /consent/grants/{id}/revoke``."""
        approver = self._approver(credentials, peer)
        count = self._consent.revoke(approver, grant_id, now=self._now())
        view = grant_view(self._consent.get_grant(approver, grant_id))
        view["tokens_revoked"] = count
        return view
