"""outbox and ussd_session (PostgreSQL): planner statistics from 3,000 rows, not 30,000

The claim's plan needs the outbox's statistics current after a broadcast queues a hundred
thousand rows, so the expansion and the worker run ANALYZE as the table grows. With the
default target (100) each ANALYZE samples 30,000 rows and computes every column's
histogram: about 300 ms of one core at 100,000 rows, several times during a broadcast,
while USSD hops wait for that core. With a target of 10 it samples 3,000 rows (about 20
ms), enough for what the claim and the other outbox queries filter on (status, priority,
times, provider, ids). The USSD sessions are looked up by keys only and are analyzed as
they grow (``queries.refresh_statistics``): the same small sample. Autovacuum's own
ANALYZE of both gets cheaper too. SQLite has no such setting.

Revision ID: b7a75e000001
Revises: a0b1c0e70001
Create Date: 2026-12-07 14:00:00
"""

from collections.abc import Sequence

from alembic import op


revision: str = 'b7a75e000001'
down_revision: str | None = 'a0b1c0e70001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TARGET = 10
COLUMNS = {
    'outbox': ('id', 'dedupe_key', 'kind', 'pseudonym', 'recipient', 'text', 'encoding',
               'segments', 'provider', 'priority', 'status', 'attempts', 'next_attempt_at',
               'lease_owner', 'lease_until', 'valid_until', 'provider_message_id',
               'last_error', 'broadcast_id', 'created_at', 'sent_at', 'updated_at',
               'contact_id'),
    'ussd_session': ('id', 'provider', 'session_id', 'pseudonym', 'state', 'status',
                     'text_len', 'text_mac', 'response', 'history', 'hops', 'created_at',
                     'updated_at', 'end_status', 'end_hops', 'end_duration_ms'),
}


def _set(target: int) -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    for table, columns in COLUMNS.items():
        op.execute(f'ALTER TABLE {table} ' + ', '.join(
            f'ALTER COLUMN {column} SET STATISTICS {target}' for column in columns))


def upgrade() -> None:
    _set(TARGET)


def downgrade() -> None:
    _set(-1)
