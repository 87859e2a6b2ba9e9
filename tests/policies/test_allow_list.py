"""The static allow-list policy: the YAML format, its errors with line numbers, and the decision rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ace_core.registry import AifMethod
from ace_core.scope import AifScope, TextScope
from policies.base import AccessPolicy, AccessRequest, Decision
from policies.builtin.allow_list import AllowList, PolicyError, Rule, parse_scope_spec

EXAMPLE = """\
rules:
  - client: phone-app        # exact client_id, or "*"
    audience: front-door     # exact audience, or a glob
    scope: "/lock:GET,PUT /battery:GET"
    max_lifetime: 3600
  - client: "*"
    audience: "building-a/*"
    scope: "/lock:GET"
  - client: "*"
    audience: "sensors/*"
    scope: "read write"
    max_lifetime: 300
"""


def ask(policy: AllowList, client: str, audience: str, scope: str) -> Decision:
    return policy.decide(AccessRequest(client_id=client, audience=audience, scope=parse_scope_spec(scope), now=0))


@pytest.fixture
def policy() -> AllowList:
    return AllowList.from_yaml(EXAMPLE, source="example.yaml")


# --------------------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------------------


def test_example_loads(policy: AllowList) -> None:
    checked: AccessPolicy = policy  # structural match, checked by mypy
    assert checked is policy
    assert policy.rules[0] == Rule(
        client="phone-app",
        audience="front-door",
        scope=AifScope.parse_spec("/lock:GET,PUT /battery:GET"),
        max_lifetime=3600,
        line=2,
    )
    assert policy.rules[2].scope == TextScope.parse("read write") and policy.rules[2].line == 9
    assert [rule.line for rule in policy.rules] == [2, 6, 9]


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (
            "rules:\n  - client: a\n    audience: b\n    scope: /x:GET\n    colour: red\n",
            5,
            "unknown rule key 'colour'",
        ),
        ("rules:\n  - client: a\n    scope: /x:GET\n", 2, "missing 'audience'"),
        ("rules:\n  - client: a\n    audience: b\n    scope: /x:FLY\n", 4, "invalid scope"),
        ("rules:\n  - client: a\n    audience: b\n    scope: 'read  write'\n", 4, "invalid scope"),
        ("rules:\n  - client: a\n    audience: b\n    scope: ''\n", 4, "invalid scope"),
        ("rules:\n  - client: a\n    audience: b\n    scope: /x:GET\n    max_lifetime: 0\n", 5, "positive"),
        ("rules:\n  - client: a\n    audience: b\n    scope: /x:GET\n    max_lifetime: soon\n", 5, "integer"),
        ("rules:\n  - client: a\n    audience: b\n    scope: /x:GET\n    max_lifetime: 1.5\n", 5, "integer"),
        ("rules:\n  - client: a\n    audience: b\n    scope: /x:GET\n    max_lifetime: true\n", 5, "integer"),
        ("rules:\n  - client: [a, b]\n    audience: b\n    scope: /x:GET\n", 2, "'client' must be a string"),
        ("rules:\n  - client: \n    audience: b\n    scope: /x:GET\n", 2, "'client' must be a string"),
        ("rules:\n  - client: a\n    client: b\n    audience: b\n    scope: /x:GET\n", 3, "duplicate rule key"),
        ("rules:\n  - just a string\n", 2, "a rule must be a mapping"),
        ("rules: yes\n", 1, "'rules' must be a list"),
        ("policy:\n  - client: a\n", 1, "unknown top-level key 'policy'"),
        ("- client: a\n", 1, "the document must be a mapping"),
        ("{}\n", 1, "missing 'rules'"),
        ("rules:\n  - client: *\n", 2, "invalid YAML"),  # a bare * is a YAML alias
        ("rules:\n  - client: a\n   audience: b\n", 3, "invalid YAML"),
        ("rules: []\n---\nrules: []\n", 2, "invalid YAML"),  # one document only
    ],
)
def test_errors_carry_the_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(PolicyError) as info:
        AllowList.from_yaml(text, source="p.yaml")
    assert info.value.line == line and info.value.source == "p.yaml"
    assert str(info.value).startswith(f"p.yaml:{line}: ")
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("text", ["", "# nothing\n", "rules:\n", "rules: []\n"])
def test_empty_policies_deny_everything(text: str) -> None:
    policy = AllowList.from_yaml(text)
    assert policy.rules == ()
    decision = ask(policy, "a", "b", "/x:GET")
    assert decision.granted is None and not decision.permits


def test_scalars_are_taken_as_written() -> None:
    policy = AllowList.from_yaml(
        "rules:\n  - client: 1234\n    audience: 0x10\n    scope: yes\n    max_lifetime: 1_000\n"
    )
    rule = policy.rules[0]
    assert (rule.client, rule.audience, rule.scope, rule.max_lifetime) == ("1234", "0x10", TextScope.parse("yes"), 1000)


def test_from_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(EXAMPLE)
    assert len(AllowList.from_file(path).rules) == 3
    path.write_text("rules: 5\n")
    with pytest.raises(PolicyError, match=rf"^{path}:1: "):
        AllowList.from_file(path)
    path.write_bytes(b"rules: \xff\n")
    with pytest.raises(PolicyError):
        AllowList.from_file(path)


def test_missing_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(FileNotFoundError):
        AllowList.from_file(tmp_path / "absent.yaml")
    policy = AllowList.from_file(tmp_path / "absent.yaml", missing_ok=True)
    assert policy.rules == () and ask(policy, "a", "b", "/x:GET").granted is None
    assert "denied" in caplog.text


# --------------------------------------------------------------------------------------------------------------
# deciding
# --------------------------------------------------------------------------------------------------------------


def test_grant_is_requested_intersected_with_rules(policy: AllowList) -> None:
    decision = ask(policy, "phone-app", "front-door", "/lock:PUT,DELETE /door:GET")
    assert decision.granted == AifScope.parse_spec("/lock:PUT")
    assert decision.permits and decision.max_lifetime == 3600
    assert "line" in decision.reason


def test_no_matching_rule(policy: AllowList) -> None:
    for client, audience in [("other-app", "front-door"), ("phone-app", "back-door")]:
        decision = ask(policy, client, audience, "/lock:GET")
        assert decision.granted is None and decision.reason == "no rule matches the client and audience"


def test_matching_rules_that_grant_nothing(policy: AllowList) -> None:
    decision = ask(policy, "phone-app", "front-door", "/door:GET")
    assert decision.granted is not None and decision.granted.is_empty and not decision.permits
    assert decision.max_lifetime is None


def test_wildcard_client_and_glob_audience(policy: AllowList) -> None:
    assert ask(policy, "anyone", "building-a/door-1", "/lock:GET,PUT").granted == AifScope.parse_spec("/lock:GET")
    assert ask(policy, "anyone", "building-a/floor-1/door", "/lock:GET").permits  # * matches / too
    assert not ask(policy, "anyone", "building-b/door-1", "/lock:GET").permits
    assert not ask(policy, "anyone", "building-a", "/lock:GET").permits


def test_audience_without_glob_characters_is_exact() -> None:
    policy = AllowList.from_yaml("rules:\n  - {client: a, audience: 'door.1', scope: /x:GET}\n")
    assert ask(policy, "a", "door.1", "/x:GET").permits
    assert not ask(policy, "a", "doorX1", "/x:GET").permits


def test_rules_apply_only_to_their_scope_kind(policy: AllowList) -> None:
    assert ask(policy, "x", "sensors/t1", "read admin").granted == TextScope.parse("read")
    assert ask(policy, "x", "sensors/t1", "/read:GET").granted is None  # AIF request: text rules do not apply
    assert ask(policy, "x", "building-a/1", "read").granted is None


def test_union_of_matching_rules() -> None:
    policy = AllowList.from_yaml(
        "rules:\n"
        "  - {client: a, audience: d, scope: '/lock:GET'}\n"
        "  - {client: '*', audience: d, scope: '/lock:PUT /battery:GET'}\n"
    )
    decision = ask(policy, "a", "d", "/lock:GET,PUT,DELETE /battery:GET")
    assert decision.granted == AifScope.parse_spec("/lock:GET,PUT /battery:GET")
    assert decision.reason == "allowed by rules at lines 2, 3"


LIFETIMES = """\
rules:
  - {client: a, audience: d, scope: '/lock:GET,PUT', max_lifetime: 3600}
  - {client: a, audience: d, scope: '/lock:GET', max_lifetime: 60}
  - {client: a, audience: d, scope: '/battery:GET', max_lifetime: 600}
  - {client: a, audience: d, scope: '/log:GET'}
"""


@pytest.mark.parametrize(
    ("requested", "lifetime"),
    [
        ("/lock:GET", 3600),  # the most generous rule granting GET on /lock counts, not the short redundant one
        ("/lock:GET,PUT", 3600),
        ("/lock:GET /battery:GET", 600),  # each right must be allowed that long: the least-lived right wins
        ("/log:GET", None),  # a rule without a limit
        ("/log:GET /battery:GET", 600),
    ],
)
def test_max_lifetime_is_min_over_rights_of_max_over_rules(requested: str, lifetime: int | None) -> None:
    policy = AllowList.from_yaml(LIFETIMES)
    assert ask(policy, "a", "d", requested).max_lifetime == lifetime


def test_text_lifetimes() -> None:
    policy = AllowList.from_yaml(
        "rules:\n  - {client: a, audience: d, scope: 'read write', max_lifetime: 100}\n"
        "  - {client: a, audience: d, scope: 'read', max_lifetime: 900}\n"
    )
    assert ask(policy, "a", "d", "read").max_lifetime == 900
    assert ask(policy, "a", "d", "read write").max_lifetime == 100


# --------------------------------------------------------------------------------------------------------------
# properties: deterministic, and never more than requested
# --------------------------------------------------------------------------------------------------------------

PATHS = ["/lock", "/battery", "/config", "/a/b"]
CLIENTS = ["a", "b", "*"]
AUDIENCES = ["d1", "d2", "d*", "x/*"]
TOKENS = ["read", "write", "admin", "open"]

single_methods = st.sampled_from([m for m in AifMethod if m.value < (1 << 7)])
aif_specs = st.lists(
    st.tuples(st.sampled_from(PATHS), st.lists(single_methods, min_size=1, max_size=3)), min_size=1, max_size=3
).map(lambda entries: " ".join(f"{path}:{','.join(m.name or '' for m in methods)}" for path, methods in entries))
text_specs = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=3).map(" ".join)
rules = st.lists(
    st.builds(
        lambda client, audience, spec, lifetime: (client, audience, spec, lifetime),
        st.sampled_from(CLIENTS),
        st.sampled_from(AUDIENCES),
        st.one_of(aif_specs, text_specs),
        st.one_of(st.none(), st.integers(min_value=1, max_value=10_000)),
    ),
    max_size=6,
)
requests = st.tuples(
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from(["d1", "d2", "d3", "x/y"]),
    st.one_of(aif_specs, text_specs),
    st.integers(min_value=0, max_value=2**32),
)


def to_yaml(entries: list[tuple[str, str, str, int | None]]) -> str:
    lines = ["rules:"]
    for client, audience, spec, lifetime in entries:
        lines.append(f"  - client: '{client}'\n    audience: '{audience}'\n    scope: '{spec}'")
        if lifetime is not None:
            lines.append(f"    max_lifetime: {lifetime}")
    return "\n".join(lines) + "\n"


@settings(max_examples=300, deadline=None)
@given(rules, requests)
def test_decide_is_deterministic_and_never_grants_more_than_requested(
    entries: list[tuple[str, str, str, int | None]], request: tuple[str, str, str, int]
) -> None:
    client, audience, spec, now = request
    policy = AllowList.from_yaml(to_yaml(entries))
    access = AccessRequest(client_id=client, audience=audience, scope=parse_scope_spec(spec), now=now)
    decision = policy.decide(access)
    again = AllowList.from_yaml(to_yaml(entries)).decide(
        AccessRequest(client_id=client, audience=audience, scope=parse_scope_spec(spec), now=now)
    )
    assert decision == again
    if decision.granted is not None:
        assert type(decision.granted) is type(access.scope)
        assert decision.granted.issubset(access.scope)  # type: ignore[arg-type]
        if decision.permits:
            # every granted right comes from some matching rule of the same kind
            matching = [
                r.scope for r in policy.rules if r.matches(client, audience) and type(r.scope) is type(access.scope)
            ]
            union = matching[0]
            for scope in matching[1:]:
                union = union | scope  # type: ignore[operator]
            assert decision.granted.issubset(union)  # type: ignore[arg-type]
            if decision.max_lifetime is not None:
                assert decision.max_lifetime >= 1


def test_module_doctest() -> None:
    """The documented example in the module docstring runs (STYLE §3.5)."""
    import doctest

    from policies.builtin import allow_list

    result = doctest.testmod(allow_list)
    assert result.attempted > 0 and result.failed == 0
