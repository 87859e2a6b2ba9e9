"""CBOR encoding and hardened decoding around cbor2 (RFC 8949).

Every decoding failure of any kind -- truncated input, trailing bytes, invalid UTF-8, unsupported tags, deep
nesting, cbor2 internals -- surfaces as :class:`~ace_core.errors.WireFormatError`; payloads over ``max_size``
are refused with :class:`~ace_core.errors.PayloadTooLarge` before a single byte is parsed.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import cbor2

from ace_core.errors import PayloadTooLarge, WireFormatError

__all__ = ["DEFAULT_MAX_SIZE", "CBORTag", "dumps", "loads"]

#: Default upper bound on the size of a CBOR payload accepted from the network (bytes). Large enough for any
#: ACE message with a signed token; small enough that a constrained peer cannot be made to allocate much.
DEFAULT_MAX_SIZE = 8192

CBORTag = cbor2.CBORTag


def dumps(obj: Any) -> bytes:
    """Encode ``obj`` as CBOR. Maps keep the insertion order the caller chose (messages insert ascending keys)."""
    return cbor2.dumps(obj)


def _no_tags(decoder: Any, tag: cbor2.CBORTag) -> Any:
    # Unknown semantic tags are returned as CBORTag; known ones that cbor2 would interpret (datetime, bignum,
    # regex, ...) are rejected in loads() because ACE never uses them on the wire.
    return tag


def loads(
    data: bytes,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    tag_hook: Callable[[Any, cbor2.CBORTag], Any] | None = None,
) -> Any:
    """Decode exactly one CBOR data item that fills ``data`` completely.

    :param max_size: refuse larger payloads before parsing (:class:`PayloadTooLarge`).
    :raises WireFormatError: for any malformed input, trailing bytes included.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireFormatError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise PayloadTooLarge(f"payload of {len(data)} bytes exceeds the limit of {max_size}")
    if not data:
        raise WireFormatError("empty payload")
    fp = io.BytesIO(data)
    try:
        decoder = cbor2.CBORDecoder(fp, tag_hook=tag_hook or _no_tags)
        obj = decoder.decode()
    except RecursionError as exc:
        raise WireFormatError("CBOR nesting too deep") from exc
    except (
        cbor2.CBORDecodeError,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        OverflowError,
        AttributeError,
        MemoryError,
        EOFError,
    ) as exc:
        raise WireFormatError(f"malformed CBOR: {exc}") from exc
    if fp.tell() != len(data):
        raise WireFormatError(f"{len(data) - fp.tell()} trailing bytes after the CBOR item")
    return obj
