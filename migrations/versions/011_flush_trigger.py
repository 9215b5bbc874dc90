"""011 the batch flush trigger on each ledger chain link, where an operator can see it.

A link of the hash chain is one committed write batch; ``trigger`` says why the batch
was flushed: ``count`` (it was full), ``timeout`` (its linger time passed) or
``end_of_source`` (the consumer stopped and drained what it held). NULL for links
written before 011 and for the halves of a batch split to find a bad event. The
trigger is not part of the link's hash (the chain is unchanged). ``taskledger audit
flushes`` counts the links by trigger.

Revision ID: 011_flush_trigger
Revises: 010_task_recoveries
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "011_flush_trigger"
down_revision: str | None = "010_task_recoveries"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("ledger_chain", sa.Column("trigger", sa.String(16), nullable=True))


def downgrade() -> None:
    op.drop_column("ledger_chain", "trigger")
