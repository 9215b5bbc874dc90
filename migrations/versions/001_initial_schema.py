"""001 initial schema: tasks and execution_logs.

Revision ID: 001_initial_schema
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "001_initial_schema"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request_text", sa.Text(), nullable=False),
        sa.Column("created_by", sa.Text()),
        sa.Column("project_id", sa.Text()),
        sa.Column("plan", postgresql.JSONB()),
        sa.Column("services_requested", postgresql.ARRAY(sa.Text())),
        sa.Column("agent_id", sa.Text()),
        sa.Column("agent_type", sa.String(16)),
        sa.Column("approved_by", sa.Text()),
        sa.Column("approved_at", TZ),
        sa.Column("started_at", TZ),
        sa.Column("completed_at", TZ),
        sa.Column("rejected_reason", sa.Text()),
        sa.Column("error_message", sa.Text()),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("task_id", name="pk_tasks"),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'executing', 'completed', 'failed', 'rejected')",
            name="ck_tasks_status",
        ),
    )
    op.create_index("ix_tasks_created_at", "tasks", ["created_at"])
    op.create_index("ix_tasks_status", "tasks", ["status"])
    op.create_index("ix_tasks_created_at_task_id", "tasks", ["created_at", "task_id"])

    op.create_table(
        "execution_logs",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("step_number", sa.Integer(), nullable=False),
        sa.Column("agent_type", sa.String(16), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("output_summary", sa.String(500)),
        sa.Column("output_full", postgresql.JSONB()),
        sa.Column("duration_ms", sa.Integer()),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("recorded_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_execution_logs"),
        sa.UniqueConstraint("event_id", name="uq_execution_logs_event_id"),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.task_id"], name="fk_execution_logs_task_id_tasks"
        ),
        sa.CheckConstraint(
            "status IN ('running', 'completed', 'failed')", name="ck_execution_logs_status"
        ),
    )
    op.create_index("ix_execution_logs_task_id", "execution_logs", ["task_id", "step_number"])


def downgrade() -> None:
    op.drop_table("execution_logs")
    op.drop_table("tasks")
