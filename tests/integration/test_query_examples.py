"""The sample data and the post-mortem queries: every query of scripts/query_examples.sql
answers something over the data scripts/seed_sample_data.py loads."""

from __future__ import annotations

import asyncio
import random
import re
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from consumer.store.urls import with_database
from contracts import TaskCompleted, TaskFailed, TaskRequested, TaskStep
from scripts.seed_sample_data import STATUSES, TEMPLATES, SampleBuilder, seed

ROOT = Path(__file__).resolve().parents[2]
QUERY_FILE = ROOT / "scripts" / "query_examples.sql"
SEED_SCRIPT = ROOT / "scripts" / "seed_sample_data.py"

_HEADER = re.compile(r"^-- name: (?P<name>\S+)\n-- (?P<description>.+)\n", re.MULTILINE)

#: The phase-1 plan's six post-mortem queries, carried verbatim.
PLAN_QUERIES = (
    "plan_failed_tasks_last_7_days",
    "plan_task_timeline",
    "plan_resources_by_task",
    "plan_external_ai",
    "plan_avg_duration_by_agent_type",
    "plan_failed_steps",
)
#: The plan's placeholder for a task id (query 2); the tests put a real one in its place.
PLACEHOLDER = "'XXX'"

REQUIRED_QUERIES = {
    "failed_tasks_last_7_days",
    "task_timeline",
    "resource_usage_per_task",
    "resource_usage_by_agent_type",
    "external_ai_cost",
    "avg_step_duration_by_agent_type",
    "failed_steps",
    "tasks_touching_service",
    "failures_by_error_cause",
    *PLAN_QUERIES,
}


def load_queries() -> dict[str, tuple[str, str]]:
    """name -> (description, statement), in file order."""
    text = QUERY_FILE.read_text(encoding="utf-8")
    headers = list(_HEADER.finditer(text))
    queries: dict[str, tuple[str, str]] = {}
    for header, following in zip(headers, [*headers[1:], None], strict=True):
        end = following.start() if following else len(text)
        name = header["name"]
        assert name not in queries, f"query {name} defined twice"
        queries[name] = (header["description"].strip(), text[header.end() : end].strip())
    return queries


def test_query_file_is_well_formed() -> None:
    queries = load_queries()
    assert set(queries) >= REQUIRED_QUERIES
    for name, (description, statement) in queries.items():
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name), name
        assert description, name
        assert statement.endswith(";"), name
        # One statement per header: no second statement hiding behind the first.
        assert statement.count(";") == 1, name
    assert "services_touched @> ARRAY['kuma']" in queries["tasks_touching_service"][1]


async def latest_failed(pool: asyncpg.Pool) -> Any:
    """The most recent failed task's id (what the plan's query 2 is run for)."""
    return await pool.fetchval(
        "SELECT task_id FROM tasks WHERE status = 'failed' ORDER BY created_at DESC LIMIT 1"
    )


def runnable(statement: str, task_id: Any) -> str:
    """The statement with the plan's 'XXX' placeholder replaced by ``task_id``."""
    return statement.replace(PLACEHOLDER, f"'{task_id}'")


async def test_every_query_returns_rows(pool: asyncpg.Pool) -> None:
    await seed(pool)
    failed = await latest_failed(pool)
    empty: list[str] = []
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        for name, (_, statement) in load_queries().items():
            rows = await conn.fetch(runnable(statement, failed))
            if not rows:
                empty.append(name)
    assert empty == [], f"queries without rows over the sample data: {empty}"


async def test_timeline_is_the_latest_failed_task(pool: asyncpg.Pool) -> None:
    await seed(pool)
    rows = await pool.fetch(load_queries()["task_timeline"][1])
    whats = [r["what"] for r in rows]
    assert whats[0] == "requested"
    assert whats[-1] == "failed"
    assert any(w.endswith(" failed") and w.startswith("step ") for w in whats)
    times = [r["at"] for r in rows]
    assert times == sorted(times)


async def test_seed_loads_every_status_with_steps(pool: asyncpg.Pool) -> None:
    tasks, logs = await seed(pool)
    assert tasks == await pool.fetchval("SELECT count(*) FROM tasks")
    assert logs == await pool.fetchval("SELECT count(*) FROM execution_logs")

    per_status = dict(await pool.fetch("SELECT status, count(*) FROM tasks GROUP BY status"))
    assert set(per_status) == set(STATUSES)
    assert all(5 <= n <= 10 for n in per_status.values()), per_status

    steps = await pool.fetch(
        """
        SELECT t.status, count(l.log_id) AS steps
        FROM tasks t LEFT JOIN execution_logs l USING (task_id)
        GROUP BY t.task_id, t.status
        """
    )
    for row in steps:
        if row["status"] in ("executing", "completed", "failed"):
            assert 3 <= row["steps"] <= 5, dict(row)
        else:
            assert row["steps"] == 0, dict(row)

    causes = await pool.fetchval(
        "SELECT array_agg(DISTINCT error_cause) FROM tasks WHERE status = 'failed'"
    )
    assert set(causes) <= {"resource", "application", "dependency"}
    assert await pool.fetchval("SELECT count(*) FROM pause_queue") >= 2
    assert await pool.fetchval("SELECT count(*) FROM pause_history") >= 2
    window = await pool.fetchrow("SELECT min(created_at), max(updated_at) FROM tasks")
    now = datetime.now(UTC)
    assert (now - window[0]).days < 10
    assert window[1] <= now
    assert await pool.fetchval("SELECT max(timestamp) FROM execution_logs") <= now

    # Same seed again: the ids are the same, nothing is added.
    assert await seed(pool) == (0, 0)
    # Another seed adds its own sample.
    more_tasks, more_logs = await seed(pool, seed=8)
    assert more_tasks > 0
    assert more_logs > 0


def _samples(seed_value: int, now: datetime) -> list[Any]:
    return list(SampleBuilder(random.Random(seed_value), now).build())


def test_sample_is_deterministic() -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert _samples(7, now) == _samples(7, now)
    assert _samples(7, now) != _samples(8, now)


def test_sample_rows_follow_the_wire_contract() -> None:
    """What the seed writes is what the events would have carried (contract v1 payloads)."""
    for sample in _samples(7, datetime.now(UTC)):
        task = sample.task
        TaskRequested.model_validate(
            {
                "request_text": task["request_text"],
                "created_by": task["created_by"],
                "project_id": task["project_id"],
                "plan": task["plan"],
                "estimated_resources": task["estimated_resources"],
                "services": task["services_requested"],
            }
        )
        for log in sample.logs:
            TaskStep.model_validate(
                {k: log[k] for k in ("step_number", "agent_type", "action", "status")}
                | {k: log[k] for k in ("output_summary", "output_full", "duration_ms") if log[k]}
            )
        if task["status"] in ("completed", "failed"):
            payload = {
                k: task[k]
                for k in ("services_touched", "outcome", "actual_resources", "external_ai_used")
            }
            if task["status"] == "completed":
                TaskCompleted.model_validate(payload)
            else:
                TaskFailed.model_validate(
                    payload
                    | {"failed_step": task["failed_step"], "resource_state": task["resource_state"]}
                )


def test_templates_fail_within_their_steps() -> None:
    for template in TEMPLATES:
        assert 3 <= len(template.steps) <= 5, template.request
        assert 3 <= template.failure.step <= len(template.steps), template.request
        assert template.failure.cause in ("resource", "application", "dependency")


async def test_seed_script_cli(db_url: str) -> None:
    result = await asyncio.to_thread(run_seed_script, db_url)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"Created \d+ tasks with \d+ execution logs\n", result.stdout), (
        result.stdout
    )


def run_seed_script(url: str) -> subprocess.CompletedProcess[str]:
    """Run the seed script as a user would; returns the finished process."""
    return subprocess.run(
        [sys.executable, str(SEED_SCRIPT), "--database-url", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_seed_script_errors_are_one_line(pg_admin_url: str) -> None:
    unreachable = "postgresql://postgres:hunter2@127.0.0.1:1/nowhere"
    missing = with_database(pg_admin_url, "tl_no_such_database")
    # A missing database is a configuration error, like an unreachable server: exit 3.
    for url, code, message in ((unreachable, 3, "error:"), (missing, 3, "does not exist")):
        result = await asyncio.to_thread(run_seed_script, url)
        assert result.returncode == code, result.stderr
        assert message in result.stderr
        assert "Traceback" not in result.stderr
        assert "hunter2" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


async def test_seed_script_on_unmigrated_database(empty_db_url: str) -> None:
    result = await asyncio.to_thread(run_seed_script, empty_db_url)
    assert result.returncode == 3
    assert "taskledger migrate" in result.stderr


async def test_plan_queries_verbatim_return_the_right_rows(pool: asyncpg.Pool) -> None:
    """The plan's six queries, as the plan wrote them, answer what they ask on the sample."""
    await seed(pool)
    queries = load_queries()
    statements = [queries[name][1] for name in PLAN_QUERIES]
    assert PLACEHOLDER in statements[1]
    failed = await latest_failed(pool)
    run = [await pool.fetch(runnable(sql, failed)) for sql in statements]
    failed_7d, timeline, resources, external, by_agent, failed_steps = run

    # 1. exactly the failed tasks of the last 7 days, newest first
    expected = await pool.fetch(
        "SELECT task_id FROM tasks WHERE status = 'failed' "
        "AND created_at > now() - interval '7 days' ORDER BY created_at DESC"
    )
    assert [r["task_id"] for r in failed_7d] == [r["task_id"] for r in expected]
    assert failed_7d and all(r["status"] == "failed" and r["error_message"] for r in failed_7d)
    # 2. the steps of that task, by step number, each with its timestamp
    assert [r["step_number"] for r in timeline] == list(range(1, len(timeline) + 1))
    assert {r["task_id"] for r in timeline} == {failed}
    assert all(r["timestamp"] is not None for r in timeline)
    assert timeline[-1]["status"] == "failed"
    # 3. whole seconds and megabytes: the ::int casts hold, durations are filled when finished
    finished = await pool.fetchval(
        "SELECT count(*) FROM tasks WHERE actual_resources IS NOT NULL "
        "AND created_at > now() - interval '30 days'"
    )
    assert sum(r["duration_sec"] is not None for r in resources) == finished > 0
    assert all(isinstance(r["duration_sec"], int) for r in resources if r["duration_sec"])
    # 4. ->> 'model' and ->> 'cost_usd' answer: the model names and the total of the calls
    assert external
    for row in external:
        calls = await pool.fetchval(
            "SELECT external_ai_used -> 'calls' FROM tasks WHERE task_id = $1", row["task_id"]
        )
        calls = orjson.loads(calls) if isinstance(calls, str) else calls
        assert row["model"] == ", ".join(dict.fromkeys(c["model"] for c in calls))
        total = sum(Decimal(str(c["cost_usd"])) for c in calls)
        assert abs(row["cost"] - total) < Decimal("0.000001")
    assert len(external) == await pool.fetchval(
        "SELECT count(*) FROM tasks WHERE cost_usd IS NOT NULL"
    )
    # 5. one row per agent type with its step count
    counts = dict(await pool.fetch("SELECT agent_type, count(*) FROM execution_logs GROUP BY 1"))
    assert {r["agent_type"]: r["execution_count"] for r in by_agent} == counts
    # 6. every failed step, newest first
    assert len(failed_steps) == await pool.fetchval(
        "SELECT count(*) FROM execution_logs WHERE status = 'failed'"
    )
    assert failed_steps and all(r["status"] == "failed" for r in failed_steps)
