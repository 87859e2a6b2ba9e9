"""Hypothesis properties of the policy engine and the policy-file loader (STYLE §3.4: policies are deterministic)."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from zoneinfo import ZoneInfo

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ace_core.registry import AifMethod
from ace_core.scope import AifScope
from policies.base import AccessRequest
from policies.engine import CHAIN_HORIZON, PolicyEngine
from policies.errors import PolicyError
from policies.policy_file import PolicyDocument
from policies.rules import Effect, Rule
from policies.schedule import WeeklySchedule, Window
from policies.scopes import atoms, intersection, issubset

# Around the spring-forward weekend of Europe/Berlin (2025-03-30) and a week after.
START = int(datetime.fromisoformat("2025-03-27T00:00:00+00:00").timestamp())
SPAN = 10 * 86_400
ZONES = [ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York"), ZoneInfo("UTC")]
PATHS = ["/lock", "/battery", "/log"]
METHODS = [AifMethod.GET, AifMethod.PUT, AifMethod.DELETE]

scopes = st.lists(st.tuples(st.sampled_from(PATHS), st.sampled_from(METHODS)), min_size=1, max_size=4).map(
    lambda pairs: AifScope(pairs)
)


def _rule(draw: st.DrawFn, rule_id: str, effect: Effect | None = None, windows: bool | None = None) -> Rule:
    if effect is None:
        effect = draw(st.sampled_from([Effect.PERMIT, Effect.PERMIT, Effect.DENY, Effect.CONSENT]))
    scope = draw(st.one_of(st.none(), scopes) if effect is Effect.DENY else scopes)
    schedule = None
    if windows or (windows is None and draw(st.booleans())):
        specs = draw(
            st.lists(
                st.tuples(
                    st.frozensets(st.integers(min_value=0, max_value=6), min_size=1),
                    st.integers(min_value=0, max_value=47).map(lambda h: h * 30),
                    st.integers(min_value=1, max_value=48).map(lambda h: h * 30),
                ).filter(lambda t: t[1] != t[2]),
                min_size=1,
                max_size=2,
            )
        )
        schedule = WeeklySchedule(draw(st.sampled_from(ZONES)), tuple(Window(*spec) for spec in specs))
    bound = st.one_of(st.none(), st.none(), st.integers(min_value=START, max_value=START + SPAN))
    valid_from, valid_until = draw(bound), draw(bound)
    if valid_from is not None and valid_until is not None and valid_from >= valid_until:
        valid_until = None
    return Rule(
        id=rule_id,
        effect=effect,
        audiences=draw(st.sampled_from([("d",), ("d",), ("d*",), ("x", "d"), ("x",)])),
        clients=draw(st.sampled_from([("*",), ("*",), ("a",), ("b",)])),
        users=draw(st.sampled_from([(), (), ("alice",), ("*",)])),
        groups=draw(st.sampled_from([(), (), ("staff",)])),
        scope=scope,
        schedule=schedule,
        valid_from=valid_from,
        valid_until=valid_until,
        max_lifetime=None if effect is Effect.DENY else draw(st.one_of(st.none(), st.integers(1, 10_000))),
        approver_users=("frank",) if effect is Effect.CONSENT else (),
    )


@st.composite
def rule_lists(draw: st.DrawFn, prefix: str = "r") -> list[Rule]:
    return [_rule(draw, f"{prefix}{i}") for i in range(draw(st.integers(min_value=0, max_value=6)))]


requests = st.builds(
    AccessRequest,
    client_id=st.sampled_from(["a", "a", "b"]),
    audience=st.sampled_from(["d", "d", "d2", "x"]),
    scope=scopes,
    now=st.integers(min_value=START, max_value=START + SPAN),
    subject=st.sampled_from([None, "alice", "bob"]),
    subject_groups=st.sampled_from([frozenset(), frozenset({"staff"})]),
)


def _allowed(rules: list[Rule], request: AccessRequest, atom: AifScope, t: int) -> bool:
    """Brute force: at ``t`` some matching permit rule grants ``atom`` and no matching deny rule takes it away."""
    matching = [r for r in rules if r.matches(request) and r.active_at(t)]
    covers = [r for r in matching if r.scope is None or issubset(atom, r.scope)]
    return any(r.effect is Effect.PERMIT for r in covers) and not any(r.effect is Effect.DENY for r in covers)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_lists(), requests)
def test_decisions_are_deterministic_and_within_the_request(rules: list[Rule], request: AccessRequest) -> None:
    decision = PolicyEngine(rules).decide(request)
    assert decision == PolicyEngine(list(rules)).decide(request)  # equal input, equal output
    assert decision == PolicyEngine(rules).decide(request)
    if decision.granted is not None:
        assert issubset(decision.granted, request.scope)
    if decision.consent is not None:
        assert issubset(decision.consent.scope, request.scope)
        assert not decision.consent.scope.is_empty and decision.consent.users == ("frank",)
        if decision.granted is not None:
            assert intersection(decision.consent.scope, decision.granted).is_empty
    if decision.permits:
        assert decision.granted is not None
        assert decision.not_after is None or decision.not_after > request.now
        assert decision.max_lifetime is None or decision.max_lifetime >= 1
        assert set(decision.rules) <= {rule.id for rule in rules}


@st.composite
def granting_cases(draw: st.DrawFn) -> tuple[list[Rule], AccessRequest]:
    """Rules and a request at a time when one of its permit rules (the first) is in force for it."""
    anchor = _rule(draw, "anchor", Effect.PERMIT, windows=draw(st.sampled_from([True, True, False])))
    # Intervals with at least one instant before START + SPAN (an interval may begin exactly at the end).
    spans = [(a, b) for a, b in anchor.active_intervals(START, START + SPAN) if a < min(b, START + SPAN)]
    if not spans:
        return [anchor], draw(requests)
    a, b = draw(st.sampled_from(spans))
    request = AccessRequest(
        client_id=draw(st.sampled_from(anchor.clients)).replace("*", "a"),
        audience="d" if anchor.matches_audience("d") else "x",
        scope=anchor.scope | draw(scopes),  # type: ignore[operator]
        now=draw(st.integers(min_value=a, max_value=min(b, START + SPAN) - 1)),
        subject=draw(st.sampled_from(anchor.users)).replace("*", "bob") if anchor.users else None,
        subject_groups=frozenset(anchor.groups),
    )
    if anchor.groups and request.subject is None:
        request = dataclasses.replace(request, subject="carol")
    return [anchor, *draw(rule_lists())], request


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(granting_cases(), st.lists(st.floats(min_value=0, max_value=1), min_size=5, max_size=20))
def test_every_granted_right_stays_allowed_until_not_after(
    case: tuple[list[Rule], AccessRequest], samples: list[float]
) -> None:
    rules, request = case
    decision = PolicyEngine(rules).decide(request)
    if not decision.permits:
        return
    assert decision.granted is not None
    end = decision.not_after if decision.not_after is not None else request.now + CHAIN_HORIZON
    points = {request.now, end - 1} | {request.now + int(f * (end - 1 - request.now)) for f in samples}
    for atom in atoms(decision.granted):
        assert isinstance(atom, AifScope)
        for t in points:
            assert _allowed(rules, request, atom, t), (atom, t)
    event("not_after set" if decision.not_after is not None else "no not_after")
    if decision.not_after is not None and decision.not_after < request.now + CHAIN_HORIZON:
        # and it is the earliest such end: at not_after some granted right is no longer allowed
        assert not all(_allowed(rules, request, atom, decision.not_after) for atom in atoms(decision.granted))  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_lists(), rule_lists(prefix="deny"), requests)
def test_adding_deny_rules_never_grants_more(rules: list[Rule], extra: list[Rule], request: AccessRequest) -> None:
    denies = [rule for rule in extra if rule.effect is Effect.DENY]
    before = PolicyEngine(rules).decide(request)
    after = PolicyEngine([*rules, *denies]).decide(request)
    if after.permits:
        assert before.permits and before.granted is not None and after.granted is not None
        assert issubset(after.granted, before.granted)
        if after.granted == before.granted:
            assert _or_max(after.not_after) <= _or_max(before.not_after)
    if after.consent is not None:
        assert before.consent is not None and issubset(after.consent.scope, before.consent.scope)


def _or_max(value: int | None) -> int:
    return value if value is not None else 2**63


# --------------------------------------------------------------------------------------------------------------
# the loader raises only PolicyError, whatever it is given
# --------------------------------------------------------------------------------------------------------------

KEYS = [
    "rules",
    "timezone",
    "audience_groups",
    "id",
    "effect",
    "client",
    "clients",
    "users",
    "groups",
    "audience",
    "audiences",
    "scope",
    "windows",
    "valid_from",
    "valid_until",
    "max_lifetime",
    "approvers",
    "days",
    "from",
    "to",
    "description",
]
VALUES = [
    "permit",
    "deny",
    "consent",
    "*",
    "/lock:GET",
    "/x:FLY",
    "read write",
    "Mon-Fri 09:00-18:00",
    "Europe/Berlin",
    "Nowhere/Land",
    "2025-01-01T00:00:00Z",
    "2025-01-01T00:00:00",
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00+14:00",
    "",
    "zone.tab",
    "Europe",
]
leaves = st.one_of(
    st.sampled_from(VALUES),
    st.text(max_size=20),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
)


def _containers(children: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    # A named function, not a lambda: Hypothesis reads a lambda's source for its repr, which can warn (and
    # warnings are errors here) when the source is not found as expected.
    return st.one_of(st.lists(children, max_size=4), st.dictionaries(st.sampled_from(KEYS), children, max_size=5))


documents = st.recursive(leaves, _containers, max_leaves=25)


@settings(max_examples=400, deadline=None)
@given(documents)
def test_structured_garbage_raises_only_policy_error(document: object) -> None:
    text = yaml.safe_dump(document)
    try:
        loaded = PolicyDocument.from_yaml(text)
    except PolicyError as exc:
        assert exc.errors and all(isinstance(e, PolicyError) for e in exc.errors)
        return
    PolicyEngine(loaded.rules).decide(
        AccessRequest(client_id="a", audience="d", scope=AifScope.parse_spec("/lock:GET"), now=START)
    )


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_text_garbage_raises_only_policy_error(text: str) -> None:
    try:
        PolicyDocument.from_yaml(text)
    except PolicyError:
        pass


def test_deeply_nested_yaml() -> None:
    for text in ("[" * 1500, "rules:\n" + "  " * 2000 + "- x\n", "a: &x [*x]\nrules: []\n"):
        try:
            PolicyDocument.from_yaml(text)
        except PolicyError:
            pass
