"""The consent workflow: access requests, approvals narrowed by the approver, grants the policy engine sees, and
revocation (issue #5, "Consent workflow"). Framework-free: the HTTP API (:mod:`as_server.endpoints.consent`), the
CoAP resource (:mod:`as_server.transport.coap`) and ``ostiary consent`` all call :class:`ConsentService`.

**The flow.**

1. A client asks the token endpoint (RFC 9200 §5.8.1) for rights that a policy rule grants only with consent
   (``effect: consent``; :class:`policies.base.ConsentRequired`). The AS records an *access request*
   (:class:`~as_server.models.ConsentRequest`: requestor subject, client, audience, scope, the policy's reason,
   the requested window, the approvers the rule names) and refuses the token with ``invalid_scope`` -- RFC 6749
   §5.2: "the requested scope is invalid, unknown, malformed, or exceeds the scope granted by the resource owner",
   which is what a pending consent is -- with ``error_description`` "consent pending: follow error_uri for the
   decision" and ``error_uri`` naming the request: ``<http base>/access-requests/<id>`` over HTTP, the ``coap://``
   URI of the same resource on the CoAP side over CoAP (RFC 9200 §5.8.3 lets error responses carry
   ``error_uri``). A request equal to a pending one (same client, subject, audience and scope) is merged into it
   instead (:meth:`~as_server.storage.base.AccessRequestStore.submit_access_request`).
2. The app follows the URI: ``GET`` over HTTP (poll) or CoAP with Observe (RFC 7641), which notifies on the
   decision. It learns the status, and for an approval the approved scope and window.
3. An approver -- a user with role ``admin``, or ``manager`` among the request's approvers (by name, or through a
   group the rule names) -- lists pending requests and approves or denies. Approving may narrow the scope (to a
   subset), the time (weekly windows in a time zone), the validity ("remember until") and the token lifetime. A
   requestor never approves their own request, whatever their role.
4. The approval stores a :class:`~as_server.models.Grant`. :class:`GrantRuleSource`, plugged into the AS's
   :class:`~policies.engine.PolicyEngine`, presents every active grant as a permit rule (``grant#<id>``), so the
   app's next token request is granted -- at most the approved scope, never beyond the grant's windows or
   validity (the engine clips ``exp``, :mod:`policies.engine`).
5. Revoking the grant (or disabling the user or the client) stops new tokens at once -- within the registry
   cache bound, :data:`~as_server.storage.registry_cache.REGISTRY_MAX_AGE` -- and marks the tokens already issued
   under it revoked, so introspection (RFC 9200 §5.9) answers ``active: false``.
6. Requests nobody decides expire after :attr:`~as_server.config.Settings.access_request_lifetime` (default 24 h),
   lazily: whenever one is read or requests are listed.

**Request ids are capabilities.** A request's id is 128 random bits (base64url, 22 characters) and its URI can be
read without authentication: knowing the id is what authorises reading it, as with an unguessable URL. The id
travels only to the client that made the request (in the ``error_uri`` of its own token response, which RFC 9200
requires to be protected) and to approvers and the audit log; the resource shows nothing secret (status, scope,
audience, times, the approved window -- not who asked for whom, the policy's reason or who decided). A poller
without the id learns nothing: an unknown id and a malformed one get the same 404 (4.04).

**Cost.** The happy path of the token endpoint pays nothing for consent: grants come from a per-process cache
validated by the registry version (:meth:`~as_server.storage.base.GrantStore.active_grants`), and the rule source
rebuilds its audience index only when that cached list changes. Recording an access request is a refusal path.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, NoReturn

from ace_core.errors import InvalidScope, WireFormatError
from ace_core.keys import b64url_encode
from ace_core.scope import AifScope, TextScope, decode_scope
from as_server.auth import FailureRateLimiter
from as_server.config import Settings
from as_server.errors import (
    ApiBadRequest,
    ApiConflict,
    ApiForbidden,
    ApiNotFound,
    ApiUnauthorized,
    ConsentPending,
)
from as_server.identity import AuthenticationFailed, IdentityProvider
from as_server.models import (
    AccessRequestStatus,
    ConsentRequest,
    Grant,
    GrantStatus,
    IssuedToken,
    User,
    UserRole,
    grant_rule_id,
)
from as_server.storage.base import NotFoundError, StateError, Storage
from policies.base import Decision, Scope
from policies.policy_file import load_zone
from policies.rules import Effect, Rule
from policies.schedule import MAX_TIME, WeeklySchedule, Window
from policies.scopes import difference, empty_like, intersection, issubset, same_kind, union
from policies.sources import RuleIndex, RuleSource

__all__ = [
    "REQUEST_ID_BYTES",
    "Approval",
    "Approver",
    "ConsentService",
    "GrantRuleSource",
    "grant_scope",
    "grant_to_rule",
    "is_request_id",
    "parse_approval",
]

log = logging.getLogger("ostiary.as.consent")

#: Random bytes of an access request id (128 bits, see the module documentation).
REQUEST_ID_BYTES: Final = 16
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{22}")
#: Longest note an approver may write (characters).
MAX_NOTE: Final = 500
#: Most weekly windows one approval may give.
MAX_WINDOWS: Final = 16
#: Fields an approval may carry (anything else is refused, so a typo is not silently ignored).
APPROVAL_FIELDS: Final = frozenset(
    {"scope", "valid_from", "valid_until", "windows", "timezone", "max_lifetime", "note"}
)

_APPROVER_ROLES = frozenset({UserRole.ADMIN, UserRole.MANAGER})


def is_request_id(text: str) -> bool:
    """Whether ``text`` has the form of an access request id (22 base64url characters)."""
    return _REQUEST_ID.fullmatch(text) is not None


def grant_scope(value: bytes | str) -> Scope:
    """A stored scope value (CBOR form: AIF bytes or text) as a scope object.

    :raises WireFormatError: a malformed stored value.
    """
    return decode_scope(value)


def grant_to_rule(grant: Grant) -> Rule:
    """The permit rule a grant stands for in the policy engine: its client, (user,) audience, scope and conditions.

    :raises ValueError: the grant's conditions are inconsistent (an unknown time zone, a malformed window, ...).
    """
    schedule = None
    if grant.windows:
        zone = load_zone(grant.timezone or "UTC")
        schedule = WeeklySchedule(zone, tuple(Window.parse(w) for w in grant.windows))
    try:
        scope = grant_scope(grant.scope)
    except WireFormatError as exc:
        raise ValueError(f"grant {grant.id}: malformed scope") from exc
    return Rule(
        id=grant_rule_id(grant.id),
        audiences=(grant.audience,),
        scope=scope,
        effect=Effect.PERMIT,
        clients=(grant.client_id,),
        users=(grant.subject,) if grant.subject is not None else (),
        valid_from=grant.valid_from,
        valid_until=grant.valid_until,
        schedule=schedule,
        max_lifetime=grant.max_lifetime,
        source="consent",
        description=f"approved by {grant.created_by}",
    )


class GrantRuleSource(RuleSource):
    """The active grants as permit rules for :class:`~policies.engine.PolicyEngine` (the SQL-backed
    :class:`~policies.sources.RuleSource` of issue #5).

    Each call asks the storage for its active grants, which the storage serves from its registry cache (one
    version check per :data:`~as_server.storage.registry_cache.REGISTRY_MAX_AGE`, no query per token request);
    when the list it returns is a new one, the rules are rebuilt into an audience index
    (:class:`~policies.sources.RuleIndex`), otherwise the index is reused. Thread-safe.

    :param storage: where the grants are.
    """

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._lock = threading.Lock()
        self._grants: Sequence[Grant] | None = None
        self._index = RuleIndex()

    def _current(self) -> RuleIndex:
        grants = self._storage.active_grants()
        if grants is self._grants:
            return self._index
        with self._lock:
            if grants is not self._grants:
                index = RuleIndex()
                for grant in grants:
                    try:
                        index.add(grant_to_rule(grant))
                    except ValueError as exc:  # stored by an older version, or edited by hand
                        log.error("grant %s cannot be used as a rule: %s", grant.id, exc)
                self._index, self._grants = index, grants
            return self._index

    def rules_for(self, *, client_id: str, audience: str, subject: str | None, groups: frozenset[str]) -> list[Rule]:
        """The grants' rules for ``audience`` (subjects and conditions are left to the engine)."""
        return self._current().candidates(audience)

    def rules(self) -> list[Rule]:
        """Every active grant's rule."""
        return list(self._current())


@dataclass(frozen=True, slots=True)
class Approver:
    """A person acting on access requests: the user record and their groups."""

    user: User
    groups: frozenset[str]

    @property
    def name(self) -> str:
        """The user name."""
        return self.user.name

    @property
    def actor(self) -> str:
        """``user:NAME``, as the audit log and ``decided_by`` name approvers."""
        return f"user:{self.user.name}"

    @property
    def is_admin(self) -> bool:
        """Admins may decide every request and revoke every grant."""
        return self.user.role == UserRole.ADMIN

    def is_among(self, approvers: Iterable[str]) -> bool:
        """Whether ``approvers`` (``user:NAME`` / ``group:NAME``) name this person, directly or by a group."""
        for approver in approvers:
            kind, _, name = approver.partition(":")
            if (kind == "user" and name == self.user.name) or (kind == "group" and name in self.groups):
                return True
        return False

    def may_decide(self, approvers: Iterable[str]) -> bool:
        """Admin, or a manager among ``approvers``."""
        return self.is_admin or (self.user.role == UserRole.MANAGER and self.is_among(approvers))


@dataclass(frozen=True, slots=True, kw_only=True)
class Approval:
    """What an approver approves, each narrowing optional (see :func:`parse_approval`).

    :param scope: a subset of the request's scope; ``None``: all of it.
    :param valid_from: the grant is in force from then on; ``None``: at once.
    :param valid_until: "remember until"; ``None``: until revoked.
    :param windows: weekly time windows (``Mon-Fri 09:00-18:00``); empty: at any time.
    :param timezone: the windows' IANA time zone; ``None``: the ``consent_timezone`` setting.
    :param max_lifetime: the longest token lifetime under the grant (seconds).
    """

    scope: Scope | None = None
    valid_from: int | None = None
    valid_until: int | None = None
    windows: tuple[str, ...] = ()
    timezone: str | None = None
    max_lifetime: int | None = None
    note: str = ""


#: A time relative to now, as ``ostiary consent approve --until 30d`` takes it: a count of s, m, h, d or w.
_RELATIVE = re.compile(r"([0-9]{1,9})([smhdw])")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_TIME_FORMS: Final = "an ISO 8601 date-time, seconds since the epoch, or a time from now such as 30d, 12h or 15m"


def _instant(value: Any, what: str, *, now: int) -> int:
    """Seconds since the epoch from an integer, an ISO 8601 date-time (with offset, or UTC), or a time from ``now``
    (``30d``, ``12h``, ``15m``, ``2w``, ``90s``)."""
    if isinstance(value, bool):
        raise ApiBadRequest(f"{what} must be a time")
    relative = _RELATIVE.fullmatch(value) if isinstance(value, str) else None
    if isinstance(value, int):
        t = value
    elif relative is not None:
        t = now + int(relative[1]) * _UNIT_SECONDS[relative[2]]
    elif isinstance(value, str) and len(value) <= 40:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
        except ValueError:
            raise ApiBadRequest(f"{what} must be {_TIME_FORMS}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        t = int(parsed.timestamp())
    else:
        raise ApiBadRequest(f"{what} must be {_TIME_FORMS}")
    if not 0 <= t < MAX_TIME:
        raise ApiBadRequest(f"{what} is out of range")
    return t


def _approved_scope(value: Any, requested: Scope) -> Scope:
    """The scope an approver gives: the same kind as the request's, in any of its usual spellings.

    AIF: a spec string (``"/lock:PUT"``), ``application/aif+json`` text or its array. Text: a scope string or a
    list of scope tokens.
    """
    try:
        if isinstance(requested, AifScope):
            if isinstance(value, str):
                return AifScope.parse_spec(value) if value.startswith("/") else AifScope.from_json_text(value)
            if isinstance(value, list):
                return AifScope.from_json(value)
        else:
            if isinstance(value, str):
                return TextScope.parse(value)
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return TextScope.parse(" ".join(value))
    except (ValueError, TypeError, WireFormatError):
        raise ApiBadRequest("scope is malformed") from None
    raise ApiBadRequest("scope is malformed")


def parse_approval(body: Mapping[str, Any], requested: Scope, *, now: int) -> Approval:
    """Check an approval's fields (the JSON body of ``POST .../approve``, or ``ostiary consent approve``'s options).

    ``scope`` must be a non-empty subset of ``requested``; ``valid_from``/``valid_until`` are ISO 8601 date-times
    (UTC when without offset), seconds since the epoch or times from ``now`` (``30d``, ``12h``), ``valid_until``
    after both ``now`` and ``valid_from``;
    ``windows`` a list of ``"DAYS HH:MM-HH:MM"`` (:class:`policies.schedule.Window`); ``timezone`` an IANA name;
    ``max_lifetime`` a positive number of seconds; ``note`` free text.

    :raises ApiBadRequest: with a fixed description naming the field; unknown fields are refused too.
    """
    unknown = sorted(str(k)[:40] for k in body if k not in APPROVAL_FIELDS)
    if unknown:
        raise ApiBadRequest(f"unknown field {unknown[0]!r}; expected some of {', '.join(sorted(APPROVAL_FIELDS))}")
    scope = None
    if body.get("scope") is not None:
        scope = _approved_scope(body["scope"], requested)
        if scope.is_empty or not same_kind(scope, requested) or not issubset(scope, requested):
            raise ApiBadRequest("scope must be a non-empty subset of the requested scope")
    valid_from = None if body.get("valid_from") is None else _instant(body["valid_from"], "valid_from", now=now)
    valid_until = None if body.get("valid_until") is None else _instant(body["valid_until"], "valid_until", now=now)
    if valid_until is not None and valid_until <= now:
        raise ApiBadRequest("valid_until must be in the future")
    if valid_from is not None and valid_until is not None and valid_from >= valid_until:
        raise ApiBadRequest("valid_from must be before valid_until")
    windows: tuple[str, ...] = ()
    raw_windows = body.get("windows")
    if raw_windows is not None:
        if not isinstance(raw_windows, list) or not all(isinstance(w, str) for w in raw_windows):
            raise ApiBadRequest("windows must be a list of strings such as 'Mon-Fri 09:00-18:00'")
        if len(raw_windows) > MAX_WINDOWS:
            raise ApiBadRequest(f"at most {MAX_WINDOWS} windows")
        try:
            windows = tuple(str(Window.parse(w)) for w in raw_windows if len(w) <= 60)
        except ValueError:
            raise ApiBadRequest("a window is malformed; expected e.g. 'Mon-Fri 09:00-18:00'") from None
        if len(windows) != len(raw_windows):
            raise ApiBadRequest("a window is malformed; expected e.g. 'Mon-Fri 09:00-18:00'")
    timezone = body.get("timezone")
    if timezone is not None:
        if not isinstance(timezone, str) or len(timezone) > 64:
            raise ApiBadRequest("timezone must be an IANA time zone name such as Europe/Berlin")
        try:
            load_zone(timezone)
        except ValueError:
            raise ApiBadRequest("timezone must be an IANA time zone name such as Europe/Berlin") from None
    max_lifetime = body.get("max_lifetime")
    if max_lifetime is not None and (
        isinstance(max_lifetime, bool) or not isinstance(max_lifetime, int) or not 0 < max_lifetime <= 2**31 - 1
    ):
        raise ApiBadRequest("max_lifetime must be a positive number of seconds")
    note = body.get("note", "")
    if note is None:
        note = ""
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise ApiBadRequest(f"note must be text of at most {MAX_NOTE} characters")
    return Approval(
        scope=scope,
        valid_from=valid_from,
        valid_until=valid_until,
        windows=windows,
        timezone=timezone,
        max_lifetime=max_lifetime,
        note=note,
    )


class ConsentService:
    """The consent workflow's logic (see the module documentation); thread-safe.

    :param settings: ``access_request_lifetime``, ``consent_timezone``, the failure rate limit.
    :param storage: access requests, grants, users.
    :param identity: authenticates approvers and knows their groups.
    :param clock: seconds since the epoch (for the HTTP API; the other methods take ``now``).
    :param random_bytes: the source of request ids (``secrets.token_bytes``).
    """

    def __init__(
        self,
        *,
        settings: Settings,
        storage: Storage,
        identity: IdentityProvider,
        clock: Callable[[], float] = time.time,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self._settings = settings
        self._storage = storage
        self.identity = identity
        self.clock = clock
        self._random = random_bytes
        self._limiter = FailureRateLimiter(settings, key_name="user")
        self._listeners: list[Callable[[str], None]] = []
        self._listeners_lock = threading.Lock()

    # -- change notifications (CoAP Observe) ------------------------------------------------------------------

    def _new_request_id(self) -> str:
        """128 random bits in base64url, never starting with ``-`` (a command-line argument starting with ``-``
        would be read as an option: ``ostiary consent approve -x...``). Redrawing on a leading ``-`` leaves the
        id 127.9 bits of entropy."""
        while True:
            candidate = b64url_encode(self._random(REQUEST_ID_BYTES))
            if not candidate.startswith("-"):
                return candidate

    def subscribe(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call ``listener(request_id)`` after every decision or revocation made through this service (this
        process); returns the function that unsubscribes. Listeners must not block."""
        with self._listeners_lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._listeners_lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def _changed(self, request_id: str | None) -> None:
        if request_id is None:
            return
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(request_id)
            except Exception:  # noqa: BLE001 - a broken listener must not undo a decision
                log.exception("consent listener failed")

    # -- the token endpoint's side ----------------------------------------------------------------------------

    def request_consent(
        self, *, client_id: str, subject: str | None, audience: str, decision: Decision, now: int
    ) -> NoReturn:
        """Record (or merge) the access request for a decision that asks for consent, and refuse the token.

        When active grants for this client, subject and audience already cover what needs consent, but none is
        in force now (outside its windows, before its ``valid_from``), no new request is made: the refusal says
        "not granted at this time".

        :raises ConsentPending: an access request records the request (the transport adds the ``error_uri``).
        :raises InvalidScope: the grants exist but are not in force now.
        """
        consent = decision.consent
        assert consent is not None
        wanted: Scope = consent.scope
        covered = empty_like(wanted)
        for grant in self._storage.active_grants():
            if (
                grant.client_id == client_id
                and grant.subject == subject
                and grant.audience == audience
                and (grant.valid_until is None or grant.valid_until > now)
            ):
                try:
                    scope = grant_scope(grant.scope)
                except WireFormatError:
                    continue
                if same_kind(scope, wanted):
                    covered = union(covered, intersection(scope, wanted))
        missing = difference(wanted, covered)
        if missing.is_empty:
            raise InvalidScope("scope not granted at this time", detail="approved grants are not in force now")
        request = ConsentRequest(
            id=self._new_request_id(),
            client_id=client_id,
            subject=subject,
            audience=audience,
            scope=missing.encode_cbor_value(),
            reason=decision.reason,
            approvers=consent.approvers,
            rules=consent.rules,
            requested_from=now,
            requested_until=None,
            created_at=now,
            updated_at=now,
            expires_at=now + self._settings.access_request_lifetime,
        )
        stored, merged = self._storage.submit_access_request(request, actor=f"client:{client_id}")
        log.info(
            "access request %s %s: client_id=%r subject=%r audience=%r approvers=%s",
            stored.id,
            "merged" if merged else "created",
            client_id,
            subject,
            audience,
            ",".join(consent.approvers),
        )
        raise ConsentPending(stored.id, detail=f"consent required ({decision.reason}); access request {stored.id}")

    # -- polling (the capability URI) -------------------------------------------------------------------------

    def poll(self, request_id: str, *, now: int) -> tuple[ConsentRequest, Grant | None] | None:
        """The request and its grant (if approved), or ``None`` for an unknown or malformed id."""
        if not is_request_id(request_id):
            return None
        request = self._storage.get_access_request(request_id, now=now)
        if request is None:
            return None
        grant = self._storage.get_grant(request.id) if request.status == AccessRequestStatus.APPROVED else None
        return request, grant

    def poll_many(self, request_ids: Sequence[str], *, now: int) -> dict[str, tuple[ConsentRequest, Grant | None]]:
        """:meth:`poll` for several ids in one read (observers' polling); unknown ids are left out."""
        found = self._storage.get_access_requests([i for i in request_ids if is_request_id(i)], now=now)
        return {
            r.id: (r, self._storage.get_grant(r.id) if r.status == AccessRequestStatus.APPROVED else None)
            for r in found
        }

    # -- approvers --------------------------------------------------------------------------------------------

    def authenticate(self, name: str, password: str, *, peer: str, now: int) -> Approver:
        """The approver with these credentials (HTTP Basic), rate-limited like client authentication.

        :raises ApiUnauthorized: unknown user, wrong password or disabled account (one answer for all).
        :raises ApiForbidden: the user's role is not ``manager`` or ``admin``.
        :raises TooManyRequests: too many failures for this user name or address.
        """
        self._limiter.check(name, peer, now)
        try:
            user = self.identity.authenticate(name, password)
        except AuthenticationFailed as exc:
            self._limiter.record_failure(name, peer, now)
            log.warning("consent API: authentication failed for user %r from %r (%s)", name[:64], peer, exc)
            raise ApiUnauthorized("authentication failed") from None
        return self._approver(user)

    def approver(self, name: str) -> Approver:
        """The approver ``name`` without a password: for ``ostiary consent --as NAME``, whose operator already has
        the database and the master key.

        :raises ApiUnauthorized: no such user, or the account is disabled.
        :raises ApiForbidden: the user's role is not ``manager`` or ``admin``.
        """
        user = self.identity.user(name)
        if user is None or not user.enabled:
            raise ApiUnauthorized(f"no enabled user {name!r}")
        return self._approver(user)

    def _approver(self, user: User) -> Approver:
        if user.role not in _APPROVER_ROLES:
            raise ApiForbidden("approvers need the role manager or admin")
        return Approver(user, self.identity.groups_of(user.name))

    def list_requests(
        self, approver: Approver, *, now: int, status: AccessRequestStatus | None = None, limit: int = 100
    ) -> list[ConsentRequest]:
        """The requests ``approver`` may decide (admins: all), newest first; expired ones are expired first."""
        found = self._storage.list_access_requests(now=now, status=status, limit=limit if approver.is_admin else 10_000)
        return [r for r in found if approver.may_decide(r.approvers)][:limit]

    def get_request(self, approver: Approver, request_id: str, *, now: int) -> tuple[ConsentRequest, Grant | None]:
        """One request the approver may decide, with its grant.

        :raises ApiNotFound: no such request. :raises ApiForbidden: the approver is not among its approvers.
        """
        found = self.poll(request_id, now=now)
        if found is None:
            raise ApiNotFound("no such access request")
        if not approver.may_decide(found[0].approvers):
            raise ApiForbidden("not an approver of this access request")
        return found

    def approve(self, approver: Approver, request_id: str, approval: Approval, *, now: int) -> Grant:
        """Approve a pending request with ``approval``'s narrowing; returns the stored grant.

        :raises ApiNotFound: :raises ApiForbidden: not an approver, or their own request.
        :raises ApiConflict: not pending (any more).
        :raises ApiBadRequest: the narrowing does not make a valid rule.
        """
        request, _ = self.get_request(approver, request_id, now=now)
        if request.subject is not None and request.subject == approver.name:
            raise ApiForbidden("a requestor cannot approve their own request")
        if request.status != AccessRequestStatus.PENDING:
            raise ApiConflict(f"the access request is already {request.status}; a request is decided once")
        requested = grant_scope(request.scope)
        scope = approval.scope if approval.scope is not None else requested
        windows = approval.windows
        timezone = (approval.timezone or self._settings.consent_timezone) if windows else None
        grant = Grant(
            id=request.id,
            request_id=request.id,
            client_id=request.client_id,
            subject=request.subject,
            audience=request.audience,
            scope=scope.encode_cbor_value(),
            valid_from=approval.valid_from,
            valid_until=approval.valid_until,
            windows=windows,
            timezone=timezone,
            max_lifetime=approval.max_lifetime,
            approvers=request.approvers,
            created_at=now,
            created_by=approver.actor,
        )
        try:
            grant_to_rule(grant)  # every condition must make a rule the engine accepts
        except ValueError as exc:
            raise ApiBadRequest("the approval's conditions are inconsistent", detail=str(exc)) from None
        try:
            self._storage.approve_access_request(request.id, grant, actor=approver.actor, now=now, note=approval.note)
        except NotFoundError:
            raise ApiNotFound("no such access request") from None
        except StateError as exc:
            raise ApiConflict("the access request is no longer pending", detail=str(exc)) from None
        log.info("access request %s approved by %s", request.id, approver.actor)
        self._changed(request.id)
        return grant

    def grant_directly(
        self,
        approver: Approver,
        *,
        client_id: str,
        subject: str | None,
        audience: str,
        scope: Scope,
        approval: Approval,
        now: int,
    ) -> Grant:
        """An administrator's database rule (issue #5 "Sources"): a grant made without an app asking first.

        It is recorded as an access request that the administrator approves at once, so it has the same id,
        audit trail, conditions and revocation as every grant (``approval`` narrows it as in :meth:`approve`,
        except that ``scope`` is given here). A pending request of the same client, user, audience and scope is
        approved by it. Everything is checked before anything is written.

        :raises ApiForbidden: not an administrator. :raises ApiBadRequest: unknown client or audience, an empty
            scope, or conditions that make no valid rule.
        """
        if not approver.is_admin:
            raise ApiForbidden("only administrators create grants without a request")
        if scope.is_empty:
            raise ApiBadRequest("the scope is empty")
        # Only administrators get here, who named the client and audience themselves: say which one is missing.
        if self._storage.get_client(client_id) is None:
            raise ApiBadRequest(f"no client {client_id!r}")
        if self._storage.get_resource_server(audience) is None:
            raise ApiBadRequest(f"no resource server {audience!r}")
        windows = approval.windows
        probe = Grant(
            id="probe",
            request_id="probe",
            client_id=client_id,
            subject=subject,
            audience=audience,
            scope=scope.encode_cbor_value(),
            valid_from=approval.valid_from,
            valid_until=approval.valid_until,
            windows=windows,
            timezone=(approval.timezone or self._settings.consent_timezone) if windows else None,
            max_lifetime=approval.max_lifetime,
            approvers=(approver.actor,),
            created_at=now,
            created_by=approver.actor,
        )
        try:
            grant_to_rule(probe)
        except ValueError as exc:
            raise ApiBadRequest("the grant's conditions are inconsistent", detail=str(exc)) from None
        request = ConsentRequest(
            id=self._new_request_id(),
            client_id=client_id,
            subject=subject,
            audience=audience,
            scope=scope.encode_cbor_value(),
            reason=f"granted directly by {approver.actor}",
            approvers=(approver.actor,),
            rules=(),
            requested_from=now,
            requested_until=None,
            created_at=now,
            updated_at=now,
            expires_at=now + self._settings.access_request_lifetime,
        )
        stored, _merged = self._storage.submit_access_request(request, actor=approver.actor)
        return self.approve(approver, stored.id, dataclasses.replace(approval, scope=scope), now=now)

    def deny(self, approver: Approver, request_id: str, *, note: str = "", now: int) -> ConsentRequest:
        """Deny a pending request.

        :raises ApiNotFound: :raises ApiConflict: not pending. :raises ApiBadRequest: an overlong note.
        """
        if len(note) > MAX_NOTE:
            raise ApiBadRequest(f"note must be text of at most {MAX_NOTE} characters")
        request, _ = self.get_request(approver, request_id, now=now)
        if request.status != AccessRequestStatus.PENDING:
            raise ApiConflict(f"the access request is already {request.status}; a request is decided once")
        try:
            self._storage.deny_access_request(request.id, actor=approver.actor, now=now, note=note)
        except NotFoundError:
            raise ApiNotFound("no such access request") from None
        except StateError as exc:
            raise ApiConflict("the access request is no longer pending", detail=str(exc)) from None
        log.info("access request %s denied by %s", request.id, approver.actor)
        self._changed(request.id)
        decided = self._storage.get_access_request(request.id, now=now)
        assert decided is not None
        return decided

    def list_grants(self, approver: Approver, *, status: GrantStatus | None = None, limit: int = 100) -> list[Grant]:
        """The grants ``approver`` may revoke (admins: all), newest first."""
        found = self._storage.list_grants(status=status, limit=limit if approver.is_admin else 10_000)
        return [g for g in found if approver.may_decide(g.approvers)][:limit]

    def disabled_users(self) -> frozenset[str]:
        """The users whose accounts are disabled. Their grants stay active but do not count while the account is
        disabled (the storage leaves them out of :meth:`~as_server.storage.base.Storage.active_grants`; enabling the
        user brings them back), so the grant views say so."""
        return frozenset(user.name for user in self._storage.list_users() if not user.enabled)

    def get_grant(self, approver: Approver, grant_id: str) -> Grant:
        """:raises ApiNotFound: no such grant. :raises ApiForbidden: not one the approver may revoke."""
        grant = self._storage.get_grant(grant_id) if is_request_id(grant_id) else None
        if grant is None:
            raise ApiNotFound("no such grant")
        if not approver.may_decide(grant.approvers):
            raise ApiForbidden("not an approver of this grant")
        return grant

    def tokens_of(self, grant: Grant) -> Sequence[IssuedToken]:
        """The tokens issued under ``grant``, newest first."""
        return self._storage.tokens_of_grant(grant.id)

    def revoke(self, approver: Approver, grant_id: str, *, now: int) -> int:
        """Revoke a grant and the tokens issued under it; returns how many tokens were revoked.

        :raises ApiNotFound: :raises ApiConflict: already revoked.
        """
        grant = self.get_grant(approver, grant_id)
        try:
            count = self._storage.revoke_grant(grant.id, actor=approver.actor, now=now)
        except NotFoundError:
            raise ApiNotFound("no such grant") from None
        except StateError:
            raise ApiConflict("the grant is already revoked") from None
        log.info("grant %s revoked by %s (%d tokens revoked)", grant.id, approver.actor, count)
        self._changed(grant.request_id)
        return count
