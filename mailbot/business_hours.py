"""Business calendar: working days, opening hours and ticket deadlines (pure, no I/O).

Working time is measured on the *wall clock* of the configured zone (Europe/Prague): a working
day always has ``closes - opens`` working hours, also on the Sundays when DST starts or ends,
and 27 working hours from Friday 16:00 end on Wednesday 16:00 local time whatever the UTC
offsets in between. Callers pass and receive aware datetimes; results are in the configured
zone.

A working day is Monday–Friday that is neither a public holiday of ``holidays_country`` (the
``holidays`` package, through :mod:`mailbot.public_holidays`) nor one of the configured
``closure_days``. The day is open on
``[opens, closes)``: a message received at 17:00 counts from the next opening, while a
deadline that falls exactly at 17:00 stays at 17:00 and is not moved to the next morning.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from mailbot import public_holidays
from mailbot.config import CalendarConfig

__all__ = ["BusinessCalendar"]

# Guards the day-by-day search: no calendar has this many non-working days in a row.
_MAX_CLOSED_DAYS = 3660


class BusinessCalendar:
    """Working days and hours of the support desk, built once from :class:`CalendarConfig`."""

    def __init__(self, config: CalendarConfig) -> None:
        """Raises: ValueError: ``closes`` is not after ``opens``."""
        self._zone: ZoneInfo = config.zone
        self._opens: time = config.open_time
        self._closes: time = config.close_time
        if self._closes <= self._opens:
            raise ValueError(
                f"calendar closes ({config.closes}) must be after it opens ({config.opens})"
            )
        self._day_length = datetime.combine(date.min, self._closes) - datetime.combine(
            date.min, self._opens
        )
        self._country = config.holidays_country
        self._closure_days = frozenset(config.closure_days)
        self._ticket_hours = config.ticket_hours
        self._emergency_hours = config.emergency_hours
        self._holidays_by_year: dict[int, frozenset[date]] = {}

    # -- public API -----------------------------------------------------------------------

    @property
    def zone(self) -> ZoneInfo:
        return self._zone

    @property
    def opens(self) -> time:
        return self._opens

    @property
    def closes(self) -> time:
        return self._closes

    @property
    def hours_per_day(self) -> float:
        """Working hours in one working day (9.0 for 8:00–17:00)."""
        return self._day_length / timedelta(hours=1)

    def is_working_day(self, d: date) -> bool:
        """True for Monday–Friday that is no public holiday and no configured closure day."""
        if d.weekday() >= 5 or d in self._closure_days:
            return False
        return d not in self._holidays(d.year)

    def is_open(self, t: datetime) -> bool:
        """True when `t` falls within opening hours ``[opens, closes)`` of a working day."""
        wall = self._to_wall(t)
        return self.is_working_day(wall.date()) and self._opens <= wall.time() < self._closes

    def next_opening(self, t: datetime) -> datetime:
        """`t` itself (in the configured zone) when open, else the start of the next opening."""
        return self._from_wall(self._next_open_wall(self._to_wall(t)))

    def add_working_hours(self, start: datetime, hours: float) -> datetime:
        """The instant `hours` working hours after `start`.

        Counting starts at `start` if open, else at the next opening. A result exactly at
        closing time stays at closing time.

        Raises:
            ValueError: `hours` is negative or `start` is naive.
        """
        if hours < 0:
            raise ValueError(f"hours must not be negative, got {hours}")
        remaining = timedelta(hours=hours)
        cur = self._next_open_wall(self._to_wall(start))
        for _ in range(_MAX_CLOSED_DAYS * 10):
            day_close = datetime.combine(cur.date(), self._closes)
            available = day_close - cur
            if remaining <= available:
                return self._from_wall(cur + remaining)
            remaining -= available
            cur = self._next_open_wall(day_close)
        raise ValueError(f"{hours} working hours is beyond the calendar's range")

    def subtract_working_hours(self, end: datetime, hours: float) -> datetime:
        """The working instant from which `hours` working hours remain until `end`: the
        latest such instant, so a span that begins exactly at a day's start is that day's
        opening, not the previous day's closing.

        Raises:
            ValueError: `hours` is negative or `end` is naive.
        """
        if hours < 0:
            raise ValueError(f"hours must not be negative, got {hours}")
        remaining = timedelta(hours=hours)
        cur = self._to_wall(end)
        for _ in range(_MAX_CLOSED_DAYS * 10):
            day = cur.date()
            if self.is_working_day(day):
                day_open = datetime.combine(day, self._opens)
                top = min(cur, datetime.combine(day, self._closes))
                if top > day_open:
                    available = top - day_open
                    if remaining <= available:
                        return self._from_wall(top - remaining)
                    remaining -= available
            cur = datetime.combine(day - timedelta(days=1), self._closes)
        raise ValueError(f"{hours} working hours is beyond the calendar's range")

    def working_hours_between(self, a: datetime, b: datetime) -> float:
        """Working hours from `a` to `b` (negative when `b` is before `a`)."""
        wa, wb = self._to_wall(a), self._to_wall(b)
        if wb < wa:
            return -self.working_hours_between(b, a)
        total = timedelta(0)
        day = wa.date()
        while day <= wb.date():
            if self.is_working_day(day):
                lo = max(wa, datetime.combine(day, self._opens))
                hi = min(wb, datetime.combine(day, self._closes))
                if hi > lo:
                    total += hi - lo
            day += timedelta(days=1)
        return total / timedelta(hours=1)

    def deadline(self, received: datetime, emergency: bool) -> datetime:
        """When a ticket received at `received` is due: ``ticket_hours`` or ``emergency_hours``
        working hours later."""
        hours = self._emergency_hours if emergency else self._ticket_hours
        return self.add_working_hours(received, hours)

    # -- internals ------------------------------------------------------------------------

    def _holidays(self, year: int) -> frozenset[date]:
        cached = self._holidays_by_year.get(year)
        if cached is None:
            cached = public_holidays.dates(self._country, year)
            self._holidays_by_year[year] = cached
        return cached

    def _to_wall(self, t: datetime) -> datetime:
        """Naive wall-clock time of aware `t` in the configured zone.

        Raises:
            ValueError: `t` is naive.
        """
        if t.tzinfo is None or t.utcoffset() is None:
            raise ValueError(f"expected an aware datetime, got naive {t.isoformat()}")
        return t.astimezone(self._zone).replace(tzinfo=None)

    def _from_wall(self, wall: datetime) -> datetime:
        # fold=0: the earlier of an ambiguous wall time (only matters if hours span 2:00–3:00).
        return wall.replace(tzinfo=self._zone)

    def _next_open_wall(self, wall: datetime) -> datetime:
        day = wall.date()
        if self.is_working_day(day):
            if wall.time() < self._opens:
                return datetime.combine(day, self._opens)
            if wall.time() < self._closes:
                return wall
        for _ in range(_MAX_CLOSED_DAYS):
            day += timedelta(days=1)
            if self.is_working_day(day):
                return datetime.combine(day, self._opens)
        raise ValueError(f"no working day within {_MAX_CLOSED_DAYS} days after {day}")
