"""CBOR encoding and hardened decoding around cbor2 (RFC 8949).

Every decoding failure of any kind -- truncated input, trailing bytes, invalid UTF-8, unsupported tags, deep
nesting, cbor2 internals -- surfaces as :class:`~ace_core.errors.WireFormatError`; payloads over ``max_size``
are refused with :class:`~ace_core.errors.PayloadTooLarge` before a single byte is parsed.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from typing import Any

import cbor2

from ace_core.errors import PayloadTooLarge, WireFormatError

__all__ = ["DEFAULT_MAX_SIZE", "CBORTag", "bstr", "dumps", "head", "loads", "tstr"]

#: Default upper bound on the size of a CBOR payload accepted from the network (bytes). Large enough for any
#: ACE message with a signed token; small enough that a constrained peer cannot be made to allocate much.
DEFAULT_MAX_SIZE = 8192

CBORTag = cbor2.CBORTag


_local = threading.local()


def dumps(obj: Any) -> bytes:
    """Encode ``obj`` as CBOR. Maps keep the insertion order the caller chose (messages insert ascending keys).

    The encoder object is reused per thread: creating one costs more than encoding a whole claims set.
    """
    encoder = getattr(_local, "encoder", None)
    if encoder is None:
        encoder = _local.encoder = cbor2.CBOREncoder(io.BytesIO())
    fp = io.BytesIO()
    encoder.fp = fp
    try:
        encoder.encode(obj)
    except BaseException:
        _local.encoder = None  # never reuse an encoder left mid-structure by an error
        raise
    return fp.getvalue()


def head(major: int, argument: int) -> bytes:
    """The initial byte(s) of a data item (RFC 8949 §3): major type and argument, in preferred (shortest) form."""
    if argument < 24:
        return bytes((major << 5 | argument,))
    if argument < 0x100:
        return bytes((major << 5 | 24, argument))
    if argument < 0x10000:
        return bytes((major << 5 | 25,)) + argument.to_bytes(2, "big")
    if argument < 0x100000000:
        return bytes((major << 5 | 26,)) + argument.to_bytes(4, "big")
    return bytes((major << 5 | 27,)) + argument.to_bytes(8, "big")


def bstr(data: bytes) -> bytes:
    """``data`` encoded as a CBOR byte string. Used to assemble fixed COSE structures without an encoder object
    (cbor2 builds a new encoder per ``dumps`` call, which costs more than the bytes it writes)."""
    n = len(data)
    return (bytes((0x40 | n,)) if n < 24 else head(2, n)) + data


def tstr(text: str) -> bytes:
    """``text`` encoded as a CBOR text string."""
    data = text.encode()
    return head(3, len(data)) + data


def _no_tags(decoder: Any, tag: cbor2.CBORTag) -> Any:
    # Tags cbor2 does not interpret itself come back as CBORTag objects. Tags it does interpret (datetime,
    # bignum, ...) come back as Python objects; the message codecs type-check every field, so such values are
    # refused where ACE expects something else (e.g. a tag-1 datetime where RFC 8392 §2 wants a plain number).
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
