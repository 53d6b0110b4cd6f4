"""outbox priority (service mail before bulk mail), recurring campaign schedules

Revision ID: 0007
Revises: 0006
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('priority', sa.Integer(), nullable=False,
                                      server_default='0'))
        batch_op.drop_index('ix_outbox_due')
        batch_op.create_index('ix_outbox_due', ['state', 'priority', 'next_attempt_at'],
                              unique=False)
    op.execute("UPDATE outbox SET priority = 1 WHERE kind = 'news'")
    with op.batch_alter_table('scheduled_campaigns', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cron', sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('scheduled_campaigns', schema=None) as batch_op:
        batch_op.drop_column('cron')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_due')
        batch_op.create_index('ix_outbox_due', ['state', 'next_attempt_at'], unique=False)
        batch_op.drop_column('priority')
