"""Migrations 008-010 keep the data: upgrade, downgrade, upgrade with rows in the tables.

Before 008: ``execution_logs.id``/``created_at``, ``external_ai_used`` a list, decimal
``duration_seconds``, ``project_id`` TEXT. After: ``log_id``/``timestamp``, a summary the
plan's ``->> 'model'`` answers, whole seconds, a UUID project id.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from decimal import Decimal

import asyncpg

from consumer.store import migrate
from consumer.store.urls import asyncpg_dsn

BEFORE = "007_failure_indexes"
PROJECT = uuid.UUID("6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f")
CALLS = [
    {"provider": "anthropic", "model": "claude", "token_count": 100, "cost_usd": 0.25},
    {"provider": "openai", "model": "gpt", "token_count": 50, "cost_usd": 0.5},
    {"provider": "anthropic", "model": "claude", "token_count": 10, "cost_usd": 0.125},
]


async def _migrate(url: str, revision: str, *, down: bool = False) -> None:
    await asyncio.to_thread(migrate.downgrade if down else migrate.upgrade, url, revision)


async def _fill(conn: asyncpg.Connection) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    done, open_, step = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await conn.execute(
        """INSERT INTO tasks (task_id, status, request_text, project_id, created_at,
                              updated_at, completed_at, external_ai_used, actual_resources,
                              estimated_resources)
           VALUES ($1, 'completed', 'deploy kuma', 'homelab', now(), now(), now(),
                   $2::text::jsonb, '{"duration_seconds": 422.6, "gpu_vram_mb_used": 0}',
                   '{"duration_seconds": 600.0}')""",
        done,
        json.dumps(CALLS),
    )
    await conn.execute(
        """INSERT INTO tasks (task_id, status, request_text, project_id, created_at, updated_at,
                              external_ai_used, suggestions)
           VALUES ($1, 'executing', 'restart dns', $2, now(), now(), '[]',
                   '{"next_steps": ["raise the memory limit", "pin the tag"], "retry": true}')""",
        open_,
        str(PROJECT),
    )
    await conn.execute(
        """INSERT INTO execution_logs (event_id, task_id, step_number, agent_type, action,
                                       status, created_at)
           VALUES ($1, $2, 1, 'infra', 'docker compose up -d kuma', 'failed', now())""",
        step,
        done,
    )
    return done, open_, step


async def test_008_round_trip_keeps_the_data(empty_db_url: str) -> None:
    url = empty_db_url
    await _migrate(url, BEFORE)
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        done, open_, step = await _fill(conn)
    finally:
        await conn.close()

    for _ in range(2):  # upgrade, (downgrade, upgrade)
        await _migrate(url, "head")
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            row = await conn.fetchrow(
                "SELECT project_id, external_ai_used->>'model' AS model,"
                " (external_ai_used->>'cost_usd')::numeric AS cost,"
                " (actual_resources->>'duration_seconds')::int AS secs,"
                " estimated_resources->>'duration_seconds' AS est,"
                " jsonb_array_length(external_ai_used->'calls') AS calls FROM tasks"
                " WHERE task_id = $1",
                done,
            )
            assert row["project_id"] == uuid.UUID(hashlib.md5(b"homelab").hexdigest())
            assert (row["model"], row["cost"], row["calls"]) == ("claude, gpt", Decimal("0.875"), 3)
            assert (row["secs"], row["est"]) == (423, "600")
            other = await conn.fetchrow(
                "SELECT project_id, external_ai_used FROM tasks WHERE task_id = $1", open_
            )
            assert other["project_id"] == PROJECT
            assert other["external_ai_used"] is None
            log = await conn.fetchrow(
                "SELECT log_id, event_id, timestamp FROM execution_logs WHERE task_id = $1", done
            )
            assert log["log_id"] == log["event_id"] == step
            assert log["timestamp"] is not None
            # 009: what tasks.suggestions held is kept as rows (the column is gone)
            kept = await conn.fetch(
                "SELECT suggestion, source FROM task_suggestions WHERE task_id = $1"
                " ORDER BY position",
                open_,
            )
            assert [(r["suggestion"], r["source"]) for r in kept] == [
                ("raise the memory limit", "migration:009"),
                ("pin the tag", "migration:009"),
            ]
            await conn.execute(
                "INSERT INTO task_recoveries (task_id, attempt, action, trigger)"
                " VALUES ($1, 1, 'requested', 'timeout')",
                open_,
            )
            # The guards are back after the conversion.
            await _refused(conn, "UPDATE tasks SET error_message = 'x' WHERE task_id = $1", done)
            await _refused(conn, "DELETE FROM execution_logs WHERE log_id = $1", step)
        finally:
            await conn.close()

        await _migrate(url, BEFORE, down=True)
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            row = await conn.fetchrow(
                "SELECT project_id, external_ai_used::text AS ai FROM tasks WHERE task_id = $1",
                done,
            )
            assert row["project_id"] == str(uuid.UUID(hashlib.md5(b"homelab").hexdigest()))
            assert json.loads(row["ai"]) == CALLS
            back = await conn.fetchval(
                "SELECT suggestions::text FROM tasks WHERE task_id = $1", open_
            )
            assert [s["suggestion"] for s in json.loads(back)] == [
                "raise the memory limit",
                "pin the tag",
            ]
            log = await conn.fetchrow(
                "SELECT id, event_id, created_at FROM execution_logs WHERE task_id = $1", done
            )
            assert log["event_id"] == step
            assert log["id"] >= 1
            assert log["created_at"] is not None
            # The restored sequence serves new rows.
            await conn.execute(
                """INSERT INTO execution_logs (event_id, task_id, step_number, agent_type,
                                               action, status, created_at)
                   VALUES ($1, $2, 2, 'infra', 'verify', 'completed', now())""",
                uuid.uuid4(),
                open_,
            )
        finally:
            await conn.close()


async def _refused(conn: asyncpg.Connection, sql: str, arg: uuid.UUID) -> None:
    try:
        await conn.execute(sql, arg)
    except asyncpg.PostgresError as exc:
        assert exc.sqlstate == "TL001", exc
    else:
        raise AssertionError(f"not refused: {sql}")
