"""Alembic migrations create exactly the schema the models describe, on both engines."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from mailbot import migrations
from mailbot.store import Base, Store


def test_migrated_schema_matches_models(store: Store) -> None:
    """After `upgrade`, autogenerate finds nothing to change (no model left unmigrated)."""
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_upgrade_is_idempotent(store: Store) -> None:
    """Running the upgrade again (every start does) changes nothing."""
    before = migrations.current(store.engine)
    migrations.upgrade(store.engine)
    assert migrations.current(store.engine) == before == "0008"
