"""The ``data`` payload of every event type of wire contract v1, and the type registries.

One frozen pydantic model per type: the ``task.*`` lifecycle here, admission's types
(dispatch, capacity, control, outbound) in :mod:`contracts.admission`, re-exported here.
Unknown keys are rejected (``extra="forbid"``), so a producer's typo becomes a
``schema_violation`` dead letter instead of silent loss. Numbers, booleans, UUIDs and
timestamps accept exactly what the exported JSON Schema accepts (see
:mod:`contracts._types`); every integer, string and array is bounded (see
:mod:`contracts.bounds`).
"""

from __future__ import annotations

from typing import Annotated, Any

from annotated_types import MaxLen
from pydantic import BaseModel, Field

from contracts._types import (
    FalseConst,
    Int32,
    JsonCount,
    Number,
    Payload,
    PositiveInt32,
    TrueConst,
    Uuid,
)
from contracts.admission import (
    DISPATCH_TRIGGERS,
    CapacityReported,
    ControlPause,
    ControlResume,
    DispatchAssigned,
    DispatchRequested,
    FreeResources,
    Required,
    TaskRecoveryRequested,
)
from contracts.bounds import (
    COST_USD_MAX,
    CPU_CORES_MAX,
    LIST_MAX,
    Lines,
    LongText,
    Name,
    NameList,
    Text,
    TextList,
)
from contracts.enums import (
    AgentType,
    Complexity,
    ErrorCause,
    EventType,
    StepStatus,
    TaskStatus,
)
from contracts.suggestions import SuggestionResolved, TaskSuggested

__all__ = [
    "DATA_MODELS",
    "DISPATCH_TRIGGERS",
    "EVENT_STATUS",
    "INBOUND_TYPES",
    "OUTBOUND_TYPES",
    "TERMINAL_EVENT_TYPES",
    "ActualResources",
    "CapacityReported",
    "ControlPause",
    "ControlResume",
    "DispatchAssigned",
    "DispatchRequested",
    "EstimatedResources",
    "ExternalAIUse",
    "FailureOutcome",
    "FreeResources",
    "Payload",
    "Plan",
    "Required",
    "SuccessOutcome",
    "TaskApproved",
    "TaskCompleted",
    "TaskFailed",
    "TaskRecoveryRequested",
    "TaskRejected",
    "TaskRequested",
    "TaskStarted",
    "TaskStep",
]


# --- task.requested -------------------------------------------------------------------


class Plan(Payload):
    """The orchestrator's plan for a task."""

    steps: TextList
    estimated_duration_seconds: JsonCount
    complexity: Complexity


class EstimatedResources(Payload):
    """What the orchestrator expects a task to use; every figure is optional."""

    duration_seconds: Int32 | None = Field(
        default=None, description="Whole seconds (the plan casts it with ::int)."
    )
    gpu_vram_mb: JsonCount | None = None
    cpu_cores: Number | None = Field(default=None, ge=0, le=CPU_CORES_MAX)
    memory_mb: JsonCount | None = None


class TaskRequested(Payload):
    """``task.requested``: the orchestrator accepted a request; the task is pending."""

    request_text: Text = Field(min_length=1)
    created_by: Name | None = None
    project_id: Uuid | None = Field(
        default=None, description="The project the task belongs to (a UUID; optional)."
    )
    plan: Plan | None = None
    estimated_resources: EstimatedResources | None = None
    services: NameList | None = None


# --- task.approved / task.rejected / task.started / task.step -----------------------


class TaskApproved(Payload):
    """``task.approved``: the task may run."""

    approved_by: Name | None = None


class TaskRejected(Payload):
    """``task.rejected``: the task will not run (terminal)."""

    reason: Text = Field(min_length=1)


class TaskStarted(Payload):
    """``task.started``: an agent took the task; it is executing."""

    agent_id: Name = Field(min_length=1)
    agent_type: AgentType


class TaskStep(Payload):
    """``task.step``: progress of one step. ``output_summary`` is stored cut to 500 chars."""

    step_number: PositiveInt32
    agent_type: AgentType
    action: Text = Field(min_length=1)
    status: StepStatus
    output_summary: Text | None = None
    output_full: dict[str, Any] | None = None
    duration_ms: Int32 | None = None


# --- task.completed / task.failed ----------------------------------------------------


class ActualResources(Payload):
    """What a finished task actually used, as measured by its agent."""

    duration_seconds: Int32 = Field(description="Whole seconds (the plan casts it with ::int).")
    cpu_time_ms: JsonCount
    gpu_vram_mb_used: Int32 = Field(description="Whole megabytes (the plan casts it with ::int).")
    peak_memory_mb: JsonCount
    agent_load_pct: Number = Field(ge=0, le=100)


class ExternalAIUse(Payload):
    """One external AI model a task called, and what it cost."""

    provider: Name
    model: Name
    token_count: JsonCount
    cost_usd: Number = Field(ge=0, le=COST_USD_MAX)


class SuccessOutcome(Payload):
    """Outcome of a completed task."""

    success: TrueConst
    output_summary: Text
    last_lines: Lines


class FailureOutcome(Payload):
    """Outcome of a failed task."""

    success: FalseConst
    error_type: Name
    error_cause: ErrorCause
    error_message: Text
    stack_trace: LongText | None = None
    last_lines: Lines


class TaskCompleted(Payload):
    """``task.completed``: the task succeeded (terminal)."""

    services_touched: NameList
    outcome: SuccessOutcome
    actual_resources: ActualResources
    external_ai_used: Annotated[list[ExternalAIUse], MaxLen(LIST_MAX)] | None = None


class TaskFailed(Payload):
    """``task.failed``: the task failed (terminal)."""

    services_touched: NameList
    outcome: FailureOutcome
    actual_resources: ActualResources
    external_ai_used: Annotated[list[ExternalAIUse], MaxLen(LIST_MAX)] | None = None
    failed_step: PositiveInt32 | None = None
    resource_state: dict[str, Any] | None = None


# --- registries ----------------------------------------------------------------------

DATA_MODELS: dict[EventType, type[BaseModel]] = {
    EventType.TASK_REQUESTED: TaskRequested,
    EventType.TASK_APPROVED: TaskApproved,
    EventType.TASK_REJECTED: TaskRejected,
    EventType.TASK_STARTED: TaskStarted,
    EventType.TASK_STEP: TaskStep,
    EventType.TASK_COMPLETED: TaskCompleted,
    EventType.TASK_FAILED: TaskFailed,
    EventType.DISPATCH_REQUESTED: DispatchRequested,
    EventType.CAPACITY_REPORTED: CapacityReported,
    EventType.CONTROL_PAUSE: ControlPause,
    EventType.CONTROL_RESUME: ControlResume,
    EventType.DISPATCH_ASSIGNED: DispatchAssigned,
    EventType.TASK_RECOVERY_REQUESTED: TaskRecoveryRequested,
    EventType.TASK_SUGGESTED: TaskSuggested,
    EventType.SUGGESTION_RESOLVED: SuggestionResolved,
}
"""The ``data`` model of every event type."""

OUTBOUND_TYPES: frozenset[EventType] = frozenset(
    {EventType.DISPATCH_ASSIGNED, EventType.TASK_RECOVERY_REQUESTED}
)
"""Types taskledger publishes (on the dispatch exchange)."""

INBOUND_TYPES: frozenset[EventType] = frozenset(EventType) - OUTBOUND_TYPES
"""Types taskledger consumes from the events exchange."""

TERMINAL_EVENT_TYPES: frozenset[EventType] = frozenset(
    {EventType.TASK_COMPLETED, EventType.TASK_FAILED, EventType.TASK_REJECTED}
)
"""Types that end a task; a second one for the same task is a conflict."""

EVENT_STATUS: dict[EventType, TaskStatus] = {
    EventType.TASK_REQUESTED: TaskStatus.PENDING,
    EventType.TASK_APPROVED: TaskStatus.APPROVED,
    EventType.TASK_STARTED: TaskStatus.EXECUTING,
    EventType.TASK_COMPLETED: TaskStatus.COMPLETED,
    EventType.TASK_FAILED: TaskStatus.FAILED,
    EventType.TASK_REJECTED: TaskStatus.REJECTED,
}
"""The task status each lifecycle event drives."""
