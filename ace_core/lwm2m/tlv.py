"""OMA-TLV, Content-Format 11542 ``application/vnd.oma.lwm2m+tlv``: OMA LwM2M Core §7.4.3 (ref. §3).

Each TLV is a type byte, a 1- or 2-byte identifier, a 0- to 3-byte length and the value::

    type byte:  b7 b6 | b5  | b4 b3 | b2 b1 b0
                kind  | idL | lenT  | length when lenT = 00

``kind`` 00 Object Instance (value = resource TLVs), 01 Resource Instance, 10 Multiple Resource (value =
resource-instance TLVs), 11 Resource with value; ``idL`` 1 = 16-bit identifier; ``lenT`` 01/10/11 = 8/16/24-bit
length field (the low three bits are then ignored). Values: integers signed big-endian in 1/2/4/8 bytes (Unsigned
and Time the same on the wire), booleans one byte 0/1, floats IEEE 754 in 4 or 8 bytes, strings UTF-8 without NUL,
opaque raw, Objlnk 4 bytes (object id, instance id; 16 bits each).

Encoding is minimal (shortest identifier, length field and integer); decoding accepts every valid form and raises
only :class:`~ace_core.lwm2m.errors.TlvError`, within a size bound and the fixed nesting of the grammar
(object instance > multiple resource > resource instance: at most three levels).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ace_core.lwm2m.errors import TlvError
from ace_core.lwm2m.model import (
    MAX_ID,
    ObjectInstance,
    ObjectLink,
    ObjectSpec,
    ResourceType,
    ResourceValue,
    Value,
    check_value,
    natural_type,
)
from ace_core.lwm2m.registry import TlvKind

__all__ = [
    "DEFAULT_MAX_SIZE",
    "Tlv",
    "decode",
    "decode_instance",
    "decode_instances",
    "decode_value",
    "encode",
    "encode_instance",
    "encode_resources",
    "encode_value",
]

#: Largest TLV payload accepted from a device (bytes). Bootstrap payloads are a few hundred bytes; the format
#: allows 16 MiB per TLV, which no constrained peer should make us buffer.
DEFAULT_MAX_SIZE = 65536

_MAX_LENGTH = (1 << 24) - 1
_CHILD_KINDS: Mapping[TlvKind, frozenset[TlvKind]] = {
    TlvKind.OBJECT_INSTANCE: frozenset({TlvKind.RESOURCE_VALUE, TlvKind.MULTIPLE_RESOURCE}),
    TlvKind.MULTIPLE_RESOURCE: frozenset({TlvKind.RESOURCE_INSTANCE}),
}
_TOP_LEVEL = frozenset(TlvKind)


@dataclass(frozen=True, slots=True)
class Tlv:
    """One TLV. Object Instance and Multiple Resource TLVs hold child TLVs, the others raw value bytes."""

    kind: TlvKind
    identifier: int
    value: bytes | tuple[Tlv, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.identifier, int) or not 0 <= self.identifier <= MAX_ID:
            raise ValueError(f"TLV identifier must be in 0..{MAX_ID}, got {self.identifier!r}")
        allowed = _CHILD_KINDS.get(self.kind)
        if allowed is None:
            if not isinstance(self.value, bytes):
                raise ValueError(f"a {self.kind.name} TLV holds bytes")
        else:
            if not isinstance(self.value, tuple):
                raise ValueError(f"a {self.kind.name} TLV holds child TLVs")
            for child in self.value:
                if child.kind not in allowed:
                    raise ValueError(f"a {self.kind.name} TLV cannot contain a {child.kind.name} TLV")

    @property
    def children(self) -> tuple[Tlv, ...]:
        """The child TLVs of a container TLV (empty for value TLVs)."""
        return self.value if isinstance(self.value, tuple) else ()

    @property
    def raw(self) -> bytes:
        """The value bytes of a Resource or Resource Instance TLV."""
        if not isinstance(self.value, bytes):
            raise ValueError(f"a {self.kind.name} TLV has no raw value")
        return self.value


# -- framing -----------------------------------------------------------------------------------------------------


def _encode_one(tlv: Tlv, out: bytearray) -> None:
    if isinstance(tlv.value, bytes):
        body = tlv.value
    else:
        inner = bytearray()
        for child in tlv.value:
            _encode_one(child, inner)
        body = bytes(inner)
    length = len(body)
    if length > _MAX_LENGTH:
        raise ValueError(f"TLV value of {length} bytes exceeds the 24-bit length field")
    type_byte = tlv.kind << 6
    ident = tlv.identifier.to_bytes(1 if tlv.identifier <= 0xFF else 2, "big")
    if len(ident) == 2:
        type_byte |= 0x20
    if length <= 7:
        type_byte |= length
        length_field = b""
    elif length <= 0xFF:
        type_byte |= 0x08
        length_field = length.to_bytes(1, "big")
    elif length <= 0xFFFF:
        type_byte |= 0x10
        length_field = length.to_bytes(2, "big")
    else:
        type_byte |= 0x18
        length_field = length.to_bytes(3, "big")
    out.append(type_byte)
    out += ident
    out += length_field
    out += body


def encode(tlvs: Iterable[Tlv]) -> bytes:
    """Serialize a sequence of TLVs with the shortest identifier and length fields.

    >>> encode([Tlv(TlvKind.RESOURCE_VALUE, 10, b"\\x65")]).hex()
    'c10a65'
    """
    out = bytearray()
    for tlv in tlvs:
        _encode_one(tlv, out)
    return bytes(out)


def _decode_sequence(data: memoryview, allowed: frozenset[TlvKind], depth: int) -> tuple[Tlv, ...]:
    items: list[Tlv] = []
    pos = 0
    end = len(data)
    while pos < end:
        start = pos
        type_byte = data[pos]
        pos += 1
        kind = TlvKind(type_byte >> 6)
        if kind not in allowed:
            where = "at the top level" if depth == 0 else "here"
            raise TlvError(f"a {kind.name} TLV is not allowed {where} (offset {start})")
        id_len = 2 if type_byte & 0x20 else 1
        len_type = (type_byte >> 3) & 0x03
        header_end = pos + id_len + len_type
        if header_end > end:
            raise TlvError(f"truncated TLV header at offset {start}")
        identifier = int.from_bytes(data[pos : pos + id_len], "big")
        pos += id_len
        if len_type == 0:
            length = type_byte & 0x07
        else:
            length = int.from_bytes(data[pos : pos + len_type], "big")
            pos += len_type
        if length > end - pos:
            raise TlvError(f"TLV at offset {start} declares {length} value bytes, {end - pos} remain")
        body = data[pos : pos + length]
        pos += length
        children = _CHILD_KINDS.get(kind)
        if children is None:
            items.append(Tlv(kind, identifier, bytes(body)))
        else:
            items.append(Tlv(kind, identifier, _decode_sequence(body, children, depth + 1)))
    return tuple(items)


def decode(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> tuple[Tlv, ...]:
    """Parse a TLV payload into its TLVs, checking the nesting grammar.

    :raises TlvError: truncated or over-long input, a TLV kind where the grammar forbids it, or non-bytes input.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TlvError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise TlvError(f"TLV payload of {len(data)} bytes exceeds the limit of {max_size}")
    return _decode_sequence(memoryview(bytes(data)), _TOP_LEVEL, 0)


# -- values ------------------------------------------------------------------------------------------------------


def _encode_signed(value: int) -> bytes:
    for size in (1, 2, 4, 8):
        if -(1 << (8 * size - 1)) <= value < (1 << (8 * size - 1)):
            return value.to_bytes(size, "big", signed=True)
    raise ValueError(f"integer {value} does not fit in 64 bits")


def _encode_float(value: float) -> bytes:
    if math.isnan(value):
        return struct.pack(">d", value)
    try:
        single = struct.pack(">f", value)
    except OverflowError:
        return struct.pack(">d", value)
    return single if struct.unpack(">f", single)[0] == value else struct.pack(">d", value)


def encode_value(value: Value, rtype: ResourceType | None = None) -> bytes:
    """The TLV value bytes of ``value`` as a ``rtype`` (default: the value's natural type).

    Integers take the shortest of 1/2/4/8 bytes that holds them signed (202 is ``00ca``, ref. §3); an unsigned
    value of 2^63 or more takes 8 bytes. A float takes 4 bytes when single precision holds it exactly, else 8.

    :raises ValueError: the value is not a valid ``rtype``.
    """
    rtype = natural_type(value) if rtype is None else rtype
    value = check_value(value, rtype)
    if rtype is ResourceType.BOOLEAN:
        return b"\x01" if value else b"\x00"
    if rtype in (ResourceType.INTEGER, ResourceType.TIME):
        assert isinstance(value, int)
        return _encode_signed(value)
    if rtype is ResourceType.UNSIGNED:
        assert isinstance(value, int)
        return _encode_signed(value) if value < (1 << 63) else value.to_bytes(8, "big")
    if rtype is ResourceType.FLOAT:
        assert isinstance(value, float)
        return _encode_float(value)
    if rtype is ResourceType.STRING:
        assert isinstance(value, str)
        return value.encode("utf-8")
    if rtype is ResourceType.OBJLNK:
        assert isinstance(value, ObjectLink)
        return value.object_id.to_bytes(2, "big") + value.instance_id.to_bytes(2, "big")
    assert isinstance(value, bytes)
    return value


def decode_value(raw: bytes, rtype: ResourceType) -> Value:
    """Decode TLV value bytes as a ``rtype``.

    :raises TlvError: wrong length for the type, a boolean other than 0/1, invalid UTF-8 or a NUL in a string.
    """
    n = len(raw)
    if rtype in (ResourceType.INTEGER, ResourceType.TIME, ResourceType.UNSIGNED):
        if n not in (1, 2, 4, 8):
            raise TlvError(f"{rtype.value} value of {n} bytes (must be 1, 2, 4 or 8)")
        return int.from_bytes(raw, "big", signed=rtype is not ResourceType.UNSIGNED)
    if rtype is ResourceType.BOOLEAN:
        if n != 1 or raw[0] > 1:
            raise TlvError(f"Boolean value must be one byte 0 or 1, got {raw.hex() or 'nothing'}")
        return raw[0] == 1
    if rtype is ResourceType.FLOAT:
        if n == 4:
            return float(struct.unpack(">f", raw)[0])
        if n == 8:
            return float(struct.unpack(">d", raw)[0])
        raise TlvError(f"Float value of {n} bytes (must be 4 or 8)")
    if rtype is ResourceType.STRING:
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TlvError(f"String value is not UTF-8: {exc}") from None
        if "\x00" in text:
            raise TlvError("String value contains NUL")
        return text
    if rtype is ResourceType.OBJLNK:
        if n != 4:
            raise TlvError(f"Objlnk value of {n} bytes (must be 4)")
        return ObjectLink(int.from_bytes(raw[:2], "big"), int.from_bytes(raw[2:], "big"))
    if rtype is ResourceType.OPAQUE:
        return bytes(raw)
    raise TlvError("an executable resource carries no value")


# -- object instances --------------------------------------------------------------------------------------------


def encode_resources(resources: Mapping[int, ResourceValue], spec: ObjectSpec | None = None) -> tuple[Tlv, ...]:
    """Resource TLVs (kind 11, or kind 10 with resource-instance TLVs) for ``resources``, in ascending id order.

    Resources the ``spec`` defines take its type; others their value's natural type.

    :raises ValueError: a value that does not fit its resource's type or multiplicity.
    """
    out: list[Tlv] = []
    for rid in sorted(resources):
        value = resources[rid]
        rspec = spec.resources.get(rid) if spec is not None else None
        if isinstance(value, Mapping):
            if rspec is not None and not rspec.multiple:
                raise ValueError(f"resource {rid} ({rspec.name}) is single-instance")
            instances = tuple(
                Tlv(TlvKind.RESOURCE_INSTANCE, riid, encode_value(value[riid], rspec.type if rspec else None))
                for riid in sorted(value)
            )
            out.append(Tlv(TlvKind.MULTIPLE_RESOURCE, rid, instances))
        else:
            if rspec is not None and rspec.multiple:
                raise ValueError(f"resource {rid} ({rspec.name}) is multiple-instance: give a mapping")
            out.append(Tlv(TlvKind.RESOURCE_VALUE, rid, encode_value(value, rspec.type if rspec else None)))
    return tuple(out)


def encode_instance(instance: ObjectInstance, spec: ObjectSpec | None = None, *, wrap: bool = False) -> bytes:
    """The TLV payload of a Bootstrap-Write to ``/{object}/{instance}``.

    :param wrap: wrap the resource TLVs in one Object Instance TLV carrying the instance id. Both forms are
        valid for a write to an instance path, and Wakaama and Anjay accept both (ref. §3).
    """
    resources = encode_resources(instance.resources, spec)
    if wrap:
        return encode([Tlv(TlvKind.OBJECT_INSTANCE, instance.instance_id, resources)])
    return encode(resources)


def _decode_resources(tlvs: Iterable[Tlv], spec: ObjectSpec | None, where: str) -> dict[int, ResourceValue]:
    resources: dict[int, ResourceValue] = {}
    for tlv in tlvs:
        rid = tlv.identifier
        if rid in resources:
            raise TlvError(f"resource {rid} appears twice in {where}")
        rspec = spec.resources.get(rid) if spec is not None else None
        rtype = rspec.type if rspec is not None else ResourceType.OPAQUE  # unknown: keep the bytes
        if tlv.kind is TlvKind.MULTIPLE_RESOURCE:
            if rspec is not None and not rspec.multiple:
                raise TlvError(f"resource {rid} ({rspec.name}) of {where} is single-instance")
            values: dict[int, Value] = {}
            for child in tlv.children:
                if child.identifier in values:
                    raise TlvError(f"resource instance {rid}/{child.identifier} appears twice in {where}")
                values[child.identifier] = decode_value(child.raw, rtype)
            resources[rid] = values
        elif tlv.kind is TlvKind.RESOURCE_VALUE:
            if rspec is not None and rspec.multiple:
                raise TlvError(f"resource {rid} ({rspec.name}) of {where} is multiple-instance")
            resources[rid] = decode_value(tlv.raw, rtype)
        else:
            raise TlvError(f"a {tlv.kind.name} TLV where resources are expected in {where}")
    return resources


def decode_instance(
    data: bytes, spec: ObjectSpec | None, *, object_id: int, instance_id: int, max_size: int = DEFAULT_MAX_SIZE
) -> ObjectInstance:
    """Decode the payload of a write to ``/{object_id}/{instance_id}``: bare resource TLVs, or one Object
    Instance TLV with the same id wrapping them (ref. §3).

    :raises TlvError: malformed TLV, a wrapped id that differs from ``instance_id``, duplicate resources, or a
        value that does not decode as its resource's type. Unknown resources are kept as ``bytes``.
    """
    tlvs = decode(data, max_size=max_size)
    where = f"/{object_id}/{instance_id}"
    if len(tlvs) == 1 and tlvs[0].kind is TlvKind.OBJECT_INSTANCE:
        if tlvs[0].identifier != instance_id:
            raise TlvError(f"payload for {where} wraps instance {tlvs[0].identifier}")
        tlvs = tlvs[0].children
    elif any(t.kind is TlvKind.OBJECT_INSTANCE for t in tlvs):
        raise TlvError(f"payload for {where} holds several object instances")
    return ObjectInstance(object_id, instance_id, _decode_resources(tlvs, spec, where))


def decode_instances(
    data: bytes, spec: ObjectSpec | None, *, object_id: int, max_size: int = DEFAULT_MAX_SIZE
) -> tuple[ObjectInstance, ...]:
    """Decode an object-level payload (``/{object_id}``): a sequence of Object Instance TLVs.

    :raises TlvError: as :func:`decode_instance`, and for anything but Object Instance TLVs at the top level or
        an instance id that appears twice.
    """
    seen: set[int] = set()
    out: list[ObjectInstance] = []
    for tlv in decode(data, max_size=max_size):
        if tlv.kind is not TlvKind.OBJECT_INSTANCE:
            raise TlvError(f"object-level payload for /{object_id} holds a {tlv.kind.name} TLV")
        if tlv.identifier in seen:
            raise TlvError(f"instance /{object_id}/{tlv.identifier} appears twice")
        seen.add(tlv.identifier)
        where = f"/{object_id}/{tlv.identifier}"
        out.append(ObjectInstance(object_id, tlv.identifier, _decode_resources(tlv.children, spec, where)))
    return tuple(out)
