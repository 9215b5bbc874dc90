"""008 the phase-1 plan's names and shapes, so its post-mortem queries run as written.

- ``execution_logs``: the plan's ``log_id`` (UUID primary key; for a projected step it is
  the ``task.step`` event's id) replaces the surrogate ``id``, and ``created_at`` is named
  ``timestamp`` again.
- ``tasks.external_ai_used`` becomes a summary object that ``->> 'model'`` and
  ``->> 'cost_usd'`` answer: ``{"model", "provider", "token_count", "cost_usd", "calls"}``
  (``model``/``provider``: the distinct names in call order joined by ", "; totals over
  the calls; ``calls``: the list as the event carried it). A task without calls is NULL.
- resources are whole seconds and megabytes: ``duration_seconds`` of the actual and
  estimated resources is rounded to an integer (the plan casts it with ``::int``).
- ``tasks.project_id`` is a UUID (nullable). A stored value that was not a UUID becomes
  ``md5(value)::uuid`` (deterministic; the original text stays in the ledger's event).

Data is kept: every row is converted in place. The immutability and append-only triggers
are disabled only for the duration of the conversion, inside the migration's transaction.
The downgrade restores the names, the list shape and TEXT; rounded durations and hashed
project ids stay as they are (they are valid values of the older schema).

Revision ID: 008_plan_names
Revises: 007_failure_indexes
Create Date: 2026-11-30
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "008_plan_names"
down_revision: str | None = "007_failure_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UUID_RE = "^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"

SUMMARISE_AI = """
UPDATE tasks AS t SET external_ai_used = CASE
    WHEN jsonb_array_length(t.external_ai_used) = 0 THEN NULL
    ELSE (SELECT jsonb_build_object(
                 'model', (SELECT string_agg(m, ', ' ORDER BY o) FROM (
                           SELECT c ->> 'model' AS m, min(i) AS o
                           FROM jsonb_array_elements(t.external_ai_used) WITH ORDINALITY AS x(c, i)
                           GROUP BY 1) AS ms),
                 'provider', (SELECT string_agg(p, ', ' ORDER BY o) FROM (
                           SELECT c ->> 'provider' AS p, min(i) AS o
                           FROM jsonb_array_elements(t.external_ai_used) WITH ORDINALITY AS x(c, i)
                           GROUP BY 1) AS ps),
                 'token_count', coalesce(sum((c ->> 'token_count')::numeric), 0),
                 'cost_usd', coalesce(sum((c ->> 'cost_usd')::numeric), 0),
                 'calls', t.external_ai_used)
          FROM jsonb_array_elements(t.external_ai_used) AS c)
    END
WHERE jsonb_typeof(t.external_ai_used) = 'array'
"""

UNSUMMARISE_AI = """
UPDATE tasks SET external_ai_used = external_ai_used -> 'calls'
WHERE jsonb_typeof(external_ai_used) = 'object'
"""

WHOLE_SECONDS = """
UPDATE tasks SET {col} = jsonb_set({col}, '{{duration_seconds}}',
                                   to_jsonb(round(({col} ->> 'duration_seconds')::numeric)))
WHERE jsonb_typeof({col} -> 'duration_seconds') = 'number'
  AND ({col} ->> 'duration_seconds') !~ '^[0-9]+$'  -- 600.0 is no ::int either
"""


def app_role() -> str:
    """The application role's name (as 005 created it), checked to be a plain identifier."""
    name = os.environ.get("TASKLEDGER_APP_ROLE", "taskledger_app")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"invalid app role name {name!r}")
    return name


def upgrade() -> None:
    op.execute("ALTER TABLE tasks DISABLE TRIGGER enforce_task_immutability")
    op.execute("ALTER TABLE execution_logs DISABLE TRIGGER enforce_execution_logs_append_only")

    op.alter_column("execution_logs", "created_at", new_column_name="timestamp")
    op.add_column(
        "execution_logs",
        sa.Column("log_id", sa.Uuid(), server_default=sa.text("gen_random_uuid()")),
    )
    op.execute("UPDATE execution_logs SET log_id = event_id")
    op.alter_column("execution_logs", "log_id", nullable=False)
    op.drop_constraint("pk_execution_logs", "execution_logs", type_="primary")
    op.drop_column("execution_logs", "id")
    op.create_primary_key("pk_execution_logs", "execution_logs", ["log_id"])

    op.execute(SUMMARISE_AI)
    op.execute(WHOLE_SECONDS.format(col="actual_resources"))
    op.execute(WHOLE_SECONDS.format(col="estimated_resources"))
    op.execute(
        "ALTER TABLE tasks ALTER COLUMN project_id TYPE uuid USING CASE "
        f"WHEN project_id ~ '{UUID_RE}' THEN project_id::uuid "
        "ELSE md5(project_id)::uuid END"
    )
    op.create_index("ix_tasks_project_id", "tasks", ["project_id", "created_at"])

    op.execute("ALTER TABLE execution_logs ENABLE TRIGGER enforce_execution_logs_append_only")
    op.execute("ALTER TABLE tasks ENABLE TRIGGER enforce_task_immutability")


def downgrade() -> None:
    op.execute("ALTER TABLE tasks DISABLE TRIGGER enforce_task_immutability")

    op.drop_index("ix_tasks_project_id", table_name="tasks")
    op.execute("ALTER TABLE tasks ALTER COLUMN project_id TYPE text USING project_id::text")
    op.execute(UNSUMMARISE_AI)

    op.drop_constraint("pk_execution_logs", "execution_logs", type_="primary")
    # A bigserial column added to a filled table numbers the rows in storage order.
    op.execute("ALTER TABLE execution_logs ADD COLUMN id bigserial NOT NULL")
    op.create_primary_key("pk_execution_logs", "execution_logs", ["id"])
    op.execute(f"GRANT USAGE, SELECT ON SEQUENCE execution_logs_id_seq TO {app_role()}")
    op.drop_column("execution_logs", "log_id")
    op.alter_column("execution_logs", "timestamp", new_column_name="created_at")

    op.execute("ALTER TABLE tasks ENABLE TRIGGER enforce_task_immutability")
