"""inbound_raw: an inbound message's raw bytes in a table of their own, written once

SQLite rewrites a whole row, its overflow pages included, on every UPDATE: each claim and
decision of a message wrote its raw bytes to the log again (5,000 mails of 4 MB: 101 MB of
WAL). The bytes move here; a message whose bytes retention dropped (b"") gets no row.

Revision ID: 0014
Revises: 0013
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'inbound_raw',
        sa.Column('inbound_id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('raw', sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(['inbound_id'], ['inbound_messages.id']),
        sa.PrimaryKeyConstraint('inbound_id'),
    )
    op.execute("INSERT INTO inbound_raw (inbound_id, raw) "
               "SELECT id, raw FROM inbound_messages WHERE length(raw) > 0")
    # Not batch mode: SQLite (>= 3.35) and PostgreSQL drop the column in place; recreating
    # inbound_messages would break the foreign keys of the rows that refer to it.
    op.drop_column('inbound_messages', 'raw')


def downgrade() -> None:
    # Back as a nullable column (making it NOT NULL again would recreate the table on SQLite).
    op.add_column('inbound_messages', sa.Column('raw', sa.LargeBinary(), nullable=True))
    op.get_bind().execute(
        sa.text("UPDATE inbound_messages SET raw = coalesce((SELECT r.raw FROM inbound_raw r "
                "WHERE r.inbound_id = inbound_messages.id), :empty)"), {"empty": b""})
    op.drop_table('inbound_raw')
