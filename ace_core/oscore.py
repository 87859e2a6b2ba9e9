"""The OSCORE profile's security-context derivation (RFC 9203 §4.3 over RFC 8613 §3.2), shared by the client SDK
and the resource-server library. Sans-IO: plain bytes in, plain bytes out; installing the context in a CoAP stack
is the transports' business.

**Master Salt** (RFC 9203 §4.3): the concatenation of the CBOR byte-string encodings of ``salt``, ``nonce1`` and
``nonce2`` (in JSON, each value prefixed by a one-byte length instead). RFC 9203 leaves open what to do when the
OSCORE_Input_Material carries no ``salt``; Ostiary encodes the absent salt as the empty byte string (``0x40``),
because RFC 8613 §3.2 makes the empty byte string the default Master Salt. A peer that omits the item instead
derives other keys, and the first protected request fails to decrypt: loudly, never silently.

**Keys** (RFC 8613 §3.2.1): ``HKDF(salt=Master Salt, IKM=Master Secret, info, L)`` with
``info = [id, id_context, alg_aead, type, L]``; Sender/Recipient Key use the Sender/Recipient ID, the Common IV an
empty ``id``.

**Roles** (RFC 9203 §4.3): the client's Sender ID is ``ace_server_recipientid`` (ID2) and its Recipient ID is
``ace_client_recipientid`` (ID1); the resource server's are the reverse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ace_core import cbor
from ace_core.pop import OscoreMaterial
from ace_core.registry import CoseAlgorithm

__all__ = [
    "DEFAULT_AEAD",
    "DEFAULT_HKDF",
    "OscoreContextParameters",
    "Role",
    "SaltEncoding",
    "context_parameters",
    "derive_key",
    "master_salt",
]

#: RFC 8613 §3.2 defaults: AES-CCM-16-64-128 and HKDF SHA-256 (COSE "HMAC 256/256", RFC 9203 §3.2.1 ``hkdf``).
DEFAULT_AEAD = CoseAlgorithm.AES_CCM_16_64_128
DEFAULT_HKDF = CoseAlgorithm.HMAC_256_256
OSCORE_VERSION = 1

#: (key length, nonce length) of the AEAD algorithms an OSCORE context may use (RFC 9053 §4.1, §4.2).
AEAD_PARAMETERS: Mapping[int, tuple[int, int]] = {
    CoseAlgorithm.AES_CCM_16_64_128: (16, 13),
    CoseAlgorithm.AES_CCM_16_64_256: (32, 13),
    CoseAlgorithm.AES_CCM_64_64_128: (16, 7),
    CoseAlgorithm.AES_CCM_64_64_256: (32, 7),
    CoseAlgorithm.A128GCM: (16, 12),
    CoseAlgorithm.A256GCM: (32, 12),
}
_HASHES: Mapping[int, type[hashes.HashAlgorithm]] = {
    CoseAlgorithm.HMAC_256_256: hashes.SHA256,
    CoseAlgorithm.HMAC_384_384: hashes.SHA384,
    CoseAlgorithm.HMAC_512_512: hashes.SHA512,
}


class Role(StrEnum):
    """Which end of the OSCORE association derives the context."""

    CLIENT = "client"
    SERVER = "server"


class SaltEncoding(StrEnum):
    """How the Master Salt items are framed (RFC 9203 §4.3): CBOR byte strings, or JSON-style length prefixes."""

    CBOR = "cbor"
    JSON = "json"


def master_salt(
    salt: bytes | None, nonce1: bytes, nonce2: bytes, *, encoding: SaltEncoding = SaltEncoding.CBOR
) -> bytes:
    """The Master Salt: ``bstr(salt) | bstr(N1) | bstr(N2)`` (RFC 9203 §4.3); an absent salt is the empty bstr.

    >>> master_salt(bytes.fromhex("f9af838368e353e78888e1426bd94e6f"), bytes.fromhex("018a278f7faab55a"),
    ...             bytes.fromhex("25a8991cd700ac01")).hex()
    '50f9af838368e353e78888e1426bd94e6f48018a278f7faab55a4825a8991cd700ac01'
    """
    items = (salt or b"", nonce1, nonce2)
    if encoding is SaltEncoding.CBOR:
        return b"".join(cbor.bstr(item) for item in items)
    if any(len(item) > 255 for item in items):
        raise ValueError("JSON-style Master Salt items are at most 255 bytes")
    return b"".join(bytes((len(item),)) + item for item in items)


@dataclass(frozen=True, slots=True, kw_only=True)
class OscoreContextParameters:
    """Everything an OSCORE implementation needs to build a security context (RFC 8613 §3.2).

    ``master_secret`` is excluded from ``repr``.
    """

    master_secret: bytes = field(repr=False)
    master_salt: bytes
    sender_id: bytes
    recipient_id: bytes
    id_context: bytes | None = None
    aead_alg: int = DEFAULT_AEAD
    hkdf_alg: int = DEFAULT_HKDF
    version: int = OSCORE_VERSION

    def sender_key(self) -> bytes:
        """RFC 8613 §3.2.1 Sender Key."""
        return derive_key(self, self.sender_id, "Key")

    def recipient_key(self) -> bytes:
        """RFC 8613 §3.2.1 Recipient Key."""
        return derive_key(self, self.recipient_id, "Key")

    def common_iv(self) -> bytes:
        """RFC 8613 §3.2.1 Common IV."""
        return derive_key(self, b"", "IV")


def derive_key(params: OscoreContextParameters, id_: bytes, kind: str) -> bytes:
    """``HKDF(Master Salt, Master Secret, info, L)`` with ``info = [id, id_context, alg_aead, type, L]``."""
    key_len, nonce_len = AEAD_PARAMETERS[params.aead_alg]
    length = key_len if kind == "Key" else nonce_len
    info = cbor.dumps([id_, params.id_context, int(params.aead_alg), kind, length])
    hash_cls = _HASHES[params.hkdf_alg]
    return HKDF(algorithm=hash_cls(), length=length, salt=params.master_salt, info=info).derive(params.master_secret)


def context_parameters(
    material: OscoreMaterial,
    *,
    nonce1: bytes,
    nonce2: bytes,
    client_recipient_id: bytes,
    server_recipient_id: bytes,
    role: Role,
    salt_encoding: SaltEncoding = SaltEncoding.CBOR,
) -> OscoreContextParameters:
    """The context of ``role`` from the token's OSCORE_Input_Material and the authz-info exchange (RFC 9203 §4.3).

    :raises ValueError: missing master secret, equal recipient ids (RFC 9203 §4.2: ID2 MUST differ from ID1),
        or an algorithm this module cannot derive keys for.
    """
    if not material.ms:
        raise ValueError("OSCORE_Input_Material without a master secret (ms)")
    if client_recipient_id == server_recipient_id:
        raise ValueError("the client and server recipient ids are equal (RFC 9203 §4.2)")
    aead = material.alg if material.alg is not None else DEFAULT_AEAD
    hkdf = material.hkdf if material.hkdf is not None else DEFAULT_HKDF
    if aead not in AEAD_PARAMETERS or hkdf not in _HASHES:
        raise ValueError(f"unsupported OSCORE algorithms alg={aead!r} hkdf={hkdf!r}")
    if material.version not in (None, OSCORE_VERSION):
        raise ValueError(f"unsupported OSCORE version {material.version}")
    client = role is Role.CLIENT
    return OscoreContextParameters(
        master_secret=material.ms,
        master_salt=master_salt(material.salt, nonce1, nonce2, encoding=salt_encoding),
        sender_id=server_recipient_id if client else client_recipient_id,
        recipient_id=client_recipient_id if client else server_recipient_id,
        id_context=material.context_id,
        aead_alg=int(aead),
        hkdf_alg=int(hkdf),
    )
