"""fold ussd hops into the session row

A hop used to write the session row and a ``ussd_hop`` row, and to rewrite an index on
(pseudonym, status, updated_at). Now the session row keeps its latest hops' screens in a
``history`` column and the resume lookup uses an index on the pseudonym alone, which a
hop never changes: a hop dirties one table page instead of four.

Revision ID: 5d0c3f9a61b2
Revises: ac850198ff77
Create Date: 2026-12-03 12:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '5d0c3f9a61b2'
down_revision: str | None = 'ac850198ff77'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Sessions live two days and a repeat of an older hop is rare: the old hop rows are
    # dropped rather than copied into the new column.
    op.drop_table('ussd_hop')
    with op.batch_alter_table('ussd_session', schema=None) as batch_op:
        batch_op.add_column(sa.Column('history', sa.Text(), server_default='', nullable=False))
        batch_op.drop_index('ix_ussd_session_resume')
        batch_op.create_index('ix_ussd_session_pseudonym', ['pseudonym'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('ussd_session', schema=None) as batch_op:
        batch_op.drop_index('ix_ussd_session_pseudonym')
        batch_op.create_index('ix_ussd_session_resume', ['pseudonym', 'status', 'updated_at'],
                              unique=False)
        batch_op.drop_column('history')
    op.create_table('ussd_hop',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('session_pk', sa.Integer(), nullable=False),
    sa.Column('text_mac', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('response', sa.Text(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['session_pk'], ['ussd_session.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('session_pk', 'text_mac')
    )
