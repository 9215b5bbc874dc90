"""014 ledger archives: months exported to a file, then detached (retention without DELETE).

``taskledger archive --before YYYY-MM`` (the owner role) exports each month partition of
``event_ledger`` (013) with the chain links that seal it and the projections of its
tasks to a JSONL file with its SHA-256, verifies the file against the chain, then, in
one transaction, detaches the month's partitions of ``event_ledger`` and
``execution_logs``, moves them to the schema ``ledger_archive`` (standalone tables, to
drop once the file is stored safely) and records the month here:

- ``ledger_archives``: one row per archived month: the file and its SHA-256, the counts,
  the first and last seq, the archived links' ids, and the boundary links (archived
  links whose successor was not archived) with their hashes: ``taskledger verify``
  checks the first remaining link after archived ones against them;
- ``ledger_archived_tasks``: the tasks that had events in an archived month; their
  ``tasks`` rows stay (the projection table is not partitioned) but can no longer be
  recomputed from the ledger, so verify leaves them out of the projection check.

Both are append-only (the triggers of 004); the app role may read them (verify).

Revision ID: 014_ledger_archives
Revises: 013_partitioned_ledger
Create Date: 2026-11-30
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "014_ledger_archives"
down_revision: str | None = "013_partitioned_ledger"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)
TABLES = ("ledger_archives", "ledger_archived_tasks")
#: Where detached month partitions are kept (out of ``public``; dropped by the operator).
ARCHIVE_SCHEMA = "ledger_archive"


def app_role() -> str:
    """The application role's name (as 005 created it), checked to be a plain identifier."""
    name = os.environ.get("TASKLEDGER_APP_ROLE", "taskledger_app")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"invalid app role name {name!r}")
    return name


def upgrade() -> None:
    op.create_table(
        "ledger_archives",
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("file_name", sa.Text(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("row_count", sa.BigInteger(), nullable=False),
        sa.Column("step_count", sa.BigInteger(), nullable=False),
        sa.Column("task_count", sa.BigInteger(), nullable=False),
        sa.Column("first_seq", sa.BigInteger()),
        sa.Column("last_seq", sa.BigInteger()),
        sa.Column("link_ids", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.Column("boundary_links", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.Column("boundary_hashes", postgresql.ARRAY(sa.LargeBinary()), nullable=False),
        sa.Column("partitions", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("archived_by", sa.Text(), nullable=False),
        sa.Column("archived_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("month", name="pk_ledger_archives"),
    )
    op.create_table(
        "ledger_archived_tasks",
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", name="pk_ledger_archived_tasks"),
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
        op.execute(f"GRANT SELECT ON {table} TO {role}")
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {ARCHIVE_SCHEMA}")


def downgrade() -> None:
    # The schema may hold detached months (data): it is left for the operator to drop.
    for table in reversed(TABLES):
        op.drop_table(table)
