"""The audit query layer: one set of read functions behind both the HTTP API and the CLI.

Every function takes an asyncpg pool and returns pydantic models (JSON-serialisable with
``model_dump(mode="json")``). The SQL lives in ``consumer/sql/queries.sql``; the task
filter is one shared WHERE clause (``task_filter``) spliced into the statements that
need it, so the API, the CLI, the failure counts and the summary filter alike.

Intent (``deploy_kuma``, ``restart_dns``) is not stored: :func:`parse_intent` turns it
into a verb pattern and a service, and the query matches tasks whose request text, plan
steps or step actions carry the verb (or a synonym) and that touched the service.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Any, Literal
from uuid import UUID

import asyncpg
import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from consumer.db import q, translate_errors
from consumer.exceptions import ConfigurationError, InvalidArgument, TaskNotFound
from contracts import AgentType, ErrorCause, TaskStatus

__all__ = [
    "VERB_SYNONYMS",
    "BusyService",
    "FailureReport",
    "HoldEntry",
    "Intent",
    "LedgerEntry",
    "OperatorActionEntry",
    "OrphanEvent",
    "Page",
    "PauseEntry",
    "PauseHistoryEntry",
    "PauseQueueView",
    "StaleTask",
    "StepEntry",
    "Summary",
    "TaskDetail",
    "TaskFilter",
    "TaskRecord",
    "TaskSummary",
    "TimelineEntry",
    "by_service",
    "decode_cursor",
    "encode_cursor",
    "failures",
    "list_tasks",
    "operator_actions",
    "orphans",
    "page_args",
    "parse_intent",
    "pause_queue",
    "schema_errors",
    "stale",
    "statement",
    "summary",
    "task_detail",
]

MAX_PAGE = 500
DEFAULT_PAGE = 50
_MAX_TEXT = 200
_FILTER_SLOT = "/*task_filter*/"
_NONE = "(none)"  # the count key of a missing error cause or type

# --- intent ------------------------------------------------------------------------------

#: Verbs an intent may name, each with the words that mean the same in requests, plan
#: steps and step actions. A multi-word synonym matches with a space, hyphen, underscore
#: or nothing between its words ("roll out", "roll-out", "rollout").
VERB_SYNONYMS: dict[str, tuple[str, ...]] = {
    "deploy": ("deploy", "redeploy", "install", "rollout", "roll out", "release", "provision"),
    "restart": ("restart", "reboot", "bounce", "reload", "recycle"),
    "update": ("update", "upgrade", "patch", "bump"),
    "backup": ("backup", "back up", "snapshot", "dump"),
    "rollback": ("rollback", "roll back", "revert", "downgrade"),
    "remove": ("remove", "uninstall", "delete", "decommission", "teardown", "tear down"),
    "configure": ("configure", "reconfigure", "config"),
    "scale": ("scale", "resize"),
    "stop": ("stop", "shutdown", "shut down", "halt"),
    "start": ("start", "launch", "bring up"),
    "migrate": ("migrate", "migration"),
}

_VERB = re.compile(r"[a-z][a-z0-9]*")
_SERVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_INTENT_SPLIT = re.compile(r"[_:\s]+")


@dataclass(frozen=True)
class Intent:
    """A parsed intent: the verb, every word that means it, and the service (if named)."""

    verb: str
    words: tuple[str, ...]
    service: str | None

    @property
    def pattern(self) -> str:
        r"""The PostgreSQL regular expression (for ``~*``) matching any of :attr:`words`.

        Each word must start a word (``\m``): ``start`` does not match "restart", while
        "deployed" and "deployment" match ``deploy``.
        """
        alternatives = "|".join(w.replace(" ", "[ _-]?") for w in self.words)
        return rf"\m(?:{alternatives})"


@cache
def _canonical_verbs() -> dict[str, str]:
    found: dict[str, str] = {}
    for verb, words in VERB_SYNONYMS.items():
        for word in (verb, *words):
            found.setdefault(word.replace(" ", ""), verb)
    return found


def parse_intent(text: str) -> Intent:
    """Parse ``verb_service`` (``deploy_kuma``, ``restart_dns``; also ``deploy:kuma`` or
    ``deploy kuma``), or a bare verb (``deploy``: any service).

    The verb is case-insensitive and may be any synonym of a known verb (``install_kuma``
    means ``deploy_kuma``); an unknown verb matches only itself. Everything after the
    first separator is the service (``restart_node_exporter`` -> ``node_exporter``).

    Returns an :class:`Intent`; raises :class:`InvalidArgument` with a one-line reason.
    """
    cleaned = text.strip()
    parts = _INTENT_SPLIT.split(cleaned, maxsplit=1)
    verb = parts[0].lower()
    service = parts[1].strip() if len(parts) > 1 and parts[1].strip() else None
    if not _VERB.fullmatch(verb):
        raise InvalidArgument(
            f"intent {text[:80]!r} must be <verb>_<service>, e.g. deploy_kuma or restart_dns"
        )
    if service is not None and not _SERVICE.fullmatch(service):
        raise InvalidArgument(
            f"intent {text[:80]!r}: service {service[:80]!r} must be letters, digits, '.', '_', '-'"
        )
    canonical = _canonical_verbs().get(verb)
    if canonical is None:
        return Intent(verb=verb, words=(verb,), service=service)
    words = tuple(dict.fromkeys((canonical, *VERB_SYNONYMS[canonical])))
    return Intent(verb=canonical, words=words, service=service)


# --- filter and cursor -------------------------------------------------------------------


def encode_cursor(created_at: datetime, task_id: UUID) -> str:
    """Return the opaque cursor that points just past (``created_at``, ``task_id``)."""
    raw = orjson.dumps([created_at.astimezone(UTC).isoformat(), str(task_id)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """Return the (created_at, task_id) a cursor points past; raises :class:`InvalidArgument`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, task = orjson.loads(raw)
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:
            raise ValueError("naive time")
        return when, UUID(task)
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise InvalidArgument(
            "cursor is not valid: pass back the next_cursor of a previous page"
        ) from None


def _no_nul(value: str, what: str) -> str:
    if "\x00" in value:
        raise ValueError(f"{what} may not contain NUL characters")
    return value


class TaskFilter(BaseModel):
    """Which tasks a query returns; every field narrows the result (AND)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    statuses: list[TaskStatus] = Field(default_factory=list, description="Any of these statuses.")
    since: datetime | None = Field(default=None, description="Created at or after this time.")
    until: datetime | None = Field(default=None, description="Created before this time.")
    services: list[str] = Field(default_factory=list, description="Services touched.")
    service_mode: Literal["any", "all"] = Field(
        default="any", description="Touched any of the services, or all of them."
    )
    agent_type: AgentType | None = None
    error_cause: ErrorCause | None = None
    intent: str | None = Field(
        default=None, description="verb_service, e.g. deploy_kuma: inferred from request and steps."
    )
    limit: int = Field(default=DEFAULT_PAGE, ge=1, le=MAX_PAGE)
    cursor: str | None = Field(default=None, max_length=400)

    @field_validator("since", "until")
    @classmethod
    def _aware_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise ValueError("time out of range") from None

    @field_validator("services")
    @classmethod
    def _clean_services(cls, value: list[str]) -> list[str]:
        cleaned = []
        for item in value:
            service = _no_nul(item, "service").strip()
            if not service or len(service) > _MAX_TEXT:
                raise ValueError(f"service names are 1..{_MAX_TEXT} characters")
            cleaned.append(service)
        return list(dict.fromkeys(cleaned))

    @field_validator("intent")
    @classmethod
    def _check_intent(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        try:
            parse_intent(_no_nul(value, "intent"))
        except InvalidArgument as exc:
            raise ValueError(str(exc)) from None
        return value.strip()

    @field_validator("cursor")
    @classmethod
    def _check_cursor(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        try:
            decode_cursor(value)
        except InvalidArgument as exc:
            raise ValueError(str(exc)) from None
        return value

    def filter_args(self, *, require: list[str] | None = None) -> tuple[Any, ...]:
        """The eight parameters ($1..$8) of the shared ``task_filter`` clause.

        ``require`` lists services that must have been touched on top of the filter's own
        (``by-service``); an intent's service is required the same way.
        """
        intent = parse_intent(self.intent) if self.intent else None
        any_of = self.services if self.service_mode == "any" and self.services else None
        all_of = list(require or [])
        if self.service_mode == "all":
            all_of += self.services
        if intent is not None and intent.service is not None:
            all_of.append(intent.service)
        all_of = list(dict.fromkeys(all_of))
        return (
            [s.value for s in self.statuses] or None,
            self.since,
            self.until,
            any_of,
            all_of or None,
            self.agent_type.value if self.agent_type else None,
            self.error_cause.value if self.error_cause else None,
            intent.pattern if intent else None,
        )

    def cursor_args(self) -> tuple[datetime | None, UUID | None]:
        """The keyset position ($9, $10) of the page after :attr:`cursor`, or (None, None)."""
        if self.cursor is None:
            return None, None
        return decode_cursor(self.cursor)


# --- result models -----------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class TaskSummary(_Out):
    """One task as listed by the audit queries (no large JSON columns)."""

    task_id: UUID
    status: TaskStatus
    request_text: str
    created_by: str | None = None
    project_id: str | None = None
    agent_id: str | None = None
    agent_type: str | None = None
    services_requested: list[str] | None = None
    services_touched: list[str] = Field(default_factory=list)
    error_cause: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    cost_usd: float | None = None
    created_at: datetime
    approved_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    updated_at: datetime


class Page(_Out):
    """A page of tasks, newest first; pass ``next_cursor`` back for the next one (None: last)."""

    items: list[TaskSummary]
    next_cursor: str | None = None


class FailureReport(_Out):
    """Failed tasks matching a filter: one page of them, and counts over all of them."""

    items: list[TaskSummary]
    next_cursor: str | None = None
    total: int
    by_cause: dict[str, int]
    by_type: dict[str, int]


class TaskRecord(TaskSummary):
    """The whole ``tasks`` row of one task."""

    plan: dict[str, Any] | None = None
    approved_by: str | None = None
    rejected_reason: str | None = None
    outcome: dict[str, Any] | None = None
    suggestions: dict[str, Any] | None = None
    estimated_resources: dict[str, Any] | None = None
    actual_resources: dict[str, Any] | None = None
    external_ai_used: list[dict[str, Any]] | None = None
    failed_step: int | None = None
    resource_state: dict[str, Any] | None = None


class LedgerEntry(_Out):
    """One event of the ledger as the timeline shows it."""

    seq: int
    event_id: UUID
    event_type: str
    source: str
    event_time: datetime
    received_at: datetime
    conflict_with: UUID | None = None


class StepEntry(_Out):
    """One step (``execution_logs`` row)."""

    id: int
    event_id: UUID
    step_number: int
    agent_type: str
    action: str
    status: str
    output_summary: str | None = None
    output_full: dict[str, Any] | None = None
    duration_ms: int | None = None
    created_at: datetime
    recorded_at: datetime


class PauseHistoryEntry(_Out):
    """One pause-queue transition of a task (paused, released, held, unheld)."""

    id: int
    action: str
    reason: str | None = None
    trigger: str | None = None
    agent_id: str | None = None
    event_id: UUID | None = None
    at: datetime
    details: dict[str, Any] | None = None


class TimelineEntry(_Out):
    """One line of a task's timeline; exactly one of ``event``, ``step``, ``pause`` is set."""

    at: datetime
    kind: Literal["event", "step", "pause"]
    title: str
    event: LedgerEntry | None = None
    step: StepEntry | None = None
    pause: PauseHistoryEntry | None = None


class Required(_Out):
    """Resources a waiting dispatch request needs."""

    gpu_vram_mb: int
    cpu_cores: float
    memory_mb: int


class PauseEntry(_Out):
    """A dispatch request waiting in ``pause_queue``, with what it needs and why it waits."""

    id: int
    task_id: UUID
    reason: str
    priority: int
    agent_type: str
    required: Required
    paused_at: datetime
    resume_after: datetime | None = None
    not_before: datetime | None = None
    held: bool = Field(description="An operator hold (all dispatch or this task) applies now.")
    request_event_id: UUID
    request_text: str | None = None
    task_status: str | None = None
    work_plan: dict[str, Any] = Field(default_factory=dict)


class HoldEntry(_Out):
    """An operator hold on dispatch (``all``, or one task)."""

    hold_key: str
    scope: str
    task_id: UUID | None = None
    reason: str | None = None
    resume_after: datetime | None = None
    created_at: datetime
    event_id: UUID | None = None


class PauseQueueView(_Out):
    """What waits and why: the queue, most urgent first, and the holds in force."""

    entries: list[PauseEntry]
    holds: list[HoldEntry]


class TaskDetail(_Out):
    """A task with its full timeline (ledger events, steps, pause history) by time."""

    task: TaskRecord
    timeline: list[TimelineEntry]
    waiting: PauseEntry | None = Field(
        default=None, description="Its pause-queue entry, if it waits now."
    )


class OrphanEvent(_Out):
    """A task event recorded in the ledger but still not applied after the limit.

    ``kind`` is ``no_task`` (its ``task.requested`` never came) or ``terminal_waiting``
    (a completed/failed event waits for the lifecycle events listed in ``missing``).
    """

    seq: int
    event_id: UUID
    event_type: str
    source: str
    task_id: UUID
    event_time: datetime
    received_at: datetime
    kind: Literal["no_task", "terminal_waiting"]
    task_status: str | None = None
    missing: list[str]


class StaleTask(_Out):
    """A task executing with no event for longer than the stale limit."""

    task_id: UUID
    agent_id: str | None = None
    agent_type: str | None = None
    request_text: str
    created_at: datetime
    started_at: datetime | None = None
    last_event_at: datetime | None = None
    silent_since: datetime


class BusyService(_Out):
    """A service and how many matching tasks touched it."""

    service: str
    tasks: int


class Summary(_Out):
    """Counts over the tasks matching a filter."""

    total: int
    by_status: dict[str, int]
    failures_by_cause: dict[str, int]
    busiest_services: list[BusyService]
    cost_usd: float


class OperatorActionEntry(_Out):
    """One recorded operator action."""

    id: int
    action: str
    actor: str
    at: datetime
    params: dict[str, Any]
    result: dict[str, Any] | None = None
    event_id: UUID | None = None


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
    with schema_errors(), translate_errors():
        async with (
            pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
            for sql, args in statements:
                results.append(list(await conn.fetch(sql, *args)))
    return results


@contextmanager
def schema_errors() -> Iterator[None]:
    """Turn "no such table/column" into :class:`ConfigurationError` saying to migrate."""
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
    name = service.strip()
    if not name or len(name) > _MAX_TEXT or "\x00" in name:
        raise InvalidArgument(f"service {service[:80]!r} is not a valid service name")
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
        return TimelineEntry(at=entry.created_at, kind=kind, title=title, step=entry)
    trigger = f" ({entry.trigger})" if entry.trigger else ""
    reason = f": {entry.reason}" if entry.reason else ""
    title = f"{entry.action}{trigger}{reason}"
    return TimelineEntry(at=entry.at, kind=kind, title=title, pause=entry)


_KIND_ORDER = {"event": 0, "step": 1, "pause": 2}


async def task_detail(pool: asyncpg.Pool, task_id: UUID) -> TaskDetail:
    """Return the task ``task_id`` with its timeline (ledger events, steps, pause history
    merged by time; ties in the order event, step, pause) and its pause-queue entry.

    Raises :class:`TaskNotFound` when no task row exists, :class:`DatabaseUnavailable`.
    """
    task, events, steps, history, waiting = await _read(
        pool,
        (q("audit_task"), (task_id,)),
        (q("audit_task_events"), (task_id,)),
        (q("audit_task_steps"), (task_id,)),
        (q("audit_task_pause_history"), (task_id,)),
        (q("audit_pause_entry"), (task_id,)),
    )
    if not task:
        raise TaskNotFound(f"no task {task_id} is recorded")
    timeline = [
        *(_entry("event", LedgerEntry.model_validate(dict(r.items()))) for r in events),
        *(_entry("step", StepEntry.model_validate(dict(r.items()))) for r in steps),
        *(_entry("pause", PauseHistoryEntry.model_validate(dict(r.items()))) for r in history),
    ]
    timeline.sort(key=lambda e: (e.at, _KIND_ORDER[e.kind]))
    return TaskDetail(
        task=TaskRecord.model_validate(_row(task[0])),
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
    (records,) = await _read(pool, (q("audit_stale"), (float(stale_after_s), limit)))
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


async def operator_actions(
    pool: asyncpg.Pool, since: datetime | None = None, limit: int = DEFAULT_PAGE
) -> list[OperatorActionEntry]:
    """Return operator actions since ``since`` (None: ever), newest first, at most ``limit``.
    Raises :class:`DatabaseUnavailable`.
    """
    (records,) = await _read(pool, (q("audit_operator_actions"), (since, limit)))
    return [OperatorActionEntry.model_validate(dict(r.items())) for r in records]
