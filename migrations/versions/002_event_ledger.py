"""002 event ledger: every accepted event stored verbatim once (the inbox).

Revision ID: 002_event_ledger
Revises: 001_initial_schema
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "002_event_ledger"
down_revision: str | None = "001_initial_schema"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "event_ledger",
        sa.Column("seq", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("task_id", sa.Uuid()),
        sa.Column("event_time", TZ, nullable=False),
        sa.Column("received_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("schema_version", sa.SmallInteger(), nullable=False),
        sa.Column("envelope", postgresql.JSONB(), nullable=False),
        sa.Column("conflict_with", sa.Uuid()),
        sa.PrimaryKeyConstraint("seq", name="pk_event_ledger"),
        sa.UniqueConstraint("event_id", name="uq_event_ledger_event_id"),
    )
    op.create_index("ix_event_ledger_task_id", "event_ledger", ["task_id", "seq"])
    op.create_index(
        "ix_event_ledger_event_type_received_at", "event_ledger", ["event_type", "received_at"]
    )


def downgrade() -> None:
    op.drop_table("event_ledger")
