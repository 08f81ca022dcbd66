"""poll results: who answered and where on each answer, and a tally kept by triggers

``poll_answer`` gains the respondent's area (the commune answered, else the cercle), gender,
age band, displacement and campaign, copied from the same submission, so results group on
one table without a join; existing rows get their area from the poll's own place answers.

Breakdowns of a million answers must come back in well under a second, and counting a
million index entries takes about 100 ms on either database. So ``poll_tally`` holds the
counts per poll question, answer and group, and triggers on ``poll_answer`` (insert,
update, delete: a vote, a new vote, an erasure) append each change to
``poll_tally_change``. The triggers only ever insert there (never update a shared counter
row), so concurrent votes never wait for each other or deadlock; reading results folds the
changes into the tally. Results over a period read ``poll_answer`` through a new index
(by commune or cercle, from the index alone).

Revision ID: c12a0b0c0004
Revises: c17b0d9e0002
Create Date: 2026-12-08 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = 'c12a0b0c0004'
down_revision: str | None = 'c17b0d9e0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = "poll, question, area, gender, age_band, displaced, campaign, answer"


def keyed(row: str) -> str:
    """The tally key of a ``poll_answer`` row (``NEW``, ``OLD`` or a table name): absent
    group values as '' and 0, which a primary key can hold."""
    p = f"{row}." if row else ""
    return (f"{p}poll, {p}question, coalesce({p}area, ''), coalesce({p}gender, ''), "
            f"coalesce({p}age_band, ''), coalesce({p}displaced, ''), "
            f"coalesce({p}campaign, 0), {p}answer")


INSERT_CHANGE = f"INSERT INTO poll_tally_change ({KEY}, n)"

# SQLite: row triggers; a new vote with the same answer and groups changes nothing.
SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER poll_tally_insert AFTER INSERT ON poll_answer BEGIN
    {INSERT_CHANGE} VALUES ({keyed('NEW')}, 1);
END""",
    f"""CREATE TRIGGER poll_tally_update AFTER UPDATE ON poll_answer
WHEN OLD.poll IS NOT NEW.poll OR OLD.question IS NOT NEW.question
    OR OLD.answer IS NOT NEW.answer OR OLD.area IS NOT NEW.area
    OR OLD.gender IS NOT NEW.gender OR OLD.age_band IS NOT NEW.age_band
    OR OLD.displaced IS NOT NEW.displaced OR OLD.campaign IS NOT NEW.campaign
BEGIN
    {INSERT_CHANGE} VALUES ({keyed('OLD')}, -1), ({keyed('NEW')}, 1);
END""",
    f"""CREATE TRIGGER poll_tally_delete AFTER DELETE ON poll_answer BEGIN
    {INSERT_CHANGE} VALUES ({keyed('OLD')}, -1);
END""",
]

# PostgreSQL: statement triggers over the transition tables, one insert per statement (a
# poll's answers are one upsert), changes netted per key.
_GROUPED = "GROUP BY 1, 2, 3, 4, 5, 6, 7, 8"
POSTGRES_FUNCTIONS = {
    "poll_tally_insert": f"""
    {INSERT_CHANGE} SELECT {keyed('')}, count(*) FROM new_rows {_GROUPED};""",
    "poll_tally_update": f"""
    {INSERT_CHANGE} SELECT {KEY}, sum(n) FROM (
        SELECT {keyed('o')}, -1 AS n FROM old_rows AS o
        UNION ALL SELECT {keyed('w')}, 1 AS n FROM new_rows AS w
    ) AS c (poll, question, area, gender, age_band, displaced, campaign, answer, n)
    {_GROUPED} HAVING sum(n) <> 0;""",
    "poll_tally_delete": f"""
    {INSERT_CHANGE} SELECT {keyed('')}, -count(*) FROM old_rows {_GROUPED};""",
}
POSTGRES_TRANSITIONS = {
    "poll_tally_insert": ("INSERT", "NEW TABLE AS new_rows"),
    "poll_tally_update": ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
    "poll_tally_delete": ("DELETE", "OLD TABLE AS old_rows"),
}

# Existing answers: the area from the same person's place answers in the same poll.
_PLACE = ("(SELECT p.answer FROM poll_answer AS p WHERE p.poll = poll_answer.poll "
          "AND p.pseudonym = poll_answer.pseudonym AND p.question = '{q}' "
          "AND p.answer <> 'other')")
BACKFILL_AREA = (f"UPDATE poll_answer SET area = coalesce({_PLACE.format(q='commune')}, "
                 f"{_PLACE.format(q='cercle')})")
FILL_TALLY = (f"INSERT INTO poll_tally ({KEY}, n) SELECT {keyed('')}, count(*) "
              f"FROM poll_answer {_GROUPED}")


def upgrade() -> None:
    with op.batch_alter_table('poll_answer', schema=None) as batch_op:
        batch_op.add_column(sa.Column('area', sqlmodel.sql.sqltypes.AutoString(length=64),
                                      nullable=True))
        batch_op.add_column(sa.Column('gender', sqlmodel.sql.sqltypes.AutoString(length=16),
                                      nullable=True))
        batch_op.add_column(sa.Column('age_band', sqlmodel.sql.sqltypes.AutoString(length=16),
                                      nullable=True))
        batch_op.add_column(sa.Column('displaced', sqlmodel.sql.sqltypes.AutoString(length=16),
                                      nullable=True))
        batch_op.add_column(sa.Column('campaign', sa.Integer(), nullable=True))
        batch_op.create_index('ix_poll_answer_time',
                              ['poll', 'question', 'updated_at', 'area', 'answer'],
                              unique=False)
    op.create_table('poll_tally',
    sa.Column('poll', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('question', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('area', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('gender', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('age_band', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('displaced', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('campaign', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('answer', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('poll', 'question', 'area', 'gender', 'age_band', 'displaced',
                            'campaign', 'answer')
    )
    op.create_table('poll_tally_change',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('poll', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('question', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('area', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('gender', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('age_band', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('displaced', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('campaign', sa.Integer(), nullable=False),
    sa.Column('answer', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.execute(BACKFILL_AREA)
    op.execute(FILL_TALLY)
    if op.get_bind().dialect.name == 'postgresql':
        for name, body in POSTGRES_FUNCTIONS.items():
            event, tables = POSTGRES_TRANSITIONS[name]
            op.execute(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
                       f"BEGIN{body}\n    RETURN NULL;\nEND\n$$")
            op.execute(f"CREATE TRIGGER {name} AFTER {event} ON poll_answer "
                       f"REFERENCING {tables} FOR EACH STATEMENT EXECUTE FUNCTION {name}()")
    else:
        for trigger in SQLITE_TRIGGERS:
            op.execute(trigger)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == 'postgresql'
    for name in POSTGRES_FUNCTIONS:
        if postgres:
            op.execute(f"DROP TRIGGER {name} ON poll_answer")
            op.execute(f"DROP FUNCTION {name}()")
        else:
            op.execute(f"DROP TRIGGER {name}")
    op.drop_table('poll_tally_change')
    op.drop_table('poll_tally')
    with op.batch_alter_table('poll_answer', schema=None) as batch_op:
        batch_op.drop_index('ix_poll_answer_time')
        batch_op.drop_column('campaign')
        batch_op.drop_column('displaced')
        batch_op.drop_column('age_band')
        batch_op.drop_column('gender')
        batch_op.drop_column('area')
