"""Property tests for ace_core.messages: lossless round-trips and "only WireFormatError" on any input.

For every message type: ``from_cbor(m.to_cbor()) == m`` and ``from_json(m.to_json()) == m`` (and through JSON
text). CBOR carries any ``cnf``-like map; JSON only valid confirmation maps (RFC 8747 §3.1: one PoP key), which
take the RFC 7800 §3.1 form (RFC 9201 §3.1). Arbitrary bytes, arbitrary CBOR and arbitrary JSON-like values
either decode or raise :class:`~ace_core.errors.WireFormatError`, never anything else (STYLE §3.4).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ace_core.errors import WireFormatError
from ace_core.keys import CoseKey
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
)
from ace_core.pop import encrypt_cose_key
from ace_core.registry import (
    AceProfile,
    ConfirmationMethod,
    CoseAlgorithm,
    CoseKeyParam,
    CreationHint,
    ErrorCode,
    GrantType,
    IntrospectionParam,
    OscoreInputMaterial,
    TokenParam,
    TokenType,
)

# Modest budgets keep the file at a few seconds: round trips run per message type, and each fuzz example is
# decoded by every message type (generation dominates the cost, decoding is cheap).
SETTINGS = settings(max_examples=100, deadline=None)
FUZZ_SETTINGS = settings(max_examples=300, deadline=None)

MESSAGES: list[Any] = [
    TokenRequest,
    AccessInformation,
    ErrorResponse,
    CreationHints,
    IntrospectionRequest,
    IntrospectionResponse,
    AuthzInfoRequest,
    AuthzInfoResponse,
]

# ---------------------------------------------------------------------------------------------- value strategies

text = st.text(max_size=20)
data = st.binary(max_size=24)
uint = st.integers(min_value=0, max_value=2**64 - 1)
numeric_date = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)


def opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def registry(enum: Any, *, unsigned: bool = False) -> st.SearchStrategy[Any]:
    low = 0 if unsigned else -1000
    return st.sampled_from(list(enum)) | st.integers(min_value=low, max_value=1000)


def scope(json: bool) -> st.SearchStrategy[Any]:
    return text if json else text | data  # binary scopes have no JSON form


# Arbitrary cnf-like maps (CBOR only: most have no JSON form): integer or text labels, CBOR data-model values.
labels: st.SearchStrategy[Any] = st.integers(min_value=-30, max_value=30) | st.sampled_from(["x5t", "kccs", "07", "-0"])
cose_leaves: st.SearchStrategy[Any] = (
    st.none() | st.booleans() | st.integers(min_value=-(2**64), max_value=2**64) | data
)
cose_values = st.recursive(
    cose_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(labels, inner, max_size=3),
    max_leaves=8,
)
cose_map = st.dictionaries(labels, cose_values, max_size=3)

# Valid confirmation maps (RFC 8747 §3.1, RFC 9203 §3.2.1): exactly one PoP key, so each has a JSON form.
# Keys are generated once here (generating them per example would dominate the run time); the strategy varies
# which key, public or private part, and its kid.
_KEYS = [
    CoseKey.generate(alg)
    for alg in (
        CoseAlgorithm.A128GCM,
        CoseAlgorithm.HMAC_256_256,
        CoseAlgorithm.AES_CCM_16_64_128,
        CoseAlgorithm.EDDSA,
        CoseAlgorithm.ES256,
        CoseAlgorithm.ES384,
    )
]
_POP_KEYS = _KEYS + [key.public() for key in _KEYS if not key.is_symmetric]
# Encrypted_COSE_Key (RFC 8747 §3.3): COSE_Encrypt0 arrays under an A128GCM and an AES-CCM key.
_ENCRYPTED_KEYS = [
    encrypt_cose_key(key, kek).encrypted_cose_key
    for key in (_KEYS[1], _KEYS[3].public())
    for kek in (_KEYS[0], _KEYS[2])
]


def _with_kid(key_map: dict[int, Any], kid: bytes | None) -> dict[int, Any]:
    """``key_map`` with its COSE_Key ``kid`` replaced by ``kid`` (dropped for ``None``)."""
    without = {label: value for label, value in key_map.items() if label != CoseKeyParam.KID}
    return without if kid is None else without | {CoseKeyParam.KID: kid}


cose_key_cnf = st.builds(
    lambda key, kid: {ConfirmationMethod.COSE_KEY: _with_kid(key.to_cbor_map(), kid)},
    st.sampled_from(_POP_KEYS),
    opt(data),
)
osc_material = st.fixed_dictionaries(
    {OscoreInputMaterial.ID: data, OscoreInputMaterial.MS: st.binary(min_size=16, max_size=32)},
    optional={
        OscoreInputMaterial.VERSION: st.integers(min_value=0, max_value=2**64 - 1),
        OscoreInputMaterial.HKDF: st.integers(min_value=-65536, max_value=65535) | text,
        OscoreInputMaterial.ALG: st.integers(min_value=-65536, max_value=65535) | text,
        OscoreInputMaterial.SALT: data,
        OscoreInputMaterial.CONTEXT_ID: data,
    },
)
confirmation = st.one_of(
    data.map(lambda kid: {ConfirmationMethod.KID: kid}),
    osc_material.map(lambda osc: {ConfirmationMethod.OSC: osc}),
    cose_key_cnf,
    st.sampled_from(_ENCRYPTED_KEYS).map(lambda enc: {ConfirmationMethod.ENCRYPTED_COSE_KEY: enc}),
)


def cnf_map(json: bool) -> st.SearchStrategy[Any]:
    return confirmation if json else cose_map | confirmation


def extra(cls: Any, json: bool) -> st.SearchStrategy[dict[Any, Any]]:
    """Unknown parameters: never a known key (CBOR) or name (JSON) of ``cls``."""
    known_keys = {int(p.key) for p in cls._PARAMS}
    known_names = {p.name for p in cls._PARAMS}
    names = st.text(min_size=1, max_size=8).filter(lambda k: k not in known_names)
    if json:
        json_leaves: st.SearchStrategy[Any] = (
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
        )
        values = st.recursive(
            json_leaves | text,
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
            max_leaves=6,
        )
        return st.dictionaries(names, values, max_size=3)
    keys = st.integers(min_value=-100, max_value=300).filter(lambda k: k not in known_keys) | names
    cbor_leaves = cose_leaves | text | st.floats(allow_nan=False)
    values = st.recursive(
        cbor_leaves,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(labels, inner, max_size=3),
        max_leaves=6,
    )
    return st.dictionaries(keys, values, max_size=3)


def field_strategies(cls: Any, json: bool) -> dict[str, st.SearchStrategy[Any]]:
    """One strategy per dataclass field of ``cls`` except ``extra``; ``json=True``: values with a JSON form."""
    secret = text.map(str.encode) if json else data
    common: dict[type, dict[str, st.SearchStrategy[Any]]] = {
        TokenRequest: {
            "grant_type": opt(registry(GrantType, unsigned=True)),
            "client_id": opt(text),
            "client_secret": opt(secret),
            "audience": opt(text),
            "scope": opt(scope(json)),
            "req_cnf": opt(cnf_map(json)),
            "ace_profile": opt(registry(AceProfile) | st.just(ACE_PROFILE_REQUESTED)),
            "cnonce": opt(data),
            "code": opt(data),
            "redirect_uri": opt(text),
            "username": opt(text),
            "password": opt(text),
            "refresh_token": opt(data),
            "state": opt(text),
        },
        AccessInformation: {
            "access_token": data,
            "token_type": opt(registry(TokenType)),
            "expires_in": opt(uint),
            "refresh_token": opt(data),
            "scope": opt(scope(json)),
            "state": opt(text),
            "ace_profile": opt(registry(AceProfile)),
            "cnf": opt(cnf_map(json)),
            "rs_cnf": opt(cnf_map(json)),
        },
        ErrorResponse: {
            "error": registry(ErrorCode),
            "error_description": opt(text),
            "error_uri": opt(text),
        },
        CreationHints: {
            "as_uri": opt(text),
            "kid": opt(data),
            "audience": opt(text),
            "scope": opt(scope(json)),
            "cnonce": opt(data),
        },
        IntrospectionRequest: {
            "token": data,
            "token_type_hint": opt(registry(TokenType) | text),
            "client_id": opt(text),
        },
        IntrospectionResponse: {
            "active": st.booleans(),
            "iss": opt(text),
            "sub": opt(text),
            "aud": opt(text),
            "exp": opt(numeric_date),
            "nbf": opt(numeric_date),
            "iat": opt(numeric_date),
            "cti": opt(data),
            "cnf": opt(cnf_map(json)),
            "scope": opt(scope(json)),
            "client_id": opt(text),
            "token_type": opt(registry(TokenType)),
            "username": opt(text),
            "ace_profile": opt(registry(AceProfile)),
            "cnonce": opt(data),
            "exi": opt(uint),
            "error": opt(registry(ErrorCode)),
            "error_description": opt(text),
            "error_uri": opt(text),
        },
        AuthzInfoRequest: {
            "access_token": data,
            "nonce1": opt(data),
            "ace_client_recipientid": opt(data),
        },
        AuthzInfoResponse: {"nonce2": data, "ace_server_recipientid": data},
    }
    return common[cls]


def messages(cls: Any, json: bool) -> st.SearchStrategy[Any]:
    """A generated ``cls`` instance with unknown parameters in ``extra``."""
    return st.builds(cls, **field_strategies(cls, json), extra=extra(cls, json))


@pytest.mark.parametrize("cls", MESSAGES, ids=lambda c: c.__name__)
def test_strategies_cover_every_field(cls: Any) -> None:
    fields = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    assert set(field_strategies(cls, json=False)) == fields
    assert set(field_strategies(cls, json=True)) == fields


# ---------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("cls", MESSAGES, ids=lambda c: c.__name__)
def test_cbor_round_trip(cls: Any) -> None:
    @SETTINGS
    @given(messages(cls, json=False))
    def check(message: Any) -> None:
        encoded = message.to_cbor()
        decoded = cls.from_cbor(encoded, max_size=len(encoded))
        assert decoded == message
        assert decoded.to_cbor() == encoded  # equal messages encode identically

    check()


@pytest.mark.parametrize("cls", MESSAGES, ids=lambda c: c.__name__)
def test_json_round_trip(cls: Any) -> None:
    @SETTINGS
    @given(messages(cls, json=True))
    def check(message: Any) -> None:
        assert cls.from_json(message.to_json()) == message
        text = message.to_json_bytes()
        assert cls.from_json_bytes(text, max_size=len(text)) == message

    check()


@SETTINGS
@given(confirmation, confirmation)
def test_cnf_json_holds_exactly_one_rfc7800_member(cnf: dict[Any, Any], other: dict[Any, Any]) -> None:
    """RFC 7800 §3.1 names only, one PoP key; a map with two PoP keys (RFC 8747 §3.1) has no JSON form."""
    obj = AccessInformation(access_token=b"", rs_cnf=cnf).to_json()["rs_cnf"]
    assert len(obj) == 1 and set(obj) <= {"jwk", "kid", "osc", "Encrypted_COSE_Key"}
    if set(other) != set(cnf):
        with pytest.raises(ValueError, match="no JSON form"):
            AccessInformation(access_token=b"", rs_cnf=cnf | other).to_json()


@SETTINGS
@given(st.builds(TokenRequest, **field_strategies(TokenRequest, json=True)))
def test_form_round_trip(message: TokenRequest) -> None:
    try:
        form = message.to_form()
    except ValueError:
        return  # empty text or an unnamed registry number: not representable in a form, by design
    assert TokenRequest.from_form(form) == message


# ---------------------------------------------------------------------------------------------- fuzzing


def only_wire_format_errors(decode: Callable[[Any], Any]) -> None:
    """``decode(cls)`` either succeeds or raises WireFormatError for every message type (nothing else escapes)."""
    for cls in MESSAGES:
        try:
            decode(cls)
        except WireFormatError:
            pass


@FUZZ_SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_wire_format_error(payload: bytes) -> None:
    only_wire_format_errors(lambda cls: cls.from_cbor(payload))
    only_wire_format_errors(lambda cls: cls.from_json_bytes(payload))


# Every key any message knows, so that random maps hit the typed decoders, not only the "extra" path.
ALL_KEYS = sorted({int(k) for enum in (TokenParam, IntrospectionParam, CreationHint) for k in enum})
cbor_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**65), max_value=2**65)
    | st.floats()
    | st.binary(max_size=12)
    | st.text(max_size=8)
)
cbor_items = st.recursive(
    cbor_leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.integers(-5, 50) | st.text(max_size=3), inner, max_size=4)
        | st.builds(cbor2.CBORTag, st.sampled_from([1, 2, 4, 5, 24, 28, 29, 61, 258, 4711]), inner)
    ),
    max_leaves=10,
)
cbor_maps = st.dictionaries(
    st.sampled_from(ALL_KEYS) | st.integers(-30, 60) | st.text(max_size=12) | st.booleans() | st.floats(),
    cbor_items,
    max_size=6,
)


@FUZZ_SETTINGS
@given(cbor_maps | cbor_items)
def test_random_cbor_raises_only_wire_format_error(item: Any) -> None:
    try:
        payload = cbor2.dumps(item)
    except (cbor2.CBOREncodeError, ValueError, TypeError):
        return  # cbor2 refuses some generated tag contents; nothing to decode
    only_wire_format_errors(lambda cls: cls.from_cbor(payload, max_size=1 << 20))


ALL_NAMES = sorted({p.name for cls in MESSAGES for p in cls._PARAMS})
json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["", "AQ", "AQ==", "client_credentials", "PoP", "coap_dtls", "invalid_request", "1"])
)
json_items = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=10,
)
json_objects = st.dictionaries(st.sampled_from(ALL_NAMES) | st.text(max_size=8), json_items, max_size=6)


@FUZZ_SETTINGS
@given(json_objects | json_items)
def test_random_json_raises_only_wire_format_error(obj: Any) -> None:
    only_wire_format_errors(lambda cls: cls.from_json(obj))


@FUZZ_SETTINGS
@given(st.dictionaries(st.sampled_from(ALL_NAMES) | st.text(max_size=8), st.text(max_size=30), max_size=6))
def test_random_forms_raise_only_wire_format_error(fields: dict[str, str]) -> None:
    for cls in (TokenRequest, IntrospectionRequest):
        try:
            cls.from_form(fields)
        except WireFormatError:
            pass
