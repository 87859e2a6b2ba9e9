"""Unit tests for ``ace_core.messages``: codecs, strict decoding, unknown keys/values, forms and JSON."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from ace_core import cbor
from ace_core.errors import (
    InvalidClient,
    InvalidRequest,
    OAuthError,
    PayloadTooLarge,
    WireFormatError,
    oauth_error_class,
)
from ace_core.messages import (
    ACE_PROFILE_REQUESTED,
    AccessInformation,
    AuthzInfoRequest,
    AuthzInfoResponse,
    CreationHints,
    ErrorResponse,
    IntrospectionRequest,
    IntrospectionResponse,
    TokenRequest,
    TokenResponse,
    dump_json,
    parse_json,
)
from ace_core.registry import (
    AceProfile,
    ConfirmationMethod,
    CoseAlgorithm,
    CoseCurve,
    CoseKeyParam,
    CoseKeyType,
    CreationHint,
    ErrorCode,
    GrantType,
    IntrospectionParam,
    OscoreInputMaterial,
    TokenParam,
    TokenType,
)

ALL_MESSAGES: list[Any] = [
    TokenRequest,
    AccessInformation,
    ErrorResponse,
    CreationHints,
    IntrospectionRequest,
    IntrospectionResponse,
    AuthzInfoRequest,
    AuthzInfoResponse,
]

SYMMETRIC_CNF = {
    ConfirmationMethod.COSE_KEY: {
        CoseKeyParam.KTY: CoseKeyType.SYMMETRIC,
        CoseKeyParam.KID: b"\x3d\x02",
        CoseKeyParam.K: b"\x00" * 16,
    }
}


# --- structure, ordering, determinism ---------------------------------------------------------------------


def test_every_field_has_exactly_one_wire_parameter() -> None:
    for cls in ALL_MESSAGES:
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        attrs = [p.attr for p in cls._PARAMS]
        assert sorted(attrs) == sorted(names), cls
        assert len({int(p.key) for p in cls._PARAMS}) == len(attrs), cls
        assert len({p.name for p in cls._PARAMS}) == len(attrs), cls


def test_messages_are_frozen_and_extra_is_read_only() -> None:
    info = AccessInformation(access_token=b"t", extra={99: 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.expires_in = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        info.extra[100] = 2  # type: ignore[index]


def test_cbor_keys_are_emitted_in_ascending_order_with_extras_interleaved() -> None:
    request = TokenRequest(
        cnonce=b"n",
        grant_type=GrantType.CLIENT_CREDENTIALS,
        audience="rs",
        client_id="c",
        extra={"text": 1, 100: 2, 6: 3},
    )
    keys = list(cbor.loads(request.to_cbor()))
    assert keys == [
        TokenParam.AUDIENCE,
        6,
        TokenParam.CLIENT_ID,
        TokenParam.GRANT_TYPE,
        TokenParam.CNONCE,
        100,
        "text",
    ]


def test_encoding_is_deterministic_regardless_of_extra_insertion_order() -> None:
    a = AccessInformation(access_token=b"t", extra={200: 1, 100: 2, "z": 3, "a": 4})
    b = AccessInformation(access_token=b"t", extra={"a": 4, 100: 2, "z": 3, 200: 1})
    assert a == b
    assert a.to_cbor() == b.to_cbor()
    c = AccessInformation(access_token=b"t", extra={"z": 3, "a": {"y": 1, "b": 2}})
    d = AccessInformation(access_token=b"t", extra={"a": {"b": 2, "y": 1}, "z": 3})
    assert c.to_json_bytes() == d.to_json_bytes()


def test_nested_maps_are_encoded_in_deterministic_order() -> None:
    """RFC 8949 §4.2.1 order inside cnf too: 1, 2, -1 (0x01, 0x02, 0x20), as in RFC 9200 Fig. 7."""
    shuffled = {
        ConfirmationMethod.COSE_KEY: {
            CoseKeyParam.K: b"k",
            CoseKeyParam.KID: b"i",
            CoseKeyParam.KTY: CoseKeyType.SYMMETRIC,
        }
    }
    info = AccessInformation(access_token=b"t", cnf=shuffled)
    cnf = cbor.loads(info.to_cbor())[TokenParam.CNF]
    assert list(cnf[ConfirmationMethod.COSE_KEY]) == [CoseKeyParam.KTY, CoseKeyParam.KID, CoseKeyParam.K]
    ordered = {
        ConfirmationMethod.COSE_KEY: {
            CoseKeyParam.KTY: CoseKeyType.SYMMETRIC,
            CoseKeyParam.KID: b"i",
            CoseKeyParam.K: b"k",
        }
    }
    assert info == AccessInformation(access_token=b"t", cnf=ordered)
    assert info.to_cbor() == AccessInformation(access_token=b"t", cnf=ordered).to_cbor()


def test_token_response_alias() -> None:
    assert TokenResponse is AccessInformation


def test_same_integer_means_different_parameters_per_table() -> None:
    """40 is nonce1 in the token/authz-info mapping (RFC 9203 §9.3) but exi in introspection (Table 6)."""
    assert int(TokenParam.NONCE1) == int(IntrospectionParam.EXI)
    authz = AuthzInfoRequest.from_cbor_map({TokenParam.ACCESS_TOKEN: b"t", TokenParam.NONCE1: b"n"})
    assert authz.nonce1 == b"n"
    introspection = IntrospectionResponse.from_cbor_map({IntrospectionParam.ACTIVE: True, IntrospectionParam.EXI: 60})
    assert introspection.exi == 60
    with pytest.raises(WireFormatError):
        IntrospectionResponse.from_cbor_map({IntrospectionParam.ACTIVE: True, IntrospectionParam.EXI: b"n"})


# --- JSON codec -------------------------------------------------------------------------------------------


def test_access_information_json_uses_rfc_names_and_base64url() -> None:
    info = AccessInformation(
        access_token=b"\xfb\xff",
        token_type=TokenType.POP,
        expires_in=3600,
        ace_profile=AceProfile.COAP_DTLS,
        scope="r_temp",
        cnf=SYMMETRIC_CNF,
        refresh_token=b"\x01",
    )
    assert info.to_json() == {
        "access_token": "-_8",
        "expires_in": 3600,
        "cnf": {"jwk": {"kty": "oct", "kid": "PQI", "k": "AAAAAAAAAAAAAAAAAAAAAA"}},  # RFC 7800 §3.2
        "scope": "r_temp",
        "token_type": "PoP",
        "refresh_token": "AQ",
        "ace_profile": "coap_dtls",
    }
    assert AccessInformation.from_json(info.to_json()) == info
    assert AccessInformation.from_json_bytes(info.to_json_bytes()) == info


def test_token_request_json_names() -> None:
    request = TokenRequest(
        grant_type=GrantType.CLIENT_CREDENTIALS,
        client_id="client1",
        client_secret=b"s3cr3t",
        audience="tempSensor",
        scope=None,
        req_cnf={ConfirmationMethod.KID: b"\x01\x02"},
        ace_profile=ACE_PROFILE_REQUESTED,
        cnonce=b"\xe0\xa1",
    )
    assert request.to_json() == {
        "req_cnf": {"kid": "AQI"},  # RFC 7800 §3.4
        "audience": "tempSensor",
        "client_id": "client1",
        "client_secret": "s3cr3t",
        "grant_type": "client_credentials",
        "ace_profile": "",
        "cnonce": "4KE",
    }
    assert TokenRequest.from_json(request.to_json()) == request


@pytest.mark.parametrize("member", list(GrantType))
def test_every_grant_type_has_a_json_name(member: GrantType) -> None:
    name = TokenRequest(grant_type=member).to_json()["grant_type"]
    assert name == member.name.lower()
    assert TokenRequest.from_json({"grant_type": name}).grant_type is member


@pytest.mark.parametrize("member", list(ErrorCode))
def test_every_error_code_has_a_json_name_and_exception(member: ErrorCode) -> None:
    error = ErrorResponse(error=member, error_description="fixed text")
    assert error.to_json() == {"error": member.name.lower(), "error_description": "fixed text"}
    exc = error.to_exception()
    assert exc is not None and type(exc) is oauth_error_class(member)
    assert exc.code is member and exc.description == "fixed text"


@pytest.mark.parametrize("member", list(AceProfile))
def test_every_ace_profile_has_a_json_name(member: AceProfile) -> None:
    assert AccessInformation(access_token=b"t", ace_profile=member).to_json()["ace_profile"] == member.name.lower()


def test_token_type_json_names_are_case_insensitive() -> None:
    """RFC 6749 §5.1: token_type is case insensitive."""
    assert AccessInformation(access_token=b"", token_type=TokenType.BEARER).to_json()["token_type"] == "Bearer"
    for text in ("PoP", "pop", "POP"):
        assert AccessInformation.from_json({"access_token": "", "token_type": text}).token_type is TokenType.POP


def test_unregistered_values_are_json_numbers() -> None:
    request = TokenRequest(grant_type=42, ace_profile=77)
    assert request.to_json() == {"grant_type": 42, "ace_profile": 77}
    assert TokenRequest.from_json(request.to_json()) == request


def test_registered_plain_int_is_written_by_name() -> None:
    assert TokenRequest(grant_type=int(GrantType.CLIENT_CREDENTIALS)).to_json() == {"grant_type": "client_credentials"}


@pytest.mark.parametrize(
    "obj",
    [
        {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer"},
        {"grant_type": "Client_Credentials"},  # grant type names are case sensitive
        {"ace_profile": "coap_unknown"},
        {"cnonce": "4KE="},  # padding is not allowed
        {"cnonce": "4K+"},  # base64, not base64url
        {"cnonce": "4KF"},  # non-canonical trailing bits
        {"cnonce": "A"},  # impossible length
        {"cnonce": 5},
        {"audience": None},
        {"audience": 5},
        {"audience": "\ud800"},  # lone surrogate
        {"scope": {"s": 1}},
        {"req_cnf": "AQI"},
        {"req_cnf": {"3": "AQI"}},  # decimal labels are not the RFC 7800 form: no PoP key here
        {"req_cnf": {}},
        {"req_cnf": {"kid": "AQ", "jwk": {"kty": "oct", "k": "AQ"}}},  # two PoP keys (RFC 8747 §3.1)
        {"req_cnf": {"kid": 1.5}},
        {"req_cnf": {"kid": "A"}},  # impossible base64url length
        pytest.param({"req_cnf": {"kid": "AQ="}}, id="req_cnf-kid-padded"),  # base64url without padding only
        {"req_cnf": {"jwk": "AQ"}},
        {"req_cnf": {"jwk": {"kty": "oct"}}},  # symmetric key without k
        {"req_cnf": {"jwk": {"kty": "EC", "crv": "P-256", "x": "A" * 43, "y": "A" * 43}}},  # (0, 0) is off the curve
        {"req_cnf": {"jwk": {"kty": "RSA", "n": "AQ", "e": "AQAB"}}},
        {"req_cnf": {"osc": {"id": 5}}},
        {"req_cnf": {"osc": {"id": "AQ", "version": -1}}},
        {"req_cnf": {"osc": {"1" * 5000: 1}}},  # unknown integer label beyond int() limits
        {"req_cnf": {"osc": {"\u00b9": 1}}},  # "¹".isdigit() is true, int("¹") fails
        {"req_cnf": {"Encrypted_COSE_Key": "AQ"}},  # CBOR 1, not a COSE_Encrypt0 array
        {"client_secret": 5},
        {"extra": float("nan")},
        {"extra": {1: 2}},
        {5: "x"},
    ],
)
def test_token_request_from_json_rejects(obj: dict[Any, Any]) -> None:
    with pytest.raises(WireFormatError):
        TokenRequest.from_json(obj)


# RFC 7800 §3.1 / RFC 9201 §3.1 JSON form of cnf maps. Expected JSON is written out from the RFC member names
# (RFC 7517/8037 JWK, RFC 9203 §3.2.1 Table 1 for osc); byte values are base64url without padding.
RFC8037_ED25519_X = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")  # A.2
RFC7517_P256_X = bytes.fromhex("30a0424cd21c2944838a2d75c92b37e76ea20d9f00893a3b4eee8a3c0aafec3e")  # A.1
RFC7517_P256_Y = bytes.fromhex("e04b65e92456d9888b52b379bdfbd51ee869ef1f0fc65b6659695b6cce081723")
RFC8613_MS = bytes.fromhex("0102030405060708090a0b0c0d0e0f10")  # C.1.1
RFC8613_SALT = bytes.fromhex("9e7ca92223786340")
RFC8613_CONTEXT_ID = bytes.fromhex("37cbf3210017a2d3")


@pytest.mark.parametrize(
    ("cnf", "expected"),
    [
        pytest.param({ConfirmationMethod.KID: b"\x01\x02"}, {"kid": "AQI"}, id="kid"),
        pytest.param(SYMMETRIC_CNF, {"jwk": {"kty": "oct", "kid": "PQI", "k": "AAAAAAAAAAAAAAAAAAAAAA"}}, id="oct"),
        pytest.param(
            {
                ConfirmationMethod.COSE_KEY: {
                    CoseKeyParam.KTY: CoseKeyType.SYMMETRIC,
                    CoseKeyParam.ALG: CoseAlgorithm.A128GCM,
                    CoseKeyParam.K: b"\x00" * 16,
                }
            },
            {"jwk": {"kty": "oct", "alg": "A128GCM", "k": "AAAAAAAAAAAAAAAAAAAAAA"}},
            id="oct-alg",
        ),
        pytest.param(
            {
                ConfirmationMethod.COSE_KEY: {
                    CoseKeyParam.KTY: CoseKeyType.OKP,
                    CoseKeyParam.CRV: CoseCurve.ED25519,
                    CoseKeyParam.X: RFC8037_ED25519_X,
                }
            },
            {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}},
            id="okp",
        ),
        pytest.param(
            {
                ConfirmationMethod.COSE_KEY: {
                    CoseKeyParam.KTY: CoseKeyType.EC2,
                    CoseKeyParam.CRV: CoseCurve.P_256,
                    CoseKeyParam.X: RFC7517_P256_X,
                    CoseKeyParam.Y: RFC7517_P256_Y,
                }
            },
            {
                "jwk": {
                    "kty": "EC",
                    "crv": "P-256",
                    "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
                    "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM",
                }
            },
            id="ec2",
        ),
        pytest.param(
            {
                ConfirmationMethod.OSC: {
                    OscoreInputMaterial.ID: b"\x01",
                    OscoreInputMaterial.VERSION: 1,
                    OscoreInputMaterial.MS: RFC8613_MS,
                    OscoreInputMaterial.HKDF: -10,
                    OscoreInputMaterial.ALG: 10,
                    OscoreInputMaterial.SALT: RFC8613_SALT,
                    OscoreInputMaterial.CONTEXT_ID: RFC8613_CONTEXT_ID,
                }
            },
            {
                "osc": {
                    "id": "AQ",
                    "version": 1,
                    "ms": "AQIDBAUGBwgJCgsMDQ4PEA",
                    "hkdf": -10,
                    "alg": 10,
                    "salt": "nnypIiN4Y0A",
                    "contextId": "N8vzIQAXotM",
                }
            },
            id="osc",
        ),
        pytest.param(
            # COSE_Encrypt0 [h'a1010a', {}, h'00'] is CBOR 83 43a1010a a0 4100 (the content is not decrypted here).
            {ConfirmationMethod.ENCRYPTED_COSE_KEY: [bytes.fromhex("a1010a"), {}, b"\x00"]},
            {"Encrypted_COSE_Key": "g0OhAQqgQQA"},
            id="encrypted-cose-key",
        ),
    ],
)
def test_cnf_json_uses_rfc7800_form(cnf: dict[Any, Any], expected: dict[str, Any]) -> None:
    """RFC 9201 §3.1: in JSON, cnf / req_cnf / rs_cnf are RFC 7800 §3.1 confirmation objects."""
    info = AccessInformation(access_token=b"t", cnf=cnf, rs_cnf=cnf)
    assert info.to_json() == {"access_token": "dA", "cnf": expected, "rs_cnf": expected}
    assert AccessInformation.from_json(info.to_json()) == info
    assert AccessInformation.from_json_bytes(info.to_json_bytes()) == info
    request = TokenRequest(req_cnf=cnf)
    assert request.to_json() == {"req_cnf": expected}
    assert TokenRequest.from_json(request.to_json()) == request
    response = IntrospectionResponse(active=True, cnf=cnf)
    assert response.to_json() == {"active": True, "cnf": expected}
    assert IntrospectionResponse.from_json(response.to_json()) == response


@pytest.mark.parametrize(
    "cnf",
    [
        pytest.param({}, id="no-key"),
        pytest.param({ConfirmationMethod.KID: b"\x01"} | SYMMETRIC_CNF, id="two-keys"),
        pytest.param({ConfirmationMethod.KID: "text kid"}, id="text-kid"),
        pytest.param({ConfirmationMethod.COSE_KEY: {CoseKeyParam.KTY: CoseKeyType.SYMMETRIC}}, id="oct-without-k"),
        pytest.param(
            {
                ConfirmationMethod.COSE_KEY: {
                    CoseKeyParam.KTY: CoseKeyType.SYMMETRIC,
                    CoseKeyParam.ALG: "text alg",
                    CoseKeyParam.K: b"k",
                }
            },
            id="text-alg",
        ),
        pytest.param(
            {
                ConfirmationMethod.COSE_KEY: {
                    CoseKeyParam.KTY: CoseKeyType.EC2,
                    CoseKeyParam.CRV: CoseCurve.P_256,
                    CoseKeyParam.X: b"\x00" * 32,
                    CoseKeyParam.Y: b"\x00" * 32,
                }
            },
            id="ec2-off-curve",
        ),
        pytest.param({ConfirmationMethod.OSC: {OscoreInputMaterial.ID: "text id"}}, id="osc-text-id"),
        pytest.param({ConfirmationMethod.ENCRYPTED_COSE_KEY: b"\x01"}, id="encrypted-not-array"),
        pytest.param({"x5t": b"\x01"}, id="text-label"),
    ],
)
def test_cose_json_mapping_rejects_unrepresentable_values_on_encode(cnf: dict[Any, Any]) -> None:
    """A cnf map needs exactly one valid PoP key (RFC 8747 §3.1) for a JSON form; CBOR still carries any map."""
    messages = [
        TokenRequest(req_cnf=cnf),
        AccessInformation(access_token=b"t", cnf=cnf),
        AccessInformation(access_token=b"t", rs_cnf=cnf),
        IntrospectionResponse(active=True, cnf=cnf),
    ]
    for message in messages:
        with pytest.raises(ValueError, match="no JSON form"):
            message.to_json()
        assert type(message).from_cbor(message.to_cbor()) == message


def test_binary_scope_has_no_json_form() -> None:
    message = CreationHints(scope=b"\x81\x82")
    assert CreationHints.from_cbor(message.to_cbor()) == message
    with pytest.raises(ValueError, match="binary scope"):
        message.to_json()


def test_non_utf8_client_secret_has_no_json_form() -> None:
    with pytest.raises(ValueError, match="client_secret"):
        TokenRequest(client_secret=b"\xff").to_json()


def test_parse_json_hardening() -> None:
    assert parse_json(b'{"a":[1,2.5,"x",null,true]}') == {"a": [1, 2.5, "x", None, True]}
    assert parse_json('{"a":1}') == {"a": 1}
    bad: list[Any] = [
        b"\xff",  # not UTF-8
        b"\xef\xbb\xbf{}",  # UTF-8 BOM
        b'{"a":1,"a":2}',  # duplicate member
        b"NaN",
        b"[Infinity]",
        b"1e999",
        b"1" * 5000,  # more digits than int() accepts
        b"[" * 5000 + b"]" * 5000,
        b'{"a":',
        b"",
        '"\ud800"',  # str that is not valid Unicode
        12,
    ]
    for data in bad:
        with pytest.raises(WireFormatError):
            parse_json(data, max_size=20000)


def test_dump_json_is_compact_utf8() -> None:
    assert dump_json({"a": "é", "b": [1]}) == '{"a":"é","b":[1]}'.encode()


def test_from_json_bytes_rejects_bad_json() -> None:
    with pytest.raises(WireFormatError):
        TokenRequest.from_json_bytes(b'{"audience": "rs"')
    with pytest.raises(WireFormatError):
        TokenRequest.from_json_bytes(b'["audience"]')


# --- form codec (RFC 6749 Appendix B) ---------------------------------------------------------------------


def test_from_form_parses_req_cnf_json_and_names() -> None:
    request = TokenRequest.from_form(
        {
            "grant_type": "client_credentials",
            "client_id": "c1",
            "client_secret": "pw",
            "audience": "rs",
            "scope": "read write",
            "req_cnf": '{"kid": "AQI"}',
            "ace_profile": "",
        }
    )
    assert request == TokenRequest(
        grant_type=GrantType.CLIENT_CREDENTIALS,
        client_id="c1",
        client_secret=b"pw",
        audience="rs",
        scope="read write",
        req_cnf={ConfirmationMethod.KID: b"\x01\x02"},
        ace_profile=ACE_PROFILE_REQUESTED,
    )
    assert TokenRequest.from_form(request.to_form()) == request


def test_from_form_parses_req_cnf_jwk() -> None:
    """RFC 9201 §3.1: a form-encoded req_cnf is RFC 7800 JSON text; here an Ed25519 JWK (RFC 8037 A.2)."""
    request = TokenRequest.from_form(
        {"req_cnf": '{"jwk": {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}}'}
    )
    assert request.req_cnf == {
        ConfirmationMethod.COSE_KEY: {
            CoseKeyParam.KTY: CoseKeyType.OKP,
            CoseKeyParam.CRV: CoseCurve.ED25519,
            CoseKeyParam.X: RFC8037_ED25519_X,
        }
    }
    assert TokenRequest.from_form(request.to_form()) == request


def test_from_form_empty_values_are_omitted_except_ace_profile() -> None:
    """RFC 6749 §3.2: an empty parameter counts as omitted; RFC 9200 §5.8.4.3 makes empty ace_profile a value."""
    request = TokenRequest.from_form({"audience": "", "scope": "", "ace_profile": ""})
    assert request == TokenRequest(ace_profile=ACE_PROFILE_REQUESTED)
    assert TokenRequest.from_form({"ace_profile": "coap_oscore"}).ace_profile is AceProfile.COAP_OSCORE


@pytest.mark.parametrize(
    "fields",
    [
        {"req_cnf": "{not json"},
        {"req_cnf": '{"kid": "AQI"'},
        {"req_cnf": "[1]"},
        {"req_cnf": '{"3": "AQI"}'},  # decimal labels are not the RFC 7800 form
        {"req_cnf": '{"kid": "A"}'},
        {"req_cnf": '{"jwk": {"kty": "OKP", "crv": "Ed25519"}}'},
        {"grant_type": "2"},
        {"audience": 5},
        {5: "x"},
        [("audience", "rs")],
    ],
)
def test_from_form_rejects(fields: Any) -> None:
    with pytest.raises(WireFormatError):
        TokenRequest.from_form(fields)


def test_from_form_req_cnf_size_limit() -> None:
    with pytest.raises(PayloadTooLarge):
        TokenRequest.from_form({"req_cnf": '{"kid": "' + "A" * 100 + '"}'}, max_size=50)


def test_to_form_refuses_what_a_form_cannot_carry() -> None:
    with pytest.raises(ValueError):
        TokenRequest(scope=b"\x01").to_form()
    with pytest.raises(ValueError):
        TokenRequest(grant_type=42).to_form()
    with pytest.raises(ValueError, match="empty"):
        TokenRequest(state="").to_form()


def test_introspection_request_form() -> None:
    request = IntrospectionRequest.from_form({"token": "7gj0dXJQ43U", "token_type_hint": "access_token"})
    assert request == IntrospectionRequest(token=bytes.fromhex("ee08f4757250e375"), token_type_hint="access_token")
    assert IntrospectionRequest.from_form(request.to_form()) == request


# --- unknown keys and values ------------------------------------------------------------------------------


def test_unknown_cbor_keys_round_trip() -> None:
    data = cbor.dumps({TokenParam.ACCESS_TOKEN: b"t", 99: [1, {2: b"x"}], -7: None, "ext": "v"})
    info = AccessInformation.from_cbor(data)
    assert info.access_token == b"t"
    assert dict(info.extra) == {99: [1, {2: b"x"}], -7: None, "ext": "v"}
    assert AccessInformation.from_cbor(info.to_cbor()) == info


def test_unknown_json_members_round_trip() -> None:
    obj = {"access_token": "dA", "x_vendor": {"a": [1, 2.5, None]}, "flag": True}
    info = AccessInformation.from_json(obj)
    assert dict(info.extra) == {"x_vendor": {"a": [1, 2.5, None]}, "flag": True}
    assert info.to_json() == obj
    assert AccessInformation.from_json_bytes(info.to_json_bytes()) == info


def test_integer_extra_keys_have_no_json_name() -> None:
    with pytest.raises(ValueError, match="no JSON name"):
        AccessInformation(access_token=b"", extra={99: 1}).to_json()
    with pytest.raises(ValueError):
        AccessInformation(access_token=b"", extra={"x": b"bytes"}).to_json()


def test_extra_must_not_shadow_a_parameter() -> None:
    with pytest.raises(ValueError, match="shadows"):
        AccessInformation(access_token=b"", extra={TokenParam.EXPIRES_IN: 5})
    with pytest.raises(ValueError, match="shadows"):
        AccessInformation(access_token=b"", extra={"expires_in": 5})
    with pytest.raises(TypeError):
        AccessInformation(access_token=b"", extra={b"k": 5})  # type: ignore[dict-item]
    # A CBOR text key spelling a parameter name is a JSON/CBOR mix-up, rejected as malformed.
    with pytest.raises(WireFormatError, match="shadows"):
        AccessInformation.from_cbor_map({TokenParam.ACCESS_TOKEN: b"", "expires_in": 5})


def test_unknown_registry_values_decode_to_int() -> None:
    request = TokenRequest.from_cbor_map({TokenParam.GRANT_TYPE: 42, TokenParam.ACE_PROFILE: 77})
    assert type(request.grant_type) is int and request.grant_type == 42
    assert type(request.ace_profile) is int and request.ace_profile == 77
    info = AccessInformation.from_cbor_map({TokenParam.ACCESS_TOKEN: b"", TokenParam.TOKEN_TYPE: -3})
    assert type(info.token_type) is int and info.token_type == -3
    error = ErrorResponse.from_cbor_map({TokenParam.ERROR: 99})
    assert type(error.error) is int and error.error == 99
    assert error.to_exception() is None
    assert ErrorResponse.from_cbor(error.to_cbor()) == error


def test_known_registry_values_decode_to_members() -> None:
    request = TokenRequest.from_cbor_map({TokenParam.GRANT_TYPE: int(GrantType.CLIENT_CREDENTIALS)})
    assert request.grant_type is GrantType.CLIENT_CREDENTIALS


# --- ace_profile requested with null (RFC 9200 §5.8.4.3) ----------------------------------------------------


def test_null_ace_profile_request() -> None:
    request = TokenRequest.from_cbor(cbor.dumps({TokenParam.ACE_PROFILE: None}))
    assert request.ace_profile is ACE_PROFILE_REQUESTED
    assert request.profile_requested
    assert cbor.loads(request.to_cbor()) == {TokenParam.ACE_PROFILE: None}
    assert TokenRequest.from_json({"ace_profile": ""}) == request
    assert not TokenRequest().profile_requested
    assert TokenRequest().ace_profile is None
    assert TokenRequest(ace_profile=AceProfile.COAP_DTLS).to_json() == {"ace_profile": "coap_dtls"}


def test_null_ace_profile_is_only_valid_in_a_request() -> None:
    with pytest.raises(WireFormatError):
        AccessInformation.from_cbor_map({TokenParam.ACCESS_TOKEN: b"", TokenParam.ACE_PROFILE: None})
    with pytest.raises(WireFormatError):
        AccessInformation.from_json({"access_token": "", "ace_profile": ""})


# --- size limit -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_MESSAGES)
def test_size_limit_is_checked_before_parsing(cls: Any) -> None:
    garbage = b"\xff" * 100  # not CBOR/JSON: a parse would fail with a plain WireFormatError
    with pytest.raises(PayloadTooLarge):
        cls.from_cbor(garbage, max_size=99)
    with pytest.raises(PayloadTooLarge):
        cls.from_json_bytes(garbage, max_size=99)
    assert issubclass(PayloadTooLarge, WireFormatError)


def test_default_size_limit() -> None:
    big = AccessInformation(access_token=b"\x00" * cbor.DEFAULT_MAX_SIZE)
    with pytest.raises(PayloadTooLarge):
        AccessInformation.from_cbor(big.to_cbor())
    assert AccessInformation.from_cbor(big.to_cbor(), max_size=2 * cbor.DEFAULT_MAX_SIZE) == big


# --- strict types -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "m"),
    [
        (AccessInformation, {TokenParam.ACCESS_TOKEN: b"", TokenParam.EXPIRES_IN: True}),
        (AccessInformation, {TokenParam.ACCESS_TOKEN: b"", TokenParam.TOKEN_TYPE: False}),
        (AccessInformation, {TokenParam.ACCESS_TOKEN: b"", TokenParam.ACE_PROFILE: True}),
        (TokenRequest, {TokenParam.GRANT_TYPE: True}),
        (ErrorResponse, {TokenParam.ERROR: True}),
        (IntrospectionResponse, {IntrospectionParam.ACTIVE: True, IntrospectionParam.EXI: True}),
        (IntrospectionResponse, {IntrospectionParam.ACTIVE: True, IntrospectionParam.EXP: False}),
        (IntrospectionRequest, {IntrospectionParam.TOKEN: b"", IntrospectionParam.TOKEN_TYPE_HINT: True}),
        (TokenRequest, {True: b"bool key aliases 1"}),
        (IntrospectionResponse, {IntrospectionParam.ACTIVE: 1}),  # an int is not a bool either
    ],
)
def test_bools_and_ints_are_not_interchangeable(cls: Any, m: dict[Any, Any]) -> None:
    with pytest.raises(WireFormatError):
        cls.from_cbor(cbor.dumps(m))


def test_bools_rejected_as_ints_in_json() -> None:
    with pytest.raises(WireFormatError):
        AccessInformation.from_json({"access_token": "", "expires_in": True})
    with pytest.raises(WireFormatError):
        TokenRequest.from_json({"grant_type": False})


@pytest.mark.parametrize("cls", ALL_MESSAGES)
@pytest.mark.parametrize("top", [[], [1, 2], 1, b"map", "map", None, True, 1.5, cbor.CBORTag(61, {})])
def test_top_level_must_be_a_map(cls: Any, top: Any) -> None:
    with pytest.raises(WireFormatError):
        cls.from_cbor(cbor.dumps(top))
    if not isinstance(top, cbor.CBORTag | bytes):
        with pytest.raises(WireFormatError):
            cls.from_json_bytes(dump_json(top))
    with pytest.raises(WireFormatError):
        cls.from_cbor_map(top)
    with pytest.raises(WireFormatError):
        cls.from_json(top)


@pytest.mark.parametrize(
    ("cls", "m"),
    [
        (AccessInformation, {}),
        (AccessInformation, {TokenParam.EXPIRES_IN: 5}),
        (ErrorResponse, {TokenParam.ERROR_DESCRIPTION: "x"}),
        (IntrospectionRequest, {IntrospectionParam.TOKEN_TYPE_HINT: "access_token"}),
        (IntrospectionResponse, {IntrospectionParam.ISS: "as"}),
        (AuthzInfoRequest, {TokenParam.NONCE1: b"n"}),
        (AuthzInfoResponse, {TokenParam.NONCE2: b"n"}),
    ],
)
def test_missing_required_parameter(cls: Any, m: dict[Any, Any]) -> None:
    with pytest.raises(WireFormatError, match="missing"):
        cls.from_cbor_map(m)


BASE_INFO = {TokenParam.ACCESS_TOKEN: b"t"}


@pytest.mark.parametrize(
    "m",
    [
        {TokenParam.ACCESS_TOKEN: "text token"},
        BASE_INFO | {TokenParam.EXPIRES_IN: -1},
        BASE_INFO | {TokenParam.EXPIRES_IN: 1.0},
        BASE_INFO | {TokenParam.EXPIRES_IN: None},
        BASE_INFO | {TokenParam.SCOPE: 5},
        BASE_INFO | {TokenParam.SCOPE: ["a"]},
        BASE_INFO | {TokenParam.CNF: [1]},
        BASE_INFO | {TokenParam.CNF: {1.5: 1}},
        BASE_INFO | {TokenParam.CNF: {ConfirmationMethod.KID: {(1, 2): 1}}},
        BASE_INFO | {TokenParam.RS_CNF: b"\x01"},
        BASE_INFO | {TokenParam.STATE: b"state"},
        BASE_INFO | {TokenParam.TOKEN_TYPE: "PoP"},
        BASE_INFO | {TokenParam.REFRESH_TOKEN: "r"},
        {1.0: b"a float key that would alias access_token"},
        BASE_INFO | {b"k": 1},
        BASE_INFO | {99: {1.5: 1}},
    ],
)
def test_access_information_type_errors(m: dict[Any, Any]) -> None:
    with pytest.raises(WireFormatError):
        AccessInformation.from_cbor(cbor.dumps(m))


@pytest.mark.parametrize(
    "m",
    [
        BASE_INFO | {99: cbor.CBORTag(1, 1444064944)},  # cbor2 turns tag 1 into a datetime
        BASE_INFO | {99: [cbor.CBORTag(258, [1, 2])]},  # ... and tag 258 into a set
        BASE_INFO | {99: cbor.CBORTag(28, [cbor.CBORTag(29, 0)])},  # a list that contains itself
        BASE_INFO | {TokenParam.CNF: {ConfirmationMethod.KID: cbor.CBORTag(4, [-1, 5])}},  # Decimal
    ],
)
def test_non_data_model_items_are_rejected(m: dict[Any, Any]) -> None:
    """cbor2 builds Python objects (and cycles) from some semantic tags; ACE never uses them."""
    with pytest.raises(WireFormatError):
        AccessInformation.from_cbor(cbor.dumps(m))


@pytest.mark.parametrize(
    "item",
    [
        cbor.CBORTag(4, [None, ""]),  # decimal fraction with bad content: decimal.InvalidOperation in cbor2
        cbor.CBORTag(5, [10**7, 3]),  # bigfloat with a huge exponent: decimal.Overflow in cbor2
    ],
)
def test_cbor2_arithmetic_errors_become_wire_format_errors(item: Any) -> None:
    with pytest.raises(WireFormatError):
        AccessInformation.from_cbor(cbor.dumps(BASE_INFO | {99: item}))


def test_unknown_tags_in_extra_round_trip() -> None:
    data = cbor.dumps({TokenParam.ACCESS_TOKEN: b"t", 99: cbor.CBORTag(4711, [1, b"x"])})
    info = AccessInformation.from_cbor(data)
    assert info.extra[99] == cbor.CBORTag(4711, [1, b"x"])
    assert info.to_cbor() == data


def test_numeric_dates_accept_int_and_finite_float() -> None:
    response = IntrospectionResponse.from_cbor_map(
        {IntrospectionParam.ACTIVE: True, IntrospectionParam.EXP: 1444064944, IntrospectionParam.IAT: 1443944944.5}
    )
    assert response.exp == 1444064944 and response.iat == 1443944944.5
    for bad in (float("nan"), float("inf"), "1444064944", None):
        with pytest.raises(WireFormatError):
            IntrospectionResponse.from_cbor(cbor.dumps({IntrospectionParam.ACTIVE: True, IntrospectionParam.EXP: bad}))


def test_introspection_response_json() -> None:
    response = IntrospectionResponse(
        active=True,
        scope="r",
        cti=b"\x0b\x71",
        exi=60,
        token_type=TokenType.POP,
        ace_profile=AceProfile.COAP_OSCORE,
        cnf={ConfirmationMethod.KID: b"\x01"},
        iat=1.5,
    )
    assert response.to_json() == {
        "iat": 1.5,
        "cti": "C3E",
        "cnf": {"kid": "AQ"},
        "scope": "r",
        "active": True,
        "token_type": "PoP",
        "ace_profile": "coap_oscore",
        "exi": 60,
    }
    assert IntrospectionResponse.from_json(response.to_json()) == response
    inactive = IntrospectionResponse(active=False)
    assert cbor.loads(inactive.to_cbor()) == {IntrospectionParam.ACTIVE: False}


def test_creation_hints_json_names() -> None:
    hints = CreationHints(as_uri="coaps://as", kid=b"\x01", audience="rs", scope="s", cnonce=b"\x02")
    assert hints.to_json() == {"AS": "coaps://as", "kid": "AQ", "audience": "rs", "scope": "s", "cnonce": "Ag"}
    assert list(cbor.loads(hints.to_cbor())) == [
        CreationHint.AS,
        CreationHint.KID,
        CreationHint.AUDIENCE,
        CreationHint.SCOPE,
        CreationHint.CNONCE,
    ]


def test_authz_info_json_names() -> None:
    request = AuthzInfoRequest(access_token=b"\x01", nonce1=b"\x02", ace_client_recipientid=b"\x03")
    assert request.to_json() == {"access_token": "AQ", "nonce1": "Ag", "ace_client_recipientid": "Aw"}
    response = AuthzInfoResponse(nonce2=b"\x04", ace_server_recipientid=b"")
    assert response.to_json() == {"nonce2": "BA", "ace_server_recipientid": ""}
    assert AuthzInfoResponse.from_json(response.to_json()) == response


# --- errors -----------------------------------------------------------------------------------------------


def test_oauth_error_to_message_round_trip() -> None:
    message = InvalidClient("client authentication failed", uri="https://as/errors").to_message()
    assert message == ErrorResponse(
        error=ErrorCode.INVALID_CLIENT,
        error_description="client authentication failed",
        error_uri="https://as/errors",
    )
    assert ErrorResponse.from_cbor(message.to_cbor()) == message
    exc = message.to_exception()
    assert isinstance(exc, InvalidClient) and exc.uri == "https://as/errors"


def test_to_exception_keeps_a_nonconforming_description_out_of_the_wire_text() -> None:
    exc = ErrorResponse(error=ErrorCode.INVALID_REQUEST, error_description='has "quotes"').to_exception()
    assert isinstance(exc, InvalidRequest)
    assert exc.description is None
    assert exc.detail is not None and "quotes" in exc.detail
    assert isinstance(exc, OAuthError)


def test_error_response_json() -> None:
    error = ErrorResponse.from_json({"error": "invalid_scope", "error_description": "bad"})
    assert error.error is ErrorCode.INVALID_SCOPE
    with pytest.raises(WireFormatError):
        ErrorResponse.from_json({"error": "invalid_token"})  # RFC 6750 code without a CBOR abbreviation
