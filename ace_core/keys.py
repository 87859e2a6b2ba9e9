"""COSE_Key objects (RFC 9052 §7, RFC 9053 §7): generate, serialize (CBOR, JSON, PEM) and load keys.

A :class:`CoseKey` is immutable and holds its ``cryptography`` key object, built once when the key is created
or loaded (that also validates the key: points must lie on their curve). Key ids are stable: a generated
asymmetric key gets the first 8 bytes of its RFC 9679 thumbprint as ``kid``.

This module does not import pycose; signing and MACing happen in :mod:`ace_core.cose`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, cast

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ace_core import cbor
from ace_core.errors import WireFormatError
from ace_core.registry import CoseAlgorithm, CoseCurve, CoseKeyParam, CoseKeyType, lookup

__all__ = ["ALGORITHM_NAMES", "CoseKey", "algorithm_from_name", "b64url_decode", "b64url_encode"]

#: Names of the algorithms as in the IANA COSE Algorithms registry (used in JSON and in the CLI).
ALGORITHM_NAMES: Mapping[CoseAlgorithm, str] = {
    CoseAlgorithm.A128GCM: "A128GCM",
    CoseAlgorithm.A192GCM: "A192GCM",
    CoseAlgorithm.A256GCM: "A256GCM",
    CoseAlgorithm.HMAC_256_64: "HMAC 256/64",
    CoseAlgorithm.HMAC_256_256: "HMAC 256/256",
    CoseAlgorithm.HMAC_384_384: "HMAC 384/384",
    CoseAlgorithm.HMAC_512_512: "HMAC 512/512",
    CoseAlgorithm.AES_CCM_16_64_128: "AES-CCM-16-64-128",
    CoseAlgorithm.AES_CCM_16_64_256: "AES-CCM-16-64-256",
    CoseAlgorithm.AES_CCM_64_64_128: "AES-CCM-64-64-128",
    CoseAlgorithm.AES_CCM_64_64_256: "AES-CCM-64-64-256",
    CoseAlgorithm.ES256: "ES256",
    CoseAlgorithm.EDDSA: "EdDSA",
    CoseAlgorithm.ES384: "ES384",
}
_ALG_BY_NAME = {
    name.upper().replace(" ", "").replace("-", "").replace("_", ""): alg for alg, name in ALGORITHM_NAMES.items()
}

#: Symmetric key length in bytes for each symmetric algorithm (RFC 9053 §3.1, §4.1, §4.2).
SYMMETRIC_KEY_LENGTH: Mapping[CoseAlgorithm, int] = {
    CoseAlgorithm.A128GCM: 16,
    CoseAlgorithm.A192GCM: 24,
    CoseAlgorithm.A256GCM: 32,
    CoseAlgorithm.HMAC_256_64: 32,
    CoseAlgorithm.HMAC_256_256: 32,
    CoseAlgorithm.HMAC_384_384: 48,
    CoseAlgorithm.HMAC_512_512: 64,
    CoseAlgorithm.AES_CCM_16_64_128: 16,
    CoseAlgorithm.AES_CCM_16_64_256: 32,
    CoseAlgorithm.AES_CCM_64_64_128: 16,
    CoseAlgorithm.AES_CCM_64_64_256: 32,
}

_EC_CURVES: Mapping[CoseCurve, tuple[type[ec.EllipticCurve], int]] = {
    CoseCurve.P_256: (ec.SECP256R1, 32),
    CoseCurve.P_384: (ec.SECP384R1, 48),
    CoseCurve.P_521: (ec.SECP521R1, 66),
}
_CURVE_BY_CRYPTOGRAPHY_NAME: dict[str, CoseCurve] = {
    "secp256r1": CoseCurve.P_256,
    "secp384r1": CoseCurve.P_384,
    "secp521r1": CoseCurve.P_521,
}
_CURVE_NAMES: Mapping[CoseCurve, str] = {
    CoseCurve.P_256: "P-256",
    CoseCurve.P_384: "P-384",
    CoseCurve.P_521: "P-521",
    CoseCurve.ED25519: "Ed25519",
}
_CURVE_BY_NAME = {v: k for k, v in _CURVE_NAMES.items()}
_KTY_JSON = {
    CoseKeyType.OKP: "OKP",
    CoseKeyType.EC2: "EC",
    CoseKeyType.SYMMETRIC: "oct",
}  # RFC 7517/8037 names
_KTY_BY_JSON = {v: k for k, v in _KTY_JSON.items()}
_DEFAULT_ALG_FOR_CURVE = {
    CoseCurve.P_256: CoseAlgorithm.ES256,
    CoseCurve.P_384: CoseAlgorithm.ES384,
    CoseCurve.ED25519: CoseAlgorithm.EDDSA,
}


def is_int(value: object) -> bool:
    """True for integers (IntEnum members included) but not for ``bool``, which CBOR keeps distinct."""
    return isinstance(value, int) and not isinstance(value, bool)


_is_int = is_int


def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 4648 §5, as JOSE and ACE JSON use it)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64url_decode(text: str) -> bytes:
    """Strict inverse of :func:`b64url_encode` (RFC 4648 §5, no padding): only canonical input is accepted, so
    decoding is injective. :raises WireFormatError: on anything else."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise WireFormatError("invalid base64url text")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise WireFormatError("invalid base64url text") from exc
    if b64url_encode(data) != text:
        raise WireFormatError("non-canonical base64url text")
    return data


def algorithm_from_name(name: str) -> CoseAlgorithm:
    """Parse an algorithm name such as ``"EdDSA"``, ``"HMAC256/64"`` or ``"AES-CCM-16-64-128"``."""
    key = name.upper().replace(" ", "").replace("-", "").replace("_", "")
    try:
        return _ALG_BY_NAME[key]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; known: {', '.join(ALGORITHM_NAMES.values())}") from None


def _int_to_bytes(value: int, length: int) -> bytes:
    return value.to_bytes(length, "big")


@dataclass(frozen=True, slots=True, kw_only=True)
class CoseKey:
    """A COSE_Key (RFC 9052 §7) of type OKP (Ed25519), EC2 (P-256/384/521) or Symmetric.

    Secret members (``d``, ``k``) are excluded from ``repr``. Construct through :meth:`generate`,
    :meth:`from_cbor`, :meth:`from_json` or :meth:`from_pem`; direct construction validates too.
    """

    kty: CoseKeyType
    kid: bytes | None = None
    alg: CoseAlgorithm | int | None = None
    key_ops: tuple[int, ...] | None = None
    crv: CoseCurve | int | None = None
    x: bytes | None = None
    y: bytes | None = None
    d: bytes | None = field(default=None, repr=False)
    k: bytes | None = field(default=None, repr=False)
    extra: Mapping[int, Any] = field(default_factory=dict, repr=False, compare=False)
    _private: Any = field(default=None, init=False, repr=False, compare=False)
    _public: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            self._build()
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            if isinstance(exc, WireFormatError):
                raise
            raise WireFormatError(f"invalid {self.kty!r} key: {exc}") from exc

    def _build(self) -> None:
        if self.kid is not None and not isinstance(self.kid, bytes):
            raise WireFormatError("kid must be a byte string")
        if self.kty == CoseKeyType.SYMMETRIC:
            if not isinstance(self.k, bytes) or not self.k:
                raise WireFormatError("symmetric key needs a non-empty k")
            if any(v is not None for v in (self.crv, self.x, self.y, self.d)):
                raise WireFormatError("symmetric key with curve parameters")
            return
        if self.k is not None:
            raise WireFormatError("asymmetric key with k")
        if self.kty == CoseKeyType.OKP:
            if self.crv != CoseCurve.ED25519:
                raise WireFormatError(f"unsupported OKP curve {self.crv!r}")
            if self.d is not None:
                if not isinstance(self.d, bytes):
                    raise WireFormatError("d must be a byte string")
                priv = ed25519.Ed25519PrivateKey.from_private_bytes(self.d)
                pub = priv.public_key()
                raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
                if self.x is None:
                    object.__setattr__(self, "x", raw)
                elif self.x != raw:
                    raise WireFormatError("x does not match d")
                object.__setattr__(self, "_private", priv)
                object.__setattr__(self, "_public", pub)
            else:
                if not isinstance(self.x, bytes):
                    raise WireFormatError("OKP key needs x")
                object.__setattr__(self, "_public", ed25519.Ed25519PublicKey.from_public_bytes(self.x))
        elif self.kty == CoseKeyType.EC2:
            if self.crv not in _EC_CURVES:
                raise WireFormatError(f"unsupported EC2 curve {self.crv!r}")
            curve_cls, size = _EC_CURVES[CoseCurve(cast(int, self.crv))]
            if self.d is not None:
                if not isinstance(self.d, bytes) or len(self.d) != size:
                    raise WireFormatError("d has the wrong length")
                priv_ec = ec.derive_private_key(int.from_bytes(self.d, "big"), curve_cls())
                nums = priv_ec.public_key().public_numbers()
                x, y = _int_to_bytes(nums.x, size), _int_to_bytes(nums.y, size)
                if (self.x is not None and self.x != x) or (self.y is not None and self.y != y):
                    raise WireFormatError("x/y do not match d")
                object.__setattr__(self, "x", x)
                object.__setattr__(self, "y", y)
                object.__setattr__(self, "_private", priv_ec)
                object.__setattr__(self, "_public", priv_ec.public_key())
            else:
                if not (isinstance(self.x, bytes) and isinstance(self.y, bytes)):
                    raise WireFormatError("EC2 key needs x and y (compressed points are not supported)")
                if len(self.x) != size or len(self.y) != size:
                    raise WireFormatError("x/y have the wrong length")
                pub_ec = ec.EllipticCurvePublicNumbers(
                    int.from_bytes(self.x, "big"), int.from_bytes(self.y, "big"), curve_cls()
                ).public_key()  # raises ValueError when the point is not on the curve
                object.__setattr__(self, "_public", pub_ec)
        else:
            raise WireFormatError(f"unsupported key type {self.kty!r}")

    # -- construction --------------------------------------------------------------------------------------

    @classmethod
    def generate(cls, alg: CoseAlgorithm, *, kid: bytes | None = None) -> CoseKey:
        """Generate a fresh key for ``alg``.

        Asymmetric keys default to ``kid`` = the first 8 bytes of their RFC 9679 thumbprint (stable across
        serializations); symmetric keys default to 8 random bytes (a hash of a secret is not published).
        """
        alg = CoseAlgorithm(alg)
        if alg in SYMMETRIC_KEY_LENGTH:
            return cls(
                kty=CoseKeyType.SYMMETRIC,
                alg=alg,
                kid=kid if kid is not None else os.urandom(8),
                k=os.urandom(SYMMETRIC_KEY_LENGTH[alg]),
            )
        if alg == CoseAlgorithm.EDDSA:
            priv = ed25519.Ed25519PrivateKey.generate()
            d = priv.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
            key = cls(kty=CoseKeyType.OKP, crv=CoseCurve.ED25519, alg=alg, d=d)
        elif alg in (CoseAlgorithm.ES256, CoseAlgorithm.ES384):
            crv = CoseCurve.P_256 if alg == CoseAlgorithm.ES256 else CoseCurve.P_384
            curve_cls, size = _EC_CURVES[crv]
            ec_priv = ec.generate_private_key(curve_cls())
            d = _int_to_bytes(ec_priv.private_numbers().private_value, size)
            key = cls(kty=CoseKeyType.EC2, crv=crv, alg=alg, d=d)
        else:  # pragma: no cover - every CoseAlgorithm member is handled above
            raise ValueError(f"cannot generate a key for {alg!r}")
        return replace(key, kid=kid if kid is not None else key.thumbprint()[:8])

    @classmethod
    def symmetric(cls, k: bytes, *, alg: CoseAlgorithm | None = None, kid: bytes | None = None) -> CoseKey:
        """A Symmetric COSE_Key holding ``k``."""
        return cls(kty=CoseKeyType.SYMMETRIC, k=k, alg=alg, kid=kid)

    @classmethod
    def from_cbor_map(cls, m: object) -> CoseKey:
        """Decode a COSE_Key map (integer labels). Unknown labels are kept in :attr:`extra`.

        :raises WireFormatError: wrong types, missing members, or a point that is not on its curve.
        """
        if not isinstance(m, dict):
            raise WireFormatError("COSE_Key must be a map")
        m = dict(m)
        kty = m.pop(CoseKeyParam.KTY, None)
        if not _is_int(kty) or kty not in CoseKeyType._value2member_map_:
            raise WireFormatError(f"unsupported or missing kty {kty!r}")
        kty = CoseKeyType(kty)

        def take(label: int, typ: type) -> Any:
            v = m.pop(label, None)
            if v is not None and type(v) is not typ:
                raise WireFormatError(f"COSE_Key label {label} has the wrong type")
            return v

        kid = take(CoseKeyParam.KID, bytes)
        alg = m.pop(CoseKeyParam.ALG, None)
        if alg is not None and not _is_int(alg):
            raise WireFormatError("alg must be an integer")  # text algorithm names are not used by ACE
        key_ops = m.pop(CoseKeyParam.KEY_OPS, None)
        if key_ops is not None:
            if not isinstance(key_ops, list) or not all(_is_int(o) for o in key_ops):
                raise WireFormatError("key_ops must be an array of integers")
            key_ops = tuple(key_ops)
        if kty == CoseKeyType.SYMMETRIC:
            k = take(CoseKeyParam.K, bytes)
            return cls(
                kty=kty,
                kid=kid,
                alg=None if alg is None else lookup(CoseAlgorithm, alg),
                key_ops=key_ops,
                k=k,
                extra=m,
            )
        crv = m.pop(CoseKeyParam.CRV, None)
        if not _is_int(crv):
            raise WireFormatError("crv must be an integer")
        x = take(CoseKeyParam.X, bytes)
        y = m.pop(CoseKeyParam.Y, None) if kty == CoseKeyType.EC2 else None
        if y is not None and type(y) is not bytes:
            raise WireFormatError("compressed EC2 points (y = bool) are not supported")
        d = take(CoseKeyParam.D, bytes)
        return cls(
            kty=kty,
            kid=kid,
            alg=None if alg is None else lookup(CoseAlgorithm, alg),
            key_ops=key_ops,
            crv=lookup(CoseCurve, crv),
            x=x,
            y=y,
            d=d,
            extra=m,
        )

    @classmethod
    def from_cbor(cls, data: bytes, *, max_size: int = cbor.DEFAULT_MAX_SIZE) -> CoseKey:
        """Decode CBOR-encoded COSE_Key bytes."""
        return cls.from_cbor_map(cbor.loads(data, max_size=max_size))

    @classmethod
    def from_json(cls, obj: object) -> CoseKey:
        """Load the JSON form written by :meth:`to_json` (JWK member names, RFC 7517 / RFC 8037)."""
        if not isinstance(obj, dict):
            raise WireFormatError("JSON key must be an object")
        try:
            kty = _KTY_BY_JSON[obj["kty"]]
            kid = b64url_decode(obj["kid"]) if "kid" in obj else None
            alg = algorithm_from_name(obj["alg"]) if "alg" in obj else None

            def b(name: str) -> bytes | None:
                return b64url_decode(obj[name]) if name in obj else None

            if kty == CoseKeyType.SYMMETRIC:
                return cls(kty=kty, kid=kid, alg=alg, k=b("k"))
            crv = _CURVE_BY_NAME[obj["crv"]]
            return cls(kty=kty, kid=kid, alg=alg, crv=crv, x=b("x"), y=b("y"), d=b("d"))
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, WireFormatError):
                raise
            raise WireFormatError(f"invalid JSON key: {exc}") from exc

    @classmethod
    def from_pem(cls, pem: bytes, *, kid: bytes | None = None, alg: CoseAlgorithm | None = None) -> CoseKey:
        """Load an Ed25519 or EC private key (PKCS#8/SEC1) or public key (SubjectPublicKeyInfo) from PEM."""
        try:
            loaded: Any
            try:
                loaded = serialization.load_pem_private_key(pem, password=None)
            except ValueError:
                loaded = serialization.load_pem_public_key(pem)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise WireFormatError(f"not a usable PEM key: {exc}") from exc
        key: CoseKey
        if isinstance(loaded, ed25519.Ed25519PrivateKey):
            d = loaded.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
            key = cls(kty=CoseKeyType.OKP, crv=CoseCurve.ED25519, d=d, alg=alg or CoseAlgorithm.EDDSA)
        elif isinstance(loaded, ed25519.Ed25519PublicKey):
            x = loaded.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            key = cls(kty=CoseKeyType.OKP, crv=CoseCurve.ED25519, x=x, alg=alg or CoseAlgorithm.EDDSA)
        elif isinstance(loaded, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
            crv = _CURVE_BY_CRYPTOGRAPHY_NAME.get(loaded.curve.name)
            if crv is None:
                raise WireFormatError(f"unsupported curve {loaded.curve.name}")
            size = _EC_CURVES[crv][1]
            default_alg = _DEFAULT_ALG_FOR_CURVE.get(crv)
            if isinstance(loaded, ec.EllipticCurvePrivateKey):
                d = _int_to_bytes(loaded.private_numbers().private_value, size)
                key = cls(kty=CoseKeyType.EC2, crv=crv, d=d, alg=alg or default_alg)
            else:
                n = loaded.public_numbers()
                key = cls(
                    kty=CoseKeyType.EC2,
                    crv=crv,
                    x=_int_to_bytes(n.x, size),
                    y=_int_to_bytes(n.y, size),
                    alg=alg or default_alg,
                )
        else:
            raise WireFormatError(f"unsupported PEM key type {type(loaded).__name__}")
        return replace(key, kid=kid if kid is not None else key.thumbprint()[:8])

    # -- serialization -------------------------------------------------------------------------------------

    def to_cbor_map(self) -> dict[int, Any]:
        """The COSE_Key map with integer labels (RFC 9052 §7)."""
        m: dict[int, Any] = {CoseKeyParam.KTY: int(self.kty)}
        if self.kid is not None:
            m[CoseKeyParam.KID] = self.kid
        if self.alg is not None:
            m[CoseKeyParam.ALG] = int(self.alg)
        if self.key_ops is not None:
            m[CoseKeyParam.KEY_OPS] = list(self.key_ops)
        if self.kty == CoseKeyType.SYMMETRIC:
            m[CoseKeyParam.K] = self.k
        else:
            m[CoseKeyParam.CRV] = int(cast(int, self.crv))
            m[CoseKeyParam.X] = self.x
            if self.kty == CoseKeyType.EC2:
                m[CoseKeyParam.Y] = self.y
            if self.d is not None:
                m[CoseKeyParam.D] = self.d
        m.update(self.extra)
        return m

    def to_cbor(self) -> bytes:
        """CBOR encoding of :meth:`to_cbor_map`."""
        return cbor.dumps(self.to_cbor_map())

    def to_json(self) -> dict[str, str]:
        """JSON form with JWK member names (RFC 7517, RFC 8037); ``kid`` base64url, ``alg`` the COSE name.

        :raises ValueError: for members without a JWK counterpart here (``key_ops``, unknown labels).
        """
        if self.key_ops is not None or self.extra:
            raise ValueError("key_ops and unknown COSE_Key parameters have no JSON form here")
        out: dict[str, str] = {"kty": _KTY_JSON[self.kty]}
        if self.kid is not None:
            out["kid"] = b64url_encode(self.kid)
        if self.alg is not None:
            if self.alg not in ALGORITHM_NAMES:
                raise ValueError(f"algorithm {self.alg} has no JSON name here")
            out["alg"] = ALGORITHM_NAMES[CoseAlgorithm(self.alg)]
        if self.kty == CoseKeyType.SYMMETRIC:
            out["k"] = b64url_encode(cast(bytes, self.k))
            return out
        out["crv"] = _CURVE_NAMES[CoseCurve(cast(int, self.crv))]
        out["x"] = b64url_encode(cast(bytes, self.x))
        if self.y is not None:
            out["y"] = b64url_encode(self.y)
        if self.d is not None:
            out["d"] = b64url_encode(self.d)
        return out

    def to_pem(self) -> bytes:
        """PEM: PKCS#8 for private keys, SubjectPublicKeyInfo for public keys (asymmetric keys only)."""
        if self._private is not None:
            return cast(
                bytes,
                self._private.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
            )
        if self._public is not None:
            return cast(
                bytes,
                self._public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
            )
        raise ValueError("symmetric keys have no PEM form")

    # -- properties ----------------------------------------------------------------------------------------

    @property
    def is_symmetric(self) -> bool:
        """True for Symmetric (kty 4) keys."""
        return self.kty == CoseKeyType.SYMMETRIC

    @property
    def has_private(self) -> bool:
        """True when the key can sign (asymmetric with ``d``) or is symmetric."""
        return self._private is not None or self.is_symmetric

    def public(self) -> CoseKey:
        """The public part of an asymmetric key (``d`` dropped). Raises ``ValueError`` for symmetric keys."""
        if self.is_symmetric:
            raise ValueError("a symmetric key has no public part")
        return replace(self, d=None)

    def thumbprint(self) -> bytes:
        """RFC 9679 COSE Key Thumbprint with SHA-256 over the required members, deterministically encoded."""
        if self.kty == CoseKeyType.SYMMETRIC:
            required: dict[int, Any] = {CoseKeyParam.KTY: int(self.kty), CoseKeyParam.K: self.k}
        else:
            required = {
                CoseKeyParam.KTY: int(self.kty),
                CoseKeyParam.CRV: int(cast(int, self.crv)),
                CoseKeyParam.X: self.x,
            }
            if self.kty == CoseKeyType.EC2:
                required[CoseKeyParam.Y] = self.y
        # RFC 8949 §4.2.1 deterministic encoding: map keys sorted by their encoded bytes.
        items = sorted(required.items(), key=lambda kv: cbor.dumps(kv[0]))
        return hashlib.sha256(cbor.dumps(dict(items))).digest()

    def signing_key(self) -> Any:
        """The ``cryptography`` private key object (asymmetric keys with ``d``)."""
        if self._private is None:
            raise ValueError("this key cannot sign (no private part)")
        return self._private

    def verifying_key(self) -> Any:
        """The ``cryptography`` public key object (asymmetric keys)."""
        if self._public is None:
            raise ValueError("symmetric keys have no public key object")
        return self._public

    def secret(self) -> bytes:
        """The symmetric key bytes ``k``."""
        if self.k is None:
            raise ValueError("not a symmetric key")
        return self.k

    def __hash__(self) -> int:
        return hash((self.kty, self.kid, self.x, self.y))
