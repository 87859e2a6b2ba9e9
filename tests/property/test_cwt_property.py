"""Property tests for keys, COSE and CWTs (hypothesis).

* ``verify(issue(c, k), now=t) == c`` for generated claim sets and every token form, and with
  ``now >= exp + leeway`` verification raises TokenExpired;
* flipping any single byte of a signed, MACed or encrypted token makes verification fail;
* random bytes and random CBOR structures into every decoder raise only the project's own errors.
"""

from __future__ import annotations

import os
from typing import Any

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ace_core import cose, cwt
from ace_core.errors import AceError, TokenExpired, TokenRejected, WireFormatError
from ace_core.keys import CoseKey
from ace_core.pop import Confirmation, OscoreMaterial
from ace_core.registry import CoseAlgorithm

SIGN_KEY = CoseKey.generate(CoseAlgorithm.EDDSA)
ES_KEY = CoseKey.generate(CoseAlgorithm.ES256)
MAC_KEY = CoseKey.generate(CoseAlgorithm.HMAC_256_64)
ENC_KEY = CoseKey.generate(CoseAlgorithm.AES_CCM_16_64_128)
GCM_KEY = CoseKey.generate(CoseAlgorithm.A256GCM)
RS_KEYS = cose.KeySet([SIGN_KEY.public(), ES_KEY.public(), MAC_KEY, ENC_KEY, GCM_KEY])
FORMS: list[dict[str, CoseKey]] = [
    {"sign_key": SIGN_KEY},
    {"sign_key": ES_KEY},
    {"mac_key": MAC_KEY},
    {"encrypt_key": ENC_KEY},
    {"encrypt_key": GCM_KEY},
    {"sign_key": SIGN_KEY, "encrypt_key": ENC_KEY},
]
NOW = 1_800_000_000
AUD = "lock-1"

text = st.text(max_size=20)
small_bytes = st.binary(max_size=24)
cnf_strategy = st.one_of(
    st.none(),
    st.builds(lambda k: Confirmation(kid=k), st.binary(min_size=1, max_size=16)),
    st.builds(
        lambda i, ms, salt: Confirmation(osc=OscoreMaterial(id=i, ms=ms, salt=salt)),
        st.binary(min_size=1, max_size=8),
        st.binary(min_size=16, max_size=32),
        st.one_of(st.none(), small_bytes),
    ),
)
claims_strategy = st.builds(
    cwt.Claims,
    iss=st.one_of(st.none(), text),
    sub=st.one_of(st.none(), text),
    aud=st.just(AUD),
    exp=st.integers(NOW + 1, NOW + 10**6),
    nbf=st.one_of(st.none(), st.integers(NOW - 10**6, NOW)),
    iat=st.one_of(st.none(), st.integers(0, NOW), st.floats(0, NOW, allow_nan=False)),
    cti=st.one_of(st.none(), small_bytes),
    cnf=cnf_strategy,
    scope=st.one_of(st.none(), text, small_bytes),
    ace_profile=st.one_of(st.none(), st.integers(0, 10)),
    cnonce=st.one_of(st.none(), small_bytes),
    exi=st.one_of(st.none(), st.integers(0, 2**32)),
)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(claims_strategy, st.sampled_from(range(len(FORMS))), st.booleans())
def test_issue_then_verify_roundtrip(claims: cwt.Claims, form: int, tag: bool) -> None:
    token = cwt.issue(claims, cwt_tag=tag, **FORMS[form])
    assert cwt.verify(token, RS_KEYS, now=NOW, audience=AUD) == claims


@FAST
@given(claims_strategy, st.sampled_from(range(len(FORMS))), st.integers(0, 120))
def test_expired_tokens_are_rejected(claims: cwt.Claims, form: int, leeway: int) -> None:
    token = cwt.issue(claims, **FORMS[form])
    assert claims.exp is not None
    try:
        cwt.verify(token, RS_KEYS, now=claims.exp + leeway, audience=AUD, leeway=leeway)
    except TokenExpired:
        return
    raise AssertionError("expired token accepted")


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(range(len(FORMS))), st.data())
def test_any_flipped_byte_breaks_verification(form: int, data: st.DataObject) -> None:
    claims = cwt.Claims(iss="as", aud=AUD, exp=NOW + 60, cti=os.urandom(8), scope="open")
    token = bytearray(cwt.issue(claims, **FORMS[form]))
    index = data.draw(st.integers(0, len(token) - 1))
    flip = data.draw(st.integers(1, 255))
    token[index] ^= flip
    try:
        cwt.verify(bytes(token), RS_KEYS, now=NOW, audience=AUD)
    except TokenRejected:
        return
    raise AssertionError(f"token with byte {index} flipped by {flip:#x} verified")


def test_every_byte_flip_exhaustively_for_each_form() -> None:
    """Deterministic companion of the property: flip every byte of one token per form."""
    claims = cwt.Claims(iss="as", aud=AUD, exp=NOW + 60, cti=b"12345678", scope="open")
    for form in FORMS:
        token = cwt.issue(claims, **form)
        for i in range(len(token)):
            t = bytearray(token)
            t[i] ^= 0x01
            try:
                cwt.verify(bytes(t), RS_KEYS, now=NOW, audience=AUD)
            except TokenRejected:
                continue
            raise AssertionError(f"token of form {sorted(form)} verified with byte {i} flipped")


cbor_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.floats(), st.binary(max_size=40), text),
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(st.integers(-50, 50), text), children, max_size=6),
        st.builds(cbor2.CBORTag, st.sampled_from([16, 17, 18, 61, 1, 2, 24, 99]), children),
    ),
    max_leaves=30,
)


def _only_project_errors(fn: Any, arg: Any) -> None:
    try:
        fn(arg)
    except AceError:
        pass


DECODERS = [
    lambda b: cwt.verify(b, RS_KEYS, now=NOW, audience=AUD),
    lambda b: cose.decode(b),
    lambda b: CoseKey.from_cbor(b),
    lambda b: cwt.Claims.from_cbor(b),
]
MAP_DECODERS = [
    CoseKey.from_cbor_map,
    cwt.Claims.from_cbor_map,
    Confirmation.from_cbor_map,
    OscoreMaterial.from_cbor_map,
]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_project_errors(data: bytes) -> None:
    for decode in DECODERS:
        _only_project_errors(decode, data)


@settings(max_examples=300, deadline=None)
@given(cbor_values)
def test_random_cbor_structures_raise_only_project_errors(value: Any) -> None:
    try:
        encoded = cbor2.dumps(value)
    except (ValueError, TypeError, OverflowError):
        return
    for decode in DECODERS:
        _only_project_errors(decode, encoded)
    for decode_map in MAP_DECODERS:
        try:
            decode_map(value)
        except WireFormatError:
            pass
