"""mailbot.public_holidays: the `holidays` package's answers, loading one country alone."""

from __future__ import annotations

import subprocess
import sys

import holidays
import pytest

from mailbot import public_holidays


@pytest.mark.parametrize("code", ["CZ", "CZE", "SK", "DE", "AT", "PL", "GB", "UK", "US",
                                  "AS", "FR", "IL", "JP"])
def test_the_same_days_as_country_holidays(code: str) -> None:
    """Each country's days, from its own module, are country_holidays' days (AS: a module
    that imports another country's)."""
    for year in (2025, 2026, 2027, 2030):
        assert public_holidays.dates(code, year) == frozenset(
            holidays.country_holidays(code, years=year).keys()), (code, year)


def test_the_same_codes_as_list_supported_countries() -> None:
    codes = set(holidays.list_supported_countries())
    assert all(public_holidays.supported(c) for c in codes)
    assert not any(public_holidays.supported(c) for c in ("XX", "cz", "", "CZECHIA"))


def test_an_unknown_code_goes_through_country_holidays() -> None:
    with pytest.raises(NotImplementedError):
        public_holidays.dates("XX", 2026)


def test_a_czech_calendar_loads_one_country() -> None:
    """A process that checks the config and computes Czech working days imports the Czech
    module of the package, not the ~300 of every country (about 14 MB per process)."""
    code = ("import sys\n"
            "from datetime import date\n"
            "from mailbot.config import CalendarConfig\n"
            "from mailbot.business_hours import BusinessCalendar\n"
            "cal = BusinessCalendar(CalendarConfig(holidays_country='CZ'))\n"
            "assert not cal.is_working_day(date(2026, 12, 24))\n"
            "print(sum(m.split('.')[0] == 'holidays' for m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert int(out) < 80  # the package's calendars and groups; all countries: ~390
