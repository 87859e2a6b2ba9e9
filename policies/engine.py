"""The policy engine: decides a token request from the rules of a policy file and of any number of rule sources.

Issue #5, "Policy engine". :class:`PolicyEngine` is an :class:`~policies.base.AccessPolicy`: the token endpoint
calls :meth:`PolicyEngine.decide` and issues only ``Decision.granted`` (RFC 9200 §5.8.1: at most what is
requested), for at most ``max_lifetime`` seconds and never beyond ``not_after``. It is pure and deterministic:
the result depends only on the rules and the request (time is ``request.now``; nothing reads a clock, a file or a
database during a decision -- rule sources are asked, and a database-backed source reads what it has).

**Which rules take part.** A rule *matches* a request when its subjects, targets and scope kind match
(:meth:`Rule.matches <policies.rules.Rule.matches>`); it is *in force* when, in addition, ``now`` is within its
validity interval and one of its time windows.

**How the in-force rules combine** (each part is an intersection with the requested scope):

1. ``denied`` = what deny rules name (a deny rule without scope names everything). **Deny overrides** permit and
   consent.
2. ``granted`` = what permit rules name, minus ``denied``. For AIF this works per path on method sets, for text
   scopes on tokens.
3. ``consent`` = what consent rules name, minus ``denied``, minus ``granted``.

The decision is then, in this order:

* ``granted`` is not empty: it is granted. If ``consent`` is not empty as well, the decision also carries it in
  :attr:`Decision.consent <policies.base.Decision.consent>`, so that an app can ask the approvers for the rest; it
  is not granted.
* ``consent`` is not empty: nothing is granted (the token endpoint refuses), and ``Decision.consent`` names the
  rights and the approvers (the users and groups of the consent rules covering them).
* otherwise a refusal whose reason says why: denied by rules ..., rules ... grant none of the requested scope,
  rules ... are not in force at this time, or no rule matches the client, user and audience.

``Decision.granted`` is ``None`` when no rule matches at all and the empty scope when rules match but grant
nothing (as the static allow list of :mod:`policies.builtin.allow_list` does).

**How long a token may live.** A token carries all of its rights for its whole lifetime, so each granted right
(an AIF method on a path, or a scope token) must stay allowed until the token expires:

* ``max_lifetime`` = the least, over the granted rights, of the most generous ``max_lifetime`` among the in-force
  permit rules granting that right (a rule without one allows any lifetime);
* ``not_after`` = the least, over the granted rights, of the end of the uninterrupted stretch during which some
  permit rule grants that right -- windows and rules that follow on without a gap chain, so a token granted at
  17:55 under ``Mon-Fri 09:00-18:00`` ends by 18:00, and under ``09:00-13:00`` plus ``13:00-18:00`` too -- and of
  the next time a deny rule naming that right comes into force. Stretches are followed :data:`CHAIN_HORIZON`
  (8 days) ahead; one that goes on longer ends there, far beyond any token lifetime an AS issues.

``Decision.rules`` lists the ids of the rules that made the difference: the permit rules whose rights are
granted, the deny rules that took something away, the consent rules naming the approvers (or, for refusals, the
rules the reason names). :meth:`PolicyEngine.explain` also says what every matching rule did.

**Speed** (issue #5, "Benchmark": ``benchmarks/bench_policy.py``). Finding the rules that match a request costs
about the same with ten or ten thousand rules: :class:`~policies.sources.RuleIndex` keeps exact audiences in a
dict and globs bucketed by their literal prefix, and remembers per audience its rules split by client, user and
group. Scopes are combined as plain dicts of bits (:data:`policies.scopes.Rights`), each rule's computed once;
rules with equal conditions are looked up once per decision. When every matching rule is a permit rule in force at
all times (an allow-list file, say), the decision takes a shortcut with the same result.

>>> engine = PolicyEngine.from_yaml('''
... rules:
...   - id: office-hours
...     groups: [staff]
...     audience: "building-a/*"
...     scope: "/lock:GET,PUT"
...     windows: ["Mon-Fri 09:00-18:00"]
...     timezone: Europe/Berlin
... ''')
>>> from ace_core.scope import AifScope
>>> d = engine.decide(AccessRequest(client_id="phone-app", subject="alice", subject_groups=frozenset({"staff"}),
...                                 audience="building-a/door-1", scope=AifScope.parse_spec("/lock:PUT"),
...                                 now=1_743_436_500))                 # Monday 2025-03-31 17:55 CEST
>>> d.granted.to_spec(), d.not_after - 1_743_436_500, d.rules     # 5 minutes left, until 18:00
('/lock:PUT', 300, ('office-hours',))
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from policies.base import AccessPolicy, AccessRequest, ConsentRequired, Decision, Scope
from policies.rules import Effect, Rule
from policies.schedule import MAX_TIME, MIN_TIME, merge
from policies.scopes import (
    Rights,
    empty_like,
    format_scope,
    rights,
    rights_and,
    rights_atoms,
    rights_meet,
    rights_minus,
    rights_or,
    to_scope,
)
from policies.sources import RuleIndex, RuleSource

__all__ = ["CHAIN_HORIZON", "Explanation", "PolicyEngine", "RuleOutcome"]

#: How far ahead (seconds) uninterrupted stretches of time windows are followed to find a token's ``not_after``.
CHAIN_HORIZON = 8 * 86_400
#: The first, shorter look-ahead (most stretches of time windows end within a day).
_FIRST_LOOK = 86_400 + 3600
#: Latest ``now`` the engine decides for (later instants could not be looked ahead from).
_LAST_NOW = MAX_TIME - 2 * CHAIN_HORIZON


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """What one matching rule did for a request.

    :param rule: the rule.
    :param outcome: e.g. ``"grants /lock:PUT"``, ``"denies /lock:DELETE"``, ``"not in force: outside Mon-Fri ..."``.
    :param decisive: whether the rule is among ``Decision.rules``.
    """

    rule: Rule
    outcome: str
    decisive: bool


@dataclass(frozen=True, slots=True)
class Explanation:
    """A decision and what each matching rule contributed to it, in evaluation order."""

    decision: Decision
    outcomes: tuple[RuleOutcome, ...]


def _names(rules: Iterable[Rule]) -> str:
    return ", ".join(rule.id for rule in rules)


def _approvers(rules: Sequence[Rule]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    users = tuple(dict.fromkeys(u for rule in rules for u in rule.approver_users))
    groups = tuple(dict.fromkeys(g for rule in rules for g in rule.approver_groups))
    return users, groups


class PolicyEngine(AccessPolicy):
    """Rules from a policy file plus rules from any number of :class:`~policies.sources.RuleSource` s.

    :param rules: the file's rules (or any fixed rules), evaluated first, in order.
    :param sources: further sources, asked on every decision, evaluated after ``rules`` in the given order.
    :raises ValueError: two of ``rules`` share an id.
    """

    def __init__(self, rules: Iterable[Rule] = (), *, sources: Sequence[RuleSource] = ()) -> None:
        self._index = RuleIndex(rules)
        self.sources: tuple[RuleSource, ...] = tuple(sources)

    def __repr__(self) -> str:
        return f"PolicyEngine({len(self._index)} rules, {len(self.sources)} sources)"

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The fixed rules (not those of the sources), in evaluation order."""
        return tuple(self._index)

    def rule(self, rule_id: str) -> Rule | None:
        """The fixed rule with this id, if any."""
        return self._index.get(rule_id)

    def with_sources(self, *sources: RuleSource) -> PolicyEngine:
        """A new engine with the same fixed rules and ``sources`` added after this engine's sources."""
        engine = PolicyEngine.__new__(PolicyEngine)
        engine._index = self._index  # never changed after construction, so it can be shared
        engine.sources = (*self.sources, *sources)
        return engine

    # -- loading ----------------------------------------------------------------------------------------------

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "<string>", sources: Sequence[RuleSource] = ()) -> PolicyEngine:
        """An engine with the rules of a YAML policy document (format: :mod:`policies.policy_file`).

        :raises PolicyError: every mistake in the document, with line numbers.
        """
        from policies.policy_file import PolicyDocument

        return cls(PolicyDocument.from_yaml(text, source=source).rules, sources=sources)

    @classmethod
    def from_file(
        cls, path: Path | str, *, missing_ok: bool = False, sources: Sequence[RuleSource] = ()
    ) -> PolicyEngine:
        """An engine with the rules of a YAML policy file.

        :param missing_ok: a missing file gives no fixed rules (logged as a warning); otherwise it raises.
        :raises PolicyError: every mistake in the file, with line numbers.
        :raises FileNotFoundError: the file does not exist and ``missing_ok`` is false.
        """
        from policies.policy_file import PolicyDocument

        return cls(PolicyDocument.from_file(path, missing_ok=missing_ok).rules, sources=sources)

    # -- deciding ---------------------------------------------------------------------------------------------

    def decide(self, request: AccessRequest) -> Decision:
        """Decide ``request`` (see the module documentation). Pure: equal rules and request, equal decision."""
        matching = self._matching_or_refusal(request)
        if isinstance(matching, Decision):
            return matching
        if all(rule.plain for rule in matching):  # e.g. the rules of an allow-list file
            return _plain_decision(request, matching)
        return _Evaluation(request, matching).decision()

    def candidates(self, request: AccessRequest) -> list[Rule]:
        """The rules the fixed rules and the sources offer for the request's audience, in evaluation order."""
        found = self._index.candidates(request.audience)
        for source in self.sources:
            found.extend(
                source.rules_for(
                    client_id=request.client_id,
                    audience=request.audience,
                    subject=request.subject,
                    groups=request.subject_groups,
                )
            )
        return found

    def explain(self, request: AccessRequest) -> Explanation:
        """The decision and what every matching rule contributed to it."""
        matching = self._matching_or_refusal(request)
        if isinstance(matching, Decision):
            return Explanation(matching, ())
        return _Evaluation(request, matching).explain()

    def _matching_or_refusal(self, request: AccessRequest) -> list[Rule] | Decision:
        if not MIN_TIME <= request.now < _LAST_NOW:
            return Decision(granted=None, reason="time outside the supported range")
        matching = self._matching(request)
        if not matching:
            return Decision(granted=None, reason="no rule matches the client, user and audience")
        return matching

    def _matching(self, request: AccessRequest) -> list[Rule]:
        """The rules that match ``request`` (:meth:`Rule.matches <policies.rules.Rule.matches>`), in evaluation order.

        The same as filtering :meth:`candidates`, faster: the index selects the fixed rules by audience, client,
        user and groups (:meth:`RuleIndex.matching <policies.sources.RuleIndex.matching>`), leaving the kind.
        """
        kind = type(request.scope)
        found = self._index.matching(
            request.audience, client_id=request.client_id, subject=request.subject, groups=request.subject_groups
        )
        matching = [rule for rule in found if rule.scope is None or type(rule.scope) is kind]
        for source in self.sources:
            offered = source.rules_for(
                client_id=request.client_id,
                audience=request.audience,
                subject=request.subject,
                groups=request.subject_groups,
            )
            matching.extend(rule for rule in offered if rule.matches(request))
        return matching


def _plain_decision(request: AccessRequest, matching: list[Rule]) -> Decision:
    """The decision when every matching rule is :attr:`~policies.rules.Rule.plain` (a permit rule in force at all
    times): what :class:`_Evaluation` decides then, without its general machinery. Nothing is denied or needs
    consent; the rules naming part of the request grant it, each right for as long as the most generous rule naming
    it allows, with no end time (``tests/policies/test_rule_index.py`` checks that both agree)."""
    want = rights(request.scope)
    granted: Rights = {}
    granting: list[Rule] = []
    for rule in matching:
        assert rule.rights is not None  # a permit rule has a scope
        part = rights_and(want, rule.rights)
        if part:
            granted = rights_or(granted, part)
            granting.append(rule)
    if not granted:
        return Decision(
            granted=empty_like(request.scope),
            reason=f"{_names(matching)} grant none of the requested scope",
            rules=tuple(rule.id for rule in matching),
        )
    return Decision(
        granted=to_scope(granted, request.scope),
        reason=f"permitted by {_names(granting)}",
        max_lifetime=_plain_lifetime(granted, granting),
        rules=tuple(rule.id for rule in granting),
    )


def _plain_lifetime(granted: Rights, rules: list[Rule]) -> int | None:
    """``max_lifetime`` of ``granted`` under permit rules that are always in force (see the module documentation):
    the least, over the granted rights, of the most generous ``max_lifetime`` among the rules naming the right."""
    if len(rules) == 1:
        return rules[0].max_lifetime
    if all(rule.max_lifetime is None for rule in rules):
        return None
    least: int | None = None
    for key, bit in rights_atoms(granted):
        lifetime = _most_generous([rule for rule in rules if _covers(rule, key, bit)])
        if lifetime is not None:
            least = lifetime if least is None else min(least, lifetime)
    return least


class _Evaluation:
    """One decision in progress: the matching rules, what each names of the request, and the combination.

    Scopes are combined in their working form (:data:`policies.scopes.Rights`: plain dicts of ``int`` bits, the
    rules' own computed once when they were made) and turned back into scope objects only for the result.
    """

    def __init__(self, request: AccessRequest, matching: list[Rule]) -> None:
        self.request = request
        now = self.now = request.now
        self.matching = matching
        requested = request.scope
        self.requested: Scope = requested
        self.empty = empty_like(requested)
        want = rights(requested)
        # Rules with equal conditions are in force together: look each set of conditions up once.
        conditions: dict[tuple[int, int | None, int | None], bool] = {}
        in_force: list[bool] = []
        parts: list[Rights] = []
        denied: Rights = {}
        permitted: Rights = {}
        consentable: Rights = {}
        for rule in matching:
            if rule.schedule is None:
                live = rule.in_validity(now)
            else:
                key = (id(rule.schedule), rule.valid_from, rule.valid_until)
                found = conditions.get(key)
                live = conditions[key] = rule.active_at(now) if found is None else found
            in_force.append(live)
            # What the rule names of the request (a deny rule without scope names all of it).
            scope = rule.rights
            part = want if scope is None else rights_and(want, scope)
            parts.append(part)
            if not live or not part:
                continue
            if rule.effect is Effect.DENY:
                denied = rights_or(denied, part)
            elif rule.effect is Effect.PERMIT:
                permitted = rights_or(permitted, part)
            else:
                consentable = rights_or(consentable, part)
        self.in_force = in_force
        self.parts = parts
        self.denied = denied
        self.would_get = rights_or(permitted, consentable)  # before deny rules
        self.granted = rights_minus(permitted, denied)
        self.consent = rights_minus(rights_minus(consentable, denied), self.granted)
        self._interval_cache: dict[tuple[int, int | None, int | None, int], list[tuple[int, int]]] = {}
        self._start_cache: dict[tuple[int, int | None, int | None], int | None] = {}

    def _rules(self) -> Iterable[tuple[Rule, Rights, bool]]:
        return zip(self.matching, self.parts, self.in_force, strict=True)

    def _scope(self, found: Rights) -> Scope:
        return to_scope(found, self.requested)

    def _text(self, found: Rights) -> str:
        return format_scope(self._scope(found))

    # -- the decision -------------------------------------------------------------------------------------------

    def decision(self) -> Decision:
        return self._decision([self._decisive(rule, part, live) for rule, part, live in self._rules()])

    def explain(self) -> Explanation:
        decision = self.decision()
        decisive = set(decision.rules)
        return Explanation(
            decision,
            tuple(
                RuleOutcome(rule, self._describe(rule, part, live), rule.id in decisive)
                for rule, part, live in self._rules()
            ),
        )

    def _decisive(self, rule: Rule, part: Rights, live: bool) -> bool:
        """Whether the rule made a difference: granted, took away or asks consent for something."""
        if not live:
            return False
        if rule.effect is Effect.PERMIT:
            return rights_meet(part, self.granted)
        if rule.effect is Effect.DENY:
            return rights_meet(part, self.would_get)
        return rights_meet(part, self.consent)

    def _describe(self, rule: Rule, part: Rights, live: bool) -> str:
        """What the rule did, for people."""
        if not live:
            if not rule.in_validity(self.now):
                return f"not in force at this time ({rule.describe_conditions()})"
            return f"not in force at this time (outside {rule.schedule})"
        if rule.effect is Effect.PERMIT:
            got = rights_and(part, self.granted)
            if got:
                return f"grants {self._text(got)}"
            if part:
                return f"would grant {self._text(part)}, but it is denied"
            return "grants none of the requested scope"
        if rule.effect is Effect.DENY:
            removed = rights_and(part, self.would_get)
            if removed:
                return f"denies {self._text(removed)}"
            if part:
                return f"denies {self._text(part)}, which nothing else grants"
            return "denies none of the requested scope"
        asked = rights_and(part, self.consent)
        if asked:
            approvers = ConsentRequired(
                scope=self._scope(asked), users=rule.approver_users, groups=rule.approver_groups
            ).approvers
            return f"needs approval of {self._text(asked)} by {', '.join(approvers)}"
        if part:
            return f"would need approval of {self._text(part)}, but it is granted or denied"
        return "covers none of the requested scope"

    def _decision(self, flags: list[bool]) -> Decision:
        decisive = [rule for rule, made_difference in zip(self.matching, flags, strict=True) if made_difference]
        ids = tuple(rule.id for rule in decisive)
        denying = [rule for rule in decisive if rule.effect is Effect.DENY]
        consent = self._consent(decisive)
        if self.granted:
            permitting = [rule for rule in decisive if rule.effect is Effect.PERMIT]
            reason = f"permitted by {_names(permitting)}"
            if denying:
                reason += f"; {self._text(rights_and(self.denied, self.would_get))} denied by {_names(denying)}"
            if consent is not None:
                reason += f"; {format_scope(consent.scope)} needs consent of {', '.join(consent.approvers)}"
            max_lifetime, not_after = self._limits()
            return Decision(
                granted=self._scope(self.granted),
                reason=reason,
                max_lifetime=max_lifetime,
                not_after=not_after,
                consent=consent,
                rules=ids,
            )
        if consent is not None:
            reason = f"consent required from {', '.join(consent.approvers)}"
            if denying:
                reason += f"; {self._text(rights_and(self.denied, self.would_get))} denied by {_names(denying)}"
            return Decision(granted=self.empty, reason=reason, consent=consent, rules=ids)
        if denying:
            return Decision(granted=self.empty, reason=f"denied by {_names(denying)}", rules=ids)
        covering = [rule for rule, part, live in self._rules() if live and part]
        if covering:  # only deny rules can be left here: they cover rights that nothing else grants
            return Decision(
                granted=self.empty, reason=f"denied by {_names(covering)}", rules=tuple(r.id for r in covering)
            )
        dormant = [rule for rule, part, live in self._rules() if not live and part and rule.effect is not Effect.DENY]
        if dormant:
            reason = f"{_names(dormant)} not in force at this time"
            return Decision(granted=self.empty, reason=reason, rules=tuple(r.id for r in dormant))
        granting = [rule for rule in self.matching if rule.effect is not Effect.DENY]
        reason = f"{_names(granting)} grant none of the requested scope" if granting else "no rule grants anything"
        return Decision(granted=self.empty, reason=reason, rules=tuple(r.id for r in granting))

    def _consent(self, decisive: list[Rule]) -> ConsentRequired | None:
        if not self.consent:
            return None
        asking = [rule for rule in decisive if rule.effect is Effect.CONSENT]
        users, groups = _approvers(asking)
        return ConsentRequired(
            scope=self._scope(self.consent), users=users, groups=groups, rules=tuple(r.id for r in asking)
        )

    # -- lifetime -----------------------------------------------------------------------------------------------

    def _limits(self) -> tuple[int | None, int | None]:
        """(max_lifetime, not_after) of the granted rights (see the module documentation)."""
        permits = [(rule, live) for rule, _, live in self._rules() if rule.effect is Effect.PERMIT]
        future_denies = [rule for rule, _, live in self._rules() if rule.effect is Effect.DENY and not live]
        # Rights covered by the same rules have the same limits: compute once per set of covering rules.
        signatures: dict[tuple[tuple[int, ...], tuple[int, ...]], None] = {}
        for key, bit in rights_atoms(self.granted):
            by = tuple(i for i, (rule, _) in enumerate(permits) if _covers(rule, key, bit))
            denied_later = tuple(i for i, rule in enumerate(future_denies) if _covers(rule, key, bit))
            signatures[(by, denied_later)] = None
        max_lifetime: int | None = None
        not_after: int | None = None
        for by, denied_later in signatures:
            covering = [permits[i] for i in by]
            lifetime = _most_generous([rule for rule, live in covering if live])
            if lifetime is not None:
                max_lifetime = lifetime if max_lifetime is None else min(max_lifetime, lifetime)
            end = self._stretch_end([rule for rule, _ in covering], [future_denies[i] for i in denied_later])
            if end is not None:
                not_after = end if not_after is None else min(not_after, end)
        return max_lifetime, not_after

    def _stretch_end(self, permits: list[Rule], denies: list[Rule]) -> int | None:
        """End of the uninterrupted stretch from ``now`` in which one of ``permits`` is in force, cut at the next
        start of one of ``denies``; ``None`` if it never ends."""
        now = self.now
        end: int | None = None
        if any(rule.has_conditions for rule in permits):
            # Most stretches end within a day: look one day ahead first, the whole horizon only if needed.
            for ahead in (_FIRST_LOOK, CHAIN_HORIZON):
                horizon = now + ahead
                # Rules with equal conditions have equal intervals: each set of conditions once.
                spans = {id(found): found for rule in permits if (found := self._intervals(rule, horizon))}
                stretches = merge([span for found in spans.values() for span in found])
                end = next((b for a, b in stretches if a <= now < b), now)
                if end < horizon:  # ended before the look-ahead did: exact
                    break
            if end is not None and end >= MAX_TIME:
                end = None
        for rule in denies:
            start = self._next_start(rule)
            if start is not None and (end is None or start < end):
                end = start
        return end

    def _intervals(self, rule: Rule, horizon: int) -> list[tuple[int, int]]:
        key = (id(rule.schedule), rule.valid_from, rule.valid_until, horizon)
        found = self._interval_cache.get(key)
        if found is None:
            found = self._interval_cache[key] = rule.active_intervals(self.now, horizon)
        return found

    def _next_start(self, rule: Rule) -> int | None:
        key = (id(rule.schedule), rule.valid_from, rule.valid_until)
        if key not in self._start_cache:
            self._start_cache[key] = rule.next_start(self.now, CHAIN_HORIZON)
        return self._start_cache[key]


def _covers(rule: Rule, key: str, bit: int) -> bool:
    """Whether ``rule`` names the single right ``(key, bit)`` (a rule without scope names every right)."""
    scope = rule.rights
    return scope is None or bool(scope.get(key, 0) & bit)


def _most_generous(rules: list[Rule]) -> int | None:
    """The largest ``max_lifetime`` of ``rules``; ``None`` (unlimited) if one of them has none."""
    limits = [rule.max_lifetime for rule in rules]
    if not limits or None in limits:
        return None
    return max(limit for limit in limits if limit is not None)
