"""suppressions (bounces), scheduled campaigns, outbox recipient

Revision ID: 0006
Revises: 0005
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('suppressions',
    sa.Column('address', sa.String(length=320), nullable=False),
    sa.Column('reason', sa.String(length=40), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('address')
    )
    op.create_table('scheduled_campaigns',
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('due_at', sa.DateTime(), nullable=False),
    sa.Column('queued_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('name')
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('recipient', sa.String(length=320), nullable=True))
        batch_op.create_index('ix_outbox_recipient', ['recipient', 'kind'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_recipient')
        batch_op.drop_column('recipient')
    op.drop_table('scheduled_campaigns')
    op.drop_table('suppressions')
