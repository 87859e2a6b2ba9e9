"""OMA-TLV (ref. §3): the reference's example bytes, the header layout, value codecs, round trips, hostile input.

Vectors are in ``tests/vectors/lwm2m/`` (provenance in ``tests/vectors/README.md``), copied from the reference.
"""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ace_core.lwm2m import tlv
from ace_core.lwm2m.errors import TlvError
from ace_core.lwm2m.model import ObjectInstance, ObjectLink, ResourceType
from ace_core.lwm2m.objects import SECURITY_SPEC, SERVER_SPEC
from ace_core.lwm2m.registry import TlvKind
from ace_core.lwm2m.tlv import Tlv
from tests.vectors_loader import vector_hex

SETTINGS = settings(max_examples=200, deadline=None)
FUZZ_SETTINGS = settings(max_examples=500, deadline=None)

NOSEC_0_1 = "lwm2m/ref3_put_0_1_nosec_ssid101.hex"
SERVER_1_1 = "lwm2m/ref3_put_1_1_ssid101.hex"


# -- the reference's bytes ---------------------------------------------------------------------------------------


def test_ref3_put_0_1_nosec_account_decodes_and_reencodes() -> None:
    """ref. §3 "PUT /0/1 CF 11542 (NoSec DM account, SSID 101)", byte for byte both ways."""
    vector = vector_hex(NOSEC_0_1)
    expected = (
        Tlv(TlvKind.RESOURCE_VALUE, 0, b"coap://127.0.0.1:5683"),
        Tlv(TlvKind.RESOURCE_VALUE, 1, b"\x00"),
        Tlv(TlvKind.RESOURCE_VALUE, 2, b"\x03"),
        Tlv(TlvKind.RESOURCE_VALUE, 3, b""),
        Tlv(TlvKind.RESOURCE_VALUE, 4, b""),
        Tlv(TlvKind.RESOURCE_VALUE, 5, b""),
        Tlv(TlvKind.RESOURCE_VALUE, 10, b"\x65"),
    )
    assert tlv.decode(vector) == expected
    assert tlv.encode(expected) == vector


def test_ref3_put_0_1_nosec_account_as_typed_instance() -> None:
    vector = vector_hex(NOSEC_0_1)
    instance = tlv.decode_instance(vector, SECURITY_SPEC, object_id=0, instance_id=1)
    assert instance == ObjectInstance(
        0, 1, {0: "coap://127.0.0.1:5683", 1: False, 2: 3, 3: b"", 4: b"", 5: b"", 10: 101}
    )
    assert tlv.encode_instance(instance, SECURITY_SPEC) == vector


@pytest.mark.parametrize(
    ("vector", "rid", "value"),
    [
        ("lwm2m/ref3_psk_security_mode.hex", 2, 0),
        ("lwm2m/ref3_psk_identity.hex", 3, b"lock-0001"),
        ("lwm2m/ref3_psk_secret_key.hex", 5, bytes(range(16))),
        ("lwm2m/ref3_ssid202.hex", 10, 202),
    ],
    ids=["psk-mode", "psk-identity", "psk-key", "ssid-202-two-bytes"],
)
def test_ref3_single_resources(vector: str, rid: int, value: object) -> None:
    """ref. §3 PSK variant (mode 0, identity "lock-0001", 16-byte key) and "SSID 202 needs 2 bytes since it is
    signed"."""
    data = vector_hex(vector)
    assert tlv.decode_instance(data, SECURITY_SPEC, object_id=0, instance_id=1).resources == {rid: value}
    assert tlv.encode(tlv.encode_resources({rid: value}, SECURITY_SPEC)) == data  # type: ignore[dict-item]


def test_ref3_put_1_1_server_instance() -> None:
    """ref. §3 "PUT /1/1": SSID 101, Lifetime 300 (2 bytes), Storing false, Binding "U"."""
    vector = vector_hex(SERVER_1_1)
    instance = tlv.decode_instance(vector, SERVER_SPEC, object_id=1, instance_id=1)
    assert instance.resources == {0: 101, 1: 300, 6: False, 7: "U"}
    assert tlv.encode_instance(instance, SERVER_SPEC) == vector


def test_ref3_wrapped_form_for_0_2() -> None:
    """ref. §3 "Wrapped form for /0/2: 08 02 28 <40 bytes of resource TLVs>". The 40 bytes are the NoSec
    account with SSID 202 (the reference's SSID-202 TLV replacing the 3-byte SSID-101 TLV: 39 - 3 + 4 = 40)."""
    header = vector_hex("lwm2m/ref3_wrapped_0_2_header.hex")
    body = vector_hex(NOSEC_0_1)[:-3] + vector_hex("lwm2m/ref3_ssid202.hex")
    assert len(body) == header[2] == 40
    wrapped = header + body
    bare = tlv.decode_instance(body, SECURITY_SPEC, object_id=0, instance_id=2)
    assert tlv.decode_instance(wrapped, SECURITY_SPEC, object_id=0, instance_id=2) == bare
    assert tlv.encode_instance(bare, SECURITY_SPEC, wrap=True) == wrapped


def test_wrapped_instance_id_must_match_the_path() -> None:
    wrapped = (
        vector_hex("lwm2m/ref3_wrapped_0_2_header.hex")
        + vector_hex(NOSEC_0_1)[:-3]
        + vector_hex("lwm2m/ref3_ssid202.hex")
    )
    with pytest.raises(TlvError, match="wraps instance 2"):
        tlv.decode_instance(wrapped, SECURITY_SPEC, object_id=0, instance_id=3)


# -- header layout (the type byte as ref. §3 draws it) -------------------------------------------------------------


@pytest.mark.parametrize("identifier", [0, 255, 256, 65535])
@pytest.mark.parametrize("length", [0, 7, 8, 255, 256, 65535, 65536])
def test_type_byte_fields(identifier: int, length: int) -> None:
    encoded = tlv.encode([Tlv(TlvKind.RESOURCE_VALUE, identifier, b"\xaa" * length)])
    type_byte = encoded[0]
    assert type_byte >> 6 == TlvKind.RESOURCE_VALUE
    id_len = 2 if type_byte & 0x20 else 1
    assert id_len == (1 if identifier < 256 else 2)
    len_type = (type_byte >> 3) & 0x03
    assert int.from_bytes(encoded[1 : 1 + id_len], "big") == identifier
    if length <= 7:
        assert len_type == 0 and type_byte & 0x07 == length
    else:
        assert len_type == (1 if length < 1 << 8 else 2 if length < 1 << 16 else 3)
        assert int.from_bytes(encoded[1 + id_len : 1 + id_len + len_type], "big") == length
    assert len(encoded) == 1 + id_len + len_type + length
    assert tlv.decode(encoded, max_size=len(encoded)) == (Tlv(TlvKind.RESOURCE_VALUE, identifier, b"\xaa" * length),)


def test_non_minimal_length_fields_are_accepted() -> None:
    """An 8-bit length field for a short value, and low bits set next to lenT 11 ("b2..b0 ignored")."""
    assert tlv.decode(bytes([0xC8, 0x0A, 0x01, 0x65])) == (Tlv(TlvKind.RESOURCE_VALUE, 10, b"\x65"),)
    assert tlv.decode(bytes([0xDF, 0x0A, 0x00, 0x00, 0x01, 0x65])) == (Tlv(TlvKind.RESOURCE_VALUE, 10, b"\x65"),)


def test_multiple_resource_and_instances() -> None:
    instance = ObjectInstance(0, 4, {0: "coaps://as", 16: {0: 49320, 1: 49326}})
    data = tlv.encode_instance(instance, SECURITY_SPEC, wrap=True)
    (outer,) = tlv.decode(data)
    assert outer.kind is TlvKind.OBJECT_INSTANCE
    multi = outer.children[1]
    assert multi.kind is TlvKind.MULTIPLE_RESOURCE and multi.identifier == 16
    assert [c.kind for c in multi.children] == [TlvKind.RESOURCE_INSTANCE] * 2
    assert tlv.decode_instance(data, SECURITY_SPEC, object_id=0, instance_id=4) == instance
    (again,) = tlv.decode_instances(data, SECURITY_SPEC, object_id=0)
    assert again == instance


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (bytes([0x08, 0x00, 0x03, 0x08, 0x01, 0x00]), "OBJECT_INSTANCE TLV is not allowed"),
        (bytes([0x83, 0x00, 0xC1, 0x00, 0x01]), "RESOURCE_VALUE TLV is not allowed"),
        (bytes([0xC8, 0x00, 0x05, 0x01]), "declares 5 value bytes"),
        (bytes([0xE8, 0x00]), "truncated TLV header"),
        (bytes([0xC1, 0x0A, 0x65, 0xC1, 0x0A, 0x66]), "resource 10 appears twice"),
    ],
    ids=["nested-instance", "resource-in-multiple", "short-value", "short-header", "duplicate"],
)
def test_malformed(data: bytes, message: str) -> None:
    with pytest.raises(TlvError, match=message):
        tlv.decode_instance(data, SECURITY_SPEC, object_id=0, instance_id=1)


def test_size_bound() -> None:
    with pytest.raises(TlvError, match="exceeds the limit"):
        tlv.decode(b"\xc0\x00" * 10, max_size=19)


# -- values --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "size"),
    [(0, 1), (101, 1), (127, 1), (128, 2), (202, 2), (300, 2), (-129, 2), (1 << 31, 8), (-(1 << 63), 8)],
)
def test_integers_take_the_shortest_signed_size(value: int, size: int) -> None:
    raw = tlv.encode_value(value, ResourceType.INTEGER)
    assert len(raw) == size
    assert tlv.decode_value(raw, ResourceType.INTEGER) == value


def test_unsigned_reads_all_bits() -> None:
    assert tlv.decode_value(b"\xff", ResourceType.UNSIGNED) == 255
    assert tlv.decode_value(b"\xff", ResourceType.INTEGER) == -1
    assert tlv.encode_value((1 << 64) - 1, ResourceType.UNSIGNED) == b"\xff" * 8


@pytest.mark.parametrize(
    ("raw", "rtype"),
    [
        (b"\x00\x00\x00", ResourceType.INTEGER),
        (b"", ResourceType.INTEGER),
        (b"\x02", ResourceType.BOOLEAN),
        (b"\x00\x00", ResourceType.BOOLEAN),
        (b"\x00" * 2, ResourceType.FLOAT),
        (b"\xff", ResourceType.STRING),
        (b"a\x00b", ResourceType.STRING),
        (b"\x00\x15\x00", ResourceType.OBJLNK),
        (b"", ResourceType.EXECUTABLE),
    ],
)
def test_bad_values(raw: bytes, rtype: ResourceType) -> None:
    with pytest.raises(TlvError):
        tlv.decode_value(raw, rtype)


def test_float_and_objlnk() -> None:
    assert tlv.encode_value(1.5) == struct.pack(">f", 1.5)  # exact in single precision: 4 bytes
    assert tlv.encode_value(0.1) == struct.pack(">d", 0.1)
    assert tlv.decode_value(struct.pack(">f", 1.5), ResourceType.FLOAT) == 1.5
    assert tlv.encode_value(ObjectLink(21, 0)) == b"\x00\x15\x00\x00"
    assert tlv.decode_value(b"\x00\x15\x00\x00", ResourceType.OBJLNK) == ObjectLink(21, 0)


def test_encoder_refuses_invalid_values() -> None:
    with pytest.raises(ValueError):
        tlv.encode_value("a\x00b", ResourceType.STRING)
    with pytest.raises(ValueError):
        tlv.encode_value(1 << 63, ResourceType.INTEGER)
    with pytest.raises(ValueError):
        tlv.encode_value(True, ResourceType.INTEGER)
    with pytest.raises(ValueError):
        tlv.encode_resources({16: 5}, SECURITY_SPEC)  # multiple-instance resource given a single value


# -- properties ------------------------------------------------------------------------------------------------------

ids16 = st.integers(0, 0xFFFF)
blobs = st.binary(max_size=300)
resource_instances = st.builds(Tlv, st.just(TlvKind.RESOURCE_INSTANCE), ids16, blobs)
leaf_resources = st.builds(Tlv, st.just(TlvKind.RESOURCE_VALUE), ids16, blobs)
multiple = st.builds(
    Tlv, st.just(TlvKind.MULTIPLE_RESOURCE), ids16, st.lists(resource_instances, max_size=4).map(tuple)
)
instances = st.builds(
    Tlv, st.just(TlvKind.OBJECT_INSTANCE), ids16, st.lists(leaf_resources | multiple, max_size=5).map(tuple)
)
any_tlv = instances | multiple | leaf_resources | resource_instances


@SETTINGS
@given(st.lists(any_tlv, max_size=5))
def test_tlv_round_trip(tlvs: list[Tlv]) -> None:
    data = tlv.encode(tlvs)
    assert tlv.decode(data, max_size=len(data)) == tuple(tlvs)
    assert tlv.encode(tlv.decode(data, max_size=len(data))) == data  # our encoding is the minimal one


typed_values = st.one_of(
    st.tuples(st.just(ResourceType.INTEGER), st.integers(-(1 << 63), (1 << 63) - 1)),
    st.tuples(st.just(ResourceType.TIME), st.integers(-(1 << 63), (1 << 63) - 1)),
    st.tuples(st.just(ResourceType.UNSIGNED), st.integers(0, (1 << 64) - 1)),
    st.tuples(st.just(ResourceType.FLOAT), st.floats(allow_nan=False)),
    st.tuples(st.just(ResourceType.BOOLEAN), st.booleans()),
    st.tuples(st.just(ResourceType.STRING), st.text().filter(lambda s: "\x00" not in s)),
    st.tuples(st.just(ResourceType.OPAQUE), st.binary()),
    st.tuples(st.just(ResourceType.OBJLNK), st.builds(ObjectLink, ids16, ids16)),
)


@SETTINGS
@given(typed_values)
def test_value_round_trip(typed: tuple[ResourceType, object]) -> None:
    rtype, value = typed
    decoded = tlv.decode_value(tlv.encode_value(value, rtype), rtype)  # type: ignore[arg-type]
    assert decoded == value or (isinstance(value, float) and math.isnan(value))


@FUZZ_SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_tlv_error(data: bytes) -> None:
    for call in (
        lambda: tlv.decode(data),
        lambda: tlv.decode_instance(data, SECURITY_SPEC, object_id=0, instance_id=1),
        lambda: tlv.decode_instance(data, SERVER_SPEC, object_id=1, instance_id=0),
        lambda: tlv.decode_instance(data, None, object_id=3, instance_id=0),
        lambda: tlv.decode_instances(data, SECURITY_SPEC, object_id=0),
    ):
        try:
            call()
        except TlvError:
            pass


@FUZZ_SETTINGS
@given(st.sampled_from([NOSEC_0_1, SERVER_1_1]), st.data())
def test_mutated_vectors_raise_only_tlv_error(vector: str, data: st.DataObject) -> None:
    original = bytearray(vector_hex(vector))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(len(original) - 1, 0)))
        if op == "flip" and original:
            original[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del original[pos:]
        else:
            original[pos:pos] = data.draw(st.binary(min_size=1, max_size=4))
    for spec, obj in ((SECURITY_SPEC, 0), (SERVER_SPEC, 1)):
        try:
            tlv.decode_instance(bytes(original), spec, object_id=obj, instance_id=1)
        except TlvError:
            pass
