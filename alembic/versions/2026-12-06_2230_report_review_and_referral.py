"""report review and referral

Reports gain their place (``area``: the commune, else the cercle, from the coded answers,
backfilled here), whether text was typed (``had_text``: its text cleared afterwards means
erased), the redacted text, an assignee and ``updated_at``. New tables: ``report_event``
(a report's history and notes), ``partner`` (who reports are referred to) and ``referral``
(the durable queue of referrals).

Revision ID: c13a0b0c0005
Revises: c12a0b0c0004
Create Date: 2026-12-08 09:00:00
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = 'c13a0b0c0005'
down_revision: str | None = 'c12a0b0c0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OTHER = 'other'


def _area(answers: str) -> str | None:
    """As gateway.dialogue.ussd.area_of: the commune, else the cercle, else None."""
    try:
        coded = json.loads(answers)
    except ValueError:
        return None
    if not isinstance(coded, dict):
        return None
    commune, cercle = coded.get('commune'), coded.get('cercle')
    if isinstance(commune, str) and commune != OTHER:
        return commune
    return cercle if isinstance(cercle, str) and cercle != OTHER else None


def upgrade() -> None:
    with op.batch_alter_table('report', schema=None) as batch_op:
        batch_op.add_column(sa.Column('area', sqlmodel.sql.sqltypes.AutoString(length=64),
                                      nullable=True))
        batch_op.add_column(sa.Column('had_text', sa.Boolean(), server_default=sa.false(),
                                      nullable=False))
        batch_op.add_column(sa.Column('redacted_text', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('assignee_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(),
                                      nullable=True))
        batch_op.create_foreign_key('fk_report_assignee_id_account', 'account',
                                    ['assignee_id'], ['id'])
        batch_op.create_index('ix_report_area_id', ['area', 'id'], unique=False)

    report = sa.table('report', sa.column('id', sa.Integer()), sa.column('answers', sa.Text()),
                      sa.column('text', sa.Text()), sa.column('area', sa.String()),
                      sa.column('had_text', sa.Boolean()))
    conn = op.get_bind()
    conn.execute(report.update().where(report.c.text.is_not(None)).values(had_text=True))
    last = 0
    while True:
        rows = conn.execute(sa.select(report.c.id, report.c.answers)
                            .where(report.c.id > last).order_by(report.c.id).limit(1000)).all()
        if not rows:
            break
        for row in rows:
            area = _area(row.answers)
            if area is not None:
                conn.execute(report.update().where(report.c.id == row.id).values(area=area))
        last = rows[-1].id

    op.create_table('report_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('report_id', sa.Integer(), nullable=False),
    sa.Column('at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('actor', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('action', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('from_status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    sa.Column('to_status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    sa.Column('ref', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['report_id'], ['report.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('report_event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_report_event_report_id'), ['report_id'],
                              unique=False)

    op.create_table('partner',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('email', sqlmodel.sql.sqltypes.AutoString(length=254), nullable=True),
    sa.Column('webhook_url', sa.Text(), nullable=True),
    sa.Column('secret', sa.Text(), nullable=True),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )

    op.create_table('referral',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('report_id', sa.Integer(), nullable=False),
    sa.Column('partner_id', sa.Integer(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('lease_owner', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('lease_until', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('last_error', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('delivered_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], ),
    sa.ForeignKeyConstraint(['report_id'], ['report.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('report_id', 'partner_id')
    )
    with op.batch_alter_table('referral', schema=None) as batch_op:
        batch_op.create_index('ix_referral_due', ['status', 'next_attempt_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('referral', schema=None) as batch_op:
        batch_op.drop_index('ix_referral_due')
    op.drop_table('referral')
    op.drop_table('partner')
    with op.batch_alter_table('report_event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_report_event_report_id'))
    op.drop_table('report_event')
    with op.batch_alter_table('report', schema=None) as batch_op:
        batch_op.drop_index('ix_report_area_id')
        batch_op.drop_constraint('fk_report_assignee_id_account', type_='foreignkey')
        batch_op.drop_column('updated_at')
        batch_op.drop_column('assignee_id')
        batch_op.drop_column('redacted_text')
        batch_op.drop_column('had_text')
        batch_op.drop_column('area')
