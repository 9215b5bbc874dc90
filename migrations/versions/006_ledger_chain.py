"""006 tamper evidence: a hash chain over the event ledger.

Each write batch appends one ``ledger_chain`` link holding the sequence numbers and
digests of the ledger rows it recorded, chained to the previous link by SHA-256, under
an advisory lock so concurrent writers cannot fork the chain. (Since 012 the link is
appended shortly after the batch commits by the sealer, the only holder of that lock;
writers list their rows in ``ledger_unsealed``.) ``taskledger verify``
recomputes every row's digest and every link and reports the first row altered,
inserted or removed behind the service's back (e.g. by a superuser with triggers off).

Revision ID: 006_ledger_chain
Revises: 005_app_role
Create Date: 2026-11-22
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "006_ledger_chain"
down_revision: str | None = "005_app_role"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The canonical text of a ledger row; consumer/ledger/verify.py rebuilds it byte for byte
#: (the sealer's ``seal_take`` statement computes it inline, consumer/store/sql/ledger.sql).
LEDGER_ROW_DIGEST = """
CREATE OR REPLACE FUNCTION ledger_row_digest(l event_ledger) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(convert_to(
        l.seq::text || '|' || l.event_id::text || '|' || l.event_type || '|' || l.source
        || '|' || coalesce(l.task_id::text, '')
        || '|' || to_char(l.event_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')
        || '|' || to_char(l.received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')
        || '|' || l.schema_version::text || '|' || l.envelope::text
        || '|' || coalesce(l.conflict_with::text, ''),
        'UTF8'))
$$;
"""


def upgrade() -> None:
    op.create_table(
        "ledger_chain",
        sa.Column("link", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("seqs", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.Column("row_digests", postgresql.ARRAY(sa.LargeBinary()), nullable=False),
        sa.Column("prev_hash", sa.LargeBinary()),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("link", name="pk_ledger_chain"),
    )
    op.execute(LEDGER_ROW_DIGEST)
    op.execute(
        "CREATE TRIGGER enforce_ledger_chain_append_only BEFORE UPDATE OR DELETE ON ledger_chain "
        "FOR EACH ROW EXECUTE FUNCTION prevent_append_only_change()"
    )
    op.execute(
        "CREATE TRIGGER enforce_ledger_chain_no_truncate BEFORE TRUNCATE ON ledger_chain "
        "FOR EACH STATEMENT EXECUTE FUNCTION prevent_truncate()"
    )
    role = os.environ.get("TASKLEDGER_APP_ROLE", "taskledger_app")
    op.execute(f"GRANT SELECT, INSERT ON ledger_chain TO {role}")
    op.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}")


def downgrade() -> None:
    op.drop_table("ledger_chain")
    op.execute("DROP FUNCTION IF EXISTS ledger_row_digest(event_ledger)")
