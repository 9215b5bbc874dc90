"""The ``data`` payload of every event type of wire contract v1.

One frozen pydantic model per type. Unknown keys are rejected (``extra="forbid"``), so
a producer's typo becomes a ``schema_violation`` dead letter instead of silent loss.
Numbers, booleans and timestamps accept exactly what the exported JSON Schema accepts
(see :mod:`contracts._types`).
"""

from __future__ import annotations

from typing import Annotated, Any, Self
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from contracts._types import (
    Boolean,
    FalseConst,
    Integer,
    NonNegativeInteger,
    Number,
    PositiveInteger,
    Timestamp,
    TrueConst,
)
from contracts.enums import (
    AgentType,
    Complexity,
    ControlScope,
    ErrorCause,
    EventType,
    StepStatus,
    TaskStatus,
    TriggerType,
)

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


class Payload(BaseModel):
    """Base of every payload model and of the objects nested in them.

    Frozen, and strict about keys: an unknown key is a validation error.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --- task.requested -------------------------------------------------------------------


class Plan(Payload):
    """The orchestrator's plan for a task."""

    steps: list[str]
    estimated_duration_seconds: NonNegativeInteger
    complexity: Complexity


class EstimatedResources(Payload):
    """What the orchestrator expects a task to use; every figure is optional."""

    duration_seconds: Number | None = Field(default=None, ge=0)
    gpu_vram_mb: NonNegativeInteger | None = None
    cpu_cores: Number | None = Field(default=None, ge=0)
    memory_mb: NonNegativeInteger | None = None


class TaskRequested(Payload):
    """``task.requested``: the orchestrator accepted a request; the task is pending."""

    request_text: str = Field(min_length=1, max_length=10_000)
    created_by: str | None = None
    project_id: str | None = None
    plan: Plan | None = None
    estimated_resources: EstimatedResources | None = None
    services: list[str] | None = None


# --- task.approved / task.rejected / task.started / task.step -----------------------


class TaskApproved(Payload):
    """``task.approved``: the task may run."""

    approved_by: str | None = None


class TaskRejected(Payload):
    """``task.rejected``: the task will not run (terminal)."""

    reason: str = Field(min_length=1)


class TaskStarted(Payload):
    """``task.started``: an agent took the task; it is executing."""

    agent_id: str = Field(min_length=1)
    agent_type: AgentType


class TaskStep(Payload):
    """``task.step``: progress of one step. ``output_summary`` is stored cut to 500 chars."""

    step_number: PositiveInteger
    agent_type: AgentType
    action: str = Field(min_length=1)
    status: StepStatus
    output_summary: str | None = None
    output_full: dict[str, Any] | None = None
    duration_ms: NonNegativeInteger | None = None


# --- task.completed / task.failed ----------------------------------------------------


class ActualResources(Payload):
    """What a finished task actually used, as measured by its agent."""

    duration_seconds: Number = Field(ge=0)
    cpu_time_ms: NonNegativeInteger
    gpu_vram_mb_used: NonNegativeInteger
    peak_memory_mb: NonNegativeInteger
    agent_load_pct: Number = Field(ge=0, le=100)


class ExternalAIUse(Payload):
    """One external AI model a task called, and what it cost."""

    provider: str
    model: str
    token_count: NonNegativeInteger
    cost_usd: Number = Field(ge=0)


class SuccessOutcome(Payload):
    """Outcome of a completed task."""

    success: TrueConst
    output_summary: str
    last_lines: list[str]


class FailureOutcome(Payload):
    """Outcome of a failed task."""

    success: FalseConst
    error_type: str
    error_cause: ErrorCause
    error_message: str
    stack_trace: str | None = None
    last_lines: list[str]


class TaskCompleted(Payload):
    """``task.completed``: the task succeeded (terminal)."""

    services_touched: list[str]
    outcome: SuccessOutcome
    actual_resources: ActualResources
    external_ai_used: list[ExternalAIUse] | None = None


class TaskFailed(Payload):
    """``task.failed``: the task failed (terminal)."""

    services_touched: list[str]
    outcome: FailureOutcome
    actual_resources: ActualResources
    external_ai_used: list[ExternalAIUse] | None = None
    failed_step: PositiveInteger | None = None
    resource_state: dict[str, Any] | None = None


# --- dispatch.requested / capacity.reported ------------------------------------------


class Required(Payload):
    """Resources a piece of work needs free on the agent that takes it."""

    gpu_vram_mb: NonNegativeInteger = 0
    cpu_cores: Number = Field(default=0, ge=0)
    memory_mb: NonNegativeInteger = 0


class DispatchRequested(Payload):
    """``dispatch.requested``: the orchestrator asks for work to be given to an agent.

    ``priority`` runs from 1 (most urgent) to 5; ``not_before`` holds it back until then.
    """

    work_plan: dict[str, Any]
    required: Required
    agent_type: AgentType
    priority: Integer = Field(default=3, ge=1, le=5)
    not_before: Timestamp | None = None


class FreeResources(Payload):
    """Resources an agent reports free."""

    gpu_vram_mb: NonNegativeInteger
    cpu_cores: Number = Field(ge=0)
    memory_mb: NonNegativeInteger


class CapacityReported(Payload):
    """``capacity.reported``: an agent's free resources and load, as of now."""

    agent_id: str = Field(min_length=1)
    agent_type: AgentType
    free: FreeResources
    load_pct: Number = Field(ge=0, le=100)
    accepting: Boolean


# --- control.pause / control.resume --------------------------------------------------

_TASK_SCOPE_RULE: dict[str, Any] = {
    "if": {"properties": {"scope": {"const": "task"}}, "required": ["scope"]},
    "then": {
        "required": ["task_id"],
        "properties": {"task_id": {"type": "string", "format": "uuid"}},
    },
}


def _all_scope_rule(**forbidden: Any) -> dict[str, Any]:
    """JSON Schema twin of the ``scope == all`` checks of the control validators."""
    return {
        "if": {"properties": {"scope": {"const": "all"}}, "required": ["scope"]},
        "then": {"properties": {"task_id": {"type": "null"}, **forbidden}},
    }


def _check_scope(scope: ControlScope, task_id: UUID | None) -> None:
    """``scope=task`` needs a ``task_id``; ``scope=all`` must not have one."""
    if scope is ControlScope.TASK and task_id is None:
        raise ValueError("scope 'task' requires task_id")
    if scope is ControlScope.ALL and task_id is not None:
        raise ValueError("scope 'all' forbids task_id")


class ControlPause(Payload):
    """``control.pause``: an operator holds all dispatch, or one task's.

    ``scope=task`` requires ``task_id``; ``scope=all`` forbids it. ``resume_after``
    lifts the hold by itself at that time.
    """

    model_config = ConfigDict(
        json_schema_extra={"allOf": [_TASK_SCOPE_RULE, _all_scope_rule()]},
    )

    scope: ControlScope
    task_id: UUID | None = None
    reason: str | None = None
    resume_after: Timestamp | None = None

    @model_validator(mode="after")
    def _scope_matches_task_id(self) -> Self:
        _check_scope(self.scope, self.task_id)
        return self


class ControlResume(Payload):
    """``control.resume``: an operator lifts a hold, or forces one task out.

    ``scope=task`` requires ``task_id``; ``scope=all`` forbids it. ``force`` (dispatch
    now, capacity or not) is allowed only with ``scope=task``.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [_TASK_SCOPE_RULE, _all_scope_rule(force={"const": False})],
        },
    )

    scope: ControlScope
    task_id: UUID | None = None
    force: Boolean = False

    @model_validator(mode="after")
    def _scope_matches_task_id(self) -> Self:
        _check_scope(self.scope, self.task_id)
        if self.force and self.scope is not ControlScope.TASK:
            raise ValueError("force is only allowed with scope 'task'")
        return self


# --- outbound ------------------------------------------------------------------------

DISPATCH_TRIGGERS: frozenset[TriggerType] = frozenset(
    {TriggerType.IMMEDIATE, TriggerType.CAPACITY, TriggerType.TIMEOUT, TriggerType.MANUAL}
)
"""The triggers a ``dispatch.assigned`` may carry."""

_DISPATCH_TRIGGER_SCHEMA: dict[str, Any] = {
    "type": "string",
    "enum": [t.value for t in TriggerType if t in DISPATCH_TRIGGERS],
    "title": "Trigger",
}


class DispatchAssigned(Payload):
    """``dispatch.assigned`` (outbound): work released to an agent.

    ``agent_id`` is None when an operator forced the task out with no agent fit.
    ``trigger`` is one of :data:`DISPATCH_TRIGGERS`.
    """

    task_id: UUID
    agent_id: str | None = Field(default=None, min_length=1)
    work_plan: dict[str, Any]
    trigger: Annotated[TriggerType, WithJsonSchema(_DISPATCH_TRIGGER_SCHEMA)]

    @field_validator("trigger")
    @classmethod
    def _trigger_is_a_dispatch_trigger(cls, value: TriggerType) -> TriggerType:
        if value not in DISPATCH_TRIGGERS:
            allowed = ", ".join(sorted(t.value for t in DISPATCH_TRIGGERS))
            raise ValueError(f"trigger must be one of {allowed}")
        return value


class TaskRecoveryRequested(Payload):
    """``task.recovery_requested`` (outbound): a task stuck in executing past the limit."""

    task_id: UUID
    agent_id: str | None = None
    agent_type: AgentType | None = None
    last_event_at: Timestamp
    stale_seconds: Number = Field(ge=0)


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
