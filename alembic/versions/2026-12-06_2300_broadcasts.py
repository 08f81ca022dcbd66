"""broadcasts: the broadcast table; outbox rows indexed by broadcast and status, and by
status and validity

A broadcast's counts are a grouped count of its outbox rows by status, and the expansion
job asks whether any of them is still queued: both read the new index on
(broadcast_id, status), which replaces the one on broadcast_id alone. The worker marks
queued messages past their validity every few seconds: with a broadcast's hundred thousand
rows queued, that read every one of them (on SQLite, holding the write lock a USSD hop
waits for); (status, valid_until) finds only those past it.

Revision ID: b11b0a0c0002
Revises: c13a0b0c0005
Create Date: 2026-12-06 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = 'b11b0a0c0002'
down_revision: str | None = 'c13a0b0c0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('broadcast',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('title', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('messages', sa.Text(), nullable=False),
    sa.Column('texts', sa.Text(), nullable=False),
    sa.Column('audience', sa.Text(), nullable=False),
    sa.Column('target', sa.Text(), nullable=False),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('idempotency_key', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('request_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('send_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('valid_until', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('expected', sa.Integer(), nullable=False),
    sa.Column('cursor', sa.Integer(), nullable=False),
    sa.Column('expanded', sa.Integer(), nullable=False),
    sa.Column('expanded_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('created_by', 'idempotency_key'),
    )
    with op.batch_alter_table('broadcast', schema=None) as batch_op:
        batch_op.create_index('ix_broadcast_status', ['status', 'send_at'], unique=False)
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_broadcast_id')
        batch_op.create_index('ix_outbox_broadcast', ['broadcast_id', 'status'], unique=False)
        batch_op.create_index('ix_outbox_expiry', ['status', 'valid_until'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_expiry')
        batch_op.drop_index('ix_outbox_broadcast')
        batch_op.create_index('ix_outbox_broadcast_id', ['broadcast_id'], unique=False)
    with op.batch_alter_table('broadcast', schema=None) as batch_op:
        batch_op.drop_index('ix_broadcast_status')
    op.drop_table('broadcast')
