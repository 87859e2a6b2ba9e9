"""A progress bar for long commands, on standard error, with no dependencies.

It draws only when the stream is a terminal, so logs, pipes and tests see nothing; redraws are limited to ten a
second, so a caller may report as often as it likes.

>>> import io
>>> with Progress(100, "devices", stream=io.StringIO()) as bar:  # not a terminal: draws nothing
...     bar.update(50)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress"]

_WIDTH = 30
_INTERVAL = 0.1  # seconds between redraws


class Progress:
    """``[#####.....] 50,000/100,000 devices (50%) 12,345/s, 4 s left`` on one line, redrawn in place.

    :param total: the count that means done.
    :param label: what is counted.
    :param stream: where to draw (default standard error).
    :param enabled: draw even if ``stream`` is not a terminal (``None``: only if it is).
    """

    def __init__(
        self,
        total: int,
        label: str,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = max(total, 1)
        self.label = label
        self._stream = sys.stderr if stream is None else stream
        self._enabled = _isatty(self._stream) if enabled is None else enabled
        self._clock = clock
        self._started = clock()
        self._last_draw = float("-inf")
        self._done = 0
        self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, done: int) -> None:
        """Report that ``done`` of ``total`` are done (redraws at most every 0.1 s, and always at the end)."""
        self._done = min(done, self.total)
        now = self._clock()
        if self._enabled and (now - self._last_draw >= _INTERVAL or self._done == self.total):
            self._last_draw = now
            self._draw(now)

    def close(self) -> None:
        """End the line (if anything was drawn)."""
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False

    def render(self, now: float) -> str:
        """The bar's text at time ``now``."""
        filled = _WIDTH * self._done // self.total
        elapsed = now - self._started
        rate = self._done / elapsed if elapsed > 0 else 0.0
        tail = f" {rate:,.0f}/s, {(self.total - self._done) / rate:,.0f} s left" if rate else ""
        return (
            f"[{'#' * filled}{'.' * (_WIDTH - filled)}] {self._done:,}/{self.total:,} {self.label}"
            f" ({100 * self._done // self.total}%){tail}"
        )

    def _draw(self, now: float) -> None:
        self._stream.write("\r" + self.render(now) + "\x1b[K")  # erase the rest of a longer previous line
        self._stream.flush()
        self._drawn = True


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real stream
        return False
