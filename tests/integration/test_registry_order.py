"""The stored registry keeps the order of the import (the first registered candidate in it
wins), on both engines; a later import sets the order anew."""

from __future__ import annotations

from datetime import date

from mailbot.domain import LicenseRecord, Tier
from mailbot.registry import DictRegistry
from mailbot.store import Store


def rec(number: str) -> LicenseRecord:
    return LicenseRecord(number, "Firma", "firma.example", date(2025, 1, 1), Tier.HOTLINE, None)


def test_license_snapshot_keeps_the_import_order(store: Store) -> None:
    numbers = ["90000001", "10000002", "50000003"]  # not sorted: the file's order counts
    store.upsert_licenses([rec(n) for n in numbers])
    assert list(store.license_snapshot()) == numbers
    registry = DictRegistry(store.license_snapshot())
    assert [registry.rank(n) for n in numbers] == [0, 1, 2]
    store.upsert_licenses([rec(n) for n in reversed(numbers)])
    assert list(store.license_snapshot()) == list(reversed(numbers))
