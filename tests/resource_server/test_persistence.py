"""Restarting a lock: tokens persist (RFC 9200 §5.10.1 asks the RS to keep them), and OSCORE stays replay-safe
across the restart by the rule in :mod:`resource_server.token_store` (RFC 8613 Appendix B.1: sender sequence
numbers reserved in chunks before use, B.1.1; replay windows recovered with Echo, B.1.2)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import aiocoap
import pytest
from aiocoap.numbers.codes import Code

from ace_core.keys import CoseKey
from resource_server.authz_info import AuthzInfo
from resource_server.clock import ManualClock
from resource_server.token_store import TokenStore
from tests.resource_server.support import AUDIENCE, T0, Client, Lock, material, mint, rs_config


def _piv(message: aiocoap.Message) -> int | None:
    """The Partial IV in a message's OSCORE option (RFC 8613 §6.1), or None if it has none."""
    option = message.opt.oscore
    if not option:
        return None
    length = option[0] & 0x07
    return int.from_bytes(option[1 : 1 + length], "big") if length else None


def test_restart_keeps_tokens_and_is_replay_safe(
    make_lock: Callable[..., Lock], make_client: Callable[[str], Client], key: CoseKey, tmp_path: Path
) -> None:
    state = tmp_path / "lock.state"
    config = rs_config(key, state_file=state, sequence_chunk=4)
    lock = make_lock(config)
    client = make_client(lock.base)
    osc = material()
    assert osc.id is not None and osc.ms is not None
    session = client.establish(mint(key, osc=osc), osc)
    wire, request_id = session.protect(Code.PUT, "/lock", b"unlock")
    inner, _ = session.context.unprotect(session.send_raw(wire), request_id)
    assert inner.code.dotted == "2.04" and lock.door.locked is False
    port = lock.server.port
    lock.stop()

    data = state.read_bytes()
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert osc.ms not in data  # the master secret stays inside the encrypted token
    assert [p.name for p in tmp_path.iterdir()] == ["lock.state"]  # no temporary file left behind

    server_pivs: list[int] = []
    for restart in range(2):
        lock = make_lock(config, clock=ManualClock(wall=float(T0 + 10 * (restart + 1)), uptime=2.0), port=port)
        assert len(lock.rs.store) == 1 and lock.site.contexts == 1  # the token survived
        # The request recorded before the restart, replayed: the restored context has no replay window yet, so it
        # answers a protected 4.01 with Echo (B.1.2) and does not execute the request.
        replayed = session.send_raw(wire)
        challenge, _ = session.context.unprotect(replayed, request_id)
        assert challenge.code.dotted == "4.01" and challenge.opt.echo is not None
        assert lock.door.locked is True
        piv = _piv(replayed)
        assert piv is not None  # a fresh sender sequence number, taken from the persisted reservation (B.1.1)
        server_pivs.append(piv)
        # A live client answers the Echo (aiocoap does it automatically) and carries on with the same context.
        reply = session.get("/lock")
        assert reply.dotted == "2.05"
        assert session.put("/lock", b"unlock").dotted == "2.04"
        assert session.send_raw(wire).code.dotted == "4.01"  # and the old request stays a replay
        lock.door.locked = True
        lock.stop()
    assert server_pivs[1] > server_pivs[0]  # never the same (key, nonce) twice across restarts
    assert server_pivs[1] >= server_pivs[0] + 1 + 4  # the second run started above the first run's reservation


def test_tokens_that_expired_while_down_are_not_restored(
    make_lock: Callable[..., Lock], make_client: Callable[[str], Client], key: CoseKey, tmp_path: Path
) -> None:
    config = rs_config(key, state_file=tmp_path / "lock.state")
    lock = make_lock(config)
    client = make_client(lock.base)
    short, long = material(), material()
    client.establish(mint(key, osc=short, exp=T0 + 60), short)
    survivor = client.establish(mint(key, osc=long), long)
    lock.stop()
    lock = make_lock(config, clock=ManualClock(wall=float(T0 + 120), uptime=1.0), port=lock.server.port)
    assert short.id not in lock.rs.store and long.id in lock.rs.store
    assert survivor.get("/lock").dotted == "2.05"


def test_state_file_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "lock.state"
    store = TokenStore(max_tokens=4, path=path)
    store.note_sequence_gone(AUDIENCE, 3)
    store.save()
    before = path.read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    store.note_sequence_gone(AUDIENCE, 9)
    with pytest.raises(OSError, match="disk full"):
        store.save()
    assert path.read_bytes() == before  # the old state, whole
    assert [p.name for p in tmp_path.iterdir()] == ["lock.state"]
    monkeypatch.undo()
    loaded = TokenStore(max_tokens=4, path=path).load()
    assert loaded is not None and dict(loaded.highest_gone_sequence) == {AUDIENCE: 3}


def test_corrupt_state_file_is_refused_not_ignored(tmp_path: Path, key: CoseKey) -> None:
    path = tmp_path / "lock.state"
    path.write_bytes(b"\xa1\x00")
    store = TokenStore(max_tokens=4, path=path)
    with pytest.raises(ValueError, match="state file"):
        AuthzInfo(rs_config(key, state_file=path), store).restore(now=float(T0), monotonic=0.0)


def _upload(authz: AuthzInfo, token: bytes, *, now: float | None, monotonic: float) -> None:
    from ace_core.messages import AuthzInfoRequest

    payload = AuthzInfoRequest(access_token=token, nonce1=b"n" * 8, ace_client_recipientid=b"\x01").to_cbor()
    authz.handle(payload, 19, now=now, monotonic=monotonic, peer="192.0.2.1")


def test_clockless_restart_drops_exi_tokens_and_remembers_their_sequence_numbers(tmp_path: Path, key: CoseKey) -> None:
    from ace_core.errors import TokenExpired

    path = tmp_path / "lock.state"
    config = rs_config(key, state_file=path, has_clock=False)
    authz = AuthzInfo(config, TokenStore(max_tokens=4, path=path))
    token = mint(key, osc=material(), exp=None, exi=600, cti=AUDIENCE.encode() + b"\x05")
    _upload(authz, token, now=None, monotonic=100.0)

    # After a restart uptime starts again and the lock cannot know how long it was down.
    restarted = AuthzInfo(config, TokenStore(max_tokens=4, path=path))
    report = restarted.restore(now=None, monotonic=1.0)
    assert (len(report.restored), report.dropped) == (0, 1)
    assert restarted.store.highest_gone_sequence(AUDIENCE) == 5
    with pytest.raises(TokenExpired):  # its exi clock cannot start again
        _upload(restarted, token, now=None, monotonic=2.0)


def test_restart_with_a_clock_keeps_the_remaining_exi_lifetime(tmp_path: Path, key: CoseKey) -> None:
    path = tmp_path / "lock.state"
    config = rs_config(key, state_file=path)
    authz = AuthzInfo(config, TokenStore(max_tokens=4, path=path))
    osc = material()
    assert osc.id is not None
    _upload(authz, mint(key, osc=osc, exp=None, exi=100, cti=AUDIENCE.encode() + b"\x01"), now=T0, monotonic=50.0)

    restarted = AuthzInfo(config, TokenStore(max_tokens=4, path=path))
    restarted.restore(now=T0 + 40, monotonic=3.0)  # 40 s later by the wall clock, uptime restarted
    token = restarted.store.get(osc.id)
    assert token is not None and token.expires_after == pytest.approx(3.0 + 60)
    assert token.association is not None and token.association.restored


def test_a_recreated_site_continues_above_the_reserved_sequence_numbers(key: CoseKey) -> None:
    from aiocoap import resource

    from resource_server.aiocoap_site import AceSiteWrapper
    from resource_server.server import ResourceServer

    rs = ResourceServer(rs_config(key, sequence_chunk=2), clock=ManualClock(wall=float(T0)))
    osc = material()
    assert osc.id is not None
    upload = _payload_for(mint(key, osc=osc))
    result = rs.handle_authz_info(upload, 19, peer="192.0.2.1")
    first = AceSiteWrapper(resource.Site(), rs)
    context = first.install(result.token)
    assert context.echo_recovery is None  # a fresh context: empty replay window
    used = [context.new_sequence_number() for _ in range(3)]
    assert used == [0, 1, 2]
    assert result.token.association is not None and result.token.association.sender_sequence_reserved >= 3
    first.close()
    second = AceSiteWrapper(resource.Site(), rs)  # e.g. the server restarted inside the same process
    again = second.credentials.find_oscore({4: context.recipient_id})
    assert again.sender_sequence_number >= 3 and again.echo_recovery is not None
    second.close()


def _payload_for(token: bytes) -> bytes:
    from ace_core.messages import AuthzInfoRequest

    return AuthzInfoRequest(access_token=token, nonce1=b"n" * 8, ace_client_recipientid=b"\x01").to_cbor()
