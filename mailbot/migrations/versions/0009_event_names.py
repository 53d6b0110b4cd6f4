"""ticket events of staff commands named like those of the CLI (closed, waiting, assigned)

Revision ID: 0009
Revises: 0008
"""
from __future__ import annotations

from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

RENAMED = {"close": "closed", "wait": "waiting", "assign": "assigned"}


def upgrade() -> None:
    for old, new in RENAMED.items():
        op.execute(f"UPDATE ticket_events SET kind = '{new}' WHERE kind = '{old}'")


def downgrade() -> None:
    for old, new in RENAMED.items():
        op.execute(f"UPDATE ticket_events SET kind = '{old}' WHERE kind = '{new}' "
                   "AND inbound_id IS NOT NULL")
