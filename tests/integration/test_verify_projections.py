"""`verify` recomputes tasks and execution_logs from the ledger and names every row that differs."""

from __future__ import annotations

import uuid
from datetime import timedelta

import aio_pika
import asyncpg
import pytest

from consumer.core.settings import Settings
from consumer.ledger.verify import VerifyReport, verify
from consumer.store import db
from contracts import EventType, make_event
from tests.support.ledger import verify_db, without_triggers
from tests.support.processes import run_cli
from tests.support.traffic import BASE_TIME, burst, lifecycle, publish

pytestmark = pytest.mark.usefixtures("topology")


@pytest.fixture
async def tasks(amqp: aio_pika.abc.AbstractConnection, settings: Settings) -> list[uuid.UUID]:
    """A completed, a failed and a rejected task, recorded by the consumer."""
    ids = [uuid.uuid4() for _ in range(3)]
    messages = (
        lifecycle(ids[0], steps=2)
        + lifecycle(ids[1], steps=1, terminal="failed")
        + lifecycle(ids[2], terminal="rejected")
    )
    await publish(amqp, settings, messages)
    await burst(settings)
    return ids


def _kinds(report: VerifyReport) -> list[tuple[str, str | None]]:
    return sorted((f.kind, f.task_id) for f in report.findings)


async def test_projections_of_a_clean_run_verify(
    settings: Settings, tasks: list[uuid.UUID]
) -> None:
    report = await verify_db(settings)
    assert report.ok, report.findings
    assert report.tasks_checked == 3 and report.exit_code == 0


async def test_edited_outcome_of_a_finished_task_is_reported(
    settings: Settings, pool: asyncpg.Pool, tasks: list[uuid.UUID]
) -> None:
    done = tasks[0]
    await without_triggers(
        pool,
        "UPDATE tasks SET outcome = '{\"success\": false}'::jsonb, status = 'failed' "
        "WHERE task_id = $1",
        done,
    )
    report = await verify_db(settings)
    assert _kinds(report) == [("task_differs", str(done))]
    assert "status" in report.findings[0].detail and "outcome" in report.findings[0].detail
    code, out, err = await run_cli(settings, "verify")
    assert code == 1, (out, err)
    assert f"task_differs: task {done}" in out and "ledger intact" not in out


async def test_missing_and_extra_task_rows_are_reported(
    settings: Settings, pool: asyncpg.Pool, tasks: list[uuid.UUID]
) -> None:
    rejected, stray = tasks[2], uuid.uuid4()
    await without_triggers(pool, "DELETE FROM tasks WHERE task_id = $1", rejected)
    await without_triggers(
        pool,
        "INSERT INTO tasks (task_id, status, request_text, created_at, updated_at) "
        "VALUES ($1, 'completed', 'forged', now(), now())",
        stray,
    )
    report = await verify_db(settings)
    assert _kinds(report) == sorted([("task_missing", str(rejected)), ("task_extra", str(stray))])


async def test_execution_log_edits_are_reported(
    settings: Settings, pool: asyncpg.Pool, tasks: list[uuid.UUID]
) -> None:
    steps = await pool.fetch(
        "SELECT event_id FROM execution_logs WHERE task_id = $1 ORDER BY step_number", tasks[0]
    )
    edited, deleted = steps[0]["event_id"], steps[1]["event_id"]
    await without_triggers(
        pool, "UPDATE execution_logs SET status = 'failed' WHERE event_id = $1", edited
    )
    await without_triggers(pool, "DELETE FROM execution_logs WHERE event_id = $1", deleted)
    forged = uuid.uuid4()
    await without_triggers(
        pool,
        "INSERT INTO execution_logs (log_id, event_id, task_id, step_number, agent_type, action, "
        "status, timestamp) VALUES ($1, $1, $2, 9, 'infra', 'rm -rf', 'completed', now())",
        forged,
        tasks[1],
    )
    report = await verify_db(settings)
    found = sorted((f.kind, f.event_id) for f in report.findings)
    assert found == sorted(
        [("step_differs", str(edited)), ("step_missing", str(deleted)), ("step_extra", str(forged))]
    )
    (differs,) = [f for f in report.findings if f.kind == "step_differs"]
    assert "status" in differs.detail


async def test_pause_history_naming_an_unrecorded_event_is_reported(
    settings: Settings, pool: asyncpg.Pool, tasks: list[uuid.UUID]
) -> None:
    ghost = uuid.uuid4()
    await without_triggers(
        pool,
        "INSERT INTO pause_history (task_id, action, reason, event_id) "
        "VALUES ($1, 'paused', 'capacity', $2)",
        tasks[0],
        ghost,
    )
    # not detectable: a forged row naming a recorded event (pause_history is not a pure
    # function of the ledger, docs/RELIABILITY.md "Tamper cases")
    recorded = await pool.fetchval("SELECT min(event_id::text) FROM event_ledger")
    await without_triggers(
        pool,
        "INSERT INTO pause_history (task_id, action, reason, event_id) "
        "VALUES ($1, 'released', 'forged', $2::text::uuid)",
        tasks[1],
        recorded,
    )
    report = await verify_db(settings)
    assert [(f.kind, f.event_id) for f in report.findings] == [("pause_history_orphan", str(ghost))]


async def test_late_duplicates_and_disorder_are_not_findings(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    """A finished task is frozen: a later second approval does not change it, and verify
    knows (no false positive); out-of-order arrival projects to the same rows."""
    frozen, shuffled = uuid.uuid4(), uuid.uuid4()
    await publish(amqp, settings, lifecycle(frozen, steps=1))
    events = lifecycle(shuffled, steps=2)
    await publish(amqp, settings, events[::-1])
    await burst(settings)
    late = make_event(
        EventType.TASK_APPROVED, {"approved_by": "mallory"}, source="orchestrator",
        subject=frozen, id=uuid.uuid4(), time=BASE_TIME + timedelta(hours=1),
    )  # fmt: skip
    await publish(amqp, settings, [(EventType.TASK_APPROVED.value, late)])
    await burst(settings)
    assert (
        await pool.fetchval("SELECT approved_by FROM tasks WHERE task_id = $1", frozen) == "alice"
    )
    report = await verify_db(settings)
    assert report.ok, report.findings
    assert report.tasks_checked == 2


async def test_a_batch_that_froze_a_task_with_a_later_event_is_not_a_finding(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    """[requested, approved, started] [completed, approved by bob] [approved by carol]:
    the handler froze the task with bob (its batch folded both), which is neither the
    event-by-event nor the all-at-once fold; verify tries each batch end."""
    task = uuid.uuid4()
    events = lifecycle(task, steps=0)  # requested, approved, started, completed

    def approval(who: str, hours: int) -> tuple[str, bytes]:
        body = make_event(
            EventType.TASK_APPROVED, {"approved_by": who}, source="orchestrator",
            subject=task, id=uuid.uuid4(), time=BASE_TIME + timedelta(hours=hours),
        )  # fmt: skip
        return EventType.TASK_APPROVED.value, body

    for batch in (events[:3], [events[3], approval("bob", 1)], [approval("carol", 2)]):
        await publish(amqp, settings, batch)
        await burst(settings)
    assert await pool.fetchval("SELECT approved_by FROM tasks WHERE task_id = $1", task) == "bob"
    report = await verify_db(settings)
    assert report.ok, report.findings


async def test_verify_runs_as_the_least_privilege_role(
    settings: Settings, tasks: list[uuid.UUID]
) -> None:
    """The scratch tables are temporary: the app role (no CREATE, no UPDATE of logs) can verify."""
    conn = await db.connect(settings.dsn)
    try:
        await conn.execute("SET ROLE taskledger_app")
        report = await verify(conn)
    finally:
        await conn.close()
    assert report.ok and report.tasks_checked == 3, report.findings
