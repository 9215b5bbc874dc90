"""`verify`'s second half: ``tasks`` and ``execution_logs`` recomputed from the ledger.

Both tables are functions of the recorded events. For each page of stored tasks
(keyset on ``task_id``), verify replays the audit handler on scratch copies of the two
tables (temporary, dropped at commit): the task's lifecycle events are read with the
handler's own ``lifecycle_events`` statement, folded with :func:`consumer.audit.fold.fold`
and written with the handler's ``upsert_task``; the steps are projected with the
handler's ``insert_steps``. The stored rows are then compared with the scratch rows
column by column (as JSON, so the column types are those of the tables).

A finished task is frozen by the database, so its row is the fold of the events recorded
up to the end of the batch that finished it, and batch boundaries are not recorded.
When a stored row differs from the all-at-once replay, verify tries the other batchings
that matter (:func:`candidates`: every event its own batch, and each later event as the
end of the freezing batch) before naming it. They differ only for a task with two
events of one lifecycle type recorded around its terminal event.

``pause_history`` is *not* a function of the ledger (it depends on the agents' capacity
at the time and on timers), so only its references are checked: every ``event_id`` it
names must be a recorded event.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import asyncpg

from consumer.audit.fold import CHANGE_KEY, TASK_COLUMNS, LedgerRow, fold
from consumer.ledger.verify import Collector, Finding
from consumer.store.db import classify, q
from contracts import TaskStatus

#: Tasks recomputed per page.
PAGE = 500
#: Tasks with more lifecycle events than this are replayed all at once only.
REPLAY_LIMIT = 50
_FINISHED = frozenset({s.value for s in TaskStatus if s.is_terminal})
#: Columns ``upsert_task`` leaves as they were when the row was created.
_CREATED_ONLY = frozenset(
    {"task_id", "request_text", "created_by", "project_id", "plan", "services_requested",
     "estimated_resources", "created_at"}
)  # fmt: skip
_PREFETCH = 256

Row = dict[str, Any]


def replay(task_id: uuid.UUID, rows: Sequence[LedgerRow], cuts: Sequence[int]) -> Row | None:
    """The ``tasks`` row the audit handler leaves after batches ending at ``cuts``.

    ``rows`` are the task's lifecycle events in ``seq`` order; each cut folds the prefix
    ``rows[:cut]`` and applies it as the handler does (insert; then update only while
    not finished and only when a compared field changed; created-only columns kept).
    """
    stored: Row | None = None
    for cut in cuts:
        row = fold(task_id, rows[:cut])
        if row is None:
            continue
        if stored is None:
            stored = dict(row)
        elif stored["status"] in _FINISHED or all(stored[k] == row[k] for k in CHANGE_KEY):
            continue
        else:
            stored.update({k: v for k, v in row.items() if k not in _CREATED_ONLY})
    return stored


def candidates(task_id: uuid.UUID, rows: Sequence[LedgerRow]) -> list[Row]:
    """The distinct ``tasks`` rows the handler may have left, most likely first.

    All events in one batch; every event its own batch; and, for a task that finished,
    each later event as the end of the batch that froze it (the handler folds a whole
    batch). Beyond :data:`REPLAY_LIMIT` events, only the first.
    """
    found: list[Row] = []

    def add(row: Row | None) -> None:
        if row is not None and row not in found:
            found.append(row)

    n = len(rows)
    add(replay(task_id, rows, [n]))
    if n > REPLAY_LIMIT:
        return found
    add(replay(task_id, rows, range(1, n + 1)))
    frozen = next((i for i in range(1, n + 1) if _finished(fold(task_id, rows[:i]))), None)
    if frozen is not None:
        for end in range(frozen + 1, n + 1):
            add(replay(task_id, rows, [*range(1, frozen), end]))
    return found


def _alternatives(task_id: uuid.UUID, rows: Sequence[LedgerRow]) -> list[Row]:
    try:
        return candidates(task_id, rows)[1:]
    except Exception:  # a prefix that does not fold is no batching the handler applied
        return []


def _finished(row: Row | None) -> bool:
    return row is not None and row["status"] in _FINISHED


class _Scratch:
    """Switches the search_path between the real tables and the scratch copies."""

    def __init__(self, conn: asyncpg.Connection, original: str) -> None:
        self.conn = conn
        base = original.strip()
        self.real = f"{base}, pg_temp" if base else "pg_temp"
        self.temp = f"pg_temp, {base}" if base else "pg_temp"

    async def use(self, scratch: bool) -> None:
        await self.conn.fetchval(q("verify_search_path"), self.temp if scratch else self.real)

    async def attempt(self, sql: str, *args: Any) -> str | None:
        """Run ``sql`` in a savepoint; the error text if the data made it fail."""
        try:
            async with self.conn.transaction():
                await self.conn.execute(sql, *args)
        except Exception as exc:  # bad data of any kind; an outage is raised again
            if classify(exc) != "data":
                raise
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return text[:300]
        return None


def _differing(stored: Row | None, expected: Row | None) -> list[str]:
    if stored is None or expected is None:
        return []
    return [c for c in TASK_COLUMNS if stored.get(c) != expected.get(c)]


async def _write_tasks(
    scratch: _Scratch, rows: dict[uuid.UUID, Row], found: Collector, skip: set[uuid.UUID]
) -> None:
    writes = [tuple(r[c] for c in TASK_COLUMNS) for r in rows.values()]
    if not writes:
        return
    try:
        async with scratch.conn.transaction():
            await scratch.conn.executemany(q("upsert_task"), writes)
        return
    except Exception as exc:  # bad data of any kind; an outage is raised again
        if classify(exc) != "data":
            raise
    for task_id, args in zip(rows, writes, strict=True):
        error = await scratch.attempt(q("upsert_task"), *args)
        if error is not None:
            skip.add(task_id)
            found.add(Finding(kind="task_unprojectable", task_id=str(task_id),
                              detail=f"task {task_id}: its events do not project ({error})"))  # fmt: skip


async def _compare_tasks(
    scratch: _Scratch, ids: list[uuid.UUID], skip: set[uuid.UUID]
) -> dict[uuid.UUID, tuple[Row | None, Row | None]]:
    differ: dict[uuid.UUID, tuple[Row | None, Row | None]] = {}
    for r in await scratch.conn.fetch(q("verify_tasks_compare"), ids):
        if r["task_id"] in skip:
            continue
        stored, expected = r["stored"], r["expected"]
        if stored is None or expected is None or _differing(stored, expected):
            differ[r["task_id"]] = (stored, expected)
    return differ


async def _check_page(scratch: _Scratch, ids: list[uuid.UUID], found: Collector) -> None:
    conn = scratch.conn
    grouped: dict[uuid.UUID, list[LedgerRow]] = defaultdict(list)
    for record in await conn.fetch(q("lifecycle_events"), ids):
        grouped[record["task_id"]].append(LedgerRow(record))
    at_once: dict[uuid.UUID, Row] = {}
    skip: set[uuid.UUID] = set()
    for task_id in ids:
        try:
            row = replay(task_id, grouped[task_id], [len(grouped[task_id])])
        except Exception as exc:  # any content of the ledger: a finding, not a crash
            skip.add(task_id)
            found.add(Finding(kind="task_unprojectable", task_id=str(task_id),
                              detail=f"task {task_id}: its events do not fold ({exc!r:.200})"))  # fmt: skip
            continue
        if row is not None:
            at_once[task_id] = row
    await scratch.use(True)
    await conn.execute(q("verify_scratch_clear"))
    await _write_tasks(scratch, at_once, found, skip)
    if skip:
        await scratch.use(False)
        await conn.execute(q("verify_scratch_copy_tasks"), list(skip))
        await scratch.use(True)
    await _project_steps(scratch, ids, found)
    await scratch.use(False)
    differ = await _compare_tasks(scratch, ids, skip)
    # the other batchings the handler may have seen, only for the rows that differ
    others = {t: _alternatives(t, grouped[t]) for t in differ if t in at_once}
    while retry := {t: others[t].pop(0) for t in differ if others.get(t)}:
        await scratch.use(True)
        await conn.execute(q("verify_scratch_drop_tasks"), list(retry))
        await _write_tasks(scratch, retry, found, skip)
        await scratch.use(False)
        again = await _compare_tasks(scratch, list(retry), skip)
        differ = {t: v for t, v in differ.items() if t not in retry or t in again}
    for task_id, (stored, expected) in sorted(differ.items()):
        _task_finding(found, task_id, stored, expected)
    await _compare_steps(scratch, ids, found)


def _task_finding(
    found: Collector, task_id: uuid.UUID, stored: Row | None, expected: Row | None
) -> None:
    if stored is None:
        detail = f"task {task_id} is missing from tasks"
        kind = "task_missing"
    elif expected is None:
        detail = f"task {task_id} has no recorded task.requested: no ledger event implies it"
        kind = "task_extra"
    else:
        columns = ", ".join(_differing(stored, expected))
        detail = f"task {task_id}: {columns} differ from what its ledger events imply"
        kind = "task_differs"
    found.add(Finding(kind=kind, task_id=str(task_id), detail=detail))


async def _project_steps(scratch: _Scratch, ids: list[uuid.UUID], found: Collector) -> None:
    if await scratch.attempt(q("insert_steps"), [], [], [], ids) is None:
        return
    for task_id in ids:
        error = await scratch.attempt(q("insert_steps"), [], [], [], [task_id])
        if error is not None:
            found.add(Finding(kind="steps_unprojectable", task_id=str(task_id),
                              detail=f"task {task_id}: its task.step events do not project ({error})"))  # fmt: skip


async def _compare_steps(scratch: _Scratch, ids: list[uuid.UUID], found: Collector) -> None:
    for r in await scratch.conn.fetch(q("verify_steps_compare"), ids):
        stored, expected = r["stored"], r["expected"]
        event, task = r["event_id"], r["task_id"]
        if expected is None:
            kind, what = "step_extra", "is not implied by any recorded task.step event"
        elif stored is None:
            kind, what = "step_missing", "is recorded in the ledger but missing from execution_logs"
        else:
            cols = sorted(
                k for k in set(stored) | set(expected) if stored.get(k) != expected.get(k)
            )
            kind, what = "step_differs", f"{', '.join(cols)} differ from its task.step event"
        found.add(Finding(kind=kind, task_id=str(task), event_id=str(event),
                          detail=f"step {event} of task {task} {what}"))  # fmt: skip


async def _orphans(conn: asyncpg.Connection, found: Collector) -> None:
    async for r in conn.cursor(q("verify_tasks_missing"), prefetch=_PREFETCH):
        _task_finding(found, r["task_id"], None, {})
    async for r in conn.cursor(q("verify_steps_without_task"), prefetch=_PREFETCH):
        found.add(Finding(kind="step_extra", task_id=str(r["task_id"]), event_id=str(r["event_id"]),
                          detail=f"step {r['event_id']} belongs to task {r['task_id']}, which has no row"))  # fmt: skip
    async for r in conn.cursor(q("verify_pause_history_orphans"), prefetch=_PREFETCH):
        found.add(Finding(kind="pause_history_orphan", task_id=_str(r["task_id"]),
                          event_id=str(r["event_id"]),
                          detail=f"pause_history row {r['id']} names event {r['event_id']}, "
                          "which the ledger does not hold"))  # fmt: skip


def _str(value: object) -> str | None:
    return None if value is None else str(value)


async def check_projections(conn: asyncpg.Connection, found: Collector) -> int:
    """Compare ``tasks``, ``execution_logs`` and ``pause_history`` with the ledger.

    Runs inside the caller's (repeatable-read, read-write) transaction; creates scratch
    tables dropped at its end. Returns how many stored tasks were recomputed.
    """
    scratch = _Scratch(conn, str(await conn.fetchval(q("verify_current_search_path"))))
    await scratch.use(False)
    await _orphans(conn, found)
    await conn.execute(q("verify_scratch_tables"))
    checked, after = 0, uuid.UUID(int=0)
    while True:
        await scratch.use(False)
        ids = [r["task_id"] for r in await conn.fetch(q("verify_task_page"), after, PAGE)]
        if not ids:
            return checked
        await _check_page(scratch, ids, found)
        checked += len(ids)
        after = ids[-1]
