"""The audit projection is a pure function of the recorded events: order and duplicates
never change it (no broker, no database)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.audit.fold import LedgerRow, fold

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
TASK = uuid.UUID("00000000-0000-4000-8000-000000000001")


def row(kind: str, seconds: int, data: dict[str, Any], n: int = 0) -> LedgerRow:
    return LedgerRow({
        "event_id": uuid.uuid5(TASK, f"{kind}:{n}"), "event_type": kind,
        "source": "orchestrator", "event_time": T0 + timedelta(seconds=seconds), "data": data,
    })  # fmt: skip


REQUESTED = row("task.requested", 1, {"request_text": "deploy kuma", "services": ["kuma"]})
APPROVED = row("task.approved", 2, {"approved_by": "alice"})
STARTED = row("task.started", 3, {"agent_id": "infra-01", "agent_type": "infra"})
COMPLETED = row("task.completed", 9, {
    "services_touched": ["kuma"], "outcome": {"success": True},
    "external_ai_used": [{"model": "m", "cost_usd": 0.25}, {"model": "n", "cost_usd": 0.5}],
})  # fmt: skip
FAILED = row("task.failed", 8, {
    "services_touched": ["kuma"], "failed_step": 2, "resource_state": {"memory": "full"},
    "outcome": {"success": False, "error_type": "OOMKilled", "error_cause": "resource",
                "error_message": "out of memory"},
})  # fmt: skip
LATER_APPROVAL = row("task.approved", 4, {"approved_by": "bob"}, n=1)

LIFECYCLES = {
    "completed": [REQUESTED, APPROVED, STARTED, COMPLETED],
    "failed": [REQUESTED, APPROVED, STARTED, FAILED],
    "re-approved": [REQUESTED, APPROVED, LATER_APPROVAL, STARTED],
    "two terminals": [REQUESTED, APPROVED, STARTED, FAILED, COMPLETED],
}


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(sorted(LIFECYCLES)),
    data=st.data(),
)
def test_any_order_with_duplicates_folds_like_the_natural_order(name: str, data: Any) -> None:
    natural = LIFECYCLES[name]
    extra = data.draw(st.lists(st.sampled_from(natural), max_size=6), label="duplicates")
    shuffled = data.draw(st.permutations([*natural, *extra]), label="arrival order")
    assert fold(TASK, shuffled) == fold(TASK, natural)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([APPROVED, STARTED, COMPLETED, FAILED]), max_size=8))
def test_nothing_exists_before_the_request(rows: list[LedgerRow]) -> None:
    assert fold(TASK, rows) is None


def test_completed_task_row() -> None:
    result = fold(TASK, LIFECYCLES["completed"])
    assert result is not None
    assert result["status"] == "completed"
    assert result["cost_usd"] == Decimal("0.75")
    assert (result["approved_by"], result["agent_id"]) == ("alice", "infra-01")
    assert result["created_at"] == REQUESTED.event_time
    assert result["updated_at"] == result["completed_at"] == COMPLETED.event_time


def test_failure_fields_are_captured() -> None:
    result = fold(TASK, LIFECYCLES["failed"])
    assert result is not None
    assert (result["status"], result["error_type"], result["error_cause"]) == (
        "failed", "OOMKilled", "resource",
    )  # fmt: skip
    assert result["failed_step"] == 2 and result["resource_state"] == {"memory": "full"}


def test_the_first_terminal_wins_and_a_terminal_waits_for_start() -> None:
    result = fold(TASK, LIFECYCLES["two terminals"])
    assert result is not None and result["status"] == "failed"  # 8 s is before 9 s
    waiting = fold(TASK, [REQUESTED, APPROVED, COMPLETED])
    assert waiting is not None and waiting["status"] == "approved"
    assert waiting["completed_at"] is None


def test_status_never_goes_backward_and_the_latest_approval_wins() -> None:
    result = fold(TASK, LIFECYCLES["re-approved"])
    assert result is not None
    assert result["status"] == "executing"
    assert result["approved_by"] == "bob"
