"""outbox: a broadcast's messages keyed by contact id, not by pseudonym

A chunk of a broadcast inserts a few hundred outbox rows; their pseudonyms and their dedupe
keys (``broadcast:<id>:<pseudonym>``) are random, so each row wrote a random page of two
indexes, and a chunk held the writers' lock (that every USSD hop waits for on SQLite)
three times as long as the rows alone need. A broadcast's message now carries its
contact's id (``contact_id``), its dedupe key ends with that id, and the pseudonym index
covers only the other messages: what a chunk writes is in order.

Rows queued before: their contact id is filled in and their dedupe key rewritten, so a
broadcast queueing during the upgrade does not queue anyone twice.

Revision ID: a0b1c0e70001
Revises: d16e5a000001
Create Date: 2026-12-07 03:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'a0b1c0e70001'
down_revision: str | None = 'd16e5a000001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('contact_id', sa.Integer(), nullable=True))
        batch_op.drop_index('ix_outbox_pseudonym')
    op.execute(
        "UPDATE outbox SET contact_id = "
        "(SELECT contact.id FROM contact WHERE contact.pseudonym = outbox.pseudonym) "
        "WHERE broadcast_id IS NOT NULL")
    op.execute(
        "UPDATE outbox SET dedupe_key = "
        "'broadcast:' || CAST(broadcast_id AS VARCHAR) || ':' || CAST(contact_id AS VARCHAR) "
        "WHERE contact_id IS NOT NULL")
    op.create_index('ix_outbox_pseudonym', 'outbox', ['pseudonym'], unique=False,
                    sqlite_where=sa.text('contact_id IS NULL'),
                    postgresql_where=sa.text('contact_id IS NULL'))
    op.create_index('ix_outbox_contact', 'outbox', ['contact_id'], unique=False,
                    sqlite_where=sa.text('contact_id IS NOT NULL'),
                    postgresql_where=sa.text('contact_id IS NOT NULL'))


def downgrade() -> None:
    op.drop_index('ix_outbox_contact', table_name='outbox')
    op.drop_index('ix_outbox_pseudonym', table_name='outbox')
    op.execute(
        "UPDATE outbox SET dedupe_key = 'broadcast:' || CAST(broadcast_id AS VARCHAR) || ':' "
        "|| pseudonym WHERE contact_id IS NOT NULL")
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_column('contact_id')
        batch_op.create_index('ix_outbox_pseudonym', ['pseudonym'], unique=False)
