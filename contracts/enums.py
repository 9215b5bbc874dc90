"""Enumerations of wire contract v1.

Every enumeration is a :class:`enum.StrEnum` (a ``str`` and an ``Enum`` at once): its
members compare equal to their wire values, serialise as those values, and
``str(member)`` is the value itself.
"""

from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    """Lifecycle state of a task, as projected into ``tasks.status``.

    A status never moves backward: :attr:`rank` orders them, and the three terminal
    statuses share the highest rank.
    """

    PENDING = "pending"
    APPROVED = "approved"
    EXECUTING = "executing"
    COMPLETED = "completed"
    FAILED = "failed"
    REJECTED = "rejected"

    @property
    def is_terminal(self) -> bool:
        """True for ``completed``, ``failed`` and ``rejected``: nothing follows them."""
        return self in _TERMINAL_STATUSES

    @property
    def rank(self) -> int:
        """Position in the lifecycle: pending 0, approved 1, executing 2, terminal 3."""
        return _STATUS_RANK[self]


_TERMINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.REJECTED})
_STATUS_RANK: dict[TaskStatus, int] = {
    TaskStatus.PENDING: 0,
    TaskStatus.APPROVED: 1,
    TaskStatus.EXECUTING: 2,
    TaskStatus.COMPLETED: 3,
    TaskStatus.FAILED: 3,
    TaskStatus.REJECTED: 3,
}


class AgentType(StrEnum):
    """Kind of agent that runs work or reports capacity."""

    ORCHESTRATOR = "orchestrator"
    INFRA = "infra"
    DESKTOP = "desktop"
    CODE = "code"
    RESEARCH = "research"


class StepStatus(StrEnum):
    """State of one step of a task, as reported in ``task.step``."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class PauseReason(StrEnum):
    """Why a dispatch request waits in ``pause_queue``."""

    INSUFFICIENT_CAPACITY = "insufficient_capacity"
    """No fresh capacity report of the requested agent type covers ``required``."""
    MANUAL_PAUSE = "manual_pause"
    """An operator hold (all dispatch, or this task) applies."""


class ErrorCause(StrEnum):
    """Broad cause of a failed task, as judged by the agent that ran it."""

    RESOURCE = "resource"
    APPLICATION = "application"
    DEPENDENCY = "dependency"
    UNKNOWN = "unknown"
    AGENT_LOST = "agent_lost"
    """Set by taskledger, not an agent: the agent went silent and never answered the
    recovery requests (see ``task.recovery_requested``)."""


class Complexity(StrEnum):
    """Orchestrator's estimate of how hard a planned task is."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class TriggerType(StrEnum):
    """Why work was sent to an agent: the ``trigger`` of ``dispatch.assigned``.

    Only what goes on the wire: ``immediate`` (admitted on arrival, without waiting),
    ``capacity`` (a capacity report covered a waiting request), ``timeout`` (a waiting
    request's ``not_before`` or its hold's ``resume_after`` passed, or recovery re-dispatched
    a silent task) and ``manual`` (an operator resumed, forced or re-dispatched it).

    The plan's WP-05 enum also names ``count``, ``end_of_source`` and ``condition``:

    - ``count``, ``timeout`` and ``end_of_source`` as *batch flush* triggers never leave
      the service: they are ``consumer.runtime.batcher.FlushTrigger``, recorded on each
      ledger chain link (``ledger_chain.trigger``, ``taskledger audit flushes``);
    - ``condition`` is not a separate value because the one rule that releases waiting
      work here is a condition already named: ``capacity`` (a fresh report of an agent
      that accepts work, under the load threshold, with room for the requirement). A hold
      ends by time (``timeout``) or by hand (``manual``); a hold released by another rule
      (e.g. "until agent X reports healthy") would be ``condition``, and is not offered.

    ``pause_history.trigger`` also records ``cancelled`` (the task ended while it waited):
    a fact of the store, not of the wire.
    """

    CAPACITY = "capacity"
    TIMEOUT = "timeout"
    MANUAL = "manual"
    IMMEDIATE = "immediate"


class ControlScope(StrEnum):
    """Reach of an operator's ``control.pause`` or ``control.resume``."""

    ALL = "all"
    """All dispatch; the control message carries no ``task_id``."""
    TASK = "task"
    """One task, named by the control message's ``task_id``."""


class DeadLetterReason(StrEnum):
    """Why a message went to the dead-letter queue (header ``x-taskledger-reason``)."""

    INVALID_JSON = "invalid_json"
    """The body is not UTF-8 JSON, or its top level is not an object."""
    SCHEMA_VIOLATION = "schema_violation"
    """Valid JSON, known type and version, but the envelope or ``data`` breaks the
    contract (missing or mistyped field, unknown key in ``data``, bad subject, naive
    time, ``type`` differing from the routing key, ...)."""
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    """``type`` is a string that names no event type of the contract."""
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    """``schemaversion`` is an integer other than the one this service speaks."""
    TOO_LARGE = "too_large"
    """The body exceeds the 1 MiB limit; it is not parsed at all."""
    RETRIES_EXHAUSTED = "retries_exhausted"
    """A valid message whose handling kept failing with errors that may pass (a
    constraint the data breaks, a bug) until its retry budget ran out."""
    UNROUTABLE = "unroutable"
    """A message no queue was bound to take: published to ``<prefix>.events`` with a
    routing key nothing binds (kept by the exchange's alternate exchange), or a valid
    message that arrived on a queue that has no handler for its type."""
    ID_CONFLICT = "id_conflict"
    """The event id is recorded already for a *different* event (another source or
    other content); a true re-delivery of the same event is a silent duplicate."""
    INVALID_HEADERS = "invalid_headers"
    """An AMQP header table the client cannot decode (nested deeper than 64 levels, or
    malformed); the message is kept with that header as its raw bytes."""


class EventType(StrEnum):
    """Every event type of wire contract v1, inbound and outbound."""

    TASK_REQUESTED = "task.requested"
    TASK_APPROVED = "task.approved"
    TASK_REJECTED = "task.rejected"
    TASK_STARTED = "task.started"
    TASK_STEP = "task.step"
    TASK_COMPLETED = "task.completed"
    TASK_FAILED = "task.failed"
    DISPATCH_REQUESTED = "dispatch.requested"
    CAPACITY_REPORTED = "capacity.reported"
    CONTROL_PAUSE = "control.pause"
    CONTROL_RESUME = "control.resume"
    DISPATCH_ASSIGNED = "dispatch.assigned"
    TASK_RECOVERY_REQUESTED = "task.recovery_requested"
    TASK_SUGGESTED = "task.suggested"
    SUGGESTION_RESOLVED = "suggestion.resolved"

    @property
    def requires_subject(self) -> bool:
        """True for ``task.*``, ``dispatch.*`` and ``suggestion.*``: the envelope's
        ``subject`` is the task UUID."""
        return self.value.startswith(("task.", "dispatch.", "suggestion."))
