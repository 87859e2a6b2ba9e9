"""resource_server.credentials: key slots, delivery and promotion rules, the atomic credentials file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ace_core.keys import CoseKey
from ace_core.registry import CoseAlgorithm
from resource_server.credentials import (
    CredentialKeeper,
    Credentials,
    CredentialsError,
    CredentialStore,
    DeliveredAccount,
    KeySlot,
    SlotKeys,
    parse_identity,
)

AS_KEY = CoseKey.generate(CoseAlgorithm.ES256).public().to_cbor()
NOW = 1_700_000_000.0


def slot(generation: int, fill: int | None = None, audience: str = "L1-00000042") -> KeySlot:
    key = bytes([fill if fill is not None else generation]) * 16
    return KeySlot(identity=f"{audience}#{generation}".encode(), key=key, generation=generation)


def account(generation: int, fill: int | None = None, **kw: object) -> DeliveredAccount:
    values: dict[str, object] = dict(
        server_uri="coaps://127.0.0.1:5684",
        slot=slot(generation, fill),
        server_public_key=AS_KEY,
        short_server_id=1,
        lifetime=300,
    )
    values.update(kw)
    return DeliveredAccount(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("identity", "expected"),
    [(b"L1-00000042#3", ("L1-00000042", 3)), (b"a#b#12", ("a#b", 12))],
)
def test_parse_identity(identity: bytes, expected: tuple[str, int]) -> None:
    assert parse_identity(identity) == expected


@pytest.mark.parametrize(
    "identity", [b"", b"L1", b"#1", b"L1#", b"L1#0", b"L1#01", b"L1#x", b"\xff#1", b"a" * 31 + b"#1"]
)
def test_parse_identity_refuses(identity: bytes) -> None:
    with pytest.raises(CredentialsError):
        parse_identity(identity)


def test_secrets_stay_out_of_repr() -> None:
    creds = Credentials.first(account(1, 0xAB), now=NOW)
    assert "ab" * 16 not in repr(creds).lower()
    assert "\\xab" * 16 not in repr(creds)


def test_first_delivery_becomes_current() -> None:
    creds = Credentials.first(account(1), now=NOW)
    assert creds.current == slot(1) and creds.next is None and creds.audience == "L1-00000042"


def test_same_key_changes_nothing() -> None:
    creds = Credentials.first(account(1), now=NOW)
    assert creds.accept_delivery(account(1), now=NOW + 5) is creds


def test_new_key_goes_to_next_and_replaces_an_older_next() -> None:
    creds = Credentials.first(account(1), now=NOW)
    two = creds.accept_delivery(account(2), now=NOW + 1)
    assert two.current == slot(1) and two.next == slot(2) and two.newest == slot(2)
    assert two.accept_delivery(account(2), now=NOW + 2) is two  # re-delivery of next: idempotent
    three = two.accept_delivery(account(3), now=NOW + 3)
    assert three.current == slot(1) and three.next == slot(3)


def test_delivery_for_another_audience_is_refused() -> None:
    creds = Credentials.first(account(1), now=NOW)
    other = DeliveredAccount(
        server_uri="coaps://x", slot=slot(2, audience="L1-9"), server_public_key=AS_KEY, short_server_id=1, lifetime=1
    )
    with pytest.raises(CredentialsError):
        creds.accept_delivery(other, now=NOW)


def test_promote_and_previous_expiry() -> None:
    creds = Credentials.first(account(1), now=NOW).accept_delivery(account(2), now=NOW)
    promoted = creds.promote(2, now=NOW + 10, overlap=100)
    assert promoted.current == slot(2) and promoted.next is None and promoted.previous == slot(1)
    assert promoted.previous_until == NOW + 110
    assert [s.generation for s in promoted.verification_slots(NOW + 109)] == [2, 1]
    assert [s.generation for s in promoted.verification_slots(NOW + 110)] == [2]
    assert promoted.expire_previous(now=NOW + 50) is promoted
    assert promoted.expire_previous(now=NOW + 110).previous is None
    with pytest.raises(CredentialsError):
        promoted.promote(2, now=NOW)


def test_verification_keys_order() -> None:
    creds = Credentials.first(account(1), now=NOW).accept_delivery(account(2), now=NOW)
    keys = creds.verification_keys(NOW)
    assert [k.secret() for k in keys] == [slot(1).key, slot(2).key]
    assert keys[0].alg == CoseAlgorithm.AES_CCM_16_64_128 and keys[0].kid == b"L1-00000042#1"


def test_store_roundtrip_and_mode(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "creds.cbor")
    assert store.load() is None
    creds = Credentials.first(account(1), now=NOW).accept_delivery(account(2), now=NOW).promote(2, now=NOW)
    store.save(creds)
    assert store.load() == creds
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["creds.cbor"]  # no temporary file left


def test_crash_before_rename_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = CredentialStore(tmp_path / "creds.cbor")
    old = Credentials.first(account(1), now=NOW)
    store.save(old)
    before = store.path.read_bytes()

    def crash(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        store.save(old.accept_delivery(account(2), now=NOW))
    assert store.path.read_bytes() == before
    assert store.load() == old
    assert [p.name for p in tmp_path.iterdir()] == ["creds.cbor"]


@pytest.mark.parametrize("content", [b"", b"\xff\xff", b"\xa1\x00\x02", b"\xa1\x00\x01", b"x" * 20000])
def test_corrupt_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "creds.cbor"
    path.write_bytes(content)
    with pytest.raises(CredentialsError, match="creds.cbor"):
        CredentialStore(path).load()


def test_slot_keys_resolve_kid_first_and_name_the_slot() -> None:
    creds = Credentials.first(account(1), now=NOW).accept_delivery(account(2), now=NOW)
    keys = SlotKeys.of(creds, now=NOW)
    alg = int(CoseAlgorithm.AES_CCM_16_64_128)
    assert [k.kid for k in keys.resolve(b"L1-00000042#2", alg)][:2] == [b"L1-00000042#2", b"L1-00000042#1"]
    assert [k.kid for k in keys.resolve(b"unknown", alg)][:2] == [b"L1-00000042#1", b"L1-00000042#2"]
    assert keys.slot_of(keys.keys[1]) == slot(2)
    assert keys.slot_of(CoseKey.symmetric(bytes(16))) is None


def test_keeper_logs_when_the_old_key_goes_as_utc_time(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    keeper = CredentialKeeper(CredentialStore(tmp_path / "c"), overlap=60, clock=lambda: NOW)
    keeper.deliver(account(1))
    keeper.deliver(account(2))
    with caplog.at_level("INFO", logger="ostiary.lock.credentials"):
        keeper.on_verified_key(slot(2).cose_key())
    # NOW + 60 = 1700000060 s, read as UTC: not the epoch number
    assert "L1-00000042#1 accepted until 2023-11-14T22:14:20Z" in caplog.text


def test_keeper_promotes_on_next_key_and_stores(tmp_path: Path) -> None:
    clock = [NOW]
    keeper = CredentialKeeper(CredentialStore(tmp_path / "c"), overlap=60, clock=lambda: clock[0])
    seen: list[tuple[int, int | None]] = []
    keeper.listeners.append(lambda new, old: seen.append((new.newest.generation, old and old.newest.generation)))
    keeper.deliver(account(1))
    keeper.deliver(account(2))
    keeper.on_verified_key(slot(1).cose_key())  # current: nothing
    assert keeper.credentials is not None and keeper.credentials.next == slot(2)
    keeper.on_verified_key(slot(2).cose_key())
    assert keeper.credentials.current == slot(2) and keeper.credentials.previous == slot(1)
    assert CredentialStore(tmp_path / "c").load() == keeper.credentials
    assert seen == [(1, None), (2, 1), (2, 2)]  # listeners hear every change; the newest identity stays 2
    assert len(keeper.keys.keys) == 3  # current, previous, the AS public key
    clock[0] = NOW + 61
    keeper.refresh()
    assert keeper.credentials.previous is None and len(keeper.keys.keys) == 2


# -- retirement: the AS refused the lock's identity and a bootstrap delivered a new key (a revocation) -----------


def test_a_refused_identity_leaves_only_the_delivered_key(tmp_path: Path) -> None:
    keeper = CredentialKeeper(CredentialStore(tmp_path / "c"), overlap=60, clock=lambda: NOW)
    dropped: list[tuple[KeySlot, ...]] = []
    keeper.retirement_listeners.append(dropped.append)
    keeper.deliver(account(1))
    keeper.deliver(account(2))  # as a rotation would: next
    assert keeper.drop_refused(slot(1))
    creds = keeper.credentials
    assert creds is not None and creds.current == slot(2)
    assert (creds.next, creds.previous, creds.previous_until) == (None, None, None)  # no overlap
    assert CredentialStore(tmp_path / "c").load() == creds
    assert dropped == [(slot(1),)]
    assert [k.kid for k in keeper.keys.keys if k.is_symmetric] == [slot(2).identity]  # the old key verifies nothing


def test_a_refused_identity_also_ends_the_overlap_of_a_promotion(tmp_path: Path) -> None:
    """A token under the new key promoted it before the lock learnt that the old identity is refused: the old key,
    ``previous`` now, goes too."""
    keeper = CredentialKeeper(CredentialStore(tmp_path / "c"), overlap=60, clock=lambda: NOW)
    keeper.deliver(account(1))
    keeper.deliver(account(2))
    keeper.on_verified_key(slot(2).cose_key())
    assert keeper.credentials is not None and keeper.credentials.previous == slot(1)
    assert keeper.drop_refused(slot(1))
    assert keeper.credentials.slots() == (slot(2),) and keeper.credentials.previous_until is None


def test_a_refused_identity_without_a_newer_key_drops_nothing(tmp_path: Path) -> None:
    """No newer key was delivered (the bootstrap failed, or re-delivered the same key): nothing shows that the AS
    retired the identity, and the lock must keep a key to verify with."""
    keeper = CredentialKeeper(CredentialStore(tmp_path / "c"), overlap=60, clock=lambda: NOW)
    dropped: list[tuple[KeySlot, ...]] = []
    keeper.retirement_listeners.append(dropped.append)
    assert not keeper.drop_refused(slot(1))  # no credentials at all
    before = keeper.deliver(account(1))
    assert not keeper.drop_refused(slot(1))
    assert keeper.credentials is before and dropped == []
