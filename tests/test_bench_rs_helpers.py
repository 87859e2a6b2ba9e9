"""Helpers of ``benchmarks/bench_rs.py``: the hand-written OSCORE of the load generator (``benchmarks/oscore_wire.py``),
checked byte for byte against aiocoap's ``oscore`` module, the option codec and request modes it added to
``benchmarks/coap_load.py``, and the token byte breakdown.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent

aiocoap = pytest.importorskip("aiocoap")
from aiocoap.message import Direction  # noqa: E402
from aiocoap.numbers.codes import Code  # noqa: E402

from ace_core.oscore import OscoreContextParameters  # noqa: E402
from client_sdk.transport.coap import OscoreContext  # noqa: E402
from resource_server.aiocoap_site import MemoryOscoreContext  # noqa: E402

MASTER_SECRET = bytes(range(16))
MASTER_SALT = bytes.fromhex("9e7ca92223786340")


def _module(monkeypatch: pytest.MonkeyPatch, name: str) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module(name)


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return _module(monkeypatch, "benchmarks.oscore_wire")


@pytest.fixture
def coap_load(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return _module(monkeypatch, "benchmarks.coap_load")


def _params(id_context: bytes | None) -> tuple[OscoreContextParameters, OscoreContextParameters]:
    """(client, server) parameters of one security context (RFC 9203 roles: the client sends with ID2)."""
    client = OscoreContextParameters(
        master_secret=MASTER_SECRET,
        master_salt=MASTER_SALT,
        sender_id=b"\x27\x05",
        recipient_id=b"\x01",
        id_context=id_context,
    )
    server = OscoreContextParameters(
        master_secret=MASTER_SECRET,
        master_salt=MASTER_SALT,
        sender_id=b"\x01",
        recipient_id=b"\x27\x05",
        id_context=id_context,
    )
    return client, server


def _lock_put(coap_load: ModuleType) -> bytes:
    return coap_load.encode_options([(11, b"lock")])  # Uri-Path "lock", as aiocoap encodes the inner options


@pytest.mark.parametrize("id_context", [None, b"\x37\xcb"])
@pytest.mark.parametrize("seq", [0, 1, 255, 256, 1 << 20, (1 << 40) - 2])
def test_request_protection_matches_aiocoap(
    wire: ModuleType, coap_load: ModuleType, id_context: bytes | None, seq: int
) -> None:
    client, _ = _params(id_context)
    theirs = OscoreContext(client)
    theirs.sender_sequence_number = seq
    message = aiocoap.Message(code=Code.PUT, uri_path=("lock",), payload=b"unlock")
    message.direction = Direction.OUTGOING
    outer, _ = theirs.protect(message)
    ours = wire.ClientContext.from_params(client).protect_request(seq, int(Code.PUT), _lock_put(coap_load), b"unlock")
    assert outer.code == Code.POST
    assert ours.option == outer.opt.oscore
    assert ours.ciphertext == outer.payload


@pytest.mark.parametrize("response_piv", [False, True])
def test_aiocoap_server_accepts_request_and_we_read_its_response(
    wire: ModuleType, coap_load: ModuleType, response_piv: bool
) -> None:
    client, server = _params(None)
    ours = wire.ClientContext.from_params(client)
    request = ours.protect_request(41, int(Code.PUT), _lock_put(coap_load), b"unlock")
    datagram = coap_load.encode_message(1, int(Code.POST), 7, b"tk", [(9, request.option)], request.ciphertext)
    lock = MemoryOscoreContext(server)
    inner, request_id = lock.unprotect(aiocoap.Message.decode(datagram))
    assert (inner.code, tuple(inner.opt.uri_path), inner.payload) == (Code.PUT, ("lock",), b"unlock")

    if response_piv:  # a response with its own Partial IV (as for a second response or an Observe notification)
        request_id.can_reuse_nonce = False
    response = aiocoap.Message(code=Code.CHANGED, payload=b"ok")
    response.direction = Direction.OUTGOING
    protected, _ = lock.context_for_response().protect(response, request_id)
    protected.mtype, protected.mid, protected.token = aiocoap.NON, 8, b"tk"
    options, payload = coap_load.parse_options(protected.encode())
    option = dict(options)[9]
    assert bool(option) == response_piv
    plaintext = ours.unprotect_response(request, option, payload)
    assert plaintext == bytes([int(Code.CHANGED), 0xFF]) + b"ok"

    with pytest.raises(wire.OscoreError):
        ours.unprotect_response(request, option, payload[:-1] + bytes([payload[-1] ^ 1]))
    with pytest.raises(wire.OscoreError):
        ours.unprotect_response(request, None, payload)


def test_partial_iv_and_context_limits(wire: ModuleType) -> None:
    assert [wire.partial_iv(n) for n in (0, 1, 255, 256)] == [b"\x00", b"\x01", b"\xff", b"\x01\x00"]
    with pytest.raises(ValueError):
        wire.partial_iv(1 << 40)
    client, _ = _params(None)
    with pytest.raises(ValueError):  # A128GCM: ace_core derives it, the load generator implements only AES-CCM
        wire.ClientContext.from_params(dataclasses.replace(client, aead_alg=1))
    context = wire.ClientContext.from_params(client)
    assert wire.ClientContext.from_json(context.to_json()) == context


@pytest.mark.parametrize(
    "options",
    [
        [(11, b"authz-info"), (12, b"\x13")],
        [(9, bytes(20)), (11, b"x" * 300), (2049, b"")],  # extended delta and length
    ],
)
def test_options_codec_matches_aiocoap(coap_load: ModuleType, options: list[tuple[int, bytes]]) -> None:
    datagram = coap_load.encode_message(1, int(Code.POST), 1, b"", options, b"\xff\x00")
    message = aiocoap.Message.decode(datagram)
    assert message.payload == b"\xff\x00"
    assert coap_load.parse_options(datagram) == (sorted(options), b"\xff\x00")
    assert [(int(o.number), o.encode()) for o in message.opt.option_list()] == sorted(options)


def test_payload_file_round_trip(coap_load: ModuleType, tmp_path: Path) -> None:
    payloads = [b"", b"\x01", os.urandom(300)]
    coap_load.write_payloads(tmp_path / "p.bin", payloads)
    assert coap_load.read_payloads(tmp_path / "p.bin") == payloads


def test_oscore_load_numbers_each_context_once(wire: ModuleType, coap_load: ModuleType) -> None:
    client, _ = _params(None)
    context = wire.ClientContext.from_params(client)
    load = coap_load.OscoreLoad(contexts=[context], code=int(Code.PUT), inner_options=b"", seq_base=100, per_context=2)
    load.prepare()
    taken = [load.take(0).sequence_number for _ in range(4)]
    assert taken == [100, 101, 102, 103]  # two prepared, then protected on demand
    assert load.protected_inline == 2 and load.next_sequence == 104


def test_token_breakdown_accounts_for_every_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    bench_rs = _module(monkeypatch, "benchmarks.bench_rs")
    authority = bench_rs.Authority()
    token = authority.mint(1)[0].token
    rows = bench_rs.token_breakdown(token, authority.shared_key)
    assert sum(size for _, size, _ in rows) == len(token)
    assert "(unaccounted)" not in [part for part, _, _ in rows]
    claims = {part.split()[1] for part, _, _ in rows if part.strip().startswith("claim ")}
    assert {"iss", "aud", "exp", "cti", "cnf", "scope"} <= claims
    assert not {"iat", "ace_profile"} & claims  # compact claims, as `ostiary as rs add` registers the lock


def test_typical_token_meets_the_size_goal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Goal (c): a typical OSCORE-profile lock token with one AIF entry is at most 128 bytes, as `ostiary as rs add`
    registers the lock (1-byte kid, compact claims); the variants show the other RS options beside it."""
    pytest.importorskip("joserfc")
    bench_rs = _module(monkeypatch, "benchmarks.bench_rs")
    anatomy = bench_rs.token_anatomy(bench_rs.Authority())
    assert anatomy.size <= bench_rs.TOKEN_GOAL_BYTES
    sizes = {change.split(":")[0]: size for change, size, _ in anatomy.variants}
    assert sizes["`as rs add --full-claims`"] == anatomy.size + 9  # iat (6 bytes) and ace_profile (3 bytes)
    # ... and an 8-byte kid instead of 1 byte, which makes the protected header's bstr head 2 bytes (over 23 bytes).
    assert sizes["for comparison"] == anatomy.size + 9 + 7 + 1
    assert sizes["`as rs add --no-clock`"] <= bench_rs.TOKEN_GOAL_BYTES
