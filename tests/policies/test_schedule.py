"""Weekly time windows in IANA time zones: parsing, and exact instants across daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.schedule import WeeklySchedule, Window, parse_days, parse_time

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
HOUR = 3600
DAY = 86_400


def at(text: str) -> int:
    """Seconds since the epoch of an ISO 8601 time with offset."""
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None
    return int(moment.timestamp())


def local(t: int, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(t, zone).isoformat()


def schedule(zone: ZoneInfo, *specs: str) -> WeeklySchedule:
    return WeeklySchedule(zone, tuple(Window.parse(spec) for spec in specs))


# --------------------------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "days"),
    [
        ("Mon", {0}),
        ("Mon-Fri", {0, 1, 2, 3, 4}),
        ("mon,wed,FRI", {0, 2, 4}),
        ("Fri-Mon", {4, 5, 6, 0}),  # wraps over the weekend
        ("Sat-Sun", {5, 6}),
        ("Monday-Tuesday", {0, 1}),
        ("daily", set(range(7))),
        ("Mon-Tue,Thu", {0, 1, 3}),
    ],
)
def test_parse_days(spec: str, days: set[int]) -> None:
    assert parse_days(spec) == frozenset(days)


@pytest.mark.parametrize("spec", ["", "Mo", "Mon-", "Funday", "Mon,,Tue"])
def test_parse_days_rejects(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_days(spec)


def test_parse_time() -> None:
    assert parse_time("09:00") == 540 and parse_time("9:05") == 545 and parse_time("23:59") == 1439
    assert parse_time("24:00", end=True) == 1440
    for bad in ("24:00", "12:60", "25:00", "9", "09:00:00", "nine"):
        with pytest.raises(ValueError):
            parse_time(bad)


def test_window_parse_and_str() -> None:
    window = Window.parse("Mon-Fri 09:00-18:00")
    assert (window.days, window.start, window.end, window.overnight) == (frozenset(range(5)), 540, 1080, False)
    assert str(window) == "Mon-Fri 09:00-18:00"
    assert str(Window.parse("Fri 22:00-06:00")) == "Fri 22:00-06:00" and Window.parse("Fri 22:00-06:00").overnight
    assert str(Window.parse("daily 00:00-24:00")) == "daily 00:00-24:00"
    assert str(Window.parse("Mon,Wed,Sat-Sun 08:00 - 09:30")) == "Mon,Wed,Sat-Sun 08:00-09:30"
    for bad in ("Mon 09:00-09:00", "Mon 09:00", "09:00-18:00", "Mon 18:00-25:00", "Xyz 09:00-10:00"):
        with pytest.raises(ValueError):
            Window.parse(bad)


def test_always() -> None:
    assert schedule(BERLIN, "daily 00:00-24:00").always
    assert schedule(BERLIN, "Mon-Fri 00:00-24:00", "Sat-Sun 00:00-24:00").always
    assert schedule(BERLIN, "daily 00:00-12:00", "daily 12:00-24:00").always
    assert schedule(BERLIN, "daily 22:00-21:00", "daily 21:00-22:00").always  # overnight windows wrap
    assert not schedule(BERLIN, "daily 06:00-05:59").always  # one minute a day is missing
    assert not schedule(BERLIN, "Mon-Fri 09:00-18:00").always


# --------------------------------------------------------------------------------------------------------------
# ordinary days
# --------------------------------------------------------------------------------------------------------------


def test_office_hours_on_an_ordinary_monday() -> None:
    office = schedule(BERLIN, "Mon-Fri 09:00-18:00")
    monday = "2025-03-31"
    assert not office.active_at(at(f"{monday}T08:59:59+02:00"))
    assert office.active_at(at(f"{monday}T09:00:00+02:00"))
    assert office.active_at(at(f"{monday}T17:59:59+02:00"))
    assert not office.active_at(at(f"{monday}T18:00:00+02:00"))
    assert not office.active_at(at("2025-03-29T12:00:00+01:00"))  # Saturday
    week = office.intervals(at(f"{monday}T00:00:00+02:00"), at("2025-04-07T00:00:00+02:00"))
    assert [(local(a, BERLIN), local(b, BERLIN)) for a, b in week][0] == (
        "2025-03-31T09:00:00+02:00",
        "2025-03-31T18:00:00+02:00",
    )
    assert len(week) == 5


def test_intervals_are_clipped_to_the_range() -> None:
    office = schedule(BERLIN, "Mon-Fri 09:00-18:00")
    start = at("2025-03-31T17:55:00+02:00")
    assert office.intervals(start, start + HOUR) == [(start, at("2025-03-31T18:00:00+02:00"))]
    assert office.intervals(start, start) == []


def test_touching_windows_merge() -> None:
    split = schedule(BERLIN, "Mon 09:00-13:00", "Mon 13:00-18:00")
    start = at("2025-03-31T10:00:00+02:00")
    assert split.intervals(start, start + DAY) == [(start, at("2025-03-31T18:00:00+02:00"))]


def test_overnight_windows() -> None:
    night = schedule(BERLIN, "Fri 22:00-06:00")
    assert night.active_at(at("2025-04-04T23:00:00+02:00"))  # Friday night
    assert night.active_at(at("2025-04-05T05:59:00+02:00"))  # Saturday morning, opened on Friday
    assert not night.active_at(at("2025-04-05T23:00:00+02:00"))  # Saturday night: not a Friday
    assert not night.active_at(at("2025-04-04T05:00:00+02:00"))  # Friday morning: opened on Thursday? no
    start = at("2025-04-04T12:00:00+02:00")
    assert night.intervals(start, start + DAY) == [(at("2025-04-04T22:00:00+02:00"), at("2025-04-05T06:00:00+02:00"))]
    sunday = schedule(BERLIN, "Sun 23:00-01:00")  # wraps into Monday
    assert sunday.active_at(at("2025-04-07T00:30:00+02:00"))


def test_24_00_ends_at_midnight() -> None:
    evening = schedule(BERLIN, "Mon 20:00-24:00")
    assert evening.active_at(at("2025-03-31T23:59:59+02:00"))
    assert not evening.active_at(at("2025-04-01T00:00:00+02:00"))


# --------------------------------------------------------------------------------------------------------------
# daylight-saving days
# --------------------------------------------------------------------------------------------------------------

# Europe/Berlin: 2025-03-30 02:00 CET -> 03:00 CEST; 2025-10-26 03:00 CEST -> 02:00 CET.
# America/New_York: 2025-03-09 02:00 EST -> 03:00 EDT; 2025-11-02 02:00 EDT -> 01:00 EST.
SPRING = [(BERLIN, "2025-03-30", "+01:00", "+02:00"), (NEW_YORK, "2025-03-09", "-05:00", "-04:00")]
FALL = [(BERLIN, "2025-10-26", "+02:00", "+01:00"), (NEW_YORK, "2025-11-02", "-04:00", "-05:00")]


@pytest.mark.parametrize(("zone", "day", "before", "after"), SPRING, ids=["berlin", "new-york"])
def test_spring_forward_window_0130_0300(zone: ZoneInfo, day: str, before: str, after: str) -> None:
    """Local 02:00-02:59 does not exist: the window lasts 30 minutes and closes at the jump (03:00 new time)."""
    window = schedule(zone, "Sun 01:30-03:00")
    start = at(f"{day}T00:00:00{before}")
    spans = window.intervals(start, start + DAY)
    assert spans == [(at(f"{day}T01:30:00{before}"), at(f"{day}T03:00:00{after}"))]
    assert spans[0][1] - spans[0][0] == 30 * 60
    assert window.active_at(at(f"{day}T01:59:59{before}"))
    assert not window.active_at(at(f"{day}T03:00:00{after}"))


@pytest.mark.parametrize(("zone", "day", "before", "after"), SPRING, ids=["berlin", "new-york"])
def test_spring_forward_window_opening_in_the_gap(zone: ZoneInfo, day: str, before: str, after: str) -> None:
    window = schedule(zone, "Sun 02:30-04:00")
    start = at(f"{day}T00:00:00{before}")
    assert window.intervals(start, start + DAY) == [(at(f"{day}T03:00:00{after}"), at(f"{day}T04:00:00{after}"))]


@pytest.mark.parametrize(("zone", "day", "before", "after"), FALL, ids=["berlin", "new-york"])
def test_fall_back_office_hours_end_at_18_local(zone: ZoneInfo, day: str, before: str, after: str) -> None:
    window = schedule(zone, "daily 09:00-18:00")
    start = at(f"{day}T00:00:00{before}")
    spans = window.intervals(start, start + DAY)
    assert spans == [(at(f"{day}T09:00:00{after}"), at(f"{day}T18:00:00{after}"))]
    assert datetime.fromtimestamp(spans[0][1], UTC).hour == 18 - int(after[:3])  # e.g. 17:00 UTC in Berlin


@pytest.mark.parametrize(("zone", "day", "before", "after"), FALL, ids=["berlin", "new-york"])
def test_fall_back_repeated_hour_opens_twice(zone: ZoneInfo, day: str, before: str, after: str) -> None:
    """Local times in the repeated hour happen twice, so a window inside it is open twice."""
    repeated = "02" if zone is BERLIN else "01"
    window = schedule(zone, f"Sun {repeated}:15-{repeated}:45")
    start = at(f"{day}T00:00:00{before}")
    assert window.intervals(start, start + DAY) == [
        (at(f"{day}T{repeated}:15:00{before}"), at(f"{day}T{repeated}:45:00{before}")),
        (at(f"{day}T{repeated}:15:00{after}"), at(f"{day}T{repeated}:45:00{after}")),
    ]


def test_window_across_the_fall_back_is_an_hour_longer() -> None:
    night = schedule(BERLIN, "Sun 00:00-06:00")
    start = at("2025-10-26T00:00:00+02:00")
    (span,) = night.intervals(start, start + DAY)
    assert span == (start, at("2025-10-26T06:00:00+01:00")) and span[1] - span[0] == 7 * HOUR


def test_out_of_range_times() -> None:
    office = schedule(BERLIN, "Mon-Fri 09:00-18:00")
    with pytest.raises(ValueError):
        office.active_at(-1)
    with pytest.raises(ValueError):
        office.intervals(0, 10**13)


# --------------------------------------------------------------------------------------------------------------
# property: intervals() and active_at() agree everywhere, in zones with unusual rules too
# --------------------------------------------------------------------------------------------------------------

ZONES = [BERLIN, NEW_YORK, ZoneInfo("Australia/Lord_Howe"), ZoneInfo("Asia/Kolkata"), ZoneInfo("UTC")]
window_lists = st.lists(
    st.tuples(
        st.frozensets(st.integers(min_value=0, max_value=6), min_size=1),
        st.integers(min_value=0, max_value=1439),
        st.integers(min_value=1, max_value=1440),
    ).filter(lambda t: t[1] != t[2]),
    min_size=1,
    max_size=3,
)
# 2020-2030, with extra weight on the hours around the European and US transitions.
instants = st.one_of(
    st.integers(min_value=at("2020-01-01T00:00:00Z"), max_value=at("2030-01-01T00:00:00Z")),
    st.sampled_from([at("2025-03-30T01:00:00Z"), at("2025-10-26T01:00:00Z"), at("2025-03-09T07:00:00Z")]).flatmap(
        lambda t: st.integers(min_value=t - 4 * HOUR, max_value=t + 4 * HOUR)
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ZONES), window_lists, instants)
def test_intervals_agree_with_active_at(zone: ZoneInfo, specs: list[tuple[frozenset[int], int, int]], t: int) -> None:
    sched = WeeklySchedule(zone, tuple(Window(days, start, end) for days, start, end in specs))
    spans = sched.intervals(t - 2 * DAY, t + 2 * DAY)
    inside = any(a <= t < b for a, b in spans)
    assert inside == sched.active_at(t)
    assert all(a < b for a, b in spans) and all(b1 < a2 for (_, b1), (a2, _) in zip(spans, spans[1:], strict=False))
    if sched.always:
        assert spans == [(t - 2 * DAY, t + 2 * DAY)]
