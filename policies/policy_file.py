r"""The YAML policy file: rules for :class:`~policies.engine.PolicyEngine`, reviewable in version control.

The format is a superset of the static allow list of :mod:`policies.builtin.allow_list`: a file of rules with
``client``, ``audience``, ``scope`` and ``max_lifetime`` loads as before and means the same (every such rule
permits). An annotated example with every key::

    timezone: Europe/Berlin               # default zone for windows and for times without a UTC offset

    audience_groups:                      # named groups of audiences, for rules' `audience_groups`
      floor-3: ["building-a/floor-3/*", building-a/lobby]

    rules:
      - id: staff-office-hours            # optional; unique; default "rule-N" (N = position, from 1)
        description: staff open floor-3 doors in office hours
        effect: permit                    # permit (default) | deny | consent
        groups: [staff]                   # subjects: users' groups ...
        clients: [phone-app]              # ... and/or clients ("*": every client; `client: X` for one) ...
        # users: [alice, bob]             # ... and/or users ("*": every signed-in user)
        audience_groups: [floor-3]        # targets: named groups, and/or
        # audiences: [front-door, "building-b/*"]   # exact audiences or globs (`audience: X` for one)
        scope: "/lock:GET,PUT"            # AIF-REST (RFC 9237) when it starts with "/", else text scope tokens
        # scope: {/lock: [GET, PUT], /battery: GET}  # AIF as a mapping
        # scope: [read, write]                       # text scope tokens as a list
        windows: ["Mon-Fri 09:00-18:00"]  # local times in `timezone`; also {days: Sat, from: "10:00", to: "14:00"}
        timezone: Europe/Berlin           # optional here: the file's default applies
        valid_from: 2025-01-01T00:00:00+01:00     # in force from (inclusive) ...
        valid_until: 2031-01-01T00:00:00+01:00    # ... until (exclusive); ISO 8601
        max_lifetime: 3600                # tokens granted by this rule live at most this long (seconds)

      - id: no-server-room
        effect: deny                      # deny overrides permit and consent
        client: "*"                       # quote "*": a bare * starts a YAML alias
        audience: building-a/server-room
        # no scope: every right is denied

      - id: visitors-ask
        effect: consent                   # granted only once an approver agrees (nothing is granted before)
        users: "*"
        audience_groups: [floor-3]
        scope: "/lock:PUT"
        approvers: {users: [frank], groups: [facility]}   # who may approve

Rules:

* **Subjects**: at least one of ``client``/``clients``, ``users``, ``groups``. A rule applies when the client is
  listed (or ``clients`` is left out, or is ``"*"``) and, if it lists users or groups, the request is made for a
  signed-in user who is listed or in a listed group. Values are taken as written (``client: 1234`` is ``"1234"``).
* **Targets**: at least one of ``audience``/``audiences``, ``audience_groups``. ``*``, ``?`` and ``[...]`` make
  a glob (:func:`fnmatch.fnmatchcase`; ``*`` also matches ``/``); otherwise the audience matches exactly.
* **Scope**: required, except that a deny rule without scope denies everything. A rule only applies to requests
  whose scope has the same kind (AIF or text).
* **Windows** (see :mod:`policies.schedule`, which also defines the daylight-saving behaviour): ``"DAYS HH:MM-HH:MM"``
  with DAYS such as ``Mon-Fri``, ``Mon,Wed``, ``Sat``, ``Fri-Mon`` or ``daily``; ``24:00`` ends at midnight; an end
  at or before the start (``22:00-06:00``) ends the next day. Windows need a ``timezone`` (IANA name), in the rule
  or at the top of the file.
* **valid_from/valid_until**: a date and time with a UTC offset (``Z`` or ``+01:00``), or without one when a
  ``timezone`` applies (local time there).
* ``max_lifetime`` and ``approvers`` are for permit (``max_lifetime``) and consent rules (both) only.

Every mistake is reported, each with its line (:class:`~policies.errors.PolicyErrors`). An empty document, or
``rules:`` with nothing after it, is a policy without rules, which refuses every request.

>>> doc = PolicyDocument.from_yaml('''
... timezone: Europe/Berlin
... rules:
...   - {client: phone-app, audience: front-door, scope: "/lock:GET,PUT", max_lifetime: 3600}
...   - {id: after-hours, effect: deny, client: "*", audience: front-door, windows: ["daily 22:00-06:00"]}
... ''', source="policy.yaml")
>>> [(r.id, str(r.effect), r.line) for r in doc.rules]
[('rule-1', 'permit', 4), ('after-hours', 'deny', 5)]
>>> PolicyDocument.from_yaml("rules:\n  - {client: a, audience: b, scope: /x:FLY}\n", source="p.yaml")
Traceback (most recent call last):
...
policies.errors.PolicyErrors: p.yaml:2: invalid scope '/x:FLY': unknown method name 'FLY'
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from ace_core.errors import WireFormatError
from ace_core.scope import AifScope, TextScope
from policies.base import Scope
from policies.builtin.allow_list import parse_scope_spec
from policies.errors import PolicyError, PolicyErrors
from policies.rules import ANY, Effect, Rule
from policies.schedule import MAX_TIME, MIN_TIME, WeeklySchedule, Window, parse_days, parse_time

__all__ = ["PolicyDocument", "load_zone"]

logger = logging.getLogger(__name__)

_TOP_KEYS = ("timezone", "audience_groups", "rules")
_RULE_KEYS = (
    "id",
    "description",
    "effect",
    "client",
    "clients",
    "users",
    "groups",
    "audience",
    "audiences",
    "audience_groups",
    "scope",
    "windows",
    "timezone",
    "valid_from",
    "valid_until",
    "max_lifetime",
    "approvers",
)
_WINDOW_KEYS = ("days", "from", "to")
_APPROVER_KEYS = ("users", "groups")
_INT_TAG = "tag:yaml.org,2002:int"
_NULL_TAG = "tag:yaml.org,2002:null"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}")
_ZONE_KEY = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*")
_HAS_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{1,2}:\d{2}")


def load_zone(key: str) -> ZoneInfo:
    """The IANA time zone ``key`` (``Europe/Berlin``), from the system or the ``tzdata`` package.

    :raises ValueError: not a time zone name, or no such zone.
    """
    if not _ZONE_KEY.fullmatch(key):
        raise ValueError(f"{key!r} is not a time zone name (an IANA name such as Europe/Berlin)")
    try:
        return ZoneInfo(key)
    except (KeyError, ValueError, OSError, UnicodeError):  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(f"unknown time zone {key!r} (an IANA name such as Europe/Berlin)") from None


def _line(node: Any) -> int:
    return int(node.start_mark.line) + 1


@dataclass(frozen=True, slots=True, eq=False)
class PolicyDocument:
    """A loaded policy file.

    :param source: the file name (or ``"<string>"``).
    :param rules: the rules, in file order, with their ids and lines.
    :param audience_groups: the named audience groups, as defined.
    :param timezone: the file's default time zone, if any.
    """

    source: str
    rules: tuple[Rule, ...]
    audience_groups: Mapping[str, tuple[str, ...]]
    timezone: str | None = None

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "<string>") -> PolicyDocument:
        """Parse a policy document.

        :param source: the name used in error messages and in the rules' ``source``.
        :raises PolicyError: (a :class:`~policies.errors.PolicyErrors`) every mistake, each with its line.
        """
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else None
            raise PolicyErrors([PolicyError(f"invalid YAML: {exc.problem or exc}", source=source, line=line)]) from None
        except yaml.YAMLError as exc:
            raise PolicyErrors([PolicyError(f"invalid YAML: {exc}", source=source, line=None)]) from None
        except RecursionError:
            raise PolicyErrors([PolicyError("invalid YAML: nested too deeply", source=source, line=None)]) from None
        return _Parser(source).document(root)

    @classmethod
    def from_file(cls, path: Path | str, *, missing_ok: bool = False) -> PolicyDocument:
        """Load a policy file (UTF-8).

        :param missing_ok: a missing file gives a document without rules, which refuses every request (logged as a
            warning); otherwise a missing file raises :class:`FileNotFoundError`.
        :raises PolicyError: malformed YAML or rules, every mistake with its line.
        :raises FileNotFoundError: the file does not exist and ``missing_ok`` is false.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            if not missing_ok:
                raise
            logger.warning("policy file %s does not exist: every token request will be denied", path)
            return cls(source=str(path), rules=(), audience_groups={})
        except UnicodeDecodeError as exc:
            raise PolicyErrors([PolicyError(f"not UTF-8 text: {exc.reason}", source=str(path), line=None)]) from None
        return cls.from_yaml(text, source=str(path))

    def summary(self) -> str:
        """One line: how many rules of each effect and how many audience groups."""
        counts = {effect: sum(1 for r in self.rules if r.effect is effect) for effect in Effect}
        rules = ", ".join(f"{n} {effect}" for effect, n in counts.items() if n) or "none"
        text = f"{len(self.rules)} rules ({rules})" if self.rules else "no rules (every request is refused)"
        if self.audience_groups:
            text += f", {len(self.audience_groups)} audience groups"
        return text

    def ended(self, now: int) -> tuple[Rule, ...]:
        """The rules whose validity ended at or before ``now`` (``valid_until <= now``): valid, but they never apply
        again, which is more often an oversight than intended (``ostiary policy validate`` warns about them).

        >>> document = PolicyDocument.from_yaml(
        ...     "rules: [{id: old, client: a, audience: b, scope: r, valid_until: 1970-01-02T00:00:00Z}]"
        ... )
        >>> [rule.id for rule in document.ended(86_400)], document.ended(86_399)
        (['old'], ())
        """
        return tuple(rule for rule in self.rules if rule.valid_until is not None and rule.valid_until <= now)


class _Parser:
    """Walks the composed YAML nodes, collecting every mistake rather than stopping at the first."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[PolicyError] = []
        self.zone: ZoneInfo | None = None
        self.zone_name: str | None = None
        self.groups: dict[str, tuple[str, ...]] = {}
        # Equal schedules are one object, so that the engine evaluates each once per decision (it keys by identity).
        self.schedules: dict[tuple[ZoneInfo, tuple[Window, ...]], WeeklySchedule] = {}

    def error(self, message: str, node: Any) -> PolicyError:
        return PolicyError(message, source=self.source, line=_line(node) if node is not None else None)

    @contextlib.contextmanager
    def collecting(self) -> Iterator[None]:
        """Record a :class:`PolicyError` raised inside and carry on with the next part."""
        try:
            yield
        except PolicyError as exc:
            self.errors.append(exc)

    # -- the document -----------------------------------------------------------------------------------------

    def document(self, root: Any) -> PolicyDocument:
        rules: list[Rule] = []
        if root is not None:
            with self.collecting():
                rules = self._document(root)
        if self.errors:  # in the order of their lines, as an editor lists them
            raise PolicyErrors(sorted(self.errors, key=lambda e: (e.line is None, e.line or 0)))
        return PolicyDocument(
            source=self.source, rules=tuple(rules), audience_groups=self.groups, timezone=self.zone_name
        )

    def _document(self, root: Any) -> list[Rule]:
        if not isinstance(root, yaml.MappingNode):
            raise self.error("the document must be a mapping with a 'rules' list", root)
        fields = self.mapping(root, _TOP_KEYS, "top-level key")
        if "timezone" in fields:
            with self.collecting():
                self.zone_name = self.text(fields["timezone"], "'timezone'")
                self.zone = self.load_zone(fields["timezone"])
        if "audience_groups" in fields:
            with self.collecting():
                self.audience_groups(fields["audience_groups"])
        if "rules" not in fields:
            raise self.error("missing 'rules'", root)
        node = fields["rules"]
        if isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG:
            return []
        if not isinstance(node, yaml.SequenceNode):
            raise self.error("'rules' must be a list", node)
        rules: list[Rule] = []
        ids: dict[str, int] = {}
        for position, rule_node in enumerate(node.value, start=1):
            with self.collecting():
                rule = self.rule(rule_node, position)
                if rule is None:
                    continue
                if rule.id in ids:
                    raise self.error(f"duplicate rule id {rule.id!r} (also at line {ids[rule.id]})", rule_node)
                ids[rule.id] = _line(rule_node)
                rules.append(rule)
        return rules

    def mapping(self, node: Any, allowed: tuple[str, ...], what: str) -> dict[str, Any]:
        """The values of a mapping by key; unknown, duplicate and non-text keys are recorded as mistakes."""
        fields: dict[str, Any] = {}
        for key_node, value_node in node.value:
            with self.collecting():
                key = self.text(key_node, f"a {what}")
                if key not in allowed:
                    raise self.error(f"unknown {what} {key!r} (expected {', '.join(allowed)})", key_node)
                if key in fields:
                    raise self.error(f"duplicate {what} {key!r}", key_node)
                fields[key] = value_node
        return fields

    def text(self, node: Any, what: str) -> str:
        """A scalar exactly as written (``client: 1234`` is ``"1234"``, not a number)."""
        if not isinstance(node, yaml.ScalarNode) or node.tag == _NULL_TAG:
            raise self.error(f"{what} must be a string", node)
        return str(node.value)

    def names(self, node: Any, what: str) -> tuple[str, ...]:
        """One non-empty string or a non-empty list of them."""
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        if not items:
            raise self.error(f"{what} must not be an empty list", node)
        names: list[str] = []
        for item in items:
            name = self.text(item, f"{what} entries" if isinstance(node, yaml.SequenceNode) else what)
            if not name:
                raise self.error(f"{what} must not be empty", item)
            names.append(name)
        return tuple(dict.fromkeys(names))

    def load_zone(self, node: Any) -> ZoneInfo:
        try:
            return load_zone(self.text(node, "'timezone'"))
        except ValueError as exc:
            raise self.error(str(exc), node) from None

    def audience_groups(self, node: Any) -> None:
        if not isinstance(node, yaml.MappingNode):
            raise self.error("'audience_groups' must be a mapping of group names to audiences", node)
        for key_node, value_node in node.value:
            with self.collecting():
                name = self.text(key_node, "an audience group name")
                if not name:
                    raise self.error("an audience group name must not be empty", key_node)
                if name in self.groups:
                    raise self.error(f"duplicate audience group {name!r}", key_node)
                self.groups[name] = self.names(value_node, f"audience group {name!r}")

    # -- one rule ---------------------------------------------------------------------------------------------

    def rule(self, node: Any, position: int) -> Rule | None:
        """Parse one rule; ``None`` (with the mistakes recorded) if it has any."""
        if not isinstance(node, yaml.MappingNode):
            raise self.error("a rule must be a mapping", node)
        before = len(self.errors)
        fields = self.mapping(node, _RULE_KEYS, "rule key")
        values: dict[str, Any] = {}

        def field(key: str, parse: Any) -> None:
            if key in fields:
                with self.collecting():
                    values[key] = parse(fields[key])

        field("id", self.rule_id)
        field("description", lambda n: self.text(n, "'description'"))
        field("effect", self.effect)
        field("client", lambda n: (self.nonempty(n, "'client'"),))
        field("clients", lambda n: self.names(n, "'clients'"))
        field("users", lambda n: self.names(n, "'users'"))
        field("groups", lambda n: self.names(n, "'groups'"))
        field("audience", lambda n: (self.nonempty(n, "'audience'"),))
        field("audiences", lambda n: self.names(n, "'audiences'"))
        field("audience_groups", self.group_refs)
        field("scope", self.scope)
        field("timezone", self.load_zone)
        zone = values.get("timezone", self.zone)
        field("windows", lambda n: self.windows(n, zone))
        field("valid_from", lambda n: self.instant(n, "'valid_from'", zone))
        field("valid_until", lambda n: self.instant(n, "'valid_until'", zone))
        field("max_lifetime", self.positive_int)
        field("approvers", self.approvers)
        effect: Effect = values.get("effect", Effect.PERMIT)

        with self.collecting():
            self.check_rule(node, fields, values, effect)
        if len(self.errors) > before:
            return None
        approver_users, approver_groups = values.get("approvers", ((), ()))
        audiences = values.get("audience", ()) + values.get("audiences", ()) + values.get("audience_groups", ())
        try:
            return Rule(
                id=values.get("id", f"rule-{position}"),
                effect=effect,
                clients=values.get("client") or values.get("clients") or (ANY,),
                users=values.get("users", ()),
                groups=values.get("groups", ()),
                audiences=tuple(dict.fromkeys(audiences)),
                scope=values.get("scope"),
                valid_from=values.get("valid_from"),
                valid_until=values.get("valid_until"),
                schedule=values.get("windows"),
                max_lifetime=values.get("max_lifetime"),
                approver_users=approver_users,
                approver_groups=approver_groups,
                source=self.source,
                line=_line(node),
                description=values.get("description"),
            )
        except ValueError as exc:  # pragma: no cover - check_rule reports these first
            raise self.error(str(exc), node) from None

    def check_rule(self, node: Any, fields: dict[str, Any], values: dict[str, Any], effect: Effect) -> None:
        """Mistakes that involve several keys, each reported at the most telling line."""
        for one, many in (("client", "clients"), ("audience", "audiences")):
            if one in fields and many in fields:
                self.errors.append(self.error(f"use either {one!r} or {many!r}, not both", fields[many]))
        if not {"client", "clients", "users", "groups"} & fields.keys():
            self.errors.append(
                self.error("a rule needs a subject: client, clients, users or groups (client: '*' for any)", node)
            )
        if not {"audience", "audiences", "audience_groups"} & fields.keys():
            self.errors.append(self.error("a rule needs a target: audience, audiences or audience_groups", node))
        if "scope" not in fields and effect is not Effect.DENY:
            self.errors.append(self.error(f"a {effect} rule needs a 'scope'", node))
        if "approvers" in fields and effect is not Effect.CONSENT:
            self.errors.append(
                self.error(f"only consent rules have 'approvers', this is a {effect} rule", fields["approvers"])
            )
        if "approvers" not in fields and effect is Effect.CONSENT:
            self.errors.append(self.error("a consent rule needs 'approvers' (users and/or groups)", node))
        if "max_lifetime" in fields and effect is Effect.DENY:
            self.errors.append(self.error("a deny rule has no 'max_lifetime'", fields["max_lifetime"]))
        start, end = values.get("valid_from"), values.get("valid_until")
        if start is not None and end is not None and start >= end:
            self.errors.append(self.error("'valid_until' must be after 'valid_from'", fields["valid_until"]))

    def nonempty(self, node: Any, what: str) -> str:
        value = self.text(node, what)
        if not value:
            raise self.error(f"{what} must not be empty", node)
        return value

    def rule_id(self, node: Any) -> str:
        value = self.text(node, "'id'")
        if not _ID.fullmatch(value):
            raise self.error(
                f"'id' {value!r} must be 1-200 letters, digits and ._:/@+- starting with a letter or digit", node
            )
        return value

    def effect(self, node: Any) -> Effect:
        value = self.text(node, "'effect'")
        try:
            return Effect(value)
        except ValueError:
            raise self.error(f"'effect' must be permit, deny or consent, not {value!r}", node) from None

    def group_refs(self, node: Any) -> tuple[str, ...]:
        audiences: list[str] = []
        self.names(node, "'audience_groups'")  # the shape: one name or a non-empty list of names
        for item in node.value if isinstance(node, yaml.SequenceNode) else [node]:
            name = self.text(item, "'audience_groups' entries")
            if name not in self.groups:
                defined = ", ".join(self.groups) or "none"
                raise self.error(f"unknown audience group {name!r} (defined: {defined})", item)
            audiences.extend(self.groups[name])
        return tuple(audiences)

    def scope(self, node: Any) -> Scope:
        scope: Scope
        if isinstance(node, yaml.MappingNode):
            scope = self.aif_mapping(node)
        elif isinstance(node, yaml.SequenceNode):
            tokens = [self.text(item, "'scope' entries") for item in node.value]
            try:
                scope = TextScope(tokens)
            except (ValueError, TypeError) as exc:
                raise self.error(f"invalid scope: {exc}", node) from None
        else:
            spec = self.text(node, "'scope'")
            try:
                scope = parse_scope_spec(spec)
            except (ValueError, TypeError, WireFormatError) as exc:
                raise self.error(f"invalid scope {spec!r}: {exc}", node) from None
        if scope.is_empty:
            raise self.error("'scope' grants nothing", node)
        return scope

    def aif_mapping(self, node: Any) -> AifScope:
        methods: dict[str, list[str]] = {}
        for key_node, value_node in node.value:
            path = self.text(key_node, "an AIF path")
            if not path.startswith("/"):
                raise self.error(f"AIF path {path!r} must start with '/'", key_node)
            if path in methods:
                raise self.error(f"duplicate AIF path {path!r}", key_node)
            methods[path] = list(self.names(value_node, f"the methods of {path!r}"))
        try:
            return AifScope.from_methods(methods)
        except (ValueError, TypeError) as exc:
            raise self.error(f"invalid scope: {exc}", node) from None

    def windows(self, node: Any, zone: ZoneInfo | None) -> WeeklySchedule:
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        if not items:
            raise self.error("'windows' must not be an empty list", node)
        windows = [self.window(item) for item in items]
        if zone is None:
            raise self.error("windows need a 'timezone' (in the rule or at the top of the file)", node)
        key = (zone, tuple(windows))
        schedule = self.schedules.get(key)
        if schedule is None:
            schedule = self.schedules[key] = WeeklySchedule(zone, key[1])
        return schedule

    def window(self, node: Any) -> Window:
        try:
            if isinstance(node, yaml.MappingNode):
                fields = self.mapping(node, _WINDOW_KEYS, "window key")
                missing = [key for key in _WINDOW_KEYS if key not in fields]
                if missing:
                    raise self.error(f"a window needs {', '.join(repr(k) for k in missing)}", node)
                days_node = fields["days"]
                if isinstance(days_node, yaml.SequenceNode):
                    days = frozenset().union(*(parse_days(d) for d in self.names(days_node, "'days'")))
                else:
                    days = parse_days(self.text(days_node, "'days'"))
                start = parse_time(self.text(fields["from"], "'from'"))
                end = parse_time(self.text(fields["to"], "'to'"), end=True)
                return Window(days, start, end)
            return Window.parse(self.text(node, "a window"))
        except PolicyError:
            raise
        except ValueError as exc:
            raise self.error(f"invalid window: {exc}", node) from None

    def instant(self, node: Any, what: str, zone: ZoneInfo | None) -> int:
        text = self.text(node, what).strip()
        if not _HAS_TIME.match(text):
            raise self.error(f"{what} must be a date and time such as 2025-01-01T00:00:00+01:00", node)
        try:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                if zone is None:
                    raise self.error(f"{what} needs a UTC offset (such as Z or +01:00) or a 'timezone'", node)
                moment = moment.replace(tzinfo=zone)
            value = int(moment.timestamp())
        except PolicyError:
            raise
        except (ValueError, OverflowError, OSError) as exc:
            raise self.error(f"{what} is not a valid date and time: {exc}", node) from None
        if not MIN_TIME <= value <= MAX_TIME:
            raise self.error(f"{what} must be between 1970 and 9999", node)
        return value

    def positive_int(self, node: Any) -> int:
        if not isinstance(node, yaml.ScalarNode) or node.tag != _INT_TAG:
            raise self.error("'max_lifetime' must be an integer (seconds)", node)
        try:
            value = yaml.constructor.SafeConstructor().construct_yaml_int(node)  # YAML 1.1: 1_000, 0x10, ...
        except (ValueError, yaml.YAMLError):  # pragma: no cover - the resolver only tags valid integers
            raise self.error("'max_lifetime' must be an integer (seconds)", node) from None
        if not isinstance(value, int) or value <= 0:
            raise self.error("'max_lifetime' must be positive", node)
        return value

    def approvers(self, node: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error("'approvers' must be a mapping with 'users' and/or 'groups'", node)
        fields = self.mapping(node, _APPROVER_KEYS, "approvers key")
        if not fields:
            raise self.error("'approvers' must name users and/or groups", node)
        users = self.names(fields["users"], "approver 'users'") if "users" in fields else ()
        groups = self.names(fields["groups"], "approver 'groups'") if "groups" in fields else ()
        return users, groups
