"""The engine's indexes and fast paths against brute force (issue #5, "Benchmark": the engine is fast, not different).

* :class:`~policies.sources.RuleIndex` (exact audiences, globs bucketed by literal prefix, per-audience cache split
  by client, user and group) finds exactly the rules a linear scan over all rules finds, in the same order, also
  while rules are added and removed;
* the engine's matching rules are exactly the candidates that :meth:`Rule.matches` accepts;
* :meth:`PolicyEngine.decide` (which takes a shortcut when every matching rule is a permit rule in force at all
  times) decides as :meth:`PolicyEngine.explain` does (which always runs the general evaluation).
"""

from __future__ import annotations

import fnmatch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ace_core.registry import AifMethod
from ace_core.scope import AifScope, TextScope
from policies.base import AccessRequest
from policies.engine import PolicyEngine
from policies.rules import ANY, Effect, Rule, compile_glob, glob_prefix
from policies.schedule import WeeklySchedule, Window
from policies.sources import CANDIDATE_CACHE_SIZE, MemoryRuleSource, RuleIndex

NOW = 1_774_224_000  # 2026-03-23T00:00:00Z, a Monday

# Audiences over a small alphabet, so that random globs often match them.
segments = st.sampled_from(["a", "b", "ab", "b-1", "x"])
audiences = st.lists(segments, min_size=1, max_size=3).map("/".join)
glob_parts = st.sampled_from(["a", "b", "/", "-", "1", "*", "?", "[ab]", "[!a]", "[", "]", "**"])
globs = st.lists(glob_parts, min_size=1, max_size=6).map("".join)
targets = st.lists(st.one_of(audiences, globs), min_size=1, max_size=3).map(tuple)

aif_scopes = st.lists(
    st.tuples(st.sampled_from(["/lock", "/log"]), st.sampled_from([AifMethod.GET, AifMethod.PUT])), min_size=1
).map(AifScope)
text_scopes = st.lists(st.sampled_from(["read", "write"]), min_size=1).map(TextScope)


@st.composite
def rules(draw: st.DrawFn, rule_id: str, *, plain: bool = False) -> Rule:
    effect = Effect.PERMIT if plain else draw(st.sampled_from(list(Effect)))
    scope = draw(st.one_of(aif_scopes, text_scopes, *([st.none()] if effect is Effect.DENY else [])))
    schedule = None
    if not plain and draw(st.booleans()):
        from zoneinfo import ZoneInfo

        schedule = WeeklySchedule(ZoneInfo("Europe/Berlin"), (Window.parse("Mon-Fri 09:00-18:00"),))
    return Rule(
        id=rule_id,
        effect=effect,
        audiences=draw(targets),
        scope=scope,
        clients=draw(st.sampled_from([(ANY,), ("c1",), ("c1", "c2"), ("c2", ANY)])),
        users=draw(st.sampled_from([(), (), ("u1",), ("u1", "u2"), (ANY,)])),
        groups=draw(st.sampled_from([(), (), ("g1",), ("g1", "g2")])),
        schedule=schedule,
        max_lifetime=None if effect is Effect.DENY else draw(st.sampled_from([None, 60, 600, 3600])),
        approver_users=("frank",) if effect is Effect.CONSENT else (),
    )


@st.composite
def rule_lists(draw: st.DrawFn, prefix: str = "r", *, plain: bool = False, max_size: int = 12) -> list[Rule]:
    count = draw(st.integers(min_value=0, max_value=max_size))
    return [draw(rules(f"{prefix}{i}", plain=plain)) for i in range(count)]


def near(rules: list[Rule]) -> st.SearchStrategy[AccessRequest]:
    """Requests whose audiences are random or close to the rules' targets: a target itself, its literal prefix
    (alone or followed by a character), or a glob with its wildcards filled in."""
    names = sorted({a for rule in rules for a in rule.audiences})
    close = [
        variant
        for name in names
        for variant in (
            name,
            glob_prefix(name),
            glob_prefix(name) + "b",
            name.replace("*", "ab/").replace("?", "a").replace("[ab]", "b").replace("[!a]", "b"),
            name.replace("*", "").replace("?", "-").replace("[ab]", "a").replace("[!a]", "x"),
        )
        if variant
    ]
    chosen = st.one_of(audiences, globs, st.sampled_from(close)) if close else st.one_of(audiences, globs)
    return st.builds(
        AccessRequest,
        client_id=st.sampled_from(["c1", "c2", "c3", ANY]),
        audience=chosen,
        scope=st.one_of(aif_scopes, text_scopes),
        now=st.integers(min_value=NOW, max_value=NOW + 7 * 86_400),
        subject=st.sampled_from([None, "u1", "u2", "u3"]),
        subject_groups=st.sampled_from([frozenset(), frozenset({"g1"}), frozenset({"g2", "g3"})]),
    )


def _linear(rules: list[Rule], request: AccessRequest) -> list[Rule]:
    """Brute force: every rule, in order, tested with Rule.matches."""
    return [rule for rule in rules if rule.matches(request)]


# -- the glob helpers ---------------------------------------------------------------------------------------------


@given(globs, audiences)
def test_compiled_globs_match_as_fnmatch_does(pattern: str, audience: str) -> None:
    matched = compile_glob(pattern).match(audience) is not None
    assert matched == fnmatch.fnmatchcase(audience, pattern)
    if matched:
        assert audience.startswith(glob_prefix(pattern))


# -- candidate selection ------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_index_selects_what_a_linear_scan_selects(data: st.DataObject) -> None:
    rules = data.draw(rule_lists(max_size=25))
    index = RuleIndex(rules)
    for request in data.draw(st.lists(near(rules), min_size=1, max_size=8)):
        audience = request.audience
        assert index.candidates(audience) == [rule for rule in rules if rule.matches_audience(audience)]
        found = index.matching(
            audience, client_id=request.client_id, subject=request.subject, groups=request.subject_groups
        )
        assert found == [
            rule
            for rule in rules
            if rule.matches_audience(audience)
            and rule.matches_subject(request.client_id, request.subject, request.subject_groups)
        ]
        assert index.candidates(audience) == index.candidates(audience)  # the cached answer is the same


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_index_stays_right_while_rules_come_and_go(data: st.DataObject) -> None:
    pool = data.draw(rule_lists(max_size=15))
    operations = data.draw(
        st.lists(st.tuples(st.sampled_from(["add", "remove", "ask"]), st.integers(0, 14), near(pool)), max_size=25)
    )
    source = MemoryRuleSource()
    present: list[Rule] = []  # in insertion order
    for operation, i, request in operations:
        if operation == "add" and pool and pool[i % len(pool)] not in present:
            source.add(pool[i % len(pool)])
            present.append(pool[i % len(pool)])
        elif operation == "remove" and present:
            gone = present.pop(i % len(present))
            source.remove(gone.id)
        found = source.rules_for(
            client_id=request.client_id,
            audience=request.audience,
            subject=request.subject,
            groups=request.subject_groups,
        )
        assert [rule for rule in found if rule.matches(request)] == _linear(present, request)
    assert list(source) == present


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_engine_matches_what_a_linear_scan_matches(data: st.DataObject) -> None:
    fixed, stored = data.draw(rule_lists()), data.draw(rule_lists(prefix="s"))
    engine = PolicyEngine(fixed, sources=[MemoryRuleSource(stored)])
    for request in data.draw(st.lists(near(fixed + stored), min_size=1, max_size=6)):
        expected = _linear([*fixed, *stored], request)
        assert engine._matching(request) == expected
        assert [rule for rule in engine.candidates(request) if rule.matches(request)] == expected


def test_a_full_candidate_cache_starts_over() -> None:
    rule = Rule(id="r", audiences=("door-*",), scope=TextScope.parse("open"))
    index = RuleIndex([rule])
    for i in range(CANDIDATE_CACHE_SIZE + 10):
        assert index.candidates(f"door-{i}") == [rule]
    assert len(index._cache) <= CANDIDATE_CACHE_SIZE


def test_a_change_forgets_only_the_audiences_it_touches() -> None:
    index = RuleIndex([Rule(id="r", audiences=("a/*",), scope=TextScope.parse("open"))])
    index.candidates("a/1"), index.candidates("b/1")
    kept = index._cache["b/1"]
    index.add(Rule(id="s", audiences=("a/1",), scope=TextScope.parse("read")))
    assert "a/1" not in index._cache and index._cache["b/1"] is kept
    assert [r.id for r in index.candidates("a/1")] == ["r", "s"]
    index.remove("r")
    assert [r.id for r in index.candidates("a/1")] == ["s"] and index.candidates("a/2") == []


def test_names_listed_twice_list_the_rule_once() -> None:
    rule = Rule(
        id="r",
        audiences=("d", "d*", "d"),
        scope=TextScope.parse("open"),
        clients=("c1", "c1"),
        users=("u1", "u1"),
        groups=("g1", "g1"),
    )
    index = RuleIndex([rule])
    assert index.candidates("d") == [rule]
    for subject, groups in (("u1", frozenset()), ("u2", frozenset({"g1"})), ("u1", frozenset({"g1"}))):
        assert index.matching("d", client_id="c1", subject=subject, groups=groups) == [rule]


# -- the shortcut for plain permit rules ----------------------------------------------------------------------------


def _order(scope: object) -> object:
    """A scope's entries in order (equality of scopes ignores it, the wire form does not)."""
    if isinstance(scope, AifScope):
        return [(path, int(mask)) for path, mask in scope.items()]
    if isinstance(scope, TextScope):
        return scope.tokens
    return scope


@pytest.mark.parametrize("plain", [True, False])
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_decide_agrees_with_the_general_evaluation(plain: bool, data: st.DataObject) -> None:
    fixed = data.draw(rule_lists(plain=plain))
    engine = PolicyEngine(fixed)
    for request in data.draw(st.lists(near(fixed), min_size=1, max_size=6)):
        decided, explained = engine.decide(request), engine.explain(request).decision
        assert decided == explained
        assert _order(decided.granted) == _order(explained.granted)
