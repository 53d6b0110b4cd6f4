"""The store's column types: what they write is what SQLAlchemy's own types would."""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import DateTime, create_engine, insert, select
from sqlalchemy.dialects import sqlite

from mailbot.store.models import Base, UTCDateTime


def test_sqlite_datetime_text_is_sqlalchemys_own() -> None:
    """UTCDateTime's one-step SQLite writer gives the very text of SQLAlchemy's DATETIME
    (offsets, microseconds or none, years 1-9999), so old rows and new compare and sort."""
    dialect = sqlite.dialect()
    own = DateTime().dialect_impl(dialect).bind_processor(dialect)
    fast = UTCDateTime().bind_processor(dialect)
    assert own is not None and fast is not None
    rng = random.Random(5)
    checked = 0
    while checked < 5000:
        zone = timezone(timedelta(minutes=rng.randint(-14 * 60, 14 * 60)))
        value = datetime(rng.randint(2, 9998), rng.randint(1, 12), rng.randint(1, 28),
                         rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59),
                         rng.choice([0, rng.randint(0, 999_999)]), tzinfo=zone)
        assert fast(value) == own(value.astimezone(UTC).replace(tzinfo=None)), value
        checked += 1
    assert fast(datetime(2026, 11, 25, 9, tzinfo=UTC)) == "2026-11-25 09:00:00.000000"
    assert fast(None) is None
    with pytest.raises(ValueError, match="naive"):
        fast(datetime(2026, 11, 25, 9))


def test_sqlite_datetimes_round_trip_as_aware_utc(tmp_path) -> None:
    """Written through a real SQLite database and read back: the same instant, in UTC."""
    engine = create_engine(f"sqlite:///{tmp_path / 't.db'}")
    Base.metadata.create_all(engine)
    from mailbot.store.models import LicenseRow

    prague = timezone(timedelta(hours=1))
    when = datetime(2026, 11, 25, 10, 0, 0, 123, tzinfo=prague)
    with engine.begin() as conn:
        conn.execute(insert(LicenseRow.__table__).values(
            license="1234-5678", customer="c", email_domain="example.org",
            activated_on=when.date(), support_tier="START", updated_at=when))
        back = conn.execute(select(LicenseRow.__table__.c.updated_at)).scalar_one()
    assert back == when and back.tzinfo is UTC
    raw = sqlite3.connect(tmp_path / "t.db").execute("select updated_at from licenses").fetchone()
    assert raw == ("2026-11-25 09:00:00.000123",)
    engine.dispose()
