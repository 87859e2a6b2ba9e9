"""Policy rules: who (subjects) may get which rights (permission) at which audiences (targets), when (conditions),
with which effect (permit, deny, or consent by named approvers). Issue #5, "Policy engine".

A :class:`Rule` is a frozen value; where it comes from (a YAML file, :mod:`policies.policy_file`, or a database
through a :class:`~policies.sources.RuleSource`) does not matter to the engine (:mod:`policies.engine`).

**Subjects.** ``clients`` (client ids, ``"*"`` for every client) and, for requests made on behalf of a signed-in
user, ``users`` (user names, ``"*"`` for every signed-in user) and ``groups`` (groups of the user, as given in
:attr:`~policies.base.AccessRequest.subject_groups`). A rule applies when the client is one of ``clients`` and,
if the rule names users or groups, the request has a user who is one of ``users`` or in one of ``groups``. A rule
that names no users and no groups applies whether or not there is a user.

**Targets.** ``audiences``: exact audience names, or globs (``building-a/floor-3/*``; ``*`` also matches ``/``,
as :func:`fnmatch.fnmatchcase` does). Audience groups of a policy file are expanded into this list when loading.

**Permission.** ``scope``: an AIF-REST scope (paths and methods) or a text scope. A rule only applies to requests
whose scope is of the same kind. A deny rule may have no scope (``None``), which denies every right.

**Conditions.** ``valid_from``/``valid_until`` (epoch seconds, half-open: in force from ``valid_from`` up to but
not including ``valid_until``), a :class:`~policies.schedule.WeeklySchedule` of time windows in a time zone, and
``max_lifetime`` (seconds) for the tokens a permit rule grants.

**Effect.** :attr:`Effect.PERMIT`, :attr:`Effect.DENY` (overrides every permit and consent) or
:attr:`Effect.CONSENT` (the rights may be granted once one of ``approver_users`` or a member of
``approver_groups`` approves; nothing is granted until then).
"""

from __future__ import annotations

import fnmatch
import functools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from policies.base import AccessRequest, Scope
from policies.schedule import MAX_TIME, MIN_TIME, WeeklySchedule, merge
from policies.scopes import Rights, rights, same_kind

__all__ = ["ANY", "Effect", "Rule", "compile_glob", "glob_prefix", "is_glob"]

#: In ``clients``: every client; in ``users``: every signed-in user.
ANY = "*"
_GLOB_CHARS = frozenset("*?[")


class Effect(StrEnum):
    """What a rule does with the rights it names. Deny overrides permit and consent."""

    PERMIT = "permit"
    DENY = "deny"
    CONSENT = "consent"


def is_glob(pattern: str) -> bool:
    """True if ``pattern`` has a glob character (``*``, ``?``, ``[``); otherwise it matches exactly."""
    return not _GLOB_CHARS.isdisjoint(pattern)


def glob_prefix(pattern: str) -> str:
    """The part of a glob before its first glob character: every audience it matches starts with it.

    (An unclosed ``[`` matches itself, so the text before it is still a prefix of every match.)
    """
    for i, char in enumerate(pattern):
        if char in _GLOB_CHARS:
            return pattern[:i]
    return pattern


@functools.lru_cache(maxsize=4096)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """The regular expression of a glob, as :func:`fnmatch.fnmatchcase` uses it; ``.match`` matches whole audiences.

    Cached, so that the many rules naming the same glob share one compiled pattern.
    """
    return re.compile(fnmatch.translate(pattern))


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One policy rule (see the module documentation for what each field means).

    :param id: unique within its source; names the rule in decisions (``Decision.rules``) and explanations.
    :param source: where the rule was defined (a file name, ``"db"``, ...), for explanations.
    :param line: the 1-based line in ``source``, if it is a file.
    :param description: free text for people.
    :raises ValueError: for an inconsistent rule (no audiences or clients, a permit or consent rule without scope,
        an empty scope, approvers on a non-consent rule or none on a consent rule, ``valid_from >= valid_until``, a
        non-positive ``max_lifetime`` or one on a deny rule).
    """

    id: str
    audiences: tuple[str, ...]
    scope: Scope | None
    effect: Effect = Effect.PERMIT
    clients: tuple[str, ...] = (ANY,)
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    valid_from: int | None = None
    valid_until: int | None = None
    schedule: WeeklySchedule | None = None
    max_lifetime: int | None = None
    approver_users: tuple[str, ...] = ()
    approver_groups: tuple[str, ...] = ()
    source: str | None = None
    line: int | None = None
    description: str | None = None
    _exact: frozenset[str] = field(init=False, repr=False, compare=False)
    _globs: tuple[tuple[str, re.Pattern[str]], ...] = field(init=False, repr=False, compare=False)
    _rights: Rights | None = field(init=False, repr=False, compare=False)
    _plain: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("a rule needs an id")
        if not self.audiences or not all(self.audiences):
            raise ValueError("a rule needs at least one non-empty audience")
        if not self.clients or not all(self.clients):
            raise ValueError("a rule needs at least one client (or '*')")
        if self.scope is None and self.effect is not Effect.DENY:
            raise ValueError(f"a {self.effect} rule needs a scope")
        if self.scope is not None and self.scope.is_empty:
            raise ValueError("the rule's scope is empty")
        has_approvers = bool(self.approver_users or self.approver_groups)
        if self.effect is Effect.CONSENT and not has_approvers:
            raise ValueError("a consent rule needs approvers (users or groups)")
        if self.effect is not Effect.CONSENT and has_approvers:
            raise ValueError(f"a {self.effect} rule has no approvers")
        for bound in (self.valid_from, self.valid_until):
            if bound is not None and not MIN_TIME <= bound <= MAX_TIME:
                raise ValueError("valid_from and valid_until must be between 1970 and 9999")
        if self.valid_from is not None and self.valid_until is not None and self.valid_from >= self.valid_until:
            raise ValueError("valid_from must be before valid_until")
        if self.max_lifetime is not None:
            if self.max_lifetime <= 0:
                raise ValueError("max_lifetime must be positive")
            if self.effect is Effect.DENY:
                raise ValueError("a deny rule has no max_lifetime")
        object.__setattr__(self, "_exact", frozenset(a for a in self.audiences if not is_glob(a)))
        globs = tuple((glob_prefix(a), compile_glob(a)) for a in self.audiences if is_glob(a))
        object.__setattr__(self, "_globs", globs)
        object.__setattr__(self, "_rights", rights(self.scope) if self.scope is not None else None)
        object.__setattr__(self, "_plain", self.effect is Effect.PERMIT and not self.has_conditions)

    # -- matching ---------------------------------------------------------------------------------------------

    @property
    def where(self) -> str:
        """``file:line`` when known, else the source or ``"-"``."""
        if self.source is not None and self.line is not None:
            return f"{self.source}:{self.line}"
        return self.source or "-"

    @property
    def rights(self) -> Rights | None:
        """The scope in the engine's working form (:data:`policies.scopes.Rights`), computed once; ``None`` without
        scope. Do not change it."""
        return self._rights

    @property
    def plain(self) -> bool:
        """True for a permit rule that is in force at all times (no validity interval, no windows that close)."""
        return self._plain

    @property
    def has_conditions(self) -> bool:
        """True if the rule is in force only at some times (validity interval or time windows)."""
        return (
            self.valid_from is not None
            or self.valid_until is not None
            or (self.schedule is not None and not self.schedule.always)
        )

    def matches_audience(self, audience: str) -> bool:
        """Whether one of the rule's audiences is ``audience`` or a glob matching it."""
        if audience in self._exact:
            return True
        return any(audience.startswith(prefix) and pattern.match(audience) for prefix, pattern in self._globs)

    def matches_subject(self, client_id: str, subject: str | None, groups: frozenset[str]) -> bool:
        """Whether the rule applies to this client and (possibly absent) user with these groups."""
        if ANY not in self.clients and client_id not in self.clients:
            return False
        if not self.users and not self.groups:
            return True
        if subject is None:
            return False
        return ANY in self.users or subject in self.users or not groups.isdisjoint(self.groups)

    def matches(self, request: AccessRequest) -> bool:
        """Subject, target and scope kind match (time conditions are checked by :meth:`active_at`)."""
        if self.scope is not None and not same_kind(self.scope, request.scope):
            return False
        return self.matches_audience(request.audience) and self.matches_subject(
            request.client_id, request.subject, request.subject_groups
        )

    # -- time -------------------------------------------------------------------------------------------------

    def in_validity(self, t: int) -> bool:
        """Whether ``t`` is within ``[valid_from, valid_until)``."""
        return (self.valid_from is None or self.valid_from <= t) and (self.valid_until is None or t < self.valid_until)

    def active_at(self, t: int) -> bool:
        """Whether the rule is in force at instant ``t``: in its validity interval and in one of its windows."""
        if not self.in_validity(t):
            return False
        return self.schedule is None or self.schedule.always or self.schedule.active_at(t)

    def active_intervals(self, start: int, end: int) -> list[tuple[int, int]]:
        """When the rule is in force from ``start`` on, as merged half-open intervals.

        Without windows the one interval is exact (it may reach beyond ``end``; :data:`~policies.schedule.MAX_TIME`
        stands for "no end"). With windows the intervals are computed up to ``end`` and cut there.
        """
        first = max(start, self.valid_from if self.valid_from is not None else start)
        last = self.valid_until if self.valid_until is not None else MAX_TIME
        if first >= last:
            return []
        if self.schedule is None or self.schedule.always:
            return [(first, last)]
        return merge(self.schedule.intervals(first, max(first, min(end, last))))

    def next_start(self, t: int, horizon: int) -> int | None:
        """The first instant after ``t`` at which the rule is in force, looking ``horizon`` seconds past its start."""
        first = max(t + 1, self.valid_from if self.valid_from is not None else t + 1)
        if first >= MAX_TIME:
            return None
        found = self.active_intervals(first, min(first + horizon, MAX_TIME))
        return found[0][0] if found else None

    def describe_conditions(self) -> str:
        """The rule's conditions for people, e.g. ``Mon-Fri 09:00-18:00 Europe/Berlin``; ``""`` without any.

        Validity times are shown in the zone of the rule's windows, else in UTC.
        """
        parts: list[str] = []
        zone = self.schedule.zone if self.schedule is not None else UTC  # times in the rule's own zone
        if self.schedule is not None:
            parts.append(str(self.schedule))
        if self.valid_from is not None:
            parts.append(f"from {datetime.fromtimestamp(self.valid_from, zone).isoformat()}")
        if self.valid_until is not None:
            parts.append(f"until {datetime.fromtimestamp(self.valid_until, zone).isoformat()}")
        if self.max_lifetime is not None:
            parts.append(f"tokens at most {self.max_lifetime} s")
        return ", ".join(parts)
