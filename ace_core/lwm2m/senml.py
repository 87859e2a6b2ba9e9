"""SenML CBOR, Content-Format 112 ``application/senml+cbor`` (RFC 8428 §4, §6; ref. §2.4), as LwM2M 1.1/1.2
uses it for writes and for the Bootstrap-Pack (OMA LwM2M Transport 1.2, Bootstrap-Pack-Request; ref. §1).

A pack is a definite-length CBOR array of records, each a map keyed by the RFC 8428 §6 Table 4 integer labels.
LwM2M adds one label, the text key ``"vlo"`` for Objlnk values (``"21:0"``; OMA LwM2M Core, SenML data format).
In LwM2M a record's resolved name (base name ``bn`` + name ``n``, RFC 8428 §4.5.1) is the path of a resource
(``/0/1/5``) or resource instance (``/0/1/16/0``), and its value is ``v`` (numbers: Integer, Unsigned, Float,
Time), ``vs`` (String), ``vb`` (Boolean), ``vd`` (Opaque) or ``vlo`` (Objlnk).

The encoder writes record fields in a fixed order and each float in the shortest IEEE 754 form that keeps its value
(RFC 8428 §6: the value "SHOULD be chosen such that" it converts back exactly), which reproduces the RFC 8428 §6
example byte for byte. The decoder takes any valid pack (decimal fractions included), keeps unknown labels in
:attr:`Record.extra`, refuses labels ending in ``_`` (RFC 8428 §4.4: must be understood), and raises only
:class:`~ace_core.lwm2m.errors.SenmlError`, within a size and record-count bound.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any, Final

from ace_core import cbor
from ace_core.errors import WireFormatError
from ace_core.lwm2m.errors import SenmlError
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
from ace_core.lwm2m.registry import SenmlLabel

__all__ = [
    "DEFAULT_MAX_RECORDS",
    "DEFAULT_MAX_SIZE",
    "VLO",
    "Record",
    "ResolvedRecord",
    "decode_instances",
    "decode_pack",
    "encode_instances",
    "encode_pack",
    "resolve",
]

#: LwM2M's Objlnk label: a text key, since RFC 8428 §6 Table 4 is closed to new integer labels.
VLO: Final = "vlo"
#: Largest SenML CBOR payload accepted (bytes) and most records in one pack.
DEFAULT_MAX_SIZE = 65536
DEFAULT_MAX_RECORDS = 4096

Number = int | float

# (attribute, key) in encoding order. The RFC 8428 §6 example orders its first record bn, bt, bu, bver, n, u, v
# and the others n, t, v; this order agrees with both.
_FIELD_KEYS: tuple[tuple[str, int | str], ...] = (
    ("bn", SenmlLabel.BN),
    ("bt", SenmlLabel.BT),
    ("bu", SenmlLabel.BU),
    ("bv", SenmlLabel.BV),
    ("bs", SenmlLabel.BS),
    ("bver", SenmlLabel.BVER),
    ("n", SenmlLabel.N),
    ("u", SenmlLabel.U),
    ("t", SenmlLabel.T),
    ("ut", SenmlLabel.UT),
    ("v", SenmlLabel.V),
    ("vs", SenmlLabel.VS),
    ("vb", SenmlLabel.VB),
    ("vd", SenmlLabel.VD),
    ("vlo", VLO),
    ("s", SenmlLabel.S),
)
_ATTR_BY_KEY: Mapping[int | str, str] = {int(k) if isinstance(k, int) else k: a for a, k in _FIELD_KEYS}
_NUMBERS = frozenset({"bt", "bv", "bs", "t", "ut", "v", "s"})
_TEXTS = frozenset({"bn", "bu", "n", "u", "vs", "vlo"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """One SenML record as sent (before resolution). ``None`` means the field is absent."""

    bn: str | None = None
    bt: Number | None = None
    bu: str | None = None
    bv: Number | None = None
    bs: Number | None = None
    bver: int | None = None
    n: str | None = None
    u: str | None = None
    t: Number | None = None
    ut: Number | None = None
    v: Number | None = None
    vs: str | None = None
    vb: bool | None = None
    vd: bytes | None = None
    vlo: str | None = None
    s: Number | None = None
    #: Labels this module does not know (integer or text keys), kept so that they round-trip.
    extra: Mapping[int | str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in _NUMBERS:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ValueError(f"SenML {name} must be a number")
        for name in _TEXTS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"SenML {name} must be a text string")
        if self.bver is not None and (isinstance(self.bver, bool) or not isinstance(self.bver, int) or self.bver < 0):
            raise ValueError("SenML bver must be an unsigned integer")
        if self.vb is not None and not isinstance(self.vb, bool):
            raise ValueError("SenML vb must be a boolean")
        if self.vd is not None and not isinstance(self.vd, bytes):
            raise ValueError("SenML vd must be bytes")
        for key in self.extra:
            if key in _ATTR_BY_KEY or isinstance(key, bool) or not isinstance(key, int | str):
                raise ValueError(f"extra SenML label {key!r} is a known label or not an int/text key")

    @property
    def value(self) -> Value | None:
        """The record's value field (``v``, ``vs``, ``vb``, ``vd``, or ``vlo`` as an :class:`ObjectLink`)."""
        present: list[Value] = [x for x in (self.v, self.vs, self.vb, self.vd) if x is not None]
        if self.vlo is not None:
            try:
                present.append(ObjectLink.parse(self.vlo))
            except ValueError as exc:
                raise SenmlError(str(exc)) from None
        if len(present) > 1:
            raise SenmlError("a SenML record carries more than one value field")
        return present[0] if present else None


@dataclass(frozen=True, slots=True)
class ResolvedRecord:
    """A record after RFC 8428 §4.6 resolution: full name, absolute time, unit and value (``None``: no value)."""

    name: str
    value: Value | None
    time: Number | None = None
    unit: str | None = None
    sum: Number | None = None


# -- CBOR ----------------------------------------------------------------------------------------------------------


def _float(value: float) -> bytes:
    """The shortest IEEE 754 CBOR float that keeps ``value`` exactly (RFC 8949 §4.2.2 preferred serialization)."""
    if math.isnan(value):
        return b"\xf9\x7e\x00"
    for marker, fmt in ((b"\xf9", ">e"), (b"\xfa", ">f")):
        try:
            packed = struct.pack(fmt, value)
        except OverflowError:
            continue
        if struct.unpack(fmt, packed)[0] == value:
            return marker + packed
    return b"\xfb" + struct.pack(">d", value)


def _item(value: Any) -> bytes:
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return cbor.tstr(value)
    if isinstance(value, bytes):
        return cbor.bstr(value)
    return cbor.dumps(value)  # int, bool and extension values


def encode_pack(records: Sequence[Record]) -> bytes:
    """Serialize a SenML pack (definite-length array, RFC 8428 §6).

    >>> encode_pack([Record(bn="/0/1/", n="10", v=101)]).hex()
    '81a321652f302f312f00623130021865'
    """
    out = bytearray(cbor.head(4, len(records)))
    for record in records:
        items = [(key, getattr(record, attr)) for attr, key in _FIELD_KEYS if getattr(record, attr) is not None]
        out += cbor.head(5, len(items) + len(record.extra))
        for key, value in items:
            out += _item(int(key) if isinstance(key, int) else key)
            out += _item(value)
        for ekey, evalue in record.extra.items():
            out += _item(ekey)
            out += _item(evalue)
    return bytes(out)


def _number(value: object, label: str) -> Number:
    if isinstance(value, Decimal):  # RFC 8428 §6: decimal fractions (tag 4) are numbers too
        if not value.is_finite():
            raise SenmlError(f"SenML {label} is not a finite number")
        try:
            as_float = float(value)
        except (OverflowError, ValueError):
            raise SenmlError(f"SenML {label} does not fit in a double") from None
        if not math.isfinite(as_float):
            raise SenmlError(f"SenML {label} does not fit in a double")
        return as_float
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SenmlError(f"SenML {label} must be a number, got {type(value).__name__}")
    return value


def _record_from_map(item: object, index: int) -> Record:
    if not isinstance(item, dict):
        raise SenmlError(f"SenML record {index} is not a map")
    kwargs: dict[str, Any] = {}
    extra: dict[int | str, Any] = {}
    for key, value in item.items():
        if isinstance(key, bool) or not isinstance(key, int | str):
            raise SenmlError(f"SenML record {index} has a key that is neither integer nor text")
        attr = _ATTR_BY_KEY.get(key)
        if attr is None:
            if isinstance(key, str) and key.endswith("_"):
                raise SenmlError(f"SenML record {index} has the must-understand label {key!r}")
            extra[key] = value
            continue
        if attr in _NUMBERS:
            kwargs[attr] = _number(value, attr)
        elif attr in _TEXTS:
            if not isinstance(value, str):
                raise SenmlError(f"SenML {attr} must be a text string")
            kwargs[attr] = value
        elif attr == "bver":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SenmlError("SenML bver must be an unsigned integer")
            kwargs[attr] = value
        elif attr == "vb":
            if not isinstance(value, bool):
                raise SenmlError("SenML vb must be a boolean")
            kwargs[attr] = value
        else:  # vd
            if not isinstance(value, bytes):
                raise SenmlError("SenML vd must be a byte string")
            kwargs[attr] = value
    return Record(**kwargs, extra=extra)


def decode_pack(
    data: bytes, *, max_size: int = DEFAULT_MAX_SIZE, max_records: int = DEFAULT_MAX_RECORDS
) -> tuple[Record, ...]:
    """Parse a SenML CBOR pack into records.

    :raises SenmlError: malformed CBOR, not an array of maps, a field of the wrong type, a must-understand label,
        or more than ``max_size`` bytes / ``max_records`` records.
    """
    try:
        obj = cbor.loads(data, max_size=max_size)
    except WireFormatError as exc:
        raise SenmlError(f"SenML pack: {exc}") from None
    if not isinstance(obj, list):
        raise SenmlError("a SenML pack is a CBOR array")
    if len(obj) > max_records:
        raise SenmlError(f"SenML pack of {len(obj)} records exceeds the limit of {max_records}")
    return tuple(_record_from_map(item, i) for i, item in enumerate(obj))


def resolve(records: Iterable[Record]) -> tuple[ResolvedRecord, ...]:
    """Resolve base fields into each record (RFC 8428 §4.6): name = ``bn`` + ``n``, time = ``bt`` + ``t``, unit
    = ``u`` or ``bu``, numeric value = ``bv`` + ``v``, sum = ``bs`` + ``s``. A base field holds until the next
    record that sets it. Records with neither value nor sum keep ``value=None``.

    :raises SenmlError: a record with an empty resolved name or several value fields.
    """
    bn, bt, bu, bv, bs = "", None, None, None, None
    out: list[ResolvedRecord] = []
    for rec in records:
        bn = rec.bn if rec.bn is not None else bn
        bt = rec.bt if rec.bt is not None else bt
        bu = rec.bu if rec.bu is not None else bu
        bv = rec.bv if rec.bv is not None else bv
        bs = rec.bs if rec.bs is not None else bs
        name = bn + (rec.n or "")
        if not name:
            raise SenmlError("a SenML record resolves to an empty name")
        value = rec.value
        if rec.v is not None and bv is not None:
            value = bv + rec.v
        elif value is None and bv is not None and rec.s is None:
            value = bv
        time = rec.t if bt is None else bt + (rec.t or 0)
        total = rec.s if bs is None or rec.s is None else bs + rec.s
        out.append(ResolvedRecord(name, value, time, rec.u if rec.u is not None else bu, total))
    return tuple(out)


# -- LwM2M instances -----------------------------------------------------------------------------------------------


def _record_value(value: Value, rtype: ResourceType) -> dict[str, Any]:
    value = check_value(value, rtype)
    if rtype is ResourceType.BOOLEAN:
        return {"vb": value}
    if rtype is ResourceType.STRING:
        return {"vs": value}
    if rtype is ResourceType.OPAQUE:
        return {"vd": value}
    if rtype is ResourceType.OBJLNK:
        return {"vlo": str(value)}
    return {"v": value}


def encode_instances(instances: Iterable[ObjectInstance], specs: Mapping[int, ObjectSpec] | None = None) -> bytes:
    """A SenML CBOR pack of the resources of ``instances`` (e.g. a Bootstrap-Pack, or a SenML Bootstrap-Write).

    Each instance starts a new base name ``/{object}/{instance}/``; each record names a resource (``"5"``) or a
    resource instance (``"16/0"``). Types come from ``specs`` (by object id), else from the value.

    :raises ValueError: a value that does not fit its resource's type or multiplicity.
    """
    records: list[Record] = []
    for instance in instances:
        spec = specs.get(instance.object_id) if specs is not None else None
        base: str | None = f"/{instance.object_id}/{instance.instance_id}/"
        for rid in sorted(instance.resources):
            value = instance.resources[rid]
            rspec = spec.resources.get(rid) if spec is not None else None
            entries: list[tuple[str, Value]]
            if isinstance(value, Mapping):
                if rspec is not None and not rspec.multiple:
                    raise ValueError(f"resource {rid} ({rspec.name}) is single-instance")
                entries = [(f"{rid}/{riid}", value[riid]) for riid in sorted(value)]
            else:
                if rspec is not None and rspec.multiple:
                    raise ValueError(f"resource {rid} ({rspec.name}) is multiple-instance: give a mapping")
                entries = [(str(rid), value)]
            for name, item in entries:
                rtype = rspec.type if rspec is not None else natural_type(item)
                records.append(Record(bn=base, n=name, **_record_value(item, rtype)))
                base = None
    return encode_pack(records)


def _parse_path(name: str) -> tuple[int, ...]:
    parts = name.split("/")
    if len(parts) not in (4, 5) or parts[0] != "":
        raise SenmlError(f"SenML name {name!r} is not a resource path /o/i/r or /o/i/r/ri")
    ids: list[int] = []
    for part in parts[1:]:
        if not (0 < len(part) <= 5 and part.isascii() and part.isdigit()) or int(part) > MAX_ID:
            raise SenmlError(f"SenML name {name!r} has an invalid path segment")
        ids.append(int(part))
    return tuple(ids)


_ACCEPTED: Mapping[ResourceType, tuple[type, ...]] = {
    ResourceType.BOOLEAN: (bool,),
    ResourceType.STRING: (str,),
    ResourceType.OPAQUE: (bytes,),
    ResourceType.OBJLNK: (ObjectLink,),
    ResourceType.FLOAT: (int, float),
    ResourceType.INTEGER: (int, float),
    ResourceType.UNSIGNED: (int, float),
    ResourceType.TIME: (int, float),
}


def _coerce(value: Value | None, rtype: ResourceType | None, path: str) -> Value:
    if value is None:
        raise SenmlError(f"SenML record for {path} carries no value")
    if rtype is None:
        return value
    accepted = _ACCEPTED.get(rtype, ())
    if isinstance(value, bool) != (rtype is ResourceType.BOOLEAN) or not isinstance(value, accepted):
        raise SenmlError(f"{path}: a {rtype.value} resource cannot take a {type(value).__name__} value")
    if rtype is not ResourceType.FLOAT and isinstance(value, float):
        if not value.is_integer():  # an encoder may send an integral number as a float
            raise SenmlError(f"{path}: {rtype.value} value {value} is not integral")
        value = int(value)
    try:
        return check_value(value, rtype)
    except ValueError as exc:
        raise SenmlError(f"{path}: {exc}") from None


def decode_instances(
    data: bytes,
    specs: Mapping[int, ObjectSpec] | None = None,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_records: int = DEFAULT_MAX_RECORDS,
) -> tuple[ObjectInstance, ...]:
    """Decode a SenML CBOR pack of resource values into object instances, in order of first appearance.

    Values of resources that ``specs`` defines are checked (and integral floats turned into integers for integer
    types); others keep the type their SenML field gives.

    :raises SenmlError: as :func:`decode_pack`, plus names that are not resource paths, records without a value,
        a path given twice, single/multiple-instance mismatches and values of the wrong type.
    """
    grouped: dict[tuple[int, int], dict[int, ResourceValue]] = {}
    for rec in resolve(decode_pack(data, max_size=max_size, max_records=max_records)):
        path = _parse_path(rec.name)
        obj, inst, rid = path[:3]
        spec = specs.get(obj) if specs is not None else None
        rspec = spec.resources.get(rid) if spec is not None else None
        value = _coerce(rec.value, rspec.type if rspec is not None else None, rec.name)
        resources = grouped.setdefault((obj, inst), {})
        if len(path) == 4:
            if rspec is not None and not rspec.multiple:
                raise SenmlError(f"{rec.name}: resource {rid} ({rspec.name}) is single-instance")
            current = resources.setdefault(rid, {})
            if not isinstance(current, dict) or path[3] in current:
                raise SenmlError(f"{rec.name} is given twice")
            current[path[3]] = value
        else:
            if rspec is not None and rspec.multiple:
                raise SenmlError(f"{rec.name}: resource {rid} ({rspec.name}) is multiple-instance")
            if rid in resources:
                raise SenmlError(f"{rec.name} is given twice")
            resources[rid] = value
    return tuple(ObjectInstance(obj, inst, res) for (obj, inst), res in grouped.items())


_RECORD_FIELDS = frozenset(f.name for f in fields(Record))
assert _RECORD_FIELDS == {attr for attr, _ in _FIELD_KEYS} | {"extra"}
