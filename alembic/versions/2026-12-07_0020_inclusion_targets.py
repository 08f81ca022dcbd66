"""inclusion targets

``inclusion_target``: per poll and cercle, the share of respondents (whole percent) an
operator wants to be women, aged 15-24, displaced (gateway/operators/inclusion.py).

Revision ID: d16e5a000001
Revises: f14a00000001
Create Date: 2026-12-06 23:39:38.299931
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = 'd16e5a000001'
down_revision: str | None = 'f14a00000001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('inclusion_target',
    sa.Column('poll', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('cercle', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('women', sa.Integer(), nullable=True),
    sa.Column('young', sa.Integer(), nullable=True),
    sa.Column('displaced', sa.Integer(), nullable=True),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.PrimaryKeyConstraint('poll', 'cercle')
    )


def downgrade() -> None:
    op.drop_table('inclusion_target')
