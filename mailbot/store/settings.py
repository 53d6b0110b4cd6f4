"""Settings and the license registry: small shared values (generated secrets) and the
registry's rows, read as a whole."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from mailbot.domain import LicenseRecord, Tier
from mailbot.store.base import StoreBase
from mailbot.store.models import LicenseRow, Setting, utcnow
from mailbot.store.values import value_of


# Asked before every batch the worker decides (built once).
_LICENSE_VERSION = select(func.count(), func.max(LicenseRow.updated_at))


class SettingsStore(StoreBase):
    """Secrets shared by every daemon, and the license registry."""

    def secret(self, name: str, size: int = 32) -> bytes:
        """A random secret shared by every daemon on this database, made on first use."""
        with self.session() as s:
            row = s.get(Setting, name)
            if row is not None:
                return bytes(row.value)
        value = secrets.token_bytes(size)
        try:
            with self.session() as s:
                s.add(Setting(name=name, value=value, created_at=utcnow()))
        except IntegrityError:  # another daemon made it first
            pass
        with self.session() as s:
            row = s.get(Setting, name)
            assert row is not None
            return bytes(row.value)

    def upsert_licenses(self, records: Sequence[LicenseRecord]) -> int:
        """Insert or update registry rows by license number; returns how many were written.
        The records' order is the registry's order (`license_snapshot` keeps it)."""
        now = utcnow()
        self._upsert(LicenseRow, "license", [
            {"license": r.license, "customer": r.customer, "email_domain": r.email_domain,
             "activated_on": r.activated_on, "support_tier": r.tier.value,
             "max_version_date": r.max_version_date, "updated_at": now, "position": i}
            for i, r in enumerate(records)])
        return len(records)

    def license_snapshot(self) -> dict[str, LicenseRecord]:
        """The whole registry as values (small: one row per customer license), in the
        registry's order (of the imports; rows never imported with an order come last)."""
        with self.session() as s:
            return {
                r.license: value_of(LicenseRecord, r, tier=Tier(r.support_tier))
                for r in s.scalars(select(LicenseRow).order_by(
                    LicenseRow.position.is_(None), LicenseRow.position, LicenseRow.license))
            }

    def license_version(self) -> tuple[int, datetime | None]:
        """Cheap change marker of the registry (row count, newest update)."""
        with self.reading() as c:
            n, newest = c.execute(_LICENSE_VERSION).one()
            return int(n), newest

