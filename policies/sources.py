"""Where rules come from besides the policy file: the :class:`RuleSource` interface and an in-memory source.

Rules created by consent decisions and by administrators live in the AS database (issue #5, "Sources"). The
engine (:class:`~policies.engine.PolicyEngine`) asks each source for the rules that may apply to a request and
evaluates them together with the file's rules, so a SQL-backed source plugs in without touching the engine.
Following the read/edit split of Leshan's ``BootstrapConfigStore``/``EditableBootstrapConfigStore`` (STYLE §2),
reading (:class:`RuleSource`) and editing (:class:`EditableRuleSource`) are separate Protocols.

:class:`MemoryRuleSource` is a real implementation (tests use it, and an AS may too), indexed by audience so that a
lookup costs about the same with ten or ten thousand rules for other audiences.

>>> from ace_core.scope import AifScope
>>> source = MemoryRuleSource()
>>> source.add(Rule(id="grant-1", audiences=("front-door",), scope=AifScope.parse_spec("/lock:PUT"),
...                 clients=("phone-app",), users=("alice",)))
>>> [r.id for r in source.rules_for(client_id="phone-app", audience="front-door", subject="alice", groups=frozenset())]
['grant-1']
>>> source.remove("grant-1")
>>> len(source)
0
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Iterable, Iterator
from typing import Protocol

from policies.rules import Rule, is_glob

__all__ = ["EditableRuleSource", "MemoryRuleSource", "RuleIndex", "RuleSource"]


class RuleSource(Protocol):
    """Supplies the rules that may apply to a request.

    Implementations may return more rules than apply (the engine checks every subject, target, kind and time
    condition itself), but never fewer, and in a deterministic order for equal contents. Rule ids should be
    unique across the sources of one engine (a database source might use ``"grant-42"``).
    """

    def rules_for(
        self, *, client_id: str, audience: str, subject: str | None, groups: frozenset[str]
    ) -> Iterable[Rule]:
        """Rules that may apply to ``client_id`` (acting for ``subject`` in ``groups``) at ``audience``."""
        ...


class EditableRuleSource(RuleSource, Protocol):
    """A :class:`RuleSource` that administrators and the consent workflow can change."""

    def add(self, rule: Rule) -> None:
        """Add a rule.

        :raises ValueError: a rule with the same id exists.
        """
        ...

    def remove(self, rule_id: str) -> None:
        """Remove a rule.

        :raises KeyError: no rule has this id.
        """
        ...


class RuleIndex:
    """Rules by audience: exact audiences in a dict, globs in a list; :meth:`candidates` keeps insertion order.

    Not thread-safe for writers; readers may run concurrently with one writer (buckets are replaced, never
    mutated, so a reader sees a bucket before or after a change).
    """

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self._exact: dict[str, tuple[tuple[int, Rule], ...]] = {}
        self._globs: tuple[tuple[int, Rule], ...] = ()
        self._by_id: dict[str, tuple[int, Rule]] = {}
        self._next = 0
        for rule in rules:
            self.add(rule)

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Rule]:
        return (rule for _, rule in sorted(self._by_id.values(), key=lambda entry: entry[0]))

    def __contains__(self, rule_id: object) -> bool:
        return rule_id in self._by_id

    def get(self, rule_id: str) -> Rule | None:
        """The rule with this id, if any."""
        entry = self._by_id.get(rule_id)
        return entry[1] if entry is not None else None

    def add(self, rule: Rule) -> None:
        """Add ``rule`` after all others.

        :raises ValueError: a rule with the same id exists.
        """
        if rule.id in self._by_id:
            raise ValueError(f"duplicate rule id {rule.id!r}")
        entry = (self._next, rule)
        self._next += 1
        self._by_id[rule.id] = entry
        for audience in dict.fromkeys(a for a in rule.audiences if not is_glob(a)):
            self._exact[audience] = (*self._exact.get(audience, ()), entry)
        if any(is_glob(a) for a in rule.audiences):
            self._globs = (*self._globs, entry)

    def remove(self, rule_id: str) -> None:
        """Remove the rule with this id.

        :raises KeyError: no such rule.
        """
        seq, rule = self._by_id.pop(rule_id)
        for audience in dict.fromkeys(a for a in rule.audiences if not is_glob(a)):
            kept = tuple(entry for entry in self._exact[audience] if entry[0] != seq)
            if kept:
                self._exact[audience] = kept
            else:
                del self._exact[audience]
        if any(is_glob(a) for a in rule.audiences):
            self._globs = tuple(entry for entry in self._globs if entry[0] != seq)

    def candidates(self, audience: str) -> list[Rule]:
        """The rules whose audiences match ``audience``, in insertion order."""
        exact = self._exact.get(audience, ())
        globs = [entry for entry in self._globs if entry[1].matches_audience(audience)]
        if not globs:
            return [rule for _, rule in exact]
        seen: set[int] = set()
        found: list[Rule] = []
        for seq, rule in heapq.merge(exact, globs, key=lambda entry: entry[0]):
            if seq not in seen:
                seen.add(seq)
                found.append(rule)
        return found


class MemoryRuleSource(EditableRuleSource):
    """Rules kept in memory, indexed by audience; thread-safe (one writer at a time, readers never block).

    :param rules: initial rules.
    :raises ValueError: two initial rules share an id.
    """

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self._index = RuleIndex(rules)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._index)

    def __iter__(self) -> Iterator[Rule]:
        with self._lock:
            return iter(list(self._index))

    def __repr__(self) -> str:
        return f"MemoryRuleSource({len(self)} rules)"

    def get(self, rule_id: str) -> Rule | None:
        """The rule with this id, if any."""
        return self._index.get(rule_id)

    def add(self, rule: Rule) -> None:
        """Add a rule (evaluated after the rules added before it).

        :raises ValueError: a rule with the same id exists.
        """
        with self._lock:
            self._index.add(rule)

    def remove(self, rule_id: str) -> None:
        """Remove a rule.

        :raises KeyError: no rule has this id.
        """
        with self._lock:
            self._index.remove(rule_id)

    def rules_for(self, *, client_id: str, audience: str, subject: str | None, groups: frozenset[str]) -> list[Rule]:
        """The rules whose audiences match (subjects and conditions are left to the engine)."""
        return self._index.candidates(audience)
