"""License registry CSV: good rows imported, bad rows reported with their line numbers."""

from __future__ import annotations

from datetime import date

from mailbot.domain import Tier
from mailbot.registry import read_license_csv

HEADER = "license,customer,email_domain,activated_on,support_tier,max_version_date\n"


def test_good_rows_parse() -> None:
    """Dashes in numbers are dropped, empty end dates become None, tiers are enums."""
    records, errors = read_license_csv(
        HEADER
        + "4012-7733,Strojírny Hranice a.s.,strojirny-hranice.cz,2026-08-03,START,2027-02-03\n"
        + "90266154,Teplárna,teplarna-valassko.cz,2021-09-01,SPECIAL,\n"
    )
    assert errors == []
    assert records[0].license == "40127733"
    assert records[0].max_version_date == date(2027, 2, 3)
    assert records[1].tier is Tier.SPECIAL and records[1].max_version_date is None


def test_bad_rows_are_reported_and_the_rest_imported() -> None:
    """Each bad row names its line and column; good rows around it still import."""
    records, errors = read_license_csv(
        HEADER
        + "1234567,A,a.cz,2026-01-01,START,\n"  # line 2: 7 digits
        + "11112222,B,b.cz,2026-01-01,GOLD,\n"  # line 3: tier
        + "33334444,C,c.cz,01.01.2026,START,\n"  # line 4: date
        + "55556666,D,d.cz,2026-01-01,HOTLINE_PLUS,2027-01-01\n"
    )
    assert [r.license for r in records] == ["55556666"]
    assert [(e.line, e.message.split(":")[0]) for e in errors] == [
        (2, "license"),
        (3, "support_tier"),
        (4, "activated_on"),
    ]


def test_missing_column_is_one_error() -> None:
    """A file without the required header imports nothing and says which column is missing."""
    records, errors = read_license_csv("license,customer\n12345678,X\n")
    assert records == []
    assert "email_domain" in errors[0].message
