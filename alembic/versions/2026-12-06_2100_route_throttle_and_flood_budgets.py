"""route throttle and flood budgets

A provider answering 429 slows the whole route, for every worker: the rate bucket keeps
when the route may send again (the provider's ``Retry-After``) and the lowered rate it
climbs back from (additive increase, multiplicative decrease).

A contact's flood limits (replies sent, reports kept, per hour and per day) count the rows
of ``budget_use``, one per reply or report, kept a day; an erasure does not reset them.

Revision ID: c17b0d9e0002
Revises: b11a0c0c0001
Create Date: 2026-12-07 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = 'c17b0d9e0002'
down_revision: str | None = 'b11a0c0c0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('rate_bucket', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rate', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('throttled_at', sqlmodel.sql.sqltypes.UTCDateTime(),
                                      nullable=True))
        batch_op.add_column(sa.Column('paused_until', sqlmodel.sql.sqltypes.UTCDateTime(),
                                      nullable=True))
    op.create_table('budget_use',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('pseudonym', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('what', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
    sa.Column('at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('budget_use', schema=None) as batch_op:
        batch_op.create_index('ix_budget_use_pseudonym', ['pseudonym', 'what', 'at'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_budget_use_at'), ['at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('budget_use', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_budget_use_at'))
        batch_op.drop_index('ix_budget_use_pseudonym')
    op.drop_table('budget_use')
    with op.batch_alter_table('rate_bucket', schema=None) as batch_op:
        batch_op.drop_column('paused_until')
        batch_op.drop_column('throttled_at')
        batch_op.drop_column('rate')
