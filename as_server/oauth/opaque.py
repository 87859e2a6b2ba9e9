"""Opaque one-time values the AS hands to apps: authorization codes and refresh tokens (RFC 6749 §4.1.2, §1.5).

Each is 256 random bits (RFC 6749 §10.10: "the probability of an attacker guessing generated tokens ... MUST be
less than or equal to 2^(-128) and SHOULD be less than or equal to 2^(-160)"), travels as base64url without padding
(43 characters: what the ``code`` of a redirect and the JSON ``refresh_token`` carry, and what
:class:`ace_core.messages.TokenRequest` decodes back to the 32 bytes), and is stored only as its SHA-256. A slow
hash would add nothing to 256 random bits, and the lookup by hash needs a deterministic one.

>>> value, digest = new_opaque()
>>> len(value), digest == opaque_hash(value), len(b64url_encode(value))
(32, True, 43)
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Final

from ace_core.keys import b64url_encode

__all__ = ["OPAQUE_LENGTH", "b64url_encode", "new_family_id", "new_opaque", "opaque_hash"]

#: Bytes of randomness in a code or refresh token.
OPAQUE_LENGTH: Final = 32
#: Bytes of randomness in a refresh-token family id (it is an identifier, not a credential).
FAMILY_ID_LENGTH: Final = 16
_CONTEXT: Final = b"ostiary opaque value\x00"


def opaque_hash(value: bytes) -> bytes:
    """The stored form of a code or refresh token: SHA-256 over a context string and the value."""
    return hashlib.sha256(_CONTEXT + value).digest()


def new_opaque() -> tuple[bytes, bytes]:
    """A new value and its :func:`opaque_hash`."""
    value = secrets.token_bytes(OPAQUE_LENGTH)
    return value, opaque_hash(value)


def new_family_id() -> str:
    """A new refresh-token family id (base64url, 22 characters)."""
    return b64url_encode(secrets.token_bytes(FAMILY_ID_LENGTH))
