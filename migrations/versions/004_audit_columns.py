"""004 audit columns, immutability triggers, pause_queue and its history.

Tasks may change only while pending, approved or executing and never move backward;
completed, failed and rejected tasks are frozen; no task is ever deleted. The ledger,
execution logs, pause history and operator actions are append-only. TRUNCATE of any
audited table is refused.

Revision ID: 004_audit_columns
Revises: 003_capacity_outbox
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "004_audit_columns"
down_revision: str | None = "003_capacity_outbox"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)
APPEND_ONLY = ("event_ledger", "execution_logs", "pause_history", "operator_actions")
NO_TRUNCATE = ("tasks", *APPEND_ONLY)

PREVENT_TASK_MODIFICATION = """
CREATE OR REPLACE FUNCTION prevent_task_modification() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    old_rank int;
    new_rank int;
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'DELETE not allowed on tasks: task % is part of the audit record',
            OLD.task_id USING ERRCODE = 'TL001';
    END IF;
    IF OLD.status IN ('completed', 'failed', 'rejected') THEN
        RAISE EXCEPTION 'UPDATE not allowed on % task %', OLD.status, OLD.task_id
            USING ERRCODE = 'TL001';
    END IF;
    IF NEW.task_id IS DISTINCT FROM OLD.task_id
       OR NEW.created_at IS DISTINCT FROM OLD.created_at
       OR NEW.request_text IS DISTINCT FROM OLD.request_text THEN
        RAISE EXCEPTION 'UPDATE not allowed on the identity of task %', OLD.task_id
            USING ERRCODE = 'TL001';
    END IF;
    old_rank := CASE OLD.status WHEN 'pending' THEN 0 WHEN 'approved' THEN 1
                                WHEN 'executing' THEN 2 ELSE 3 END;
    new_rank := CASE NEW.status WHEN 'pending' THEN 0 WHEN 'approved' THEN 1
                                WHEN 'executing' THEN 2 ELSE 3 END;
    IF new_rank < old_rank THEN
        RAISE EXCEPTION 'status of task % may not move backward from % to %',
            OLD.task_id, OLD.status, NEW.status USING ERRCODE = 'TL001';
    END IF;
    RETURN NEW;
END;
$$;
"""

PREVENT_APPEND_ONLY_CHANGE = """
CREATE OR REPLACE FUNCTION prevent_append_only_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% not allowed on append-only table %', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'TL001';
END;
$$;
"""

PREVENT_TRUNCATE = """
CREATE OR REPLACE FUNCTION prevent_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'TRUNCATE not allowed on audited table %', TG_TABLE_NAME
        USING ERRCODE = 'TL001';
END;
$$;
"""


def upgrade() -> None:
    op.add_column(
        "tasks",
        sa.Column(
            "services_touched",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
    )
    for name in (
        "outcome",
        "suggestions",
        "estimated_resources",
        "actual_resources",
        "external_ai_used",
        "resource_state",
    ):
        op.add_column("tasks", sa.Column(name, postgresql.JSONB()))
    op.add_column("tasks", sa.Column("cost_usd", sa.Numeric(14, 6)))
    op.add_column("tasks", sa.Column("error_type", sa.Text()))
    op.add_column("tasks", sa.Column("error_cause", sa.String(16)))
    op.add_column("tasks", sa.Column("failed_step", sa.Integer()))
    op.create_index(
        "idx_tasks_services_touched", "tasks", ["services_touched"], postgresql_using="gin"
    )
    op.create_index("idx_tasks_status_created_at", "tasks", ["status", sa.text("created_at DESC")])

    op.create_table(
        "pause_queue",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("work_plan_json", postgresql.JSONB(), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("paused_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("resume_after", TZ),
        sa.Column("priority", sa.SmallInteger(), server_default=sa.text("3"), nullable=False),
        sa.Column("agent_type", sa.String(16), nullable=False),
        sa.Column(
            "required_gpu_vram_mb", sa.Integer(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("required_cpu_cores", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("required_memory_mb", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("not_before", TZ),
        sa.Column("request_event_id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_pause_queue"),
        sa.UniqueConstraint("task_id", name="uq_pause_queue_task_id"),
        sa.CheckConstraint(
            "reason IN ('insufficient_capacity', 'manual_pause')", name="ck_pause_queue_reason"
        ),
        sa.CheckConstraint("priority BETWEEN 1 AND 5", name="ck_pause_queue_priority"),
    )
    op.create_index("idx_pause_queue_resume", "pause_queue", ["resume_after", "priority"])
    op.create_index(
        "ix_pause_queue_agent_type_priority",
        "pause_queue",
        ["agent_type", "priority", "paused_at"],
    )

    op.create_table(
        "pause_history",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("task_id", sa.Uuid()),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("trigger", sa.String(16)),
        sa.Column("agent_id", sa.Text()),
        sa.Column("event_id", sa.Uuid()),
        sa.Column("at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("details", postgresql.JSONB()),
        sa.PrimaryKeyConstraint("id", name="pk_pause_history"),
        sa.CheckConstraint(
            "action IN ('paused', 'released', 'held', 'unheld')", name="ck_pause_history_action"
        ),
    )
    op.create_index("ix_pause_history_task_id", "pause_history", ["task_id", "at"])

    op.execute(PREVENT_TASK_MODIFICATION)
    op.execute(PREVENT_APPEND_ONLY_CHANGE)
    op.execute(PREVENT_TRUNCATE)
    op.execute(
        "CREATE TRIGGER enforce_task_immutability BEFORE UPDATE OR DELETE ON tasks "
        "FOR EACH ROW EXECUTE FUNCTION prevent_task_modification()"
    )
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER enforce_{table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION prevent_append_only_change()"
        )
    for table in NO_TRUNCATE:
        op.execute(
            f"CREATE TRIGGER enforce_{table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION prevent_truncate()"
        )


def downgrade() -> None:
    for table in NO_TRUNCATE:
        op.execute(f"DROP TRIGGER IF EXISTS enforce_{table}_no_truncate ON {table}")
    for table in APPEND_ONLY:
        op.execute(f"DROP TRIGGER IF EXISTS enforce_{table}_append_only ON {table}")
    op.execute("DROP TRIGGER IF EXISTS enforce_task_immutability ON tasks")
    op.drop_table("pause_history")
    op.drop_table("pause_queue")
    op.execute("DROP FUNCTION IF EXISTS prevent_truncate()")
    op.execute("DROP FUNCTION IF EXISTS prevent_append_only_change()")
    op.execute("DROP FUNCTION IF EXISTS prevent_task_modification()")
    op.drop_index("idx_tasks_status_created_at", table_name="tasks")
    op.drop_index("idx_tasks_services_touched", table_name="tasks")
    for name in (
        "failed_step",
        "error_cause",
        "error_type",
        "cost_usd",
        "resource_state",
        "external_ai_used",
        "actual_resources",
        "estimated_resources",
        "suggestions",
        "outcome",
        "services_touched",
    ):
        op.drop_column("tasks", name)
