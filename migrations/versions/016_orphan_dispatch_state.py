"""016 orphan and dispatch state: what two operator reads need, kept small and indexed.

``audit orphans`` and ``audit dispatches`` scanned the whole ledger (> 10 s at 20,000,000
rows). Two tables answer them instead:

- ``ledger_task_dispatches``: the first ``dispatch.requested`` of each task (its id, seq,
  received_at and event time), like ``ledger_task_terminals`` (015): written by the
  ledger's insert statement in the same transaction (the per-task locks order the
  writers of one task, so the first recorded is the lowest seq), append-only (the
  triggers of 004), never archived. The dispatches listing walks its
  ``(requested_at, task_id)`` index newest first and reads the ledger row of each
  request it returns by primary key.
- ``ledger_taskless_events``: the ``task.*`` events recorded while their task had no
  ``tasks`` row (seq, received_at), the candidates of the orphans listing's ``no_task``
  kind. The ledger's insert statement lists an event when no row is visible; a trigger
  on ``tasks`` (AFTER INSERT, in the transaction that creates the row) removes the
  task's events, since a task row is never deleted (004) an event once resolved can
  never be an orphan of that kind again. It is derived state, not part of the
  tamper-evident record (the chain covers the ledger rows only): mutable, the app role
  may delete from it (the trigger runs as the app role). Rows of an archived month stay
  until their task appears; the listing reads the ledger row and so leaves them out, as
  it did when it scanned the ledger.

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

FORGET_TASKLESS = f"""
CREATE FUNCTION forget_taskless_events() RETURNS trigger
LANGUAGE plpgsql AS $$
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
    op.execute(f"GRANT SELECT, INSERT ON {DISPATCHES} TO {app_role()}")

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
    op.execute(f"GRANT SELECT, INSERT, DELETE ON {TASKLESS} TO {app_role()}")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS forget_taskless_events ON tasks")
    op.execute("DROP FUNCTION IF EXISTS forget_taskless_events()")
    op.drop_table(TASKLESS)
    op.drop_table(DISPATCHES)
