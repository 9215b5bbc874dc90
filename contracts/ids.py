"""New event and task ids: UUIDv7 (RFC 9562), ordered by creation time.

The wire contract takes any canonical UUID as an event ``id`` or a task id. Time-ordered
ones keep the ledger fast as it grows: every id is a key of ``ledger_event_ids`` (the
global deduplication) and every task id of several per-task indexes, and a new
time-ordered key lands at the right edge of each index, where a random one lands on a
random leaf of an index that grows without end (docs/SCALING.md: with 20,000,000 rows
present, inserts ran at 0.90-0.95 of an empty ledger with UUIDv7 ids, 0.63-0.68 with
random UUIDv4 ids on the same machine).
"""

from __future__ import annotations

import os
import time
from uuid import UUID

__all__ = ["new_id"]


def new_id(at_ms: int | None = None) -> UUID:
    """A new UUIDv7: 48 bits of Unix time in milliseconds (``at_ms``, default now), then
    74 random bits (ids of one millisecond are not ordered among themselves)."""
    ms = time.time_ns() // 1_000_000 if at_ms is None else at_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = ((ms & (2**48 - 1)) << 80) | (0x7 << 76) | (((rand >> 62) & 0xFFF) << 64)
    return UUID(int=value | (0b10 << 62) | (rand & (2**62 - 1)))
