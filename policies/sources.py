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

import re
import threading
from collections.abc import Iterable, Iterator
from typing import Protocol

from policies.rules import ANY, Rule, compile_glob, glob_prefix, is_glob

__all__ = ["CANDIDATE_CACHE_SIZE", "EditableRuleSource", "MemoryRuleSource", "RuleIndex", "RuleSource"]


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


#: Audiences whose candidate lists a :class:`RuleIndex` remembers; the cache starts over when it is full.
CANDIDATE_CACHE_SIZE = 16_384

_Entry = tuple[int, Rule]  # (insertion number, rule)


class RuleIndex:
    """Rules by audience, so that finding a request's candidates costs about the same for ten or ten thousand rules.

    * exact audiences: a dict from audience to its rules;
    * globs: grouped by their literal prefix (the text before the first ``*``, ``?`` or ``[``), then by pattern.
      A lookup tries only the buckets whose prefix starts the audience -- one dict lookup per distinct prefix
      length -- and matches each pattern of those buckets once, however many rules share it;
    * the candidates of each audience looked up are remembered, split by client, user and group (for
      :meth:`matching`), until a rule matching that audience is added or removed (at most
      :data:`CANDIDATE_CACHE_SIZE` audiences).

    :meth:`candidates` and :meth:`matching` keep insertion order. Not thread-safe for writers; readers may run
    concurrently with one writer (buckets are replaced, never mutated, and the cache is replaced after every
    change, so a reader sees the index before or after a change).
    """

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self._exact: dict[str, tuple[_Entry, ...]] = {}
        # literal prefix -> pattern -> (compiled pattern, entries)
        self._globs: dict[str, dict[str, tuple[re.Pattern[str], tuple[_Entry, ...]]]] = {}
        self._prefix_lengths: tuple[int, ...] = ()
        self._by_id: dict[str, _Entry] = {}
        self._next = 0
        self._cache: dict[str, _AudienceRules] = {}
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
        for audience in dict.fromkeys(rule.audiences):
            if not is_glob(audience):
                self._exact[audience] = (*self._exact.get(audience, ()), entry)
                continue
            prefix = glob_prefix(audience)
            bucket = dict(self._globs.get(prefix, {}))
            compiled, entries = bucket.get(audience) or (compile_glob(audience), ())
            bucket[audience] = (compiled, (*entries, entry))
            self._globs[prefix] = bucket
        self._changed(rule)

    def remove(self, rule_id: str) -> None:
        """Remove the rule with this id.

        :raises KeyError: no such rule.
        """
        seq, rule = self._by_id.pop(rule_id)
        for audience in dict.fromkeys(rule.audiences):
            if not is_glob(audience):
                kept = tuple(entry for entry in self._exact[audience] if entry[0] != seq)
                if kept:
                    self._exact[audience] = kept
                else:
                    del self._exact[audience]
                continue
            prefix = glob_prefix(audience)
            bucket = dict(self._globs[prefix])
            compiled, entries = bucket[audience]
            remaining = tuple(entry for entry in entries if entry[0] != seq)
            if remaining:
                bucket[audience] = (compiled, remaining)
            else:
                del bucket[audience]
            if bucket:
                self._globs[prefix] = bucket
            else:
                del self._globs[prefix]
        self._changed(rule)

    def _changed(self, rule: Rule) -> None:
        """Forget the candidates of the audiences ``rule`` (just added or removed) matches; keep the others."""
        self._prefix_lengths = tuple(sorted({len(prefix) for prefix in self._globs}))
        # A new cache after the buckets: a reader that sees the new cache also sees the new buckets.
        # dict() copies in one step, so readers adding to the old cache meanwhile cannot upset the iteration.
        kept = dict(self._cache)
        self._cache = {audience: rules for audience, rules in kept.items() if not rule.matches_audience(audience)}

    def candidates(self, audience: str) -> list[Rule]:
        """The rules whose audiences match ``audience``, in insertion order."""
        return list(self._for_audience(audience).rules)

    def matching(self, audience: str, *, client_id: str, subject: str | None, groups: frozenset[str]) -> list[Rule]:
        """The rules whose audiences and subjects match, in insertion order: :meth:`candidates` filtered with
        :meth:`Rule.matches_subject <policies.rules.Rule.matches_subject>` (scope kind and time are not checked)."""
        return self._for_audience(audience).matching(client_id, subject, groups)

    def _for_audience(self, audience: str) -> _AudienceRules:
        cache = self._cache  # read before the buckets (see _changed)
        found = cache.get(audience)
        if found is None:
            found = _AudienceRules(self._lookup(audience))
            if len(cache) >= CANDIDATE_CACHE_SIZE:
                cache.clear()
            cache[audience] = found
        return found

    def _lookup(self, audience: str) -> tuple[_Entry, ...]:
        exact = self._exact.get(audience)
        lists = [exact] if exact else []
        globs = self._globs
        size = len(audience)
        for length in self._prefix_lengths:
            if length > size:
                break
            bucket = globs.get(audience[:length])
            if bucket is not None:
                lists.extend(entries for pattern, entries in bucket.values() if pattern.match(audience))
        if not lists:
            return ()
        if len(lists) == 1:
            return lists[0]
        by_seq = {seq: rule for entries in lists for seq, rule in entries}  # a rule may match twice
        return tuple((seq, by_seq[seq]) for seq in sorted(by_seq))


class _BySubject:
    """Rules split by the users they apply to: ``anyone`` (no users or groups named: with or without a user),
    ``any_user`` (``"*"``: every signed-in user), and the others under each user and group they name."""

    __slots__ = ("any_user", "anyone", "by_group", "by_user")

    def __init__(self) -> None:
        self.anyone: list[_Entry] = []
        self.any_user: list[_Entry] = []
        self.by_user: dict[str, list[_Entry]] = {}
        self.by_group: dict[str, list[_Entry]] = {}

    def add(self, entry: _Entry) -> None:
        rule = entry[1]
        if not rule.users and not rule.groups:
            self.anyone.append(entry)
        elif ANY in rule.users:
            self.any_user.append(entry)
        else:  # (a name listed twice must not list the rule twice)
            for user in dict.fromkeys(rule.users):
                self.by_user.setdefault(user, []).append(entry)
            for group in dict.fromkeys(rule.groups):
                self.by_group.setdefault(group, []).append(entry)

    def collect(self, subject: str | None, groups: frozenset[str], into: list[list[_Entry]]) -> None:
        """Append the lists of rules that match ``subject`` in ``groups`` to ``into``."""
        if self.anyone:
            into.append(self.anyone)
        if subject is None:
            return
        if self.any_user:
            into.append(self.any_user)
        found = self.by_user.get(subject)
        if found:
            into.append(found)
        by_group = self.by_group
        if by_group and groups:
            if len(groups) <= len(by_group):
                into.extend(found for group in groups if (found := by_group.get(group)))
            else:
                into.extend(found for group, found in by_group.items() if group in groups)


class _AudienceRules:
    """The candidate rules of one audience, split by client (``"*"`` for every client) and then by subject, so
    that the rules matching a request's subject are found without testing every candidate."""

    __slots__ = ("by_client", "rules")

    def __init__(self, entries: tuple[_Entry, ...]) -> None:
        self.rules = tuple(rule for _, rule in entries)
        self.by_client: dict[str, _BySubject] = {}
        for entry in entries:
            clients = entry[1].clients
            for client in dict.fromkeys(clients) if ANY not in clients else (ANY,):
                split = self.by_client.get(client)
                if split is None:
                    split = self.by_client[client] = _BySubject()
                split.add(entry)

    def matching(self, client_id: str, subject: str | None, groups: frozenset[str]) -> list[Rule]:
        lists: list[list[_Entry]] = []
        for key in (ANY, client_id) if client_id != ANY else (ANY,):
            split = self.by_client.get(key)
            if split is not None:
                split.collect(subject, groups, lists)
        if not lists:
            return []
        if len(lists) == 1:
            return [rule for _, rule in lists[0]]
        by_seq = {seq: rule for entries in lists for seq, rule in entries}  # a rule may be listed twice
        return [by_seq[seq] for seq in sorted(by_seq)]


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
        """The rules whose audiences and subjects match (scope kinds and conditions are left to the engine)."""
        return self._index.matching(audience, client_id=client_id, subject=subject, groups=groups)
