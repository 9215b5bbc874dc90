"""010 recovery that acts: ``task_recoveries``, the attempts of silent executing tasks.

Append-only, one row per step of a recovery: ``requested`` (``task.recovery_requested``
sent), ``resumed`` (the agent's ``task.started``/``task.step`` came after it),
``redispatched`` (``dispatch.assigned`` again, attempt n+1) and ``failed`` (past the
limit: ``task.failed`` with cause ``agent_lost`` sent). ``trigger`` is ``timeout`` when
the policy acted, ``manual`` when an operator did. A new table: nothing to convert.

Revision ID: 010_task_recoveries
Revises: 009_suggestions
Create Date: 2026-11-30
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "010_task_recoveries"
down_revision: str | None = "009_suggestions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)
ACTIONS = "action IN ('requested', 'resumed', 'redispatched', 'failed')"


def app_role() -> str:
    """The application role's name (as 005 created it), checked to be a plain identifier."""
    name = os.environ.get("TASKLEDGER_APP_ROLE", "taskledger_app")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"invalid app role name {name!r}")
    return name


def upgrade() -> None:
    op.create_table(
        "task_recoveries",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=True),
        sa.Column("message_id", sa.Uuid(), nullable=True),
        sa.Column("actor", sa.Text(), nullable=True),
        sa.Column("at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("details", postgresql.JSONB(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_task_recoveries"),
        sa.CheckConstraint(ACTIONS, name="ck_task_recoveries_action"),
    )
    op.create_index("ix_task_recoveries_task_id", "task_recoveries", ["task_id", "id"])
    op.execute(
        "CREATE TRIGGER enforce_task_recoveries_append_only BEFORE UPDATE OR DELETE ON "
        "task_recoveries FOR EACH ROW EXECUTE FUNCTION prevent_append_only_change()"
    )
    op.execute(
        "CREATE TRIGGER enforce_task_recoveries_no_truncate BEFORE TRUNCATE ON task_recoveries "
        "FOR EACH STATEMENT EXECUTE FUNCTION prevent_truncate()"
    )
    role = app_role()
    op.execute(f"GRANT SELECT, INSERT ON task_recoveries TO {role}")
    op.execute(f"GRANT USAGE, SELECT ON SEQUENCE task_recoveries_id_seq TO {role}")


def downgrade() -> None:
    op.execute(f"REVOKE ALL ON task_recoveries FROM {app_role()}")
    op.execute(f"REVOKE ALL ON SEQUENCE task_recoveries_id_seq FROM {app_role()}")
    op.drop_table("task_recoveries")
