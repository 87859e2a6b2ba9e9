"""The fast paths of ``cose.decode`` (hand-read framing and small protected headers) agree with cbor2.

``cose.decode`` reads the common token layout directly and gives anything else to cbor2. A ``bytearray`` always
takes the cbor2 path, so decoding the same input as ``bytes`` and as ``bytearray`` compares the two; the header
reader is compared with cbor2 on its own as well.
"""

from __future__ import annotations

from typing import Any

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from ace_core import cose
from ace_core.errors import AceError
from ace_core.keys import CoseKey
from ace_core.registry import CoseAlgorithm, CoseTag

KEYS = [
    CoseKey.generate(CoseAlgorithm.EDDSA),
    CoseKey.generate(CoseAlgorithm.HMAC_256_64),
    CoseKey.generate(CoseAlgorithm.AES_CCM_16_64_128, kid=b"\x01"),
    CoseKey.generate(CoseAlgorithm.A128GCM),
]


def _outcome(data: bytes | bytearray) -> tuple[Any, ...]:
    try:
        obj = cose.decode(data, max_size=1024)
    except AceError as exc:
        return ("error", type(exc))
    return (obj.tag, obj.protected_bytes, dict(obj.protected), obj.unprotected, obj.payload, obj.signature_or_tag)


def _token(key: CoseKey, payload: bytes, kid: bool) -> bytes:
    if key.alg == CoseAlgorithm.EDDSA:
        return cose.sign1(payload, key, include_kid=kid)
    if key.alg == CoseAlgorithm.HMAC_256_64:
        return cose.mac0(payload, key, include_kid=kid)
    out = cose.encrypt0(payload, key, include_kid=kid)
    assert isinstance(out, bytes)
    return out


@st.composite
def mutated_tokens(draw: st.DrawFn) -> bytes:
    token = _token(draw(st.sampled_from(KEYS)), draw(st.binary(max_size=300)), draw(st.booleans()))
    if draw(st.booleans()):
        token = b"\xd8\x3d" + token
    data = bytearray(token)
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos:]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=3))
    return bytes(data)


LABELS = st.one_of(st.integers(-30, 30), st.sampled_from([-256, -25, 24, 255, 256]), st.text(max_size=2))
VALUES = st.one_of(
    st.integers(-300, 300),
    st.binary(max_size=30),
    st.text(max_size=3),
    st.booleans(),
    st.none(),
    st.lists(st.integers(0, 5), max_size=2),
)
HEADERS = st.dictionaries(LABELS, VALUES, max_size=5)
#: Headers of the shape the fast reader handles (alg, kid, IV, ...), and near misses of it.
SMALL_HEADERS = st.dictionaries(
    st.integers(-26, 25), st.one_of(st.integers(-26, 257), st.binary(max_size=25)), min_size=1, max_size=5
)


@st.composite
def mutated(draw: st.DrawFn, inner: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(inner))
    for _ in range(draw(st.integers(0, 2))):
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        op = draw(st.sampled_from(["set", "cut", "insert"]))
        if op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut" and pos:
            del data[pos:]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=2))
    return bytes(data)


@st.composite
def structures(draw: st.DrawFn) -> bytes:
    tag = draw(st.sampled_from([*CoseTag, 98, 96]))
    ph = draw(st.one_of(st.just(b""), HEADERS.map(cbor2.dumps), SMALL_HEADERS.map(cbor2.dumps), st.binary(max_size=8)))
    body: list[Any] = [ph, draw(HEADERS), draw(st.binary(max_size=40))]
    if draw(st.booleans()):
        body.append(draw(st.one_of(st.binary(max_size=70), st.none())))
    return cbor2.dumps(cbor2.CBORTag(tag, body))


@settings(max_examples=400, deadline=None)
@given(st.one_of(mutated_tokens(), structures(), st.binary(max_size=64)))
def test_fast_and_general_decoding_agree(data: bytes) -> None:
    assert _outcome(data) == _outcome(bytearray(data))


@settings(max_examples=400, deadline=None)
@given(st.one_of(HEADERS.map(cbor2.dumps), mutated(SMALL_HEADERS.map(cbor2.dumps)), st.binary(min_size=1, max_size=24)))
def test_small_header_reader_agrees_with_cbor2(ph: bytes) -> None:
    fast = cose._small_header(ph)
    if fast is not None:
        expected = cbor2.loads(ph)
        assert fast == expected
        assert [(type(k), type(v)) for k, v in fast.items()] == [(type(k), type(v)) for k, v in expected.items()]
