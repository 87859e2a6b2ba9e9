"""CBOR Web Tokens (RFC 8392) as ACE access tokens: issue and verify.

:func:`issue` protects a :class:`Claims` set as COSE_Sign1, COSE_Mac0, COSE_Encrypt0, or a COSE_Sign1 nested in a
COSE_Encrypt0. :func:`verify` follows RFC 8392 §7.2 and then checks the claims in the RFC 9200 §5.10.1.1
priority order, raising the :class:`~ace_core.errors.TokenRejected` subclass whose ``status`` is the code the
resource server must answer with:

================================  ==========================  ======
check (in this order)             error                       status
================================  ==========================  ======
payload is not a COSE token       TokenMalformed              4.00
signature / MAC / decryption      SecurityWrapperFailed       4.01
claims are not a CBOR map         ClaimsUnavailable           4.00
``iss``                           IssuerMismatch              4.01
``exp`` / ``nbf``                 TokenExpired                4.01
``aud``                           AudienceMismatch            4.03
``scope``                         ScopeNotRecognized          4.00
``cnonce`` (RFC 9200 §5.3.1)      CnonceInvalid               4.01
================================  ==========================  ======

Time is a parameter: ``now`` (seconds since the epoch, or ``None`` for a device without a clock, which must
then rely on ``exi``, RFC 9200 §5.10.3) and ``leeway``. Nothing here reads the clock.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from ace_core import cbor, cose
from ace_core.errors import (
    AudienceMismatch,
    ClaimsUnavailable,
    CnonceInvalid,
    IssuerMismatch,
    ScopeNotRecognized,
    TokenExpired,
    TokenMalformed,
    WireFormatError,
)
from ace_core.keys import CoseKey
from ace_core.keys import is_int as _is_int
from ace_core.pop import Confirmation
from ace_core.registry import CoseAlgorithm, CoseTag, CwtClaim

__all__ = ["Claims", "VerifiedToken", "issue", "verify", "verify_token"]

_COSE_TAGS = frozenset({CoseTag.SIGN1, CoseTag.MAC0, CoseTag.ENCRYPT0})
#: RFC 8392 §7.2 step 7 allows nesting; two layers (Sign1 inside Encrypt0) is all ACE needs.
MAX_NESTING = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Claims:
    """A CWT claims set (RFC 8392 §3-§4, RFC 8747 §3.1, RFC 9200 §5.10).

    ``aud`` is a text string; an array of text strings is accepted too. NumericDates are int or float, never
    tagged (RFC 8392 §2, §5). Unknown claims are kept in ``extra`` (RFC 8392 §3 says they MUST be ignored).
    """

    iss: str | None = None
    sub: str | None = None
    aud: str | tuple[str, ...] | None = None
    exp: int | float | None = None
    nbf: int | float | None = None
    iat: int | float | None = None
    cti: bytes | None = None
    cnf: Confirmation | None = None
    scope: str | bytes | None = None
    ace_profile: int | None = None
    cnonce: bytes | None = None
    exi: int | None = None
    extra: Mapping[int | str, Any] = field(default_factory=dict)

    def to_cbor_map(self) -> dict[int | str, Any]:
        """The claims map with integer keys, in claim-key order."""
        m: dict[int | str, Any] = {}
        for name, key in _CLAIM_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if name == "cnf":
                value = value.to_cbor_map()
            elif name == "aud" and not isinstance(value, str):
                value = list(value)
            m[key] = value
        if self.extra:
            m.update(self.extra)
        return m

    def to_cbor(self) -> bytes:
        """The CBOR-encoded claims set (the COSE payload)."""
        return cbor.dumps(self.to_cbor_map())

    @classmethod
    def from_cbor_map(cls, m: object) -> Claims:
        """Decode a claims map; :raises WireFormatError: wrong claim types."""
        if not isinstance(m, dict):
            raise WireFormatError("claims set must be a map")
        values: dict[str, Any] = {}
        extra: dict[int | str, Any] = {}
        for key, value in m.items():
            # cbor2 gives plain int and str keys; int subclasses (IntEnum members) are looked up the same way.
            if type(key) is int or _is_int(key):
                spec = _CLAIM_SPECS.get(key)
                if spec is None:
                    extra[key] = value
                    continue
                name, fast_types, check = spec
                # The exact-type test accepts the common values at once; the full check decides for the rest.
                if type(value) not in fast_types and check is not None and not check(value):
                    raise WireFormatError(f"claim {name} has the wrong type")
                values[name] = value
            elif type(key) is str:
                extra[key] = value
            else:
                raise WireFormatError("claim keys must be integers or text")
        aud = values.get("aud")
        if isinstance(aud, list):
            values["aud"] = tuple(aud)
        if "cnf" in values:
            values["cnf"] = Confirmation.from_cbor_map(values["cnf"])
        return cls(**values, extra=extra)

    @classmethod
    def from_cbor(cls, data: bytes, *, max_size: int = cbor.DEFAULT_MAX_SIZE) -> Claims:
        """Decode CBOR claims bytes."""
        return cls.from_cbor_map(cbor.loads(data, max_size=max_size))

    def audiences(self) -> tuple[str, ...]:
        """``aud`` as a tuple (empty when absent)."""
        if self.aud is None:
            return ()
        return (self.aud,) if isinstance(self.aud, str) else self.aud


def _check_aud(v: object) -> bool:
    return type(v) is str or (isinstance(v, list | tuple) and bool(v) and all(type(a) is str for a in v))


def _numeric_date(v: object) -> bool:
    return type(v) in (int, float)  # RFC 8392 §2: untagged NumericDate


#: (attribute, integer key) for each registered claim, in key order; plain ints keep cbor2 on its fast path.
_CLAIM_FIELDS: tuple[tuple[str, int], ...] = tuple((c.name.lower(), int(c)) for c in CwtClaim)
_CLAIM_NAMES: dict[int, str] = {key: name for name, key in _CLAIM_FIELDS}
_CLAIM_CHECKS: dict[str, Callable[[object], bool] | None] = {
    "iss": lambda v: type(v) is str,
    "sub": lambda v: type(v) is str,
    "aud": _check_aud,
    "exp": _numeric_date,
    "nbf": _numeric_date,
    "iat": _numeric_date,
    "cti": lambda v: type(v) is bytes,
    "cnf": None,  # checked by Confirmation.from_cbor_map
    "scope": lambda v: type(v) in (str, bytes),
    "ace_profile": _is_int,
    "cnonce": lambda v: type(v) is bytes,
    "exi": lambda v: _is_int(v) and v >= 0,  # type: ignore[operator]
}
#: Value types each claim always accepts, tested with ``type(v) in ...`` before its (slower) check.
_CLAIM_FAST_TYPES: dict[str, frozenset[type]] = {
    "iss": frozenset({str}),
    "sub": frozenset({str}),
    "aud": frozenset({str}),
    "exp": frozenset({int, float}),
    "nbf": frozenset({int, float}),
    "iat": frozenset({int, float}),
    "cti": frozenset({bytes}),
    "scope": frozenset({str, bytes}),
    "ace_profile": frozenset({int}),
    "cnonce": frozenset({bytes}),
}
#: Per claim key: (attribute, types accepted at once, full check or None when another decoder checks it).
_CLAIM_SPECS: dict[int, tuple[str, frozenset[type], Callable[[object], bool] | None]] = {
    key: (name, _CLAIM_FAST_TYPES.get(name, frozenset()), _CLAIM_CHECKS[name]) for name, key in _CLAIM_FIELDS
}


def issue(
    claims: Claims,
    *,
    sign_key: CoseKey | None = None,
    mac_key: CoseKey | None = None,
    encrypt_key: CoseKey | None = None,
    alg: CoseAlgorithm | None = None,
    encrypt_alg: CoseAlgorithm | None = None,
    cwt_tag: bool = False,
) -> bytes:
    """Protect ``claims`` and return the token bytes.

    * ``sign_key`` -> COSE_Sign1; ``mac_key`` -> COSE_Mac0; ``encrypt_key`` -> COSE_Encrypt0;
    * ``sign_key`` + ``encrypt_key`` -> COSE_Sign1 nested in COSE_Encrypt0 (RFC 8392 A.6 form).

    ``alg`` selects the signature/MAC/AEAD algorithm when the key does not name one; ``encrypt_alg`` the AEAD
    of the outer layer of a nested token. ``cwt_tag`` wraps the result in CWT tag 61 (RFC 8392 §6); RFC 9770
    §3 requires it for tokens that may be revoked.
    """
    if (mac_key is not None and (sign_key or encrypt_key)) or not (sign_key or mac_key or encrypt_key):
        raise ValueError("pass one of sign_key, mac_key, encrypt_key, or sign_key + encrypt_key")
    payload = claims.to_cbor()
    if sign_key is not None:
        token = cose.sign1(payload, sign_key, alg=alg)
        if encrypt_key is not None:
            token = _encrypt0_bytes(token, encrypt_key, encrypt_alg)
    elif mac_key is not None:
        token = cose.mac0(payload, mac_key, alg=alg)
    else:
        assert encrypt_key is not None
        token = _encrypt0_bytes(payload, encrypt_key, alg)
    if cwt_tag:
        token = b"\xd8\x3d" + token  # tag 61 head (RFC 8949 §3.4: major type 6, one-byte argument 61)
    return token


def _encrypt0_bytes(payload: bytes, key: CoseKey, alg: CoseAlgorithm | None) -> bytes:
    out = cose.encrypt0(payload, key, alg=alg)
    assert isinstance(out, bytes)
    return out


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """The result of :func:`verify_token`: the claims plus how the token was protected."""

    claims: Claims
    layers: tuple[cose.CoseObject, ...]  # outermost first
    keys: tuple[CoseKey, ...]  # the key that opened each layer


def verify_token(
    token: bytes,
    keys: cose.KeyResolver,
    *,
    now: float | None,
    audience: str | Collection[str] | None,
    issuer: str | None = None,
    leeway: float = 0,
    require_expiry: bool = True,
    accept_scope: Callable[[str | bytes | None], bool] | None = None,
    accept_cnonce: Callable[[bytes | None], bool] | None = None,
    max_size: int = cbor.DEFAULT_MAX_SIZE,
) -> VerifiedToken:
    """Verify ``token`` and its claims (see the module table for the order and the errors).

    :param keys: the keys this RS holds for its AS (shared AES/HMAC keys and/or the AS's public keys).
    :param now: current time in seconds since the epoch, or ``None`` on a clockless device (``exp``/``nbf`` are
        then not checked and, with ``require_expiry``, the token must carry ``exi``).
    :param audience: the audience(s) this RS identifies with; ``None`` skips the check (only for tools).
    :param issuer: when given, ``iss`` must be present and equal.
    :param leeway: allowed clock skew in seconds for ``exp``/``nbf``.
    :param require_expiry: refuse tokens with neither ``exp`` nor ``exi`` (a token that never expires).
    :param accept_scope: returns whether this RS recognises the ``scope`` claim (``None`` if absent).
    :param accept_cnonce: when set, the RS uses cnonce (RFC 9200 §5.3.1): returns whether it is fresh.
    """
    layers: list[cose.CoseObject] = []
    used: list[CoseKey] = []
    data: bytes = token
    while True:
        if len(layers) == MAX_NESTING:
            raise TokenMalformed("COSE nesting too deep")
        payload, obj, key = cose.verify(data, keys, max_size=max_size)
        layers.append(obj)
        used.append(key)
        if _starts_with_cose_tag(payload):
            data = payload
            continue
        break
    try:
        claims = Claims.from_cbor(payload, max_size=max_size)
    except WireFormatError as exc:
        raise ClaimsUnavailable(f"claims: {exc.detail}") from exc

    # RFC 9200 §5.10.1.1 priority order: iss, exp, aud, scope.
    if issuer is not None and claims.iss != issuer:
        raise IssuerMismatch(f"iss {claims.iss!r} is not {issuer!r}")
    if now is not None:
        if claims.exp is not None and not now < claims.exp + leeway:
            raise TokenExpired(f"expired at {claims.exp}, now {now}")
        if claims.nbf is not None and now + leeway < claims.nbf:
            raise TokenExpired(f"not valid before {claims.nbf}, now {now}")
    if require_expiry:
        has_expiry = claims.exi is not None or (now is not None and claims.exp is not None)
        if not has_expiry:
            raise TokenExpired("token carries no usable expiry (exp with a clock, or exi)")
    if audience is not None:
        wanted = {audience} if isinstance(audience, str) else set(audience)
        if not wanted.intersection(claims.audiences()):
            raise AudienceMismatch(f"aud {claims.aud!r} not in {sorted(wanted)}")
    if accept_scope is not None and not accept_scope(claims.scope):
        raise ScopeNotRecognized(f"scope {claims.scope!r} not recognised")
    if accept_cnonce is not None and not accept_cnonce(claims.cnonce):
        raise CnonceInvalid("cnonce missing or not fresh")
    return VerifiedToken(claims, tuple(layers), tuple(used))


def verify(token: bytes, keys: cose.KeyResolver, **kwargs: Any) -> Claims:
    """:func:`verify_token`, returning only the claims."""
    return verify_token(token, keys, **kwargs).claims


def _starts_with_cose_tag(payload: bytes) -> bool:
    # RFC 8392 §7.2 step 7: a payload that is itself a tagged COSE message is a nested CWT.
    # One-byte tag heads: 0xc0 + tag for tags < 24; tag 61 is 0xd8 0x3d.
    if not payload:
        return False
    head = payload[0]
    if head == 0xD8 and len(payload) > 1:
        return payload[1] == CoseTag.CWT
    return head - 0xC0 in _COSE_TAGS
