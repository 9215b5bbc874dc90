"""The audit handler: writes what :func:`~consumer.audit.fold.fold` says into ``tasks``
and ``execution_logs``, inside the runner's transaction."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from consumer.audit.fold import CHANGE_KEY, LIFECYCLE_TYPES, TASK_COLUMNS, LedgerRow, fold
from consumer.broker.topology import Names
from consumer.runtime.handler import ServiceContext
from consumer.store.db import q
from contracts import Event, EventType, TaskStatus

_FINISHED = frozenset({s.value for s in TaskStatus if s.is_terminal})


def _row_count(status: str) -> int:
    """The row count of a command status such as ``INSERT 0 5`` (unknown: assume some)."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 1


class AuditHandler:
    """Projects ``task.*`` events into ``tasks`` and ``execution_logs``."""

    name = "audit"

    def queue(self, names: Names) -> str:
        """The audit queue."""
        return names.audit

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Event]) -> None:
        """Re-fold every task touched by ``events`` and write what changed."""
        lifecycle_tasks = list(
            {e.task_id for e in events if e.type in LIFECYCLE_TYPES and e.task_id}
        )
        created: list[uuid.UUID] = []
        waiting: list[asyncpg.Record] = []
        if lifecycle_tasks:
            # what a task created now must catch up on, read before its row exists (016)
            waiting = await conn.fetch(q("taskless_keys"), lifecycle_tasks)
            created = await self._project(conn, lifecycle_tasks)
        new_rows = set(created)
        caught = [w for w in waiting if w["task_id"] in new_rows]
        keys = ([w["seq"] for w in caught], [w["received_at"] for w in caught])
        step_ids = [e.id for e in events if e.type == EventType.TASK_STEP]
        if step_ids or caught:
            await conn.execute(q("insert_steps"), step_ids, *keys, [])
        await self._suggestions(conn, events, created, keys)

    async def _suggestions(
        self,
        conn: asyncpg.Connection,
        events: Sequence[Event],
        created: list[uuid.UUID],
        keys: tuple[list[int], list[Any]],
    ) -> None:
        """Append suggestions and their resolutions; those that waited for their task (or
        their suggestion) apply once it exists (``keys``: the events that waited for a
        task created now)."""
        suggested = [e for e in events if e.type == EventType.TASK_SUGGESTED]
        resolved = [e.id for e in events if e.type == EventType.SUGGESTION_RESOLVED]
        appended = 0
        if suggested or keys[0]:
            status = await conn.execute(q("insert_suggestions"), [e.id for e in suggested], *keys)
            appended = _row_count(status)
        # A waiting resolution applies once its suggestion exists, and a suggestion comes
        # into being only here: with no new suggestion and no resolution in the batch
        # there is nothing to apply (one round trip fewer for most batches).
        if resolved or appended:
            tasks = list({*created, *(e.task_id for e in suggested if e.task_id)})
            await conn.execute(q("insert_resolutions"), resolved, tasks)

    async def _project(
        self, conn: asyncpg.Connection, task_ids: list[uuid.UUID]
    ) -> list[uuid.UUID]:
        """Fold and write the tasks; returns the ids of rows created now."""
        grouped: dict[uuid.UUID, list[LedgerRow]] = defaultdict(list)
        for record in await conn.fetch(q("lifecycle_events_by_key"), task_ids):
            grouped[record["task_id"]].append(LedgerRow(record))
        current = {r["task_id"]: r for r in await conn.fetch(q("current_tasks"), task_ids)}
        writes: list[tuple[Any, ...]] = []
        created: list[uuid.UUID] = []
        for task_id, rows in grouped.items():
            row = fold(task_id, rows)
            if row is None:
                continue
            stored = current.get(task_id)
            if stored is None:
                created.append(task_id)
            elif stored["status"] in _FINISHED or all(stored[k] == row[k] for k in CHANGE_KEY):
                continue
            writes.append(tuple(row[c] for c in TASK_COLUMNS))
        if writes:
            await conn.executemany(q("upsert_task"), writes)
        return created

    def background(self, ctx: ServiceContext) -> Sequence[Callable[[], Awaitable[None]]]:
        """The anchor loop: log the ledger chain's head every ``anchor_interval_s``."""
        from consumer.ledger.anchors import anchor_loop

        return (lambda: anchor_loop(ctx),)
