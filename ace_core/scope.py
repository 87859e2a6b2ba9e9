"""Access-token scopes: RFC 6749 text scopes and RFC 9237 AIF-REST scopes.

RFC 9200 lets ``scope`` (token request/response parameter, §5.8.1/§5.8.2; CWT claim, §5.10 and §8.14 after
RFC 8693 §4.2; AS Request Creation Hints, §5.3) be a text string or a byte string. This module offers two
scope types that share the :class:`Scope` protocol:

* :class:`TextScope` -- space-separated scope tokens, RFC 6749 §3.3. To the RS these are opaque names, so
  there is no ``permits(method, path)`` here; a policy maps names to rights.
* :class:`AifScope` -- the REST-specific Authorization Information Format of RFC 9237 §3,
  ``AIF-REST = [* [local-path, REST-method-set]]``: which CoAP/HTTP methods
  (:class:`~ace_core.registry.AifMethod`) are allowed on which resource of the RS. :meth:`AifScope.permits`
  and :meth:`AifScope.covers_path` are what an RS needs to answer 4.03 ("resource not covered") versus 4.05
  ("method not covered"), RFC 9200 §5.10.2.

Design decisions (not RFC rules; documented here so peers can be configured to match):

* **AIF as a byte-string scope.** RFC 9200 leaves the syntax of a byte-string scope to profiles (§5.8.1,
  §5.10) and RFC 9237 defines no ACE-specific scope format. Ostiary carries AIF in CBOR messages and CWTs as
  a byte string whose content is the ``application/aif+cbor`` encoding (RFC 9237 §5.3); a text-string scope
  is always a :class:`TextScope`. See :func:`decode_scope`.
* **AIF in JSON.** The JSON ``scope`` value (HTTP transport, RFC 6749 §3.3) must be a string, so an AIF
  scope is sent as the compact ``application/aif+json`` text (RFC 9237 §5.3), e.g.
  ``[["/s/temp",1],["/a/led",5]]``. Because a JSON string cannot say which kind it is, the receiver must ask
  for AIF: ``decode_scope(s, aif=True)``. (Base64url of the CBOR form is not used: nothing specifies it.)
* **Order.** Both types keep the order in which entries first appeared (parsing, construction, then the
  left operand of ``|``/``&``). Encoding is a deterministic function of that order, so the RFC 9237 example
  ``["/s/temp",1],["/a/led",5],["/dtls",2]`` (which is not sorted) round-trips byte for byte, and so does
  every text scope without duplicate tokens. Equality and hashing ignore order: scopes compare by the rights
  they grant.
* **Merging and zero entries.** Entries with the same path are merged by OR-ing their method sets (RFC 9237
  §3) at their first position. Entries whose method set is 0 grant nothing and are dropped, so that equal
  rights mean equal objects and the lattice laws (absorption) hold.
* **Unknown method bits.** Bits outside :class:`~ace_core.registry.AifMethod` (bits 7-31 and 39-63) are
  kept, so they round-trip (STYLE rule 9), but they never act: :meth:`AifScope.permits` only accepts the
  methods this module understands. That is the "act only on understood permissions" option of RFC 9237 §6.
  :meth:`AifScope.known_only` drops them explicitly.

Decoding untrusted input (:meth:`TextScope.parse`, :meth:`AifScope.from_cbor`, :meth:`AifScope.from_json`,
:meth:`AifScope.from_json_text`, :func:`decode_scope`) raises only :class:`~ace_core.errors.WireFormatError`
(:class:`~ace_core.errors.PayloadTooLarge` above ``max_size``); an RS maps that to
:class:`~ace_core.errors.ScopeNotRecognized` (RFC 9200 §5.10.1.1, 4.00). Building scopes from program
values (constructors, :meth:`AifScope.from_methods`, :meth:`AifScope.parse_spec`) raises ``ValueError`` or
``TypeError``.

>>> scope = AifScope.parse_spec("/lock:GET,PUT /battery:GET")
>>> scope.permits("PUT", "/lock"), scope.permits("DELETE", "/lock"), scope.covers_path("/door")
(True, False, False)
>>> scope.to_json_text()
'[["/lock",5],["/battery",1]]'
>>> (TextScope.parse("read write") & TextScope.parse("write admin")).encode()
'write'
"""

from __future__ import annotations

import functools
import json
import operator
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NoReturn, Protocol, Self, TypeAlias

from ace_core import cbor
from ace_core.cbor import DEFAULT_MAX_SIZE
from ace_core.errors import PayloadTooLarge, WireFormatError
from ace_core.registry import AifMethod

__all__ = [
    "AifScope",
    "MethodLike",
    "Scope",
    "TextScope",
    "aif_method",
    "decode_scope",
    "method_name",
]

#: A REST method as accepted by :meth:`AifScope.permits` and :func:`aif_method`: an
#: :class:`~ace_core.registry.AifMethod` flag, a CoAP method code (RFC 7252 §12.1.1, e.g. aiocoap's
#: ``Code.GET``) or a method name (``"GET"``, ``"iPATCH"``, ``"Dynamic-GET"``; case-insensitive).
MethodLike: TypeAlias = AifMethod | int | str

# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ); scope = scope-token *( SP scope-token ).
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
_SP = " "

# RFC 9237 §3: REST-method-set = uint .bits methods; a CBOR uint is below 2**64.
_UINT_LIMIT = 1 << 64
_NO_METHODS = AifMethod(0)
#: Every bit RFC 9237 §3 defines, i.e. every bit this module understands (RFC 9237 §6).
_KNOWN_BITS = functools.reduce(operator.or_, AifMethod, _NO_METHODS)


def _unknown_bits(mask: int) -> int:
    # Plain int arithmetic on purpose: ``~`` on an IntFlag only inverts within the highest defined bit (38), so
    # ``flag & ~_KNOWN_BITS`` would silently lose bits 39-63.
    return int(mask) & ~int(_KNOWN_BITS)


_DYNAMIC_PREFIX = "DYNAMIC_"
# RFC 9237 §3 spells the methods as CoAP does (iPATCH from RFC 8132); enum names cannot start in lower case.
_SPELLING_OVERRIDES = {"IPATCH": "iPATCH"}


def _rfc_spelling(member: AifMethod) -> str:
    name = member.name or ""
    if name.startswith(_DYNAMIC_PREFIX):
        base = name.removeprefix(_DYNAMIC_PREFIX)
        return "Dynamic-" + _SPELLING_OVERRIDES.get(base, base)
    return _SPELLING_OVERRIDES.get(name, name)


#: Single-bit members in ascending bit order, with their RFC 9237 spelling.
_NAMES: dict[AifMethod, str] = {member: _rfc_spelling(member) for member in AifMethod}
_BY_NAME: dict[str, AifMethod] = {}
for _member, _spelling in _NAMES.items():
    _BY_NAME[_spelling.casefold()] = _member
    _BY_NAME[(_member.name or "").casefold()] = _member
del _member, _spelling
#: CoAP method code -> bit, for the methods that are not Dynamic-X. RFC 9237 §3: bit = code - 1, so the
#: code is the flag's bit_length().
_BY_CODE: dict[int, AifMethod] = {
    m.value.bit_length(): m for m in AifMethod if not (m.name or "").startswith(_DYNAMIC_PREFIX)
}


def aif_method(method: MethodLike) -> AifMethod:
    """Convert a method designation into its :class:`~ace_core.registry.AifMethod` bit(s). RFC 9237 §3.

    * an :class:`~ace_core.registry.AifMethod` is returned as is (it may combine several understood bits);
    * an ``int`` is a CoAP method code (RFC 7252 §12.1.1; RFC 8132): GET = 1 ... iPATCH = 7, and
      bit = code - 1. Beware that ``AifMethod.PUT == 4`` while CoAP code 4 is DELETE: flags are recognised by
      their type first;
    * a ``str`` is a method name in RFC 9237 spelling (``"GET"``, ``"iPATCH"``, ``"Dynamic-PUT"``) or the enum
      name (``"DYNAMIC_PUT"``), case-insensitive.

    :raises ValueError: for an empty flag, a flag with bits outside :class:`~ace_core.registry.AifMethod`, an
        unknown code or an unknown name.
    :raises TypeError: for any other type (``bool`` included).
    """
    if isinstance(method, AifMethod):
        if method == _NO_METHODS:
            raise ValueError("empty method set")
        if _unknown_bits(method):
            raise ValueError(f"method bits {_unknown_bits(method):#x} are not understood (RFC 9237 §6)")
        return method
    if isinstance(method, bool):
        raise TypeError("a method must be an AifMethod, a CoAP method code or a name, not bool")
    if isinstance(method, int):
        flag = _BY_CODE.get(method)
        if flag is None:
            raise ValueError("not a CoAP request method code with an AIF bit (RFC 9237 §3)")
        return flag
    if isinstance(method, str):
        try:
            return _BY_NAME[method.casefold()]
        except KeyError:
            raise ValueError(f"unknown method name {method!r}") from None
    raise TypeError(f"a method must be an AifMethod, a CoAP method code or a name, not {type(method).__name__}")


def method_name(method: AifMethod) -> str:
    """The RFC 9237 §3 spelling of one understood method bit (``"GET"``, ``"iPATCH"``, ``"Dynamic-GET"``).

    :raises ValueError: if ``method`` is not exactly one bit of :class:`~ace_core.registry.AifMethod`.
    """
    try:
        return _NAMES[AifMethod(method)]
    except KeyError:
        raise ValueError(f"{method!r} is not a single understood AIF method") from None


def _check_size(text: str, max_size: int) -> None:
    # Characters never outnumber UTF-8 bytes, so the cheap test first; surrogatepass: a lone surrogate is
    # rejected later by validation, not by the size check.
    if len(text) > max_size or len(text.encode("utf-8", "surrogatepass")) > max_size:
        raise PayloadTooLarge(f"scope of more than {max_size} bytes")


class Scope(Protocol):
    """What the AS, RS and client need from any scope (RFC 9200 §5.8.1, §5.10; RFC 8693 §4.2).

    Implemented by :class:`TextScope` and :class:`AifScope`. Operations combine scopes of the same type only.
    """

    @property
    def is_empty(self) -> bool:
        """True if the scope grants nothing (an AS must then refuse with ``invalid_scope``, RFC 6749 §5.2)."""
        ...

    def union(self, other: Self) -> Self:
        """The rights of both scopes."""
        ...

    def intersection(self, other: Self) -> Self:
        """The rights common to both scopes (e.g. requested & allowed, RFC 9200 §5.8.1)."""
        ...

    def issubset(self, other: Self) -> bool:
        """True if every right of this scope is also granted by ``other``."""
        ...

    def encode_cbor_value(self) -> str | bytes:
        """The CBOR ``scope`` parameter/claim value: text, or bytes for AIF (RFC 9200 §5.8.5 Table 5)."""
        ...

    def encode_json_value(self) -> str:
        """The value of the JSON ``scope`` parameter (RFC 6749 §3.3; AIF as ``application/aif+json`` text)."""
        ...


class TextScope:
    """An immutable set of RFC 6749 §3.3 scope tokens, the text form of ``scope`` in RFC 9200 §5.8.1.

    Tokens keep the order of their first appearance (:meth:`encode` is deterministic, and
    ``parse(s).encode() == s`` for any well-formed ``s`` without duplicates); equality and hashing are those
    of the token set.

    :param tokens: the scope tokens; duplicates are merged.
    :raises ValueError: if a token is not ``1*( %x21 / %x23-5B / %x5D-7E )``.
    :raises TypeError: if ``tokens`` is a single ``str`` (use :meth:`parse`) or holds non-strings.
    """

    __slots__ = ("_tokens", "_set")

    _tokens: tuple[str, ...]
    _set: frozenset[str]

    def __init__(self, tokens: Iterable[str] = ()) -> None:
        if isinstance(tokens, str | bytes):
            raise TypeError("TextScope takes an iterable of tokens; use TextScope.parse() for a scope string")
        ordered: dict[str, None] = {}
        for token in tokens:
            if not isinstance(token, str):
                raise TypeError(f"scope tokens are str, not {type(token).__name__}")
            if not _SCOPE_TOKEN.fullmatch(token):
                raise ValueError(f"{token!r} is not an RFC 6749 §3.3 scope-token")
            ordered.setdefault(token, None)
        object.__setattr__(self, "_tokens", tuple(ordered))
        object.__setattr__(self, "_set", frozenset(ordered))

    @classmethod
    def _trusted(cls, tokens: Iterable[str]) -> Self:
        # Tokens that already passed validation (set algebra on existing scopes).
        scope = cls.__new__(cls)
        ordered = tuple(dict.fromkeys(tokens))
        object.__setattr__(scope, "_tokens", ordered)
        object.__setattr__(scope, "_set", frozenset(ordered))
        return scope

    @classmethod
    def parse(cls, text: str, *, max_size: int = DEFAULT_MAX_SIZE) -> Self:
        """Decode a scope string: ``scope-token *( SP scope-token )`` (RFC 6749 §3.3).

        Exactly one space separates tokens; leading, trailing or doubled spaces and the empty string are
        malformed.

        :param max_size: refuse longer strings (UTF-8 bytes) with :class:`~ace_core.errors.PayloadTooLarge`.
        :raises WireFormatError: for anything that is not a well-formed scope string.
        """
        if not isinstance(text, str):
            raise WireFormatError(f"a text scope is a str, not {type(text).__name__}")
        _check_size(text, max_size)
        tokens = text.split(_SP)
        for token in tokens:
            if not _SCOPE_TOKEN.fullmatch(token):
                raise WireFormatError("malformed scope string (RFC 6749 §3.3)")
        return cls._trusted(tokens)

    def encode(self) -> str:
        """The scope string, tokens separated by one space in first-seen order (RFC 6749 §3.3).

        :raises ValueError: if the scope is empty: RFC 6749 §3.3 requires at least one token, so an empty
            scope cannot be sent (an AS answers ``invalid_scope`` instead; check :attr:`is_empty` first).
        """
        if not self._tokens:
            raise ValueError("an empty scope has no RFC 6749 §3.3 encoding")
        return _SP.join(self._tokens)

    @property
    def tokens(self) -> tuple[str, ...]:
        """The tokens in first-seen order."""
        return self._tokens

    @property
    def is_empty(self) -> bool:
        """True if there are no tokens."""
        return not self._tokens

    def union(self, other: TextScope) -> TextScope:
        """Tokens of either scope: this scope's order, then ``other``'s new tokens."""
        if not isinstance(other, TextScope):
            raise TypeError(f"cannot combine TextScope with {type(other).__name__}")
        return TextScope._trusted(self._tokens + other._tokens)

    def intersection(self, other: TextScope) -> TextScope:
        """Tokens present in both scopes, in this scope's order."""
        if not isinstance(other, TextScope):
            raise TypeError(f"cannot combine TextScope with {type(other).__name__}")
        return TextScope._trusted(t for t in self._tokens if t in other._set)

    def issubset(self, other: TextScope) -> bool:
        """True if every token of this scope is in ``other``."""
        if not isinstance(other, TextScope):
            raise TypeError(f"cannot compare TextScope with {type(other).__name__}")
        return self._set <= other._set

    def encode_cbor_value(self) -> str:
        """The CBOR ``scope`` value: a text string (RFC 9200 §5.8.1). Same as :meth:`encode`."""
        return self.encode()

    def encode_json_value(self) -> str:
        """The JSON ``scope`` value (RFC 6749 §3.3). Same as :meth:`encode`."""
        return self.encode()

    def __or__(self, other: TextScope) -> TextScope:
        return self.union(other) if isinstance(other, TextScope) else NotImplemented

    def __and__(self, other: TextScope) -> TextScope:
        return self.intersection(other) if isinstance(other, TextScope) else NotImplemented

    def __le__(self, other: TextScope) -> bool:
        return self.issubset(other) if isinstance(other, TextScope) else NotImplemented

    def __ge__(self, other: TextScope) -> bool:
        return other.issubset(self) if isinstance(other, TextScope) else NotImplemented

    def __contains__(self, token: object) -> bool:
        return token in self._set

    def __iter__(self) -> Iterator[str]:
        return iter(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TextScope):
            return NotImplemented
        return self._set == other._set

    def __hash__(self) -> int:
        return hash((TextScope, self._set))

    def __repr__(self) -> str:
        return f"TextScope({list(self._tokens)!r})"

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")


def _validated_path(path: object) -> str:
    if not isinstance(path, str):
        raise TypeError(f"an AIF local-path is a str, not {type(path).__name__}")
    if not path.startswith("/"):
        raise ValueError(f"AIF local-path {path!r} must start with '/' (RFC 9237 §3)")
    for char in path:
        # Cc: C0, DEL and C1 controls; Cs: lone surrogates, which have no UTF-8 encoding.
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise ValueError(f"AIF local-path {path!r} contains a control character")
    return path


def _validated_mask(mask: object) -> AifMethod:
    if isinstance(mask, bool) or not isinstance(mask, int):
        raise TypeError(f"an AIF REST-method-set is an unsigned integer, not {type(mask).__name__}")
    if not 0 <= mask < _UINT_LIMIT:
        # No value in the message: a bignum may be too long to format (int max_str_digits).
        raise ValueError("AIF REST-method-set out of the CBOR unsigned integer range (RFC 9237 §3)")
    return AifMethod(int(mask))


class AifScope(Mapping[str, AifMethod]):
    """An immutable AIF-REST scope: resource path -> :class:`~ace_core.registry.AifMethod` set. RFC 9237 §3.

    Wire form ``[* [local-path: tstr, REST-method-set: uint]]`` (``application/aif+cbor`` / ``+json``, §5.3).
    Paths keep the order of first appearance; a repeated path is OR-merged into its first position; entries
    with an empty method set are dropped. Equality and hashing are those of the ``{path: methods}`` mapping
    (order ignored). Bits outside :class:`~ace_core.registry.AifMethod` are kept but never act (see the
    module docs).

    :param entries: a mapping or an iterable of ``(path, methods)`` pairs; ``methods`` is an
        :class:`~ace_core.registry.AifMethod` or its integer value (not a CoAP method code).
    :raises ValueError: for a path that does not start with ``/`` or contains control characters, or a method
        set outside ``0 <= m < 2**64``.
    :raises TypeError: for a non-``str`` path or a non-integer (or ``bool``) method set.
    """

    __slots__ = ("_entries",)

    _entries: dict[str, AifMethod]

    def __init__(self, entries: Mapping[str, AifMethod | int] | Iterable[tuple[str, AifMethod | int]] = ()) -> None:
        pairs: Iterable[tuple[str, AifMethod | int]]
        pairs = entries.items() if isinstance(entries, Mapping) else entries
        merged: dict[str, AifMethod] = {}
        for path, mask in pairs:
            key = _validated_path(path)
            merged[key] = merged.get(key, _NO_METHODS) | _validated_mask(mask)
        object.__setattr__(self, "_entries", {p: m for p, m in merged.items() if m != _NO_METHODS})

    @classmethod
    def _trusted(cls, entries: dict[str, AifMethod]) -> Self:
        scope = cls.__new__(cls)
        object.__setattr__(scope, "_entries", {p: m for p, m in entries.items() if m != _NO_METHODS})
        return scope

    # -- wire forms ------------------------------------------------------------------------------------------

    @classmethod
    def from_cbor(cls, data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> Self:
        """Decode ``application/aif+cbor`` (RFC 9237 §3, §5.3), e.g. a byte-string ``scope``.

        :param max_size: refuse larger payloads with :class:`~ace_core.errors.PayloadTooLarge`.
        :raises WireFormatError: for malformed CBOR, or anything but ``[* [tstr, uint]]`` with valid paths.
        """
        return cls.from_json(cbor.loads(data, max_size=max_size))

    def to_cbor(self) -> bytes:
        """Encode as ``application/aif+cbor`` (RFC 9237 §3): first-seen order, preferred CBOR encoding."""
        return cbor.dumps(self.to_json())

    @classmethod
    def from_json(cls, value: object) -> Self:
        """Build from the decoded data model ``[[path, methods], ...]`` (parsed JSON or CBOR). RFC 9237 §3.

        :raises WireFormatError: if ``value`` is not a list of ``[str, uint]`` pairs with valid paths.
        """
        if not isinstance(value, list | tuple):
            raise WireFormatError(f"AIF is an array, not {type(value).__name__}")
        pairs: list[tuple[str, AifMethod | int]] = []
        for entry in value:
            if not isinstance(entry, list | tuple) or len(entry) != 2:
                raise WireFormatError("an AIF entry is a [local-path, REST-method-set] array")
            pairs.append((entry[0], entry[1]))
        try:
            return cls(pairs)
        except (TypeError, ValueError) as exc:
            raise WireFormatError(f"malformed AIF entry: {exc}") from exc

    def to_json(self) -> list[list[str | int]]:
        """The data model ``[[path, methods], ...]`` with plain ``int`` method sets, in first-seen order."""
        return [[path, int(mask)] for path, mask in self._entries.items()]

    @classmethod
    def from_json_text(cls, text: str, *, max_size: int = DEFAULT_MAX_SIZE) -> Self:
        """Decode ``application/aif+json`` text (RFC 9237 §3, §5.3), e.g. a JSON ``scope`` string.

        :param max_size: refuse longer text (UTF-8 bytes) with :class:`~ace_core.errors.PayloadTooLarge`.
        :raises WireFormatError: for malformed JSON or anything :meth:`from_json` rejects.
        """
        if not isinstance(text, str):
            raise WireFormatError(f"AIF JSON text is a str, not {type(text).__name__}")
        _check_size(text, max_size)
        try:
            value: Any = json.loads(text, parse_constant=_reject_json_constant)
        except (ValueError, RecursionError) as exc:
            raise WireFormatError(f"malformed AIF JSON: {exc}") from exc
        return cls.from_json(value)

    def to_json_text(self) -> str:
        """Compact ``application/aif+json`` text, e.g. ``[["/s/temp",1],["/a/led",5]]`` (RFC 9237 §3)."""
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False)

    def encode_cbor_value(self) -> bytes:
        """The CBOR ``scope`` value: a byte string holding :meth:`to_cbor` (a design choice, see above)."""
        return self.to_cbor()

    def encode_json_value(self) -> str:
        """The JSON ``scope`` value: :meth:`to_json_text` (a design choice, see module docs)."""
        return self.to_json_text()

    # -- friendly forms for configuration and CLIs -----------------------------------------------------------

    @classmethod
    def from_methods(cls, spec: Mapping[str, MethodLike | Iterable[MethodLike]]) -> Self:
        """Build from ``{"/lock": ["GET", "PUT"], "/battery": ["GET"]}``; methods as in :func:`aif_method`.

        :raises ValueError: for an invalid path, an unknown method or a path with no methods.
        :raises TypeError: for values of the wrong type.
        """
        pairs: list[tuple[str, AifMethod]] = []
        for path, methods in spec.items():
            items: Iterable[MethodLike]
            items = (methods,) if isinstance(methods, AifMethod | int | str) else methods
            mask = _NO_METHODS
            for method in items:
                mask |= aif_method(method)
            if mask == _NO_METHODS:
                raise ValueError(f"no methods given for {path!r}")
            pairs.append((path, mask))
        return cls(pairs)

    @classmethod
    def parse_spec(cls, spec: str) -> Self:
        """Parse the CLI form ``"/lock:GET,PUT /battery:GET"`` (the inverse of :meth:`to_spec`).

        Whitespace separates entries; the last ``:`` separates the path from a comma-separated list of method
        names (see :func:`aif_method`) or ``0x``-prefixed raw bit masks. An empty string is the empty scope.

        :raises ValueError: for a malformed entry, an invalid path or an unknown method.
        """
        pairs: list[tuple[str, AifMethod]] = []
        for item in spec.split():
            path, sep, methods = item.rpartition(":")
            if not sep or not methods:
                raise ValueError(f"{item!r} is not of the form /path:METHOD[,METHOD...]")
            mask = _NO_METHODS
            for word in methods.split(","):
                if word[:2].casefold() == "0x":
                    mask |= _validated_mask(int(word, 16))
                else:
                    mask |= aif_method(word)
            pairs.append((path, mask))
        return cls(pairs)

    def to_spec(self) -> str:
        """The CLI form, e.g. ``"/lock:GET,PUT /battery:GET"``; bits not understood are written as ``0x...``.

        :raises ValueError: if a path contains whitespace, which this form cannot express.
        """
        items = []
        for path, mask in self._entries.items():
            if any(char.isspace() for char in path):
                raise ValueError(f"path {path!r} contains whitespace and has no spec form")
            words = [name for member, name in _NAMES.items() if member in mask]
            unknown = _unknown_bits(mask)
            if unknown:
                words.append(f"{unknown:#x}")
            items.append(f"{path}:{','.join(words)}")
        return " ".join(items)

    # -- queries ---------------------------------------------------------------------------------------------

    def paths(self) -> tuple[str, ...]:
        """The covered resource paths, in first-seen order."""
        return tuple(self._entries)

    def methods_for(self, path: str) -> AifMethod:
        """The method set granted on ``path`` (``AifMethod(0)`` if it is not covered)."""
        return self._entries.get(path, _NO_METHODS)

    def covers_path(self, path: str) -> bool:
        """True if the scope names ``path`` at all.

        An RS answers 4.03 for a resource not covered and 4.05 for a covered resource whose method is not
        granted (RFC 9200 §5.10.2). Paths compare as exact strings (no normalisation).
        """
        return path in self._entries

    def permits(self, method: MethodLike, path: str) -> bool:
        """True if ``method`` is granted on ``path`` (RFC 9237 §3; RFC 9200 §5.10.2).

        :param method: see :func:`aif_method`; a combined flag is permitted only if every one of its bits is.
            Dynamic-X bits (RFC 9237 §2.3) are checked like any other bit: whether a request targets a
            resource created through ``path`` is for the caller to know.
        :param path: the local part of the request URI, compared exactly.
        :raises ValueError: for a method that is not understood (which therefore is never permitted).
        :raises TypeError: for a method of the wrong type.
        """
        flag = aif_method(method)
        return (self._entries.get(path, _NO_METHODS) & flag) == flag

    def known_only(self) -> AifScope:
        """A copy without the method bits this module does not understand (RFC 9237 §6)."""
        return AifScope._trusted({p: m & _KNOWN_BITS for p, m in self._entries.items()})

    @property
    def is_empty(self) -> bool:
        """True if no method is granted on any path."""
        return not self._entries

    # -- algebra ---------------------------------------------------------------------------------------------

    def union(self, other: AifScope) -> AifScope:
        """OR per path: this scope's paths in order, then ``other``'s new paths."""
        if not isinstance(other, AifScope):
            raise TypeError(f"cannot combine AifScope with {type(other).__name__}")
        merged = dict(self._entries)
        for path, mask in other._entries.items():
            merged[path] = merged.get(path, _NO_METHODS) | mask
        return AifScope._trusted(merged)

    def intersection(self, other: AifScope) -> AifScope:
        """AND per path, in this scope's order; paths left with no methods are dropped."""
        if not isinstance(other, AifScope):
            raise TypeError(f"cannot combine AifScope with {type(other).__name__}")
        return AifScope._trusted({p: m & other._entries[p] for p, m in self._entries.items() if p in other._entries})

    def issubset(self, other: AifScope) -> bool:
        """True if every method granted here on a path is granted by ``other`` on the same path."""
        if not isinstance(other, AifScope):
            raise TypeError(f"cannot compare AifScope with {type(other).__name__}")
        # int arithmetic: see _unknown_bits() on IntFlag inversion.
        return all(int(m) & ~int(other._entries.get(p, _NO_METHODS)) == 0 for p, m in self._entries.items())

    def __or__(self, other: AifScope) -> AifScope:
        return self.union(other) if isinstance(other, AifScope) else NotImplemented

    def __and__(self, other: AifScope) -> AifScope:
        return self.intersection(other) if isinstance(other, AifScope) else NotImplemented

    def __le__(self, other: AifScope) -> bool:
        return self.issubset(other) if isinstance(other, AifScope) else NotImplemented

    def __ge__(self, other: AifScope) -> bool:
        return other.issubset(self) if isinstance(other, AifScope) else NotImplemented

    # -- Mapping, equality, immutability ---------------------------------------------------------------------

    def __getitem__(self, path: str) -> AifMethod:
        return self._entries[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: object) -> bool:
        return path in self._entries

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AifScope):
            return NotImplemented
        return self._entries == other._entries

    def __hash__(self) -> int:
        return hash((AifScope, frozenset((p, int(m)) for p, m in self._entries.items())))

    def __repr__(self) -> str:
        return f"AifScope({[(p, int(m)) for p, m in self._entries.items()]!r})"

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")


def _reject_json_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON (RFC 8259 §6)")


def decode_scope(
    value: str | bytes, *, aif: bool | None = None, max_size: int = DEFAULT_MAX_SIZE
) -> TextScope | AifScope:
    """Decode the value of a ``scope`` parameter or claim (RFC 9200 §5.8.1, §5.10; RFC 8693 §4.2).

    * ``bytes`` (CBOR byte string) is ``application/aif+cbor`` unless ``aif=False``, in which case it is
      refused: RFC 9200 leaves binary scope syntax to profiles and AIF is the only one supported here.
    * ``str`` is an RFC 6749 §3.3 text scope unless ``aif=True``, in which case it is ``application/aif+json``
      text (how AIF travels in JSON; see the module docs).

    :param aif: ``None`` to go by the type of ``value``; ``True``/``False`` to require AIF / text.
    :param max_size: refuse larger values with :class:`~ace_core.errors.PayloadTooLarge`.
    :raises WireFormatError: for a malformed value, a value of another type, or bytes with ``aif=False``.
    """
    if isinstance(value, bytes):
        if aif is False:
            raise WireFormatError("byte-string scopes other than AIF are not supported")
        return AifScope.from_cbor(value, max_size=max_size)
    if isinstance(value, str):
        if aif:
            return AifScope.from_json_text(value, max_size=max_size)
        return TextScope.parse(value, max_size=max_size)
    raise WireFormatError(f"a scope is a text or byte string, not {type(value).__name__}")
