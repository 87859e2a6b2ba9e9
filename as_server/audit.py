"""The audit log: who got which token, who was refused and why, and every step of the consent workflow.

Issue #5, "Audit log": "every token issued or refused (with the reason), every access request, approval, denial
and revocation, with actor and time, append-only". Entries are :class:`~as_server.models.AuditEntry` records; the
storage keeps them append-only (:class:`~as_server.storage.base.AuditStore`: no method changes or deletes one; the
SQL backend's triggers refuse ``UPDATE`` and ``DELETE`` on ``audit_log``). ``ostiary audit`` filters them.

**What each kind of event costs** (the token endpoint's throughput is a product goal, benchmarks/bench_as):

* ``token.issued`` costs nothing extra: the token endpoint already commits a record of every token it issues
  (``issued_tokens``, before the token is handed out), with its client, subject, audience, scope, time and the
  policy rules that granted it. :meth:`~as_server.storage.base.AuditStore.list_audit` presents those records as
  ``token.issued`` entries merged with the audit table, so the happy path writes no audit row and makes no extra
  database round trip.
* ``token.refused`` entries are written asynchronously by :class:`AuditLog`: the endpoint appends to a bounded
  in-memory queue and answers at once; a writer thread commits what is queued as one batch at most once per
  :attr:`~as_server.config.Settings.audit_flush_interval`. A flood of bad requests therefore never blocks a
  response and costs at most one audit transaction per interval; when the queue
  (:attr:`~as_server.config.Settings.audit_queue_size`) is full, entries are dropped and counted, and the next
  batch carries an ``audit.dropped`` entry saying how many. Entries still queued when the process dies are lost
  (the price of not blocking); a clean shutdown writes them.
* Consent, approval, denial, revocation, user and client changes are written by the storage in the same
  transaction as the change itself (:mod:`as_server.storage.base`): no state change without its entry.

Text that comes from requests (client ids of failed authentications, scopes) is cleaned before it is stored
(:func:`clean_text`): bounded in length, NUL and unpaired surrogates escaped (PostgreSQL text holds neither), so
one hostile request cannot make a batch fail.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

from ace_core.errors import WireFormatError
from ace_core.scope import AifScope, TextScope
from as_server.models import AuditEntry, ConsentRequest, Grant, IssuedToken, TokenStatus
from as_server.storage.base import AuditQuery

__all__ = [
    "ACTIONS",
    "ACTOR_SYSTEM",
    "FAMILIES",
    "MAX_TEXT",
    "AuditLog",
    "action_matches",
    "approval_detail",
    "clean_text",
    "describe_grant",
    "describe_scope",
    "entry_matches",
    "grant_entry",
    "issued_entry",
    "known_action",
    "newest_first",
    "request_entry",
    "simple_entry",
]

log = logging.getLogger("ostiary.as.audit")

#: Every action the AS records, with what it means (``ostiary audit --help`` prints this list).
ACTIONS: Final = {
    "token.issued": "a token was issued (from the issued-token records)",
    "token.refused": "a token request was refused; detail: the error code and reason",
    "access_request.created": "a token request needed consent: an access request was recorded",
    "access_request.merged": "the same request was made again while pending (merged)",
    "access_request.expired": "nobody decided in time",
    "access_request.approved": "an approver approved (detail: the narrowing)",
    "access_request.denied": "an approver denied",
    "grant.created": "the grant of an approval (a permit rule for the policy)",
    "grant.revoked": "a grant was revoked, and the tokens issued under it (detail: how many)",
    "user.created": "a local user was added",
    "user.password_changed": "a user's password was replaced",
    "user.disabled": "a user was disabled; their tokens were revoked",
    "user.enabled": "a user was enabled again",
    "group.created": "a group was added",
    "group.member_added": "a user joined a group",
    "group.member_removed": "a user left a group",
    "user.sites_set": "the sites a manager sees were set (detail: which)",
    "client.created": "a client was registered (console, or 'ostiary as client add')",
    "client.secret_rotated": "a client got a new secret; the old one stopped working",
    "client.disabled": "a client was disabled; its tokens were revoked",
    "client.enabled": "a client was enabled again",
    "token.revoked": "one token was revoked by hand (console, or 'ostiary as token revoke')",
    "audit.dropped": "refusal entries were dropped: the audit queue was full or a write failed (detail: how many)",
    "authorization.granted": "a user signed in at /authorize and let an app have an authorization code",
    "authorization.signin_failed": "a sign-in at /authorize failed (detail: why; never the password)",
    "authorization_code.reused": "a used authorization code was presented again; its tokens were revoked",
    "refresh_token.family_revoked": "a refresh-token family and its access tokens were revoked (detail: why)",
    "resource_server.created": "a resource server (lock) was registered (console, or 'ostiary as rs add')",
    "resource_server.key_created": "a new operational key generation of a lock (issue #7; detail: which)",
    "resource_server.key_delivered": "a bootstrap delivered a key generation (detail: whether tokens now use it)",
    "resource_server.key_retired": "a retired key generation's key material was erased",
    "resource_server.revoked": "a lock's keys were erased, the lock disabled and its tokens revoked",
    "device.claimed": "a device of a factory batch was claimed for a site (detail: which)",
    "device.released": "a device was released from its site; its lock's credentials were revoked",
}

#: The families of :data:`ACTIONS` (``access_request`` for ``access_request.created`` and its siblings), which
#: filters accept as well as the actions themselves (:func:`action_matches`).
FAMILIES: Final = tuple(sorted({action.partition(".")[0] for action in ACTIONS}))

#: Seconds the audit writer waits after a failed batch before it tries again (at least; see AuditLog).
RETRY_PAUSE: Final = 1.0
#: The actor of what the AS does by itself (expiring requests, recording dropped entries).
ACTOR_SYSTEM: Final = "system"
#: Longest text field of an entry that comes from a request (characters).
MAX_TEXT: Final = 200
#: Longest ``detail`` (characters).
MAX_DETAIL: Final = 1000


def clean_text(value: str | None, limit: int = MAX_TEXT) -> str | None:
    """``value`` made safe to store: at most ``limit`` characters, NUL and unpaired surrogates escaped.

    >>> clean_text("phone\\x00app\\ud800")
    'phone\\\\x00app\\\\ud800'
    >>> len(clean_text("x" * 500) or "")
    200
    """
    if value is None:
        return None
    text = value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_scope(scope: str | bytes | AifScope | TextScope | None) -> str | None:
    """A scope for people (and ``ostiary audit``): the AIF spec (``/lock:GET,PUT``) or the text scope.

    Bytes that are not AIF are shown in hex (truncated), so a malformed requested scope is still recorded.
    """
    if scope is None:
        return None
    if isinstance(scope, TextScope):
        return clean_text(scope.encode())
    if isinstance(scope, str):
        if scope.startswith("[["):  # AIF as application/aif+json text (how HTTP requests carry it)
            with contextlib.suppress(WireFormatError):
                return describe_scope(AifScope.from_json_text(scope))
        return clean_text(scope)
    aif: AifScope
    if isinstance(scope, bytes):
        try:
            aif = AifScope.from_cbor(scope)
        except WireFormatError:
            return clean_text("h'" + scope[:64].hex() + "'")
    else:
        aif = scope
    try:
        return clean_text(aif.to_spec())
    except ValueError:  # a path with whitespace has no spec form
        return clean_text(aif.to_json_text())


class AuditLog:
    """Writes audit entries asynchronously, in batches, from a bounded queue (see the module documentation).

    Thread-safe. :meth:`submit` never blocks and never raises; a daemon thread commits the queue at most once
    per ``flush_interval``. :meth:`close` writes what is queued and stops the thread.

    :param append: writes a batch durably (:meth:`~as_server.storage.base.AuditStore.append_audit`).
    :param queue_size: entries waiting at most; beyond that :meth:`submit` drops and counts.
    :param flush_interval: seconds between two batches at least.
    :param clock: seconds since the epoch, for the ``audit.dropped`` entry.
    """

    def __init__(
        self,
        append: Callable[[Sequence[AuditEntry]], None],
        *,
        queue_size: int = 10_000,
        flush_interval: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if queue_size < 1 or flush_interval < 0:
            raise ValueError("queue_size must be positive and flush_interval not negative")
        self._append = append
        self._queue_size = queue_size
        self._interval = flush_interval
        self._clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[AuditEntry] = deque()
        self._dropped_total = 0
        self._dropped_unreported = 0  # since the last batch: the queue was full
        self._failed_unreported = 0  # since the last batch: lost with a failed batch
        self._written = 0
        self._closing = False
        self._stopped = threading.Event()  # set by close(): ends the pause between batches at once
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()  # one batch at a time (the thread, flush(), close())

    @property
    def dropped(self) -> int:
        """Entries dropped so far because the queue was full (or a batch failed)."""
        with self._cond:
            return self._dropped_total

    @property
    def written(self) -> int:
        """Entries written so far."""
        with self._cond:
            return self._written

    def submit(self, entry: AuditEntry) -> bool:
        """Queue ``entry``; ``False`` (and counted) if the queue is full or the log is closed."""
        with self._cond:
            if self._closing or len(self._queue) >= self._queue_size:
                self._dropped_total += 1
                self._dropped_unreported += 1
                return False
            self._queue.append(entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ostiary-audit-writer", daemon=True)
                self._thread.start()
            self._cond.notify()
            return True

    def flush(self) -> None:
        """Write everything queued now, in the calling thread (tests; shutdown)."""
        self._write_batch()

    def close(self) -> None:
        """Write what is queued and stop the writer thread. Idempotent; later entries are dropped."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        self._stopped.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self._write_batch()

    def _take(self) -> list[AuditEntry]:
        """Everything queued, plus an ``audit.dropped`` entry if entries were dropped since the last batch."""
        with self._cond:
            batch = list(self._queue)
            self._queue.clear()
            full, self._dropped_unreported = self._dropped_unreported, 0
            failed, self._failed_unreported = self._failed_unreported, 0
        if full:
            log.warning("audit queue full: %d refusal entries dropped", full)
        if full or failed:
            if full and failed:
                why = f"audit queue full: {full}; a write failed: {failed}"
            else:
                why = "audit queue full" if full else "a write failed"
            batch.append(
                AuditEntry(
                    at=int(self._clock()),
                    action="audit.dropped",
                    actor=ACTOR_SYSTEM,
                    detail=f"{full + failed} entries dropped ({why})",
                )
            )
        return batch

    def _write_batch(self) -> bool:
        """Write what is queued; ``False`` if the batch failed (its entries are counted as dropped)."""
        with self._write_lock:
            batch = self._take()
            if not batch:
                return True
            try:
                self._append(batch)
            except Exception:  # noqa: BLE001 - the writer must survive a failed batch; the loss is counted
                log.exception("could not write %d audit entries", len(batch))
                with self._cond:
                    self._dropped_total += len(batch)
                    self._failed_unreported += len(batch)
                return False
            with self._cond:
                self._written += len(batch)
            return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._queue or self._dropped_unreported or self._failed_unreported or self._closing):
                    self._cond.wait()
                if self._closing:
                    return  # close() writes the rest
            started = time.monotonic()
            written = self._write_batch()
            # At most one batch per interval: what arrives meanwhile waits for the next one. After a failed batch
            # (the database is down), wait at least RETRY_PAUSE before the next attempt, whatever the interval.
            pause = self._interval if written else max(self._interval, RETRY_PAUSE)
            remaining = pause - (time.monotonic() - started)
            if remaining > 0 and self._stopped.wait(remaining):
                return


# -- entries of the storage's own events (both backends build them here, so they read alike) --------------------


def request_entry(action: str, request: ConsentRequest, *, actor: str, at: int, detail: str = "") -> AuditEntry:
    """An ``access_request.*`` entry about ``request``."""
    return AuditEntry(
        at=at,
        action=action,
        actor=actor,
        client_id=request.client_id,
        subject=request.subject,
        audience=request.audience,
        scope=describe_scope(request.scope),
        request_id=request.id,
        detail=clean_text(detail, MAX_DETAIL) or "",
    )


def grant_entry(action: str, grant: Grant, *, actor: str, at: int, detail: str = "") -> AuditEntry:
    """A ``grant.*`` entry about ``grant``."""
    return AuditEntry(
        at=at,
        action=action,
        actor=actor,
        client_id=grant.client_id,
        subject=grant.subject,
        audience=grant.audience,
        scope=describe_scope(grant.scope),
        request_id=grant.request_id,
        grant_id=grant.id,
        detail=clean_text(detail, MAX_DETAIL) or "",
    )


def describe_grant(grant: Grant) -> str:
    """The narrowing of a grant for people: ``valid 2025-... to 2025-...; Mon-Fri 09:00-18:00 Europe/Berlin``."""
    parts = []
    if grant.valid_from is not None:
        parts.append(f"valid from {_iso(grant.valid_from)}")
    if grant.valid_until is not None:
        parts.append(f"valid until {_iso(grant.valid_until)}")
    if grant.windows:
        parts.append(f"{', '.join(grant.windows)} {grant.timezone or 'UTC'}")
    if grant.max_lifetime is not None:
        parts.append(f"tokens at most {grant.max_lifetime} s")
    return "; ".join(parts) or "no conditions"


def approval_detail(grant: Grant, note: str) -> str:
    """The ``access_request.approved`` detail: the narrowing, and the approver's note."""
    detail = describe_grant(grant)
    return f"{detail}; note: {note}" if note else detail


def _iso(t: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def simple_entry(
    action: str, *, actor: str, at: int, subject: str | None = None, client_id: str | None = None, detail: str = ""
) -> AuditEntry:
    """An entry about a user, group or client change."""
    return AuditEntry(
        at=at,
        action=action,
        actor=actor,
        subject=subject,
        client_id=client_id,
        detail=clean_text(detail, MAX_DETAIL) or "",
    )


def issued_entry(token: IssuedToken) -> AuditEntry:
    """The ``token.issued`` entry a token record stands for (see the module documentation)."""
    detail = f"expires {_iso(token.exp)}"
    if token.exi is not None:
        detail = f"exi {token.exi} s"
    if token.rules:
        detail += f"; rules: {', '.join(token.rules)}"
    if token.status != TokenStatus.ACTIVE:
        detail += f"; now {token.status}"
    grants = token.grant_ids
    return AuditEntry(
        at=token.iat,
        action="token.issued",
        actor=f"client:{token.client_id}",
        client_id=token.client_id,
        subject=token.subject,
        audience=token.audience,
        scope=describe_scope(token.scope),
        grant_id=grants[0] if len(grants) == 1 else None,
        cti=token.cti,
        detail=detail,
    )


def known_action(wanted: str) -> bool:
    """Whether a filter for ``wanted`` can match anything: an action of :data:`ACTIONS` or one of :data:`FAMILIES`.

    >>> known_action("access_request"), known_action("token.refused"), known_action("token.bogus")
    (True, True, False)
    """
    return wanted in ACTIONS or wanted in FAMILIES


def action_matches(action: str, wanted: str | None) -> bool:
    """``wanted`` is the action itself or its family (``access_request`` matches ``access_request.created``)."""
    return wanted is None or action == wanted or action.startswith(wanted + ".")


def entry_matches(entry: AuditEntry, query: AuditQuery) -> bool:
    """Whether ``entry`` passes every filter of ``query`` (the memory backend filters with this; the SQL backend
    expresses the same in SQL)."""
    return (
        (query.since is None or entry.at >= query.since)
        and (query.until is None or entry.at < query.until)
        and (query.actor is None or entry.actor == query.actor)
        and (query.client_id is None or entry.client_id == query.client_id)
        and (query.audience is None or entry.audience == query.audience)
        and (query.user is None or entry.subject == query.user or entry.actor == f"user:{query.user}")
        and action_matches(entry.action, query.action)
    )


def newest_first(entries: Sequence[AuditEntry], limit: int) -> list[AuditEntry]:
    """Entries by time, newest first; in one second, stored entries by ``seq`` after token records."""
    return sorted(entries, key=lambda e: (e.at, -1 if e.seq is None else e.seq), reverse=True)[: max(limit, 0)]
