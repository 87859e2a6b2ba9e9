"""Helpers around issued access tokens: the RFC 9770 token hash and the JSON form of a stored scope.

>>> value = token_hash(bytes.fromhex("d83dd08343a1010aa04100"))
>>> len(value), value[0]
(33, 1)
"""

from __future__ import annotations

import hashlib

from ace_core.keys import b64url_encode
from ace_core.registry import NI_SUITE_SHA_256
from ace_core.scope import AifScope

__all__ = ["json_scope", "token_hash"]

#: RFC 6920 §6 binary format: the first byte holds 2 reserved bits (zero) and the 6-bit Suite ID.
_SHA_256_PREFIX = bytes((NI_SUITE_SHA_256,))


def token_hash(token: bytes) -> bytes:
    """The token hash of an access token issued in a CBOR response. RFC 9770 §4.2.1, RFC 6920 §6.

    ``HASH_INPUT`` is the UTF-8 encoding of ``base64url(token)`` without padding, hashed with SHA-256 (the
    mandatory-to-implement function, RFC 9770 §4), and the result is in the RFC 6920 §6 binary format:
    ``0x01 || SHA-256(HASH_INPUT)`` (33 bytes; Suite ID 1 = sha-256, RFC 6920 §9.4).

    The AS hashes the bytes of the ``access_token`` value, which are also what an RS receives at
    ``/authz-info`` (RFC 9770 §4.3.1), so the AS, the RS and the token revocation list agree on the hash.
    """
    return _SHA_256_PREFIX + hashlib.sha256(b64url_encode(token).encode("ascii")).digest()


def json_scope(scope: str | bytes) -> str:
    """The JSON (HTTP) form of a ``scope`` value that may be a CBOR byte string.

    Endpoints return the scope as it is carried in CBOR: a text scope as ``str``, an AIF scope (RFC 9237) as the
    ``application/aif+cbor`` byte string (see :mod:`ace_core.scope`). JSON cannot carry bytes (RFC 6749 §3.3), so
    the HTTP transport sends an AIF scope as ``application/aif+json`` text, which this function produces.

    :raises WireFormatError: ``scope`` is bytes that are not AIF.
    """
    if isinstance(scope, bytes):
        return AifScope.from_cbor(scope).to_json_text()
    return scope
