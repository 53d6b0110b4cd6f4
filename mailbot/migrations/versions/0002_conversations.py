"""conversations: ticket states and threading, auto-reply rate limit, bounces, settings

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 18:54:24.461081
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('settings',
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('value', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('auto_recipient', sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column('bounced_at', sa.DateTime(), nullable=True))
        batch_op.create_index('ix_outbox_auto', ['auto_recipient', 'created_at'], unique=False)

    with op.batch_alter_table('ticket_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('detail', sa.Text(), nullable=True))

    with op.batch_alter_table('inbound_messages', schema=None) as batch_op:
        batch_op.create_index('ix_inbound_message_id', ['message_id'], unique=False)

    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('assignee', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('closed_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('waiting_since', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('first_message_id', sa.String(length=998), nullable=True))
        batch_op.add_column(sa.Column('last_message_id', sa.String(length=998), nullable=True))
        batch_op.add_column(sa.Column('related_ticket', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('updated_at', sa.DateTime(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_column('updated_at')
        batch_op.drop_column('related_ticket')
        batch_op.drop_column('last_message_id')
        batch_op.drop_column('first_message_id')
        batch_op.drop_column('waiting_since')
        batch_op.drop_column('closed_at')
        batch_op.drop_column('assignee')

    with op.batch_alter_table('inbound_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_inbound_message_id')

    with op.batch_alter_table('ticket_events', schema=None) as batch_op:
        batch_op.drop_column('detail')

    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_auto')
        batch_op.drop_column('bounced_at')
        batch_op.drop_column('auto_recipient')

    op.drop_table('settings')
