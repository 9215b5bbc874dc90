"""Fill a database with many tasks and steps of realistic shape, for the scale benchmark.

    python scripts/generate_scale_data.py [--database-url URL] [--tasks 1000000]
                                          [--steps-per-task 5] [--chunk 20000] [--days 365]

Creates the database if it is missing and migrates it, then inserts ``--tasks`` task rows
and about ``--steps-per-task`` times as many ``execution_logs`` rows, server-side
(``INSERT ... SELECT generate_series``, one transaction per chunk; the trigger of 017
appends their actions to ``task_step_actions``, as for the consumer's steps), and
finally runs ``VACUUM ANALYZE``. Shape: statuses mostly completed (88 %), failed (10 %, causes resource
/ application / dependency / unknown with matching error types), rejected (1 %); a few
pending, approved and executing tasks in the last six hours; 1-3 services per task from
30 with a skewed popularity (kuma is among the popular ones); request texts and plan
steps carrying verbs the intent search knows (deploy, restart, update, backup, ...);
AI cost on a third of the tasks; created_at spread evenly over ``--days`` and increasing
with the insertion order (as the consumer records tasks, so the heap follows time). The event ledger is
left empty (the task timeline reads it by task id through an index either way).

Running it again adds another ``--tasks`` rows. Use a scratch database: at one million
tasks it takes about 2.5 GB of disk.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import asyncpg
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from consumer.cli.common import console, fail, load_settings
from consumer.core.errors import TaskledgerError
from consumer.core.settings import redact_url
from consumer.store.migrate import ensure_database, upgrade
from consumer.store.urls import asyncpg_dsn

SERVICES = [
    "dns", "traefik", "kuma", "portainer", "postgres", "grafana", "prometheus", "nginx",
    "redis", "minio", "gitea", "jellyfin", "nextcloud", "pihole", "vaultwarden", "home-assistant",
    "mosquitto", "loki", "tempo", "alertmanager", "node-exporter", "syncthing", "paperless",
    "immich", "frigate", "ollama", "whisper", "coder", "drone", "keycloak",
]  # fmt: skip
VERBS = [
    "deploy", "restart", "update", "back up", "roll back", "configure", "check", "migrate",
    "scale", "upgrade", "install", "reboot",
]  # fmt: skip

# One chunk: $1..$2 are the generate_series bounds, $3 the spread in days, $4 the
# average number of steps of a started task, $5 the services, $6 the verbs, $7 the first
# number of this run and $8 its number of tasks. Tasks are inserted in created_at order
# (give or take a few minutes), as the audit consumer records them, so the heap follows
# time; unfinished ones (pending, approved, executing) are only among the last six hours.
CHUNK_SQL = """
WITH picks AS (
    SELECT g,
           random() AS r_status, random() AS r_agent, random() AS r_err,
           random() AS r_cost, random() AS r_n, random() AS r_verb,
           least(now(), now() - make_interval(days => $3::int)
                            * (1 - (g - $7::bigint + 0.5) / $8::float8)
                        + (random() - 0.5) * interval '10 minutes') AS created_at
    FROM generate_series($1::bigint, $2::bigint) AS g
), shaped AS (
    SELECT p.*,
           CASE WHEN r_status < 0.840 THEN 'completed'
                WHEN r_status < 0.940 THEN 'failed'
                WHEN r_status < 0.950 THEN 'rejected'
                WHEN created_at < now() - interval '6 hours'
                    THEN CASE WHEN r_status < 0.990 THEN 'completed'
                              WHEN r_status < 0.997 THEN 'failed' ELSE 'rejected' END
                WHEN r_status < 0.980 THEN 'executing'
                WHEN r_status < 0.990 THEN 'approved'
                ELSE 'pending' END AS status,
           CASE WHEN r_agent < 0.60 THEN 'infra' WHEN r_agent < 0.80 THEN 'code'
                WHEN r_agent < 0.90 THEN 'research' WHEN r_agent < 0.97 THEN 'desktop'
                ELSE 'orchestrator' END AS agent_type,
           ($6::text[])[1 + floor(r_verb * array_length($6::text[], 1))::int] AS verb,
           ARRAY(SELECT DISTINCT ($5::text[])[1 + floor(power(random(), 2)
                                   * array_length($5::text[], 1))::int]
                 FROM generate_series(1, 1 + floor(r_n * 3)::int) AS k) AS services
    FROM picks p
), timed AS (
    SELECT s.*,
           CASE WHEN r_err < 0.40 THEN 'resource' WHEN r_err < 0.75 THEN 'application'
                WHEN r_err < 0.95 THEN 'dependency' ELSE 'unknown' END AS cause
    FROM shaped s
), inserted AS (
    INSERT INTO tasks (task_id, status, request_text, created_by, project_id, plan,
                       services_requested, agent_id, agent_type, approved_by, approved_at,
                       started_at, completed_at, rejected_reason, error_message,
                       services_touched, outcome, actual_resources, external_ai_used, cost_usd,
                       error_type, error_cause, failed_step, created_at, updated_at)
    SELECT gen_random_uuid(),
           status,
           initcap(verb) || ' ' || services[1] || ' on node-' || (g % 40)
               || ' (ticket #' || g || ')',
           (ARRAY['alice', 'bob', 'carol', 'dave'])[1 + (g % 4)],
           md5((ARRAY['homelab', 'media', 'infra', 'dev'])[1 + (g % 4)])::uuid,
           jsonb_build_object(
               'steps', jsonb_build_array('check ' || services[1] || ' health',
                                          verb || ' ' || services[1], 'verify ' || services[1]),
               'estimated_duration_seconds', 60 + (g % 900),
               'complexity', (ARRAY['low', 'medium', 'high'])[1 + (g % 3)]),
           services,
           CASE WHEN status IN ('executing', 'completed', 'failed')
                THEN agent_type || '-' || lpad((1 + g % 8)::text, 2, '0') END,
           CASE WHEN status IN ('executing', 'completed', 'failed') THEN agent_type END,
           CASE WHEN status <> 'pending' THEN 'alice' END,
           CASE WHEN status <> 'pending' THEN created_at + interval '20 seconds' END,
           CASE WHEN status IN ('executing', 'completed', 'failed')
                THEN created_at + interval '1 minute' END,
           CASE WHEN status IN ('completed', 'failed')
                THEN created_at + make_interval(secs => 120 + (g % 1800))
                WHEN status = 'rejected' THEN created_at + interval '5 minutes' END,
           CASE WHEN status = 'rejected' THEN 'maintenance window closed' END,
           CASE WHEN status = 'failed' THEN
                CASE cause WHEN 'resource' THEN services[1] || ': out of memory (limit 512 MiB)'
                           WHEN 'application' THEN 'health check of ' || services[1] || ' failed'
                           WHEN 'dependency' THEN 'connection refused by ' || services[1]
                           ELSE 'agent lost its session' END END,
           CASE WHEN status IN ('completed', 'failed') THEN services ELSE '{}'::text[] END,
           CASE WHEN status IN ('completed', 'failed') THEN jsonb_build_object(
                'success', status = 'completed',
                'output_summary', verb || ' ' || services[1] || ': ' || status,
                'last_lines', jsonb_build_array('step ' || (g % 5) || ' done')) END,
           CASE WHEN status IN ('completed', 'failed') THEN jsonb_build_object(
                'duration_seconds', 120 + (g % 1800), 'cpu_time_ms', g % 60000,
                'gpu_vram_mb_used', 0, 'peak_memory_mb', 64 + g % 2048,
                'agent_load_pct', (g % 100)::float) END,
           CASE WHEN r_cost < 0.33 AND status IN ('completed', 'failed') THEN jsonb_build_object(
                'provider', 'anthropic', 'model', 'claude-sonnet-4', 'token_count', 500 + g % 9000,
                'cost_usd', round((r_cost * 0.3)::numeric, 6),
                'calls', jsonb_build_array(jsonb_build_object(
                    'provider', 'anthropic', 'model', 'claude-sonnet-4',
                    'token_count', 500 + g % 9000,
                    'cost_usd', round((r_cost * 0.3)::numeric, 6)))) END,
           CASE WHEN r_cost < 0.33 AND status IN ('completed', 'failed')
                THEN round((r_cost * 0.3)::numeric, 6) END,
           CASE WHEN status = 'failed' THEN
                CASE cause
                    WHEN 'resource' THEN (ARRAY['OOMKilled', 'DiskFull', 'CPUThrottled'])[1 + g % 3]
                    WHEN 'application'
                        THEN (ARRAY['HealthcheckTimeout', 'ImportError', 'ConfigError'])[1 + g % 3]
                    WHEN 'dependency'
                        THEN (ARRAY['ConnectionRefused', 'DNSFailure', 'UpstreamTimeout'])[1 + g % 3]
                    ELSE 'Unknown' END END,
           CASE WHEN status = 'failed' THEN cause END,
           CASE WHEN status = 'failed' THEN 1 + g % 5 END,
           created_at,
           CASE WHEN status IN ('completed', 'failed')
                THEN created_at + make_interval(secs => 120 + (g % 1800))
                ELSE created_at + interval '1 minute' END
    FROM timed
    RETURNING task_id, status, agent_type, started_at, services_touched, plan, created_at
)
INSERT INTO execution_logs (event_id, task_id, step_number, agent_type, action, status,
                            output_summary, duration_ms, timestamp, recorded_at)
SELECT gen_random_uuid(), i.task_id, n, i.agent_type,
       CASE n % 4 WHEN 1 THEN 'check ' || coalesce(i.services_touched[1], 'host') || ' health'
                  WHEN 2 THEN i.plan -> 'steps' ->> 1
                  WHEN 3 THEN 'docker compose up -d ' || coalesce(i.services_touched[1], 'stack')
                  ELSE 'verify ' || coalesce(i.services_touched[1], 'host') END,
       CASE WHEN i.status = 'failed' AND n = steps.total THEN 'failed'
            WHEN i.status = 'executing' AND n = steps.total THEN 'running'
            ELSE 'completed' END,
       'step ' || n || ' of ' || steps.total || ': ok',
       200 + (n * 977) % 30000,
       i.started_at + make_interval(secs => n * 15),
       i.started_at + make_interval(secs => n * 15) + interval '40 milliseconds'
FROM inserted i
-- a per-row uniform number from the random task id (a bare random() here would be
-- evaluated once for the whole statement)
CROSS JOIN LATERAL (SELECT greatest(1, round($4::float8
                        * (0.4 + 1.2 * get_byte(uuid_send(i.task_id), 0) / 255.0)))::int
                    AS total) AS steps
CROSS JOIN LATERAL generate_series(1, steps.total) AS n
WHERE i.status IN ('executing', 'completed', 'failed')
"""


async def generate(dsn: str, tasks: int, steps_per_task: float, chunk: int, days: int) -> None:
    """Insert ``tasks`` tasks (and their steps) in chunks, then VACUUM ANALYZE."""
    conn = await asyncpg.connect(asyncpg_dsn(dsn))
    try:
        await conn.execute("SET synchronous_commit = off")
        # Started tasks carry the steps; scale their average so the total is about
        # steps_per_task times the number of tasks (about 99 % of the tasks start).
        per_started = steps_per_task / 0.99
        start = int(await conn.fetchval("SELECT count(*) FROM tasks")) + 1
        started = time.perf_counter()
        with Progress(
            TextColumn("[bold]tasks"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            bar = progress.add_task("tasks", total=tasks)
            done = 0
            while done < tasks:
                size = min(chunk, tasks - done)
                first = start + done
                await conn.execute(
                    CHUNK_SQL, first, first + size - 1, days, per_started, SERVICES, VERBS,
                    start, tasks,
                )  # fmt: skip
                done += size
                progress.update(bar, completed=done)
        inserted = time.perf_counter() - started
        console.print(f"inserted in {inserted:.0f} s; VACUUM ANALYZE ...")
        await conn.execute("VACUUM ANALYZE tasks")
        await conn.execute("VACUUM ANALYZE execution_logs")
        await conn.execute("VACUUM ANALYZE task_step_actions")
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM tasks) AS tasks,"
            " (SELECT count(*) FROM execution_logs) AS steps,"
            " pg_size_pretty(pg_database_size(current_database())) AS size"
        )
    finally:
        await conn.close()
    console.print(
        f"{counts['tasks']:,} tasks, {counts['steps']:,} steps, database {counts['size']}"
        f" ({time.perf_counter() - started:.0f} s in all)"
    )


def main(
    database_url: Annotated[
        str | None,
        typer.Option(help="Database to fill (created and migrated if needed). Default: settings."),
    ] = None,
    tasks: Annotated[int, typer.Option(min=1, help="Tasks to add.")] = 1_000_000,
    steps_per_task: Annotated[
        float, typer.Option(min=0, help="Average execution_logs rows per task.")
    ] = 5.0,
    chunk: Annotated[int, typer.Option(min=100, help="Tasks per transaction.")] = 20_000,
    days: Annotated[int, typer.Option(min=1, help="Spread created_at over this many days.")] = 365,
) -> None:
    """Fill a (scratch) database with TASKS tasks and about 5x as many steps."""
    settings = load_settings(database_url=database_url)
    dsn = settings.owner_dsn
    console.print(f"database {redact_url(dsn)}")
    try:
        asyncio.run(ensure_database(dsn))
        upgrade(dsn)
        asyncio.run(generate(dsn, tasks, steps_per_task, chunk, days))
    except (OSError, asyncpg.PostgresError, TaskledgerError) as exc:
        fail(f"{type(exc).__name__}: {exc}", 3)


if __name__ == "__main__":
    typer.run(main)
