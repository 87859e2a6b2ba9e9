"""The static allow-list policy: which client may get which rights at which audience, from a YAML file.

The AS now runs :class:`policies.engine.PolicyEngine`, whose file format is a superset of this one: allow-list
files load there unchanged and decide the same (``tests/policies/test_policy_file.py`` checks both on random
files). This class stays as the simplest :class:`~policies.base.AccessPolicy` and as the baseline of the policy
benchmark.

Format (one list of rules; every rule grants, nothing denies)::

    rules:
      - client: phone-app                      # exact client_id, or "*" for every client
        audience: front-door                   # exact audience, or a glob such as "building-a/*"
        scope: "/lock:GET,PUT /battery:GET"    # AIF-REST (RFC 9237) when it starts with "/", else text
        max_lifetime: 3600                     # optional, seconds
      - client: "*"
        audience: "sensors/*"
        scope: "read"                          # RFC 6749 §3.3 scope tokens, space-separated

* ``scope`` starting with ``/`` is an AIF-REST scope in the form of :meth:`ace_core.scope.AifScope.parse_spec`
  (``path:METHOD[,METHOD...]`` entries separated by spaces); otherwise it is a text scope (RFC 6749 §3.3). A rule
  only applies to requests whose scope is of the same kind, so one file can serve AIF and text audiences.
* ``audience`` is matched with :func:`fnmatch.fnmatchcase` when it contains ``*``, ``?`` or ``[``, exactly
  otherwise. Note that ``*`` also matches ``/``: ``building-a/*`` matches ``building-a/floor-1/door``.
* ``client``, ``audience`` and ``scope`` are taken as written (``client: 1234`` is the client id ``"1234"``);
  quote ``"*"``, since a bare ``*`` starts a YAML alias.
* Unknown keys, missing keys, values of the wrong type, empty scopes and YAML syntax errors are errors
  (:class:`PolicyError`, whose message starts with ``<source>:<line>:``). An empty document, or ``rules:``
  with nothing after it, is an allow list without rules, which denies every request.

The decision (RFC 9200 §5.8.1: the AS grants at most what is requested):

* ``granted`` = requested ∩ (union of the scopes of every rule that matches the client and audience). It is
  ``None`` when no rule matches, and an empty scope when the rules match but grant none of what was asked.
* ``max_lifetime``: a token carries all of its rights for its whole lifetime, so each right must be allowed that
  long by some rule. For every granted right (an AIF path/method bit, or a text scope token) the most generous
  rule that grants it counts, and the token gets the *least* of those: ``min over rights of max over rules
  granting it``. A rule without ``max_lifetime`` allows any lifetime (the AS and RS limits still apply). Taking
  the maximum over rules instead would let a short-lived rule's right ride along in a long-lived token; taking
  the plain minimum would let a redundant short rule shorten rights that another rule grants for longer.
* The result depends only on the rules and the request (rule order fixes the order of scope entries), so equal
  requests get equal decisions.

>>> policy = AllowList.from_yaml('''
... rules:
...   - client: phone-app
...     audience: front-door
...     scope: "/lock:GET,PUT /battery:GET"
...     max_lifetime: 600
... ''')
>>> from ace_core.scope import AifScope
>>> d = policy.decide(AccessRequest(client_id="phone-app", audience="front-door",
...                                 scope=AifScope.parse_spec("/lock:PUT,DELETE"), now=0))
>>> d.granted.to_spec(), d.max_lifetime
('/lock:PUT', 600)
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ace_core.errors import WireFormatError
from ace_core.scope import AifScope, TextScope
from policies.base import AccessPolicy, AccessRequest, Decision, Scope
from policies.errors import PolicyError

__all__ = ["AllowList", "PolicyError", "Rule", "parse_scope_spec"]

logger = logging.getLogger(__name__)

_RULE_KEYS = frozenset({"client", "audience", "scope", "max_lifetime"})
_REQUIRED_KEYS = ("client", "audience", "scope")
_ANY_CLIENT = "*"
_GLOB_CHARS = frozenset("*?[")
_INT_TAG = "tag:yaml.org,2002:int"
_NULL_TAG = "tag:yaml.org,2002:null"


def parse_scope_spec(spec: str) -> Scope:
    """A rule's scope: AIF-REST (:meth:`AifScope.parse_spec`) when it starts with ``/``, else RFC 6749 §3.3 text.

    :raises ValueError: malformed (``WireFormatError`` for a malformed text scope is a ``ValueError`` too).
    """
    if spec.startswith("/"):
        return AifScope.parse_spec(spec)
    return TextScope.parse(spec)


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One allow-list entry: ``client`` (or ``"*"``) may get ``scope`` at ``audience`` (exact or glob).

    :param line: where the rule starts in its file (1-based), used in decision reasons.
    """

    client: str
    audience: str
    scope: Scope
    max_lifetime: int | None = None
    line: int | None = None

    def matches(self, client_id: str, audience: str) -> bool:
        """Whether the rule applies to this client and audience (the scope kind is checked separately)."""
        if self.client != _ANY_CLIENT and self.client != client_id:
            return False
        if _GLOB_CHARS.isdisjoint(self.audience):
            return self.audience == audience
        return fnmatch.fnmatchcase(audience, self.audience)


def _issubset(a: Scope, b: Scope) -> bool:
    if isinstance(a, AifScope) and isinstance(b, AifScope):
        return a.issubset(b)
    if isinstance(a, TextScope) and isinstance(b, TextScope):
        return a.issubset(b)
    return False


def _union(a: Scope, b: Scope) -> Scope:
    if isinstance(a, AifScope) and isinstance(b, AifScope):
        return a | b
    if isinstance(a, TextScope) and isinstance(b, TextScope):
        return a | b
    raise TypeError("cannot combine an AIF scope with a text scope")


def _intersection(a: Scope, b: Scope) -> Scope:
    if isinstance(a, AifScope) and isinstance(b, AifScope):
        return a & b
    if isinstance(a, TextScope) and isinstance(b, TextScope):
        return a & b
    raise TypeError("cannot combine an AIF scope with a text scope")


def _atoms(scope: Scope) -> Iterator[Scope]:
    """The smallest rights a scope consists of: one method bit on one path, or one scope token."""
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


def _lifetime(granted: Scope, rules: Sequence[Rule]) -> int | None:
    """``min`` over the granted rights of ``max`` over the rules granting each right (``None``: unlimited)."""
    result: int | None = None
    for atom in _atoms(granted):
        limits = [rule.max_lifetime for rule in rules if _issubset(atom, rule.scope)]
        if not limits or None in limits:
            continue  # some rule grants this right without a time limit
        longest = max(limit for limit in limits if limit is not None)
        result = longest if result is None else min(result, longest)
    return result


class AllowList(AccessPolicy):
    """A static list of :class:`Rule` s (see the module documentation for the file format and the decision).

    :param rules: the rules; an empty list denies everything.
    """

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)

    def __repr__(self) -> str:
        return f"AllowList({len(self.rules)} rules)"

    # -- loading ----------------------------------------------------------------------------------------------

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "<string>") -> AllowList:
        """Load rules from YAML text.

        :param source: the name used in error messages.
        :raises PolicyError: malformed YAML or rules; the message carries the line number.
        """
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else None
            raise PolicyError(f"invalid YAML: {exc.problem or exc}", source=source, line=line) from None
        except yaml.YAMLError as exc:
            raise PolicyError(f"invalid YAML: {exc}", source=source, line=None) from None
        if root is None:  # an empty document: no rules
            return cls(())
        return cls(_parse_document(root, source))

    @classmethod
    def from_file(cls, path: Path | str, *, missing_ok: bool = False) -> AllowList:
        """Load rules from a YAML file.

        :param missing_ok: a missing file gives an allow list without rules, i.e. one that denies every request
            (logged as a warning); otherwise a missing file raises :class:`FileNotFoundError`.
        :raises PolicyError: malformed YAML or rules.
        :raises FileNotFoundError: the file does not exist and ``missing_ok`` is false.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            if not missing_ok:
                raise
            logger.warning("policy file %s does not exist: every token request will be denied", path)
            return cls(())
        except UnicodeDecodeError as exc:
            raise PolicyError(f"not UTF-8 text: {exc.reason}", source=str(path), line=None) from None
        return cls.from_yaml(text, source=str(path))

    # -- deciding ---------------------------------------------------------------------------------------------

    def decide(self, request: AccessRequest) -> Decision:
        """Grant the requested rights that matching rules allow (see the module documentation).

        Pure: reads nothing but the rules and ``request``.
        """
        kind = type(request.scope)
        matching = [
            rule
            for rule in self.rules
            if type(rule.scope) is kind and rule.matches(request.client_id, request.audience)
        ]
        if not matching:
            return Decision(granted=None, reason="no rule matches the client and audience")
        allowed = matching[0].scope
        for rule in matching[1:]:
            allowed = _union(allowed, rule.scope)
        granted = _intersection(request.scope, allowed)
        lines = ", ".join(str(rule.line) for rule in matching if rule.line is not None)
        if granted.is_empty:
            return Decision(granted=granted, reason=f"rules (lines {lines or '-'}) grant none of the requested scope")
        return Decision(
            granted=granted,
            reason=f"allowed by rules at lines {lines or '-'}",
            max_lifetime=_lifetime(granted, matching),
        )


# -- YAML walking -----------------------------------------------------------------------------------------------


def _line(node: Any) -> int:
    return int(node.start_mark.line) + 1


def _parse_document(root: Any, source: str) -> list[Rule]:
    if not isinstance(root, yaml.MappingNode):
        raise PolicyError("the document must be a mapping with a 'rules' list", source=source, line=_line(root))
    rules_node: Any = None
    for key_node, value_node in root.value:
        key = _scalar_text(key_node, source, "key")
        if key != "rules":
            raise PolicyError(f"unknown top-level key {key!r} (expected 'rules')", source=source, line=_line(key_node))
        if rules_node is not None:
            raise PolicyError("duplicate key 'rules'", source=source, line=_line(key_node))
        rules_node = value_node
    if rules_node is None:
        raise PolicyError("missing 'rules'", source=source, line=_line(root))
    if isinstance(rules_node, yaml.ScalarNode) and rules_node.tag == _NULL_TAG:
        return []
    if not isinstance(rules_node, yaml.SequenceNode):
        raise PolicyError("'rules' must be a list", source=source, line=_line(rules_node))
    return [_parse_rule(node, source) for node in rules_node.value]


def _scalar_text(node: Any, source: str, what: str) -> str:
    """The text of a scalar exactly as written: ``client: 1234`` is the client id ``"1234"``, not a number."""
    if not isinstance(node, yaml.ScalarNode) or node.tag == _NULL_TAG:
        raise PolicyError(f"{what} must be a string", source=source, line=_line(node))
    return str(node.value)


def _parse_rule(node: Any, source: str) -> Rule:
    if not isinstance(node, yaml.MappingNode):
        raise PolicyError("a rule must be a mapping", source=source, line=_line(node))
    fields: dict[str, Any] = {}
    for key_node, value_node in node.value:
        key = _scalar_text(key_node, source, "a rule key")
        if key not in _RULE_KEYS:
            expected = ", ".join(sorted(_RULE_KEYS))
            raise PolicyError(f"unknown rule key {key!r} (expected {expected})", source=source, line=_line(key_node))
        if key in fields:
            raise PolicyError(f"duplicate rule key {key!r}", source=source, line=_line(key_node))
        fields[key] = value_node
    for key in _REQUIRED_KEYS:
        if key not in fields:
            raise PolicyError(f"rule is missing {key!r}", source=source, line=_line(node))

    client = _scalar_text(fields["client"], source, "'client'")
    audience = _scalar_text(fields["audience"], source, "'audience'")
    if not client or not audience:
        raise PolicyError("'client' and 'audience' must not be empty", source=source, line=_line(node))
    scope_node = fields["scope"]
    spec = _scalar_text(scope_node, source, "'scope'")
    try:
        scope = parse_scope_spec(spec)
    except (ValueError, TypeError, WireFormatError) as exc:
        raise PolicyError(f"invalid scope {spec!r}: {exc}", source=source, line=_line(scope_node)) from None
    if scope.is_empty:
        raise PolicyError("'scope' grants nothing", source=source, line=_line(scope_node))
    max_lifetime = None
    if "max_lifetime" in fields:
        max_lifetime = _positive_int(fields["max_lifetime"], source)
    return Rule(client=client, audience=audience, scope=scope, max_lifetime=max_lifetime, line=_line(node))


def _positive_int(node: Any, source: str) -> int:
    if not isinstance(node, yaml.ScalarNode) or node.tag != _INT_TAG:
        raise PolicyError("'max_lifetime' must be an integer (seconds)", source=source, line=_line(node))
    value = yaml.constructor.SafeConstructor().construct_yaml_int(node)  # YAML 1.1 syntax: 1_000, 0x10, ...
    if not isinstance(value, int) or value <= 0:
        raise PolicyError("'max_lifetime' must be positive", source=source, line=_line(node))
    return value
