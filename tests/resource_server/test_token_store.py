"""TokenStore: one token per PoP key (RFC 9200 §5.10.1), the eviction rule, expiry on two clocks, the exi
sequence-number rule (RFC 9200 §5.10.3) and the cti layout."""

from __future__ import annotations

import pytest

from ace_core.cwt import Claims
from ace_core.oscore import OscoreContextParameters
from ace_core.scope import AifScope
from resource_server.token_store import (
    OscoreAssociation,
    Removal,
    RemovalReason,
    StoredToken,
    TokenStore,
    parse_exi_cti,
)

RIGHTS = AifScope.parse_spec("/lock:GET")


def _token(
    pop_id: bytes,
    *,
    cti: bytes | None = None,
    received: float = 0.0,
    expires_at: float | None = None,
    expires_after: float | None = None,
    exi_sequence: int | None = None,
    rid: bytes | None = None,
) -> StoredToken:
    params = OscoreContextParameters(
        master_secret=b"s" * 16, master_salt=b"", sender_id=b"\x01", recipient_id=rid or pop_id
    )
    return StoredToken(
        token=b"t",
        claims=Claims(cti=cti if cti is not None else pop_id),
        pop_id=pop_id,
        audience="front-door",
        rights=RIGHTS,
        received=received,
        expires_at=expires_at,
        expires_after=expires_after,
        exi_sequence=exi_sequence,
        association=OscoreAssociation.derive(params, nonce1=b"1", nonce2=b"2"),
    )


@pytest.fixture
def removals() -> list[Removal]:
    return []


@pytest.fixture
def store(removals: list[Removal]) -> TokenStore:
    s = TokenStore(max_tokens=3)
    s.add_listener(removals.append)
    return s


def test_lookup_by_pop_id_and_recipient_id(store: TokenStore) -> None:
    token = _token(b"a", rid=b"\x07")
    store.put(token, now=0, monotonic=0)
    assert store.get(b"a") is token
    assert store.by_recipient_id(b"\x07") is token
    assert store.get(b"b") is None and store.by_recipient_id(b"\x08") is None


def test_new_token_for_the_same_key_supersedes(store: TokenStore, removals: list[Removal]) -> None:
    old, new = _token(b"a", cti=b"1", rid=b"\x01"), _token(b"a", cti=b"2", rid=b"\x02")
    store.put(old, now=0, monotonic=0)
    store.put(new, now=0, monotonic=1)
    assert store.get(b"a") is new and len(store) == 1
    assert removals == [Removal(old, RemovalReason.SUPERSEDED)]
    assert store.by_recipient_id(b"\x01") is None  # the old context's ID is free again


def test_update_reports_a_removal_that_keeps_the_context(store: TokenStore, removals: list[Removal]) -> None:
    store.put(_token(b"a", cti=b"1"), now=0, monotonic=0)
    store.put(_token(b"a", cti=b"2"), now=0, monotonic=0, reason=RemovalReason.UPDATED)
    assert [r.keeps_context for r in removals] == [True]


def test_full_store_evicts_expired_first_then_oldest(store: TokenStore, removals: list[Removal]) -> None:
    store.put(_token(b"a", received=0), now=0, monotonic=0)
    store.put(_token(b"b", received=1, expires_at=50), now=0, monotonic=1)
    store.put(_token(b"c", received=2), now=0, monotonic=2)
    store.put(_token(b"d", received=3), now=60, monotonic=3)  # full: b expired at 50 -> it goes, a stays
    assert [t.pop_id for t in store] == [b"a", b"c", b"d"]
    assert removals[-1].reason is RemovalReason.EXPIRED and removals[-1].token.pop_id == b"b"
    store.put(_token(b"e", received=4), now=60, monotonic=4)  # full, nothing expired: the oldest (a) goes
    assert [t.pop_id for t in store] == [b"c", b"d", b"e"]
    assert removals[-1] == Removal(removals[-1].token, RemovalReason.EVICTED) and removals[-1].token.pop_id == b"a"


def test_superseding_refreshes_the_receipt_order(store: TokenStore) -> None:
    for pop_id in (b"a", b"b", b"c"):
        store.put(_token(pop_id), now=0, monotonic=0)
    store.put(_token(b"a", cti=b"new"), now=0, monotonic=1)  # a was re-uploaded: now the newest
    store.put(_token(b"d"), now=0, monotonic=2)
    assert [t.pop_id for t in store] == [b"c", b"a", b"d"]


def test_purge_removes_expired_on_both_clocks(store: TokenStore, removals: list[Removal]) -> None:
    store.put(_token(b"wall", expires_at=100), now=0, monotonic=0)
    store.put(_token(b"mono", expires_after=10), now=0, monotonic=0)
    store.put(_token(b"both", expires_at=1000, expires_after=1000), now=0, monotonic=0)
    assert store.purge(now=99, monotonic=9.9) == []
    purged = store.purge(now=100, monotonic=10)
    assert {r.token.pop_id for r in purged} == {b"wall", b"mono"}
    assert all(r.reason is RemovalReason.EXPIRED for r in purged)
    assert store.purge(now=None, monotonic=1000) != []  # a clockless lock still expires on uptime
    assert len(store) == 0


def test_purge_skips_stale_heap_entries(store: TokenStore) -> None:
    store.put(_token(b"a", cti=b"1", expires_after=10), now=0, monotonic=0)
    store.put(_token(b"a", cti=b"2", expires_after=100), now=0, monotonic=1)  # superseded: old deadline is stale
    assert store.purge(now=None, monotonic=50) == []
    assert store.get(b"a") is not None


def test_check_removes_an_expired_token(store: TokenStore, removals: list[Removal]) -> None:
    store.put(_token(b"a", expires_after=10), now=0, monotonic=0)
    assert store.check(b"a", now=None, monotonic=9) is not None
    assert store.check(b"a", now=None, monotonic=10) is None
    assert removals[-1].reason is RemovalReason.EXPIRED


def test_exi_sequence_numbers_of_tokens_no_longer_held_are_gone(store: TokenStore) -> None:
    store.put(_token(b"a", exi_sequence=5, expires_after=10), now=None, monotonic=0)
    assert not store.is_sequence_gone("front-door", 5)
    store.purge(now=None, monotonic=10)
    assert store.highest_gone_sequence("front-door") == 5
    assert store.is_sequence_gone("front-door", 5) and store.is_sequence_gone("front-door", 1)
    assert not store.is_sequence_gone("front-door", 6)
    assert not store.is_sequence_gone("back-door", 1)  # per audience (RS identifier)
    store.put(_token(b"b", exi_sequence=9), now=None, monotonic=0)
    store.remove(b"b")  # dropped/evicted tokens count too: their exi clock cannot restart
    assert store.highest_gone_sequence("front-door") == 9


def test_reposting_the_same_token_does_not_burn_its_sequence_number(store: TokenStore) -> None:
    store.put(_token(b"a", cti=b"same", exi_sequence=3), now=None, monotonic=0)
    store.put(_token(b"a", cti=b"same", exi_sequence=3), now=None, monotonic=1)
    assert store.highest_gone_sequence("front-door") is None


def test_recipient_ids_are_short_unique_and_never_id1(store: TokenStore) -> None:
    ids = [store.allocate_recipient_id(exclude=b"\x01", max_length=7) for _ in range(3)]
    assert ids == [b"\x00", b"\x02", b"\x03"]
    store.put(_token(b"a", rid=b"\x04"), now=0, monotonic=0)
    assert store.allocate_recipient_id(exclude=b"", max_length=7) == b"\x05"  # \x04 is in use
    store._next_recipient_id = 255
    assert store.allocate_recipient_id(exclude=b"", max_length=7) == b"\xff"
    assert store.allocate_recipient_id(exclude=b"", max_length=7) == b"\x01\x00"


@pytest.mark.parametrize(
    ("cti", "expected"),
    [
        (b"front-door\x07", ("front-door", 7)),
        (b"front-door\x00\x00\x01\x00", ("front-door", 256)),
        (b"front-door" + b"\xff" * 8, ("front-door", 2**64 - 1)),
        (b"front-door", None),  # no sequence number
        (b"front-door" + b"\x01" * 9, None),  # more than 8 bytes
        (b"back-door\x01", None),  # another RS identifier
        (None, None),
        (b"front-door-2\x01", ("front-door-2", 1)),  # the longest matching audience wins
    ],
)
def test_exi_cti_layout(cti: bytes | None, expected: tuple[str, int] | None) -> None:
    assert parse_exi_cti(cti, ["front-door", "front-door-2"]) == expected


def test_heaps_stay_bounded_under_churn() -> None:
    store = TokenStore(max_tokens=2)
    for i in range(500):
        store.put(_token(b"a", cti=str(i).encode(), expires_after=1e9), now=None, monotonic=i)
    assert len(store._mono_deadlines) <= 4 * len(store) + 16


def test_heaps_stay_bounded_when_the_same_token_is_posted_again_and_again() -> None:
    # A re-post keeps the deadline, so its entries all look current; compaction keeps one per held token.
    store = TokenStore(max_tokens=2)
    for i in range(500):
        store.put(_token(b"a", cti=b"same", expires_after=1e9), now=None, monotonic=i)
    assert len(store._mono_deadlines) <= 4 * len(store) + 16


def test_a_re_posted_token_expires_once_at_its_deadline(store: TokenStore, removals: list[Removal]) -> None:
    store.put(_token(b"a", cti=b"1", expires_after=10), now=None, monotonic=0)
    store.put(_token(b"a", cti=b"1", expires_after=10), now=None, monotonic=1)  # the same token again
    assert store.purge(now=None, monotonic=9) == []
    assert [r.reason for r in store.purge(now=None, monotonic=10)] == [RemovalReason.EXPIRED]
    assert store.get(b"a") is None and store.purge(now=None, monotonic=11) == []


def test_deadline_entries_keep_no_removed_token_alive() -> None:
    # Stale heap entries wait for their deadline or a compaction; they name the PoP key, never the token, so an
    # evicted or superseded token (and its OSCORE association) is freed at once (memory per token, goal (c)).
    store = TokenStore(max_tokens=2)
    for i in range(50):
        store.put(_token(bytes([i]), expires_at=1e9 + i, expires_after=1e9), now=0, monotonic=0)
    entries = store._wall_deadlines + store._mono_deadlines
    assert len(entries) > len(store) and all(type(pop_id) is bytes for _, pop_id in entries)
