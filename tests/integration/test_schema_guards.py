"""Immutability is enforced by the database, not by good manners.

The owner role (the test pool) meets the triggers of migration 004; the application
role of migration 005 does not even get that far for what it was never granted.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeAlias

import asyncpg
import pytest

from consumer.core.errors import ImmutableRecord
from consumer.store.db import IMMUTABLE_SQLSTATE, transaction, translate_errors
from consumer.store.models import APPEND_ONLY_TABLES

APP_ROLE = "taskledger_app"
TERMINAL = ("completed", "failed", "rejected")
#: A text column of each append-only table, for tampering attempts.
TEXT_COLUMN = {
    "event_ledger": "source",
    "execution_logs": "action",
    "pause_history": "reason",
    "operator_actions": "actor",
    "task_suggestions": "reason",
    "suggestion_resolutions": "resolved_by",
    "task_recoveries": "action",
}


Executor: TypeAlias = asyncpg.Pool | asyncpg.Connection


async def insert_task(conn: Executor, status: str = "pending") -> uuid.UUID:
    """Insert a task directly in ``status`` (the triggers guard only UPDATE and DELETE)."""
    task_id = uuid.uuid4()
    await conn.execute(
        """
        INSERT INTO tasks (task_id, status, request_text, created_at, updated_at)
        VALUES ($1, $2, 'restart kuma', now(), now())
        """,
        task_id,
        status,
    )
    return task_id


async def insert_append_only_rows(conn: Executor) -> uuid.UUID:
    """One row in each append-only table; returns the task the log row belongs to."""
    task_id = await insert_task(conn, "executing")
    await conn.execute(
        """
        INSERT INTO event_ledger (event_id, event_type, source, task_id, event_time,
                                  schema_version, envelope)
        VALUES ($1, 'task.started', 'agents/infra-1', $2, now(), 1, '{}'::jsonb),
               ($3, 'dispatch.requested', 'orchestrator', $2, now(), 1, '{}'::jsonb)
        """,
        uuid.uuid4(),
        task_id,
        uuid.uuid4(),
    )  # 016: the trigger puts the dispatch request in ledger_task_dispatches
    await conn.execute(  # 013: its id, as the insert path claims it
        "INSERT INTO ledger_event_ids (event_id, seq, received_at) "
        "SELECT event_id, seq, received_at FROM event_ledger"
    )
    await conn.execute(  # 015: a first terminal event (here only a row to guard)
        "INSERT INTO ledger_task_terminals (task_id, event_id, seq) "
        "SELECT task_id, event_id, seq FROM event_ledger WHERE event_type = 'task.started'"
    )
    await conn.execute(
        """
        INSERT INTO execution_logs (event_id, task_id, step_number, agent_type, action,
                                    status, timestamp)
        VALUES ($1, $2, 1, 'infra', 'docker restart kuma', 'completed', now())
        """,
        uuid.uuid4(),
        task_id,
    )
    await conn.execute(
        "INSERT INTO pause_history (task_id, action, reason) "
        "VALUES ($1, 'paused', 'insufficient_capacity')",
        task_id,
    )
    await conn.execute(
        "INSERT INTO operator_actions (action, actor, params) VALUES ('pause', 'ops', '{}'::jsonb)"
    )
    suggestion_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO task_suggestions (suggestion_id, task_id, position, suggestion, reason,"
        " created_at, source) VALUES ($1, $2, 1, 'pin the tag', 'broken build', now(), 'x')",
        suggestion_id,
        task_id,
    )
    await conn.execute(
        "INSERT INTO suggestion_resolutions (event_id, suggestion_id, task_id, resolution,"
        " resolved_by, resolved_at, source) VALUES ($1, $2, $3, 'applied', 'alice', now(), 'x')",
        uuid.uuid4(),
        suggestion_id,
        task_id,
    )
    await conn.execute(
        "INSERT INTO task_recoveries (task_id, attempt, action) VALUES ($1, 1, 'requested')",
        task_id,
    )
    await conn.execute(
        "INSERT INTO ledger_chain (seqs, row_digests, hash) "
        "VALUES ('{1}', ARRAY[sha256('row')], sha256('link'))"
    )
    return task_id


async def test_forward_lifecycle_updates_succeed(pool: asyncpg.Pool) -> None:
    task_id = await insert_task(pool)
    for status in ("approved", "executing", "completed"):
        with translate_errors():
            await pool.execute(
                "UPDATE tasks SET status = $2, updated_at = now() WHERE task_id = $1",
                task_id,
                status,
            )
    assert (
        await pool.fetchval("SELECT status FROM tasks WHERE task_id = $1", task_id) == "completed"
    )


async def test_update_of_completed_task_after_lifecycle_is_refused(pool: asyncpg.Pool) -> None:
    task_id = await insert_task(pool)
    for status in ("approved", "executing", "completed"):
        await pool.execute("UPDATE tasks SET status = $2 WHERE task_id = $1", task_id, status)
    with pytest.raises(asyncpg.PostgresError) as raised:
        await pool.execute("UPDATE tasks SET error_message = 'x' WHERE task_id = $1", task_id)
    assert "UPDATE not allowed on completed task" in str(raised.value)
    assert str(task_id) in str(raised.value)


@pytest.mark.parametrize("status", TERMINAL)
async def test_terminal_task_cannot_be_updated(pool: asyncpg.Pool, status: str) -> None:
    task_id = await insert_task(pool, status)
    with pytest.raises(ImmutableRecord) as raised, translate_errors():
        await pool.execute("UPDATE tasks SET updated_at = now() WHERE task_id = $1", task_id)
    message = str(raised.value)
    assert f"UPDATE not allowed on {status} task" in message
    assert str(task_id) in message


@pytest.mark.parametrize("status", ("pending", "executing", *TERMINAL))
async def test_no_task_can_be_deleted(pool: asyncpg.Pool, status: str) -> None:
    task_id = await insert_task(pool, status)
    with pytest.raises(ImmutableRecord, match="DELETE not allowed"), translate_errors():
        await pool.execute("DELETE FROM tasks WHERE task_id = $1", task_id)
    assert await pool.fetchval("SELECT count(*) FROM tasks WHERE task_id = $1", task_id) == 1


@pytest.mark.parametrize(
    ("before", "after"),
    [("executing", "approved"), ("executing", "pending"), ("approved", "pending")],
)
async def test_status_never_moves_backward(pool: asyncpg.Pool, before: str, after: str) -> None:
    task_id = await insert_task(pool, before)
    with pytest.raises(ImmutableRecord, match="may not move backward"), translate_errors():
        await pool.execute("UPDATE tasks SET status = $2 WHERE task_id = $1", task_id, after)
    assert await pool.fetchval("SELECT status FROM tasks WHERE task_id = $1", task_id) == before


async def test_task_identity_cannot_change(pool: asyncpg.Pool) -> None:
    task_id = await insert_task(pool)
    with pytest.raises(ImmutableRecord, match="identity"), translate_errors():
        await pool.execute(
            "UPDATE tasks SET request_text = 'something else' WHERE task_id = $1", task_id
        )


async def test_append_only_rows_cannot_be_updated_or_deleted(pool: asyncpg.Pool) -> None:
    await insert_append_only_rows(pool)
    for table, column in TEXT_COLUMN.items():
        for verb, statement in (
            ("UPDATE", f"UPDATE {table} SET {column} = 'tampered'"),
            ("DELETE", f"DELETE FROM {table}"),
        ):
            expected = f"{verb} not allowed on append-only table {table}"
            with pytest.raises(ImmutableRecord, match=expected), translate_errors():
                await pool.execute(statement)
        rows = (
            2 if table in ("event_ledger", "ledger_event_ids") else 1
        )  # a task + a dispatch event
        assert await pool.fetchval(f"SELECT count(*) FROM {table}") == rows
        assert await pool.fetchval(f"SELECT count(*) FROM {table} WHERE {column} = 'tampered'") == 0


async def test_truncate_is_refused(pool: asyncpg.Pool) -> None:
    await insert_append_only_rows(pool)
    for table in ("tasks", *APPEND_ONLY_TABLES):
        # execution_logs references tasks: without CASCADE the foreign-key check refuses
        # first; the point is that the trigger refuses even when CASCADE is asked for.
        with pytest.raises(ImmutableRecord, match="TRUNCATE not allowed"), translate_errors():
            await pool.execute(f"TRUNCATE {table} CASCADE")
        assert await pool.fetchval(f"SELECT count(*) FROM {table}") >= 1, table


async def test_driver_error_is_translated(pool: asyncpg.Pool) -> None:
    task_id = await insert_task(pool, "failed")
    statement = "UPDATE tasks SET status = 'completed' WHERE task_id = $1"

    with pytest.raises(asyncpg.PostgresError) as raw:
        await pool.execute(statement, task_id)
    assert raw.value.sqlstate == IMMUTABLE_SQLSTATE

    with pytest.raises(ImmutableRecord) as translated, translate_errors():
        await pool.execute(statement, task_id)
    assert isinstance(translated.value.__cause__, asyncpg.PostgresError)

    with pytest.raises(ImmutableRecord):
        async with transaction(pool) as conn:
            await conn.execute(statement, task_id)


# --- the application role (migration 005) -------------------------------------------


@asynccontextmanager
async def as_app_role(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A transaction running as the application role; rolled back when the block raises."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(f"SET LOCAL ROLE {APP_ROLE}")
        assert await conn.fetchval("SELECT current_user") == APP_ROLE
        yield conn


async def test_app_role_can_do_its_work(pool: asyncpg.Pool) -> None:
    pending = await insert_task(pool)
    async with as_app_role(pool) as conn:
        await insert_append_only_rows(conn)
        new_task = await insert_task(conn)
        await conn.execute(
            "UPDATE tasks SET status = 'approved', approved_by = 'ops' WHERE task_id = $1", pending
        )
        assert await conn.fetchval("SELECT count(*) FROM event_ledger") == 2
        assert await conn.fetchval("SELECT count(*) FROM ledger_task_dispatches") == 1
        assert await conn.fetchval("SELECT version_num FROM alembic_version") is not None
    assert await pool.fetchval("SELECT status FROM tasks WHERE task_id = $1", pending) == "approved"
    assert await pool.fetchval("SELECT count(*) FROM tasks WHERE task_id = $1", new_task) == 1


DENIED_TO_APP = [
    "SET session_replication_role = replica",  # would switch every trigger off
    "DELETE FROM tasks",
    "DELETE FROM event_ledger",
    "UPDATE event_ledger SET source = 'tampered'",
    "UPDATE execution_logs SET action = 'tampered'",
    "DELETE FROM execution_logs",
    "UPDATE pause_history SET reason = 'tampered'",
    "DELETE FROM operator_actions",
    "TRUNCATE tasks CASCADE",
    "TRUNCATE event_ledger",
    "TRUNCATE pause_queue",
    "TRUNCATE outbox",
    "ALTER TABLE tasks DISABLE TRIGGER enforce_task_immutability",
    "ALTER TABLE tasks DISABLE TRIGGER ALL",
    "DROP TABLE event_ledger",
    "DROP TRIGGER enforce_task_immutability ON tasks",
    "CREATE OR REPLACE FUNCTION prevent_task_modification() RETURNS trigger "
    "LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END; $$",
    # PostgreSQL 15 revoked CREATE on schema public from PUBLIC; the app role gets none.
    "CREATE TABLE public.sneaky (id int)",
    "DELETE FROM alembic_version",
    # 016/017: derived state only the owner's triggers write (an app role that could
    # would empty the orphan check or change what the intent filter finds)
    "DELETE FROM ledger_taskless_events",
    "INSERT INTO ledger_taskless_events VALUES (gen_random_uuid(), 1, now())",
    "INSERT INTO ledger_task_dispatches VALUES (gen_random_uuid(), gen_random_uuid(), 1, now(), now())",
    "UPDATE task_step_actions SET actions = 'tampered'",
    "DELETE FROM task_step_actions",
]


async def test_app_role_lacks_privileges(pool: asyncpg.Pool) -> None:
    await insert_append_only_rows(pool)
    allowed: list[str] = []
    for statement in DENIED_TO_APP:
        try:
            async with as_app_role(pool) as conn:
                await conn.execute(statement)
        except asyncpg.InsufficientPrivilegeError:
            continue
        allowed.append(statement)
    assert allowed == [], f"the app role was allowed: {allowed}"
    assert await pool.fetchval("SELECT count(*) FROM event_ledger") == 2
    assert await pool.fetchval("SELECT to_regclass('public.sneaky')") is None


async def test_app_role_has_no_create_on_public(pool: asyncpg.Pool) -> None:
    """What the CREATE TABLE probe relies on, stated as the catalogue sees it."""
    assert not await pool.fetchval("SELECT has_schema_privilege($1, 'public', 'CREATE')", APP_ROLE)
    assert not await pool.fetchval(
        "SELECT has_database_privilege($1, current_database(), 'CREATE')", APP_ROLE
    )
    role = await pool.fetchrow(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles "
        "WHERE rolname = $1",
        APP_ROLE,
    )
    assert role is not None
    assert not any(role.values())


async def test_a_temporary_table_cannot_capture_the_derived_rows(pool: asyncpg.Pool) -> None:
    """The owner's trigger functions (016-018) name their tables with a fixed search_path
    that puts ``pg_temp`` last: an app-role session with a temporary table of the same
    name still fills the real one (else it could keep events out of the re-fold and the
    orphan check)."""
    task_id = await insert_task(pool, "executing")
    async with as_app_role(pool) as conn:
        for table in ("ledger_task_lifecycle", "ledger_taskless_events"):
            await conn.execute(f"CREATE TEMP TABLE {table} (LIKE public.{table})")
        await conn.execute(
            "INSERT INTO event_ledger (event_id, event_type, source, task_id, event_time,"
            " schema_version, envelope) VALUES ($1, 'task.started', 'agents/a', $2, now(), 1,"
            " '{}'::jsonb), ($3, 'task.step', 'agents/a', $4, now(), 1, '{}'::jsonb)",
            uuid.uuid4(), task_id, uuid.uuid4(), uuid.uuid4(),
        )  # fmt: skip
        assert await conn.fetchval("SELECT count(*) FROM pg_temp.ledger_task_lifecycle") == 0
        assert await conn.fetchval("SELECT count(*) FROM pg_temp.ledger_taskless_events") == 0
        assert await conn.fetchval("SELECT count(*) FROM public.ledger_task_lifecycle") == 1
        assert await conn.fetchval("SELECT count(*) FROM public.ledger_taskless_events") == 1
