"""The event ledger: every accepted event stored once, keyed by its CloudEvents id."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from consumer.core import metrics
from consumer.store.db import q
from contracts import TERMINAL_EVENT_TYPES, Event


def task_lock_key(task_id: uuid.UUID) -> int:
    """The advisory-lock key that serialises writers of one task."""
    return int.from_bytes(task_id.bytes[:8], "big", signed=True)


async def _conflicts(
    conn: asyncpg.Connection, events: Sequence[Event]
) -> dict[uuid.UUID, uuid.UUID]:
    """Map each terminal event that is a second terminal for its task to the first one."""
    terminal = [e for e in events if e.type in TERMINAL_EVENT_TYPES and e.task_id is not None]
    if not terminal:
        return {}
    rows = await conn.fetch(q("existing_terminal_events"), list({e.task_id for e in terminal}))
    first: dict[uuid.UUID, uuid.UUID] = {r["task_id"]: r["event_id"] for r in rows}
    conflicts: dict[uuid.UUID, uuid.UUID] = {}
    for event in terminal:
        assert event.task_id is not None
        winner = first.setdefault(event.task_id, event.id)
        if winner != event.id:
            conflicts[event.id] = winner
    return conflicts


async def record_events(
    conn: asyncpg.Connection,
    events: Sequence[Event],
    *,
    chain: bool = True,
    trigger: str | None = None,
) -> list[Event]:
    """Insert ``events`` into the ledger inside the caller's transaction.

    Takes the per-task advisory locks first, so concurrent consumers never interleave
    the writes of one task. A second terminal event for a task is stored with
    ``conflict_with`` set. With ``chain`` (the default) the new rows are sealed into the
    tamper-evidence hash chain (:mod:`consumer.ledger.verify`). Returns the events that were
    new, in the given order (an id already recorded, or repeated within ``events``, is
    returned once at most). ``trigger`` (why the batch was flushed) goes on the link.
    """
    if not events:
        return []
    task_ids = [e.task_id for e in events if e.task_id is not None]
    if task_ids:
        await conn.execute(q("lock_tasks"), [task_lock_key(t) for t in task_ids])
    conflicts = await _conflicts(conn, events)
    if conflicts:
        metrics.CONFLICTS.inc(len(conflicts))
    rows = await conn.fetch(
        q("insert_ledger_events_sealed" if chain else "insert_ledger_events"),
        [e.id for e in events],
        [e.type.value for e in events],
        [e.source for e in events],
        [e.task_id for e in events],
        [e.time for e in events],
        [e.envelope.schemaversion for e in events],
        [e.body.decode("utf-8") for e in events],
        [conflicts.get(e.id) for e in events],
    )
    if rows and chain:
        # Last step before the caller's projection: the chain lock serialises writers
        # only from here to their commit.
        sealed = sorted((r["seq"], r["digest"]) for r in rows)
        await conn.execute(q("lock_chain"))
        await conn.execute(
            q("append_chain_link"), [seq for seq, _ in sealed], [d for _, d in sealed], trigger
        )
    inserted = {r["event_id"] for r in rows}
    new: list[Event] = []
    for event in events:
        if event.id in inserted:
            inserted.discard(event.id)
            new.append(event)
    return new


async def id_conflicts(
    conn: asyncpg.Connection, events: Sequence[Event], new: Sequence[Event]
) -> list[tuple[Event, str]]:
    """The events of ``events`` that were not recorded now because another event holds
    their id: a different source or different content.

    ``new`` is what :func:`record_events` returned for ``events`` in this transaction. A
    re-delivery of the same event (same id, same source, same content) is an ordinary
    duplicate and is not returned. Each conflict comes with an error text that names the
    event recorded first.
    """
    fresh = {id(e) for e in new}
    seen = [e for e in events if id(e) not in fresh]
    if not seen:
        return []
    rows = await conn.fetch(
        q("ledger_same_event"), [e.id for e in seen], [e.body.decode("utf-8") for e in seen]
    )
    conflicts: list[tuple[Event, str]] = []
    for event, row in zip(seen, rows, strict=True):
        if row["same_event"]:
            continue
        conflicts.append((event, (
            f"event id {event.id} is already recorded for another event: ledger seq "
            f"{row['seq']}, type {row['event_type']}, source {row['source']!r}; this one "
            f"({event.type.value} from {event.source!r}) differs in source or content"
        )))  # fmt: skip
    if conflicts:
        metrics.ID_CONFLICTS.inc(len(conflicts))
    return conflicts
