"""COSE_Key generation, serialization (CBOR, JSON, PEM), validation and stable key ids."""

from __future__ import annotations

import dataclasses

import pytest

from ace_core import cbor
from ace_core.errors import WireFormatError
from ace_core.keys import CoseKey, algorithm_from_name
from ace_core.registry import CoseAlgorithm, CoseCurve, CoseKeyParam, CoseKeyType

ALL = list(CoseAlgorithm)


@pytest.mark.parametrize("alg", ALL, ids=lambda a: a.name)
def test_generate_and_serialize_roundtrip(alg: CoseAlgorithm) -> None:
    key = CoseKey.generate(alg)
    assert key.alg == alg
    assert key.kid is not None
    assert CoseKey.from_cbor(key.to_cbor()) == key
    assert CoseKey.from_json(key.to_json()) == key
    if not key.is_symmetric:
        assert CoseKey.from_pem(key.to_pem()) == key
        assert CoseKey.from_pem(key.public().to_pem()) == key.public()
        assert key.public().d is None
        assert not key.public().has_private


def test_asymmetric_kid_is_stable_thumbprint() -> None:
    key = CoseKey.generate(CoseAlgorithm.EDDSA)
    assert key.kid == key.thumbprint()[:8]
    # The thumbprint covers only the required public members (RFC 9679): same for the public part.
    assert key.public().thumbprint() == key.thumbprint()
    assert CoseKey.from_pem(key.to_pem()).kid == key.kid


def test_secrets_not_in_repr() -> None:
    sym = CoseKey.generate(CoseAlgorithm.AES_CCM_16_64_128)
    assert sym.secret().hex() not in repr(sym)
    assert repr(sym.secret()) not in repr(sym)
    ec_key = CoseKey.generate(CoseAlgorithm.ES256)
    assert repr(ec_key.d) not in repr(ec_key)


def test_point_not_on_curve_rejected() -> None:
    key = CoseKey.generate(CoseAlgorithm.ES256).public()
    m = key.to_cbor_map()
    m[CoseKeyParam.Y] = bytes(32)
    with pytest.raises(WireFormatError):
        CoseKey.from_cbor_map(m)


def test_mismatched_public_and_private_rejected() -> None:
    a, b = CoseKey.generate(CoseAlgorithm.EDDSA), CoseKey.generate(CoseAlgorithm.EDDSA)
    m = a.to_cbor_map()
    m[CoseKeyParam.X] = b.x
    with pytest.raises(WireFormatError):
        CoseKey.from_cbor_map(m)


@pytest.mark.parametrize(
    "m",
    [
        [],
        {},
        {1: 99},
        {1: True},
        {1: 4},  # symmetric without k
        {1: 4, -1: "text"},
        {1: 1, -1: 6},  # OKP without x
        {1: 1, -1: 4, -2: b"\x00" * 32},  # X25519 is not a signature curve here
        {1: 2, -1: 1, -2: b"\x00" * 32, -3: True},  # compressed point
        {1: 2, -1: 1, -2: b"\x00" * 31, -3: b"\x00" * 32},
        {1: 4, -1: b"k" * 16, 2: "kid-as-text"},
        {1: 4, -1: b"k" * 16, 3: "A128GCM"},
        {1: 4, -1: b"k" * 16, 4: "sign"},
    ],
)
def test_malformed_keys_raise_wire_format_error(m: object) -> None:
    with pytest.raises(WireFormatError):
        CoseKey.from_cbor_map(m)


def test_unknown_labels_round_trip() -> None:
    key = CoseKey.generate(CoseAlgorithm.A128GCM)
    m = key.to_cbor_map()
    m[-70000] = "private use"
    again = CoseKey.from_cbor_map(m)
    assert again.extra == {-70000: "private use"}
    assert cbor.loads(again.to_cbor()) == m


def test_unknown_algorithm_value_is_kept_as_int() -> None:
    key = CoseKey.from_cbor_map({CoseKeyParam.KTY: CoseKeyType.SYMMETRIC, CoseKeyParam.K: b"k" * 16, 3: -65535})
    assert key.alg == -65535 and type(key.alg) is int


def test_from_pem_rejects_garbage_and_rsa() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    with pytest.raises(WireFormatError):
        CoseKey.from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    pem = rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(WireFormatError):
        CoseKey.from_pem(pem)


def test_public_of_symmetric_refused() -> None:
    with pytest.raises(ValueError):
        CoseKey.generate(CoseAlgorithm.A128GCM).public()


def test_algorithm_names() -> None:
    assert algorithm_from_name("EdDSA") == CoseAlgorithm.EDDSA
    assert algorithm_from_name("HMAC256/64") == CoseAlgorithm.HMAC_256_64
    assert algorithm_from_name("HMAC 256/256") == CoseAlgorithm.HMAC_256_256
    assert algorithm_from_name("aes-ccm-16-64-128") == CoseAlgorithm.AES_CCM_16_64_128
    with pytest.raises(ValueError):
        algorithm_from_name("RS256")


def test_json_is_jwk_shaped() -> None:
    key = CoseKey.generate(CoseAlgorithm.ES256)
    j = key.to_json()
    assert j["kty"] == "EC" and j["crv"] == "P-256" and set(j) >= {"x", "y", "d", "kid", "alg"}
    okp = CoseKey.generate(CoseAlgorithm.EDDSA).public().to_json()
    assert okp["kty"] == "OKP" and okp["crv"] == "Ed25519" and "d" not in okp
    assert CoseKey.generate(CoseAlgorithm.A128GCM).to_json()["kty"] == "oct"


def test_frozen() -> None:
    key = CoseKey.generate(CoseAlgorithm.EDDSA)
    with pytest.raises(dataclasses.FrozenInstanceError):
        key.kid = b"x"  # type: ignore[misc]
    assert key.crv == CoseCurve.ED25519
