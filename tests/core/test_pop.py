"""cnf / req_cnf / rs_cnf values and OSCORE_Input_Material (RFC 8747 §3, RFC 9201 §3, RFC 9203 §3.2.1)."""

from __future__ import annotations

import pytest

from ace_core import cbor, cose
from ace_core.errors import SecurityWrapperFailed, WireFormatError
from ace_core.keys import CoseKey
from ace_core.pop import Confirmation, OscoreMaterial, decrypt_cose_key, encrypt_cose_key
from ace_core.registry import ConfirmationMethod, CoseAlgorithm, OscoreInputMaterial


def test_rfc8747_kid_form() -> None:
    # RFC 8747 §3.4: {8: {3: h'dfd1aa976d8d4575a0fe34b96de2bfad'}} -- the cnf value is the inner map.
    kid = bytes.fromhex("dfd1aa976d8d4575a0fe34b96de2bfad")
    cnf = Confirmation.from_cbor_map({ConfirmationMethod.KID: kid})
    assert cnf.kid == kid
    assert cnf.to_cbor_map() == {3: kid}


def test_cose_key_form_and_json() -> None:
    key = CoseKey.generate(CoseAlgorithm.ES256).public()
    cnf = Confirmation(cose_key=key)
    assert Confirmation.from_cbor_map(cbor.loads(cbor.dumps(cnf.to_cbor_map()))) == cnf
    assert Confirmation.from_json(cnf.to_json()) == cnf
    assert cnf.to_json()["jwk"]["kty"] == "EC"


def test_osc_form_matches_rfc9203_example() -> None:
    # RFC 9203 §3.2 response: cnf {4: {0: h'01', 2: h'f9af838368e353e78888e1426bd94e6f'}}
    ms = bytes.fromhex("f9af838368e353e78888e1426bd94e6f")
    cnf = Confirmation.from_cbor_map({4: {0: b"\x01", 2: ms}})
    assert cnf.osc == OscoreMaterial(id=b"\x01", ms=ms)
    assert ms.hex() not in repr(cnf.osc)
    assert Confirmation.from_json(cnf.to_json()) == cnf
    assert cnf.to_json() == {"osc": {"id": "AQ", "ms": "-a-Dg2jjU-eIiOFCa9lObw"}}


def test_osc_all_members_and_unknown_labels() -> None:
    m = {0: b"\x02", 1: 1, 2: b"s" * 16, 3: 5, 4: 10, 5: b"salt", 6: b"ctx", 99: "future"}
    osc = OscoreMaterial.from_cbor_map(m)
    assert osc.hkdf == 5 and osc.alg == 10 and osc.context_id == b"ctx" and osc.extra == {99: "future"}
    assert osc.to_cbor_map() == m
    assert OscoreMaterial.from_json(osc.to_json()) == osc


@pytest.mark.parametrize(
    "m",
    [
        {},
        {1: {1: 4}, 3: b"k"},  # two keys
        {3: "text-kid"},
        {4: {0: "text-id"}},
        {4: {1: True}},
        {4: {3: 1.5}},
        {2: "not an array"},
        {"x": 1},
        [],
    ],
)
def test_malformed_cnf(m: object) -> None:
    with pytest.raises(WireFormatError):
        Confirmation.from_cbor_map(m)


def test_unknown_cnf_members_are_ignored_but_kept() -> None:
    cnf = Confirmation.from_cbor_map({3: b"k", 77: "ignored"})
    assert cnf.kid == b"k" and cnf.extra == {77: "ignored"}


def test_encrypted_cose_key_roundtrip() -> None:
    kek = CoseKey.generate(CoseAlgorithm.AES_CCM_16_64_128)
    pop_key = CoseKey.generate(CoseAlgorithm.HMAC_256_256)
    cnf = encrypt_cose_key(pop_key, kek)
    assert cnf.encrypted_cose_key is not None
    decoded = Confirmation.from_cbor_map(cbor.loads(cbor.dumps(cnf.to_cbor_map())))
    assert decrypt_cose_key(decoded, cose.KeySet([kek])) == pop_key
    with pytest.raises(SecurityWrapperFailed):
        decrypt_cose_key(decoded, cose.KeySet([CoseKey.generate(CoseAlgorithm.AES_CCM_16_64_128, kid=kek.kid)]))
    assert Confirmation.from_json(cnf.to_json()) == cnf


def test_osc_label_enum_covers_table() -> None:
    assert [int(x) for x in OscoreInputMaterial] == [0, 1, 2, 3, 4, 5, 6]
