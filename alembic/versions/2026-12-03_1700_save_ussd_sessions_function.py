"""save ussd sessions: one function call for a batch's saves (PostgreSQL)

A batch of USSD hops saves its sessions with ``SELECT * FROM save_ussd_sessions(rows)``:
one round trip, the rows as one JSON parameter, and inside, one prepared UPDATE by
primary key per row. Neither alternative was as cheap: an UPDATE joined to the JSON rows
had to be planned afresh each time (a kept plan, made while the table was small, scanned
every row for ever after), and one UPDATE per row from the client cost more Python per
row than the statement itself. SQLite saves one session at a time and has no functions.

Revision ID: 8e4b1c7d2a90
Revises: 5d0c3f9a61b2
Create Date: 2026-12-03 17:00:00
"""

from collections.abc import Sequence

from alembic import op


revision: str = '8e4b1c7d2a90'
down_revision: str | None = '5d0c3f9a61b2'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A row saves only if the session is still active and still at the hop count it was read
# with (``expected``): the same guard as a single save. The ids of the rows saved come back.
CREATE = """
CREATE FUNCTION save_ussd_sessions(rows json) RETURNS SETOF integer
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM json_to_recordset(rows) AS v(
            id integer, expected integer, state text, status text, text_len integer,
            text_mac text, response text, history text, hops integer,
            updated_at timestamptz) LOOP
        UPDATE ussd_session SET state = r.state, status = r.status, text_len = r.text_len,
                text_mac = r.text_mac, response = r.response, history = r.history,
                hops = r.hops, updated_at = r.updated_at
            WHERE id = r.id AND hops = r.expected AND status = 'active';
        IF FOUND THEN
            RETURN NEXT r.id;
        END IF;
    END LOOP;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(CREATE)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('DROP FUNCTION save_ussd_sessions(json)')
