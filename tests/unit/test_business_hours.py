"""BusinessCalendar: working days, opening hours and ticket deadlines in Europe/Prague."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailbot.business_hours import BusinessCalendar
from mailbot.config import CalendarConfig

PRAGUE = ZoneInfo("Europe/Prague")


def at(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=PRAGUE)


@pytest.fixture(scope="module")
def cal() -> BusinessCalendar:
    return BusinessCalendar(CalendarConfig())


@pytest.mark.parametrize(
    ("received", "due"),
    [
        # Fri 16:00 → 1 h Fri, 9 h Mon, 9 h Tue, 8 h Wed.
        (at(2026, 11, 20, 16), at(2026, 11, 25, 16)),
        # Good Friday (26 Mar) and Easter Monday (29 Mar 2027) follow.
        (at(2027, 3, 25, 10), at(2027, 4, 1, 10)),
        # 24–26 Dec are holidays.
        (at(2026, 12, 23, 12), at(2026, 12, 30, 12)),
        # Saturday: counted from Monday 08:00; the result at closing time stays at 17:00.
        (at(2026, 11, 28, 9), at(2026, 12, 2, 17)),
    ],
)
def test_ticket_deadline_examples(
    cal: BusinessCalendar, received: datetime, due: datetime
) -> None:
    """The agreed 27-working-hour deadlines, exactly."""
    result = cal.deadline(received, emergency=False)
    assert result == due
    assert result.tzinfo is not None
    assert result.replace(tzinfo=None) == due.replace(tzinfo=None)  # wall clock, not only instant


def test_emergency_deadline_is_four_working_hours(cal: BusinessCalendar) -> None:
    """An emergency is due 4 working hours later, across the night if need be."""
    assert cal.deadline(at(2026, 11, 25, 10), emergency=True) == at(2026, 11, 25, 14)
    assert cal.deadline(at(2026, 11, 25, 15), emergency=True) == at(2026, 11, 26, 10)
    assert cal.deadline(at(2026, 11, 25, 13), emergency=True) == at(2026, 11, 25, 17)
    # Friday evening → Monday noon.
    assert cal.deadline(at(2026, 11, 27, 20), emergency=True) == at(2026, 11, 30, 12)


def test_configured_closure_day_is_not_a_working_day() -> None:
    """A closure day (e.g. 31 Dec) is skipped like a holiday."""
    config = CalendarConfig(closure_days=(date(2026, 12, 31),))
    cal = BusinessCalendar(config)
    assert not cal.is_working_day(date(2026, 12, 31))
    # Wed 30 Dec 12:00: 5 h + (31 Dec closed, 1 Jan holiday, weekend) Mon 9 + Tue 9 + Wed 4.
    assert cal.deadline(at(2026, 12, 30, 12), emergency=False) == at(2027, 1, 6, 12)
    plain = BusinessCalendar(CalendarConfig())
    assert plain.is_working_day(date(2026, 12, 31))
    # 5 h + Thu 31 Dec 9 + Mon 9 + Tue 4.
    assert plain.deadline(at(2026, 12, 30, 12), emergency=False) == at(2027, 1, 5, 12)


def test_working_days(cal: BusinessCalendar) -> None:
    """Weekends and Czech public holidays are not working days."""
    assert cal.is_working_day(date(2026, 11, 20))  # Friday
    assert not cal.is_working_day(date(2026, 11, 21))  # Saturday
    assert not cal.is_working_day(date(2026, 11, 22))  # Sunday
    assert not cal.is_working_day(date(2026, 11, 17))  # Struggle for Freedom Day (Tuesday)
    assert not cal.is_working_day(date(2026, 12, 24))
    assert not cal.is_working_day(date(2027, 3, 26))  # Good Friday
    assert not cal.is_working_day(date(2027, 3, 29))  # Easter Monday


@pytest.mark.parametrize(
    ("received", "opening", "is_open"),
    [
        (at(2026, 11, 25, 7, 59), at(2026, 11, 25, 8), False),
        (at(2026, 11, 25, 8, 0), at(2026, 11, 25, 8), True),
        (at(2026, 11, 25, 16, 59), at(2026, 11, 25, 16, 59), True),
        (at(2026, 11, 25, 17, 0), at(2026, 11, 26, 8), False),
        (at(2026, 11, 25, 17, 1), at(2026, 11, 26, 8), False),
        (at(2026, 11, 27, 17, 0), at(2026, 11, 30, 8), False),  # Friday close → Monday
    ],
)
def test_opening_boundaries(
    cal: BusinessCalendar, received: datetime, opening: datetime, is_open: bool
) -> None:
    """Open on [08:00, 17:00): 08:00 is open, 17:00 is closed."""
    assert cal.is_open(received) is is_open
    assert cal.next_opening(received) == opening


@pytest.mark.parametrize(
    ("received", "due"),
    [
        (at(2026, 11, 25, 7, 59), at(2026, 11, 27, 17)),  # counted from 08:00 → Fri 17:00
        (at(2026, 11, 25, 8, 0), at(2026, 11, 27, 17)),
        (at(2026, 11, 25, 17, 0), at(2026, 11, 30, 17)),  # counted from Thu 08:00
        (at(2026, 11, 25, 17, 1), at(2026, 11, 30, 17)),
    ],
)
def test_deadline_at_boundaries(cal: BusinessCalendar, received: datetime, due: datetime) -> None:
    """Receipt at 07:59/08:00/17:00/17:01; 27 h from an opening ends at a closing, not 08:00."""
    assert cal.deadline(received, emergency=False) == due


def test_dst_end_weekend_counts_wall_clock_hours(cal: BusinessCalendar) -> None:
    """Clocks go back on Sun 25 Oct 2026; the deadline keeps the local wall-clock time."""
    # Fri 23 Oct 16:00 CEST: 1 h + Mon 9 + Tue 9 + (Wed 28 Oct holiday) + Thu 8 → Thu 16:00 CET.
    received = datetime(2026, 10, 23, 14, 0, tzinfo=timezone.utc)  # 16:00 CEST
    due = cal.deadline(received, emergency=False)
    assert due == at(2026, 10, 29, 16)
    assert due.utcoffset() == timedelta(hours=1)
    assert due.astimezone(timezone.utc) == datetime(2026, 10, 29, 15, 0, tzinfo=timezone.utc)


def test_dst_start_weekend_counts_wall_clock_hours(cal: BusinessCalendar) -> None:
    """Clocks go forward on Sun 29 Mar 2026; Fri 16:00 CET is due Wed 16:00 CEST."""
    due = cal.deadline(at(2026, 3, 27, 16), emergency=False)
    assert due == at(2026, 4, 1, 16)
    assert due.utcoffset() == timedelta(hours=2)
    assert cal.working_hours_between(at(2026, 3, 27, 16), due) == pytest.approx(27.0)


def test_inputs_in_other_zones_are_converted(cal: BusinessCalendar) -> None:
    """An instant given in UTC is judged by Prague opening hours."""
    assert cal.is_open(datetime(2026, 11, 25, 7, 0, tzinfo=timezone.utc))  # 08:00 CET
    assert not cal.is_open(datetime(2026, 11, 25, 6, 59, tzinfo=timezone.utc))
    assert cal.next_opening(datetime(2026, 11, 25, 16, 0, tzinfo=timezone.utc)) == at(
        2026, 11, 26, 8
    )


def test_naive_datetimes_are_refused(cal: BusinessCalendar) -> None:
    """A naive datetime is ambiguous and raises ValueError."""
    with pytest.raises(ValueError):
        cal.is_open(datetime(2026, 11, 25, 10))
    with pytest.raises(ValueError):
        cal.add_working_hours(at(2026, 11, 25, 10), -1)


def test_working_hours_between(cal: BusinessCalendar) -> None:
    """Only hours inside opening hours of working days count."""
    assert cal.working_hours_between(at(2026, 11, 20, 16), at(2026, 11, 25, 16)) == 27.0
    assert cal.working_hours_between(at(2026, 11, 21, 0), at(2026, 11, 23, 0)) == 0.0
    assert cal.working_hours_between(at(2026, 11, 25, 6), at(2026, 11, 25, 20)) == 9.0
    assert cal.working_hours_between(at(2026, 11, 25, 16), at(2026, 11, 20, 16)) == -18.0 - 9.0


def test_zero_hours_is_next_opening(cal: BusinessCalendar) -> None:
    """Adding nothing yields the next opening."""
    assert cal.add_working_hours(at(2026, 11, 28, 9), 0) == at(2026, 11, 30, 8)
    assert cal.add_working_hours(at(2026, 11, 25, 9, 30), 0) == at(2026, 11, 25, 9, 30)


_instants = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(PRAGUE)
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(start=_instants, minutes=st.integers(min_value=0, max_value=200 * 60))
def test_working_hours_between_round_trips_add_working_hours(
    cal: BusinessCalendar, start: datetime, minutes: int
) -> None:
    """working_hours_between(s, add_working_hours(s, h)) == h, and results are open or closing."""
    hours = minutes / 60
    end = cal.add_working_hours(start, hours)
    assert end >= start or hours == 0
    assert cal.working_hours_between(start, end) == pytest.approx(hours, abs=1e-6)
    wall = end.astimezone(PRAGUE)
    assert cal.is_open(end) or (
        wall.time() == cal.closes and cal.is_working_day(wall.date())
    )
    assert end.astimezone(PRAGUE).replace(tzinfo=None) == end.replace(tzinfo=None)
