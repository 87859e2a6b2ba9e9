"""Time sources for the resource server (STYLE §3.6 rule 3: the sans-IO core takes time as parameters).

A lock has two clocks: a wall clock (``now``, seconds since the epoch; ``None`` on a device without a real-time
clock, which must then rely on ``exi``, RFC 9200 §5.10.3) and a monotonic counter (``monotonic``, seconds of
uptime; every device has one). :class:`SystemClock` reads the host's clocks; :class:`ManualClock` is set by hand
(tests, simulations).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """What the transport asks for before calling into the sans-IO core."""

    def now(self) -> float | None:
        """Seconds since the epoch, or ``None`` when the device has no wall clock."""
        ...

    def monotonic(self) -> float:
        """Seconds on a counter that never goes backwards while the device runs (uptime)."""
        ...


@dataclass(frozen=True, slots=True)
class SystemClock:
    """The host's clocks; ``has_clock=False`` simulates a lock without a real-time clock."""

    has_clock: bool = True

    def now(self) -> float | None:
        """``time.time()``, or ``None`` without a wall clock."""
        return time.time() if self.has_clock else None

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()


@dataclass(slots=True)
class ManualClock:
    """A clock that moves only when told to.

    >>> clock = ManualClock(wall=1_700_000_000.0)
    >>> clock.advance(30)
    >>> clock.now(), clock.monotonic()
    (1700000030.0, 30.0)
    """

    wall: float | None = None
    uptime: float = 0.0

    def now(self) -> float | None:
        """The wall time set (``None`` simulates a clockless device)."""
        return self.wall

    def monotonic(self) -> float:
        """The uptime set."""
        return self.uptime

    def advance(self, seconds: float) -> None:
        """Move both clocks forward."""
        self.uptime += seconds
        if self.wall is not None:
            self.wall += seconds
