"""The policy engine: matching, deny overrides, consent, expiry from windows and validity, lifetimes, sources."""

from __future__ import annotations

from datetime import datetime

import pytest

from ace_core.scope import AifScope, TextScope
from policies.base import AccessPolicy, AccessRequest, ConsentRequired, Decision
from policies.builtin.allow_list import parse_scope_spec
from policies.engine import CHAIN_HORIZON, PolicyEngine
from policies.rules import Effect, Rule
from policies.schedule import WeeklySchedule, Window
from policies.sources import MemoryRuleSource, RuleSource

MONDAY_1755 = "2025-03-31T17:55:00+02:00"


def at(text: str) -> int:
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None
    return int(moment.timestamp())


def engine(text: str, *sources: RuleSource) -> PolicyEngine:
    return PolicyEngine.from_yaml(text, source="p.yaml", sources=sources)


def ask(
    policy: AccessPolicy,
    scope: str,
    *,
    client: str = "phone-app",
    audience: str = "front-door",
    when: str = MONDAY_1755,
    user: str | None = None,
    groups: tuple[str, ...] = (),
) -> Decision:
    return policy.decide(
        AccessRequest(
            client_id=client,
            audience=audience,
            scope=parse_scope_spec(scope),
            now=at(when),
            subject=user,
            subject_groups=frozenset(groups),
        )
    )


def granted(decision: Decision) -> str | None:
    """The granted scope in spec form; None when nothing is granted."""
    if not decision.permits:
        return None
    assert decision.granted is not None
    return decision.granted.to_spec() if isinstance(decision.granted, AifScope) else decision.granted.encode()


def test_engine_is_an_access_policy() -> None:
    checked: AccessPolicy = PolicyEngine()
    assert ask(checked, "/lock:GET").granted is None


# --------------------------------------------------------------------------------------------------------------
# subjects
# --------------------------------------------------------------------------------------------------------------

SUBJECTS = """
rules:
  - {id: one-client, client: phone-app, audience: d, scope: "/a:GET"}
  - {id: every-client, client: "*", audience: d, scope: "/b:GET"}
  - {id: alice, users: [alice], audience: d, scope: "/c:GET"}
  - {id: any-user, users: "*", audience: d, scope: "/d:GET"}
  - {id: staff, groups: [staff, admins], audience: d, scope: "/e:GET"}
  - {id: app-for-staff, client: phone-app, groups: [staff], audience: d, scope: "/f:GET"}
  - {id: bob-or-guards, users: [bob], groups: [guards], audience: d, scope: "/g:GET"}
"""
ALL_PATHS = "/a:GET /b:GET /c:GET /d:GET /e:GET /f:GET /g:GET"


@pytest.mark.parametrize(
    ("client", "user", "groups", "expected"),
    [
        ("phone-app", None, (), "/a:GET /b:GET"),  # client credentials: only rules without users/groups
        ("other-app", None, (), "/b:GET"),
        ("phone-app", "alice", (), "/a:GET /b:GET /c:GET /d:GET"),
        ("phone-app", "carol", ("staff",), "/a:GET /b:GET /d:GET /e:GET /f:GET"),
        ("other-app", "carol", ("staff",), "/b:GET /d:GET /e:GET"),  # app-for-staff needs both
        ("other-app", "dave", ("admins",), "/b:GET /d:GET /e:GET"),
        ("other-app", "bob", (), "/b:GET /d:GET /g:GET"),  # users OR groups
        ("other-app", "erin", ("guards",), "/b:GET /d:GET /g:GET"),
    ],
)
def test_subjects(client: str, user: str | None, groups: tuple[str, ...], expected: str) -> None:
    decision = ask(engine(SUBJECTS), ALL_PATHS, client=client, audience="d", user=user, groups=groups)
    assert granted(decision) == expected


def test_groups_without_a_user_do_not_match() -> None:
    assert granted(ask(engine(SUBJECTS), "/e:GET", client="x", audience="d", groups=("staff",))) is None


# --------------------------------------------------------------------------------------------------------------
# targets and scope kinds
# --------------------------------------------------------------------------------------------------------------

TARGETS = """
audience_groups:
  floor-3: ["building-a/floor-3/*", building-a/lobby]
rules:
  - {id: exact, client: "*", audience: front-door, scope: "/exact:GET"}
  - {id: glob, client: "*", audience: "building-a/*", scope: "/glob:GET"}
  - {id: group, client: "*", audience_groups: [floor-3], scope: "/group:GET"}
  - {id: several, client: "*", audiences: [back-door, "garage-?"], scope: "/several:GET"}
  - {id: text, client: "*", audience: front-door, scope: "read write"}
"""
REQUEST = "/exact:GET /glob:GET /group:GET /several:GET"


@pytest.mark.parametrize(
    ("audience", "expected"),
    [
        ("front-door", "/exact:GET"),
        ("building-a/floor-3/door-1", "/glob:GET /group:GET"),
        ("building-a/lobby", "/glob:GET /group:GET"),
        ("building-a/floor-2/door-1", "/glob:GET"),
        ("back-door", "/several:GET"),
        ("garage-1", "/several:GET"),
        ("garage-10", None),
        ("front-door-2", None),
    ],
)
def test_targets(audience: str, expected: str | None) -> None:
    assert granted(ask(engine(TARGETS), REQUEST, audience=audience)) == expected


def test_rules_apply_only_to_their_scope_kind() -> None:
    policy = engine(TARGETS)
    assert ask(policy, "read admin").granted == TextScope.parse("read")
    assert ask(policy, "admin").granted == TextScope()  # matching text rule, nothing granted
    assert ask(policy, "/read:GET", audience="back-door").granted == AifScope()
    assert ask(policy, "read", audience="back-door").granted is None  # no text rule for back-door


def test_no_matching_rule() -> None:
    decision = ask(engine(TARGETS), "/exact:GET", audience="elsewhere")
    assert decision.granted is None and decision.reason == "no rule matches the client, user and audience"
    assert decision.rules == () and decision.consent is None


# --------------------------------------------------------------------------------------------------------------
# deny overrides permit; AIF and text set algebra
# --------------------------------------------------------------------------------------------------------------

DENY = """
rules:
  - {id: staff, groups: [staff], audience: "lock-*", scope: "/lock:GET,PUT,DELETE /log:GET /battery:GET"}
  - {id: no-delete, effect: deny, client: "*", audience: "lock-*", scope: "/lock:DELETE"}
  - {id: mallory-out, effect: deny, users: [mallory], audience: "lock-*"}
  - {id: text-permit, client: "*", audience: sensor, scope: "read write admin"}
  - {id: text-deny, effect: deny, client: untrusted, audience: sensor, scope: "admin write"}
"""


def test_deny_overrides_permit_per_path_and_method() -> None:
    decision = ask(engine(DENY), "/lock:GET,DELETE /log:GET /door:GET", audience="lock-1", user="u", groups=("staff",))
    assert granted(decision) == "/lock:GET /log:GET"  # requested ∩ permitted, minus denied
    assert decision.rules == ("staff", "no-delete")
    assert "denied by no-delete" in decision.reason


def test_deny_everything_and_only_denied() -> None:
    policy = engine(DENY)
    decision = ask(policy, "/lock:GET", audience="lock-1", user="mallory", groups=("staff",))
    assert decision.granted == AifScope() and not decision.permits
    assert decision.reason == "denied by mallory-out" and decision.rules == ("mallory-out",)
    decision = ask(policy, "/lock:DELETE", audience="lock-1", user="u", groups=("staff",))
    assert not decision.permits and decision.rules == ("no-delete",)


def test_deny_covering_what_nothing_grants_is_still_the_reason() -> None:
    decision = ask(engine(DENY), "/lock:DELETE", audience="lock-1", user="u")  # no staff: nothing permits
    assert not decision.permits and decision.reason == "denied by no-delete"


def test_text_scopes() -> None:
    policy = engine(DENY)
    assert ask(policy, "read write admin other", audience="sensor").granted == TextScope.parse("read write admin")
    decision = ask(policy, "read write admin", client="untrusted", audience="sensor")
    assert decision.granted == TextScope.parse("read")
    assert decision.rules == ("text-permit", "text-deny")


# --------------------------------------------------------------------------------------------------------------
# time: windows, validity, expiry, chaining, daylight saving
# --------------------------------------------------------------------------------------------------------------

OFFICE = """
timezone: Europe/Berlin
rules:
  - {id: office, client: "*", audience: front-door, scope: "/lock:GET,PUT", windows: ["Mon-Fri 09:00-18:00"]}
"""


def test_1755_expires_by_1800() -> None:
    decision = ask(engine(OFFICE), "/lock:PUT")
    assert granted(decision) == "/lock:PUT"
    assert decision.not_after == at("2025-03-31T18:00:00+02:00")
    assert decision.not_after is not None and decision.not_after - at(MONDAY_1755) == 300
    assert decision.max_lifetime is None


def test_outside_the_window_is_refused_with_the_rule_named() -> None:
    decision = ask(engine(OFFICE), "/lock:PUT", when="2025-03-31T18:00:00+02:00")
    assert not decision.permits and decision.granted == AifScope()
    assert decision.reason == "office not in force at this time" and decision.rules == ("office",)
    assert not ask(engine(OFFICE), "/lock:PUT", when="2025-04-05T12:00:00+02:00").permits  # Saturday


@pytest.mark.parametrize(
    ("windows", "expected"),
    [
        ('["Mon 09:00-13:00", "Mon 13:00-18:00"]', "2025-03-31T18:00:00+02:00"),  # touching windows chain
        ('["Mon 09:00-18:00"]', "2025-03-31T18:00:00+02:00"),
        ('["Mon 12:00-24:00", "Tue 00:00-08:00"]', "2025-04-01T08:00:00+02:00"),  # across midnight
        ('["Mon 12:00-02:00"]', "2025-04-01T02:00:00+02:00"),  # overnight window
    ],
)
def test_windows_chain(windows: str, expected: str) -> None:
    text = f"""
rules:
  - {{id: r, client: "*", audience: front-door, scope: "/lock:GET", timezone: Europe/Berlin, windows: {windows}}}
"""
    assert ask(engine(text), "/lock:GET", when="2025-03-31T12:30:00+02:00").not_after == at(expected)


def test_windows_of_different_rules_chain() -> None:
    text = """
timezone: Europe/Berlin
rules:
  - {id: morning, client: "*", audience: d, scope: "/lock:GET", windows: ["Mon 09:00-13:00"]}
  - {id: afternoon, client: "*", audience: d, scope: "/lock:GET,PUT", windows: ["Mon 13:00-18:00"]}
"""
    policy = engine(text)
    decision = ask(policy, "/lock:GET", audience="d", when="2025-03-31T12:30:00+02:00")
    assert decision.not_after == at("2025-03-31T18:00:00+02:00") and decision.rules == ("morning",)
    # PUT is only granted from 13:00, so a token for GET+PUT at 13:30 ends with the afternoon rule
    decision = ask(policy, "/lock:GET,PUT", audience="d", when="2025-03-31T13:30:00+02:00")
    assert granted(decision) == "/lock:GET,PUT" and decision.not_after == at("2025-03-31T18:00:00+02:00")


def test_not_after_is_the_least_over_the_granted_rights() -> None:
    text = """
timezone: Europe/Berlin
rules:
  - {id: short, client: "*", audience: d, scope: "/lock:PUT", windows: ["daily 09:00-12:00"]}
  - {id: long, client: "*", audience: d, scope: "/lock:GET", windows: ["daily 09:00-18:00"]}
"""
    decision = ask(engine(text), "/lock:GET,PUT", audience="d", when="2025-03-31T10:00:00+02:00")
    assert decision.not_after == at("2025-03-31T12:00:00+02:00")
    assert ask(engine(text), "/lock:GET", audience="d", when="2025-03-31T10:00:00+02:00").not_after == at(
        "2025-03-31T18:00:00+02:00"
    )


def test_rule_without_conditions_has_no_not_after() -> None:
    text = 'rules:\n  - {client: "*", audience: d, scope: "/lock:GET"}\n'
    assert ask(engine(text), "/lock:GET", audience="d").not_after is None


def test_a_window_that_never_closes_is_always() -> None:
    text = """
rules:
  - {client: "*", audience: d, scope: "/x:GET", timezone: UTC, windows: ["daily 00:00-24:00"]}
"""
    assert ask(engine(text), "/x:GET", audience="d").not_after is None


def test_long_stretches_end_at_the_horizon() -> None:
    text = """
timezone: Europe/Berlin
rules:
  - {id: weekdays, client: "*", audience: d, scope: "/x:GET", windows: ["Mon-Fri 00:00-24:00"]}
  - {id: weekends, client: "*", audience: d, scope: "/x:GET", windows: ["Sat-Sun 00:00-24:00"]}
"""
    now = at(MONDAY_1755)
    assert ask(engine(text), "/x:GET", audience="d").not_after == now + CHAIN_HORIZON


VALIDITY = """
rules:
  - id: contractor
    client: "*"
    audience: d
    scope: "/lock:PUT"
    valid_from: 2025-04-01T08:00:00+02:00
    valid_until: 2025-04-03T17:00:00+02:00
"""


@pytest.mark.parametrize(
    ("when", "permits"),
    [
        ("2025-04-01T07:59:59+02:00", False),
        ("2025-04-01T08:00:00+02:00", True),  # valid_from is inclusive
        ("2025-04-03T16:59:59+02:00", True),
        ("2025-04-03T17:00:00+02:00", False),  # valid_until is exclusive
    ],
)
def test_validity_interval(when: str, permits: bool) -> None:
    decision = ask(engine(VALIDITY), "/lock:PUT", audience="d", when=when)
    assert decision.permits is permits
    if permits:
        assert decision.not_after == at("2025-04-03T17:00:00+02:00")
    else:
        assert decision.reason == "contractor not in force at this time"


def test_validity_and_windows_together() -> None:
    text = """
timezone: Europe/Berlin
rules:
  - {client: "*", audience: d, scope: "/x:GET", windows: ["daily 09:00-18:00"], valid_until: "2025-03-31T12:00:00"}
"""
    decision = ask(engine(text), "/x:GET", audience="d", when="2025-03-31T10:00:00+02:00")
    assert decision.not_after == at("2025-03-31T12:00:00+02:00")  # local time in the file's zone


def test_a_deny_coming_into_force_cuts_the_token() -> None:
    text = """
timezone: Europe/Berlin
rules:
  - {id: always, client: "*", audience: d, scope: "/lock:GET,PUT"}
  - {id: lunch, effect: deny, client: "*", audience: d, scope: "/lock:PUT", windows: ["daily 12:00-13:00"]}
  - {id: later, effect: deny, client: "*", audience: d, scope: "/lock:GET", valid_from: "2025-04-10T00:00:00Z"}
"""
    policy = engine(text)
    decision = ask(policy, "/lock:PUT", audience="d", when="2025-03-31T11:00:00+02:00")
    assert decision.permits and decision.not_after == at("2025-03-31T12:00:00+02:00")
    assert not ask(policy, "/lock:PUT", audience="d", when="2025-03-31T12:30:00+02:00").permits
    decision = ask(policy, "/lock:GET", audience="d", when="2025-03-31T11:00:00+02:00")
    assert decision.not_after == at("2025-04-10T00:00:00Z")  # a deny far ahead still counts


# Daylight saving: Europe/Berlin 2025-03-30 (spring) and 2025-10-26 (fall), America/New_York 2025-03-09 and
# 2025-11-02.


@pytest.mark.parametrize(
    ("zone", "when", "expected"),
    [
        ("Europe/Berlin", "2025-10-26T17:30:00+01:00", "2025-10-26T18:00:00+01:00"),  # 17:00 UTC, not 16:00
        ("America/New_York", "2025-11-02T17:30:00-05:00", "2025-11-02T18:00:00-05:00"),  # 23:00 UTC
        ("Europe/Berlin", "2025-03-30T17:30:00+02:00", "2025-03-30T18:00:00+02:00"),
        ("America/New_York", "2025-03-09T09:00:00-04:00", "2025-03-09T18:00:00-04:00"),
    ],
)
def test_office_hours_expiry_on_dst_days(zone: str, when: str, expected: str) -> None:
    text = (
        f'rules:\n  - {{client: "*", audience: d, scope: "/x:GET", timezone: {zone}, windows: ["daily 09:00-18:00"]}}\n'
    )
    assert ask(engine(text), "/x:GET", audience="d", when=when).not_after == at(expected)


@pytest.mark.parametrize(
    ("zone", "when", "expected"),
    [
        ("Europe/Berlin", "2025-03-30T01:45:00+01:00", "2025-03-30T03:00:00+02:00"),
        ("America/New_York", "2025-03-09T01:45:00-05:00", "2025-03-09T03:00:00-04:00"),
    ],
)
def test_spring_forward_window_0130_0300(zone: str, when: str, expected: str) -> None:
    text = (
        f'rules:\n  - {{client: "*", audience: d, scope: "/x:GET", timezone: {zone}, windows: ["Sun 01:30-03:00"]}}\n'
    )
    decision = ask(engine(text), "/x:GET", audience="d", when=when)
    assert decision.not_after == at(expected)
    assert decision.not_after is not None and decision.not_after - at(when) == 15 * 60  # the clock jumps at 02:00


# --------------------------------------------------------------------------------------------------------------
# max lifetime
# --------------------------------------------------------------------------------------------------------------

LIFETIMES = """
rules:
  - {client: a, audience: d, scope: '/lock:GET,PUT', max_lifetime: 3600}
  - {client: a, audience: d, scope: '/lock:GET', max_lifetime: 60}
  - {client: a, audience: d, scope: '/battery:GET', max_lifetime: 600}
  - {client: a, audience: d, scope: '/log:GET'}
  - {client: a, audience: d, scope: '/config:GET', max_lifetime: 120, valid_until: "2030-01-01T00:00:00Z"}
"""


@pytest.mark.parametrize(
    ("requested", "lifetime"),
    [
        ("/lock:GET", 3600),  # the most generous rule granting a right counts
        ("/lock:GET /battery:GET", 600),  # the least-lived right bounds the token
        ("/log:GET", None),
        ("/log:GET /battery:GET", 600),
        ("/config:GET /lock:GET", 120),
    ],
)
def test_max_lifetime_is_min_over_rights_of_max_over_rules(requested: str, lifetime: int | None) -> None:
    assert ask(engine(LIFETIMES), requested, client="a", audience="d").max_lifetime == lifetime


def test_lifetime_only_from_rules_in_force() -> None:
    text = """
timezone: UTC
rules:
  - {client: "*", audience: d, scope: "/x:GET", max_lifetime: 60}
  - {client: "*", audience: d, scope: "/x:GET", max_lifetime: 9000, windows: ["Sun 00:00-01:00"]}
"""
    assert ask(engine(text), "/x:GET", audience="d").max_lifetime == 60  # Monday: the long rule is not in force


# --------------------------------------------------------------------------------------------------------------
# consent
# --------------------------------------------------------------------------------------------------------------

CONSENT = """
rules:
  - {id: own-door, users: [alice], audience: d, scope: "/lock:GET,PUT"}
  - id: ask-facility
    effect: consent
    users: "*"
    audience: d
    scope: "/lock:PUT /log:GET"
    approvers: {users: [frank], groups: [facility]}
  - id: ask-security
    effect: consent
    users: "*"
    audience: d
    scope: "/log:GET /alarm:PUT"
    approvers: {groups: [security, facility]}
  - {id: no-alarm-for-bob, effect: deny, users: [bob], audience: d, scope: "/alarm:PUT"}
"""


def test_consent_required_names_the_approvers_and_grants_nothing() -> None:
    decision = ask(engine(CONSENT), "/lock:PUT", audience="d", user="bob")
    assert not decision.permits and decision.granted == AifScope()
    assert decision.consent == ConsentRequired(
        scope=AifScope.parse_spec("/lock:PUT"), users=("frank",), groups=("facility",), rules=("ask-facility",)
    )
    assert decision.consent.approvers == ("user:frank", "group:facility")
    assert decision.reason == "consent required from user:frank, group:facility"
    assert decision.rules == ("ask-facility",) and decision.max_lifetime is None and decision.not_after is None


def test_consent_approvers_are_merged_from_the_covering_rules() -> None:
    decision = ask(engine(CONSENT), "/log:GET /alarm:PUT", audience="d", user="carol")
    assert decision.consent is not None
    assert decision.consent.users == ("frank",) and decision.consent.groups == ("facility", "security")
    assert decision.consent.rules == ("ask-facility", "ask-security")


def test_permit_grants_its_part_and_reports_the_consent_remainder() -> None:
    decision = ask(engine(CONSENT), "/lock:GET,PUT /log:GET /door:GET", audience="d", user="alice")
    assert granted(decision) == "/lock:GET,PUT"
    assert decision.consent is not None and decision.consent.scope == AifScope.parse_spec("/log:GET")
    assert decision.rules == ("own-door", "ask-facility", "ask-security")
    assert decision.consent.approvers == ("user:frank", "group:facility", "group:security")


def test_what_is_permitted_needs_no_consent() -> None:
    decision = ask(engine(CONSENT), "/lock:PUT", audience="d", user="alice")
    assert decision.permits and decision.consent is None and decision.rules == ("own-door",)


def test_deny_overrides_consent() -> None:
    decision = ask(engine(CONSENT), "/alarm:PUT", audience="d", user="bob")
    assert not decision.permits and decision.consent is None and decision.reason == "denied by no-alarm-for-bob"
    decision = ask(engine(CONSENT), "/alarm:PUT /log:GET", audience="d", user="bob")
    assert decision.consent is not None and decision.consent.scope == AifScope.parse_spec("/log:GET")


def test_consent_rules_need_a_user_when_they_name_users() -> None:
    assert ask(engine(CONSENT), "/lock:PUT", audience="d").granted is None  # no user: no rule matches


# --------------------------------------------------------------------------------------------------------------
# ids, reasons, explanations, range
# --------------------------------------------------------------------------------------------------------------


def test_generated_ids_follow_the_position() -> None:
    policy = engine(
        'rules:\n  - {client: a, audience: d, scope: "/x:GET"}\n  - {client: a, audience: d, scope: "/y:GET"}\n'
    )
    assert [rule.id for rule in policy.rules] == ["rule-1", "rule-2"]
    assert ask(policy, "/x:GET /y:GET", client="a", audience="d").rules == ("rule-1", "rule-2")


def test_rules_that_grant_none_of_the_request() -> None:
    decision = ask(engine(OFFICE), "/door:GET")
    assert decision.granted == AifScope() and decision.reason == "office grant none of the requested scope"


def test_explain_lists_every_matching_rule() -> None:
    explanation = engine(DENY).explain(
        AccessRequest(
            client_id="c",
            audience="lock-1",
            scope=AifScope.parse_spec("/lock:GET,DELETE"),
            now=at(MONDAY_1755),
            subject="u",
            subject_groups=frozenset({"staff"}),
        )
    )
    assert [(o.rule.id, o.outcome, o.decisive) for o in explanation.outcomes] == [
        ("staff", "grants /lock:GET", True),
        ("no-delete", "denies /lock:DELETE", True),
    ]
    assert explanation.outcomes[0].rule.where == "p.yaml:3"


def test_times_outside_the_supported_range_are_refused() -> None:
    policy = engine(OFFICE)
    for now in (-1, 10**12):
        decision = policy.decide(AccessRequest(client_id="c", audience="front-door", scope=AifScope(), now=now))
        assert decision.granted is None and "range" in decision.reason


# --------------------------------------------------------------------------------------------------------------
# rule sources
# --------------------------------------------------------------------------------------------------------------


def grant(rule_id: str, spec: str, **fields: object) -> Rule:
    return Rule(id=rule_id, audiences=("d",), scope=AifScope.parse_spec(spec), source="db", **fields)  # type: ignore[arg-type]


def test_file_rules_and_sources_combine() -> None:
    source = MemoryRuleSource([grant("grant-1", "/lock:PUT", users=("bob",))])
    policy = engine('rules:\n  - {id: file, users: "*", audience: d, scope: "/lock:GET"}\n', source)
    decision = ask(policy, "/lock:GET,PUT", audience="d", user="bob")
    assert granted(decision) == "/lock:GET,PUT" and decision.rules == ("file", "grant-1")
    source.add(grant("block", "/lock:PUT", effect=Effect.DENY, users=("bob",)))
    assert granted(ask(policy, "/lock:GET,PUT", audience="d", user="bob")) == "/lock:GET"
    source.remove("block")
    source.remove("grant-1")
    assert granted(ask(policy, "/lock:GET,PUT", audience="d", user="bob")) == "/lock:GET"


def test_with_sources_keeps_the_file_rules() -> None:
    base = engine('rules:\n  - {id: file, client: "*", audience: d, scope: "/lock:GET"}\n')
    extended = base.with_sources(MemoryRuleSource([grant("g", "/lock:PUT")]))
    assert granted(ask(extended, "/lock:GET,PUT", audience="d")) == "/lock:GET,PUT"
    assert granted(ask(base, "/lock:GET,PUT", audience="d")) == "/lock:GET"
    assert extended.rules == base.rules and extended.rule("file") is base.rule("file")


def test_memory_source_index() -> None:
    source = MemoryRuleSource()
    rules = [
        Rule(id=f"r{i}", audiences=(f"door-{i}",), scope=AifScope.parse_spec("/lock:GET")) for i in range(1000)
    ] + [Rule(id="glob", audiences=("door-1*", "other"), scope=AifScope.parse_spec("/lock:PUT"))]
    for rule in rules:
        source.add(rule)
    assert len(source) == 1001 and source.get("r5") == rules[5]
    found = source.rules_for(client_id="c", audience="door-10", subject=None, groups=frozenset())
    assert [r.id for r in found] == ["r10", "glob"]
    assert [r.id for r in source.rules_for(client_id="c", audience="other", subject=None, groups=frozenset())] == [
        "glob"
    ]
    with pytest.raises(ValueError, match="duplicate"):
        source.add(rules[0])
    with pytest.raises(KeyError):
        source.remove("nope")
    source.remove("glob")
    assert [r.id for r in source.rules_for(client_id="c", audience="door-10", subject=None, groups=frozenset())] == [
        "r10"
    ]
    assert [r.id for r in source][:3] == ["r0", "r1", "r2"]


def test_programmatic_rules_with_schedules() -> None:
    from zoneinfo import ZoneInfo

    rule = Rule(
        id="r",
        audiences=("d",),
        scope=TextScope.parse("open"),
        schedule=WeeklySchedule(ZoneInfo("Europe/Berlin"), (Window.parse("Mon-Fri 09:00-18:00"),)),
        max_lifetime=600,
    )
    decision = ask(PolicyEngine([rule]), "open", audience="d")
    assert decision.granted == TextScope.parse("open") and decision.max_lifetime == 600
    assert decision.not_after == at("2025-03-31T18:00:00+02:00")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"audiences": ()}, "audience"),
        ({"clients": ()}, "client"),
        ({"scope": None}, "needs a scope"),
        ({"scope": AifScope()}, "empty"),
        ({"effect": Effect.CONSENT}, "needs approvers"),
        ({"approver_users": ("x",)}, "has no approvers"),
        ({"valid_from": 10, "valid_until": 10}, "before"),
        ({"valid_until": -5}, "between"),
        ({"max_lifetime": 0}, "positive"),
        ({"effect": Effect.DENY, "max_lifetime": 5}, "no max_lifetime"),
        ({"id": ""}, "id"),
    ],
)
def test_inconsistent_rules_are_refused(fields: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"id": "r", "audiences": ("d",), "scope": AifScope.parse_spec("/x:GET")}
    with pytest.raises(ValueError, match=message):
        Rule(**(base | fields))  # type: ignore[arg-type]
