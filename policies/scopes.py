"""Set algebra on the two scope kinds, as the policy engine needs it (sans-IO).

:class:`~ace_core.scope.AifScope` is a set of (path, method) rights and :class:`~ace_core.scope.TextScope` a set
of scope tokens (RFC 9237 §3, RFC 6749 §3.3). Both offer union and intersection; the engine also needs the
difference (what a deny rule takes away) and the single rights (*atoms*) a scope consists of. Operations on two
scopes of different kinds raise :class:`TypeError`: a policy never mixes them.

>>> from ace_core.scope import AifScope
>>> requested = AifScope.parse_spec("/lock:GET,PUT,DELETE /log:GET")
>>> difference(requested, AifScope.parse_spec("/lock:DELETE /log:GET")).to_spec()
'/lock:GET,PUT'
>>> [a.to_spec() for a in atoms(AifScope.parse_spec("/lock:GET,PUT"))]
['/lock:GET', '/lock:PUT']
>>> format_scope(TextScope.parse("read write")), format_scope(TextScope())
('read write', '(nothing)')
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from ace_core.scope import AifScope, TextScope
from policies.base import Scope

__all__ = [
    "Rights",
    "atoms",
    "difference",
    "empty_like",
    "format_scope",
    "intersection",
    "issubset",
    "rights",
    "rights_and",
    "rights_atoms",
    "rights_meet",
    "rights_minus",
    "rights_or",
    "same_kind",
    "to_scope",
    "union",
    "union_all",
]


def same_kind(a: Scope, b: Scope) -> bool:
    """True if both are AIF or both are text."""
    return type(a) is type(b)


def union(a: Scope, b: Scope) -> Scope:
    """The rights of either scope.

    :raises TypeError: for scopes of different kinds.
    """
    if isinstance(a, AifScope) and isinstance(b, AifScope):
        return a | b
    if isinstance(a, TextScope) and isinstance(b, TextScope):
        return a | b
    raise TypeError("cannot combine an AIF scope with a text scope")


def union_all(first: Scope, rest: Iterable[Scope]) -> Scope:
    """The union of ``first`` and every scope of ``rest``."""
    result = first
    for scope in rest:
        result = union(result, scope)
    return result


def intersection(a: Scope, b: Scope) -> Scope:
    """The rights in both scopes, in ``a``'s order.

    :raises TypeError: for scopes of different kinds.
    """
    if isinstance(a, AifScope) and isinstance(b, AifScope):
        return a & b
    if isinstance(a, TextScope) and isinstance(b, TextScope):
        return a & b
    raise TypeError("cannot combine an AIF scope with a text scope")


def difference(a: Scope, b: Scope) -> Scope:
    """The rights of ``a`` that ``b`` does not have: per-path method sets for AIF, tokens for text.

    :raises TypeError: for scopes of different kinds.
    """
    if isinstance(a, AifScope) and isinstance(b, AifScope):
        # int arithmetic: ``~`` on an IntFlag inverts only within the defined bits (see ace_core.scope).
        return AifScope((path, int(mask) & ~int(b.methods_for(path))) for path, mask in a.items())
    if isinstance(a, TextScope) and isinstance(b, TextScope):
        return TextScope(token for token in a.tokens if token not in b)
    raise TypeError("cannot combine an AIF scope with a text scope")


def issubset(a: Scope, b: Scope) -> bool:
    """True if every right of ``a`` is in ``b`` (``False`` for scopes of different kinds)."""
    if isinstance(a, AifScope) and isinstance(b, AifScope):
        return a.issubset(b)
    if isinstance(a, TextScope) and isinstance(b, TextScope):
        return a.issubset(b)
    return False


_EMPTY_AIF = AifScope()
_EMPTY_TEXT = TextScope()


def empty_like(scope: Scope) -> Scope:
    """The empty scope of ``scope``'s kind (scopes are immutable: one of each is shared)."""
    return _EMPTY_AIF if isinstance(scope, AifScope) else _EMPTY_TEXT


def atoms(scope: Scope) -> Iterator[Scope]:
    """The smallest rights a scope consists of: one method bit on one path, or one scope token, in order."""
    if isinstance(scope, TextScope):
        for token in scope.tokens:
            yield TextScope((token,))
        return
    for path, mask in scope.items():
        value = int(mask)
        while value:
            bit = value & -value
            yield AifScope(((path, bit),))
            value ^= bit


def format_scope(scope: Scope | None) -> str:
    """A scope for people: the CLI spec form of AIF (``/lock:GET,PUT``), the scope string for text."""
    if scope is None or scope.is_empty:
        return "(nothing)"
    if isinstance(scope, TextScope):
        return scope.encode()
    try:
        return scope.to_spec()
    except ValueError:  # a path with whitespace has no spec form
        return scope.to_json_text()


# -- the engine's working form ---------------------------------------------------------------------------------

Rights = dict[str, int]
"""A scope as :mod:`policies.engine` computes with it: AIF path -> method bits (``int``), or text token -> ``1``.

Insertion-ordered and without zero entries. The ``rights_*`` functions do on these plain dicts what :func:`union`,
:func:`intersection` and :func:`difference` do on scope objects, in the same order (the first operand's entries
first), with ``int`` arithmetic instead of :class:`~ace_core.registry.AifMethod` flag operations and without
validating paths and tokens again; :func:`to_scope` turns a result back into a scope. A ``Rights`` value is never
changed after it is built.
"""


def rights(scope: Scope) -> Rights:
    """``scope`` in the engine's working form (see :data:`Rights`)."""
    if isinstance(scope, TextScope):
        return dict.fromkeys(scope.tokens, 1)
    return {path: int(mask) for path, mask in scope.items()}


def to_scope(found: Mapping[str, int], like: Scope) -> Scope:
    """The scope of ``like``'s kind with the rights ``found``; ``like`` itself if that is what they are."""
    if isinstance(like, TextScope):
        if tuple(found) == like.tokens:
            return like
        return TextScope(found)
    if len(found) == len(like) and all(
        a == b and int(m) == n for (a, m), (b, n) in zip(like.items(), found.items(), strict=True)
    ):
        return like
    return AifScope(found)


def rights_or(a: Mapping[str, int], b: Mapping[str, int]) -> Rights:
    """``a`` ∪ ``b``: ``a``'s entries in order, then ``b``'s new ones (as :func:`union`)."""
    merged = dict(a)
    for key, bits in b.items():
        merged[key] = merged.get(key, 0) | bits
    return merged


def rights_and(a: Mapping[str, int], b: Mapping[str, int]) -> Rights:
    """``a`` ∩ ``b``, in ``a``'s order (as :func:`intersection`)."""
    found: Rights = {}
    for key, bits in a.items():
        common = bits & b.get(key, 0)
        if common:
            found[key] = common
    return found


def rights_minus(a: Mapping[str, int], b: Mapping[str, int]) -> Rights:
    """``a`` − ``b``, in ``a``'s order (as :func:`difference`)."""
    if not b:
        return dict(a)
    found: Rights = {}
    for key, bits in a.items():
        left = bits & ~b.get(key, 0)
        if left:
            found[key] = left
    return found


def rights_meet(a: Mapping[str, int], b: Mapping[str, int]) -> bool:
    """True if ``a`` and ``b`` have a right in common."""
    if len(b) < len(a):
        a, b = b, a
    return any(bits & b.get(key, 0) for key, bits in a.items())


def rights_atoms(found: Mapping[str, int]) -> Iterator[tuple[str, int]]:
    """The single rights, in the order of :func:`atoms`: ``(path, one method bit)``, or ``(token, 1)``."""
    for key, bits in found.items():
        while bits:
            bit = bits & -bits
            yield key, bit
            bits ^= bit
