"""Load test vectors from tests/vectors/ (provenance in tests/vectors/README.md)."""

from __future__ import annotations

from pathlib import Path

VECTORS = Path(__file__).parent / "vectors"


def vector_hex(relpath: str) -> bytes:
    """The bytes of a ``*.hex`` vector file (whitespace ignored)."""
    return bytes.fromhex("".join((VECTORS / relpath).read_text().split()))
