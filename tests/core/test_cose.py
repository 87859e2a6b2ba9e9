"""COSE layer: every algorithm round-trips, foreign implementations agree, and failures are the right errors."""

from __future__ import annotations

import pytest

from ace_core import cbor, cose
from ace_core.errors import SecurityWrapperFailed, TokenMalformed
from ace_core.keys import CoseKey
from ace_core.registry import CoseAlgorithm, CoseHeader, CoseTag

SIGN = [CoseAlgorithm.ES256, CoseAlgorithm.ES384, CoseAlgorithm.EDDSA]
MAC = [CoseAlgorithm.HMAC_256_64, CoseAlgorithm.HMAC_256_256, CoseAlgorithm.HMAC_384_384, CoseAlgorithm.HMAC_512_512]
AEAD = [
    CoseAlgorithm.AES_CCM_16_64_128,
    CoseAlgorithm.AES_CCM_16_64_256,
    CoseAlgorithm.AES_CCM_64_64_128,
    CoseAlgorithm.AES_CCM_64_64_256,
    CoseAlgorithm.A128GCM,
    CoseAlgorithm.A192GCM,
    CoseAlgorithm.A256GCM,
]


def _protect(alg: CoseAlgorithm, key: CoseKey, payload: bytes) -> bytes:
    if alg in SIGN:
        return cose.sign1(payload, key)
    if alg in MAC:
        return cose.mac0(payload, key)
    out = cose.encrypt0(payload, key)
    assert isinstance(out, bytes)
    return out


@pytest.mark.parametrize("alg", SIGN + MAC + AEAD, ids=lambda a: a.name)
def test_roundtrip_every_algorithm(alg: CoseAlgorithm) -> None:
    key = CoseKey.generate(alg)
    token = _protect(alg, key, b"payload")
    verifier = key if key.is_symmetric else key.public()
    payload, obj, used = cose.verify(token, cose.KeySet([verifier]))
    assert payload == b"payload"
    assert obj.alg == alg
    assert obj.kid == key.kid
    assert used == verifier


@pytest.mark.parametrize("alg", SIGN + MAC + AEAD, ids=lambda a: a.name)
def test_wrong_key_fails(alg: CoseAlgorithm) -> None:
    key = CoseKey.generate(alg, kid=b"k")
    other = CoseKey.generate(alg, kid=b"k")
    token = _protect(alg, key, b"payload")
    with pytest.raises(SecurityWrapperFailed):
        cose.verify(token, cose.KeySet([other if other.is_symmetric else other.public()]))


def test_unknown_kid_fails_and_kidless_objects_try_all_keys() -> None:
    key = CoseKey.generate(CoseAlgorithm.EDDSA)
    with pytest.raises(SecurityWrapperFailed):
        cose.verify(cose.sign1(b"x", key), cose.KeySet([CoseKey.generate(CoseAlgorithm.EDDSA).public()]))
    token = cose.sign1(b"x", key, include_kid=False)
    keys = cose.KeySet([CoseKey.generate(CoseAlgorithm.EDDSA).public(), key.public()])
    assert cose.verify(token, keys)[0] == b"x"


def test_key_alg_restricts_use() -> None:
    # RFC 9052 §7.1: a key naming an alg must not be used with another.
    key = CoseKey.generate(CoseAlgorithm.HMAC_256_256)
    token = cose.mac0(b"x", key)
    restricted = CoseKey.symmetric(key.secret(), alg=CoseAlgorithm.HMAC_256_64, kid=key.kid)
    with pytest.raises(SecurityWrapperFailed):
        cose.verify(token, cose.KeySet([restricted]))
    with pytest.raises(ValueError):
        cose.mac0(b"x", key, alg=CoseAlgorithm.HMAC_256_64)


def test_signature_alg_confusion_refused() -> None:
    # A MAC key must not verify a Sign1, and a Sign1 must not be accepted with a MAC algorithm.
    mac_key = CoseKey.generate(CoseAlgorithm.HMAC_256_256, kid=b"k")
    forged = cbor.dumps(cbor.CBORTag(CoseTag.SIGN1, [cbor.dumps({1: 5}), {4: b"k"}, b"x", b"\x00" * 32]))
    with pytest.raises(SecurityWrapperFailed):
        cose.verify(forged, cose.KeySet([mac_key]))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xa0",
        cbor.dumps(cbor.CBORTag(99, [])),
        cbor.dumps(cbor.CBORTag(CoseTag.SIGN1, [b"", {}, b"x"])),
        cbor.dumps(cbor.CBORTag(CoseTag.SIGN1, [b"", {}, b"x", b"s"])),  # no alg
        cbor.dumps(cbor.CBORTag(CoseTag.SIGN1, [cbor.dumps({1: -8}), {1: -8}, b"x", b"s"])),  # duplicate label
        cbor.dumps(cbor.CBORTag(CoseTag.SIGN1, [cbor.dumps({1: -8, 2: [99]}), {}, b"x", b"s"])),  # unknown crit
        cbor.dumps(cbor.CBORTag(CoseTag.SIGN1, [cbor.dumps({1: -8}), {}, None, b"s"])),  # detached payload
        cbor.dumps(cbor.CBORTag(CoseTag.SIGN1, [cbor.dumps([1]), {}, b"x", b"s"])),
        cbor.dumps([b"", {}, b"x", b"s"]),  # untagged
    ],
)
def test_malformed_objects_are_token_malformed(data: bytes) -> None:
    with pytest.raises(TokenMalformed):
        cose.verify(data, cose.KeySet([CoseKey.generate(CoseAlgorithm.EDDSA)]))


def test_ccm_iv_length_is_enforced() -> None:
    # pycose accepts a 12-byte IV for AES-CCM-16-64-128 and produces output no one else can read; we refuse it.
    key = CoseKey.generate(CoseAlgorithm.AES_CCM_16_64_128)
    with pytest.raises(ValueError):
        cose.encrypt0(b"x", key, iv=b"\x00" * 12)
    # A foreign token with the IV in the unprotected header, of the wrong length for CCM-16 (13 bytes).
    ph = cbor.dumps({CoseHeader.ALG: int(CoseAlgorithm.AES_CCM_16_64_128)})
    forged = cbor.dumps(cbor.CBORTag(CoseTag.ENCRYPT0, [ph, {CoseHeader.IV: b"\x00" * 12}, b"\x00" * 24]))
    with pytest.raises(TokenMalformed):
        cose.verify(forged, cose.KeySet([key]))


def test_all_headers_protected_and_unprotected_map_empty() -> None:
    # RFC 9770 §3: tokens whose hash identifies them must have an empty unprotected map.
    for alg in (CoseAlgorithm.EDDSA, CoseAlgorithm.HMAC_256_64, CoseAlgorithm.AES_CCM_16_64_128):
        key = CoseKey.generate(alg)
        obj = cose.decode(_protect(alg, key, b"x"))
        assert obj.unprotected == {}
        assert obj.protected[CoseHeader.KID] == key.kid


def test_registered_algorithms_are_ours() -> None:
    """ES256/ES384/EdDSA/HMAC in pycose's registry resolve to the cryptography-backed classes of ace_core.cose."""
    for alg, impl in [
        (CoseAlgorithm.ES256, cose.Es256),
        (CoseAlgorithm.ES384, cose.Es384),
        (CoseAlgorithm.EDDSA, cose.EdDSA),
        (CoseAlgorithm.HMAC_256_64, cose.HMAC25664),
        (CoseAlgorithm.HMAC_256_256, cose.HMAC256),
    ]:
        assert cose.algorithm_implementation(alg) is impl
        from pycose.algorithms import CoseAlgorithm as PycoseAlgorithm

        assert PycoseAlgorithm.from_id(int(alg)) is impl
        assert PycoseAlgorithm.from_id(impl.fullname) is impl


def test_es256_never_uses_the_pure_python_ecdsa_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sign and verify ES256 through both our API and pycose's Sign1Message with ``ecdsa`` booby-trapped."""
    import ecdsa
    from pycose.headers import KID, Algorithm
    from pycose.keys import EC2Key
    from pycose.messages import CoseMessage, Sign1Message

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("the pure-Python ecdsa package was used")

    for name in ("from_secret_exponent", "from_string", "from_der", "from_pem"):
        monkeypatch.setattr(ecdsa.SigningKey, name, boom)
    for name in ("from_public_point", "from_string", "from_der", "from_pem"):
        monkeypatch.setattr(ecdsa.VerifyingKey, name, boom)
    import pycose.algorithms as pa

    monkeypatch.setattr(pa, "SigningKey", ecdsa.SigningKey)
    monkeypatch.setattr(pa, "VerifyingKey", ecdsa.VerifyingKey)

    key = CoseKey.generate(CoseAlgorithm.ES256)
    token = cose.sign1(b"hello", key)
    assert cose.verify(token, cose.KeySet([key.public()]))[0] == b"hello"

    pkey = EC2Key(crv="P_256", x=key.x, y=key.y, d=key.d)
    msg = Sign1Message(phdr={Algorithm: "ES256"}, uhdr={KID: b"k"}, payload=b"hi")
    msg.key = pkey
    encoded = msg.encode()
    decoded = CoseMessage.decode(encoded)
    decoded.key = EC2Key(crv="P_256", x=key.x, y=key.y)
    assert decoded.verify_signature()


# pycose's SymmetricKey only takes 16/24/32-byte keys, so HMAC 384/512 are covered by the round-trip tests alone.
@pytest.mark.parametrize(
    "alg",
    SIGN + MAC[:2] + [CoseAlgorithm.AES_CCM_16_64_128, CoseAlgorithm.A128GCM],
    ids=lambda a: a.name,
)
def test_interop_with_pycose_both_directions(alg: CoseAlgorithm) -> None:
    from pycose.headers import IV, KID, Algorithm
    from pycose.keys import EC2Key, OKPKey, SymmetricKey
    from pycose.messages import CoseMessage, Enc0Message, Mac0Message, Sign1Message

    key = CoseKey.generate(alg, kid=b"kid1")
    if key.is_symmetric:
        pkey = SymmetricKey(k=key.secret())
    elif alg == CoseAlgorithm.EDDSA:
        pkey = OKPKey(crv="ED25519", x=key.x, d=key.d)
    else:
        pkey = EC2Key(crv="P_256" if alg == CoseAlgorithm.ES256 else "P_384", x=key.x, y=key.y, d=key.d)

    # ours -> pycose
    ours = _protect(alg, key, b"from ostiary")
    msg = CoseMessage.decode(ours)
    msg.key = pkey
    if alg in SIGN:
        assert msg.verify_signature()
        assert msg.payload == b"from ostiary"
    elif alg in MAC:
        assert msg.verify_tag()
    else:
        assert msg.decrypt() == b"from ostiary"

    # pycose -> ours
    if alg in SIGN:
        theirs = Sign1Message(phdr={Algorithm: int(alg)}, uhdr={KID: b"kid1"}, payload=b"from pycose")
    elif alg in MAC:
        theirs = Mac0Message(phdr={Algorithm: int(alg)}, uhdr={KID: b"kid1"}, payload=b"from pycose")
    else:
        iv = b"\x01" * (13 if alg == CoseAlgorithm.AES_CCM_16_64_128 else 12)
        theirs = Enc0Message(phdr={Algorithm: int(alg)}, uhdr={KID: b"kid1", IV: iv}, payload=b"from pycose")
    theirs.key = pkey
    verifier = key if key.is_symmetric else key.public()
    assert cose.verify(theirs.encode(), cose.KeySet([verifier]))[0] == b"from pycose"
