"""Reading the license registry CSV (`license,customer,email_domain,activated_on,
support_tier,max_version_date`). Pure: the CLI writes the result with `Store.upsert_licenses`.

A bad row is reported with its line number and skipped; the others are still imported.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TypeVar

from mailbot.domain import LicenseRecord, Tier

T = TypeVar("T")

COLUMNS = ("license", "customer", "email_domain", "activated_on", "support_tier", "max_version_date")


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def _date(value: str, column: str) -> date:
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{column}: expected a date YYYY-MM-DD, got {value!r}") from None


def parse_license_row(row: dict[str, str | None]) -> LicenseRecord:
    """One CSV row as a record.

    Raises:
        ValueError: naming the bad column.
    """
    number = re.sub(r"[\s-]", "", row.get("license") or "")
    if not re.fullmatch(r"\d{8}", number):
        raise ValueError(f"license: expected 8 digits, got {row.get('license')!r}")
    customer = (row.get("customer") or "").strip()
    if not customer:
        raise ValueError("customer: empty")
    domain = (row.get("email_domain") or "").strip().lower()
    if domain and not re.fullmatch(r"[a-z0-9.-]+\.[a-z0-9-]+", domain):
        raise ValueError(f"email_domain: expected a domain, got {domain!r}")
    tier_text = (row.get("support_tier") or "").strip().upper().replace(" ", "_")
    try:
        tier = Tier(tier_text)
    except ValueError:
        allowed = ", ".join(t.value for t in Tier)
        raise ValueError(f"support_tier: expected one of {allowed}, got {tier_text!r}") from None
    activated = _date(row.get("activated_on") or "", "activated_on")
    end_text = (row.get("max_version_date") or "").strip()
    end = _date(end_text, "max_version_date") if end_text else None
    if end is not None and end < activated:
        raise ValueError("max_version_date: before activated_on")
    return LicenseRecord(number, customer, domain, activated, tier, end)


def read_csv(text: str, required: Sequence[str], parse_row: Callable[[dict[str, str | None]], T],
             key: Callable[[T], str]) -> tuple[list[T], list[RowError]]:
    """Parse every row of a CSV text with `parse_row` (ValueError: a bad row, reported with
    its line number); a later row with the same `key` wins."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        return [], [RowError(1, f"missing column(s): {', '.join(missing)}")]
    found: dict[str, T] = {}
    errors: list[RowError] = []
    for row in reader:
        try:
            item = parse_row(row)
        except ValueError as exc:
            errors.append(RowError(reader.line_num, str(exc)))
            continue
        found[key(item)] = item
    return list(found.values()), errors


def read_license_csv(text: str) -> tuple[list[LicenseRecord], list[RowError]]:
    """All good rows and the errors of the bad ones (a later duplicate wins)."""
    return read_csv(text, COLUMNS, parse_license_row, lambda r: r.license)


def read_license_file(path: Path) -> tuple[list[LicenseRecord], list[RowError]]:
    return read_license_csv(path.read_text(encoding="utf-8-sig"))


class DictRegistry:
    """A registry snapshot held in memory (the classify seam `LicenseRegistry`)."""

    def __init__(self, records: dict[str, LicenseRecord]) -> None:
        self._records = records
        self._rank = {number: i for i, number in enumerate(records)}

    def get(self, number: str) -> LicenseRecord | None:
        return self._records.get(number)

    def rank(self, number: str) -> int:
        """The place of `number` in the registry's order (the dict's; unknown: last)."""
        return self._rank.get(number, len(self._rank))

    def __len__(self) -> int:
        return len(self._records)
