"""009 suggestions after the fact: append-only ``task_suggestions`` and
``suggestion_resolutions``; ``tasks.suggestions`` goes.

A finished task stays frozen: suggestions (``task.suggested``) and their resolutions
(``suggestion.resolved``) are appended beside it, never written into the task row. The
``tasks.suggestions`` column had no writer but the sample data; it goes, one way only,
and the read model of a task's suggestions is these two tables (the API and the CLI
show them on the task). What the column held is kept: each entry of the plan's list
shape, or each ``next_steps`` item of the older sample shape, becomes a row with
``source`` ``migration:009``; the downgrade writes the plan's list shape back.

Revision ID: 009_suggestions
Revises: 008_plan_names
Create Date: 2026-11-30
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "009_suggestions"
down_revision: str | None = "008_plan_names"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)
TABLES = ("task_suggestions", "suggestion_resolutions")

KEEP_COLUMN = """
INSERT INTO task_suggestions (suggestion_id, task_id, position, suggestion, reason, created_at,
                              source)
SELECT md5(t.task_id::text || ':migrated:' || s.n)::uuid, t.task_id, s.n::int,
       coalesce(s.item ->> 'suggestion', s.item #>> '{}'),
       coalesce(s.item ->> 'reason', 'kept from tasks.suggestions'),
       coalesce((s.item ->> 'created_at')::timestamptz, t.updated_at), 'migration:009'
FROM tasks t
CROSS JOIN LATERAL jsonb_array_elements(
    CASE jsonb_typeof(t.suggestions)
         WHEN 'array' THEN t.suggestions
         WHEN 'object' THEN coalesce(t.suggestions -> 'next_steps', '[]'::jsonb)
         ELSE '[]'::jsonb END) WITH ORDINALITY AS s(item, n)
WHERE t.suggestions IS NOT NULL
"""

RESTORE_COLUMN = """
UPDATE tasks t SET suggestions = s.list
FROM (SELECT task_id,
             jsonb_agg(jsonb_build_object('suggestion', suggestion, 'reason', reason,
                                          'created_at', created_at)
                       ORDER BY created_at, position) AS list
      FROM task_suggestions GROUP BY task_id) AS s
WHERE s.task_id = t.task_id
"""


def app_role() -> str:
    """The application role's name (as 005 created it), checked to be a plain identifier."""
    name = os.environ.get("TASKLEDGER_APP_ROLE", "taskledger_app")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"invalid app role name {name!r}")
    return name


def upgrade() -> None:
    op.create_table(
        "task_suggestions",
        sa.Column("suggestion_id", sa.Uuid(), nullable=False),
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("suggestion", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("recorded_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("suggestion_id", name="pk_task_suggestions"),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.task_id"], name="fk_task_suggestions_task_id_tasks"
        ),
    )
    op.create_index("ix_task_suggestions_task_id", "task_suggestions", ["task_id", "created_at"])
    op.create_table(
        "suggestion_resolutions",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("suggestion_id", sa.Uuid(), nullable=False),
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("resolution", sa.String(16), nullable=False),
        sa.Column("resolved_by", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("resolved_at", TZ, nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("recorded_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_suggestion_resolutions"),
        sa.ForeignKeyConstraint(
            ["suggestion_id"],
            ["task_suggestions.suggestion_id"],
            name="fk_suggestion_resolutions_suggestion_id_task_suggestions",
        ),
        sa.CheckConstraint(
            "resolution IN ('applied', 'rejected')", name="ck_suggestion_resolutions_resolution"
        ),
    )
    op.create_index(
        "ix_suggestion_resolutions_suggestion_id",
        "suggestion_resolutions",
        ["suggestion_id", "resolved_at"],
    )
    role = app_role()
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER enforce_{table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION prevent_append_only_change()"
        )
        op.execute(
            f"CREATE TRIGGER enforce_{table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION prevent_truncate()"
        )
        op.execute(f"GRANT SELECT, INSERT ON {table} TO {role}")
    op.execute(KEEP_COLUMN)
    op.drop_column("tasks", "suggestions")


def downgrade() -> None:
    op.add_column("tasks", sa.Column("suggestions", postgresql.JSONB()))
    op.execute("ALTER TABLE tasks DISABLE TRIGGER enforce_task_immutability")
    op.execute(RESTORE_COLUMN)
    op.execute("ALTER TABLE tasks ENABLE TRIGGER enforce_task_immutability")
    role = app_role()
    for table in reversed(TABLES):
        op.execute(f"REVOKE ALL ON {table} FROM {role}")
        op.execute(f"DROP TRIGGER IF EXISTS enforce_{table}_no_truncate ON {table}")
        op.execute(f"DROP TRIGGER IF EXISTS enforce_{table}_append_only ON {table}")
        op.drop_table(table)
