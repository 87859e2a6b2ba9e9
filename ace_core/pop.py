"""Proof-of-possession key confirmation: the ``cnf`` / ``req_cnf`` / ``rs_cnf`` maps (RFC 8747 §3, RFC 9201 §3)
and OSCORE_Input_Material (RFC 9203 §3.2.1).

A :class:`Confirmation` holds exactly one PoP key representation (RFC 8747 §3.1): a COSE_Key, an
Encrypted_COSE_Key, a key id, or OSCORE input material. Unknown confirmation members are kept in ``extra``
(RFC 8747 §3.1: they MUST be ignored, so they must not make decoding fail).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ace_core import cbor, cose
from ace_core.errors import WireFormatError
from ace_core.keys import CoseKey, b64url_decode, b64url_encode
from ace_core.keys import is_int as _is_int
from ace_core.registry import ConfirmationMethod, CoseAlgorithm, CoseTag, OscoreInputMaterial

__all__ = ["Confirmation", "OscoreMaterial", "decrypt_cose_key", "encrypt_cose_key"]

_OSC_JSON_NAMES = {
    OscoreInputMaterial.ID: "id",
    OscoreInputMaterial.VERSION: "version",
    OscoreInputMaterial.MS: "ms",
    OscoreInputMaterial.HKDF: "hkdf",
    OscoreInputMaterial.ALG: "alg",
    OscoreInputMaterial.SALT: "salt",
    OscoreInputMaterial.CONTEXT_ID: "contextId",
}
_OSC_BYTES = frozenset(
    {OscoreInputMaterial.ID, OscoreInputMaterial.MS, OscoreInputMaterial.SALT, OscoreInputMaterial.CONTEXT_ID}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class OscoreMaterial:
    """OSCORE_Input_Material (RFC 9203 §3.2.1 Table 1). ``ms`` is secret and excluded from ``repr``.

    ``hkdf`` and ``alg`` are COSE algorithm values (int) or names (tstr), as the table allows.
    """

    id: bytes | None = None
    version: int | None = None
    ms: bytes | None = field(default=None, repr=False)
    hkdf: int | str | None = None
    alg: int | str | None = None
    salt: bytes | None = None
    context_id: bytes | None = None
    extra: Mapping[int | str, Any] = field(default_factory=dict)

    def to_cbor_map(self) -> dict[int | str, Any]:
        """The OSCORE_Input_Material map with integer labels, in label order."""
        m: dict[int | str, Any] = {}
        for attr, label in _OSC_FIELDS:
            value = getattr(self, attr)
            if value is not None:
                m[label] = value
        if self.extra:
            m.update(self.extra)
        return m

    @classmethod
    def from_cbor_map(cls, m: object) -> OscoreMaterial:
        """Decode; :raises WireFormatError: for wrong member types."""
        if not isinstance(m, dict):
            raise WireFormatError("OSCORE_Input_Material must be a map")
        values: dict[str, Any] = {}
        extra: dict[int | str, Any] = {}
        for label, value in m.items():
            if type(label) is int or _is_int(label):
                spec = _OSC_SPECS.get(label)
                if spec is None:
                    extra[label] = value
                    continue
                attr, fast_type, check = spec
                # The exact-type test accepts the common values at once; the full check decides for the rest.
                if type(value) is not fast_type and not check(value):
                    raise WireFormatError(f"OSCORE_Input_Material {attr} has the wrong type")
                values[attr] = value
            elif type(label) is str:
                extra[label] = value
            else:
                raise WireFormatError("OSCORE_Input_Material labels must be int or text")
        return cls(**values, extra=extra)

    def to_json(self) -> dict[str, Any]:
        """JSON form: RFC 9203 §3.2.1 names, byte strings base64url without padding."""
        out: dict[str, Any] = {}
        for label, name in _OSC_JSON_NAMES.items():
            value = getattr(self, _attr(label))
            if value is not None:
                out[name] = b64url_encode(value) if label in _OSC_BYTES else value
        for k, v in self.extra.items():
            if not isinstance(v, str | int | float | bool) or isinstance(k, int) and str(k) in _OSC_JSON_NAMES.values():
                raise ValueError(f"OSCORE_Input_Material member {k!r} has no JSON form")
            out[str(k)] = v
        return out

    @classmethod
    def from_json(cls, obj: object) -> OscoreMaterial:
        """Inverse of :meth:`to_json`."""
        if not isinstance(obj, dict):
            raise WireFormatError("OSCORE_Input_Material must be a JSON object")
        by_name = {name: label for label, name in _OSC_JSON_NAMES.items()}
        m: dict[int | str, Any] = {}
        for k, v in obj.items():
            label = by_name.get(k)
            if label is None:
                m[int(k) if k.lstrip("-").isdigit() else k] = v  # JSON object keys are text
            else:
                m[int(label)] = b64url_decode(v) if label in _OSC_BYTES else v
        return cls.from_cbor_map(m)


def _attr(label: OscoreInputMaterial) -> str:
    return "context_id" if label == OscoreInputMaterial.CONTEXT_ID else label.name.lower()


def _is_uint(v: object) -> bool:
    return _is_int(v) and v >= 0  # type: ignore[operator]


def _is_bytes(v: object) -> bool:
    return type(v) is bytes


def _is_alg(v: object) -> bool:
    return _is_int(v) or type(v) is str


#: (attribute, integer label) per OSCORE_Input_Material member, in label order (plain ints: cbor2's fast path).
_OSC_FIELDS: tuple[tuple[str, int], ...] = tuple((_attr(label), int(label)) for label in OscoreInputMaterial)
_OSC_ATTRS: dict[int, str] = {label: attr for attr, label in _OSC_FIELDS}
_OSC_CHECKS = {
    attr: _is_bytes if label in _OSC_BYTES else _is_uint if label == OscoreInputMaterial.VERSION else _is_alg
    for attr, label in _OSC_FIELDS
}
#: Per label: (attribute, a type accepted at once, full check). ``version`` must also be >= 0, so has no fast type.
_OSC_SPECS: dict[int, tuple[str, type | None, Callable[[object], bool]]] = {
    label: (
        attr,
        bytes if label in _OSC_BYTES else None if label == OscoreInputMaterial.VERSION else int,
        _OSC_CHECKS[attr],
    )
    for attr, label in _OSC_FIELDS
}
_COSE_KEY, _ENCRYPTED_COSE_KEY, _KID, _OSC = (
    int(ConfirmationMethod.COSE_KEY),
    int(ConfirmationMethod.ENCRYPTED_COSE_KEY),
    int(ConfirmationMethod.KID),
    int(ConfirmationMethod.OSC),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Confirmation:
    """A ``cnf`` claim / ``cnf`` / ``req_cnf`` / ``rs_cnf`` parameter value (RFC 8747 §3.1, RFC 9201 §3).

    Exactly one of ``cose_key``, ``encrypted_cose_key`` (the COSE_Encrypt0 array), ``kid`` or ``osc`` is set.
    """

    cose_key: CoseKey | None = None
    encrypted_cose_key: list[Any] | None = None
    kid: bytes | None = None
    osc: OscoreMaterial | None = None
    extra: Mapping[int, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        present = (
            (self.cose_key is not None)
            + (self.encrypted_cose_key is not None)
            + (self.kid is not None)
            + (self.osc is not None)
        )
        if present != 1:
            raise WireFormatError("cnf must carry exactly one proof-of-possession key (RFC 8747 §3.1)")

    def to_cbor_map(self) -> dict[int, Any]:
        """The ``cnf`` map with integer labels."""
        m: dict[int, Any] = {}
        if self.cose_key is not None:
            m[_COSE_KEY] = self.cose_key.to_cbor_map()
        if self.encrypted_cose_key is not None:
            m[_ENCRYPTED_COSE_KEY] = self.encrypted_cose_key
        if self.kid is not None:
            m[_KID] = self.kid
        if self.osc is not None:
            m[_OSC] = self.osc.to_cbor_map()
        if self.extra:
            m.update(self.extra)
        return m

    @classmethod
    def from_cbor_map(cls, m: object) -> Confirmation:
        """Decode a ``cnf`` map; :raises WireFormatError: malformed or not exactly one key."""
        if not isinstance(m, dict):
            raise WireFormatError("cnf must be a map")
        extra: dict[int, Any] = {}
        cose_key = enc = kid = osc = None
        for label, value in m.items():
            if type(label) is not int and (type(label) is bool or not isinstance(label, int)):
                raise WireFormatError("cnf labels must be integers")
            if label == _OSC:
                osc = value
            elif label == _KID:
                kid = value
            elif label == _COSE_KEY:
                cose_key = value
            elif label == _ENCRYPTED_COSE_KEY:
                enc = value
            else:
                extra[label] = value
        if enc is not None:
            if isinstance(enc, cbor.CBORTag) and enc.tag == CoseTag.ENCRYPT0:
                enc = enc.value
            if not isinstance(enc, list):
                raise WireFormatError("Encrypted_COSE_Key must be a COSE_Encrypt0")
        if kid is not None and type(kid) is not bytes:
            raise WireFormatError("cnf kid must be a byte string")
        return cls(
            cose_key=None if cose_key is None else CoseKey.from_cbor_map(cose_key),
            encrypted_cose_key=enc,
            kid=kid,
            osc=None if osc is None else OscoreMaterial.from_cbor_map(osc),
            extra=extra,
        )

    def to_json(self) -> dict[str, Any]:
        """JSON form (RFC 7800 §3.1 names ``jwk``/``kid``; ``osc`` as RFC 9203; Encrypted_COSE_Key as
        base64url of its CBOR). :raises ValueError: unknown members, which have no JSON name."""
        if self.extra:
            raise ValueError(f"cnf members {sorted(self.extra)} have no JSON form")
        out: dict[str, Any] = {}
        if self.cose_key is not None:
            out["jwk"] = self.cose_key.to_json()
        if self.encrypted_cose_key is not None:
            out["Encrypted_COSE_Key"] = b64url_encode(cbor.dumps(self.encrypted_cose_key))
        if self.kid is not None:
            out["kid"] = b64url_encode(self.kid)
        if self.osc is not None:
            out["osc"] = self.osc.to_json()
        return out

    @classmethod
    def from_json(cls, obj: object) -> Confirmation:
        """Inverse of :meth:`to_json`."""
        if not isinstance(obj, dict):
            raise WireFormatError("cnf must be a JSON object")
        enc = None
        if "Encrypted_COSE_Key" in obj:
            enc = cbor.loads(b64url_decode(obj["Encrypted_COSE_Key"]))
            if not isinstance(enc, list):
                raise WireFormatError("Encrypted_COSE_Key must be a COSE_Encrypt0")
        return cls(
            cose_key=CoseKey.from_json(obj["jwk"]) if "jwk" in obj else None,
            encrypted_cose_key=enc,
            kid=b64url_decode(obj["kid"]) if "kid" in obj else None,
            osc=OscoreMaterial.from_json(obj["osc"]) if "osc" in obj else None,
        )


def encrypt_cose_key(key: CoseKey, kek: CoseKey, *, alg: CoseAlgorithm | None = None) -> Confirmation:
    """Wrap ``key`` for the RS as an Encrypted_COSE_Key (RFC 8747 §3.3): a COSE_Encrypt0 under ``kek``."""
    body = cose.encrypt0(key.to_cbor(), kek, alg=alg, tagged=False)
    assert isinstance(body, list)
    return Confirmation(encrypted_cose_key=body)


def decrypt_cose_key(cnf: Confirmation, keys: cose.KeyResolver) -> CoseKey:
    """Unwrap an Encrypted_COSE_Key with the RS's keys. :raises SecurityWrapperFailed: decryption fails."""
    if cnf.encrypted_cose_key is None:
        raise WireFormatError("cnf holds no Encrypted_COSE_Key")
    obj = cose.decode(cnf.encrypted_cose_key, untagged=CoseTag.ENCRYPT0)
    plaintext, _, _ = cose.verify(obj, keys)
    return CoseKey.from_cbor(plaintext)
