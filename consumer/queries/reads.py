"""The audit queries: one set of read functions behind both the HTTP API and the CLI.

Every function takes an asyncpg pool and returns the models of
:mod:`consumer.queries.models`. The SQL lives in ``consumer/store/sql/queries.sql``; the
task filter is one shared WHERE clause (``task_filter``) spliced into the statements
that need it (:func:`statement`), so the API, the CLI, the failure counts and the
summary filter alike. Each call reads one snapshot (a read-only, repeatable-read
transaction).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from functools import cache
from typing import Any, Literal
from uuid import UUID

import asyncpg

from consumer.core.errors import ConfigurationError, TaskNotFound
from consumer.queries.filters import DEFAULT_PAGE, MAX_PAGE, TaskFilter, encode_cursor, service_name
from consumer.queries.models import (
    BusyService,
    FailureCapture,
    FailureReport,
    FlushCount,
    HoldEntry,
    LedgerEntry,
    OperatorActionEntry,
    OrphanEvent,
    Page,
    PauseEntry,
    PauseHistoryEntry,
    PauseQueueView,
    RecoveryEntry,
    Required,
    StaleTask,
    StepEntry,
    SuggestionView,
    Summary,
    TaskDetail,
    TaskRecord,
    TaskSummary,
    TimelineEntry,
)
from consumer.store.db import q, translate_errors
from contracts import TaskStatus

__all__ = [
    "by_service",
    "failures",
    "flushes",
    "list_tasks",
    "operator_actions",
    "orphans",
    "page_args",
    "pause_queue",
    "schema_errors",
    "stale",
    "statement",
    "summary",
    "task_detail",
]

_FILTER_SLOT = "/*task_filter*/"
_NONE = "(none)"  # the count key of a missing error cause or type


# --- helpers -----------------------------------------------------------------------------


@cache
def statement(name: str) -> str:
    """The named statement of ``queries.sql`` with the shared task filter spliced in
    (for EXPLAIN in the benchmark); raises KeyError for an unknown name."""
    return q(name).replace(_FILTER_SLOT, q("task_filter"))


async def _read(pool: asyncpg.Pool, *statements: tuple[str, tuple[Any, ...]]) -> list[list[Any]]:
    """Run read statements in one read-only, repeatable-read transaction (one snapshot).

    ``force_custom_plan`` makes PostgreSQL plan each call for its actual parameters, so
    the filter's ``$n IS NULL OR ...`` guards fold away and indexes stay usable.
    """
    results: list[list[Any]] = []
    with translate_errors(), schema_errors():
        async with (
            pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            await conn.execute(q("read_custom_plans"))
            for sql, args in statements:
                results.append(list(await conn.fetch(sql, *args)))
    return results


@contextmanager
def schema_errors() -> Iterator[None]:
    """Turn "no such table/column" into :class:`ConfigurationError` saying to migrate.

    Nest it inside :func:`~consumer.store.db.translate_errors`, which would otherwise
    report these as :class:`~consumer.core.errors.DatabaseMisconfigured` first.
    """
    try:
        yield
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError) as exc:
        raise ConfigurationError(
            f"the database schema is missing or outdated ({exc}): run `taskledger migrate`"
        ) from exc


def _row(record: Any) -> dict[str, Any]:
    row = dict(record.items())
    for key, value in row.items():
        if isinstance(value, Decimal):
            row[key] = float(value)
    return row


def _summaries(records: list[Any], limit: int) -> tuple[list[TaskSummary], str | None]:
    items = [TaskSummary.model_validate(_row(r)) for r in records[:limit]]
    more = len(records) > limit
    cursor = encode_cursor(items[-1].created_at, items[-1].task_id) if more and items else None
    return items, cursor


def page_args(f: TaskFilter, *, require: list[str] | None = None) -> tuple[Any, ...]:
    """The parameters of ``audit_tasks`` for one page of ``f`` (``require``: as in
    :meth:`TaskFilter.filter_args`)."""
    return (*f.filter_args(require=require), *f.cursor_args(), f.limit + 1)


def _pause_entry(record: Any) -> PauseEntry:
    row = dict(record.items())
    row["required"] = Required(
        gpu_vram_mb=row.pop("required_gpu_vram_mb"),
        cpu_cores=row.pop("required_cpu_cores"),
        memory_mb=row.pop("required_memory_mb"),
    )
    row["work_plan"] = row.pop("work_plan_json") or {}
    return PauseEntry.model_validate(row)


def _counts(pairs: list[tuple[str, int]]) -> dict[str, int]:
    return dict(sorted(pairs, key=lambda kv: (-kv[1], kv[0])))


# --- queries -----------------------------------------------------------------------------


async def list_tasks(pool: asyncpg.Pool, f: TaskFilter) -> Page:
    """Return one page of tasks matching ``f``, newest first (keyset on created_at, task_id).

    Raises :class:`DatabaseUnavailable`; a bad cursor or intent is refused earlier, when
    the :class:`TaskFilter` is built.
    """
    (records,) = await _read(pool, (statement("audit_tasks"), page_args(f)))
    items, cursor = _summaries(records, f.limit)
    return Page(items=items, next_cursor=cursor)


async def by_service(pool: asyncpg.Pool, service: str, f: TaskFilter | None = None) -> Page:
    """Return one page of tasks that touched ``service`` (and match ``f``), newest first.

    Raises :class:`InvalidArgument` for an empty, overlong or NUL-bearing service name.
    """
    name = service_name(service)
    f = f or TaskFilter()
    (records,) = await _read(pool, (statement("audit_tasks"), page_args(f, require=[name])))
    items, cursor = _summaries(records, f.limit)
    return Page(items=items, next_cursor=cursor)


async def failures(pool: asyncpg.Pool, f: TaskFilter) -> FailureReport:
    """Return failed tasks matching ``f`` (one page) with counts by error cause and type.

    The status filter of ``f`` is replaced by ``failed``. Counts cover every matching
    failed task, not only the page. Raises :class:`DatabaseUnavailable`.
    """
    failed = f.model_copy(update={"statuses": [TaskStatus.FAILED]})
    records, counts = await _read(
        pool,
        (statement("audit_tasks"), page_args(failed)),
        (statement("audit_failure_counts"), failed.filter_args()),
    )
    items, cursor = _summaries(records, failed.limit)
    by_cause: dict[str, int] = {}
    by_type: dict[str, int] = {}
    for r in counts:
        cause, kind = r["error_cause"] or _NONE, r["error_type"] or _NONE
        by_cause[cause] = by_cause.get(cause, 0) + r["n"]
        by_type[kind] = by_type.get(kind, 0) + r["n"]
    return FailureReport(
        items=items,
        next_cursor=cursor,
        total=sum(by_cause.values()),
        by_cause=_counts(list(by_cause.items())),
        by_type=_counts(list(by_type.items())),
    )


def _entry(kind: Literal["event", "step", "pause"], entry: Any) -> TimelineEntry:
    """Wrap a ledger event, step or pause transition as a timeline line with a title."""
    if isinstance(entry, LedgerEntry):
        conflict = " (conflict)" if entry.conflict_with else ""
        title = f"{entry.event_type} from {entry.source}{conflict}"
        return TimelineEntry(at=entry.event_time, kind=kind, title=title, event=entry)
    if isinstance(entry, StepEntry):
        title = f"step {entry.step_number} {entry.action}: {entry.status}"
        return TimelineEntry(at=entry.timestamp, kind=kind, title=title, step=entry)
    return TimelineEntry(at=entry.at, kind=kind, title=entry.describe(), pause=entry)


_KIND_ORDER = {"event": 0, "step": 1, "pause": 2, "recovery": 3}


def _recovery(entry: RecoveryEntry) -> TimelineEntry:
    """A recovery step as a timeline line: "recovery requested (timeout), attempt 1"."""
    trigger = f" ({entry.trigger})" if entry.trigger else ""
    by = f" by {entry.actor}" if entry.actor else ""
    title = f"recovery {entry.action}{trigger}{by}, attempt {entry.attempt}"
    return TimelineEntry(at=entry.at, kind="recovery", title=title, recovery=entry)


def _suggestion(record: Any) -> SuggestionView:
    row = dict(record.items())
    row["status"] = row.pop("resolution") or "open"
    row.pop("resolution_event_id", None)
    row.pop("position", None)
    return SuggestionView.model_validate(row)


def _mark_suggestions(task: TaskRecord, timeline: list[TimelineEntry]) -> None:
    """Say on the timeline what each ``task.suggested`` added."""
    by_event: dict[UUID, list[str]] = {}
    for s in task.suggestions:
        if s.event_id is not None:
            by_event.setdefault(s.event_id, []).append(s.suggestion)
    for entry in timeline:
        if entry.event is not None and entry.event.event_id in by_event:
            entry.title += ": " + "; ".join(by_event[entry.event.event_id])


def _mark_failure(task: TaskRecord, timeline: list[TimelineEntry]) -> None:
    """Put what was captured at failure on the applied ``task.failed`` line of the timeline."""
    if task.status != TaskStatus.FAILED:
        return
    outcome = task.outcome or {}
    action = next(
        (e.step.action for e in timeline
         if e.step is not None and e.step.step_number == task.failed_step
         and e.step.status == "failed"),
        None,
    )  # fmt: skip
    failure = FailureCapture(
        error_type=task.error_type,
        error_cause=task.error_cause,
        error_message=task.error_message,
        stack_trace=outcome.get("stack_trace"),
        failed_step=task.failed_step,
        failed_action=action,
        resource_state=task.resource_state,
        agent_id=task.agent_id,
        agent_type=task.agent_type,
        plan=task.plan,
    )
    for entry in timeline:
        event = entry.event
        if event is not None and event.event_type == "task.failed" and not event.conflict_with:
            step = f" at step {task.failed_step}" if task.failed_step else ""
            entry.title += (
                f": {task.error_cause}/{task.error_type}{step}: {task.error_message or ''}"
            )
            entry.failure = failure
            return


async def task_detail(pool: asyncpg.Pool, task_id: UUID) -> TaskDetail:
    """Return the task ``task_id`` with its timeline (ledger events, steps, pause history
    merged by time; ties in the order event, step, pause) and its pause-queue entry.

    A task with only a dispatch request (no ``task.requested`` yet) has ``task`` None.
    Raises :class:`TaskNotFound` when neither the task nor a dispatch request is recorded,
    :class:`DatabaseUnavailable`.
    """
    task, events, steps, history, waiting, suggested, recoveries = await _read(
        pool,
        (q("audit_task"), (task_id,)),
        (q("audit_task_events"), (task_id,)),
        (q("audit_task_steps"), (task_id,)),
        (q("audit_task_pause_history"), (task_id,)),
        (q("audit_pause_entry"), (task_id,)),
        (q("audit_task_suggestions"), (task_id,)),
        (q("recovery_history"), (task_id,)),
    )
    dispatched = history or any(r["event_type"] == "dispatch.requested" for r in events)
    if not task and not dispatched:  # other events alone do not make a task
        raise TaskNotFound(f"no task {task_id} is recorded")
    timeline = [
        *(_entry("event", LedgerEntry.model_validate(dict(r.items()))) for r in events),
        *(_entry("step", StepEntry.model_validate(dict(r.items()))) for r in steps),
        *(_entry("pause", PauseHistoryEntry.model_validate(dict(r.items()))) for r in history),
        *(_recovery(RecoveryEntry.model_validate(dict(r.items()))) for r in recoveries),
    ]
    timeline.sort(key=lambda e: (e.at, _KIND_ORDER[e.kind]))
    record = TaskRecord.model_validate(_row(task[0])) if task else None
    if record is not None:
        record.suggestions = [_suggestion(r) for r in suggested]
        _mark_failure(record, timeline)
        _mark_suggestions(record, timeline)
    return TaskDetail(
        task=record,
        timeline=timeline,
        waiting=_pause_entry(waiting[0]) if waiting else None,
    )


async def orphans(
    pool: asyncpg.Pool, older_than_s: float, *, limit: int = MAX_PAGE
) -> list[OrphanEvent]:
    """Return task events unapplied for more than ``older_than_s`` seconds, oldest first:
    events of tasks never requested, and terminal events still waiting for the task's
    requested/approved/started events. Raises :class:`DatabaseUnavailable`.
    """
    (records,) = await _read(pool, (q("audit_orphans"), (float(older_than_s), limit)))
    return [OrphanEvent.model_validate(dict(r.items())) for r in records]


async def stale(
    pool: asyncpg.Pool, stale_after_s: float, *, limit: int = MAX_PAGE
) -> list[StaleTask]:
    """Return executing tasks whose newest event is older than ``stale_after_s`` seconds,
    most silent first. Raises :class:`DatabaseUnavailable`.
    """
    (records,) = await _read(pool, (q("stale_executing"), (float(stale_after_s), limit)))
    return [StaleTask.model_validate(dict(r.items())) for r in records]


async def summary(pool: asyncpg.Pool, f: TaskFilter, *, top_services: int = 10) -> Summary:
    """Return counts over the tasks matching ``f``: by status, failures by cause, the
    busiest services and the total cost. ``limit`` and ``cursor`` of ``f`` are ignored.
    Raises :class:`DatabaseUnavailable`.
    """
    args = f.filter_args()
    statuses, services = await _read(
        pool,
        (statement("audit_status_counts"), args),
        (statement("audit_busiest_services"), (*args, top_services)),
    )
    by_status: dict[str, int] = {}
    by_cause: dict[str, int] = {}
    cost = 0.0
    for r in statuses:
        by_status[r["status"]] = by_status.get(r["status"], 0) + r["n"]
        if r["status"] == TaskStatus.FAILED:
            cause = r["error_cause"] or _NONE
            by_cause[cause] = by_cause.get(cause, 0) + r["n"]
        cost += float(r["cost_usd"] or 0)
    return Summary(
        total=sum(by_status.values()),
        by_status=_counts(list(by_status.items())),
        failures_by_cause=_counts(list(by_cause.items())),
        busiest_services=[BusyService(service=r["service"], tasks=r["n"]) for r in services],
        cost_usd=round(cost, 6),
    )


async def pause_queue(pool: asyncpg.Pool, *, limit: int = 1000) -> PauseQueueView:
    """Return what waits and why: pause-queue entries (most urgent, then oldest first)
    with the resources they need, and the operator holds in force.
    Raises :class:`DatabaseUnavailable`.
    """
    entries, holds = await _read(pool, (q("audit_pause_queue"), (limit,)), (q("audit_holds"), ()))
    return PauseQueueView(
        entries=[_pause_entry(r) for r in entries],
        holds=[HoldEntry.model_validate(dict(r.items())) for r in holds],
    )


async def flushes(pool: asyncpg.Pool, since: datetime | None = None) -> list[FlushCount]:
    """Write batches since ``since`` (None: ever) by why they were flushed (the trigger on
    each ledger chain link). Raises :class:`DatabaseUnavailable`."""
    (records,) = await _read(pool, (q("audit_flushes"), (since,)))
    return [FlushCount.model_validate(dict(r.items())) for r in records]


async def operator_actions(
    pool: asyncpg.Pool, since: datetime | None = None, limit: int = DEFAULT_PAGE
) -> list[OperatorActionEntry]:
    """Return operator actions since ``since`` (None: ever), newest first, at most ``limit``.
    Raises :class:`DatabaseUnavailable`.
    """
    (records,) = await _read(pool, (q("audit_operator_actions"), (since, limit)))
    return [OperatorActionEntry.model_validate(dict(r.items())) for r in records]
