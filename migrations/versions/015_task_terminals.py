"""015 task terminals: the first terminal event of each task, kept outside the partitions.

The ledger's writers ask, for every batch with a terminal event, whether the task already
has one (a second terminal is stored with ``conflict_with``). Since 013 that question
probed the ``task_id`` index of every month partition (no partition key): with 24 months
of 20,000,000 rows it went from 2 ms to 54-142 ms a batch. ``ledger_task_terminals``
answers it with one primary-key lookup per task, is written by the ledger's insert
statement in the same transaction (the per-task locks order the writers of one task),
and, like ``ledger_event_ids``, is never archived: a terminal event recorded in an
archived month still makes a later one a conflict.

Append-only (the triggers of 004); the app role may read and insert.

Revision ID: 015_task_terminals
Revises: 014_ledger_archives
Create Date: 2026-11-30
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "015_task_terminals"
down_revision: str | None = "014_ledger_archives"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "ledger_task_terminals"


def app_role() -> str:
    """The application role's name (as 005 created it), checked to be a plain identifier."""
    name = os.environ.get("TASKLEDGER_APP_ROLE", "taskledger_app")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"invalid app role name {name!r}")
    return name


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", name="pk_ledger_task_terminals"),
    )
    # The terminal events already recorded (not themselves conflicts), the first per task.
    op.execute(
        f"INSERT INTO {TABLE} (task_id, event_id, seq) "
        "SELECT DISTINCT ON (task_id) task_id, event_id, seq FROM event_ledger "
        "WHERE task_id IS NOT NULL AND conflict_with IS NULL "
        "AND event_type IN ('task.completed', 'task.failed', 'task.rejected') "
        "ORDER BY task_id, seq"
    )
    op.execute(
        f"CREATE TRIGGER enforce_{TABLE}_append_only BEFORE UPDATE OR DELETE ON {TABLE} "
        "FOR EACH ROW EXECUTE FUNCTION prevent_append_only_change()"
    )
    op.execute(
        f"CREATE TRIGGER enforce_{TABLE}_no_truncate BEFORE TRUNCATE ON {TABLE} "
        "FOR EACH STATEMENT EXECUTE FUNCTION prevent_truncate()"
    )
    op.execute(f"GRANT SELECT, INSERT ON {TABLE} TO {app_role()}")


def downgrade() -> None:
    op.drop_table(TABLE)
