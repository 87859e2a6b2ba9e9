"""The hand-assembled COSE structures (ace_core.cose, ace_core.cbor.head/bstr/tstr) equal cbor2's encoding."""

from __future__ import annotations

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from ace_core import cbor, cose
from ace_core.keys import CoseKey
from ace_core.registry import CoseAlgorithm, CoseTag

BOUNDARIES = [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1]


def test_head_matches_cbor2_at_every_length_boundary() -> None:
    for n in BOUNDARIES:
        assert cbor.head(0, n) == cbor2.dumps(n)
        assert cbor.head(6, n) + b"\xf6" == cbor2.dumps(cbor2.CBORTag(n, None))
    for n in BOUNDARIES[:7]:
        assert cbor.bstr(b"x" * n) == cbor2.dumps(b"x" * n)
        assert cbor.tstr("y" * n) == cbor2.dumps("y" * n)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.text(max_size=300))
def test_bstr_tstr_match_cbor2(data: bytes, text: str) -> None:
    assert cbor.bstr(data) == cbor2.dumps(data)
    assert cbor.tstr(text) == cbor2.dumps(text)


KEYS = {
    CoseTag.SIGN1: CoseKey.generate(CoseAlgorithm.EDDSA),
    CoseTag.MAC0: CoseKey.generate(CoseAlgorithm.HMAC_256_64),
    CoseTag.ENCRYPT0: CoseKey.generate(CoseAlgorithm.A128GCM),
}


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400), st.sampled_from(list(KEYS)), st.booleans())
def test_cose_objects_are_canonical_cbor(payload: bytes, tag: CoseTag, kid: bool) -> None:
    key = KEYS[tag]
    if tag == CoseTag.SIGN1:
        token = cose.sign1(payload, key, include_kid=kid)
    elif tag == CoseTag.MAC0:
        token = cose.mac0(payload, key, include_kid=kid)
    else:
        out = cose.encrypt0(payload, key, include_kid=kid)
        assert isinstance(out, bytes)
        token = out
    # Re-encoding what cbor2 decodes gives the same bytes: the hand-built framing is preferred-form CBOR.
    assert cbor2.dumps(cbor2.loads(token)) == token
    assert cbor2.loads(token).tag == tag
