"""ix_inbound_claim: a claim chooses waiting mail from the index, without reading its rows

Revision ID: 0013
Revises: 0012
"""
from __future__ import annotations

from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_inbound_claim', 'inbound_messages',
                    ['state', 'lease_until', 'received_at', 'size'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_inbound_claim', table_name='inbound_messages')
