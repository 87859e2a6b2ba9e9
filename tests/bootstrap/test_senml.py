"""SenML CBOR (RFC 8428 §6; ref. §2.4): the RFC's CBOR example byte for byte, resolution, LwM2M instances,
round trips and hostile input.

The reference gives no SenML bytes; the RFC 8428 §6 example is in ``tests/vectors/rfc8428/`` (provenance in
``tests/vectors/README.md``), copied from the RFC text.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ace_core.lwm2m import senml
from ace_core.lwm2m.errors import SenmlError
from ace_core.lwm2m.model import ObjectInstance, ObjectLink
from ace_core.lwm2m.objects import OBJECT_SPECS
from ace_core.lwm2m.senml import Record, ResolvedRecord
from tests.vectors_loader import vector_hex

SETTINGS = settings(max_examples=200, deadline=None)
FUZZ_SETTINGS = settings(max_examples=500, deadline=None)

BASE = "urn:dev:ow:10e2073a0108006:"
#: RFC 8428 §6, the example in CBOR diagnostic notation, as records.
RFC8428_SECTION6_RECORDS = (
    Record(bn=BASE, bt=1276020076.001, bu="A", bver=5, n="voltage", u="V", v=120.1),
    Record(n="current", t=-5, v=1.2),
    Record(n="current", t=-4, v=1.3),
    Record(n="current", t=-3, v=1.4),
    Record(n="current", t=-2, v=1.5),
    Record(n="current", t=-1, v=1.6),
    Record(n="current", t=0, v=1.7),
)


def test_rfc8428_section6_cbor_example() -> None:
    """Decodes to the RFC's diagnostic notation, and re-encodes byte for byte (field order and shortest floats:
    1.5 is the half-precision ``f9 3e00`` in the RFC's dump)."""
    vector = vector_hex("rfc8428/section6_cbor_example.hex")
    assert senml.decode_pack(vector) == RFC8428_SECTION6_RECORDS
    assert senml.encode_pack(RFC8428_SECTION6_RECORDS) == vector


def test_rfc8428_section6_resolution() -> None:
    """RFC 8428 §4.6: base name, base time and base unit carry over to the later records."""
    resolved = senml.resolve(senml.decode_pack(vector_hex("rfc8428/section6_cbor_example.hex")))
    assert resolved[0] == ResolvedRecord(BASE + "voltage", 120.1, 1276020076.001, "V")
    assert resolved[1] == ResolvedRecord(BASE + "current", 1.2, 1276020076.001 - 5, "A")
    assert resolved[6] == ResolvedRecord(BASE + "current", 1.7, 1276020076.001, "A")


def test_lwm2m_instances_round_trip_with_every_value_field() -> None:
    instances = (
        ObjectInstance(
            0,
            2,
            {
                0: "coaps://as.example:5684",
                1: False,
                2: 0,
                3: b"lock-0001",
                4: b"\xa1\x01\x02",
                5: bytes(16),
                10: 101,
                16: {0: 49320},
                17: ObjectLink(21, 0),
            },
        ),
        ObjectInstance(1, 0, {0: 101, 1: 300, 6: False, 7: "U"}),
    )
    data = senml.encode_instances(instances, OBJECT_SPECS)
    pack = cbor2.loads(data)
    assert pack[0][-2] == "/0/2/" and pack[0][0] == "0"  # base name per instance, names relative to it
    assert {0: "17", "vlo": "21:0"} in pack  # Objlnk under LwM2M's text label
    assert {0: "16/0", 2: 49320} in pack  # a resource instance
    assert {0: "3", 8: b"lock-0001"} in pack  # Opaque as vd
    assert senml.decode_instances(data, OBJECT_SPECS) == instances


def test_integral_floats_become_integers_for_integer_resources() -> None:
    data = cbor2.dumps([{-2: "/1/0/", 0: "1", 2: 300.0}])
    assert senml.decode_instances(data, OBJECT_SPECS) == (ObjectInstance(1, 0, {1: 300}),)
    with pytest.raises(SenmlError, match="not integral"):
        senml.decode_instances(cbor2.dumps([{-2: "/1/0/", 0: "1", 2: 300.5}]), OBJECT_SPECS)


def test_decimal_fractions_are_numbers() -> None:
    """RFC 8428 §6: numbers may be decimal fractions (tag 4)."""
    data = cbor2.dumps([{0: "x", 2: Decimal("1.5")}])
    assert senml.decode_pack(data) == (Record(n="x", v=1.5),)


@pytest.mark.parametrize(
    ("pack", "message"),
    [
        ({0: "x"}, "CBOR array"),
        ([1], "not a map"),
        ([{0: 1}], "text string"),
        ([{2: "1"}], "must be a number"),
        ([{4: 1}], "boolean"),
        ([{8: "x"}], "byte string"),
        ([{-1: -1}], "unsigned"),
        ([{"x_": 1, 0: "a"}], "must-understand"),
        ([{0: "a", 2: 1, 3: "b"}], "more than one value"),
        ([{0: "/0/1/x", 2: 1}], "invalid path segment"),
        ([{0: "/0/1", 2: 1}], "not a resource path"),
        ([{0: "/1/0/1"}], "carries no value"),
        ([{0: "/1/0/1", 2: 1}, {0: "/1/0/1", 2: 2}], "given twice"),
        ([{0: "/1/0/7", 2: 1}], "cannot take"),
        ([{0: "/0/0/16", 2: 1}], "multiple-instance"),
        ([{0: "/1/0/0/1", 2: 1}], "single-instance"),
        ([{0: "/0/0/17", "vlo": "21"}], "not an object link"),
        ([{True: 1}], "neither integer nor text"),
    ],
)
def test_malformed_packs(pack: Any, message: str) -> None:
    with pytest.raises(SenmlError, match=message):
        senml.decode_instances(cbor2.dumps(pack), OBJECT_SPECS)


def test_unknown_labels_round_trip() -> None:
    data = cbor2.dumps([{0: "x", 2: 1, 23: "future", "ext": [1, 2]}])
    (record,) = senml.decode_pack(data)
    assert record.extra == {23: "future", "ext": [1, 2]}
    assert senml.decode_pack(senml.encode_pack([record])) == (record,)


def test_bounds() -> None:
    with pytest.raises(SenmlError, match="exceeds the limit"):
        senml.decode_pack(cbor2.dumps([{0: "x", 2: 1}] * 10), max_records=9)
    with pytest.raises(SenmlError, match="exceeds the limit"):
        senml.decode_pack(b"\x80" + b"\x00" * 100, max_size=50)
    with pytest.raises(SenmlError, match="nesting|malformed"):
        senml.decode_pack(b"\x81" * 5000 + b"\x80", max_size=10000)


# -- properties --------------------------------------------------------------------------------------------------

numbers = st.integers(-(1 << 63), (1 << 64) - 1) | st.floats(allow_nan=False)
texts = st.text(max_size=20)
records = st.builds(
    Record,
    bn=st.none() | texts,
    bt=st.none() | numbers,
    bu=st.none() | texts,
    bver=st.none() | st.integers(0, 20),
    n=st.none() | texts,
    t=st.none() | numbers,
    v=st.none() | numbers,
    vs=st.none() | texts,
    vb=st.none() | st.booleans(),
    vd=st.none() | st.binary(max_size=20),
    s=st.none() | numbers,
)


@SETTINGS
@given(st.lists(records, max_size=6))
def test_record_round_trip(pack: list[Record]) -> None:
    data = senml.encode_pack(pack)
    assert senml.decode_pack(data) == tuple(pack)
    assert len(cbor2.loads(data)) == len(pack)  # well-formed for another decoder too


def _floats_equal(a: object, b: object) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


ids16 = st.integers(0, 0xFFFF)
values = st.one_of(
    st.booleans(),
    st.integers(-(1 << 63), (1 << 63) - 1),
    st.floats(allow_nan=False),
    st.text(max_size=10).filter(lambda s: "\x00" not in s),
    st.binary(max_size=10),
    st.builds(ObjectLink, ids16, ids16),
)
resource_values = values | st.dictionaries(ids16, values, min_size=1, max_size=3)
lwm2m_instances = st.dictionaries(
    st.tuples(st.integers(3, 0xFFFF), ids16),  # objects without definitions: values keep their natural type
    st.dictionaries(ids16, resource_values, min_size=1, max_size=4),
    max_size=3,
)


@SETTINGS
@given(lwm2m_instances)
def test_instances_round_trip(table: dict[tuple[int, int], dict[int, Any]]) -> None:
    instances = tuple(ObjectInstance(o, i, r) for (o, i), r in table.items())
    assert senml.decode_instances(senml.encode_instances(instances)) == instances


@FUZZ_SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_senml_error(data: bytes) -> None:
    try:
        senml.decode_instances(data, OBJECT_SPECS)
    except SenmlError:
        pass


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.binary(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.integers(-8, 8) | st.text(max_size=3), children, max_size=4)
    ),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.dictionaries(st.integers(-7, 9) | st.sampled_from(["vlo", "x_", "n"]), cbor_values, max_size=5), max_size=5
    )
    | cbor_values
)
def test_random_cbor_raises_only_senml_error(obj: Any) -> None:
    try:
        senml.decode_instances(cbor2.dumps(obj), OBJECT_SPECS)
    except SenmlError:
        pass


@FUZZ_SETTINGS
@given(st.data())
def test_mutated_example_raises_only_senml_error(data: st.DataObject) -> None:
    vector = bytearray(vector_hex("rfc8428/section6_cbor_example.hex"))
    pos = data.draw(st.integers(0, len(vector) - 1))
    vector[pos] ^= data.draw(st.integers(1, 255))
    try:
        senml.resolve(senml.decode_pack(bytes(vector)))
    except SenmlError:
        pass
