"""ACE-OAuth protocol messages as frozen dataclasses (RFC 9200, RFC 9201, RFC 9203).

Every message has two wire representations and converts between them without loss:

* **CBOR** (CoAP, ``application/ace+cbor``): a map with the integer keys of :mod:`ace_core.registry`
  (:class:`~ace_core.registry.TokenParam`, :class:`~ace_core.registry.IntrospectionParam`,
  :class:`~ace_core.registry.CreationHint`). :meth:`to_cbor` emits the entries, and those of nested maps, in
  RFC 8949 §4.2.1 order of the encoded keys, which for the registry's non-negative keys is ascending numeric
  order. Equal messages therefore encode identically, and the output matches the RFC figures (RFC 9200 Fig. 3).
* **JSON** (HTTP): an object with the RFC parameter *names* (``"access_token"``, ``"expires_in"``, ...).
  Registry values are written by name (``"client_credentials"``, ``"PoP"``, ``"coap_dtls"``,
  ``"invalid_request"``); a value without a registered name is written as a JSON number and read back the
  same way. Byte strings are base64url without padding (RFC 9200 §5.8.4.4 for ``cnonce``); the exception is
  ``client_secret``, which OAuth clients send as text (RFC 6749 §2.3.1), so it is the UTF-8 text of the bytes.

**JSON form of confirmation values** (``cnf``, ``req_cnf``, ``rs_cnf``): RFC 9201 §3.1 carries them as RFC 7800
§3.1 confirmation objects, which :class:`~ace_core.pop.Confirmation` produces: ``{"jwk": {...}}`` (the COSE_Key as
a JWK), ``{"kid": "<base64url>"}``, ``{"osc": {...}}`` (RFC 9203 §3.2.1 names) or ``{"Encrypted_COSE_Key":
"<base64url of the COSE_Encrypt0>"}``. A CBOR map that is not exactly one well-formed PoP key has no JSON form:
:meth:`to_json` raises :class:`ValueError`.

**Binary scopes** (RFC 9200 §5.8.1 allows ``scope`` as a byte string in CBOR) have no JSON form either: a JSON
``scope`` is always text (RFC 6749 §3.3), and :meth:`to_json` raises :class:`ValueError` for a byte scope.

**Unknown parameters** are kept in ``extra`` (integer or text keys in CBOR, names in JSON) and re-emitted
(STYLE §3.6 rule 9); an ``extra`` key must not shadow a known parameter. **Unknown registry values** decode to
plain ``int`` (:func:`ace_core.registry.lookup`).

**Decoding** (``from_cbor``, ``from_cbor_map``, ``from_json``, ``from_json_bytes``, ``from_form``) validates
every type strictly (``bool`` is never accepted as an integer, known parameters may not be ``null`` unless the
RFC says so) and raises only :class:`~ace_core.errors.WireFormatError`, or its subclass
:class:`~ace_core.errors.PayloadTooLarge` before parsing an oversized payload. Constructors trust their
(typed) caller; encoding an unrepresentable value raises :class:`ValueError`.
"""

from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self

from ace_core import cbor
from ace_core.errors import OAuthError, PayloadTooLarge, WireFormatError, oauth_error_class
from ace_core.keys import b64url_decode, b64url_encode, is_int
from ace_core.pop import Confirmation
from ace_core.registry import (
    AceProfile,
    CreationHint,
    ErrorCode,
    GrantType,
    IntrospectionParam,
    TokenParam,
    TokenType,
    lookup,
)

__all__ = [
    "ACE_PROFILE_REQUESTED",
    "AccessInformation",
    "AceProfileRequest",
    "AuthzInfoRequest",
    "AuthzInfoResponse",
    "CreationHints",
    "ErrorResponse",
    "IntrospectionRequest",
    "IntrospectionResponse",
    "TokenRequest",
    "TokenResponse",
    "dump_json",
    "parse_json",
]

#: Deepest nesting accepted inside ``cnf``-like maps and ``extra`` values. ACE structures nest a few levels;
#: the bound also stops cyclic structures that CBOR shared references (tags 28/29) can produce.
MAX_NESTING: Final = 32


class AceProfileRequest(Enum):
    """Marker for a token request that asks the AS to name the ACE profile. RFC 9200 §5.8.4.3.

    The client sends ``ace_profile`` as CBOR ``null`` (an empty string in JSON and forms); the AS then MUST
    include ``ace_profile`` in its response. :attr:`TokenRequest.ace_profile` is ``None`` when the parameter is
    absent and :data:`ACE_PROFILE_REQUESTED` when it was sent empty.
    """

    REQUESTED = "requested"


#: ``TokenRequest(ace_profile=ACE_PROFILE_REQUESTED)``: "tell me the profile" (RFC 9200 §5.8.4.3).
ACE_PROFILE_REQUESTED: Final = AceProfileRequest.REQUESTED


# --------------------------------------------------------------------------------------------------------------
# JSON text
# --------------------------------------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise WireFormatError(f"JSON constant {name} is not allowed")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise WireFormatError(f"JSON number {text[:20]!r} is out of range")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise WireFormatError(f"duplicate JSON member {key[:40]!r}")
        obj[key] = value
    return obj


def parse_json(data: bytes | bytearray | memoryview | str, *, max_size: int = cbor.DEFAULT_MAX_SIZE) -> Any:
    """Parse JSON text (RFC 8259) received from the network.

    The text must be UTF-8; ``NaN``/``Infinity``, numbers that overflow a float and duplicate member names are
    rejected.

    :param max_size: refuse payloads larger than this many bytes before parsing (:class:`PayloadTooLarge`).
    :raises WireFormatError: for any malformed input.
    """
    if isinstance(data, str):
        if len(data) > max_size:  # cheap bound first: UTF-8 is never shorter than the character count
            raise PayloadTooLarge(f"payload of {len(data)}+ bytes exceeds the limit of {max_size}")
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise WireFormatError("JSON text is not valid Unicode") from exc
    elif isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
    else:
        raise WireFormatError(f"expected JSON text, got {type(data).__name__}")
    if len(raw) > max_size:
        raise PayloadTooLarge(f"payload of {len(raw)} bytes exceeds the limit of {max_size}")
    try:
        text = raw.decode("utf-8")
        return json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except WireFormatError:
        raise
    except RecursionError as exc:
        raise WireFormatError("JSON nesting too deep") from exc
    except (ValueError, TypeError, OverflowError) as exc:  # JSONDecodeError, UnicodeDecodeError, int digits
        raise WireFormatError(f"malformed JSON: {exc}") from exc


def dump_json(obj: Any) -> bytes:
    """Serialise a JSON value compactly as UTF-8 with sorted member names, so equal values give equal bytes.

    :raises ValueError: for ``NaN`` or ``Infinity``.
    :raises TypeError: for values JSON cannot carry (bytes, sets, ...).
    """
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False, sort_keys=True)
    return text.encode("utf-8")


# --------------------------------------------------------------------------------------------------------------
# Value checks shared by the codecs
# --------------------------------------------------------------------------------------------------------------

# Canonical decimal integers only, so that a text label never aliases an integer label ("-0", "01" stay text).
_INT_LABEL = re.compile(r"0|-?[1-9][0-9]*")
_b64url_encode = b64url_encode
_b64url_decode = b64url_decode
_is_int = is_int


def _expect_int(value: Any, *, unsigned: bool = False) -> int:
    if not _is_int(value):
        raise WireFormatError(f"expected an integer, got {type(value).__name__}")
    if unsigned and value < 0:
        raise WireFormatError("expected an unsigned integer")
    return int(value)


def _expect_text(value: Any) -> str:
    if not isinstance(value, str):
        raise WireFormatError(f"expected a text string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates from JSON "\ud800" escapes
        raise WireFormatError("text string is not valid Unicode") from exc
    return value


def _expect_bytes(value: Any) -> bytes:
    if not isinstance(value, bytes):
        raise WireFormatError(f"expected a byte string, got {type(value).__name__}")
    return value


def _check_label(key: Any) -> None:
    if not (_is_int(key) or isinstance(key, str)):
        raise WireFormatError(f"map keys must be integers or text, got {type(key).__name__}")


def _check_cbor_data(value: Any, depth: int = 0) -> None:
    """Accept only the CBOR data model (no datetimes, sets, ... that cbor2 builds from semantic tags)."""
    if depth > MAX_NESTING:
        raise WireFormatError("CBOR structure nested too deeply")
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return
    if isinstance(value, list):
        for item in value:
            _check_cbor_data(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_label(key)
            _check_cbor_data(item, depth + 1)
    elif isinstance(value, cbor.CBORTag):
        _check_cbor_data(value.value, depth + 1)
    else:
        raise WireFormatError(f"unsupported CBOR item {type(value).__name__}")


def _check_json_data(value: Any, depth: int = 0) -> None:
    """Accept only values that :func:`json.dumps` renders as standard JSON."""
    if depth > MAX_NESTING:
        raise WireFormatError("JSON structure nested too deeply")
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, str):
        _expect_text(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise WireFormatError("non-finite number")
    elif isinstance(value, list):
        for item in value:
            _check_json_data(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            _expect_text(key)
            _check_json_data(item, depth + 1)
    else:
        raise WireFormatError(f"unsupported JSON value {type(value).__name__}")


# --------------------------------------------------------------------------------------------------------------
# Codecs: how one parameter's value is checked and converted
# --------------------------------------------------------------------------------------------------------------


class _Codec(ABC):
    """Base codec: the CBOR value is the Python value, and JSON reuses the CBOR checks."""

    #: An empty form value is the parameter's value rather than "omitted" (RFC 6749 §3.2).
    empty_is_value: ClassVar[bool] = False

    @abstractmethod
    def from_cbor(self, value: Any) -> Any:
        """Check and convert a decoded CBOR value; :raises WireFormatError:"""

    def to_cbor(self, value: Any) -> Any:
        return value

    def from_json(self, value: Any) -> Any:
        return self.from_cbor(value)

    def to_json(self, value: Any) -> Any:
        return value


class _Bytes(_Codec):
    """Byte string; base64url without padding in JSON."""

    def from_cbor(self, value: Any) -> bytes:
        return _expect_bytes(value)

    def from_json(self, value: Any) -> bytes:
        return _b64url_decode(_expect_text(value))

    def to_json(self, value: Any) -> str:
        return _b64url_encode(value)


class _Utf8Bytes(_Bytes):
    """Byte string in CBOR that OAuth sends as plain text in JSON and forms (``client_secret``)."""

    def from_json(self, value: Any) -> bytes:
        return _expect_text(value).encode("utf-8")

    def to_json(self, value: Any) -> str:
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError("a non-UTF-8 client_secret has no JSON or form representation") from exc


class _Text(_Codec):
    def from_cbor(self, value: Any) -> str:
        return _expect_text(value)


class _Uint(_Codec):
    def from_cbor(self, value: Any) -> int:
        return _expect_int(value, unsigned=True)


class _Bool(_Codec):
    def from_cbor(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise WireFormatError(f"expected true or false, got {type(value).__name__}")
        return value


class _NumericDate(_Codec):
    """RFC 8392 §2 NumericDate: integer or (finite) floating-point seconds, untagged."""

    def from_cbor(self, value: Any) -> int | float:
        if _is_int(value):
            return int(value)
        if isinstance(value, float) and math.isfinite(value):
            return value
        raise WireFormatError(f"expected a NumericDate, got {type(value).__name__}")


class _Scope(_Codec):
    """Text or byte string in CBOR (RFC 9200 §5.8.1); text only in JSON (RFC 6749 §3.3)."""

    def from_cbor(self, value: Any) -> str | bytes:
        if isinstance(value, bytes):
            return value
        return _expect_text(value)

    def from_json(self, value: Any) -> str:
        return _expect_text(value)

    def to_json(self, value: Any) -> str:
        if isinstance(value, bytes):
            raise ValueError("a binary scope has no JSON representation (RFC 6749 §3.3 scopes are text)")
        return str(value)


class _CoseMap(_Codec):
    """A ``cnf``-like map (RFC 9201 §3.1, RFC 8747 §3.1). In JSON it takes the RFC 7800 §3.1 form that RFC 9201
    §3.1 prescribes (``jwk`` / ``kid``, plus ``osc`` of RFC 9203 §3.2.1), via :class:`~ace_core.pop.Confirmation`."""

    def from_cbor(self, value: Any) -> dict[Any, Any]:
        if not isinstance(value, dict):
            raise WireFormatError(f"expected a map, got {type(value).__name__}")
        _check_cbor_data(value)
        return value

    def to_cbor(self, value: Any) -> dict[Any, Any]:
        return dict(value)

    def from_json(self, value: Any) -> dict[Any, Any]:
        if not isinstance(value, dict):
            raise WireFormatError(f"expected a JSON object, got {type(value).__name__}")
        _check_json_data(value)
        try:
            return Confirmation.from_json(value).to_cbor_map()
        except (ValueError, TypeError, KeyError) as exc:
            if isinstance(exc, WireFormatError):
                raise
            raise WireFormatError(f"invalid confirmation object: {exc}") from exc

    def to_json(self, value: Any) -> dict[str, Any]:
        try:
            return Confirmation.from_cbor_map(dict(value)).to_json()
        except WireFormatError as exc:
            raise ValueError(f"this cnf value has no JSON form: {exc}") from exc


class _Registry(_Codec):
    """An integer from an IANA table (:func:`lookup`); by name in JSON, a JSON number when unregistered."""

    def __init__(
        self,
        enum: type[IntEnum],
        names: Mapping[IntEnum, str],
        *,
        unsigned: bool = False,
        case_insensitive: bool = False,
    ) -> None:
        self.enum = enum
        self.names = dict(names)
        self.unsigned = unsigned
        self.case_insensitive = case_insensitive
        fold = str.lower if case_insensitive else str
        self.by_name = {fold(name): member for member, name in names.items()}

    def from_cbor(self, value: Any) -> Any:
        return lookup(self.enum, _expect_int(value, unsigned=self.unsigned))

    def to_cbor(self, value: Any) -> Any:
        return int(value)

    def from_json(self, value: Any) -> Any:
        if isinstance(value, str):
            key = value.lower() if self.case_insensitive else value
            try:
                return self.by_name[key]
            except KeyError:
                raise WireFormatError(f"unknown {self.enum.__name__} name {value[:40]!r}") from None
        return self.from_cbor(value)

    def to_json(self, value: Any) -> Any:
        member = lookup(self.enum, int(value))
        return self.names.get(member, int(value)) if isinstance(member, IntEnum) else int(value)


class _RequestableProfile(_Registry):
    """``ace_profile`` in a token request: CBOR ``null`` / JSON ``""`` asks for the profile (RFC 9200 §5.8.4.3)."""

    empty_is_value = True

    def from_cbor(self, value: Any) -> Any:
        return ACE_PROFILE_REQUESTED if value is None else super().from_cbor(value)

    def to_cbor(self, value: Any) -> Any:
        return None if value is ACE_PROFILE_REQUESTED else super().to_cbor(value)

    def from_json(self, value: Any) -> Any:
        return ACE_PROFILE_REQUESTED if value == "" else super().from_json(value)

    def to_json(self, value: Any) -> Any:
        return "" if value is ACE_PROFILE_REQUESTED else super().to_json(value)


class _TokenTypeHint(_Codec):
    """``token_type_hint``: text per RFC 9200 Table 6, an integer (:class:`TokenType`) per Fig. 9; both kept."""

    def from_cbor(self, value: Any) -> Any:
        if isinstance(value, str):
            return _expect_text(value)
        return lookup(TokenType, _expect_int(value))

    def to_cbor(self, value: Any) -> Any:
        return value if isinstance(value, str) else int(value)

    to_json = to_cbor


_GRANT_TYPE_NAMES: Final[Mapping[IntEnum, str]] = {
    GrantType.PASSWORD: "password",
    GrantType.AUTHORIZATION_CODE: "authorization_code",
    GrantType.CLIENT_CREDENTIALS: "client_credentials",
    GrantType.REFRESH_TOKEN: "refresh_token",
}
_TOKEN_TYPE_NAMES: Final[Mapping[IntEnum, str]] = {TokenType.BEARER: "Bearer", TokenType.POP: "PoP"}
_ACE_PROFILE_NAMES: Final[Mapping[IntEnum, str]] = {
    AceProfile.COAP_DTLS: "coap_dtls",
    AceProfile.COAP_OSCORE: "coap_oscore",
}
_ERROR_NAMES: Final[Mapping[IntEnum, str]] = {
    ErrorCode.INVALID_REQUEST: "invalid_request",
    ErrorCode.INVALID_CLIENT: "invalid_client",
    ErrorCode.INVALID_GRANT: "invalid_grant",
    ErrorCode.UNAUTHORIZED_CLIENT: "unauthorized_client",
    ErrorCode.UNSUPPORTED_GRANT_TYPE: "unsupported_grant_type",
    ErrorCode.INVALID_SCOPE: "invalid_scope",
    ErrorCode.UNSUPPORTED_POP_KEY: "unsupported_pop_key",
    ErrorCode.INCOMPATIBLE_ACE_PROFILES: "incompatible_ace_profiles",
}

_BYTES: Final = _Bytes()
_UTF8_BYTES: Final = _Utf8Bytes()
_TEXT: Final = _Text()
_UINT: Final = _Uint()
_BOOL: Final = _Bool()
_NUMERIC_DATE: Final = _NumericDate()
_SCOPE: Final = _Scope()
_COSE_MAP: Final = _CoseMap()
_GRANT_TYPE: Final = _Registry(GrantType, _GRANT_TYPE_NAMES, unsigned=True)  # uint, RFC 9200 Table 5
# RFC 6749 §7.1 (via §5.1): the token_type value is case insensitive.
_TOKEN_TYPE: Final = _Registry(TokenType, _TOKEN_TYPE_NAMES, case_insensitive=True)
_ACE_PROFILE: Final = _Registry(AceProfile, _ACE_PROFILE_NAMES)
_REQUESTABLE_PROFILE: Final = _RequestableProfile(AceProfile, _ACE_PROFILE_NAMES)
_ERROR: Final = _Registry(ErrorCode, _ERROR_NAMES)
_TOKEN_TYPE_HINT: Final = _TokenTypeHint()


@dataclass(frozen=True, slots=True)
class _Param:
    """One parameter: dataclass attribute, CBOR key (a registry member), JSON name, value codec."""

    attr: str
    key: IntEnum
    name: str
    codec: _Codec
    required: bool = False


def _deterministic(entries: Mapping[Any, Any]) -> dict[Any, Any]:
    """Order map entries by their encoded keys (RFC 8949 §4.2.1): ascending for non-negative integer keys."""
    return dict(sorted(entries.items(), key=lambda item: cbor.dumps(item[0])))


def _canonical(value: Any) -> Any:
    """``value`` with every nested map in RFC 8949 §4.2.1 key order, so equal messages encode identically.

    The RFC examples (RFC 9200 Fig. 7, RFC 9201 Fig. 1, RFC 9202 Fig. 9, RFC 9203 §3.2) already use this order.
    """
    if isinstance(value, Mapping):
        return _deterministic({key: _canonical(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    if isinstance(value, cbor.CBORTag):
        return cbor.CBORTag(value.tag, _canonical(value.value))
    return value


# --------------------------------------------------------------------------------------------------------------
# Message base
# --------------------------------------------------------------------------------------------------------------


class _Message:
    """Shared codec logic; subclasses are frozen dataclasses declaring ``_PARAMS`` and an ``extra`` field."""

    __slots__ = ()

    _PARAMS: ClassVar[tuple[_Param, ...]] = ()
    _BY_KEY: ClassVar[dict[int, _Param]] = {}
    _BY_NAME: ClassVar[dict[str, _Param]] = {}
    _REQUIRED: ClassVar[tuple[_Param, ...]] = ()

    if TYPE_CHECKING:
        extra: Mapping[int | str, Any]

        def __init__(self, **kwargs: Any) -> None: ...

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._BY_KEY = {int(p.key): p for p in cls._PARAMS}
        cls._BY_NAME = {p.name: p for p in cls._PARAMS}
        cls._REQUIRED = tuple(p for p in cls._PARAMS if p.required)

    def __post_init__(self) -> None:
        if not self.extra:
            object.__setattr__(self, "extra", _NO_EXTRA)  # the common case: share one empty read-only mapping
            return
        for key in self.extra:
            if not (_is_int(key) or isinstance(key, str)):
                raise TypeError(f"extra keys must be int or str, not {type(key).__name__}")
            if (key in self._BY_NAME) if isinstance(key, str) else (key in self._BY_KEY):
                raise ValueError(f"extra key {key!r} shadows a known {type(self).__name__} parameter")
        # Freeze a private copy: the dataclass is immutable, so its mapping must be too.
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    # -- CBOR ----------------------------------------------------------------------------------------------

    def to_cbor_map(self) -> dict[int | str, Any]:
        """The CBOR map: registry keys as plain ``int`` plus ``extra``, every map in RFC 8949 §4.2.1 order."""
        entries: dict[int | str, Any] = {}
        for p in self._PARAMS:
            value = getattr(self, p.attr)
            if value is not None:
                entries[int(p.key)] = p.codec.to_cbor(value)
        entries.update(self.extra)
        return _deterministic({key: _canonical(value) for key, value in entries.items()})

    def to_cbor(self) -> bytes:
        """Encode as ``application/ace+cbor`` (RFC 9200 §5)."""
        return cbor.dumps(self.to_cbor_map())

    @classmethod
    def from_cbor_map(cls, m: Any) -> Self:
        """Build the message from a decoded CBOR map.

        :raises WireFormatError: ``m`` is not a map, a value has the wrong type, or a required one is missing.
        """
        if not isinstance(m, dict):
            raise WireFormatError(f"{cls.__name__}: expected a CBOR map, got {type(m).__name__}")
        kwargs: dict[str, Any] = {}
        extra: dict[int | str, Any] = {}
        for key, value in m.items():
            if type(key) is int:  # what cbor2 gives for every registered parameter
                p = cls._BY_KEY.get(key)
            else:
                _check_label(key)
                p = cls._BY_KEY.get(key) if _is_int(key) else None
            if p is None:
                _check_cbor_data(value)
                extra[key] = value
                continue
            try:
                kwargs[p.attr] = p.codec.from_cbor(value)
            except WireFormatError as exc:
                raise WireFormatError(f"{cls.__name__}: {p.name} ({int(p.key)}): {exc}") from exc
        return cls._build(kwargs, extra)

    @classmethod
    def from_cbor(cls, data: bytes, *, max_size: int = cbor.DEFAULT_MAX_SIZE) -> Self:
        """Decode ``application/ace+cbor`` bytes (RFC 9200 §5).

        :param max_size: refuse larger payloads before parsing (:class:`~ace_core.errors.PayloadTooLarge`).
        :raises WireFormatError: for any malformed input.
        """
        try:
            decoded = cbor.loads(data, max_size=max_size)
        except ArithmeticError as exc:
            # cbor2 raises decimal.InvalidOperation/Overflow for malformed tag 4/5 content, which
            # cbor.loads (as of this writing) does not translate; keep this codec's contract regardless.
            raise WireFormatError(f"malformed CBOR: {exc}") from exc
        return cls.from_cbor_map(decoded)

    # -- JSON ----------------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The JSON object with RFC parameter names (see the module docstring for the value mapping).

        :raises ValueError: a value has no JSON form (binary scope, integer ``extra`` key, ...).
        """
        obj: dict[str, Any] = {}
        for p in self._PARAMS:
            value = getattr(self, p.attr)
            if value is not None:
                obj[p.name] = p.codec.to_json(value)
        for key, value in self.extra.items():
            if not isinstance(key, str):
                raise ValueError(f"extra parameter {key!r} has no JSON name")
            try:
                _check_json_data(value)
            except WireFormatError as exc:
                raise ValueError(f"extra parameter {key!r}: {exc}") from None
            obj[key] = value
        return obj

    def to_json_bytes(self) -> bytes:
        """:meth:`to_json` serialised as compact UTF-8 JSON text."""
        return dump_json(self.to_json())

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        """Build the message from a parsed JSON object.

        :raises WireFormatError: ``obj`` is not an object, a value has the wrong type, or one is missing.
        """
        if not isinstance(obj, dict):
            raise WireFormatError(f"{cls.__name__}: expected a JSON object, got {type(obj).__name__}")
        kwargs: dict[str, Any] = {}
        extra: dict[int | str, Any] = {}
        for key, value in obj.items():
            name = _expect_text(key)
            p = cls._BY_NAME.get(name)
            if p is None:
                _check_json_data(value)
                extra[name] = value
                continue
            try:
                kwargs[p.attr] = p.codec.from_json(value)
            except WireFormatError as exc:
                raise WireFormatError(f"{cls.__name__}: {p.name}: {exc}") from exc
        return cls._build(kwargs, extra)

    @classmethod
    def from_json_bytes(cls, data: bytes | str, *, max_size: int = cbor.DEFAULT_MAX_SIZE) -> Self:
        """Parse JSON text (:func:`parse_json`) into the message.

        :raises WireFormatError: for any malformed input (:class:`PayloadTooLarge` above ``max_size``).
        """
        return cls.from_json(parse_json(data, max_size=max_size))

    # -- forms (RFC 6749 Appendix B) -----------------------------------------------------------------------

    @classmethod
    def _from_form(cls, fields: Any, max_size: int) -> Self:
        if not isinstance(fields, Mapping):
            raise WireFormatError(f"{cls.__name__}: expected form fields, got {type(fields).__name__}")
        obj: dict[str, Any] = {}
        for key, value in fields.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise WireFormatError(f"{cls.__name__}: form names and values must be text")
            p = cls._BY_NAME.get(key)
            if value == "" and not (p is not None and p.codec.empty_is_value):
                continue  # RFC 6749 §3.2: a parameter sent without a value is treated as omitted
            # Structured parameters (req_cnf) arrive as JSON text inside the form field.
            obj[key] = parse_json(value, max_size=max_size) if p is not None and p.codec is _COSE_MAP else value
        return cls.from_json(obj)

    def _to_form(self) -> dict[str, str]:
        form: dict[str, str] = {}
        for key, value in self.to_json().items():
            p = self._BY_NAME.get(key)
            if isinstance(value, dict):
                form[key] = dump_json(value).decode("utf-8")
            elif isinstance(value, str):
                if value == "" and not (p is not None and p.codec.empty_is_value):
                    raise ValueError(f"{key} cannot be sent empty in a form (RFC 6749 §3.2: it means omitted)")
                form[key] = value
            else:
                raise ValueError(f"{key} = {value!r} has no form representation")
        return form

    @classmethod
    def _build(cls, kwargs: dict[str, Any], extra: dict[int | str, Any]) -> Self:
        missing = [p.name for p in cls._REQUIRED if p.attr not in kwargs]
        if missing:
            raise WireFormatError(f"{cls.__name__}: missing required {', '.join(missing)}")
        try:
            return cls(**kwargs, extra=extra)
        except (TypeError, ValueError) as exc:  # an extra key that shadows a parameter name
            raise WireFormatError(f"{cls.__name__}: {exc}") from exc


def _extra() -> Mapping[int | str, Any]:
    return {}


#: The ``extra`` of every message without unknown parameters (immutable, so one instance serves all).
_NO_EXTRA: Mapping[int | str, Any] = MappingProxyType({})


# --------------------------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRequest(_Message):
    """Token request of the client to the AS token endpoint. RFC 9200 §5.8.1 (Table 5), RFC 9201 §3.1.

    ``grant_type`` ``None`` means absent, which implies ``client_credentials`` (:attr:`effective_grant_type`).
    ``ace_profile`` is ``None`` when absent and :data:`ACE_PROFILE_REQUESTED` when sent as CBOR ``null`` / JSON
    ``""`` to ask the AS for the profile (RFC 9200 §5.8.4.3). ``client_secret`` is a byte string in CBOR and
    UTF-8 text in JSON and forms. ``req_cnf`` is a ``cnf``-like map (RFC 8747 §3.1).
    """

    grant_type: GrantType | int | None = None
    client_id: str | None = None
    client_secret: bytes | None = None
    audience: str | None = None
    scope: str | bytes | None = None
    req_cnf: Mapping[Any, Any] | None = None
    ace_profile: AceProfile | int | AceProfileRequest | None = None
    cnonce: bytes | None = None
    code: bytes | None = None
    redirect_uri: str | None = None
    username: str | None = None
    password: str | None = None
    refresh_token: bytes | None = None
    state: str | None = None
    extra: Mapping[int | str, Any] = field(default_factory=_extra)

    _PARAMS: ClassVar[tuple[_Param, ...]] = (
        _Param("req_cnf", TokenParam.REQ_CNF, "req_cnf", _COSE_MAP),
        _Param("audience", TokenParam.AUDIENCE, "audience", _TEXT),
        _Param("scope", TokenParam.SCOPE, "scope", _SCOPE),
        _Param("client_id", TokenParam.CLIENT_ID, "client_id", _TEXT),
        _Param("client_secret", TokenParam.CLIENT_SECRET, "client_secret", _UTF8_BYTES),
        _Param("redirect_uri", TokenParam.REDIRECT_URI, "redirect_uri", _TEXT),
        _Param("state", TokenParam.STATE, "state", _TEXT),
        _Param("code", TokenParam.CODE, "code", _BYTES),
        _Param("grant_type", TokenParam.GRANT_TYPE, "grant_type", _GRANT_TYPE),
        _Param("username", TokenParam.USERNAME, "username", _TEXT),
        _Param("password", TokenParam.PASSWORD, "password", _TEXT),
        _Param("refresh_token", TokenParam.REFRESH_TOKEN, "refresh_token", _BYTES),
        _Param("ace_profile", TokenParam.ACE_PROFILE, "ace_profile", _REQUESTABLE_PROFILE),
        _Param("cnonce", TokenParam.CNONCE, "cnonce", _BYTES),
    )

    @property
    def effective_grant_type(self) -> GrantType | int:
        """The grant type, ``client_credentials`` when absent (RFC 9200 §5.8.1)."""
        return GrantType.CLIENT_CREDENTIALS if self.grant_type is None else self.grant_type

    @property
    def profile_requested(self) -> bool:
        """Whether the client asked the AS to name the ACE profile (RFC 9200 §5.8.4.3)."""
        return self.ace_profile is ACE_PROFILE_REQUESTED

    @classmethod
    def from_form(cls, fields: Mapping[str, str], *, max_size: int = cbor.DEFAULT_MAX_SIZE) -> TokenRequest:
        """Build from ``application/x-www-form-urlencoded`` fields (RFC 6749 Appendix B, RFC 9200 §5.8.1).

        The transport decodes the body (rejecting repeated names, RFC 6749 §3.2) and passes one value per name.
        Empty values count as omitted, except ``ace_profile`` where empty means "requested"; ``req_cnf``
        arrives as JSON text in the project's COSE mapping.

        :param max_size: size limit for the embedded JSON text.
        :raises WireFormatError: for any malformed field.
        """
        return cls._from_form(fields, max_size)

    def to_form(self) -> dict[str, str]:
        """The fields of an ``application/x-www-form-urlencoded`` body (inverse of :meth:`from_form`).

        :raises ValueError: a value has no form representation (binary scope, empty text, unnamed number).
        """
        return self._to_form()


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessInformation(_Message):
    """Successful token response ("Access Information"). RFC 9200 §5.8.2 Table 2, RFC 9201 §3.2, RFC 9203 §3.2.

    ``token_type`` ``None`` means absent, for which the client SHOULD assume PoP (:attr:`effective_token_type`).
    ``ace_profile`` is an integer in CBOR: the text ``"coap_dtls"`` of RFC 9200 Fig. 7 (erratum 8232) is
    rejected as malformed.
    """

    access_token: bytes
    token_type: TokenType | int | None = None
    expires_in: int | None = None
    refresh_token: bytes | None = None
    scope: str | bytes | None = None
    state: str | None = None
    ace_profile: AceProfile | int | None = None
    cnf: Mapping[Any, Any] | None = None
    rs_cnf: Mapping[Any, Any] | None = None
    extra: Mapping[int | str, Any] = field(default_factory=_extra)

    _PARAMS: ClassVar[tuple[_Param, ...]] = (
        _Param("access_token", TokenParam.ACCESS_TOKEN, "access_token", _BYTES, required=True),
        _Param("expires_in", TokenParam.EXPIRES_IN, "expires_in", _UINT),
        _Param("cnf", TokenParam.CNF, "cnf", _COSE_MAP),
        _Param("scope", TokenParam.SCOPE, "scope", _SCOPE),
        _Param("state", TokenParam.STATE, "state", _TEXT),
        _Param("token_type", TokenParam.TOKEN_TYPE, "token_type", _TOKEN_TYPE),
        _Param("refresh_token", TokenParam.REFRESH_TOKEN, "refresh_token", _BYTES),
        _Param("ace_profile", TokenParam.ACE_PROFILE, "ace_profile", _ACE_PROFILE),
        _Param("rs_cnf", TokenParam.RS_CNF, "rs_cnf", _COSE_MAP),
    )

    @property
    def effective_token_type(self) -> TokenType | int:
        """The token type, PoP when absent (RFC 9200 §5.8.2)."""
        return TokenType.POP if self.token_type is None else self.token_type


#: The token endpoint's success response is the Access Information (RFC 9200 §5.8.2).
TokenResponse = AccessInformation


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorResponse(_Message):
    """Error response of the token endpoint: ``{30: code, ?31: text, ?32: uri}``. RFC 9200 §5.8.3.

    ``error_description`` is not checked against the RFC 6749 §5.2 character set when decoding (peers get it
    wrong); :meth:`to_exception` moves a non-conforming one into the exception's log-only detail.
    """

    error: ErrorCode | int
    error_description: str | None = None
    error_uri: str | None = None
    extra: Mapping[int | str, Any] = field(default_factory=_extra)

    _PARAMS: ClassVar[tuple[_Param, ...]] = (
        _Param("error", TokenParam.ERROR, "error", _ERROR, required=True),
        _Param("error_description", TokenParam.ERROR_DESCRIPTION, "error_description", _TEXT),
        _Param("error_uri", TokenParam.ERROR_URI, "error_uri", _TEXT),
    )

    def to_exception(self) -> OAuthError | None:
        """The :class:`~ace_core.errors.OAuthError` subclass instance for :attr:`error`.

        :returns: ``None`` for an unregistered error code: there is no class to raise that would not misstate
            the code, so the caller decides (e.g. treat it as a generic failure).
        """
        error_class = oauth_error_class(self.error)
        if error_class is None:
            return None
        try:
            return error_class(self.error_description, uri=self.error_uri)
        except ValueError:  # description outside RFC 6749 §5.2: keep it for logs only
            return error_class(None, uri=self.error_uri, detail=f"error_description {self.error_description!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class CreationHints(_Message):
    """AS Request Creation Hints sent by the RS with 4.01. RFC 9200 §5.3 Table 1 (``as_uri`` is ``AS``)."""

    as_uri: str | None = None
    kid: bytes | None = None
    audience: str | None = None
    scope: str | bytes | None = None
    cnonce: bytes | None = None
    extra: Mapping[int | str, Any] = field(default_factory=_extra)

    _PARAMS: ClassVar[tuple[_Param, ...]] = (
        _Param("as_uri", CreationHint.AS, "AS", _TEXT),
        _Param("kid", CreationHint.KID, "kid", _BYTES),
        _Param("audience", CreationHint.AUDIENCE, "audience", _TEXT),
        _Param("scope", CreationHint.SCOPE, "scope", _SCOPE),
        _Param("cnonce", CreationHint.CNONCE, "cnonce", _BYTES),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class IntrospectionRequest(_Message):
    """Introspection request to the AS. RFC 9200 §5.9.1 (Table 6 keys), RFC 7662 §2.1.

    ``token_type_hint`` is text per Table 6 but an integer (:class:`~ace_core.registry.TokenType`) in Fig. 9;
    both are accepted and kept as sent.
    """

    token: bytes
    token_type_hint: TokenType | int | str | None = None
    client_id: str | None = None
    extra: Mapping[int | str, Any] = field(default_factory=_extra)

    _PARAMS: ClassVar[tuple[_Param, ...]] = (
        _Param("token", IntrospectionParam.TOKEN, "token", _BYTES, required=True),
        _Param("client_id", IntrospectionParam.CLIENT_ID, "client_id", _TEXT),
        _Param("token_type_hint", IntrospectionParam.TOKEN_TYPE_HINT, "token_type_hint", _TOKEN_TYPE_HINT),
    )

    @classmethod
    def from_form(cls, fields: Mapping[str, str], *, max_size: int = cbor.DEFAULT_MAX_SIZE) -> IntrospectionRequest:
        """Build from ``application/x-www-form-urlencoded`` fields (RFC 7662 §2.1); ``token`` is base64url.

        :raises WireFormatError: for any malformed field.
        """
        return cls._from_form(fields, max_size)

    def to_form(self) -> dict[str, str]:
        """The form fields (inverse of :meth:`from_form`). :raises ValueError: integer ``token_type_hint``."""
        return self._to_form()


@dataclass(frozen=True, slots=True, kw_only=True)
class IntrospectionResponse(_Message):
    """Introspection response of the AS. RFC 9200 §5.9.2 Table 6, RFC 9201 §10.3 (``cnf``), RFC 7662 §2.2.

    ``active`` is required; an inactive token is a 2.01 with ``active`` false, not an error (§5.9.2). The error
    parameters (§5.9.3) are explicit fields. ``exp``/``nbf``/``iat`` are NumericDates (int or float).
    """

    active: bool
    iss: str | None = None
    sub: str | None = None
    aud: str | None = None
    exp: int | float | None = None
    nbf: int | float | None = None
    iat: int | float | None = None
    cti: bytes | None = None
    cnf: Mapping[Any, Any] | None = None
    scope: str | bytes | None = None
    client_id: str | None = None
    token_type: TokenType | int | None = None
    username: str | None = None
    ace_profile: AceProfile | int | None = None
    cnonce: bytes | None = None
    exi: int | None = None
    error: ErrorCode | int | None = None
    error_description: str | None = None
    error_uri: str | None = None
    extra: Mapping[int | str, Any] = field(default_factory=_extra)

    _PARAMS: ClassVar[tuple[_Param, ...]] = (
        _Param("iss", IntrospectionParam.ISS, "iss", _TEXT),
        _Param("sub", IntrospectionParam.SUB, "sub", _TEXT),
        _Param("aud", IntrospectionParam.AUD, "aud", _TEXT),
        _Param("exp", IntrospectionParam.EXP, "exp", _NUMERIC_DATE),
        _Param("nbf", IntrospectionParam.NBF, "nbf", _NUMERIC_DATE),
        _Param("iat", IntrospectionParam.IAT, "iat", _NUMERIC_DATE),
        _Param("cti", IntrospectionParam.CTI, "cti", _BYTES),
        _Param("cnf", IntrospectionParam.CNF, "cnf", _COSE_MAP),
        _Param("scope", IntrospectionParam.SCOPE, "scope", _SCOPE),
        _Param("active", IntrospectionParam.ACTIVE, "active", _BOOL, required=True),
        _Param("client_id", IntrospectionParam.CLIENT_ID, "client_id", _TEXT),
        _Param("error", IntrospectionParam.ERROR, "error", _ERROR),
        _Param("error_description", IntrospectionParam.ERROR_DESCRIPTION, "error_description", _TEXT),
        _Param("error_uri", IntrospectionParam.ERROR_URI, "error_uri", _TEXT),
        _Param("token_type", IntrospectionParam.TOKEN_TYPE, "token_type", _TOKEN_TYPE),
        _Param("username", IntrospectionParam.USERNAME, "username", _TEXT),
        _Param("ace_profile", IntrospectionParam.ACE_PROFILE, "ace_profile", _ACE_PROFILE),
        _Param("cnonce", IntrospectionParam.CNONCE, "cnonce", _BYTES),
        _Param("exi", IntrospectionParam.EXI, "exi", _UINT),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthzInfoRequest(_Message):
    """POST to ``/authz-info`` in the OSCORE profile: ``{1: token, 40: N1, 43: ID1}``. RFC 9203 §4.1.

    ``nonce1`` and ``ace_client_recipientid`` are required for a first token but absent when a token is
    updated over OSCORE (RFC 9203 §4.1), so they are optional here; the RS checks which case applies.
    """

    access_token: bytes
    nonce1: bytes | None = None
    ace_client_recipientid: bytes | None = None
    extra: Mapping[int | str, Any] = field(default_factory=_extra)

    _PARAMS: ClassVar[tuple[_Param, ...]] = (
        _Param("access_token", TokenParam.ACCESS_TOKEN, "access_token", _BYTES, required=True),
        _Param("nonce1", TokenParam.NONCE1, "nonce1", _BYTES),
        _Param("ace_client_recipientid", TokenParam.ACE_CLIENT_RECIPIENTID, "ace_client_recipientid", _BYTES),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthzInfoResponse(_Message):
    """2.01 response of ``/authz-info`` in the OSCORE profile: ``{42: N2, 44: ID2}``. RFC 9203 §4.2."""

    nonce2: bytes
    ace_server_recipientid: bytes
    extra: Mapping[int | str, Any] = field(default_factory=_extra)

    _PARAMS: ClassVar[tuple[_Param, ...]] = (
        _Param("nonce2", TokenParam.NONCE2, "nonce2", _BYTES, required=True),
        _Param(
            "ace_server_recipientid",
            TokenParam.ACE_SERVER_RECIPIENTID,
            "ace_server_recipientid",
            _BYTES,
            required=True,
        ),
    )
