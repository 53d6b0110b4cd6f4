"""Support entitlement of a license at an instant, by tier."""

from __future__ import annotations

from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from mailbot.classify.entitlement import add_months, entitlement_at
from mailbot.domain import LicenseRecord, Tier

PRAGUE = ZoneInfo("Europe/Prague")


def record(tier: Tier, activated: date, end: date | None) -> LicenseRecord:
    return LicenseRecord("12345678", "Firma", "firma.cz", activated, tier, end)


def at(y: int, m: int, d: int, hh: int = 12, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=PRAGUE)


def test_start_runs_to_max_version_date_inclusive() -> None:
    """START is valid on its last day and not the day after."""
    r = record(Tier.START, date(2026, 5, 20), date(2026, 11, 20))
    assert entitlement_at(r, at(2026, 11, 20, 23, 59)) == (True, date(2026, 11, 20))
    assert entitlement_at(r, at(2026, 11, 21, 0, 1)).valid is False


def test_start_without_end_gets_six_months() -> None:
    """An empty max_version_date gives START six months from activation."""
    r = record(Tier.START, date(2026, 3, 10), None)
    assert entitlement_at(r, at(2026, 9, 10)) == (True, date(2026, 9, 10))
    assert entitlement_at(r, at(2026, 9, 11)).valid is False


def test_six_months_clamps_to_month_end() -> None:
    """31 August plus six months is the last day of February."""
    assert add_months(date(2026, 8, 31), 6) == date(2027, 2, 28)
    assert add_months(date(2027, 8, 31), 6) == date(2028, 2, 29)


def test_start_not_before_activation() -> None:
    """START is not valid before its activation day."""
    r = record(Tier.START, date(2026, 12, 1), None)
    assert entitlement_at(r, at(2026, 11, 30)).valid is False


@pytest.mark.parametrize("tier", [Tier.HOTLINE, Tier.HOTLINE_PLUS, Tier.SPECIAL])
def test_paid_tiers_open_ended_or_to_their_date(tier: Tier) -> None:
    """Paid tiers run without end when the date is empty, else through their end day."""
    assert entitlement_at(record(tier, date(2021, 1, 1), None), at(2030, 1, 1)) == (True, None)
    dated = record(tier, date(2021, 1, 1), date(2026, 6, 30))
    assert entitlement_at(dated, at(2026, 6, 30, 23, 0)).valid is True
    assert entitlement_at(dated, at(2026, 7, 1, 0, 30)).valid is False


def test_none_tier_never_valid() -> None:
    """Tier NONE gives no support at all."""
    assert entitlement_at(record(Tier.NONE, date(2020, 1, 1), None), at(2026, 1, 1)).valid is False


def test_end_day_is_taken_in_prague() -> None:
    """23:30 UTC on the end day is already the next day in Prague, so support has ended."""
    r = record(Tier.HOTLINE, date(2020, 1, 1), date(2026, 6, 30))
    late_utc = datetime(2026, 6, 30, 22, 30, tzinfo=timezone.utc)  # 00:30 on 1 July in Prague
    assert entitlement_at(r, late_utc).valid is False
    assert entitlement_at(r, datetime(2026, 6, 30, 21, 30, tzinfo=timezone.utc)).valid is True


def test_naive_datetime_is_refused() -> None:
    """A naive instant is ambiguous and raises."""
    with pytest.raises(ValueError):
        entitlement_at(record(Tier.HOTLINE, date(2020, 1, 1), None), datetime(2026, 1, 1))
