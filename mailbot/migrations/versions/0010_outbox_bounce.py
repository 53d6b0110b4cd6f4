"""outbox.bounce: "hard" or "soft" for a bounced message (was a marker in last_error)

Revision ID: 0010
Revises: 0009
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('bounce', sa.String(length=10), nullable=True))
    # Bounced before kinds were told apart: counted as hard, as they were then.
    op.execute("UPDATE outbox SET bounce = CASE WHEN last_error = 'soft bounce' THEN 'soft' "
               "ELSE 'hard' END WHERE state = 'bounced'")


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_column('bounce')
