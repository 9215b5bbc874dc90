"""016 orphan and dispatch state: what two operator reads need, kept small and indexed.

``audit orphans`` and ``audit dispatches`` scanned the whole ledger (> 10 s at 20,000,000
rows). Two tables answer them instead:

- ``ledger_task_dispatches``: the first ``dispatch.requested`` of each task (its id, seq,
  received_at and event time), like ``ledger_task_terminals`` (015), append-only (the
  triggers of 004), never archived. The dispatches listing walks its
  ``(requested_at, task_id)`` index newest first and reads the ledger row of each
  request it returns by primary key.
- ``ledger_taskless_events``: the ``task.*`` events recorded while their task had no
  ``tasks`` row (seq, received_at), the candidates of the orphans listing's ``no_task``
  kind. An event is listed when no row is visible; a trigger on ``tasks`` (AFTER
  INSERT, in the transaction that creates the row) removes the task's events, since a
  task row is never deleted (004) an event once resolved can never be an orphan of that
  kind again. It is derived state, not part of the tamper-evident record (the chain
  covers the ledger rows only). Rows of an archived month stay until their task
  appears; the listing leaves them out, as it did when it scanned the ledger.

Both are kept by the database, not by the writer's statement: a statement-level AFTER
INSERT trigger on ``event_ledger`` (with the inserted rows as a transition table) fills
them for every writer, also a consumer still running the previous release while this
migration is applied, or a tool inserting rows itself. Writes by the per-task locks'
order: the first request recorded for a task has the lowest seq. The trigger functions
run as the owner (SECURITY DEFINER, search_path fixed): the app role may only read both
tables, so it cannot empty the orphan check. The migration locks ``event_ledger`` and
``tasks`` against writers first, so no row commits between the backfill and the
triggers.

Revision ID: 016_orphan_dispatch_state
Revises: 015_task_terminals
Create Date: 2026-11-30
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "016_orphan_dispatch_state"
down_revision: str | None = "015_task_terminals"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DISPATCHES = "ledger_task_dispatches"
TASKLESS = "ledger_taskless_events"

TRACK_NEW_EVENTS = f"""
CREATE FUNCTION track_new_ledger_events() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    -- a task's first dispatch.requested (the dispatches listing)
    INSERT INTO {DISPATCHES} (task_id, event_id, seq, received_at, requested_at)
    SELECT DISTINCT ON (n.task_id) n.task_id, n.event_id, n.seq, n.received_at, n.event_time
    FROM new_events AS n
    WHERE n.task_id IS NOT NULL AND n.event_type = 'dispatch.requested'
    ORDER BY n.task_id, n.seq
    ON CONFLICT (task_id) DO NOTHING;
    -- task events whose task has no row (yet): the orphans listing's candidates
    INSERT INTO {TASKLESS} (task_id, seq, received_at)
    SELECT n.task_id, n.seq, n.received_at
    FROM new_events AS n
    WHERE n.task_id IS NOT NULL AND n.event_type LIKE 'task.%'
      AND NOT EXISTS (SELECT 1 FROM tasks AS t WHERE t.task_id = n.task_id);
    RETURN NULL;
END;
$$
"""

FORGET_TASKLESS = f"""
CREATE FUNCTION forget_taskless_events() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    -- the task has a row now (and keeps it: 004 forbids DELETE on tasks)
    DELETE FROM {TASKLESS} WHERE task_id = NEW.task_id;
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
    # No writer commits between the backfills and the triggers (released at commit).
    op.execute("LOCK TABLE event_ledger, tasks IN SHARE ROW EXCLUSIVE MODE")
    op.create_table(
        DISPATCHES,
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("task_id", name="pk_ledger_task_dispatches"),
    )
    op.create_index(
        "ix_ledger_task_dispatches_requested_at", DISPATCHES, ["requested_at", "task_id"]
    )
    # The first dispatch.requested already recorded for each task.
    op.execute(
        f"INSERT INTO {DISPATCHES} (task_id, event_id, seq, received_at, requested_at) "
        "SELECT DISTINCT ON (task_id) task_id, event_id, seq, received_at, event_time "
        "FROM event_ledger WHERE event_type = 'dispatch.requested' AND task_id IS NOT NULL "
        "ORDER BY task_id, seq"
    )
    op.execute(
        f"CREATE TRIGGER enforce_{DISPATCHES}_append_only BEFORE UPDATE OR DELETE "
        f"ON {DISPATCHES} FOR EACH ROW EXECUTE FUNCTION prevent_append_only_change()"
    )
    op.execute(
        f"CREATE TRIGGER enforce_{DISPATCHES}_no_truncate BEFORE TRUNCATE ON {DISPATCHES} "
        "FOR EACH STATEMENT EXECUTE FUNCTION prevent_truncate()"
    )
    op.execute(f"GRANT SELECT ON {DISPATCHES} TO {app_role()}")

    op.create_table(
        TASKLESS,
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("task_id", "seq", name="pk_ledger_taskless_events"),
    )
    op.create_index("ix_ledger_taskless_events_received_at", TASKLESS, ["received_at", "seq"])
    # The task events recorded so far whose task has no row.
    op.execute(
        f"INSERT INTO {TASKLESS} (task_id, seq, received_at) "
        "SELECT l.task_id, l.seq, l.received_at FROM event_ledger AS l "
        "WHERE l.event_type LIKE 'task.%' AND l.task_id IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM tasks AS t WHERE t.task_id = l.task_id)"
    )
    op.execute(FORGET_TASKLESS)
    op.execute(
        "CREATE TRIGGER forget_taskless_events AFTER INSERT ON tasks "
        "FOR EACH ROW EXECUTE FUNCTION forget_taskless_events()"
    )
    op.execute(f"GRANT SELECT ON {TASKLESS} TO {app_role()}")
    op.execute(TRACK_NEW_EVENTS)
    op.execute(
        "CREATE TRIGGER track_new_ledger_events AFTER INSERT ON event_ledger "
        "REFERENCING NEW TABLE AS new_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION track_new_ledger_events()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS track_new_ledger_events ON event_ledger")
    op.execute("DROP FUNCTION IF EXISTS track_new_ledger_events()")
    op.execute("DROP TRIGGER IF EXISTS forget_taskless_events ON tasks")
    op.execute("DROP FUNCTION IF EXISTS forget_taskless_events()")
    op.drop_table(TASKLESS)
    op.drop_table(DISPATCHES)
