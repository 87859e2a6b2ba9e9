"""Weekly time windows in a named IANA time zone, exact across daylight-saving changes (issue #5).

A :class:`Window` such as ``Mon-Fri 09:00-18:00`` is wall-clock time in the zone of its
:class:`WeeklySchedule` (e.g. ``Europe/Berlin``). The one rule that defines it:

    An instant is inside a window when its local date is one of the window's days and its local time of day is
    in ``[from, to)`` -- for a window that ends at or before it starts (``22:00-06:00``), from ``from`` on the
    listed day to ``to`` on the next day.

Everything else follows from that rule, including the daylight-saving days:

* **Spring forward** (Europe/Berlin on the last Sunday of March: 02:00 CET jumps to 03:00 CEST): local times
  02:00-02:59 do not exist, so a window ``01:30-03:00`` lasts 30 minutes and ends at the jump, and a window
  ``02:30-04:00`` starts at the jump (03:00 CEST).
* **Fall back** (the last Sunday of October: 03:00 CEST goes back to 02:00 CET): local times 02:00-02:59 happen
  twice, and a window ``02:15-02:45`` is open twice, 30 minutes each; ``09:00-18:00`` ends at 18:00 CET, i.e.
  17:00 UTC, not 16:00 UTC.

:meth:`WeeklySchedule.active_at` answers for one instant; :meth:`WeeklySchedule.intervals` lists the instants
inside the windows as merged half-open UTC intervals, which is what expiry times are computed from (a token
granted at 17:55 in a 09:00-18:00 window expires by 18:00; windows that touch, ``09:00-13:00`` and
``13:00-18:00``, chain). Both are pure functions of their arguments; the zone's offsets are looked up with
:mod:`zoneinfo` (the ``tzdata`` package provides the data where the system has none).

>>> from zoneinfo import ZoneInfo
>>> office = WeeklySchedule(ZoneInfo("Europe/Berlin"), (Window.parse("Mon-Fri 09:00-18:00"),))
>>> monday_1755 = 1_743_436_500    # 2025-03-31T17:55:00+02:00
>>> office.active_at(monday_1755), office.intervals(monday_1755, monday_1755 + 3600)
(True, [(1743436500, 1743436800)])
>>> str(office)
'Mon-Fri 09:00-18:00 Europe/Berlin'
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from zoneinfo import ZoneInfo

__all__ = ["DAY_NAMES", "MAX_TIME", "MIN_TIME", "WeeklySchedule", "Window", "parse_days"]

#: Monday first, as :meth:`datetime.date.weekday` counts.
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_FULL_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_BY_NAME = {name.casefold(): i for i, name in enumerate(DAY_NAMES)} | {n: i for i, n in enumerate(_FULL_NAMES)}
_ALL_DAYS = frozenset(range(7))
_DAY = 86_400
_MINUTES_PER_DAY = 1440
_WEEK_MINUTES = 7 * _MINUTES_PER_DAY
#: 1970-01-01 was a Thursday: weekday(day number d since the epoch) = (d + 3) % 7.
_EPOCH_WEEKDAY = 3
#: Offsets are probed this often to find the zone's transitions (no zone changes its offset twice in 3 hours).
_PROBE = 3 * 3600
#: Instants this module handles: 1970-01-01 up to the last second of 9999 (what :mod:`datetime` represents).
MIN_TIME = 0
MAX_TIME = 253_402_300_800

_TIME = re.compile(r"(\d{1,2}):(\d{2})")
_WINDOW = re.compile(r"\s*(?P<days>\S+)\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*")


def parse_days(spec: str) -> frozenset[int]:
    """``"Mon-Fri"``, ``"Mon,Wed,Fri"``, ``"Fri-Mon"`` (wrapping), ``"Sat"``, ``"daily"`` -> weekday numbers (Mon = 0).

    Names are case-insensitive; full names (``Monday``) work too.

    :raises ValueError: for an unknown name or an empty list.
    """
    text = spec.strip().casefold()
    if text in ("daily", "*"):
        return _ALL_DAYS
    days: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        start = _day(first)
        if not dash:
            days.add(start)
            continue
        end = _day(last)
        span = (end - start) % 7
        days.update((start + i) % 7 for i in range(span + 1))
    return frozenset(days)


def _day(name: str) -> int:
    try:
        return _DAY_BY_NAME[name.strip()]
    except KeyError:
        raise ValueError(f"unknown day {name.strip()!r} (expected Mon, Tue, ... Sun, or 'daily')") from None


def parse_time(text: str, *, end: bool = False) -> int:
    """``"09:00"`` -> minutes after midnight; ``"24:00"`` (only as an end) -> 1440.

    :raises ValueError: for anything but ``H:MM``/``HH:MM`` with a valid hour and minute.
    """
    match = _TIME.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a time of day HH:MM")
    hour, minute = int(match[1]), int(match[2])
    if end and hour == 24 and minute == 0:
        return _MINUTES_PER_DAY
    if hour > 23 or minute > 59:
        raise ValueError(f"{text!r} is not a time of day (00:00-23:59{', or 24:00 as an end' if end else ''})")
    return hour * 60 + minute


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _describe_days(days: frozenset[int]) -> str:
    if days == _ALL_DAYS:
        return "daily"
    ordered = sorted(days)
    runs: list[list[int]] = []
    for day in ordered:
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    parts = [DAY_NAMES[r[0]] if len(r) == 1 else f"{DAY_NAMES[r[0]]}-{DAY_NAMES[r[-1]]}" for r in runs]
    return ",".join(parts)


@dataclass(frozen=True, slots=True)
class Window:
    """Local times ``[start, end)`` on each of ``days`` (minutes after midnight, Mon = 0).

    :param days: the weekdays on which the window *opens*.
    :param start: 0-1439.
    :param end: 1-1440; ``end <= start`` makes an overnight window that closes on the next day.
    :raises ValueError: for empty days, out-of-range times, or ``start == end`` (use 00:00-24:00 for a whole day).
    """

    days: frozenset[int]
    start: int
    end: int

    def __post_init__(self) -> None:
        if not self.days or not self.days <= _ALL_DAYS:
            raise ValueError("a window needs days among Mon (0) ... Sun (6)")
        if not 0 <= self.start < _MINUTES_PER_DAY or not 0 < self.end <= _MINUTES_PER_DAY:
            raise ValueError("window times must be within 00:00-24:00")
        if self.start == self.end:
            raise ValueError("a window from a time to the same time is empty (use 00:00-24:00 for a whole day)")

    @classmethod
    def parse(cls, spec: str) -> Window:
        """``"Mon-Fri 09:00-18:00"``, ``"Sat 10:00-14:00"``, ``"daily 22:00-06:00"``.

        :raises ValueError: malformed.
        """
        match = _WINDOW.fullmatch(spec)
        if match is None:
            raise ValueError(f"{spec!r} is not of the form 'Mon-Fri 09:00-18:00'")
        return cls(parse_days(match["days"]), parse_time(match["start"]), parse_time(match["end"], end=True))

    @property
    def overnight(self) -> bool:
        """True if the window closes on the day after it opens."""
        return self.end <= self.start

    def __str__(self) -> str:
        return f"{_describe_days(self.days)} {_hhmm(self.start)}-{_hhmm(self.end)}"

    def _week_spans(self) -> list[tuple[int, int]]:
        """The window as minute spans of the week (Mon 00:00 = 0), wrapping Sunday night into Monday."""
        spans: list[tuple[int, int]] = []
        for day in self.days:
            first = day * _MINUTES_PER_DAY + self.start
            last = day * _MINUTES_PER_DAY + self.end + (_MINUTES_PER_DAY if self.overnight else 0)
            if last <= _WEEK_MINUTES:
                spans.append((first, last))
            else:
                spans.extend([(first, _WEEK_MINUTES), (0, last - _WEEK_MINUTES)])
        return spans


def _offset(zone: ZoneInfo, t: int) -> int:
    """The zone's UTC offset at instant ``t``, in seconds."""
    offset = datetime.fromtimestamp(t, zone).utcoffset()
    assert offset is not None  # a ZoneInfo always has one
    return int(offset.total_seconds())


@functools.lru_cache(maxsize=8192)
def _day_segments(zone: ZoneInfo, day: int) -> tuple[tuple[int, int, int], ...]:
    """``(start, end, offset)`` pieces of UTC day ``day`` with a constant offset. Cached: zones do not change."""
    first = day * _DAY
    points = [first + i * _PROBE for i in range(_DAY // _PROBE)] + [first + _DAY - 1]
    offsets = [_offset(zone, p) for p in points]
    segments: list[tuple[int, int, int]] = []
    seg_start, seg_offset = first, offsets[0]
    for (lo, before), (hi, after) in pairwise(zip(points, offsets, strict=True)):
        if before == after:
            continue
        while hi - lo > 1:  # bisect to the first second with the new offset
            mid = (lo + hi) // 2
            if _offset(zone, mid) == before:
                lo = mid
            else:
                hi = mid
        segments.append((seg_start, hi, seg_offset))
        seg_start, seg_offset = hi, after
    segments.append((seg_start, first + _DAY, seg_offset))
    return tuple(segments)


def _segments(zone: ZoneInfo, start: int, end: int) -> list[tuple[int, int, int]]:
    """Constant-offset pieces covering ``[start, end)``, neighbours with equal offsets merged."""
    pieces: list[tuple[int, int, int]] = []
    for day in range(start // _DAY, (end - 1) // _DAY + 1):
        for a, b, offset in _day_segments(zone, day):
            a, b = max(a, start), min(b, end)
            if a >= b:
                continue
            if pieces and pieces[-1][2] == offset and pieces[-1][1] == a:
                pieces[-1] = (pieces[-1][0], b, offset)
            else:
                pieces.append((a, b, offset))
    return pieces


def merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort half-open intervals and merge those that overlap or touch."""
    merged: list[tuple[int, int]] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1]:
            if b > merged[-1][1]:
                merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return merged


@dataclass(frozen=True, slots=True)
class WeeklySchedule:
    """Windows in one IANA time zone; an instant is in the schedule if it is in any window (see module docs).

    :raises ValueError: without windows.
    """

    zone: ZoneInfo
    windows: tuple[Window, ...]
    _always: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.windows:
            raise ValueError("a schedule needs at least one window")
        spans = merge([span for window in self.windows for span in window._week_spans()])
        object.__setattr__(self, "_always", spans == [(0, _WEEK_MINUTES)])

    def __str__(self) -> str:
        return f"{', '.join(str(w) for w in self.windows)} {self.zone.key}"

    @property
    def always(self) -> bool:
        """True if the windows cover every minute of the week, i.e. the schedule never closes."""
        return self._always

    def active_at(self, t: int) -> bool:
        """Whether instant ``t`` (seconds since the epoch) is inside a window.

        :raises ValueError: for ``t`` outside ``MIN_TIME <= t < MAX_TIME``.
        """
        _check_range(t)
        local = datetime.fromtimestamp(t, self.zone)
        seconds = local.hour * 3600 + local.minute * 60 + local.second
        today = local.weekday()
        yesterday = (today - 1) % 7
        for w in self.windows:
            if w.overnight:
                if (today in w.days and seconds >= w.start * 60) or (yesterday in w.days and seconds < w.end * 60):
                    return True
            elif today in w.days and w.start * 60 <= seconds < w.end * 60:
                return True
        return False

    def intervals(self, start: int, end: int) -> list[tuple[int, int]]:
        """The instants of ``[start, end)`` inside a window, as merged half-open intervals (UTC seconds).

        :raises ValueError: for bounds outside ``MIN_TIME <= start <= end <= MAX_TIME``.
        """
        _check_range(start)
        if end > MAX_TIME or end < start:
            raise ValueError("interval end out of range")
        found: list[tuple[int, int]] = []
        for a, b, offset in _segments(self.zone, start, end) if start < end else ():
            # Within [a, b) local time is t + offset: map each window of each local date back to UTC.
            for local_day in range((a + offset) // _DAY - 1, (b + offset - 1) // _DAY + 1):
                weekday = (local_day + _EPOCH_WEEKDAY) % 7
                midnight = local_day * _DAY - offset
                for w in self.windows:
                    if weekday not in w.days:
                        continue
                    opens = midnight + w.start * 60
                    closes = midnight + (w.end + (_MINUTES_PER_DAY if w.overnight else 0)) * 60
                    lo, hi = max(opens, a), min(closes, b)
                    if lo < hi:
                        found.append((lo, hi))
        return merge(found)


def _check_range(t: int) -> None:
    if not MIN_TIME <= t < MAX_TIME:
        raise ValueError(f"time {t} outside the supported range (1970 to 9999)")
