"""005 least-privilege application role.

Creates (if missing) the role the service connects as, ``taskledger_app`` unless the
migration is given another name (``-x app_role=NAME`` or ``TASKLEDGER_APP_ROLE``),
and grants it only what the service needs: no UPDATE or DELETE on append-only tables,
no DELETE on tasks, no TRUNCATE, no DDL. The role is cluster-wide, so the downgrade
revokes this database's grants but leaves the role for other databases.

Revision ID: 005_app_role
Revises: 004_audit_columns
Create Date: 2026-11-22
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from alembic import context, op

revision: str = "005_app_role"
down_revision: str | None = "004_audit_columns"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GRANTS = {
    "tasks": "SELECT, INSERT, UPDATE",
    "event_ledger": "SELECT, INSERT",
    "execution_logs": "SELECT, INSERT",
    "pause_history": "SELECT, INSERT",
    "operator_actions": "SELECT, INSERT",
    "pause_queue": "SELECT, INSERT, UPDATE, DELETE",
    "agent_capacity": "SELECT, INSERT, UPDATE, DELETE",
    "dispatch_holds": "SELECT, INSERT, UPDATE, DELETE",
    "outbox": "SELECT, INSERT, UPDATE",
}


def app_role() -> str:
    """The application role's name, checked to be a plain identifier."""
    name = context.get_x_argument(as_dictionary=True).get("app_role") or os.environ.get(
        "TASKLEDGER_APP_ROLE", "taskledger_app"
    )
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"invalid app role name {name!r}")
    return name


def upgrade() -> None:
    role = app_role()
    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
                CREATE ROLE {role} NOLOGIN;
            END IF;
        EXCEPTION WHEN duplicate_object THEN NULL;  -- created concurrently
        END
        $$;
        """
    )
    op.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
    for table, privileges in GRANTS.items():
        op.execute(f"GRANT {privileges} ON {table} TO {role}")
    op.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}")
    op.execute("GRANT SELECT ON alembic_version TO " + role)


def downgrade() -> None:
    role = app_role()
    for table in GRANTS:
        op.execute(f"REVOKE ALL ON {table} FROM {role}")
    op.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role}")
    op.execute(f"REVOKE ALL ON alembic_version FROM {role}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {role}")
