"""017 task step actions: each task's step actions in one small row, for the intent filter.

The task filter's intent branch asked, for every candidate task, whether one of its
``execution_logs`` rows has an action matching the verb pattern. Since 013 that probed
the ``task_id`` index of every month partition (the predicate has no partition key): at
500,000 tasks over 24 months, 25 probes for each of ~300 candidates, 110-160 ms a query.
``task_step_actions`` holds one row per task with a step: its step actions joined by a
newline, read by primary key (an intent pattern only spans letters, digits and
``[ _-]``, so it never matches across the newline between two actions).

It is derived state, not part of the tamper-evident record (the chain covers the ledger
rows only): mutable (a new step appends to its task's row), not append-only, not
archived, and not a column of ``tasks`` (a step may arrive after its task finished, and
the trigger of 004 refuses any change to a finished task). Its rows are never deleted:
archiving a month detaches its ``execution_logs`` partition but keeps the ``tasks``
rows (014), and keeps these rows with them.

It is kept by a trigger on ``execution_logs`` (AFTER INSERT, for each statement, with
the inserted rows as a transition table), in the transaction that inserts the steps, so
every writer of steps keeps it: the audit handler's ``insert_steps`` (whose ``ON
CONFLICT DO NOTHING`` leaves a re-delivered step out of the transition table, so it is
not appended twice), and tests or tools inserting rows directly. ``verify``'s scratch
copy of ``execution_logs`` (``CREATE TEMP TABLE ... LIKE``) has no trigger, so replaying
the handler there leaves this table alone. Within one statement the actions are appended
per task in ``step_number`` order, in ``task_id`` order across tasks (two concurrent
batches lock the rows they share in the same order).

The trigger function runs as the owner (SECURITY DEFINER, search_path fixed): the app role
may only read the table, so it cannot change what the intent filter finds. The migration
locks ``execution_logs`` against writers first, so no step commits between the backfill
and the trigger.

Revision ID: 017_task_step_actions
Revises: 016_orphan_dispatch_state
Create Date: 2026-11-30
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "017_task_step_actions"
down_revision: str | None = "016_orphan_dispatch_state"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "task_step_actions"

APPEND_ACTIONS = f"""
CREATE FUNCTION append_task_step_actions() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    -- only the rows this statement really inserted (a conflict skipped is not here)
    INSERT INTO {TABLE} AS a (task_id, actions)
    SELECT n.task_id, string_agg(n.action, E'\\n' ORDER BY n.step_number, n.recorded_at)
    FROM new_steps AS n
    WHERE n.action IS NOT NULL
    GROUP BY n.task_id
    ORDER BY n.task_id
    ON CONFLICT (task_id) DO UPDATE SET actions = a.actions || E'\\n' || EXCLUDED.actions;
    RETURN NULL;
END;
$$
"""


def app_role() -> str:
    """The application role's name (as 005 created it), checked to be a plain identifier."""
    name = os.environ.get("TASKLEDGER_APP_ROLE", "taskledger_app")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"invalid app role name {name!r}")
    return name


def upgrade() -> None:
    # No step commits between the backfill and the trigger (released at commit).
    op.execute("LOCK TABLE execution_logs IN SHARE ROW EXCLUSIVE MODE")
    op.create_table(
        TABLE,
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("actions", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.task_id"], name="fk_task_step_actions_task_id_tasks"
        ),
        sa.PrimaryKeyConstraint("task_id", name="pk_task_step_actions"),
    )
    # The steps recorded so far, in the order they happened.
    op.execute(
        f"INSERT INTO {TABLE} (task_id, actions) "
        "SELECT task_id, string_agg(action, E'\\n' ORDER BY step_number, recorded_at) "
        "FROM execution_logs WHERE action IS NOT NULL GROUP BY task_id"
    )
    op.execute(APPEND_ACTIONS)
    op.execute(
        "CREATE TRIGGER append_task_step_actions AFTER INSERT ON execution_logs "
        "REFERENCING NEW TABLE AS new_steps "
        "FOR EACH STATEMENT EXECUTE FUNCTION append_task_step_actions()"
    )
    op.execute(f"GRANT SELECT ON {TABLE} TO {app_role()}")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS append_task_step_actions ON execution_logs")
    op.execute("DROP FUNCTION IF EXISTS append_task_step_actions()")
    op.drop_table(TABLE)
