"""012 asynchronous sealing: writers no longer take the chain's lock.

Until 011 every write batch appended its own ``ledger_chain`` link under one global
advisory lock held until commit, so N writers serialised. From 012 a writer only lists
the seqs it recorded in ``ledger_unsealed``, in the same transaction as the rows (no
lock), with its write batch (the batch's first seq), its ``received_at`` (for the month),
the row's digest taken in that transaction (as before 012: the sealer reads only the
markers, never the rows, so its sequential work per row is small) and the batch's flush
trigger (011); the sealer (:mod:`consumer.ledger.sealer`, run by the service and by
``taskledger seal``) links committed batches shortly after, oldest batch first, one
link per write batch and UTC calendar month of ``received_at`` (a link never seals
rows of two months), and deletes their markers. Only sealers take the chain's lock
(``pg_try_advisory_xact_lock``): one seals at a time, the others skip.

``taskledger verify`` reports a listed row younger than the seal bound as pending, an
older one as ``seal_overdue``. Existing rows are not listed: they are sealed already,
or were written with the chain off. The app role may insert, read and delete markers
(deleting one leaves an ``unsealed`` row; a forged digest is sealed and then reported
as ``altered``: the app role cannot change a ledger row, so it gains nothing).

Revision ID: 012_async_seal
Revises: 011_flush_trigger
Create Date: 2026-11-30
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "012_async_seal"
down_revision: str | None = "011_flush_trigger"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def app_role() -> str:
    """The application role's name (as 005 created it), checked to be a plain identifier."""
    name = os.environ.get("TASKLEDGER_APP_ROLE", "taskledger_app")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"invalid app role name {name!r}")
    return name


def upgrade() -> None:
    op.create_table(
        "ledger_unsealed",
        sa.Column("batch", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("digest", sa.LargeBinary(), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=True),
        sa.PrimaryKeyConstraint("batch", "seq", name="pk_ledger_unsealed"),
    )
    op.execute(f"GRANT SELECT, INSERT, DELETE ON ledger_unsealed TO {app_role()}")


def downgrade() -> None:
    # 011's writers seal in their own transaction and know nothing of the sealer's
    # backlog: rows still listed would stay unsealed for good.
    op.execute(
        """
        DO $$
        BEGIN
            IF EXISTS (SELECT 1 FROM ledger_unsealed) THEN
                RAISE EXCEPTION 'ledger rows are waiting for the sealer: stop the services '
                    'and run `taskledger seal` before downgrading below 012';
            END IF;
        END
        $$;
        """
    )
    op.execute(f"REVOKE ALL ON ledger_unsealed FROM {app_role()}")
    op.drop_table("ledger_unsealed")
