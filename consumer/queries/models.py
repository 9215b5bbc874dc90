"""The results of the audit queries: pydantic models, JSON-ready with ``model_dump(mode="json")``.

The HTTP API returns them as they are (their JSON Schema is part of ``docs/openapi.json``)
and the CLI prints them as tables or ``--json``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from contracts import TaskStatus

__all__ = [
    "BusyService",
    "DispatchEntry",
    "DispatchPage",
    "FailureReport",
    "HoldEntry",
    "LedgerEntry",
    "OperatorActionEntry",
    "OrphanEvent",
    "Page",
    "PauseEntry",
    "PauseHistoryEntry",
    "PauseQueueView",
    "Required",
    "StaleTask",
    "StepEntry",
    "Summary",
    "TaskDetail",
    "TaskRecord",
    "TaskSummary",
    "TimelineEntry",
]


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class TaskSummary(_Out):
    """One task as listed by the audit queries (no large JSON columns)."""

    task_id: UUID
    status: TaskStatus
    request_text: str
    created_by: str | None = None
    project_id: UUID | None = None
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


class SuggestionView(_Out):
    """One suggestion of a task (the plan's {suggestion, reason, created_at}) and its state."""

    suggestion_id: UUID
    suggestion: str
    reason: str
    created_at: datetime
    source: str = Field(description="Who suggested it (the event's source).")
    event_id: UUID | None = None
    status: Literal["open", "applied", "rejected"] = "open"
    resolved_by: str | None = None
    resolved_at: datetime | None = None
    note: str | None = None
    resolutions: int = Field(default=0, description="How many resolutions were recorded.")


class TaskRecord(TaskSummary):
    """The whole ``tasks`` row of one task."""

    plan: dict[str, Any] | None = None
    approved_by: str | None = None
    rejected_reason: str | None = None
    outcome: dict[str, Any] | None = None
    suggestions: list[SuggestionView] = Field(
        default_factory=list,
        description="Suggestions added after the fact (task.suggested), oldest first, each "
        "with its latest resolution (suggestion.resolved).",
    )
    estimated_resources: dict[str, Any] | None = None
    actual_resources: dict[str, Any] | None = None
    external_ai_used: dict[str, Any] | None = Field(
        default=None,
        description="Summary of the external AI calls: model, provider, token_count, "
        "cost_usd (totals) and calls (each call as the event carried it).",
    )
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

    log_id: UUID
    event_id: UUID
    step_number: int
    agent_type: str
    action: str
    status: str
    output_summary: str | None = None
    output_full: dict[str, Any] | None = None
    duration_ms: int | None = None
    timestamp: datetime
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

    def describe(self) -> str:
        """The timeline title: "paused: insufficient_capacity", "admitted (immediate),
        agent a-1", "released (capacity): insufficient_capacity, agent a-1", "cancelled"."""
        reason = f": {self.reason}" if self.reason else ""
        agent = f", agent {self.agent_id}" if self.agent_id else ""
        if self.action == "released" and self.trigger == "immediate":
            return f"admitted (immediate){agent}"
        if self.action == "released" and self.trigger == "cancelled":
            return f"cancelled{reason} (the task ended while it waited)"
        trigger = f" ({self.trigger})" if self.trigger else ""
        return f"{self.action}{trigger}{reason}{agent}"


class FailureCapture(_Out):
    """What was captured when a task failed: the plan's failure record, on its timeline."""

    error_type: str | None = None
    error_cause: str | None = None
    error_message: str | None = None
    stack_trace: str | None = None
    failed_step: int | None = None
    failed_action: str | None = Field(default=None, description="The failed step's action.")
    resource_state: dict[str, Any] | None = None
    agent_id: str | None = None
    agent_type: str | None = None
    plan: dict[str, Any] | None = None


class FlushCount(_Out):
    """Write batches (ledger chain links) flushed for one trigger: count, timeout, end_of_source."""

    trigger: str
    batches: int
    events: int
    latest: datetime


class RecoveryEntry(_Out):
    """One recovery step of a silent task: requested, resumed, redispatched or failed."""

    id: int
    attempt: int = Field(description="The dispatch attempt (1: the first dispatch).")
    action: str
    trigger: str | None = None
    message_id: UUID | None = None
    actor: str | None = None
    at: datetime
    details: dict[str, Any] | None = None


class TimelineEntry(_Out):
    """One line of a task's timeline; exactly one of ``event``, ``step``, ``pause`` is set.

    The applied ``task.failed`` event also carries ``failure`` (what was captured)."""

    at: datetime
    kind: Literal["event", "step", "pause", "recovery"]
    title: str
    event: LedgerEntry | None = None
    step: StepEntry | None = None
    pause: PauseHistoryEntry | None = None
    recovery: RecoveryEntry | None = None
    failure: FailureCapture | None = None


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

    task: TaskRecord | None = Field(
        description="The task; null when only its dispatch request is recorded (no "
        "task.requested yet): the timeline still shows what happened to the request."
    )
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
    """A task executing with no event for longer than the stale limit (``audit stale``,
    and the recovery announcement of :mod:`consumer.admission.stale`)."""

    task_id: UUID
    agent_id: str | None = None
    agent_type: str | None = None
    request_text: str
    created_at: datetime
    started_at: datetime | None = None
    #: Time of its newest ledger event; None if the ledger holds none for it.
    last_event_at: datetime | None = None
    #: ``last_event_at``, or the row's ``updated_at`` when there is no ledger event.
    silent_since: datetime
    #: Seconds since ``silent_since``, as the database measured it.
    stale_seconds: float


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


class DispatchEntry(_Out):
    """A dispatch request (``dispatch.requested``) and what became of it.

    ``status``: ``waiting`` (in the pause queue), ``assigned`` (released to an agent;
    ``trigger`` says why: immediate, capacity, timeout, manual), ``cancelled`` (the task
    ended while it waited) or ``requested`` (no decision recorded).
    """

    task_id: UUID
    status: Literal["waiting", "assigned", "cancelled", "requested"]
    agent_type: str | None = None
    priority: int
    requested_at: datetime = Field(description="The time of the first dispatch.requested.")
    request_event_id: UUID
    reason: str | None = Field(default=None, description="Why it waited (if it did).")
    trigger: str | None = Field(default=None, description="What released or cancelled it.")
    agent_id: str | None = Field(default=None, description="The agent it was assigned to.")
    decided_at: datetime | None = Field(default=None, description="When it was released.")
    paused_at: datetime | None = None
    waited_s: float | None = None
    message_id: UUID | None = Field(default=None, description="The dispatch.assigned sent.")
    task_status: str | None = Field(default=None, description="null: no task.requested yet.")


class DispatchPage(_Out):
    """A page of dispatch requests, newest first; pass ``next_cursor`` back (None: last)."""

    items: list[DispatchEntry]
    next_cursor: str | None = None
