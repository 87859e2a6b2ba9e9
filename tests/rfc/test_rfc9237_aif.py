"""RFC 9237 (AIF) example given with the AIF-REST definition (§3): JSON and CBOR forms.

Vectors: ``tests/vectors/rfc9237/`` (provenance in ``tests/vectors/README.md``).
"""

from __future__ import annotations

import json

from ace_core.registry import AifMethod
from ace_core.scope import AifScope, decode_scope
from tests.vectors_loader import VECTORS, vector_hex

# Built from registry names, not from the vector: GET on /s/temp, GET+PUT on /a/led, POST on /dtls.
RFC9237_EXAMPLE = AifScope(
    [
        ("/s/temp", AifMethod.GET),
        ("/a/led", AifMethod.GET | AifMethod.PUT),
        ("/dtls", AifMethod.POST),
    ]
)


def assert_cbor_roundtrip(obj: AifScope, vector: bytes) -> None:
    """encode(obj) == vector byte for byte, and decode(vector) == obj (STYLE §3.4, dcaf-rs ``expect_ser_de``)."""
    assert obj.to_cbor() == vector
    assert AifScope.from_cbor(vector) == obj


def test_rfc9237_example_cbor() -> None:
    vector = vector_hex("rfc9237/aif_example.cbor.hex")
    assert len(vector) == 28  # "CBOR (28 bytes)"
    assert_cbor_roundtrip(RFC9237_EXAMPLE, vector)
    # Order of first appearance is kept (the example is not sorted), so the decoded scope re-encodes as is.
    decoded = AifScope.from_cbor(vector)
    assert decoded.paths() == ("/s/temp", "/a/led", "/dtls")
    assert decoded.to_cbor() == vector
    # As a byte-string ``scope`` value (our design choice for carrying AIF in ACE).
    assert decode_scope(vector) == RFC9237_EXAMPLE
    assert RFC9237_EXAMPLE.encode_cbor_value() == vector


def test_rfc9237_example_json() -> None:
    text = (VECTORS / "rfc9237" / "aif_example.json").read_text().strip()
    assert AifScope.from_json(json.loads(text)) == RFC9237_EXAMPLE
    assert AifScope.from_json_text(text) == RFC9237_EXAMPLE
    assert RFC9237_EXAMPLE.to_json() == json.loads(text)
    assert RFC9237_EXAMPLE.to_json_text() == text
    assert decode_scope(text, aif=True) == RFC9237_EXAMPLE


def test_rfc9237_example_permissions() -> None:
    scope = RFC9237_EXAMPLE
    assert scope.permits(AifMethod.GET, "/s/temp")
    assert not scope.permits(AifMethod.PUT, "/s/temp")
    assert scope.permits("PUT", "/a/led") and scope.permits("GET", "/a/led")
    assert scope.permits(AifMethod.POST, "/dtls") and not scope.permits(AifMethod.GET, "/dtls")
