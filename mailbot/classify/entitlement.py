"""Whether a license entitles its holder to support at a given instant.

START runs from activation to `max_version_date` (six months after activation where that
is empty); the paid tiers HOTLINE, HOTLINE_PLUS and SPECIAL run to `max_version_date` or
without end; NONE never gives support. The end day counts whole, in Europe/Prague.
"""

from __future__ import annotations

import calendar
from datetime import date, datetime
from typing import NamedTuple
from zoneinfo import ZoneInfo

from mailbot.domain import LicenseRecord, Tier

PRAGUE = ZoneInfo("Europe/Prague")
START_MONTHS = 6
PAID_TIERS = frozenset((Tier.HOTLINE, Tier.HOTLINE_PLUS, Tier.SPECIAL))


class Entitlement(NamedTuple):
    """Support validity at one instant and the last day of support (None: open-ended)."""

    valid: bool
    ends_on: date | None


def add_months(day: date, months: int) -> date:
    """`day` moved by whole months, clamped to the end of a shorter month (31 Aug + 6 → 28 Feb)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def support_end(record: LicenseRecord) -> date | None:
    """The last day of support of `record` (None: no end; NONE tier: the day before activation)."""
    if record.tier is Tier.START:
        return record.max_version_date or add_months(record.activated_on, START_MONTHS)
    if record.tier in PAID_TIERS:
        return record.max_version_date
    return None


def entitlement_at(record: LicenseRecord, now: datetime, zone: ZoneInfo = PRAGUE) -> Entitlement:
    """Whether `record` gives support at the aware instant `now`, and until which day.

    Raises:
        ValueError: `now` is naive.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("entitlement_at needs an aware datetime")
    if record.tier is Tier.NONE:
        return Entitlement(False, None)
    today = now.astimezone(zone).date()
    end = support_end(record)
    valid = record.activated_on <= today and (end is None or today <= end)
    return Entitlement(valid, end)
