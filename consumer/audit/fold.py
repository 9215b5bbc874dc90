"""The audit handler: task lifecycle events into the ``tasks`` and ``execution_logs`` rows.

The projection of a task is a pure function (:func:`fold`) of the set of its recorded,
non-conflicting lifecycle events, so any arrival order with any duplicates ends in the
same rows as the natural order:

- a task exists once its ``task.requested`` is recorded; earlier events wait in the
  ledger and apply when it arrives (``taskledger audit orphans`` lists those that wait
  too long);
- the status is the furthest one the recorded events allow, never backward;
- a terminal ``task.completed``/``task.failed`` applies only once the task's
  ``requested``, ``approved`` and ``started`` events are recorded, because a finished
  row is frozen by the database and could not take their fields afterwards;
- per non-terminal type, the latest event by (time, id) wins, independent of arrival.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from contracts import EventType, TaskStatus

LIFECYCLE_TYPES = frozenset(
    {
        EventType.TASK_REQUESTED,
        EventType.TASK_APPROVED,
        EventType.TASK_STARTED,
        EventType.TASK_COMPLETED,
        EventType.TASK_FAILED,
        EventType.TASK_REJECTED,
    }
)

_TERMINAL = frozenset({EventType.TASK_COMPLETED, EventType.TASK_FAILED, EventType.TASK_REJECTED})

#: Columns of the ``upsert_task`` statement, in parameter order.
TASK_COLUMNS = (
    "task_id", "status", "request_text", "created_by", "project_id", "plan",
    "services_requested", "estimated_resources", "agent_id", "agent_type", "approved_by",
    "approved_at", "started_at", "completed_at", "rejected_reason", "error_message",
    "services_touched", "outcome", "actual_resources", "external_ai_used", "cost_usd",
    "error_type", "error_cause", "failed_step", "resource_state", "created_at", "updated_at",
)  # fmt: skip

#: Fields compared to decide whether a stored row needs writing.
CHANGE_KEY = (
    "status",
    "approved_at",
    "started_at",
    "completed_at",
    "updated_at",
    "agent_id",
    "approved_by",
)


class LedgerRow:
    """One recorded lifecycle event as the fold sees it."""

    __slots__ = ("data", "event_id", "event_time", "event_type", "source")

    def __init__(self, record: Mapping[str, Any]) -> None:
        self.event_id: uuid.UUID = record["event_id"]
        self.event_type: str = record["event_type"]
        self.source: str = record["source"]
        self.event_time: datetime = record["event_time"]
        self.data: dict[str, Any] = record["data"]


def _latest(rows: Sequence[LedgerRow]) -> dict[str, LedgerRow]:
    """Pick one event per type: the latest by (time, id), whatever the arrival order."""
    chosen: dict[str, LedgerRow] = {}
    for row in rows:
        best = chosen.get(row.event_type)
        if best is None or (row.event_time, row.event_id) > (best.event_time, best.event_id):
            chosen[row.event_type] = row
    return chosen


def _cost(external: list[dict[str, Any]] | None) -> Decimal | None:
    if not external:
        return None
    return sum((Decimal(str(use.get("cost_usd", 0))) for use in external), Decimal(0))


def _joined(calls: list[dict[str, Any]], key: str) -> str:
    return ", ".join(dict.fromkeys(str(c.get(key)) for c in calls if c.get(key) is not None))


def ai_summary(calls: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """The stored form of ``external_ai_used``: a summary the plan's queries answer.

    ``model``/``provider`` are the distinct names in call order joined by ", ", and
    ``token_count``/``cost_usd`` the totals, so ``external_ai_used ->> 'model'`` and
    ``(external_ai_used ->> 'cost_usd')::numeric`` work as written in the plan; ``calls``
    keeps the list as the event carried it. No calls: None (SQL NULL).
    """
    if not calls:
        return None
    cost = _cost(calls) or Decimal(0)
    return {
        "model": _joined(calls, "model"),
        "provider": _joined(calls, "provider"),
        "token_count": sum(int(c.get("token_count") or 0) for c in calls),
        "cost_usd": float(cost),
        "calls": calls,
    }


def whole_seconds(resources: dict[str, Any] | None) -> dict[str, Any] | None:
    """Resources with ``duration_seconds`` in whole seconds (events recorded before the
    contract said so may carry a fraction)."""
    if not resources or not isinstance(resources.get("duration_seconds"), float):
        return resources
    return {**resources, "duration_seconds": round(resources["duration_seconds"])}


def project_uuid(value: Any) -> uuid.UUID | None:
    """The project id as a UUID; an older event's non-UUID text maps to ``md5(text)``,
    exactly as migration 008 converted the stored rows."""
    if value is None:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return uuid.UUID(hashlib.md5(str(value).encode(), usedforsecurity=False).hexdigest())


def _terminal_fields(row: dict[str, Any], ev: LedgerRow) -> None:
    data = ev.data
    row["completed_at"] = ev.event_time
    if ev.event_type == EventType.TASK_REJECTED:
        row["status"] = TaskStatus.REJECTED.value
        row["rejected_reason"] = data.get("reason")
        return
    outcome = data.get("outcome") or {}
    row["services_touched"] = list(data.get("services_touched") or [])
    row["outcome"] = outcome
    row["actual_resources"] = whole_seconds(data.get("actual_resources"))
    row["external_ai_used"] = ai_summary(data.get("external_ai_used"))
    row["cost_usd"] = _cost(data.get("external_ai_used"))
    if ev.event_type == EventType.TASK_COMPLETED:
        row["status"] = TaskStatus.COMPLETED.value
        return
    row["status"] = TaskStatus.FAILED.value
    row["error_type"] = outcome.get("error_type")
    row["error_cause"] = outcome.get("error_cause")
    row["error_message"] = outcome.get("error_message")
    row["failed_step"] = data.get("failed_step")
    row["resource_state"] = data.get("resource_state")


def fold(task_id: uuid.UUID, rows: Sequence[LedgerRow]) -> dict[str, Any] | None:
    """Return the ``tasks`` row the recorded lifecycle events of a task imply.

    None while the task's ``task.requested`` is not recorded. ``rows`` are the task's
    non-conflicting lifecycle events in any order; the result does not depend on it.
    """
    by_type = _latest([r for r in rows if r.event_type not in _TERMINAL])
    requested = by_type.get(EventType.TASK_REQUESTED)
    if requested is None:
        return None
    data = requested.data
    row: dict[str, Any] = dict.fromkeys(TASK_COLUMNS)
    row.update(
        task_id=task_id,
        status=TaskStatus.PENDING.value,
        request_text=data["request_text"],
        created_by=data.get("created_by"),
        project_id=project_uuid(data.get("project_id")),
        plan=data.get("plan"),
        services_requested=data.get("services"),
        estimated_resources=whole_seconds(data.get("estimated_resources")),
        services_touched=[],
        created_at=requested.event_time,
    )
    applied = [requested]
    approved = by_type.get(EventType.TASK_APPROVED)
    if approved is not None:
        row.update(status=TaskStatus.APPROVED.value, approved_at=approved.event_time,
                   approved_by=approved.data.get("approved_by"))  # fmt: skip
        applied.append(approved)
    started = by_type.get(EventType.TASK_STARTED)
    if started is not None:
        row.update(status=TaskStatus.EXECUTING.value, started_at=started.event_time,
                   agent_id=started.data["agent_id"], agent_type=started.data["agent_type"])  # fmt: skip
        applied.append(started)
    terminal = [r for r in rows if r.event_type in _TERMINAL]
    if terminal:
        ev = min(terminal, key=lambda r: (r.event_time, r.event_id))
        ready = ev.event_type == EventType.TASK_REJECTED or (
            approved is not None and started is not None
        )
        if ready:
            _terminal_fields(row, ev)
            applied.append(ev)
    row["updated_at"] = max(r.event_time for r in applied)
    return row
