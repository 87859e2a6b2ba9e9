"""The decision interface between the authorization server and its policies (sans-IO, deterministic).

The token endpoint builds an :class:`AccessRequest` for every request and issues a token only for
``Decision.granted``: the intersection of what is requested and what the policy allows (RFC 9200 §5.8.1). Time is
a parameter (``now``); a policy never reads the clock.

A decision whose :attr:`Decision.consent` is set says that (more of) the request could be granted if someone
approves it (issue #5, consent workflow). That never grants anything by itself: only ``granted`` is issued, and a
decision that does not :attr:`~Decision.permits` is a refusal to the token endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ace_core.scope import AifScope, TextScope

__all__ = ["AccessPolicy", "AccessRequest", "ConsentRequired", "Decision", "Scope"]

Scope = TextScope | AifScope


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessRequest:
    """Who asks for what, where and when.

    :param subject: the signed-in user, for flows on behalf of a user.
    :param subject_groups: the groups ``subject`` belongs to. Users live in the AS database, so the caller looks
        them up; the policy only compares names.
    """

    client_id: str
    audience: str
    scope: Scope
    now: int
    subject: str | None = None
    subject_groups: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsentRequired:
    """Part of a request that someone must approve before it can be granted.

    :param scope: the rights that need approval (never overlapping ``Decision.granted``).
    :param users: users who may approve, in rule order.
    :param groups: groups whose members may approve, in rule order.
    :param rules: ids of the consent rules that cover ``scope``.
    """

    scope: Scope
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()

    @property
    def approvers(self) -> tuple[str, ...]:
        """``("user:alice", "group:facility", ...)``: every approver, users first."""
        return tuple(f"user:{u}" for u in self.users) + tuple(f"group:{g}" for g in self.groups)


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The outcome: ``granted`` is ``None`` (or empty) when nothing is allowed.

    :param max_lifetime: the longest token lifetime this decision allows (seconds), if limited.
    :param not_after: an absolute time the token must not outlive (e.g. the end of a time window).
    :param reason: a short explanation for logs and audit, never sent on the wire.
    :param consent: what could be granted in addition with someone's approval; it is not granted.
    :param rules: ids of the rules that produced the decision (for explanations and audit).
    """

    granted: Scope | None
    reason: str
    max_lifetime: int | None = None
    not_after: int | None = None
    consent: ConsentRequired | None = None
    rules: tuple[str, ...] = ()

    @property
    def permits(self) -> bool:
        """True when a non-empty scope is granted."""
        return self.granted is not None and not self.granted.is_empty


class AccessPolicy(Protocol):
    """Decides access requests. Implementations must be pure: equal input, equal output."""

    def decide(self, request: AccessRequest) -> Decision: ...
