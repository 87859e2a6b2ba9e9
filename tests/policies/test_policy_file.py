"""The YAML policy file: every key, the allow-list files of before, and mistakes reported with their lines."""

from __future__ import annotations

import doctest
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ace_core.scope import AifScope, TextScope
from policies import policy_file
from policies.base import AccessRequest
from policies.builtin.allow_list import AllowList, parse_scope_spec
from policies.engine import PolicyEngine
from policies.errors import PolicyError, PolicyErrors
from policies.policy_file import PolicyDocument, load_zone
from policies.rules import ANY, Effect

FULL = """\
timezone: Europe/Berlin
audience_groups:
  floor-3: ["building-a/floor-3/*", building-a/lobby]
  garages: garage-1
rules:
  - id: staff-office-hours
    description: staff open floor-3 doors in office hours
    effect: permit
    groups: [staff]
    clients: [phone-app, kiosk]
    audience_groups: [floor-3, garages]
    audiences: [front-door]
    scope: {/lock: [GET, PUT], /battery: GET}
    windows:
      - Mon-Fri 09:00-18:00
      - {days: [Sat], from: "10:00", to: "14:00"}
    valid_from: 2025-01-01T00:00:00+01:00
    valid_until: "2026-01-01T00:00:00"
    max_lifetime: 3600
  - id: no-server-room
    effect: deny
    client: "*"
    audience: building-a/server-room
  - id: visitors-ask
    effect: consent
    users: "*"
    audience_groups: floor-3
    scope: [open, read]
    timezone: America/New_York
    windows: "daily 22:00-06:00"
    approvers: {users: [frank], groups: facility}
"""


def at(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


def test_every_key() -> None:
    doc = PolicyDocument.from_yaml(FULL, source="full.yaml")
    assert doc.timezone == "Europe/Berlin"
    assert dict(doc.audience_groups) == {
        "floor-3": ("building-a/floor-3/*", "building-a/lobby"),
        "garages": ("garage-1",),
    }
    staff, deny, consent = doc.rules
    assert staff.id == "staff-office-hours" and staff.effect is Effect.PERMIT and staff.line == 6
    assert staff.description == "staff open floor-3 doors in office hours"
    assert staff.groups == ("staff",) and staff.clients == ("phone-app", "kiosk") and staff.users == ()
    assert staff.audiences == ("front-door", "building-a/floor-3/*", "building-a/lobby", "garage-1")
    assert staff.scope == AifScope.parse_spec("/lock:GET,PUT /battery:GET")
    assert staff.schedule is not None and str(staff.schedule) == "Mon-Fri 09:00-18:00, Sat 10:00-14:00 Europe/Berlin"
    assert staff.valid_from == at("2025-01-01T00:00:00+01:00")
    assert staff.valid_until == at("2026-01-01T00:00:00+01:00")  # local time in the file's zone
    assert staff.max_lifetime == 3600 and staff.source == "full.yaml" and staff.where == "full.yaml:6"
    assert deny.effect is Effect.DENY and deny.scope is None and deny.clients == (ANY,)
    assert consent.scope == TextScope.parse("open read") and consent.users == (ANY,)
    assert consent.approver_users == ("frank",) and consent.approver_groups == ("facility",)
    assert consent.schedule is not None and consent.schedule.zone.key == "America/New_York"
    assert doc.summary() == "3 rules (1 permit, 1 deny, 1 consent), 2 audience groups"


def test_module_docstring_example_runs() -> None:
    result = doctest.testmod(policy_file, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_annotated_example_in_the_docstring_loads() -> None:
    """The commented example of the module documentation is itself a valid policy file."""
    doc = policy_file.__doc__ or ""
    start = doc.index("    timezone: Europe/Berlin")
    end = doc.index("Rules:")
    text = "\n".join(line[4:] for line in doc[start:end].splitlines())
    loaded = PolicyDocument.from_yaml(text)
    assert [rule.id for rule in loaded.rules] == ["staff-office-hours", "no-server-room", "visitors-ask"]


@pytest.mark.parametrize("text", ["", "# nothing\n", "rules:\n", "rules: []\n", "timezone: UTC\nrules: []\n"])
def test_empty_policies(text: str) -> None:
    doc = PolicyDocument.from_yaml(text)
    assert doc.rules == () and doc.summary() == "no rules (every request is refused)"


# --------------------------------------------------------------------------------------------------------------
# the allow-list files of before load and mean the same
# --------------------------------------------------------------------------------------------------------------

ALLOW_LIST = """\
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
  - {client: 1234, audience: 0x10, scope: yes, max_lifetime: 1_000}
"""

DEMO_POLICY = """\
# Who may do what where (allow-list policy; see `ostiary as --help`).
rules:
  - client: phone-app
    audience: front-door
    scope: "/lock:GET,PUT /battery:GET"
  - client: visitor-app
    audience: server-room
    scope: "/lock:GET,PUT"
  - client: contractor-app
    audience: front-door
    scope: "/lock:PUT"
    max_lifetime: 2
"""


@pytest.mark.parametrize("text", [ALLOW_LIST, DEMO_POLICY])
def test_allow_list_files_load_as_the_same_rules(text: str) -> None:
    old = AllowList.from_yaml(text).rules
    new = PolicyDocument.from_yaml(text).rules
    assert [(r.client, r.audience, r.scope, r.max_lifetime, r.line) for r in old] == [
        (r.clients[0], r.audiences[0], r.scope, r.max_lifetime, r.line) for r in new
    ]
    assert all(r.effect is Effect.PERMIT and r.users == () and r.groups == () for r in new)


PATHS = ["/lock", "/battery", "/config"]
METHODS = ["GET", "PUT", "DELETE", "POST"]
aif_specs = st.lists(
    st.tuples(st.sampled_from(PATHS), st.lists(st.sampled_from(METHODS), min_size=1, max_size=3)),
    min_size=1,
    max_size=3,
).map(lambda entries: " ".join(f"{path}:{','.join(methods)}" for path, methods in entries))
text_specs = st.lists(st.sampled_from(["read", "write", "admin"]), min_size=1, max_size=3).map(" ".join)
allow_rules = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "*"]),
        st.sampled_from(["d1", "d2", "d*", "x/*"]),
        st.one_of(aif_specs, text_specs),
        st.one_of(st.none(), st.integers(min_value=1, max_value=10_000)),
    ),
    max_size=6,
)


def to_yaml(entries: list[tuple[str, str, str, int | None]]) -> str:
    lines = ["rules:"]
    for client, audience, spec, lifetime in entries:
        lines.append(f"  - client: '{client}'\n    audience: '{audience}'\n    scope: '{spec}'")
        if lifetime is not None:
            lines.append(f"    max_lifetime: {lifetime}")
    return "\n".join(lines) + "\n"


@settings(max_examples=300, deadline=None)
@given(
    allow_rules,
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from(["d1", "d2", "d3", "x/y"]),
    st.one_of(aif_specs, text_specs),
    st.integers(min_value=0, max_value=2**32),
    st.one_of(st.none(), st.sampled_from(["alice"])),
)
def test_allow_list_files_decide_the_same(
    entries: list[tuple[str, str, str, int | None]],
    client: str,
    audience: str,
    spec: str,
    now: int,
    user: str | None,
) -> None:
    text = to_yaml(entries)
    request = AccessRequest(client_id=client, audience=audience, scope=parse_scope_spec(spec), now=now, subject=user)
    old = AllowList.from_yaml(text).decide(request)
    new = PolicyEngine.from_yaml(text).decide(request)
    assert (new.granted, new.permits, new.max_lifetime, new.not_after) == (
        old.granted,
        old.permits,
        old.max_lifetime,
        old.not_after,
    )
    assert new.consent is None


# --------------------------------------------------------------------------------------------------------------
# mistakes, each with its line
# --------------------------------------------------------------------------------------------------------------

R = "rules:\n  - client: a\n    audience: b\n"  # a rule's first lines (2 and 3); tests append to it


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        # YAML itself
        ("rules:\n  - client: *\n", 2, "invalid YAML"),
        ("rules:\n  - client: a\n   audience: b\n", 3, "invalid YAML"),
        ("rules: []\n---\nrules: []\n", 2, "invalid YAML"),
        ("rules:\n  - {client: a, audience: [b}\n", 2, "invalid YAML"),
        # the document
        ("- client: a\n", 1, "the document must be a mapping"),
        ("{}\n", 1, "missing 'rules'"),
        ("policy: []\nrules: []\n", 1, "unknown top-level key 'policy'"),
        ("rules: yes\n", 1, "'rules' must be a list"),
        ("rules: []\nrules: []\n", 2, "duplicate top-level key 'rules'"),
        ("rules:\n  - just a string\n", 2, "a rule must be a mapping"),
        # keys
        (R + "    scope: /x:GET\n    colour: red\n", 5, "unknown rule key 'colour'"),
        (R + "    scope: /x:GET\n    scope: /y:GET\n", 5, "duplicate rule key 'scope'"),
        ("rules:\n  - audience: b\n    scope: /x:GET\n", 2, "needs a subject"),
        ("rules:\n  - client: a\n    scope: /x:GET\n", 2, "needs a target"),
        (R, 2, "a permit rule needs a 'scope'"),
        (R + "    scope: /x:GET\n    clients: [b]\n", 5, "use either 'client' or 'clients'"),
        # values
        ("rules:\n  - client: [a, b]\n    audience: b\n    scope: /x:GET\n", 2, "'client' must be a string"),
        ("rules:\n  - client: ''\n    audience: b\n    scope: /x:GET\n", 2, "'client' must not be empty"),
        (R + "    users: []\n    scope: /x:GET\n", 4, "'users' must not be an empty list"),
        (R + "    scope: /x:FLY\n", 4, "invalid scope '/x:FLY'"),
        (R + "    scope: 'read  write'\n", 4, "invalid scope"),
        (R + "    scope: ''\n", 4, "invalid scope"),
        (R + "    scope: {lock: GET}\n", 4, "must start with '/'"),
        (R + "    scope: {/lock: FLY}\n", 4, "unknown method name"),
        (R + "    scope: [read, 'bad\"token']\n", 4, "invalid scope"),
        (R + "    scope: /x:GET\n    effect: allow\n", 5, "'effect' must be permit, deny or consent"),
        (R + "    scope: /x:GET\n    id: 'has space'\n", 5, "'id' 'has space' must be"),
        (R + "    scope: /x:GET\n    max_lifetime: 0\n", 5, "positive"),
        (R + "    scope: /x:GET\n    max_lifetime: soon\n", 5, "integer"),
        (R + "    scope: /x:GET\n    max_lifetime: 1.5\n", 5, "integer"),
        # conditions
        (R + "    scope: /x:GET\n    windows: [Mon-Fri 09:00-18:00]\n", 5, "windows need a 'timezone'"),
        (R + "    scope: /x:GET\n    timezone: Mars/Olympus\n", 5, "unknown time zone 'Mars/Olympus'"),
        (R + "    scope: /x:GET\n    timezone: ../etc\n", 5, "not a time zone name"),
        ("timezone: Europe\nrules: []\n", 1, "unknown time zone 'Europe'"),
        (R + "    scope: /x:GET\n    timezone: UTC\n    windows: [Mon-Fri 09:00-25:00]\n", 6, "invalid window"),
        (R + "    scope: /x:GET\n    timezone: UTC\n    windows:\n      - Funday 09:00-10:00\n", 7, "unknown day"),
        (R + "    scope: /x:GET\n    timezone: UTC\n    windows: [{days: Mon, from: '09:00'}]\n", 6, "needs 'to'"),
        (R + "    scope: /x:GET\n    timezone: UTC\n    windows: [Mon 09:00-09:00]\n", 6, "empty"),
        (R + "    scope: /x:GET\n    timezone: UTC\n    windows: []\n", 6, "must not be an empty list"),
        (R + "    scope: /x:GET\n    valid_from: 2025-01-01\n", 5, "must be a date and time"),
        (R + "    scope: /x:GET\n    valid_from: 2025-01-01T00:00:00\n", 5, "needs a UTC offset"),
        (R + "    scope: /x:GET\n    valid_from: 2025-13-01T00:00:00Z\n", 5, "not a valid date and time"),
        (
            R + "    scope: /x:GET\n    valid_from: 2025-02-01T00:00:00Z\n    valid_until: 2025-01-01T00:00:00Z\n",
            6,
            "'valid_until' must be after 'valid_from'",
        ),
        # effects
        (R + "    scope: /x:GET\n    approvers: {users: [x]}\n", 5, "only consent rules have 'approvers'"),
        (R + "    scope: /x:GET\n    effect: consent\n", 2, "a consent rule needs 'approvers'"),
        (R + "    effect: consent\n    scope: /x:GET\n    approvers: [x]\n", 6, "must be a mapping"),
        (R + "    effect: consent\n    scope: /x:GET\n    approvers: {admins: [x]}\n", 6, "unknown approvers key"),
        (R + "    effect: deny\n    max_lifetime: 5\n", 5, "a deny rule has no 'max_lifetime'"),
        # audience groups and ids
        (R + "    scope: /x:GET\n    audience_groups: [nope]\n", 5, "unknown audience group 'nope'"),
        ("audience_groups: [a]\nrules: []\n", 1, "'audience_groups' must be a mapping"),
        ("audience_groups:\n  a: []\nrules: []\n", 2, "must not be an empty list"),
        (
            "rules:\n  - {id: x, client: a, audience: b, scope: /x:GET}\n"
            "  - {id: x, client: a, audience: b, scope: /y:GET}\n",
            3,
            "duplicate rule id 'x'",
        ),
    ],
)
def test_mistakes_carry_their_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(PolicyError) as info:
        PolicyDocument.from_yaml(text, source="p.yaml")
    assert info.value.line == line and info.value.source == "p.yaml", str(info.value)
    assert str(info.value).startswith(f"p.yaml:{line}: "), str(info.value)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def test_every_mistake_is_reported() -> None:
    text = """\
rules:
  - client: a
    audience: b
    scope: /x:FLY
    max_lifetime: -1
  - {client: a, audience: b, scope: /ok:GET}
  - client: a
    colour: red
    scope: /x:GET
"""
    with pytest.raises(PolicyErrors) as info:
        PolicyDocument.from_yaml(text, source="p.yaml")
    assert [(e.line, e.message.split(" ")[0]) for e in info.value.errors] == [
        (4, "invalid"),
        (5, "'max_lifetime'"),
        (7, "a"),  # the rule (line 7) has no target
        (8, "unknown"),
    ]
    assert str(info.value).splitlines() == [str(e) for e in info.value.errors]
    assert info.value.line == 4


def test_from_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(FULL)
    assert len(PolicyDocument.from_file(path).rules) == 3
    path.write_bytes(b"rules: \xff\n")
    with pytest.raises(PolicyError, match="not UTF-8"):
        PolicyDocument.from_file(path)
    with pytest.raises(FileNotFoundError):
        PolicyEngine.from_file(tmp_path / "absent.yaml")
    assert PolicyEngine.from_file(tmp_path / "absent.yaml", missing_ok=True).rules == ()
    assert "denied" in caplog.text


def test_load_zone() -> None:
    assert load_zone("Europe/Berlin").key == "Europe/Berlin"
    for bad in ("", "Europe/", "/etc/localtime", "Europe/Berlin ", "a\x00b", "Nowhere/Land"):
        with pytest.raises(ValueError):
            load_zone(bad)
