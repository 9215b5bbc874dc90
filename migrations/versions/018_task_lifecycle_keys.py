"""018 task lifecycle keys: where each task's lifecycle events are, so a re-fold reads only them.

The audit handler re-folds every task a batch touches from the task's lifecycle events
(``lifecycle_events``: ``WHERE task_id = ANY(...)``). The ledger is partitioned by month
of arrival (013) and that predicate has no partition key, so each read probed the
``task_id`` index of every month: with 20,000,000 rows over 24 months, 216 ms a batch
against 1 ms on an empty ledger, and the whole consumer ran at 0.45-0.57 of its rate on
an empty ledger. ``ledger_task_lifecycle`` lists, per task, the (seq, received_at) key of
each lifecycle event that is not a conflict (``task.requested``, ``.approved``,
``.started``, ``.completed``, ``.failed``, ``.rejected``); the handler reads the ledger
rows by those keys, one month each.

Derived state (the hash chain covers the ledger rows): kept by a statement-level AFTER
INSERT trigger on ``event_ledger`` for every writer, SECURITY DEFINER with a fixed
search_path so the app role may only read it; append-only (the triggers of 004), never
archived (a key of an archived month finds no row, as the read of the ledger did).
``verify`` still recomputes the projections from the ledger itself (the original
``lifecycle_events``), so a wrong key table would show as a projection that differs.
The migration locks ``event_ledger`` against writers first, so no row commits between
the backfill and the trigger.

Revision ID: 018_task_lifecycle_keys
Revises: 017_task_step_actions
Create Date: 2026-11-30
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "018_task_lifecycle_keys"
down_revision: str | None = "017_task_step_actions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "ledger_task_lifecycle"
LIFECYCLE = (
    "('task.requested', 'task.approved', 'task.started', "
    "'task.completed', 'task.failed', 'task.rejected')"
)

TRACK = f"""
CREATE FUNCTION track_task_lifecycle() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO {TABLE} (task_id, seq, received_at)
    SELECT n.task_id, n.seq, n.received_at
    FROM new_events AS n
    WHERE n.task_id IS NOT NULL AND n.conflict_with IS NULL
      AND n.event_type IN {LIFECYCLE};
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
    # No writer commits between the backfill and the trigger (released at commit).
    op.execute("LOCK TABLE event_ledger IN SHARE ROW EXCLUSIVE MODE")
    op.create_table(
        TABLE,
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("task_id", "seq", name="pk_ledger_task_lifecycle"),
    )
    op.execute(
        f"INSERT INTO {TABLE} (task_id, seq, received_at) "
        "SELECT task_id, seq, received_at FROM event_ledger "
        f"WHERE task_id IS NOT NULL AND conflict_with IS NULL AND event_type IN {LIFECYCLE}"
    )
    op.execute(
        f"CREATE TRIGGER enforce_{TABLE}_append_only BEFORE UPDATE OR DELETE ON {TABLE} "
        "FOR EACH ROW EXECUTE FUNCTION prevent_append_only_change()"
    )
    op.execute(
        f"CREATE TRIGGER enforce_{TABLE}_no_truncate BEFORE TRUNCATE ON {TABLE} "
        "FOR EACH STATEMENT EXECUTE FUNCTION prevent_truncate()"
    )
    op.execute(f"GRANT SELECT ON {TABLE} TO {app_role()}")
    op.execute(TRACK)
    op.execute(
        "CREATE TRIGGER track_task_lifecycle AFTER INSERT ON event_ledger "
        "REFERENCING NEW TABLE AS new_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION track_task_lifecycle()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS track_task_lifecycle ON event_ledger")
    op.execute("DROP FUNCTION IF EXISTS track_task_lifecycle()")
    op.drop_table(TABLE)
