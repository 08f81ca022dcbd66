"""route throttle in the rate bucket

A provider answering 429 slows the whole route, for every worker: the rate bucket keeps
when the route may send again (the provider's ``Retry-After``) and the lowered rate it
climbs back from (additive increase, multiplicative decrease).

Revision ID: c17b0d9e0002
Revises: 8e4b1c7d2a90
Create Date: 2026-12-07 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = 'c17b0d9e0002'
down_revision: str | None = '8e4b1c7d2a90'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('rate_bucket', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rate', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('throttled_at', sqlmodel.sql.sqltypes.UTCDateTime(),
                                      nullable=True))
        batch_op.add_column(sa.Column('paused_until', sqlmodel.sql.sqltypes.UTCDateTime(),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('rate_bucket', schema=None) as batch_op:
        batch_op.drop_column('paused_until')
        batch_op.drop_column('throttled_at')
        batch_op.drop_column('rate')
