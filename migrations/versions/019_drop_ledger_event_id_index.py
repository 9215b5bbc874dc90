"""019 drop the month partitions' event_id index: ids are found through ledger_event_ids.

Every event id ever recorded has its row in ``ledger_event_ids`` (013) with the
(seq, received_at) key of its ledger row, claimed in the same statement that writes the
row. The plain ``(event_id)`` index that 013 also put on every month partition of
``event_ledger`` was therefore a second copy of the same map, and the costlier one: a
random-UUID B-tree in the month being written, one random leaf per event. At 20,000,000
rows it was the largest part of the insert's slowdown against an empty ledger (the
month's indexes 16 -> 29 ms a batch, docs/SCALING.md), and 44 bytes of every row on disk.

The two statements that still looked an id up in the ledger itself now go through the
key table (``insert_resolutions``, ``verify_pause_history_orphans``), as every other
lookup by id already did. ``verify`` checks that the key table and the ledger agree
(``verify_unkeyed_rows``): a row whose id has no key, or a key naming another row, is
reported; so is a key whose row is gone outside the archived months
(``verify_dangling_keys``).

Dropping an index on a partitioned table drops it on every partition (a short ACCESS
EXCLUSIVE lock on each, no rewrite). Months already archived (014) were detached with
their own copy of the index and keep it.

Revision ID: 019_drop_ledger_event_id_index
Revises: 018_task_lifecycle_keys
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "019_drop_ledger_event_id_index"
down_revision: str | None = "018_task_lifecycle_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_event_ledger_event_id")


def downgrade() -> None:
    op.execute("CREATE INDEX IF NOT EXISTS ix_event_ledger_event_id ON event_ledger (event_id)")
