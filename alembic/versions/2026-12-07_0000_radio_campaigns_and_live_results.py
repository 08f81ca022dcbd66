"""radio campaigns and live results

``campaign`` (a radio show's poll, its USSD service code and neutral SMS keyword, its
window and cercles) and ``campaign_host`` (the radio accounts that host it).

Live results must learn that figures changed, across replicas, without polling the
answers: every change to the tally goes through ``poll_tally_change`` (written by the
poll_answer triggers), so a trigger there signals it. On SQLite it bumps the counter row
``poll_changes`` in the answer's own transaction (writers are serialised anyway, so a
shared row costs no waiting); a process with stream listeners reads that one row about
once a second. On PostgreSQL, where concurrent votes must not queue on a shared row, a
statement trigger sends ``NOTIFY dannaya_poll_results`` (delivered at commit, one per
transaction), which a process with listeners LISTENs for.

Revision ID: live00000001
Revises: b11b0a0c0002
Create Date: 2026-12-07 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = 'live00000001'
down_revision: str | None = 'b11b0a0c0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANNEL = "dannaya_poll_results"  # gateway.operators.live.CHANNEL
COUNTER = "poll_changes"  # gateway.operators.live.COUNTER

SQLITE_TRIGGER = f"""CREATE TRIGGER poll_changes_bump AFTER INSERT ON poll_tally_change BEGIN
    INSERT INTO counter (name, value, updated_at) VALUES ('{COUNTER}', 1, CURRENT_TIMESTAMP)
    ON CONFLICT (name) DO UPDATE SET value = value + 1;
END"""

POSTGRES_FUNCTION = f"""CREATE FUNCTION poll_changes_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', '');
    RETURN NULL;
END
$$"""
POSTGRES_TRIGGER = ("CREATE TRIGGER poll_changes_notify AFTER INSERT ON poll_tally_change "
                    "FOR EACH STATEMENT EXECUTE FUNCTION poll_changes_notify()")


def upgrade() -> None:
    op.create_table('campaign',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('station', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('poll', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('question', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('keyword', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('keyword_folded', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('service_code', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('cercles', sa.Text(), nullable=False),
    sa.Column('starts_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('ends_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_campaign_keyword_folded', 'campaign', ['keyword_folded'],
                    unique=False)
    op.create_index('ix_campaign_service_code', 'campaign', ['service_code'], unique=False)
    op.create_table('campaign_host',
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], ),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], ),
    sa.PrimaryKeyConstraint('campaign_id', 'account_id')
    )
    op.create_index(op.f('ix_campaign_host_account_id'), 'campaign_host', ['account_id'],
                    unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(POSTGRES_FUNCTION)
        op.execute(POSTGRES_TRIGGER)
    else:
        op.execute(SQLITE_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("DROP TRIGGER poll_changes_notify ON poll_tally_change")
        op.execute("DROP FUNCTION poll_changes_notify()")
    else:
        op.execute("DROP TRIGGER poll_changes_bump")
    op.drop_index(op.f('ix_campaign_host_account_id'), table_name='campaign_host')
    op.drop_table('campaign_host')
    op.drop_index('ix_campaign_service_code', table_name='campaign')
    op.drop_index('ix_campaign_keyword_folded', table_name='campaign')
    op.drop_table('campaign')
