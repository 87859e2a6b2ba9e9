"""The audit log (issue #5): append-only in SQL (triggers on SQLite and PostgreSQL), the asynchronous writer of
refusals (bounded, batched, never blocking, counting what it drops), and ``list_audit``'s merge of issued tokens."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa

from as_server.audit import (
    ACTIONS,
    RETRY_PAUSE,
    AuditLog,
    clean_text,
    describe_scope,
    issued_entry,
    known_action,
)
from as_server.models import AuditEntry
from as_server.sealing import MasterKey
from as_server.storage.base import AuditQuery, Storage
from tests.as_server.test_storage import OpenSql, make_token

T0 = 1_700_000_000
#: Bound on waiting for the writer thread (seconds).
WAIT = 10.0


def entry(n: int = 0, **changes: object) -> AuditEntry:
    fields: dict[str, object] = {
        "at": T0 + n,
        "action": "token.refused",
        "actor": "client:phone-app",
        "client_id": "phone-app",
        "detail": f"refusal {n}",
    }
    fields.update(changes)
    return AuditEntry(**fields)  # type: ignore[arg-type]


# --- append-only ----------------------------------------------------------------------------------------------


def test_the_audit_table_refuses_update_and_delete(sql_url: str, master_key: MasterKey, open_sql: OpenSql) -> None:
    storage = open_sql(sql_url, master_key)
    storage.append_audit([entry(1), entry(2)])
    engine = sa.create_engine(sql_url)
    try:
        for statement in (
            "UPDATE audit_log SET detail = 'forged'",
            "UPDATE audit_log SET at = 0 WHERE seq = 1",
            "DELETE FROM audit_log WHERE seq = 1",
            "DELETE FROM audit_log",
            *(["TRUNCATE audit_log"] if engine.dialect.name == "postgresql" else []),
        ):
            with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
                conn.execute(sa.text(statement))
        with engine.begin() as conn:  # appending still works
            conn.execute(sa.text("INSERT INTO audit_log (at, action, actor, detail) VALUES (1, 'x', 'y', '')"))
    finally:
        engine.dispose()
    details = [e.detail for e in storage.list_audit(AuditQuery(action="token.refused"))]
    assert details == ["refusal 2", "refusal 1"]


def test_the_storage_interface_has_no_way_to_change_an_entry() -> None:
    from as_server.storage.base import AuditStore

    assert {name for name in vars(AuditStore) if not name.startswith("_")} == {"append_audit", "list_audit"}


# --- listing --------------------------------------------------------------------------------------------------


def test_list_audit_merges_issued_tokens_and_filters(storage: Storage) -> None:
    token = make_token(iat=T0 + 5, subject="alice", rules=("office", "grant#abc"))
    storage.record(token)
    storage.append_audit(
        [
            entry(1),
            entry(2, action="access_request.created", request_id="r1", subject="alice", audience="lock-1"),
            entry(3, action="access_request.approved", actor="user:frank", request_id="r1", subject="alice"),
            entry(9, action="grant.revoked", actor="user:root", client_id="other-app"),
        ]
    )
    everything = storage.list_audit(AuditQuery())
    assert [e.action for e in everything] == [
        "grant.revoked",
        "token.issued",
        "access_request.approved",
        "access_request.created",
        "token.refused",
    ]
    issued = everything[1]
    assert issued == issued_entry(token)
    assert (issued.actor, issued.subject, issued.cti, issued.scope) == ("client:client-1", "alice", token.cti, "read")
    assert "rules: office, grant#abc" in issued.detail and issued.grant_id == "abc"

    def actions(**filters: object) -> list[str]:
        return [e.action for e in storage.list_audit(AuditQuery(**filters))]  # type: ignore[arg-type]

    assert actions(action="access_request") == ["access_request.approved", "access_request.created"]
    assert actions(action="access_request.created") == ["access_request.created"]
    assert actions(action="access") == []  # a family is a whole dotted prefix
    assert actions(action="token.issued") == ["token.issued"]
    assert actions(user="alice") == ["token.issued", "access_request.approved", "access_request.created"]
    assert actions(user="frank") == ["access_request.approved"]
    assert actions(actor="client:client-1") == ["token.issued"]
    assert actions(actor="user:root") == ["grant.revoked"]
    assert actions(client_id="other-app") == ["grant.revoked"]
    assert actions(audience="lock-1") == ["token.issued", "access_request.created"]
    assert actions(since=T0 + 2, until=T0 + 9) == ["token.issued", "access_request.approved", "access_request.created"]
    assert actions(limit=2) == ["grant.revoked", "token.issued"]
    assert actions(action="a_b%") == []  # LIKE wildcards are taken literally


# --- the asynchronous writer of refusals ----------------------------------------------------------------------


class Recorder:
    """An ``append`` that records its batches, optionally held until released."""

    def __init__(self) -> None:
        self.batches: list[list[AuditEntry]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        self.fail = False

    def __call__(self, entries: Sequence[AuditEntry]) -> None:
        self.entered.set()
        assert self.hold.wait(WAIT)
        if self.fail:
            raise OSError("disk full")
        self.batches.append(list(entries))

    @property
    def entries(self) -> list[AuditEntry]:
        return [e for batch in self.batches for e in batch]


def test_submit_never_blocks_and_entries_are_written_in_batches() -> None:
    recorder = Recorder()
    log = AuditLog(recorder, queue_size=100, flush_interval=0.05)
    recorder.hold.clear()
    assert log.submit(entry(0))
    assert recorder.entered.wait(WAIT)  # the writer is stuck in its first batch ...
    started = time.monotonic()
    for n in range(1, 51):
        assert log.submit(entry(n))  # ... and submitting does not wait for it
    assert time.monotonic() - started < 1.0
    recorder.hold.set()
    log.close()
    assert [e.detail for e in recorder.entries] == [f"refusal {n}" for n in range(51)]
    assert len(recorder.batches) <= 3  # the 50 queued meanwhile went in one or two batches
    assert (log.written, log.dropped) == (51, 0)


def test_a_flood_is_bounded_and_the_drops_are_counted_and_recorded() -> None:
    recorder = Recorder()
    log = AuditLog(recorder, queue_size=10, flush_interval=0.05, clock=lambda: T0)
    recorder.hold.clear()
    log.submit(entry(0))
    assert recorder.entered.wait(WAIT)
    accepted = sum(log.submit(entry(n)) for n in range(1, 1001))
    assert accepted == 10 and log.dropped == 990
    recorder.hold.set()
    log.close()
    written = recorder.entries
    assert len(written) == 1 + 10 + 1
    dropped = written[-1]
    assert (dropped.action, dropped.actor, dropped.detail) == (
        "audit.dropped",
        "system",
        "990 entries dropped (audit queue full)",
    )
    assert not log.submit(entry(2000)) and log.dropped == 991  # closed: dropped too


def test_at_most_one_batch_per_interval() -> None:
    recorder = Recorder()
    log = AuditLog(recorder, queue_size=1000, flush_interval=0.3)
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        log.submit(entry(0))
        time.sleep(0.005)
    log.close()
    # ~100 entries in 0.5 s: the first batch at once, then at most one per 0.3 s, plus close()'s.
    assert len(recorder.batches) <= 4
    assert len(recorder.entries) == log.written


class Pauses(threading.Event):
    """Stands in for an AuditLog's stop event: records each pause the writer thread takes between batches (how long
    it asked for) and signals it, so a test waits for the writer to be done with a batch instead of sleeping."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[float] = []
        self.pausing = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is not None:
            self.asked.append(timeout)
            self.pausing.set()
        return super().wait(timeout)


def paused_log(append: Callable[[Sequence[AuditEntry]], None], *, flush_interval: float) -> tuple[AuditLog, Pauses]:
    log = AuditLog(append, queue_size=100, flush_interval=flush_interval)
    pauses = Pauses()
    log._stopped = pauses  # noqa: SLF001 - a seam: the writer thread's pause between batches
    return log, pauses


def test_a_failed_batch_is_counted_and_the_writer_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    recorder.fail = True
    # The writer thread writes the first batch at once, then pauses for the interval: nothing else writes until
    # close(), so the order of what follows is fixed.
    log, pauses = paused_log(recorder, flush_interval=60)
    log.submit(entry(1))
    assert pauses.pausing.wait(WAIT)
    assert log.dropped == 1 and "could not write 1 audit entries" in caplog.text
    recorder.fail = False
    log.submit(entry(2))
    log.close()
    assert [e.action for e in recorder.entries] == ["token.refused", "audit.dropped"]


def test_a_failing_store_is_retried_after_a_pause_not_in_a_loop() -> None:
    """With no interval between batches, a failed batch (its ``audit.dropped`` entry) must not be retried at once,
    again and again, while the database is down: the writer pauses for about RETRY_PAUSE first."""
    recorder = Recorder()
    recorder.fail = True
    attempts = []

    def counting(entries: Sequence[AuditEntry]) -> None:
        attempts.append(len(entries))
        recorder(entries)

    log, pauses = paused_log(counting, flush_interval=0)
    log.submit(entry(1))
    assert pauses.pausing.wait(WAIT)  # without the pause the writer would retry at once and never pause
    assert attempts == [1] and log.dropped == 1
    assert len(pauses.asked) == 1 and RETRY_PAUSE / 2 < pauses.asked[0] <= RETRY_PAUSE
    recorder.fail = False
    log.close()  # ends the pause; close() writes what is left: the audit.dropped entry
    assert [e.action for e in recorder.entries] == ["audit.dropped"]
    assert recorder.entries[0].detail == "1 entries dropped (a write failed)"


def test_real_storage_gets_the_batches(storage: Storage) -> None:
    log = AuditLog(storage.append_audit, queue_size=100, flush_interval=0.01)
    for n in range(20):
        log.submit(entry(n))
    log.close()
    assert len(storage.list_audit(AuditQuery(action="token.refused", limit=100))) == 20


# --- text from requests ---------------------------------------------------------------------------------------


def test_hostile_text_is_stored_safely(storage: Storage) -> None:
    """NUL and unpaired surrogates (which PostgreSQL text cannot hold) are escaped; lengths are bounded."""
    hostile = "evil\x00id\ud800" + "x" * 1000
    cleaned = clean_text(hostile)
    assert cleaned is not None and len(cleaned) == 200 and "\x00" not in cleaned
    storage.append_audit([entry(1, client_id=cleaned, actor="client:" + (clean_text(hostile) or ""))])
    (stored,) = storage.list_audit(AuditQuery())
    assert stored.client_id == cleaned


def test_describe_scope() -> None:
    from ace_core.scope import AifScope, TextScope

    aif = AifScope.parse_spec("/lock:GET,PUT")
    assert describe_scope(aif.to_cbor()) == describe_scope(aif) == "/lock:GET,PUT"
    assert describe_scope("read write") == describe_scope(TextScope.parse("read write")) == "read write"
    assert describe_scope(b"\xff\x00") == "h'ff00'"
    assert describe_scope('[["/lock",5]]') == "/lock:GET,PUT"  # AIF as JSON text (HTTP token requests)
    assert describe_scope(None) is None


# --- the list of actions ----------------------------------------------------------------------------------------

#: How the code names the action of an entry it writes.
_WRITTEN_ACTION = re.compile(r'(?:action=|simple_entry\(|request_entry\(|grant_entry\()\s*"([a-z_]+\.[a-z_]+)"')


def test_every_action_the_code_writes_is_listed() -> None:
    """``ACTIONS`` is what ``ostiary audit --help`` lists and ``--action`` accepts: an action written but not listed
    could not be asked for by name."""
    root = Path(__file__).resolve().parents[2]
    written = {
        match
        for package in ("as_server", "ostiary")
        for path in (root / package).rglob("*.py")
        for match in _WRITTEN_ACTION.findall(path.read_text())
    }
    assert {"client.created", "client.secret_rotated", "resource_server.created", "token.refused"} <= written
    assert written - set(ACTIONS) == set()
    assert all(known_action(action) and known_action(action.split(".")[0]) for action in ACTIONS)
    assert not known_action("bogus") and not known_action("client.bogus")
