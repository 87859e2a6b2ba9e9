"""Shared test helpers (STYLE §3.4)."""

from __future__ import annotations

from typing import Any


def assert_cbor_roundtrip(obj: Any, hex_: str) -> None:
    """``obj`` encodes to the vector byte for byte, and the vector decodes to ``obj`` (dcaf-rs ``expect_ser_de``).

    :param obj: a message with ``to_cbor()`` and a classmethod ``from_cbor(data)``.
    :param hex_: the expected bytes as hex; whitespace (as in RFC figures and vector files) is ignored.
    """
    vector = bytes.fromhex("".join(hex_.split()))
    assert obj.to_cbor().hex() == vector.hex()
    assert type(obj).from_cbor(vector) == obj


def assert_cbor_structure(obj: Any, expected: dict[Any, Any]) -> None:
    """``obj`` encodes to a CBOR map equal to ``expected``, and ``expected`` decodes back to ``obj``.

    For RFC examples given only in diagnostic notation (or with elided bytes): this checks the decoded structure
    of our encoding, never bytes we computed ourselves (STYLE §3.6 rule 8).
    """
    from ace_core import cbor

    assert cbor.loads(obj.to_cbor()) == expected
    assert type(obj).from_cbor_map(expected) == obj
