"""Unit tests for ace_core.scope: RFC 6749 §3.3 text scopes and RFC 9237 AIF-REST scopes."""

from __future__ import annotations

import cbor2
import pytest

from ace_core.errors import PayloadTooLarge, WireFormatError
from ace_core.registry import AifMethod
from ace_core.scope import AifScope, Scope, TextScope, aif_method, decode_scope, method_name

GET, POST, PUT, DELETE = AifMethod.GET, AifMethod.POST, AifMethod.PUT, AifMethod.DELETE
FETCH, PATCH, IPATCH = AifMethod.FETCH, AifMethod.PATCH, AifMethod.IPATCH
UNKNOWN_BIT = 1 << 7  # between iPATCH (bit 6) and Dynamic-GET (bit 32): not defined by RFC 9237 §3


def cbor(value: object) -> bytes:
    """Build CBOR *input* for a test (the expected side is always a scope object, never our own hex)."""
    return cbor2.dumps(value)


# --------------------------------------------------------------------------------------------- TextScope


class TestTextScope:
    def test_parse_encode_keeps_first_seen_order(self) -> None:
        scope = TextScope.parse("write read rTempC")
        assert scope.tokens == ("write", "read", "rTempC")
        assert scope.encode() == "write read rTempC"
        assert scope.encode_cbor_value() == scope.encode_json_value() == "write read rTempC"

    def test_duplicates_are_merged_at_first_position(self) -> None:
        scope = TextScope.parse("b a b")
        assert scope.tokens == ("b", "a")
        assert len(scope) == 2

    def test_equality_and_hash_ignore_order(self) -> None:
        a, b = TextScope.parse("read write"), TextScope.parse("write read")
        assert a == b and hash(a) == hash(b)
        assert a != TextScope.parse("read")
        assert a != "read write"

    @pytest.mark.parametrize("token", ["!", "#", "[", "]", "~", "a:b/c", "urn:x-ace:read", "%41"])
    def test_rfc6749_token_characters(self, token: str) -> None:
        assert TextScope.parse(token).tokens == (token,)

    @pytest.mark.parametrize(
        "text",
        ["", " ", " a", "a ", "a  b", "a\tb", "a\nb", 'a"b', "a\\b", "a\x7fb", "\x00", "caf\u00e9", "a\u00a0b"],
    )
    def test_malformed_strings(self, text: str) -> None:
        with pytest.raises(WireFormatError):
            TextScope.parse(text)

    @pytest.mark.parametrize("value", [b"read", None, 7, ["read"]])
    def test_parse_non_str(self, value: object) -> None:
        with pytest.raises(WireFormatError):
            TextScope.parse(value)  # type: ignore[arg-type]

    def test_max_size(self) -> None:
        assert TextScope.parse("a" * 16, max_size=16).tokens == ("a" * 16,)
        with pytest.raises(PayloadTooLarge):
            TextScope.parse("a" * 17, max_size=16)

    def test_empty_scope_has_no_encoding(self) -> None:
        empty = TextScope()
        assert empty.is_empty and len(empty) == 0 and not empty
        with pytest.raises(ValueError):
            empty.encode()
        with pytest.raises(ValueError):
            empty.encode_cbor_value()

    def test_constructor_validation(self) -> None:
        assert TextScope(["a", "b", "a"]) == TextScope.parse("a b")
        with pytest.raises(TypeError):
            TextScope("read")
        with pytest.raises(TypeError):
            TextScope([b"read"])  # type: ignore[list-item]
        with pytest.raises(ValueError):
            TextScope(["two words"])
        with pytest.raises(ValueError):
            TextScope([""])

    def test_algebra(self) -> None:
        a, b = TextScope.parse("read write"), TextScope.parse("write admin")
        assert (a | b).tokens == ("read", "write", "admin")
        assert (a & b).tokens == ("write",)
        assert a.union(b) == a | b and a.intersection(b) == a & b
        assert (a & TextScope.parse("other")).is_empty
        assert TextScope.parse("write").issubset(a) and TextScope.parse("write") <= a and a >= a & b
        assert not a.issubset(b) and not a <= b
        assert "read" in a and "admin" not in a and 42 not in a
        assert list(a) == ["read", "write"]

    def test_no_mixing_with_aif(self) -> None:
        text, aif = TextScope.parse("read"), AifScope({"/a": GET})
        with pytest.raises(TypeError):
            text | aif  # type: ignore[operator]
        with pytest.raises(TypeError):
            text & aif  # type: ignore[operator]
        with pytest.raises(TypeError):
            text.union(aif)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            text.issubset(aif)  # type: ignore[arg-type]
        assert text != aif

    def test_immutable(self) -> None:
        scope = TextScope.parse("read")
        with pytest.raises(AttributeError):
            scope._tokens = ("x",)
        with pytest.raises(AttributeError):
            scope.extra = 1
        with pytest.raises(AttributeError):
            del scope._set

    def test_repr_round_trips(self) -> None:
        scope = TextScope.parse("read write")
        assert eval(repr(scope)) == scope  # noqa: S307 - test only


# --------------------------------------------------------------------------------------------- methods


class TestMethods:
    @pytest.mark.parametrize(
        ("code", "flag"),
        [(1, GET), (2, POST), (3, PUT), (4, DELETE), (5, FETCH), (6, PATCH), (7, IPATCH)],
    )
    def test_coap_method_codes(self, code: int, flag: AifMethod) -> None:
        # RFC 9237 §3: bit = CoAP method code - 1.
        assert aif_method(code) is flag

    def test_flag_is_not_a_method_code(self) -> None:
        # AifMethod.PUT has value 4, which as a CoAP code would be DELETE: flags are taken by type first.
        assert aif_method(AifMethod.PUT) is PUT
        assert aif_method(int(AifMethod.PUT)) is DELETE

    @pytest.mark.parametrize(
        ("name", "flag"),
        [
            ("GET", GET),
            ("get", GET),
            ("iPATCH", IPATCH),
            ("IPATCH", IPATCH),
            ("Dynamic-GET", AifMethod.DYNAMIC_GET),
            ("DYNAMIC_IPATCH", AifMethod.DYNAMIC_IPATCH),
            ("dynamic-delete", AifMethod.DYNAMIC_DELETE),
        ],
    )
    def test_names(self, name: str, flag: AifMethod) -> None:
        assert aif_method(name) is flag

    def test_method_name_spelling(self) -> None:
        assert [method_name(m) for m in (GET, IPATCH, AifMethod.DYNAMIC_PUT, AifMethod.DYNAMIC_IPATCH)] == [
            "GET",
            "iPATCH",
            "Dynamic-PUT",
            "Dynamic-iPATCH",
        ]
        with pytest.raises(ValueError):
            method_name(GET | PUT)
        with pytest.raises(ValueError):
            method_name(AifMethod(UNKNOWN_BIT))

    @pytest.mark.parametrize("bad", [0, 8, -1, 33, 2**70, "FOO", "", AifMethod(0), AifMethod(UNKNOWN_BIT)])
    def test_rejected_values(self, bad: object) -> None:
        with pytest.raises(ValueError):
            aif_method(bad)  # type: ignore[arg-type]

    @pytest.mark.parametrize("bad", [True, False, 1.0, None, b"GET"])
    def test_rejected_types(self, bad: object) -> None:
        with pytest.raises(TypeError):
            aif_method(bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- AifScope


class TestAifConstruction:
    def test_mapping_and_pairs(self) -> None:
        a = AifScope({"/lock": GET | PUT, "/battery": GET})
        b = AifScope([("/lock", 5), ("/battery", 1)])
        assert a == b and hash(a) == hash(b)
        assert a["/lock"] == GET | PUT and isinstance(a["/lock"], AifMethod)
        assert dict(a) == {"/lock": GET | PUT, "/battery": GET}
        assert a.get("/door") is None and len(a) == 2 and list(a) == ["/lock", "/battery"]

    def test_duplicate_paths_are_or_merged_at_first_position(self) -> None:
        scope = AifScope([("/a", GET), ("/b", POST), ("/a", PUT)])
        assert scope.paths() == ("/a", "/b")
        assert scope.methods_for("/a") == GET | PUT

    def test_zero_entries_are_dropped(self) -> None:
        scope = AifScope([("/a", 0), ("/b", GET)])
        assert scope.paths() == ("/b",) and not scope.covers_path("/a")
        assert AifScope([("/a", 0)]).is_empty

    def test_equality_ignores_order_but_encoding_keeps_it(self) -> None:
        a = AifScope([("/a", GET), ("/b", POST)])
        b = AifScope([("/b", POST), ("/a", GET)])
        assert a == b and hash(a) == hash(b)
        assert a.to_cbor() != b.to_cbor()
        assert a.to_json() == [["/a", 1], ["/b", 2]]

    def test_not_equal_to_plain_mapping(self) -> None:
        assert AifScope({"/a": GET}) != {"/a": GET}

    @pytest.mark.parametrize(
        "path", ["", "a", "lock", " /a", "/a\x00", "/a\nb", "/a\x7f", "/a\x85", "/\ud800", "/\udfff"]
    )
    def test_invalid_paths(self, path: str) -> None:
        with pytest.raises(ValueError):
            AifScope({path: GET})

    def test_valid_unusual_paths(self) -> None:
        scope = AifScope({"/": GET, "/caf\u00e9": GET, "/a b": GET, "/a:b,c": GET})
        assert len(scope) == 4

    @pytest.mark.parametrize("path", [None, b"/a", 1, ("/a",)])
    def test_non_str_paths(self, path: object) -> None:
        with pytest.raises(TypeError):
            AifScope([(path, GET)])  # type: ignore[list-item]

    @pytest.mark.parametrize("mask", [-1, 2**64, 2**200])
    def test_mask_range(self, mask: int) -> None:
        with pytest.raises(ValueError):
            AifScope({"/a": mask})

    @pytest.mark.parametrize("mask", [True, False, 1.0, "1", None])
    def test_mask_types(self, mask: object) -> None:
        with pytest.raises(TypeError):
            AifScope({"/a": mask})  # type: ignore[arg-type]

    def test_largest_mask(self) -> None:
        assert int(AifScope({"/a": 2**64 - 1})["/a"]) == 2**64 - 1

    def test_immutable(self) -> None:
        scope = AifScope({"/a": GET})
        with pytest.raises(AttributeError):
            scope._entries = {}
        with pytest.raises(TypeError):
            scope["/a"] = PUT  # type: ignore[index]
        with pytest.raises(AttributeError):
            del scope._entries

    def test_repr_round_trips(self) -> None:
        scope = AifScope({"/a": GET | PUT, "/b": UNKNOWN_BIT})
        assert eval(repr(scope)) == scope  # noqa: S307 - test only


class TestAifPermissions:
    LOCK = AifScope.from_methods({"/lock": ["GET", "PUT"], "/battery": ["GET"]})

    def test_permits(self) -> None:
        assert self.LOCK.permits(GET, "/lock")
        assert self.LOCK.permits("PUT", "/lock")
        assert self.LOCK.permits(1, "/battery")  # CoAP GET
        assert not self.LOCK.permits(PUT, "/battery")
        assert not self.LOCK.permits(DELETE, "/lock")
        assert not self.LOCK.permits(GET, "/door")
        assert not self.LOCK.permits(GET, "/lock/")  # exact match, no normalisation

    def test_combined_flag_needs_every_bit(self) -> None:
        assert self.LOCK.permits(GET | PUT, "/lock")
        assert not self.LOCK.permits(GET | DELETE, "/lock")

    def test_403_versus_405(self) -> None:
        # RFC 9200 §5.10.2: not covered -> 4.03; covered but method not granted -> 4.05.
        assert not self.LOCK.covers_path("/door")
        assert self.LOCK.covers_path("/battery") and not self.LOCK.permits(PUT, "/battery")

    def test_methods_for(self) -> None:
        assert self.LOCK.methods_for("/lock") == GET | PUT
        assert self.LOCK.methods_for("/door") == AifMethod(0)

    def test_dynamic_bits_are_separate_permissions(self) -> None:
        # RFC 9237 §2.3: Dynamic-X is about resources created via the listed one, not the listed one itself.
        scope = AifScope({"/items": POST | AifMethod.DYNAMIC_GET | AifMethod.DYNAMIC_DELETE})
        assert scope.permits(AifMethod.DYNAMIC_GET, "/items")
        assert scope.permits("Dynamic-DELETE", "/items")
        assert not scope.permits(GET, "/items") and not scope.permits(DELETE, "/items")
        assert not scope.permits(AifMethod.DYNAMIC_PUT, "/items")
        assert scope.covers_path("/items")
        decoded = AifScope.from_cbor(scope.to_cbor())
        assert decoded == scope and decoded.to_json() == [["/items", int(scope["/items"])]]

    def test_invalid_method_queries(self) -> None:
        with pytest.raises(ValueError):
            self.LOCK.permits(8, "/lock")
        with pytest.raises(ValueError):
            self.LOCK.permits("LOCK", "/lock")
        with pytest.raises(TypeError):
            self.LOCK.permits(True, "/lock")


class TestUnknownBits:
    """Bits RFC 9237 §3 does not define: kept so they round-trip, never acted upon (RFC 9237 §6)."""

    RAW = cbor([["/a", UNKNOWN_BIT | 1], ["/b", 1 << 63]])

    def test_kept_and_round_trip(self) -> None:
        scope = AifScope.from_cbor(self.RAW)
        assert scope.to_cbor() == self.RAW
        assert int(scope["/a"]) == UNKNOWN_BIT | 1 and int(scope["/b"]) == 1 << 63

    def test_never_act(self) -> None:
        scope = AifScope.from_cbor(self.RAW)
        assert scope.permits(GET, "/a")
        assert not scope.permits(GET, "/b")
        with pytest.raises(ValueError):
            scope.permits(AifMethod(UNKNOWN_BIT), "/a")
        with pytest.raises(ValueError):
            scope.permits(AifMethod(1 << 63), "/b")

    def test_known_only(self) -> None:
        scope = AifScope.from_cbor(self.RAW).known_only()
        assert scope == AifScope({"/a": GET})

    def test_algebra_keeps_high_bits(self) -> None:
        # Regression: ``~`` on an IntFlag only inverts up to bit 38, which once hid bit 63 from issubset().
        high = AifScope({"/a": 1 << 63})
        assert not high.issubset(AifScope({"/a": GET}))
        assert high.issubset(AifScope({"/a": (1 << 63) | 1}))
        assert int((high | AifScope({"/a": GET}))["/a"]) == (1 << 63) | 1
        assert high & AifScope({"/a": (1 << 63) | 1}) == high

    def test_spec_form(self) -> None:
        scope = AifScope.from_cbor(self.RAW)
        assert scope.to_spec() == "/a:GET,0x80 /b:0x8000000000000000"
        assert AifScope.parse_spec(scope.to_spec()) == scope


class TestAifAlgebra:
    A = AifScope({"/a": GET | PUT, "/b": GET})
    B = AifScope({"/b": GET | POST, "/c": DELETE, "/a": PUT})

    def test_union(self) -> None:
        union = self.A | self.B
        assert union == AifScope({"/a": GET | PUT, "/b": GET | POST, "/c": DELETE})
        assert union.paths() == ("/a", "/b", "/c")
        assert self.A.union(self.B) == union

    def test_intersection(self) -> None:
        inter = self.A & self.B
        assert inter == AifScope({"/a": PUT, "/b": GET})
        assert inter.paths() == ("/a", "/b")
        # Paths whose methods do not overlap disappear.
        assert (AifScope({"/a": GET}) & AifScope({"/a": PUT})).is_empty

    def test_issubset(self) -> None:
        assert AifScope({"/a": PUT}).issubset(self.A) and AifScope({"/a": PUT}) <= self.A
        assert not AifScope({"/a": POST}).issubset(self.A)
        assert not AifScope({"/z": GET}).issubset(self.A)
        assert AifScope().issubset(self.A) and self.A >= self.A & self.B

    def test_no_mixing_with_text(self) -> None:
        with pytest.raises(TypeError):
            self.A | TextScope.parse("read")  # type: ignore[operator]
        with pytest.raises(TypeError):
            self.A.intersection(TextScope.parse("read"))  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            self.A.issubset(TextScope.parse("read"))  # type: ignore[arg-type]


class TestAifFriendlyForms:
    def test_from_methods(self) -> None:
        scope = AifScope.from_methods({"/lock": ["GET", PUT, 4], "/battery": "GET"})
        assert scope == AifScope({"/lock": GET | PUT | DELETE, "/battery": GET})

    def test_from_methods_errors(self) -> None:
        with pytest.raises(ValueError):
            AifScope.from_methods({"/lock": []})
        with pytest.raises(ValueError):
            AifScope.from_methods({"/lock": ["OPEN"]})
        with pytest.raises(ValueError):
            AifScope.from_methods({"lock": ["GET"]})

    def test_spec_round_trip(self) -> None:
        scope = AifScope.parse_spec("/lock:GET,PUT /battery:GET")
        assert scope == AifScope({"/lock": GET | PUT, "/battery": GET})
        assert scope.to_spec() == "/lock:GET,PUT /battery:GET"
        assert AifScope.parse_spec("  /a:get,ipatch,Dynamic-GET \n /a:POST ").to_spec() == (
            "/a:GET,POST,iPATCH,Dynamic-GET"
        )
        assert AifScope.parse_spec("/a:b:GET").paths() == ("/a:b",)
        assert AifScope.parse_spec("") == AifScope()

    @pytest.mark.parametrize("spec", ["/a", "/a:", "a:GET", ":GET", "/a:GET,", "/a:OPEN", "/a:0x", "/a:0xZZ"])
    def test_spec_errors(self, spec: str) -> None:
        with pytest.raises(ValueError):
            AifScope.parse_spec(spec)

    def test_spec_cannot_express_whitespace(self) -> None:
        with pytest.raises(ValueError):
            AifScope({"/a b": GET}).to_spec()


class TestAifWire:
    def test_cbor_merges_duplicates(self) -> None:
        scope = AifScope.from_cbor(cbor([["/a", 1], ["/b", 2], ["/a", 4]]))
        assert scope == AifScope({"/a": GET | PUT, "/b": POST})
        assert scope.to_json() == [["/a", 5], ["/b", 2]]

    def test_empty_aif(self) -> None:
        assert AifScope.from_cbor(cbor([])).is_empty
        assert AifScope().to_json() == [] and AifScope.from_cbor(AifScope().to_cbor()) == AifScope()
        assert AifScope().to_json_text() == "[]"

    @pytest.mark.parametrize(
        "value",
        [
            {},
            "/a",
            1,
            None,
            [["/a"]],
            [["/a", 1, 2]],
            [["/a", -1]],
            [["/a", True]],
            [["/a", 1.0]],
            [["/a", None]],
            [[b"/a", 1]],
            [["a", 1]],
            [["", 1]],
            [["/a\x00", 1]],
            [{"/a": 1}],
            ["/a", 1],
            [["/a", 2**64]],
            [["/a", cbor2.CBORTag(9999, 1)]],
        ],
    )
    def test_malformed_cbor_and_json_models(self, value: object) -> None:
        with pytest.raises(WireFormatError):
            AifScope.from_cbor(cbor(value))
        with pytest.raises(WireFormatError):
            AifScope.from_json(value)

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            bytes.fromhex("83"),  # truncated array
            bytes.fromhex("8000"),  # trailing byte
            bytes.fromhex("818261"),  # truncated string
            bytes.fromhex("8182622fff01"),  # invalid UTF-8 in the path
            bytes.fromhex("d81c81d81d00"),  # shared reference: an array that contains itself
            bytes.fromhex("c1 00".replace(" ", "")),  # epoch datetime tag
        ],
    )
    def test_malformed_cbor_bytes(self, data: bytes) -> None:
        with pytest.raises(WireFormatError):
            AifScope.from_cbor(data)

    def test_cbor_non_bytes(self) -> None:
        with pytest.raises(WireFormatError):
            AifScope.from_cbor("8180")  # type: ignore[arg-type]

    def test_cbor_max_size(self) -> None:
        data = cbor([["/" + "a" * 100, 1]])
        assert AifScope.from_cbor(data, max_size=len(data)).paths() == ("/" + "a" * 100,)
        with pytest.raises(PayloadTooLarge):
            AifScope.from_cbor(data, max_size=len(data) - 1)

    def test_json_text(self) -> None:
        scope = AifScope({"/caf\u00e9": GET})
        assert scope.to_json_text() == '[["/caf\u00e9",1]]'
        assert AifScope.from_json_text(' [ ["/caf\\u00e9" , 1] ] ') == scope

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "[",
            "NaN",
            '[["/a", NaN]]',
            '[["/a", Infinity]]',
            '[["/a", 1e0]]',
            '[["/\\ud800", 1]]',  # lone surrogate: no UTF-8 encoding
            '[["/a", 1' + "0" * 5000 + "]]",  # beyond int max_str_digits
            "[" * 100_000 + "]" * 100_000,  # deep nesting
            '{"/a": 1}',
        ],
    )
    def test_malformed_json_text(self, text: str) -> None:
        with pytest.raises(WireFormatError):
            AifScope.from_json_text(text, max_size=1_000_000)

    def test_json_text_max_size_and_type(self) -> None:
        with pytest.raises(PayloadTooLarge):
            AifScope.from_json_text('[["/a",1]]', max_size=5)
        with pytest.raises(WireFormatError):
            AifScope.from_json_text(b'[["/a",1]]')  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- decode_scope


class TestDecodeScope:
    AIF = AifScope({"/a": GET})

    def test_by_type(self) -> None:
        assert decode_scope("read write") == TextScope.parse("read write")
        assert decode_scope(self.AIF.to_cbor()) == self.AIF
        assert decode_scope("read", aif=False) == TextScope.parse("read")
        assert decode_scope(self.AIF.to_cbor(), aif=True) == self.AIF

    def test_aif_in_json(self) -> None:
        assert decode_scope(self.AIF.encode_json_value(), aif=True) == self.AIF
        # Without aif=True the same string is not a text scope ('"' is not a scope-token character).
        with pytest.raises(WireFormatError):
            decode_scope(self.AIF.encode_json_value())

    def test_binary_non_aif_refused(self) -> None:
        with pytest.raises(WireFormatError):
            decode_scope(self.AIF.to_cbor(), aif=False)

    @pytest.mark.parametrize("value", [None, 9, ["read"], {"/a": 1}, bytearray(b"\x80"), 1.5])
    def test_other_types(self, value: object) -> None:
        with pytest.raises(WireFormatError):
            decode_scope(value)  # type: ignore[arg-type]

    @pytest.mark.parametrize("value", ["", "a  b", b"", b"\xff", b"\xa0"])
    def test_malformed(self, value: str | bytes) -> None:
        with pytest.raises(WireFormatError):
            decode_scope(value)

    def test_max_size_passed_through(self) -> None:
        with pytest.raises(PayloadTooLarge):
            decode_scope("a" * 10, max_size=9)
        with pytest.raises(PayloadTooLarge):
            decode_scope(self.AIF.to_cbor(), max_size=3)
        with pytest.raises(PayloadTooLarge):
            decode_scope(self.AIF.to_json_text(), aif=True, max_size=3)

    def test_encode_values(self) -> None:
        assert isinstance(self.AIF.encode_cbor_value(), bytes)
        assert isinstance(TextScope.parse("a").encode_cbor_value(), str)


def granted(requested: Scope, allowed: Scope) -> bool:
    """Scope-protocol user: what an AS does with any scope type (RFC 9200 §5.8.1)."""
    return not requested.intersection(allowed).is_empty


def test_both_types_implement_scope_protocol() -> None:
    assert granted(TextScope.parse("a b"), TextScope.parse("b"))
    assert not granted(AifScope({"/a": GET}), AifScope({"/a": PUT}))
