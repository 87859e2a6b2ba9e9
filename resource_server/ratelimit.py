"""Rate limiting of token submissions per peer (RFC 9200 §5.10.1: the RS SHOULD rate-limit them; RFC 8516: the
answer is 4.29 Too Many Requests with Max-Age saying when to retry).

A sliding log per peer: a submission is allowed when fewer than ``limit`` submissions from that peer fall in the
last ``window`` seconds (monotonic time). The table of peers is bounded: beyond ``max_peers`` the least recently
seen peer is forgotten, which can only make the limiter more lenient, never block a peer wrongly.

>>> limiter = RateLimiter(limit=2, window=10)
>>> [limiter.check("10.0.0.1", monotonic=t) for t in (0, 1, 2, 10.5)]
[None, None, 8, None]
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque

__all__ = ["RateLimiter"]


class RateLimiter:
    """Allows ``limit`` events per ``window`` seconds per key.

    :param limit: events allowed in any window.
    :param window: window length in seconds.
    :param max_peers: keys remembered at most.
    """

    def __init__(self, *, limit: int, window: float, max_peers: int = 1024) -> None:
        if limit < 1 or window <= 0 or max_peers < 1:
            raise ValueError("limit and max_peers must be at least 1 and window positive")
        self.limit = limit
        self.window = window
        self.max_peers = max_peers
        self._log: OrderedDict[str, deque[float]] = OrderedDict()

    def check(self, peer: str, *, monotonic: float) -> int | None:
        """Record an event from ``peer``; ``None`` if allowed, else the whole seconds until it would be (>= 1)."""
        log = self._log.get(peer)
        if log is None:
            log = deque()
            self._log[peer] = log
            while len(self._log) > self.max_peers:
                self._log.popitem(last=False)
        else:
            self._log.move_to_end(peer)
        while log and monotonic - log[0] >= self.window:
            log.popleft()
        if len(log) >= self.limit:
            return max(1, math.ceil(log[0] + self.window - monotonic))
        log.append(monotonic)
        return None
