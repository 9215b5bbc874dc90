"""The event ledger: every accepted event stored once, keyed by its CloudEvents id."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

import asyncpg

from consumer.core import metrics
from consumer.store.db import q
from contracts import TERMINAL_EVENT_TYPES, Event

log = logging.getLogger(__name__)


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def task_lock_keys(task_id: uuid.UUID) -> tuple[int, int]:
    """The advisory-lock keys that serialise writers of one task.

    The first mixes both halves of the id: the first half of a time-ordered UUIDv7 is
    mostly its millisecond, so tasks created in the same millisecond would otherwise
    share a key and their writers wait on each other. The second is the first half
    alone, the key of the release before: taking it as well keeps writers of both
    releases apart from each other during a rolling upgrade (the next release can drop
    it). ``lock_tasks`` takes every key of a batch in ascending order: no deadlocks.
    """
    high = int.from_bytes(task_id.bytes[:8], "big")
    low = int.from_bytes(task_id.bytes[8:], "big")
    return _signed64(high ^ low), _signed64(high)


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
    ``conflict_with`` set. With ``chain`` (the default) the new rows are listed in
    ``ledger_unsealed`` (012): the sealer (:mod:`consumer.ledger.sealer`) chains them into
    the tamper-evidence hash chain after commit, one link per call, so writers take no
    global lock. Returns the events that were new, in the given order (an id already
    recorded, or repeated within ``events``, is returned once at most). ``trigger`` (why
    the batch was flushed) goes on the link.
    """
    if not events:
        return []
    task_ids = {e.task_id for e in events if e.task_id is not None}
    if task_ids:
        await conn.execute(q("lock_tasks"), [k for t in task_ids for k in task_lock_keys(t)])
    conflicts = await _conflicts(conn, events)
    if conflicts:
        metrics.CONFLICTS.inc(len(conflicts))
    columns = (
        [e.id for e in events],
        [e.type.value for e in events],
        [e.source for e in events],
        [e.task_id for e in events],
        [e.time for e in events],
        [e.envelope.schemaversion for e in events],
        [e.body.decode("utf-8") for e in events],
        [conflicts.get(e.id) for e in events],
    )
    rows = await conn.fetch(q("insert_ledger_events"), *columns, trigger, chain)
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
    event recorded first. An id whose first event was archived (013: its month's
    partition detached; the id stays in ``ledger_event_ids``) cannot be compared: it is
    taken as a duplicate of the archived event and logged (``duplicate_of_archived``).
    """
    fresh = {id(e) for e in new}
    seen = [e for e in events if id(e) not in fresh]
    if not seen:
        return []
    rows = await conn.fetch(
        q("ledger_same_event"), [e.id for e in seen], [e.body.decode("utf-8") for e in seen]
    )
    conflicts: list[tuple[Event, str]] = []
    archived: list[tuple[Event, asyncpg.Record]] = []
    for event, row in zip(seen, rows, strict=True):
        if row["same_event"] is None:  # the first event's row left with an archived month
            archived.append((event, row))
            continue
        if row["same_event"]:
            continue
        conflicts.append((event, (
            f"event id {event.id} is already recorded for another event: ledger seq "
            f"{row['seq']}, type {row['event_type']}, source {row['source']!r}; this one "
            f"({event.type.value} from {event.source!r}) differs in source or content"
        )))  # fmt: skip
    if conflicts:
        metrics.ID_CONFLICTS.inc(len(conflicts))
    if archived:
        _log_archived(archived)
    return conflicts


def _log_archived(archived: Sequence[tuple[Event, asyncpg.Record]]) -> None:
    """One warning for the events of a batch whose id belongs to an archived event."""
    first = [
        f"{event.id} (seq {row['seq']}, received {row['received_at']:%Y-%m-%d})"
        for event, row in archived[:5]
    ]
    more = f" and {len(archived) - 5} more" if len(archived) > 5 else ""
    log.warning(
        f"{len(archived)} event(s) repeat the id of an archived event, taken as duplicates "
        f"(content not compared): {', '.join(first)}{more}",
        extra={"action": "duplicate_of_archived", "count": len(archived),
               "event_ids": [str(event.id) for event, _ in archived[:100]]},
    )  # fmt: skip
