"""The decision interface between the authorization server and its policies (sans-IO, deterministic).

The token endpoint builds an :class:`AccessRequest` for every request and issues a token only for
``Decision.granted``: the intersection of what is requested and what the policy allows (RFC 9200 §5.8.1). Time is
a parameter (``now``); a policy never reads the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ace_core.scope import AifScope, TextScope

__all__ = ["AccessPolicy", "AccessRequest", "Decision"]

Scope = TextScope | AifScope


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessRequest:
    """Who asks for what, where and when."""

    client_id: str
    audience: str
    scope: Scope
    now: int
    subject: str | None = None  # the signed-in user, for flows on behalf of a user


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The outcome: ``granted`` is ``None`` (or empty) when nothing is allowed.

    :param max_lifetime: the longest token lifetime this decision allows (seconds), if limited.
    :param not_after: an absolute time the token must not outlive (e.g. the end of a time window).
    :param reason: a short explanation for logs and audit, never sent on the wire.
    """

    granted: Scope | None
    reason: str
    max_lifetime: int | None = None
    not_after: int | None = None

    @property
    def permits(self) -> bool:
        """True when a non-empty scope is granted."""
        return self.granted is not None and not self.granted.is_empty


class AccessPolicy(Protocol):
    """Decides access requests. Implementations must be pure: equal input, equal output."""

    def decide(self, request: AccessRequest) -> Decision: ...
