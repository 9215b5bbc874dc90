"""The ``data`` payloads of admission: dispatch, capacity, control and the outbound types.

``dispatch.requested``, ``capacity.reported``, ``control.pause`` and ``control.resume``
come in on the events exchange; ``dispatch.assigned`` and ``task.recovery_requested``
are what taskledger publishes. Models, bounds and strictness as in
:mod:`contracts.events`, which also holds the registries of every type.
"""

from __future__ import annotations

from typing import Annotated, Any, Self
from uuid import UUID

from pydantic import ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from contracts._types import (
    Boolean,
    Int32,
    Integer,
    Number,
    Payload,
    PositiveInt32,
    Timestamp,
    Uuid,
)
from contracts.bounds import CPU_CORES_MAX, Name, Text
from contracts.enums import AgentType, ControlScope, TriggerType

__all__ = [
    "DISPATCH_TRIGGERS",
    "CapacityReported",
    "ControlPause",
    "ControlResume",
    "DispatchAssigned",
    "DispatchRequested",
    "FreeResources",
    "Required",
    "TaskRecoveryRequested",
]


# --- dispatch.requested / capacity.reported ------------------------------------------


class Required(Payload):
    """Resources a piece of work needs free on the agent that takes it."""

    gpu_vram_mb: Int32 = 0
    cpu_cores: Number = Field(default=0, ge=0, le=CPU_CORES_MAX)
    memory_mb: Int32 = 0


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

    gpu_vram_mb: Int32
    cpu_cores: Number = Field(ge=0, le=CPU_CORES_MAX)
    memory_mb: Int32


class CapacityReported(Payload):
    """``capacity.reported``: an agent's free resources and load, as of now."""

    agent_id: Name = Field(min_length=1)
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
    task_id: Uuid | None = None
    reason: Text | None = None
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
    task_id: Uuid | None = None
    force: Boolean = False

    @model_validator(mode="after")
    def _scope_matches_task_id(self) -> Self:
        _check_scope(self.scope, self.task_id)
        if self.force and self.scope is not ControlScope.TASK:
            raise ValueError("force is only allowed with scope 'task'")
        return self


# --- outbound ------------------------------------------------------------------------

DISPATCH_TRIGGERS: frozenset[TriggerType] = frozenset(TriggerType)
"""The triggers a ``dispatch.assigned`` may carry: every :class:`TriggerType` (the wire enum
holds only what goes on the wire)."""

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

    task_id: Uuid
    agent_id: Name | None = Field(default=None, min_length=1)
    work_plan: dict[str, Any]
    trigger: Annotated[TriggerType, WithJsonSchema(_DISPATCH_TRIGGER_SCHEMA)]

    @field_validator("trigger")
    @classmethod
    def _trigger_is_a_dispatch_trigger(cls, value: TriggerType) -> TriggerType:
        if value not in DISPATCH_TRIGGERS:
            allowed = ", ".join(sorted(t.value for t in DISPATCH_TRIGGERS))
            raise ValueError(f"trigger must be one of {allowed}")
        return value


class LastStep(Payload):
    """The last step a task reported before it went silent."""

    step_number: PositiveInt32
    action: Text
    status: Text
    at: Timestamp


class TaskRecoveryRequested(Payload):
    """``task.recovery_requested`` (outbound): a task stuck in executing past the limit.

    It carries what the agent needs to answer: the task, the ``attempt`` (1 for the first
    dispatch, n+1 after each re-dispatch) and the ``last_step`` recorded. An agent answers
    by sending ``task.started`` or ``task.step`` for the task (counted as resumed); with
    no answer within the configured time the task is re-dispatched (``dispatch.assigned``
    trigger ``timeout``) or, past the limit, failed with cause ``agent_lost``.
    """

    task_id: Uuid
    agent_id: Name | None = None
    agent_type: AgentType | None = None
    last_event_at: Timestamp
    stale_seconds: Number = Field(ge=0)
    attempt: PositiveInt32 = 1
    last_step: LastStep | None = None
