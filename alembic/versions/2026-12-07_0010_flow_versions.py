"""flow versions

Flows and their own catalog entries stored as numbered versions (``flow_version``), each
publication of one (``flow_publication``, numbered by generation) and the latest
generation (``flow_generation``, one row), which every process polls to learn of a
publication. The content location's files become version 1 at the next start.

Revision ID: f14a00000001
Revises: live00000001
Create Date: 2026-12-07 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = 'f14a00000001'
down_revision: str | None = 'live00000001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'flow_version',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('flow', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('definition', sa.Text(), nullable=False),
        sa.Column('messages', sa.Text(), nullable=False),
        sa.Column('digest', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('flow', 'version'),
    )
    op.create_table(
        'flow_publication',
        sa.Column('generation', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('flow', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('published_by', sqlmodel.sql.sqltypes.AutoString(length=64),
                  nullable=True),
        sa.Column('published_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('generation'),
    )
    op.create_index('ix_flow_publication_flow', 'flow_publication', ['flow', 'generation'])
    op.create_table(
        'flow_generation',
        sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('generation', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.execute("INSERT INTO flow_generation (id, generation) VALUES (1, 0)")


def downgrade() -> None:
    op.drop_table('flow_generation')
    op.drop_index('ix_flow_publication_flow', table_name='flow_publication')
    op.drop_table('flow_publication')
    op.drop_table('flow_version')
