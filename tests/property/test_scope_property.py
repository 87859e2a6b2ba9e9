"""Property tests for ace_core.scope: wire round-trips, lattice laws, and "only WireFormatError" on bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypeVar

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from ace_core.errors import WireFormatError
from ace_core.registry import AifMethod
from ace_core.scope import AifScope, TextScope, decode_scope

SETTINGS = settings(max_examples=200, deadline=None)
S = TypeVar("S", TextScope, AifScope)

# ---------------------------------------------------------------------------------------------- strategies

# A small pool makes scopes overlap, so that union/intersection are exercised on shared paths and tokens.
PATH_POOL = ["/", "/a", "/b", "/s/temp", "/a/led", "/dtls"]
paths = st.one_of(
    st.sampled_from(PATH_POOL),
    st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=12).map(lambda s: "/" + s),
)
single_methods = st.sampled_from(list(AifMethod))
known_masks = st.lists(single_methods, max_size=4).map(lambda ms: sum(set(ms), AifMethod(0)))
masks = st.one_of(known_masks, st.integers(min_value=0, max_value=2**64 - 1))
aif_scopes = st.lists(st.tuples(paths, masks), max_size=6).map(AifScope)

TOKEN_CHARS = "".join(chr(c) for c in [0x21, *range(0x23, 0x5C), *range(0x5D, 0x7F)])
TOKEN_POOL = ["read", "write", "rTempC", "admin", "urn:x:1"]
tokens = st.one_of(st.sampled_from(TOKEN_POOL), st.text(TOKEN_CHARS, min_size=1, max_size=8))
text_scopes = st.lists(tokens, max_size=6).map(TextScope)

cbor_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.sampled_from(PATH_POOL),
    st.binary(max_size=8),
)
cbor_values = st.recursive(
    cbor_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=4), st.integers()), inner, max_size=3),
    ),
    max_leaves=20,
)
# Values shaped like AIF more often than random values would be.
aif_like = st.lists(st.one_of(st.lists(st.one_of(paths, masks, cbor_leaves), max_size=3), cbor_values), max_size=4)

# ---------------------------------------------------------------------------------------------- round-trips


@SETTINGS
@given(aif_scopes)
def test_aif_cbor_round_trip(scope: AifScope) -> None:
    data = scope.to_cbor()
    decoded = AifScope.from_cbor(data, max_size=len(data))
    assert decoded == scope and hash(decoded) == hash(scope)
    assert decoded.to_cbor() == data  # order of first appearance survives
    assert decode_scope(scope.encode_cbor_value(), max_size=len(data)) == scope


@SETTINGS
@given(aif_scopes)
def test_aif_json_round_trip(scope: AifScope) -> None:
    assert AifScope.from_json(scope.to_json()) == scope
    assert AifScope.from_json(json.loads(json.dumps(scope.to_json()))) == scope
    text = scope.to_json_text()
    assert AifScope.from_json_text(text, max_size=len(text.encode())) == scope
    assert AifScope.from_json_text(text).to_json_text() == text
    assert decode_scope(scope.encode_json_value(), aif=True, max_size=len(text.encode())) == scope


@SETTINGS
@given(aif_scopes)
def test_aif_spec_round_trip(scope: AifScope) -> None:
    if any(c.isspace() for path in scope for c in path):
        return  # the CLI form cannot express whitespace in paths (to_spec raises)
    assert AifScope.parse_spec(scope.to_spec()) == scope
    assert AifScope.parse_spec(scope.to_spec()).to_spec() == scope.to_spec()


@SETTINGS
@given(text_scopes)
def test_text_round_trip(scope: TextScope) -> None:
    if scope.is_empty:
        return  # RFC 6749 §3.3: no encoding for an empty scope
    text = scope.encode()
    assert TextScope.parse(text) == scope
    assert TextScope.parse(text).encode() == text
    assert decode_scope(scope.encode_cbor_value()) == scope


# ---------------------------------------------------------------------------------------------- lattice laws


def check_lattice_laws(a: S, b: S, c: S) -> None:
    assert a | b == b | a and a & b == b & a  # commutative
    assert (a | b) | c == a | (b | c) and (a & b) & c == a & (b & c)  # associative
    assert a | a == a and a & a == a  # idempotent
    assert a | (a & b) == a and a & (a | b) == a  # absorption
    assert (a & b).issubset(a) and (a & b).issubset(b)
    assert a.issubset(a | b) and b.issubset(a | b)
    assert a.issubset(b) == (a | b == b) == (a & b == a)
    assert (a == b) == (a.issubset(b) and b.issubset(a))
    if a == b:
        assert hash(a) == hash(b)
    assert (a & b).is_empty or not a.is_empty


@SETTINGS
@given(aif_scopes, aif_scopes, aif_scopes)
def test_aif_lattice_laws(a: AifScope, b: AifScope, c: AifScope) -> None:
    check_lattice_laws(a, b, c)


@SETTINGS
@given(text_scopes, text_scopes, text_scopes)
def test_text_lattice_laws(a: TextScope, b: TextScope, c: TextScope) -> None:
    check_lattice_laws(a, b, c)


@SETTINGS
@given(aif_scopes, aif_scopes, single_methods, st.sampled_from(PATH_POOL))
def test_aif_permits_distributes(a: AifScope, b: AifScope, method: AifMethod, path: str) -> None:
    assert (a | b).permits(method, path) == (a.permits(method, path) or b.permits(method, path))
    assert (a & b).permits(method, path) == (a.permits(method, path) and b.permits(method, path))
    if a.permits(method, path):
        assert a.covers_path(path)
    if a.issubset(b) and a.permits(method, path):
        assert b.permits(method, path)


@SETTINGS
@given(text_scopes, text_scopes, tokens)
def test_text_membership_distributes(a: TextScope, b: TextScope, token: str) -> None:
    assert (token in a | b) == (token in a or token in b)
    assert (token in a & b) == (token in a and token in b)


@SETTINGS
@given(aif_scopes)
def test_known_only_never_changes_permissions(scope: AifScope) -> None:
    known = scope.known_only()
    assert known.issubset(scope)
    for path in scope:
        for method in AifMethod:
            assert known.permits(method, path) == scope.permits(method, path)


# ---------------------------------------------------------------------------------------------- hostile input


def assert_only_wire_format_error(call: Callable[..., object], *args: object, **kwargs: object) -> None:
    """Run ``call``: success or WireFormatError are fine, any other exception fails the test."""
    try:
        call(*args, **kwargs)
    except WireFormatError:
        pass


@SETTINGS
@given(st.binary(max_size=64))
def test_random_bytes(data: bytes) -> None:
    assert_only_wire_format_error(AifScope.from_cbor, data)
    assert_only_wire_format_error(decode_scope, data)
    assert_only_wire_format_error(decode_scope, data, aif=False)


@SETTINGS
@given(st.one_of(cbor_values, aif_like))
def test_random_cbor_items(value: object) -> None:
    data = cbor2.dumps(value)
    assert_only_wire_format_error(AifScope.from_cbor, data)
    assert_only_wire_format_error(decode_scope, data)
    assert_only_wire_format_error(AifScope.from_json, value)


@SETTINGS
@given(st.one_of(st.text(max_size=40), cbor_values.map(lambda v: json.dumps(v, default=repr)), aif_like.map(repr)))
def test_random_text(text: str) -> None:
    assert_only_wire_format_error(TextScope.parse, text)
    assert_only_wire_format_error(decode_scope, text)
    assert_only_wire_format_error(decode_scope, text, aif=True)
    assert_only_wire_format_error(AifScope.from_json_text, text)
