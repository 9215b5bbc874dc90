"""The migrations are tested: upgrade from empty, downgrade to base, upgrade again;
each revision's downgrade works on its own; the migrated schema and the models agree.

Alembic's environment calls ``asyncio.run``, so every Alembic command runs in a worker
thread (``asyncio.to_thread``) with its own event loop.
"""

from __future__ import annotations

import asyncio
import pprint
from typing import Any

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from consumer.store import migrate
from consumer.store.models import APPEND_ONLY_TABLES, Base
from consumer.store.partitions import is_partition_name
from consumer.store.urls import asyncpg_dsn, sqlalchemy_url

OUR_TABLES = {
    "tasks",
    "execution_logs",
    "event_ledger",
    "ledger_event_ids",
    "agent_capacity",
    "dispatch_holds",
    "outbox",
    "operator_actions",
    "pause_queue",
    "pause_history",
    "ledger_chain",
    "ledger_unsealed",
    "ledger_archives",
    "ledger_archived_tasks",
    "ledger_task_terminals",
    "ledger_task_dispatches",
    "ledger_taskless_events",
    "ledger_task_lifecycle",
    "task_step_actions",
    "task_suggestions",
    "suggestion_resolutions",
    "task_recoveries",
}
#: Relations a revision removes on purpose (008: execution_logs.id gave way to log_id;
#: 013: a unique index on a partitioned table must include the partition key; 019: ids
#: are found through ledger_event_ids, so the event_id index of the ledger and of each of
#: its month partitions goes).
REMOVED = {
    "008_plan_names": {"execution_logs_id_seq"},
    "013_partitioned_ledger": {"uq_event_ledger_event_id", "uq_execution_logs_event_id"},
    "019_drop_ledger_event_id_index": {"ix_event_ledger_event_id"},
}
REMOVED_PARTITION_INDEXES = {"019_drop_ledger_event_id_index": "_event_id_idx"}


def removed_by(revision: str, before: set[str]) -> set[str]:
    """What ``revision`` may remove of the relations ``before`` it: its named relations,
    and its index on every month partition (named ``event_ledger_pYYYYMM<suffix>``)."""
    suffix = REMOVED_PARTITION_INDEXES.get(revision)
    per_partition = {
        name for name in before
        if suffix and name.startswith("event_ledger_") and name.endswith(suffix)
        and is_partition_name(name.removesuffix(suffix))
    }  # fmt: skip
    return REMOVED.get(revision, set()) | per_partition


OUR_FUNCTIONS = {
    "prevent_task_modification",
    "prevent_append_only_change",
    "prevent_truncate",
    "ledger_row_digest",
    "create_ledger_partition",
    "ensure_ledger_partitions",
    "forget_taskless_events",
    "track_new_ledger_events",
    "append_task_step_actions",
    "track_task_lifecycle",
}


async def _fetch_set(url: str, sql: str) -> set[str]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return {row[0] for row in await conn.fetch(sql)}
    finally:
        await conn.close()


async def tables(url: str) -> set[str]:
    """Tables in the public schema (partitioned tables, not their partitions)."""
    return await _fetch_set(
        url,
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition",
    )


async def functions(url: str) -> set[str]:
    """Functions defined in the public schema."""
    return await _fetch_set(
        url,
        "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'public'",
    )


async def triggers(url: str) -> set[str]:
    """User-defined (non-internal) triggers in the database."""
    return await _fetch_set(url, "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")


async def relations(url: str) -> set[str]:
    """Every relation (table, index, sequence, view) in the public schema."""
    return await _fetch_set(
        url,
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public'",
    )


async def current_version(url: str) -> str | None:
    """The revision recorded in alembic_version (None when at base)."""
    versions = await _fetch_set(url, "SELECT version_num FROM alembic_version")
    assert len(versions) <= 1, versions
    return next(iter(versions), None)


def revisions_in_order(url: str) -> list[tuple[str, str | None]]:
    """(revision, down_revision) pairs from base to head; the history is linear."""
    script = ScriptDirectory.from_config(migrate.alembic_config(url))
    pairs: list[tuple[str, str | None]] = []
    for rev in script.walk_revisions():
        down = rev.down_revision
        assert down is None or isinstance(down, str), f"{rev.revision}: history must be linear"
        pairs.append((rev.revision, down))
    pairs.reverse()
    return pairs


async def upgrade(url: str, revision: str = "head") -> None:
    await asyncio.to_thread(migrate.upgrade, url, revision)


async def downgrade(url: str, revision: str = "base") -> None:
    await asyncio.to_thread(migrate.downgrade, url, revision)


async def test_upgrade_downgrade_upgrade(empty_db_url: str) -> None:
    url = empty_db_url
    head = revisions_in_order(url)[-1][0]

    await upgrade(url)
    assert await current_version(url) == head
    assert await tables(url) == OUR_TABLES | {"alembic_version"}
    assert await functions(url) >= OUR_FUNCTIONS
    assert "enforce_task_immutability" in await triggers(url)

    await downgrade(url)
    assert await current_version(url) is None
    # Only the (empty) alembic_version table and its primary key may remain.
    assert await tables(url) == {"alembic_version"}
    assert await relations(url) == {"alembic_version", "alembic_version_pkc"}
    assert await functions(url) == set()
    assert await triggers(url) == set()

    await upgrade(url)
    assert await current_version(url) == head
    assert await tables(url) == OUR_TABLES | {"alembic_version"}
    assert "enforce_task_immutability" in await triggers(url)


async def test_each_revision_downgrades_one_step_at_a_time(empty_db_url: str) -> None:
    url = empty_db_url
    steps = revisions_in_order(url)
    assert len(steps) >= 5

    # Up one revision at a time, remembering what each one added.
    seen: dict[str | None, set[str]] = {None: await relations(url)}
    for revision, down in steps:
        await upgrade(url, revision)
        assert await current_version(url) == revision
        seen[revision] = await relations(url)
        assert seen[revision] >= seen[down] - removed_by(revision, seen[down]), revision

    # Down one revision at a time: each step restores exactly the schema before it.
    for revision, down in reversed(steps):
        assert await current_version(url) == revision
        await downgrade(url, down or "base")
        assert await current_version(url) == down, f"downgrade of {revision}"
        after = await relations(url)
        if down is None:
            assert after == {"alembic_version", "alembic_version_pkc"}
        else:
            assert after == seen[down], f"downgrade of {revision} left {after ^ seen[down]}"

    # And each revision survives a down-up round trip on its own.
    for revision, down in steps:
        await upgrade(url, revision)
        await downgrade(url, down or "base")
        await upgrade(url, revision)
        assert await current_version(url) == revision
        assert await relations(url) == seen[revision], revision


def _not_a_partition(name: str | None, type_: str, parent_names: Any) -> bool:
    """The monthly partitions (013) are not in the models: only their parents are."""
    return not (type_ == "table" and name is not None and is_partition_name(name))


def _diff(sync_conn: Connection) -> list[Any]:
    context = MigrationContext.configure(sync_conn, opts={"include_name": _not_a_partition})
    return list(compare_metadata(context, Base.metadata))


async def schema_diff(url: str) -> list[Any]:
    """Alembic's autogenerate diff between the database at ``url`` and the models."""
    engine = create_async_engine(sqlalchemy_url(url))
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_diff)
    finally:
        await engine.dispose()


async def test_models_match_migrated_schema(empty_db_url: str) -> None:
    await upgrade(empty_db_url)
    diff = await schema_diff(empty_db_url)
    assert diff == [], "models and migrations disagree:\n" + pprint.pformat(diff)


async def test_model_comparison_detects_drift(empty_db_url: str) -> None:
    """The comparison above is not vacuous: a schema change behind the models' back shows."""
    await upgrade(empty_db_url)
    conn = await asyncpg.connect(asyncpg_dsn(empty_db_url))
    try:
        await conn.execute("DROP INDEX idx_pause_queue_resume")
        await conn.execute("ALTER TABLE outbox ADD COLUMN stray integer")
    finally:
        await conn.close()
    diff = await schema_diff(empty_db_url)
    added_indexes = {e[1].name for e in diff if e[0] == "add_index"}
    removed_columns = {(e[2], e[3].name) for e in diff if e[0] == "remove_column"}
    assert "idx_pause_queue_resume" in added_indexes, diff
    assert ("outbox", "stray") in removed_columns, diff


async def test_append_only_tables_have_guards(empty_db_url: str) -> None:
    await upgrade(empty_db_url)
    found = await triggers(empty_db_url)
    for table in APPEND_ONLY_TABLES:
        assert f"enforce_{table}_append_only" in found
        assert f"enforce_{table}_no_truncate" in found
    assert "enforce_tasks_no_truncate" in found


async def test_offline_sql(empty_db_url: str) -> None:
    sql = await asyncio.to_thread(migrate.offline_sql, empty_db_url)
    assert "CREATE TABLE tasks" in sql
    assert "CREATE TRIGGER enforce_task_immutability" in sql
    assert "prevent_task_modification()" in sql
    assert "CREATE TABLE pause_queue" in sql
    # Offline mode only prints: the database is still empty.
    assert await tables(empty_db_url) == set()
