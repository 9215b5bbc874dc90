"""Latency of the audit queries at scale, through the query layer the API uses.

    python scripts/generate_scale_data.py --database-url postgresql://.../tl_scale
    python -m bench.scale_queries --database-url postgresql://.../tl_scale [--runs 50]

Runs each query the operators' examples use (and a few more) ``--runs`` times after a
short warm-up, one at a time, and prints p50/p95 in milliseconds. Then EXPLAINs the
service, status + time and failure queries with the parameters they run with and checks
that none scans ``tasks`` sequentially. Exits 1 when a plan check fails or the p95 of an
example query (the ones marked ``example``: the seeds' questions over the API) misses
``--p95-ms``; the others are reported. ``--output`` writes the figures as JSON.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import orjson
import typer
from rich.console import Console
from rich.table import Table

from consumer import queries
from consumer.cli.common import load_settings
from consumer.core.settings import redact_url
from consumer.queries import TaskFilter
from consumer.store.db import create_pool
from contracts import ErrorCause, TaskStatus

console = Console()
Query = Callable[[asyncpg.Pool], Awaitable[Any]]


@dataclass
class Figure:
    """Latency of one query."""

    name: str
    what: str
    runs: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    rows: int
    example: bool


@dataclass
class PlanCheck:
    """Whether a query's plan avoids a sequential scan of ``tasks``."""

    name: str
    nodes: list[str]
    seq_scan_on_tasks: bool


def _rows(result: Any) -> int:
    if isinstance(result, list):
        return len(result)
    for attr in ("items", "entries", "timeline", "busiest_services"):
        if hasattr(result, attr):
            return len(getattr(result, attr))
    return 1


def _week() -> datetime:
    return datetime.now(UTC) - timedelta(days=7)


async def _task_ids(pool: asyncpg.Pool, n: int) -> list[Any]:
    """Ids of ``n`` random tasks (for the timeline query)."""
    rows = await pool.fetch(
        "SELECT task_id FROM tasks TABLESAMPLE SYSTEM (1) REPEATABLE (7)"
        " WHERE status IN ('completed', 'failed') LIMIT $1",
        n,
    )
    return [r["task_id"] for r in rows]


#: The seeds' questions as the API asks them; their p95 is gated by ``--p95-ms``.
EXAMPLES = frozenset(
    {
        "kuma_week",  # what changed kuma last week
        "service_any",
        "status_time",
        "failures_week",  # why did things fail (the seeds' example: the last 7 days)
        "failures_resource",
        "intent_week",
        "task_timeline",  # what did task X do, step by step
        "second_page",
        "pause_queue",  # what is waiting and why
    }
)


async def build_queries(pool: asyncpg.Pool, runs: int) -> dict[str, tuple[str, Query]]:
    """The benchmarked queries by name: (what it answers, how to run it once)."""
    ids = await _task_ids(pool, runs + 10)
    first = await queries.list_tasks(pool, TaskFilter())
    second_page = TaskFilter(cursor=first.next_cursor)
    picks = iter(ids * 3)
    return {
        "kuma_week": (
            "by-service kuma, past 7 days",
            lambda p: queries.by_service(p, "kuma", TaskFilter(since=_week())),
        ),
        "service_any": (
            "tasks touching kuma or traefik (newest 50)",
            lambda p: queries.list_tasks(p, TaskFilter(services=["kuma", "traefik"])),
        ),
        "service_all": (
            "tasks touching kuma and dns, past 30 days",
            lambda p: queries.list_tasks(
                p,
                TaskFilter(
                    services=["kuma", "dns"],
                    service_mode="all",
                    since=datetime.now(UTC) - timedelta(days=30),
                ),
            ),
        ),
        "status_time": (
            "failed tasks, past 7 days",
            lambda p: queries.list_tasks(
                p, TaskFilter(statuses=[TaskStatus.FAILED], since=_week())
            ),
        ),
        "status_active": (
            "pending, approved or executing tasks",
            lambda p: queries.list_tasks(
                p,
                TaskFilter(
                    statuses=[TaskStatus.PENDING, TaskStatus.APPROVED, TaskStatus.EXECUTING]
                ),
            ),
        ),
        "failures_all": (
            "failures with counts by cause and type, all time",
            lambda p: queries.failures(p, TaskFilter()),
        ),
        "failures_week": (
            "failures with counts, past 7 days",
            lambda p: queries.failures(p, TaskFilter(since=_week())),
        ),
        "failures_resource": (
            "resource failures with counts, past 30 days",
            lambda p: queries.failures(
                p,
                TaskFilter(
                    error_cause=ErrorCause.RESOURCE, since=datetime.now(UTC) - timedelta(days=30)
                ),
            ),
        ),
        "intent_week": (
            "intent deploy_kuma, past 7 days",
            lambda p: queries.list_tasks(p, TaskFilter(intent="deploy_kuma", since=_week())),
        ),
        "intent_latest": (
            "intent restart_dns (newest 50)",
            lambda p: queries.list_tasks(p, TaskFilter(intent="restart_dns")),
        ),
        "task_timeline": (
            "one task with its timeline (random tasks)",
            lambda p: queries.task_detail(p, next(picks)),
        ),
        "second_page": (
            "all tasks, page 2 (keyset cursor)",
            lambda p: queries.list_tasks(p, second_page),
        ),
        "summary_week": (
            "summary counts (CLI audit summary), past 7 days",
            lambda p: queries.summary(p, TaskFilter(since=_week())),
        ),
        "pause_queue": ("what waits and why", lambda p: queries.pause_queue(p)),
        "stale": ("executing tasks silent > 15 min", lambda p: queries.stale(p, 900)),
    }


#: Plans that must not scan ``tasks`` sequentially: (statement, filter, required services).
def plan_cases() -> dict[str, tuple[str, TaskFilter, list[str] | None]]:
    """The EXPLAINed statements and the filters they run with."""
    week = _week()
    return {
        "kuma_week (service)": ("audit_tasks", TaskFilter(since=week), ["kuma"]),
        "service_any (service)": ("audit_tasks", TaskFilter(services=["kuma", "traefik"]), None),
        "status_time": (
            "audit_tasks",
            TaskFilter(statuses=[TaskStatus.FAILED], since=week),
            None,
        ),
        "failures_all (page)": ("audit_tasks", TaskFilter(statuses=[TaskStatus.FAILED]), None),
        "failures_all (counts)": (
            "audit_failure_counts",
            TaskFilter(statuses=[TaskStatus.FAILED]),
            None,
        ),
        "failures_week (counts)": (
            "audit_failure_counts",
            TaskFilter(statuses=[TaskStatus.FAILED], since=week),
            None,
        ),
    }


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node]
    for child in node.get("Plans", []):
        found += _walk(child)
    return found


async def explain(
    pool: asyncpg.Pool, statement: str, f: TaskFilter, require: list[str] | None
) -> PlanCheck:
    """EXPLAIN one statement with the parameters it runs with (custom plan, as the layer)."""
    if statement == "audit_tasks":
        args = queries.page_args(f, require=require)
    else:
        args = f.filter_args(require=require)
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        plan = await conn.fetchval("EXPLAIN (FORMAT JSON) " + queries.statement(statement), *args)
    nodes = _walk((orjson.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"])
    labels = [
        f"{n['Node Type']}"
        + (f" on {n['Relation Name']}" if "Relation Name" in n else "")
        + (f" using {n['Index Name']}" if "Index Name" in n else "")
        for n in nodes
    ]
    seq = any(n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "tasks" for n in nodes)
    return PlanCheck(name="", nodes=labels, seq_scan_on_tasks=seq)


async def measure(pool: asyncpg.Pool, name: str, what: str, query: Query, runs: int) -> Figure:
    """Run ``query`` ``runs`` times (after 3 warm-ups); return its latency figures."""
    result: Any = None
    for _ in range(3):
        result = await query(pool)
    times: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        result = await query(pool)
        times.append((time.perf_counter() - started) * 1000)
    cuts = statistics.quantiles(times, n=100, method="inclusive")
    return Figure(
        name,
        what,
        runs,
        round(cuts[49], 2),
        round(cuts[94], 2),
        round(max(times), 2),
        _rows(result),
        name in EXAMPLES,
    )


async def bench(
    dsn: str, runs: int, only: list[str]
) -> tuple[list[Figure], list[PlanCheck], dict[str, Any]]:
    """Measure every query, then check the plans; return figures, checks and data sizes."""
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        sizes = dict(
            await pool.fetchrow(
                "SELECT (SELECT reltuples::bigint FROM pg_class WHERE relname = 'tasks') AS tasks,"
                " (SELECT reltuples::bigint FROM pg_class WHERE relname = 'execution_logs')"
                " AS steps, pg_size_pretty(pg_database_size(current_database())) AS size"
            )
        )
        catalogue = await build_queries(pool, runs)
        figures = []
        for name, (what, query) in catalogue.items():
            if only and name not in only:
                continue
            figures.append(await measure(pool, name, what, query, runs))
            console.print(f"  {name}: p95 {figures[-1].p95_ms} ms", highlight=False)
        checks = []
        for name, (statement, f, require) in plan_cases().items():
            check = await explain(pool, statement, f, require)
            check.name = name
            checks.append(check)
    finally:
        await pool.close()
    return figures, checks, sizes


def report(
    figures: list[Figure], checks: list[PlanCheck], sizes: dict[str, Any], p95_ms: float
) -> None:
    """Print the latency table and the plan checks."""
    title = (
        f"audit queries at {sizes['tasks']:,} tasks / {sizes['steps']:,} steps ({sizes['size']})"
    )
    table = Table(title=title, title_justify="left")
    for column in ("query", "example", "what", "p50 ms", "p95 ms", "max ms", "rows"):
        table.add_column(column, justify="right" if "ms" in column or column == "rows" else "left")
    for f in figures:
        over = f.p95_ms > p95_ms
        p95 = f"[red]{f.p95_ms:.2f}[/red]" if over and f.example else f"{f.p95_ms:.2f}"
        table.add_row(
            f.name,
            "yes" if f.example else "",
            f.what,
            f"{f.p50_ms:.2f}",
            p95,
            f"{f.max_ms:.2f}",
            str(f.rows),
        )
    console.print(table)
    plans = Table(title="plans (no Seq Scan on tasks)", title_justify="left")
    for column in ("query", "ok", "plan nodes"):
        plans.add_column(column)
    for c in checks:
        plans.add_row(c.name, "no" if c.seq_scan_on_tasks else "yes", " > ".join(c.nodes))
    console.print(plans)


def main(
    database_url: Annotated[
        str | None, typer.Option(help="The filled database (default: TASKLEDGER_DATABASE_URL).")
    ] = None,
    runs: Annotated[int, typer.Option(min=5, help="Timed runs per query.")] = 50,
    p95_ms: Annotated[
        float, typer.Option(help="Budget: an example query's p95 above this fails.")
    ] = 50.0,
    only: Annotated[list[str] | None, typer.Option(help="Run only these queries.")] = None,
    output: Annotated[
        Path | None, typer.Option(help="Also write the figures as JSON here.")
    ] = None,
) -> None:
    """Measure the audit queries' p50/p95 and check their plans."""
    settings = load_settings(database_url=database_url)
    console.print(f"database {redact_url(settings.dsn)}, {runs} runs per query")
    figures, checks, sizes = asyncio.run(bench(settings.dsn, runs, only or []))
    report(figures, checks, sizes, p95_ms)
    if output:
        document = {
            "when": datetime.now(UTC).isoformat(),
            "data": sizes,
            "runs": runs,
            "p95_budget_ms": p95_ms,
            "figures": [asdict(f) for f in figures],
            "plans": [asdict(c) for c in checks],
        }
        output.write_text(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    slow = [f.name for f in figures if f.example and f.p95_ms > p95_ms]
    seq = [c.name for c in checks if c.seq_scan_on_tasks]
    if slow or seq:
        console.print(f"[red]over budget: {slow or '-'}; sequential scans: {seq or '-'}[/red]")
        raise typer.Exit(1)
    console.print(f"every example query's p95 under {p95_ms:g} ms; no sequential scan of tasks")


if __name__ == "__main__":
    typer.run(main)
