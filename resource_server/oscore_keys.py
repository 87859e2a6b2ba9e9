"""The keys of an OSCORE security context from one HKDF-Extract: RFC 8613 §3.2.1 over RFC 5869.

RFC 8613 §3.2.1 derives the Sender Key, the Recipient Key and the Common IV as ``HKDF(salt=Master Salt,
IKM=Master Secret, info, L)`` with ``info = [id, id_context, alg_aead, type, L]``. HKDF is Extract then Expand
(RFC 5869 §2), and the Extract step, ``PRK = HMAC-Hash(Master Salt, Master Secret)``, is the same for all three, so
:func:`derive_keys` computes it once and runs only the three Expand steps (each a single HMAC block: every key and
IV is shorter than the hash). :meth:`ace_core.oscore.OscoreContextParameters.sender_key` and its siblings run a
full HKDF each; the results are equal byte for byte (``tests/resource_server/test_oscore_keys.py`` checks the RFC
8613 Appendix C vectors and every algorithm pair against :mod:`ace_core.oscore`).

The resource server derives a context for every token upload (RFC 9203 §4.3), so this is on its hot path.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from ace_core import cbor
from ace_core.oscore import AEAD_PARAMETERS, OscoreContextParameters
from ace_core.registry import CoseAlgorithm

__all__ = ["ContextKeys", "derive_keys"]

#: The HKDF hash functions an OSCORE context may use (RFC 9203 §3.2.1 ``hkdf``; RFC 9053 §3.1) and their output
#: lengths. hashlib's constructors, not names: ``hmac.digest`` then skips looking the name up on every call.
_DIGESTS: Mapping[int, tuple[Callable[..., Any], int]] = {
    CoseAlgorithm.HMAC_256_256: (hashlib.sha256, 32),
    CoseAlgorithm.HMAC_384_384: (hashlib.sha384, 48),
    CoseAlgorithm.HMAC_512_512: (hashlib.sha512, 64),
}

#: Fixed parts of the HKDF ``info`` array (RFC 8613 §3.2.1): its head, a null ID Context, the two type strings.
_ARRAY_OF_5 = cbor.head(4, 5)
_NULL = cbor.dumps(None)
_KEY = cbor.tstr("Key")
_IV = cbor.tstr("IV")


class ContextKeys(NamedTuple):
    """The key material of one endpoint of an OSCORE context (RFC 8613 §3.2.1)."""

    sender_key: bytes
    recipient_key: bytes
    common_iv: bytes


def derive_keys(params: OscoreContextParameters) -> ContextKeys:
    """Sender Key, Recipient Key and Common IV of ``params`` with a single HKDF-Extract (module docstring).

    :raises ValueError: an AEAD or HKDF algorithm OSCORE cannot use.
    """
    try:
        key_len, nonce_len = AEAD_PARAMETERS[params.aead_alg]
        digest, hash_len = _DIGESTS[params.hkdf_alg]
    except KeyError:
        raise ValueError(f"unsupported OSCORE algorithms alg={params.aead_alg} hkdf={params.hkdf_alg}") from None
    # RFC 5869 §2.2: an absent salt is HashLen zero bytes, which HMAC pads to the same key as the empty string.
    prk = hmac.digest(params.master_salt or bytes(hash_len), params.master_secret, digest)
    # info = [id, id_context, alg_aead, type, L] (RFC 8613 §3.2.1): an array's encoding is its head followed by
    # its items' encodings, so only the id differs between the three; the rest is encoded once.
    context = _NULL if params.id_context is None else cbor.bstr(params.id_context)
    alg = cbor.dumps(int(params.aead_alg))

    def expand(id_: bytes, kind: bytes, length: int) -> bytes:
        info = _ARRAY_OF_5 + cbor.bstr(id_) + context + alg + kind + cbor.head(0, length)
        okm = b""
        block = b""
        counter = 1
        while len(okm) < length:  # RFC 5869 §2.3; one round for every OSCORE key and IV
            block = hmac.digest(prk, block + info + bytes((counter,)), digest)
            okm += block
            counter += 1
        return okm[:length]

    return ContextKeys(
        expand(params.sender_id, _KEY, key_len),
        expand(params.recipient_id, _KEY, key_len),
        expand(b"", _IV, nonce_len),
    )
