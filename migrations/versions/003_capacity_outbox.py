"""003 agent capacity, dispatch holds, outbox and operator actions.

Revision ID: 003_capacity_outbox
Revises: 002_event_ledger
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "003_capacity_outbox"
down_revision: str | None = "002_event_ledger"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "agent_capacity",
        sa.Column("agent_id", sa.Text(), nullable=False),
        sa.Column("agent_type", sa.String(16), nullable=False),
        sa.Column("free_gpu_vram_mb", sa.Integer(), nullable=False),
        sa.Column("free_cpu_cores", sa.Float(), nullable=False),
        sa.Column("free_memory_mb", sa.Integer(), nullable=False),
        sa.Column("load_pct", sa.Float(), nullable=False),
        sa.Column("accepting", sa.Boolean(), nullable=False),
        sa.Column("reported_at", TZ, nullable=False),
        sa.Column("report_event_id", sa.Uuid(), nullable=False),
        sa.Column("received_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column(
            "reserved_gpu_vram_mb", sa.Integer(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("reserved_cpu_cores", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("reserved_memory_mb", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("agent_id", name="pk_agent_capacity"),
    )
    op.create_index("ix_agent_capacity_agent_type", "agent_capacity", ["agent_type", "reported_at"])

    op.create_table(
        "dispatch_holds",
        sa.Column("hold_key", sa.Text(), nullable=False),
        sa.Column("scope", sa.String(8), nullable=False),
        sa.Column("task_id", sa.Uuid()),
        sa.Column("reason", sa.Text()),
        sa.Column("resume_after", TZ),
        sa.Column("created_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("event_id", sa.Uuid()),
        sa.PrimaryKeyConstraint("hold_key", name="pk_dispatch_holds"),
        sa.CheckConstraint("scope IN ('all', 'task')", name="ck_dispatch_holds_scope"),
    )

    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("exchange", sa.Text(), nullable=False),
        sa.Column("routing_key", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("task_id", sa.Uuid()),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("sent_at", TZ),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.UniqueConstraint("message_id", name="uq_outbox_message_id"),
    )
    op.create_index(
        "ix_outbox_unsent", "outbox", ["id"], postgresql_where=sa.text("sent_at IS NULL")
    )

    op.create_table(
        "operator_actions",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column(
            "params", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column("result", postgresql.JSONB()),
        sa.Column("event_id", sa.Uuid()),
        sa.PrimaryKeyConstraint("id", name="pk_operator_actions"),
    )
    op.create_index("ix_operator_actions_at", "operator_actions", ["at"])


def downgrade() -> None:
    op.drop_table("operator_actions")
    op.drop_table("outbox")
    op.drop_table("dispatch_holds")
    op.drop_table("agent_capacity")
