"""COSE_Sign1, COSE_Mac0 and COSE_Encrypt0 (RFC 9052 §4.2, §6.2, §5.2) for CWTs -- the only module that imports
pycose.

Algorithms are dispatched through pycose's algorithm registry (``CoseAlgorithm.from_id``), into which this module
registers ``cryptography``-backed implementations at import time:

* **ES256 / ES384**: pycose 1.1.0 signs and verifies ECDSA with the pure-Python ``ecdsa`` package, which is not
  protected against side channels and is ~40x slower. Ours use ``cryptography`` (OpenSSL) only.
* **EdDSA**: reuses the ``cryptography`` key object held by :class:`~ace_core.keys.CoseKey` instead of re-parsing
  the key on every call (that re-parse costs as much as the signature itself).
* **HMAC**: pycose compares tags with ``==``; ours compare in constant time (``hmac.compare_digest``).

AES-CCM and AES-GCM (RFC 9053 §4) bypass the registry: ``encrypt0`` and ``verify`` call ``cryptography``'s
``AESCCM``/``AESGCM`` with one cipher object per key, kept in a small cache, since building one per call (as
pycose does) costs as much as decrypting a token.

Any code that uses pycose's message classes in this process therefore gets the same implementations.

The message framing (``Sig_structure``, ``MAC_structure``, ``Enc_structure``) is built here directly with cbor2:
pycose's ``Sign1Message`` spends ~50 us per message on header bookkeeping, more than an Ed25519 signature, which
would cap token issuance far below the primitive rate (measured by ``benchmarks/bench_cose.py``). The framing is
cross-checked against pycose and python-cwt in the test suite, in both directions.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM
from pycose import algorithms as _pycose_algorithms

from ace_core import cbor
from ace_core.errors import SecurityWrapperFailed, TokenMalformed, WireFormatError
from ace_core.keys import SYMMETRIC_KEY_LENGTH, CoseKey
from ace_core.registry import CoseAlgorithm, CoseCurve, CoseHeader, CoseKeyOp, CoseTag

__all__ = [
    "CoseObject",
    "KeyResolver",
    "KeySet",
    "algorithm_implementation",
    "decode",
    "encrypt0",
    "mac0",
    "sign1",
    "verify",
]

_PycoseAlgorithm: Any = _pycose_algorithms.CoseAlgorithm

# --------------------------------------------------------------------------------------------------------------
# cryptography-backed algorithms, registered in pycose's registry
# --------------------------------------------------------------------------------------------------------------


def _ec_private(key: Any, curve: type[ec.EllipticCurve]) -> ec.EllipticCurvePrivateKey:
    if isinstance(key, CoseKey):
        sk = key.signing_key()
        if not isinstance(sk, ec.EllipticCurvePrivateKey):
            raise ValueError("not an EC2 key")
        return sk
    return ec.derive_private_key(int.from_bytes(key.d, "big"), curve())  # a pycose EC2Key


def _ec_public(key: Any, curve: type[ec.EllipticCurve]) -> ec.EllipticCurvePublicKey:
    if isinstance(key, CoseKey):
        pk = key.verifying_key()
        if not isinstance(pk, ec.EllipticCurvePublicKey):
            raise ValueError("not an EC2 key")
        return pk
    numbers = ec.EllipticCurvePublicNumbers(int.from_bytes(key.x, "big"), int.from_bytes(key.y, "big"), curve())
    return numbers.public_key()


class _CryptographyEcdsa:
    """ECDSA over ``cryptography``; COSE signatures are the fixed-size ``r || s`` (RFC 9053 §2.1)."""

    curve: type[ec.EllipticCurve]
    signature_algorithm: ec.ECDSA
    size: int

    @classmethod
    def sign(cls, key: Any, data: bytes) -> bytes:
        der = _ec_private(key, cls.curve).sign(data, cls.signature_algorithm)
        r, s = decode_dss_signature(der)
        return r.to_bytes(cls.size, "big") + s.to_bytes(cls.size, "big")

    @classmethod
    def verify(cls, key: Any, data: bytes, signature: bytes) -> bool:
        if len(signature) != 2 * cls.size:
            return False
        der = encode_dss_signature(
            int.from_bytes(signature[: cls.size], "big"), int.from_bytes(signature[cls.size :], "big")
        )
        try:
            _ec_public(key, cls.curve).verify(der, data, cls.signature_algorithm)
        except InvalidSignature:
            return False
        return True


@_PycoseAlgorithm.register_attribute()
class Es256(_CryptographyEcdsa, _pycose_algorithms.Es256):
    """ES256 (ECDSA w/ SHA-256, P-256) via ``cryptography``. RFC 9053 §2.1."""

    curve = ec.SECP256R1
    signature_algorithm = ec.ECDSA(hashes.SHA256())
    size = 32


@_PycoseAlgorithm.register_attribute()
class Es384(_CryptographyEcdsa, _pycose_algorithms.Es384):
    """ES384 (ECDSA w/ SHA-384, P-384) via ``cryptography``. RFC 9053 §2.1."""

    curve = ec.SECP384R1
    signature_algorithm = ec.ECDSA(hashes.SHA384())
    size = 48


@_PycoseAlgorithm.register_attribute()
class EdDSA(_pycose_algorithms.EdDSA):
    """EdDSA with Ed25519 via ``cryptography``, reusing the key object of a CoseKey. RFC 9053 §2.2."""

    @classmethod
    def sign(cls, key: Any, data: bytes) -> bytes:
        if isinstance(key, CoseKey):
            sk = key.signing_key()
            if not isinstance(sk, ed25519.Ed25519PrivateKey):
                raise ValueError("not an Ed25519 key")
            return sk.sign(data)
        return bytes(super().sign(key, data))

    @classmethod
    def verify(cls, key: Any, data: bytes, signature: bytes) -> bool:
        if isinstance(key, CoseKey):
            pk = key.verifying_key()
            if not isinstance(pk, ed25519.Ed25519PublicKey):
                raise ValueError("not an Ed25519 key")
            try:
                pk.verify(signature, data)
            except InvalidSignature:
                return False
            return True
        return bool(super().verify(key, data, signature))


class _ConstantTimeHmac:
    """HMAC whose tag check is constant-time. RFC 9053 §3.1."""

    @classmethod
    def compute_tag(cls, key: Any, data: bytes) -> bytes:
        h = crypto_hmac.HMAC(key.k, cls.get_hash_func())  # type: ignore[attr-defined]
        h.update(data)
        return h.finalize()[: cls.get_digest_length()]  # type: ignore[attr-defined]

    @classmethod
    def verify_tag(cls, key: Any, tag: bytes, data: bytes) -> bool:
        return hmac.compare_digest(cls.compute_tag(key, data), tag)


@_PycoseAlgorithm.register_attribute()
class HMAC25664(_ConstantTimeHmac, _pycose_algorithms.HMAC25664):
    """HMAC 256/64 with constant-time verification."""


@_PycoseAlgorithm.register_attribute()
class HMAC256(_ConstantTimeHmac, _pycose_algorithms.HMAC256):
    """HMAC 256/256 with constant-time verification."""


@_PycoseAlgorithm.register_attribute()
class HMAC384(_ConstantTimeHmac, _pycose_algorithms.HMAC384):
    """HMAC 384/384 with constant-time verification."""


@_PycoseAlgorithm.register_attribute()
class HMAC512(_ConstantTimeHmac, _pycose_algorithms.HMAC512):
    """HMAC 512/512 with constant-time verification."""


def algorithm_implementation(alg: int) -> Any:
    """The implementation pycose's registry holds for ``alg`` (ours for ECDSA, EdDSA and HMAC)."""
    return _PycoseAlgorithm.from_id(alg)


_SIGNATURE_ALGS = frozenset({CoseAlgorithm.ES256, CoseAlgorithm.ES384, CoseAlgorithm.EDDSA})
_MAC_ALGS = frozenset(
    {
        CoseAlgorithm.HMAC_256_64,
        CoseAlgorithm.HMAC_256_256,
        CoseAlgorithm.HMAC_384_384,
        CoseAlgorithm.HMAC_512_512,
    }
)
#: AEAD nonce length per algorithm (RFC 9053 §4.1 GCM: 12; §4.2 CCM-16-*: 13, CCM-64-*: 7).
_AEAD_NONCE_LENGTH: Mapping[CoseAlgorithm, int] = {
    CoseAlgorithm.A128GCM: 12,
    CoseAlgorithm.A192GCM: 12,
    CoseAlgorithm.A256GCM: 12,
    CoseAlgorithm.AES_CCM_16_64_128: 13,
    CoseAlgorithm.AES_CCM_16_64_256: 13,
    CoseAlgorithm.AES_CCM_64_64_128: 7,
    CoseAlgorithm.AES_CCM_64_64_256: 7,
}
#: AEAD tag length per algorithm (RFC 9053 §4.1: GCM 128-bit tags; §4.2: the CCM-*-64-* variants have 64-bit tags).
_AEAD_TAG_LENGTH: Mapping[int, int] = {
    CoseAlgorithm.A128GCM: 16,
    CoseAlgorithm.A192GCM: 16,
    CoseAlgorithm.A256GCM: 16,
    CoseAlgorithm.AES_CCM_16_64_128: 8,
    CoseAlgorithm.AES_CCM_16_64_256: 8,
    CoseAlgorithm.AES_CCM_64_64_128: 8,
    CoseAlgorithm.AES_CCM_64_64_256: 8,
}
#: The same nonce lengths keyed by plain ``int``, for lookups with the ``alg`` of a decoded header.
_AEAD_NONCE_BY_INT: Mapping[int, int] = {int(alg): n for alg, n in _AEAD_NONCE_LENGTH.items()}
_CURVE_FOR_ALG = {
    CoseAlgorithm.ES256: CoseCurve.P_256,
    CoseAlgorithm.ES384: CoseCurve.P_384,
    CoseAlgorithm.EDDSA: CoseCurve.ED25519,
}
_KNOWN_HEADERS = frozenset(int(h) for h in CoseHeader)
# The same tables keyed by plain ``int``: a decoded header's alg is one, and converting it to the enum costs more.
_CURVE_BY_INT: Mapping[int, CoseCurve] = {int(alg): crv for alg, crv in _CURVE_FOR_ALG.items()}
_KEY_LENGTH_BY_INT: Mapping[int, int] = {int(alg): n for alg, n in SYMMETRIC_KEY_LENGTH.items()}

# --------------------------------------------------------------------------------------------------------------
# keys
# --------------------------------------------------------------------------------------------------------------


class KeyResolver(Protocol):
    """Finds candidate keys for a COSE object by ``kid`` (may be ``None``) and algorithm."""

    def resolve(self, kid: bytes | None, alg: int) -> Iterable[CoseKey]:
        """Candidate keys; each is tried in turn until one verifies."""
        ...


@dataclass(frozen=True, slots=True)
class KeySet:
    """A :class:`KeyResolver` over a fixed set of keys, indexed by ``kid``.

    Objects without a ``kid`` are tried against every key usable with their algorithm.
    """

    keys: Sequence[CoseKey]
    _by_kid: dict[bytes, list[CoseKey]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[bytes, list[CoseKey]] = {}
        for key in self.keys:
            if key.kid is not None:
                index.setdefault(key.kid, []).append(key)
        object.__setattr__(self, "_by_kid", index)

    def resolve(self, kid: bytes | None, alg: int) -> Iterable[CoseKey]:
        """Keys with this ``kid`` (or all keys when the object names none) that may be used with ``alg``."""
        candidates = self.keys if kid is None else self._by_kid.get(kid, ())
        return [k for k in candidates if _usable(k, alg)]  # usually one key: cheaper than a cache lookup


def _usable(key: CoseKey, alg: int) -> bool:
    # RFC 9052 §7.1: when a key carries "alg", it MUST only be used with that algorithm.
    if key.alg is not None and key.alg != alg:
        return False
    if alg in _SIGNATURE_ALGS:
        return not key.is_symmetric and key.crv == _CURVE_BY_INT[alg]
    length = _KEY_LENGTH_BY_INT.get(alg)
    if length is None or not key.is_symmetric:
        return False
    if alg in _AEAD_NONCE_BY_INT:
        return len(key.secret()) == length
    return len(key.secret()) >= 16  # HMAC keys: any length; refuse toy keys


#: ``cryptography`` AEAD objects per (algorithm, key bytes). Creating one costs about as much as decrypting a whole
#: token; a resource server uses the same AS key for every token. Bounded: emptied when full.
_AEAD_CACHE: dict[tuple[int, bytes], AESCCM | AESGCM] = {}
_AEAD_CACHE_SIZE = 64


def _aead(key: CoseKey, alg: int) -> AESCCM | AESGCM:
    """The AES-CCM/AES-GCM object for ``key`` under ``alg`` (RFC 9053 §4.1, §4.2); cached.

    :raises ValueError: not a symmetric key, or a key of the wrong size for ``alg``.
    """
    k = key.secret()
    cache_key = (alg, k)
    cipher = _AEAD_CACHE.get(cache_key)
    if cipher is None:
        tag_length = _AEAD_TAG_LENGTH[alg]
        if len(k) != _KEY_LENGTH_BY_INT[alg]:
            raise ValueError(f"a {len(k)}-byte key cannot be used with algorithm {alg}")
        cipher = AESGCM(k) if tag_length == 16 else AESCCM(k, tag_length=tag_length)
        if len(_AEAD_CACHE) >= _AEAD_CACHE_SIZE:
            _AEAD_CACHE.clear()  # atomic, unlike evicting one entry while another thread may insert
        _AEAD_CACHE[cache_key] = cipher
    return cipher


def _check_key_ops(key: CoseKey, op: CoseKeyOp) -> None:
    if key.key_ops is not None and op not in key.key_ops:
        raise ValueError(f"key_ops of this key do not allow {op.name}")


def _alg_for(key: CoseKey, alg: CoseAlgorithm | None, allowed: frozenset[CoseAlgorithm]) -> CoseAlgorithm:
    chosen = alg if alg is not None else key.alg
    if isinstance(chosen, CoseAlgorithm) and chosen in allowed and _usable(key, chosen):
        return chosen  # the common case, without re-deriving the enum member
    if chosen is None:
        raise ValueError("no algorithm: pass alg= or use a key that names its alg")
    if chosen not in allowed:
        raise ValueError(f"algorithm {chosen!r} cannot be used for this COSE structure")
    chosen = CoseAlgorithm(chosen)
    if not _usable(key, chosen):
        raise ValueError(f"key {key.kid!r} cannot be used with {chosen.name}")
    return chosen


# --------------------------------------------------------------------------------------------------------------
# creation
# --------------------------------------------------------------------------------------------------------------

# The fixed COSE structures are assembled from CBOR heads directly (RFC 9052 §4.4, §5.3, §6.3; RFC 8949 §3):
# they are small arrays of byte strings, and building them this way costs a fraction of a cbor2 encoder call.
# tests/property/test_cose_encoding.py checks the bytes against cbor2 for arbitrary inputs.
_SIG_CONTEXT = b"\x84" + cbor.tstr("Signature1")  # array(4), "Signature1"
_MAC_CONTEXT = b"\x84" + cbor.tstr("MAC0")  # array(4), "MAC0"
_ENC_CONTEXT = b"\x83" + cbor.tstr("Encrypt0")  # array(3), "Encrypt0"
_SIGN1_HEAD = cbor.head(6, CoseTag.SIGN1) + b"\x84"
_MAC0_HEAD = cbor.head(6, CoseTag.MAC0) + b"\x84"
_ENCRYPT0_HEAD = cbor.head(6, CoseTag.ENCRYPT0) + b"\x83"
_EMPTY_MAP = b"\xa0"
_AEAD_ALGS = frozenset(_AEAD_NONCE_LENGTH)
_ALG_KEY, _KID_KEY, _IV_KEY = int(CoseHeader.ALG), int(CoseHeader.KID), int(CoseHeader.IV)

_PROTECTED_CACHE: dict[tuple[int, bytes | None], bytes] = {}


def _protected(alg: CoseAlgorithm, kid: bytes | None) -> bytes:
    # Every header parameter goes into the protected bucket and the unprotected map stays empty: a token's bytes
    # then cannot be altered without breaking its signature/MAC/tag, as RFC 9770 §3 requires so that token hashes
    # identify tokens. The encoded header depends only on (alg, kid), so it is cached.
    ph = _PROTECTED_CACHE.get((alg, kid))
    if ph is None:
        header: dict[int, Any] = {_ALG_KEY: int(alg)}
        if kid is not None:
            header[_KID_KEY] = kid
        ph = cbor.dumps(header)
        if len(_PROTECTED_CACHE) < 1024:
            _PROTECTED_CACHE[(alg, kid)] = ph
    return ph


def sign1(
    payload: bytes,
    key: CoseKey,
    *,
    alg: CoseAlgorithm | None = None,
    include_kid: bool = True,
    external_aad: bytes = b"",
) -> bytes:
    """Create a tagged COSE_Sign1 (RFC 9052 §4.2) over ``payload``; ``alg`` and ``kid`` are protected."""
    alg = _alg_for(key, alg, _SIGNATURE_ALGS)
    _check_key_ops(key, CoseKeyOp.SIGN)
    ph = cbor.bstr(_protected(alg, key.kid if include_kid else None))
    body = cbor.bstr(payload)
    signature = algorithm_implementation(alg).sign(key, _SIG_CONTEXT + ph + cbor.bstr(external_aad) + body)
    return _SIGN1_HEAD + ph + _EMPTY_MAP + body + cbor.bstr(signature)


def mac0(
    payload: bytes,
    key: CoseKey,
    *,
    alg: CoseAlgorithm | None = None,
    include_kid: bool = True,
    external_aad: bytes = b"",
) -> bytes:
    """Create a tagged COSE_Mac0 (RFC 9052 §6.2) over ``payload``; ``alg`` and ``kid`` are protected."""
    alg = _alg_for(key, alg, _MAC_ALGS)
    _check_key_ops(key, CoseKeyOp.MAC_CREATE)
    ph = cbor.bstr(_protected(alg, key.kid if include_kid else None))
    body = cbor.bstr(payload)
    tag = algorithm_implementation(alg).compute_tag(key, _MAC_CONTEXT + ph + cbor.bstr(external_aad) + body)
    return _MAC0_HEAD + ph + _EMPTY_MAP + body + cbor.bstr(tag)


def encrypt0(
    payload: bytes,
    key: CoseKey,
    *,
    alg: CoseAlgorithm | None = None,
    include_kid: bool = True,
    iv: bytes | None = None,
    protect_iv: bool = True,
    external_aad: bytes = b"",
    tagged: bool = True,
) -> bytes | list[Any]:
    """Create a COSE_Encrypt0 (RFC 9052 §5.2) with ``alg`` and ``kid`` protected.

    ``iv`` defaults to fresh random bytes of the algorithm's nonce size. It is protected too (RFC 9770 §3 wants
    the unprotected map of a token empty); ``protect_iv=False`` puts it in the unprotected map instead, for
    recipients whose COSE library looks for it only there (python-cwt 3.3 does). With ``tagged=False`` the
    untagged array is returned (as used inside ``Encrypted_COSE_Key``, RFC 8747 §3.3).
    """
    alg = _alg_for(key, alg, _AEAD_ALGS)
    _check_key_ops(key, CoseKeyOp.ENCRYPT)
    nonce_len = _AEAD_NONCE_LENGTH[alg]
    if iv is None:
        iv = os.urandom(nonce_len)
    elif len(iv) != nonce_len:
        raise ValueError(f"{alg.name} needs a {nonce_len}-byte IV")
    header: dict[int, Any] = {_ALG_KEY: int(alg)}
    if include_kid and key.kid is not None:
        header[_KID_KEY] = key.kid
    unprotected: dict[int, Any] = {}
    (header if protect_iv else unprotected)[_IV_KEY] = iv
    ph = cbor.dumps(header)
    aad = _ENC_CONTEXT + cbor.bstr(ph) + cbor.bstr(external_aad)
    ciphertext = _aead(key, alg).encrypt(iv, payload, aad)
    if not tagged:
        return [ph, unprotected, ciphertext]
    uh = cbor.dumps(unprotected) if unprotected else _EMPTY_MAP
    return _ENCRYPT0_HEAD + cbor.bstr(ph) + uh + cbor.bstr(ciphertext)


# --------------------------------------------------------------------------------------------------------------
# decoding and verification
# --------------------------------------------------------------------------------------------------------------

_TAGS = {int(t): t for t in (CoseTag.SIGN1, CoseTag.MAC0, CoseTag.ENCRYPT0)}
_CWT_TAG = int(CoseTag.CWT)
_CRIT_KEY = int(CoseHeader.CRIT)
# Decoded protected headers of Sign1/Mac0 objects, which repeat from token to token (they hold only alg and kid).
_DECODED_HEADER_CACHE: dict[bytes, Mapping[Any, Any]] = {}


@dataclass(frozen=True, slots=True)
class CoseObject:
    """A structurally valid, not yet verified COSE_Sign1 / COSE_Mac0 / COSE_Encrypt0."""

    tag: CoseTag
    protected_bytes: bytes
    protected: Mapping[int, Any]
    unprotected: Mapping[int, Any]
    payload: bytes  # the ciphertext for Encrypt0
    signature_or_tag: bytes | None  # None for Encrypt0

    @property
    def alg(self) -> int:
        """The algorithm from the protected header."""
        return int(self.protected[_ALG_KEY])

    @property
    def kid(self) -> bytes | None:
        """The ``kid`` header parameter, protected or not."""
        kid = self.protected.get(_KID_KEY, self.unprotected.get(_KID_KEY))
        return kid if isinstance(kid, bytes) else None


def _decode_protected(ph: bytes, tag: CoseTag, max_size: int) -> Mapping[Any, Any]:
    if not ph:
        return {}
    cached = _DECODED_HEADER_CACHE.get(ph)
    if cached is not None:
        return cached
    protected = _small_header(ph)
    if protected is None:
        try:
            protected = cbor.loads(ph, max_size=max_size)
        except WireFormatError as exc:
            raise TokenMalformed("protected header is not CBOR") from exc
        if not isinstance(protected, dict):
            raise TokenMalformed("protected header is not a map")
    if tag != CoseTag.ENCRYPT0 and len(ph) <= 64 and len(_DECODED_HEADER_CACHE) < 1024:
        shared: Mapping[Any, Any] = MappingProxyType(protected)  # shared between objects, hence read-only
        _DECODED_HEADER_CACHE[ph] = shared
        return shared
    return protected


# Fast paths for the layout every token we issue has (and most others): they read the CBOR heads of RFC 8949 §3
# directly and give up (returning None) on anything they do not handle, which then goes through cbor2. They accept
# only inputs that cbor2 decodes to the very same objects, so every check below sees the same values either way,
# and every malformed input takes the general path and fails there as before. tests/property/test_cose_decoding.py
# compares both paths on arbitrary and mutated inputs.
_TAG_HEADS = {0xC0 | t: t for t in (CoseTag.SIGN1, CoseTag.MAC0, CoseTag.ENCRYPT0)}  # one-byte tag heads
_CWT_TAG_HEAD = b"\xd8" + bytes((CoseTag.CWT,))  # tag 61: major type 6, one-byte argument
_EMPTY_MAP_HEAD = 0xA0


def _bstr_span(data: bytes, pos: int, size: int) -> tuple[int, int]:
    """``(start, end)`` of the content of the definite-length byte string whose head is at ``pos``, or (-1, -1)."""
    if pos < size:
        b = data[pos]
        if 0x40 <= b < 0x58:
            start, end = pos + 1, pos + 1 + (b - 0x40)
        elif b == 0x58 and pos + 1 < size:
            start = pos + 2
            end = start + data[pos + 1]
        elif b == 0x59 and pos + 2 < size:
            start = pos + 3
            end = start + (data[pos + 1] << 8 | data[pos + 2])
        else:
            return -1, -1  # longer, indefinite-length or not a byte string
        if end <= size:
            return start, end
    return -1, -1


def _split(data: bytes) -> tuple[CoseTag, bytes, bytes, bytes | None] | None:
    """``(tag, protected, payload, signature)`` if ``data`` is exactly ``[61(]tag([bstr, {}, bstr(, bstr)])[)]``."""
    size = len(data)
    pos = 2 if data[:2] == _CWT_TAG_HEAD else 0
    if size < pos + 2:
        return None
    tag = _TAG_HEADS.get(data[pos])
    if tag is None:
        return None
    four = tag is not CoseTag.ENCRYPT0
    if data[pos + 1] != (0x84 if four else 0x83):  # array(4) / array(3)
        return None
    ph_start, ph_end = _bstr_span(data, pos + 2, size)
    if ph_end < 0 or ph_end >= size or data[ph_end] != _EMPTY_MAP_HEAD:
        return None
    start, end = _bstr_span(data, ph_end + 1, size)
    if end < 0:
        return None
    payload = data[start:end]
    signature = None
    if four:
        start, end = _bstr_span(data, end, size)
        if end < 0:
            return None
        signature = data[start:end]
    return (tag, data[ph_start:ph_end], payload, signature) if end == size else None


def _small_header(ph: bytes) -> dict[int, int | bytes] | None:
    """A header map whose labels are small integers and whose values are small integers or short byte strings
    (``alg``, ``kid``, ``IV``, ...), or None."""
    size = len(ph)
    first = ph[0]
    if not 0xA1 <= first <= 0xB7:
        return None
    out: dict[int, int | bytes] = {}
    pos = 1
    for _ in range(first - 0xA0):
        if pos + 1 >= size:
            return None
        k = ph[pos]
        if k < 0x18:
            label = k
        elif 0x20 <= k < 0x38:
            label = 0x1F - k  # negative integer -1 - (k - 0x20)
        else:
            return None
        v = ph[pos + 1]
        pos += 2
        value: int | bytes
        if v < 0x18:
            value = v
        elif 0x40 <= v < 0x58:
            end = pos + v - 0x40
            if end > size:
                return None
            value = ph[pos:end]
            pos = end
        elif 0x20 <= v < 0x38:
            value = 0x1F - v
        elif v == 0x18 and pos < size:
            value = ph[pos]
            pos += 1
        else:
            return None
        if label in out:
            return None  # a duplicate label: leave it to cbor2 and the checks that follow
        out[label] = value
    return out if pos == size else None


def decode(data: bytes | Any, *, max_size: int = cbor.DEFAULT_MAX_SIZE, untagged: CoseTag | None = None) -> CoseObject:
    """Parse a tagged COSE object (a CWT tag 61 around it is stripped, RFC 8392 §7.2).

    :param untagged: accept an untagged array of this type (e.g. an ``Encrypted_COSE_Key``).
    :raises TokenMalformed: not a COSE_Sign1/Mac0/Encrypt0, or its headers are malformed (RFC 9052 §3).
    """
    parts = _split(data) if type(data) is bytes and len(data) <= max_size else None
    if parts is not None:
        return _checked(parts[0], parts[1], {}, parts[2], parts[3], max_size)
    try:
        obj = cbor.loads(bytes(data), max_size=max_size) if isinstance(data, bytes | bytearray) else data
    except WireFormatError as exc:
        raise TokenMalformed(f"not CBOR: {exc.detail}") from exc
    if isinstance(obj, cbor.CBORTag) and obj.tag == _CWT_TAG:
        obj = obj.value
    if isinstance(obj, cbor.CBORTag):
        tag = _TAGS.get(obj.tag)
        if tag is None:
            raise TokenMalformed(f"unsupported COSE tag {obj.tag}")
        body = obj.value
    elif untagged is not None:
        tag, body = untagged, obj
    else:
        raise TokenMalformed("not a tagged COSE object")
    expected_len = 3 if tag == CoseTag.ENCRYPT0 else 4
    if not isinstance(body, list) or len(body) != expected_len:
        raise TokenMalformed("COSE structure has the wrong shape")
    ph, uh, payload = body[0], body[1], body[2]
    if type(ph) is not bytes or not isinstance(uh, dict) or type(payload) is not bytes:
        raise TokenMalformed("COSE headers or payload have the wrong type (detached payloads are not supported)")
    signature = body[3] if expected_len == 4 else None
    if expected_len == 4 and type(signature) is not bytes:
        raise TokenMalformed("signature/tag must be a byte string")
    return _checked(tag, ph, uh, payload, signature, max_size)


def _checked(
    tag: CoseTag, ph: bytes, uh: dict[Any, Any], payload: bytes, signature: bytes | None, max_size: int
) -> CoseObject:
    """The object, once its headers pass the checks of RFC 9052 §3 and §3.1."""
    protected = _decode_protected(ph, tag, max_size)
    if uh and not protected.keys().isdisjoint(uh):
        raise TokenMalformed("a header label appears both protected and unprotected (RFC 9052 §3)")
    if type(protected.get(_ALG_KEY)) is not int:
        raise TokenMalformed("alg must be an integer in the protected header")
    crit = protected.get(_CRIT_KEY)
    if crit is not None:
        if not isinstance(crit, list) or not crit or any(c not in _KNOWN_HEADERS for c in crit):
            raise TokenMalformed("unknown critical header parameter (RFC 9052 §3.1)")
    kid = protected.get(_KID_KEY, uh.get(_KID_KEY))
    if kid is not None and type(kid) is not bytes:
        raise TokenMalformed("kid must be a byte string")
    return CoseObject(tag, ph, protected, uh, payload, signature)


def verify(
    data: bytes | CoseObject, keys: KeyResolver, *, max_size: int = cbor.DEFAULT_MAX_SIZE, external_aad: bytes = b""
) -> tuple[bytes, CoseObject, CoseKey]:
    """Verify the signature or MAC, or decrypt; return ``(payload, object, key)``.

    :raises TokenMalformed: the bytes are not a COSE object.
    :raises SecurityWrapperFailed: no key verifies it (unknown kid, bad signature/MAC, decryption failure,
        algorithm not allowed). The cause is in ``detail`` only.
    """
    obj = data if isinstance(data, CoseObject) else decode(data, max_size=max_size)
    alg = obj.alg
    tag = obj.tag
    if tag == CoseTag.SIGN1:
        allowed = alg in _SIGNATURE_ALGS
    elif tag == CoseTag.MAC0:
        allowed = alg in _MAC_ALGS
    else:
        allowed = alg in _AEAD_ALGS
    if not allowed:
        raise SecurityWrapperFailed(f"algorithm {alg} not allowed for COSE tag {tag}")
    candidates = keys.resolve(obj.kid, alg)
    ph = cbor.bstr(obj.protected_bytes)
    aad = cbor.bstr(external_aad)
    if tag == CoseTag.ENCRYPT0:
        iv = obj.protected.get(_IV_KEY, obj.unprotected.get(_IV_KEY))
        if type(iv) is not bytes or len(iv) != _AEAD_NONCE_BY_INT[alg]:
            raise TokenMalformed("missing IV or IV of the wrong length for the algorithm")
        # Enc_structure = ["Encrypt0", protected, external_aad] (RFC 9052 §5.3), the AEAD's associated data.
        enc_structure = _ENC_CONTEXT + ph + aad
        for key in candidates:
            try:
                plaintext = _aead(key, alg).decrypt(iv, obj.payload, enc_structure)
            except (InvalidTag, ValueError):
                continue
            return plaintext, obj, key
        raise SecurityWrapperFailed(f"decryption failed (kid={obj.kid!r})")
    impl = algorithm_implementation(alg)
    to_check = (_SIG_CONTEXT if tag == CoseTag.SIGN1 else _MAC_CONTEXT) + ph + aad + cbor.bstr(obj.payload)
    for key in candidates:
        if tag == CoseTag.SIGN1:
            ok = impl.verify(key, to_check, obj.signature_or_tag)
        else:
            ok = impl.verify_tag(key, obj.signature_or_tag, to_check)
        if ok:
            return obj.payload, obj, key
    raise SecurityWrapperFailed(f"signature/MAC does not verify (kid={obj.kid!r})")
