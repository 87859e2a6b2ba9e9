"""Shared timing helpers for the benchmarks: calibrated, repeated batches timed with ``time.perf_counter``.

Method (single thread): warm the operation up while calibrating how many calls fill one batch, then run
``batches`` timed batches of that many calls each and report the median rate (ops/s) with min and max.
Each measurement takes about ``seconds`` of wall time in its batches, plus a warm-up of one to two batches.
Operations that are compared with each other are best measured together with :func:`measure_interleaved`.
"""

from __future__ import annotations

import gc
import statistics
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from time import perf_counter
from typing import Any

__all__ = ["DEFAULT_BATCHES", "Measurement", "fmt_rate", "fmt_ratio", "measure", "measure_interleaved"]

DEFAULT_BATCHES = 5


@dataclass(frozen=True, slots=True)
class Measurement:
    """Rates in operations per second over the timed batches."""

    median: float
    minimum: float
    maximum: float
    batches: int
    calls_per_batch: int

    @property
    def us_per_op(self) -> float:
        """Median cost of one operation in microseconds."""
        return 1e6 / self.median

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (includes ``us_per_op``)."""
        return {**asdict(self), "us_per_op": self.us_per_op}


def _run(op: Callable[[], object], n: int) -> float:
    t0 = perf_counter()
    for _ in range(n):
        op()
    return perf_counter() - t0


def _calibrate(op: Callable[[], object], batch_seconds: float) -> int:
    """Warm ``op`` up and return how many calls fill one batch: double the count until a run lasts half a batch."""
    n = 1
    while True:
        elapsed = _run(op, n)
        if elapsed >= batch_seconds / 2:
            return max(1, round(n * batch_seconds / elapsed))
        n *= 2


def _summary(rates: list[float], calls: int) -> Measurement:
    return Measurement(statistics.median(rates), min(rates), max(rates), len(rates), calls)


def measure(op: Callable[[], object], seconds: float, *, batches: int = DEFAULT_BATCHES) -> Measurement:
    """Time ``op`` (a no-argument callable) for about ``seconds`` in ``batches`` equal batches.

    The garbage collector stays enabled (a server pays for it too) but is run once before the warm-up, so
    that garbage left by the previous measurement is not charged to this one.
    """
    return measure_interleaved({"op": op}, seconds, batches=batches)["op"]


def measure_interleaved(
    ops: Mapping[str, Callable[[], object]], seconds: float, *, batches: int = DEFAULT_BATCHES
) -> dict[str, Measurement]:
    """Measure several operations whose rates will be compared, interleaving their batches round-robin.

    Each operation gets about ``seconds`` in ``batches`` batches, as with :func:`measure`; batch ``i`` of every
    operation runs in round ``i``, so a burst of background load slows all of them alike instead of skewing
    one ratio.
    """
    if seconds <= 0 or batches < 1:
        raise ValueError("seconds must be > 0 and batches >= 1")
    batch_seconds = seconds / batches
    gc.collect()
    calls = {name: _calibrate(op, batch_seconds) for name, op in ops.items()}
    rates: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(batches):
        for name, op in ops.items():
            rates[name].append(calls[name] / _run(op, calls[name]))
    return {name: _summary(rates[name], calls[name]) for name in ops}


def fmt_rate(rate: float | None) -> str:
    """``12,345`` style, or ``n/a``."""
    if rate is None:
        return "n/a"
    return f"{rate:,.0f}"


def fmt_ratio(num: float | None, den: float | None) -> str:
    """``num / den`` with two decimals, or ``n/a``."""
    if num is None or den is None or den == 0:
        return "n/a"
    return f"{num / den:.2f}"
