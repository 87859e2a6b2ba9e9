"""The LwM2M data model shared by the TLV and SenML codecs: resource types, values, object definitions, instances.

OMA LwM2M Core §6 (objects, instances, resources) and Appendix C (data types); the resource tables come from
``shared/reference/lwm2m-bootstrap.md`` §2 and the value encodings from §3. A value is a plain Python object
(``bool``, ``int``, ``float``, ``str``, ``bytes`` or :class:`ObjectLink`); a multiple-instance resource is a
mapping of resource-instance id to value. Which Python type a resource takes is fixed by its
:class:`ResourceType`; TLV needs that type to decode (its values are not self-describing), SenML to check.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TypeAlias

__all__ = [
    "MAX_ID",
    "ObjectInstance",
    "ObjectLink",
    "ObjectSpec",
    "ResourceSpec",
    "ResourceType",
    "ResourceValue",
    "Value",
    "check_id",
    "check_value",
    "natural_type",
]

#: Object, instance, resource and resource-instance ids are 16-bit (OMA-TLV identifiers, ref. §3).
MAX_ID = 0xFFFF

_INT64 = (-(1 << 63), (1 << 63) - 1)
_UINT64 = (0, (1 << 64) - 1)


class ResourceType(Enum):
    """LwM2M resource data types (OMA LwM2M Core Appendix C; ref. §2, §3)."""

    STRING = "String"
    INTEGER = "Integer"
    UNSIGNED = "Unsigned Integer"
    FLOAT = "Float"
    BOOLEAN = "Boolean"
    OPAQUE = "Opaque"
    TIME = "Time"
    OBJLNK = "Objlnk"
    EXECUTABLE = "none"  # Execute-only resources carry no value and are never written


@dataclass(frozen=True, slots=True, order=True)
class ObjectLink:
    """An Objlnk value: ``ObjectID:InstanceID`` (ref. §3: TLV 4 bytes, 16 bits each)."""

    object_id: int
    instance_id: int

    def __post_init__(self) -> None:
        check_id(self.object_id, "object id")
        check_id(self.instance_id, "instance id")

    def __str__(self) -> str:
        return f"{self.object_id}:{self.instance_id}"

    @classmethod
    def parse(cls, text: str) -> ObjectLink:
        """Parse the ``"21:0"`` text form (SenML ``vlo``). Raises ``ValueError``."""
        obj, sep, inst = text.partition(":")
        if not sep or not _is_decimal(obj) or not _is_decimal(inst):
            raise ValueError(f"not an object link: {text!r}")
        return cls(int(obj), int(inst))


Value: TypeAlias = bool | int | float | str | bytes | ObjectLink
#: A single-instance resource holds a :data:`Value`; a multiple-instance one maps resource-instance ids to values.
ResourceValue: TypeAlias = Value | Mapping[int, Value]


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    """One resource of an object definition."""

    id: int
    name: str
    type: ResourceType
    multiple: bool = False
    mandatory: bool = False


@dataclass(frozen=True, slots=True)
class ObjectSpec:
    """The resources of one object that this adapter knows; others are kept as opaque bytes."""

    object_id: int
    name: str
    resources: Mapping[int, ResourceSpec]

    @classmethod
    def of(cls, object_id: int, name: str, *specs: ResourceSpec) -> ObjectSpec:
        """Build from resource specs (ids must be unique)."""
        table = {spec.id: spec for spec in specs}
        if len(table) != len(specs):
            raise ValueError(f"duplicate resource id in the definition of /{object_id}")
        return cls(object_id, name, table)


@dataclass(frozen=True, slots=True)
class ObjectInstance:
    """The resources of ``/{object_id}/{instance_id}`` (ids 0..65535; the values are not type-checked here)."""

    object_id: int
    instance_id: int
    resources: Mapping[int, ResourceValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_id(self.object_id, "object id")
        check_id(self.instance_id, "instance id")
        for rid, value in self.resources.items():
            check_id(rid, "resource id")
            if isinstance(value, Mapping):
                for riid in value:
                    check_id(riid, "resource instance id")

    @property
    def path(self) -> str:
        """``/{object}/{instance}``."""
        return f"/{self.object_id}/{self.instance_id}"


def _is_decimal(text: str) -> bool:
    return 0 < len(text) <= 5 and text.isascii() and text.isdigit()


def check_id(value: object, what: str) -> int:
    """``value`` as a 16-bit id; ``ValueError`` otherwise."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_ID:
        raise ValueError(f"{what} must be an integer in 0..{MAX_ID}, got {value!r}")
    return value


def natural_type(value: Value) -> ResourceType:
    """The type a value of a resource without a definition is encoded as."""
    if isinstance(value, bool):
        return ResourceType.BOOLEAN
    if isinstance(value, int):
        return ResourceType.INTEGER
    if isinstance(value, float):
        return ResourceType.FLOAT
    if isinstance(value, str):
        return ResourceType.STRING
    if isinstance(value, bytes):
        return ResourceType.OPAQUE
    if isinstance(value, ObjectLink):
        return ResourceType.OBJLNK
    raise TypeError(f"not an LwM2M value: {type(value).__name__}")


def check_value(value: object, rtype: ResourceType) -> Value:
    """Return ``value`` if it is a valid ``rtype`` value (an ``int`` is accepted for Float and returned as
    ``float``), else raise ``ValueError``. Strings are UTF-8 without NUL (ref. §3)."""
    if rtype is ResourceType.BOOLEAN:
        if isinstance(value, bool):
            return value
    elif rtype in (ResourceType.INTEGER, ResourceType.TIME):
        if isinstance(value, int) and not isinstance(value, bool):
            if not _INT64[0] <= value <= _INT64[1]:
                raise ValueError(f"{rtype.value} {value} does not fit in 64 bits")
            return value
    elif rtype is ResourceType.UNSIGNED:
        if isinstance(value, int) and not isinstance(value, bool):
            if not _UINT64[0] <= value <= _UINT64[1]:
                raise ValueError(f"unsigned integer {value} out of 0..2^64-1")
            return value
    elif rtype is ResourceType.FLOAT:
        if isinstance(value, float):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            as_float = float(value)
            if not math.isfinite(as_float):
                raise ValueError(f"{value} does not fit in a double")
            return as_float
    elif rtype is ResourceType.STRING:
        if isinstance(value, str):
            if "\x00" in value:
                raise ValueError("LwM2M strings contain no NUL")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"string is not encodable as UTF-8: {exc}") from None
            return value
    elif rtype is ResourceType.OPAQUE:
        if isinstance(value, bytes):
            return value
    elif rtype is ResourceType.OBJLNK:
        if isinstance(value, ObjectLink):
            return value
    else:
        raise ValueError("executable resources carry no value")
    raise ValueError(f"expected a {rtype.value} value, got {type(value).__name__}")
