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

from collections.abc import Iterable, Iterator

from ace_core.scope import AifScope, TextScope
from policies.base import Scope

__all__ = [
    "atoms",
    "difference",
    "empty_like",
    "format_scope",
    "intersection",
    "issubset",
    "same_kind",
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


def empty_like(scope: Scope) -> Scope:
    """The empty scope of ``scope``'s kind."""
    return AifScope() if isinstance(scope, AifScope) else TextScope()


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
