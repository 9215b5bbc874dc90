"""A ledger that stays fast for years: inserts and audit queries with 20,000,000 rows present.

Usage: python bench/ledger_scale.py [--rows 20000000] [--months 24] [--quick] [--keep]

1. Two scratch databases migrated to head (the real partitioned schema, 013):
   ``tl_ledger_scale`` (filled) and ``tl_ledger_scale_empty``.
2. Fill ``tl_ledger_scale``: ``--rows / 40`` tasks with about 5 steps each
   (``scripts/generate_scale_data.py``'s SQL, spread over the months), then ``--rows``
   ledger rows server-side (``INSERT ... SELECT generate_series``, chunks of 500,000)
   spread evenly over the last ``--months`` months up to now (this one included: new
   rows go to a partition already holding its share), with envelopes copied
   from simulated traffic (same types and sizes as ``taskledger simulate``: about 580
   bytes) and the matching ``ledger_event_ids`` rows; event ids grow with the seq in
   their first 32 bits but cover the whole UUID space (new random ids land anywhere in
   the id index, as they would); every row belongs to one of the tasks. No chain links
   (sealing does not touch the filled rows). ``VACUUM ANALYZE`` after.
3. Insert throughput: ``--batches`` write batches of 500 fresh simulated events through
   the real insert path (``consumer.ledger.inbox.record_events``, one transaction each,
   as the consumer writes them), alternating between the empty and the filled database
   (so load on the machine hits both alike), after ``--warmup`` untimed batches each (a
   running service's state; the cold figure is reported too), twice: with the
   simulator's random ids (UUIDv4 for events and tasks) and with time-ordered ids
   (UUIDv7, as producers that follow RFC 9562 send them). Ratio filled/empty with
   time-ordered ids must be >= 0.90; with random ids it is reported (every random id
   lands on a random leaf of each id-keyed index, the global id index the largest:
   docs/SCALING.md).
4. The audit queries (``bench/scale_queries.py``'s catalogue, the seeds' questions, and
   the ledger reads: a task's timeline, orphans, stale, dispatches): p95 of the examples
   must stay under ``--p95-ms`` (50).
5. Per-row disk figures (heap, TOAST, each index, ``ledger_event_ids``, the chain per
   sealed row from the empty database's batches, steps and tasks) and
   ``VACUUM (FREEZE)`` of one month's partition, written to bench/results/ledger_scale.json.

``--quick`` (100,000 rows, 6 months, 20 batches, 10 runs per query; databases suffixed
``_quick``) checks the harness in about a minute. The
databases are dropped at the end unless ``--keep``; ``--reuse`` skips the fill when the
filled database is already there (kept by an earlier ``--keep``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import re
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402

from bench.common import ADMIN_URL, Bench, console  # noqa: E402
from bench.scale_queries import EXAMPLES, build_queries, measure  # noqa: E402
from consumer import queries  # noqa: E402
from consumer.core.settings import Settings  # noqa: E402
from consumer.ledger.inbox import record_events  # noqa: E402
from consumer.ledger.sealer import seal_all  # noqa: E402
from consumer.queries.dispatches import dispatches  # noqa: E402
from consumer.simulate import SimulationConfig, generate  # noqa: E402
from consumer.store.db import create_pool  # noqa: E402
from consumer.store.migrate import upgrade  # noqa: E402
from consumer.store.urls import asyncpg_dsn, with_database  # noqa: E402
from contracts import Event, decode, new_id  # noqa: E402

FULL, EMPTY = "tl_ledger_scale", "tl_ledger_scale_empty"
_UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
CHUNK = 500_000
BATCH = 500
SAMPLE = 2000

FILL_SQL = """
WITH src AS (
    SELECT g, s.event_type, s.source, s.body, t.task_id,
           (lpad(to_hex((g * 4294967295 / $3::bigint)::bigint), 8, '0')
            || substr(md5(g::text), 9, 24))::uuid AS event_id,
           $4::timestamptz + ($5::timestamptz - $4::timestamptz) * ((g - 1)::float8 / $3::bigint)
               AS received_at
    FROM generate_series($1::bigint, $2::bigint) AS g
    JOIN bench_sample AS s ON s.n = g % $6::int
    JOIN bench_tasks AS t ON t.n = 1 + (g - 1) * $7::bigint / $3::bigint
), ids AS (
    INSERT INTO ledger_event_ids (event_id, seq, received_at)
    SELECT event_id, g, received_at FROM src
)
INSERT INTO event_ledger (seq, event_id, event_type, source, task_id, event_time, received_at,
                          schema_version, envelope)
SELECT g, event_id, event_type, source, task_id, received_at - interval '2 seconds', received_at,
       1, body || jsonb_build_object('id', event_id::text, 'subject', task_id::text)
FROM src
"""


def _months_before(first_of_month: date, n: int) -> date:
    total = first_of_month.year * 12 + first_of_month.month - 1 - n
    return date(total // 12, total % 12 + 1, 1)


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "generate_scale_data", ROOT / "scripts" / "generate_scale_data.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(with_database(ADMIN_URL, "postgres")))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def server_settings(url: str) -> dict[str, str]:
    """The PostgreSQL settings that decide the id index's cost (docs/SCALING.md, sizing)."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT name, current_setting(name) AS value FROM pg_settings WHERE name = ANY($1)",
            ["server_version", "shared_buffers", "max_wal_size", "checkpoint_timeout",
             "wal_compression", "effective_cache_size"],
        )  # fmt: skip
    finally:
        await conn.close()
    return {r["name"]: r["value"] for r in rows}


async def create(name: str) -> str:
    """A fresh migrated database ``name`` (dropped first if there)."""
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await _admin(f'CREATE DATABASE "{name}"')
    url = with_database(ADMIN_URL, name)
    await asyncio.to_thread(upgrade, url)
    return url


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console)  # fmt: skip


def simulated_events(tasks: int, seed: int, ids: str = "uuid4") -> list[Event]:
    """Fresh events of realistic shape (what the consumer would record), with new event
    and task ids of the kind ``ids``: ``"uuid4"`` random, ``"uuid7"`` time-ordered
    (:func:`contracts.new_id`, from a clock that advances 1 ms every 10 events; a task's
    id is made at its first event), whatever ids the simulator itself made."""
    config = SimulationConfig(tasks=tasks, poison=0, duplicate_share=0, reorder_share=0, seed=seed)
    messages, _ = generate(config)
    start, task_ids, out = time.time_ns() // 1_000_000, dict[str, str](), []
    for n, (key, body) in enumerate(messages):

        def fresh(n: int = n) -> str:
            return str(new_id(start + n // 10) if ids == "uuid7" else uuid.uuid4())

        subject = orjson.loads(body).get("subject")
        if subject:  # a task's id: new at its first event
            task_ids.setdefault(subject, fresh())
        text = _UUID_TEXT.sub(lambda m: task_ids.get(m[0], m[0]), body.decode())
        out.append((key, orjson.dumps({**orjson.loads(text), "id": fresh()})))
    return [decode(body, key) for key, body in out]


async def fill(url: str, rows: int, months: int) -> dict[str, float]:
    """Tasks and steps, then ``rows`` ledger rows over ``months`` months; timings."""
    gen = _load_generator()
    this_month = datetime.now(UTC).date().replace(day=1)
    first = _months_before(this_month, months - 1)  # ... up to now, this month included
    tasks = max(1000, rows // 40)
    conn = await asyncpg.connect(asyncpg_dsn(url))
    timings: dict[str, float] = {}
    try:
        await conn.execute("SET synchronous_commit = off")
        m = first
        while m <= this_month:  # the service creates them ahead; history needs them too
            for parent in ("event_ledger", "execution_logs"):
                await conn.execute("SELECT create_ledger_partition($1, $2)", parent, m)
            m = _months_before(m, -1)
        started = time.perf_counter()
        days = (datetime.now(UTC).date() - first).days
        await gen.generate(url, tasks, 5.0, 20_000, days)
        timings["tasks_s"] = time.perf_counter() - started
        sample = simulated_events(SAMPLE // 6, seed=7)[:SAMPLE]
        await conn.execute("DROP TABLE IF EXISTS bench_sample, bench_tasks")
        await conn.execute("CREATE UNLOGGED TABLE bench_sample (n int PRIMARY KEY, event_type text, "
                           "source text, body jsonb)")  # fmt: skip
        await conn.executemany(
            "INSERT INTO bench_sample VALUES ($1, $2, $3, $4::jsonb)",
            [(n, e.type.value, e.source, e.body.decode()) for n, e in enumerate(sample)],
        )
        await conn.execute("CREATE UNLOGGED TABLE bench_tasks AS SELECT row_number() OVER "
                           "(ORDER BY created_at, task_id) AS n, task_id FROM tasks")  # fmt: skip
        await conn.execute("CREATE UNIQUE INDEX ON bench_tasks (n)")
        n_tasks = await conn.fetchval("SELECT count(*) FROM bench_tasks")
        lo = datetime(first.year, first.month, 1, tzinfo=UTC)
        hi = datetime.now(UTC) - timedelta(minutes=1)
        started = time.perf_counter()
        with _progress() as progress:
            bar = progress.add_task("ledger rows", total=rows)
            for start in range(1, rows + 1, CHUNK):
                end = min(rows, start + CHUNK - 1)
                await conn.execute(FILL_SQL, start, end, rows, lo, hi, len(sample), n_tasks)
                progress.update(bar, completed=end)
        await conn.execute("SELECT setval('event_ledger_seq_seq', $1)", rows)
        timings["ledger_s"] = time.perf_counter() - started
        started = time.perf_counter()
        await conn.execute("DROP TABLE bench_sample, bench_tasks")
        await conn.execute("VACUUM ANALYZE event_ledger")
        await conn.execute("VACUUM ANALYZE ledger_event_ids")
        timings["vacuum_analyze_s"] = time.perf_counter() - started
    finally:
        await conn.close()
    return timings


async def insert_throughput(
    urls: dict[str, str], batches: int, warmup: int = 0, seed: int = 11, ids: str = "uuid4"
) -> dict[str, Any]:
    """Alternate write batches between the databases; events/s of each.

    The first ``warmup`` batches of each database are not timed: a service that has run
    a while has the id index's leaves in ``shared_buffers`` and has logged each of them
    whole once since the last checkpoint; right after the fill neither is true (the cold
    figure is reported separately, from the first ``min(warmup, batches)`` batches)."""
    total = warmup + batches
    events = simulated_events(total * BATCH * len(urls) // 5 + 50, seed=seed, ids=ids)
    events = [e for e in events if e.type.value.startswith("task.")]
    conns = {k: await asyncpg.connect(asyncpg_dsn(u)) for k, u in urls.items()}
    times: dict[str, list[float]] = {k: [] for k in urls}
    try:
        names = list(urls)
        at = 0
        for i in range(total):
            order = names if i % 2 == 0 else names[::-1]
            for name in order:
                batch = events[at : at + BATCH]
                at += BATCH
                conn = conns[name]
                started = time.perf_counter()
                async with conn.transaction():
                    new = await record_events(conn, batch, chain=True, trigger="count")
                times[name].append(time.perf_counter() - started)
                assert len(new) == len(batch)
    finally:
        for conn in conns.values():
            await conn.close()
    out: dict[str, Any] = {"warmup_batches": warmup}
    for name, every in times.items():
        spent = every[warmup:]
        out[name] = {
            "events_per_s": round(BATCH * len(spent) / sum(spent), 1),
            "batch_ms_p50": round(statistics.median(spent) * 1000, 2),
            "batch_ms_p95": round(statistics.quantiles(spent, n=20)[18] * 1000, 2),
        }
        if warmup:
            cold = every[: min(warmup, batches)]
            out[name]["cold_events_per_s"] = round(BATCH * len(cold) / sum(cold), 1)
    if warmup:
        out["cold_ratio"] = round(
            out["filled"]["cold_events_per_s"] / out["empty"]["cold_events_per_s"], 3
        )
    return out


async def breakdown(urls: dict[str, str], batches: int = 10) -> dict[str, dict[str, float]]:
    """Where a write batch's time goes in each database: the per-task locks, the lookup of
    terminal events already recorded (``existing_terminal_events``: no partition key, so
    every partition's index is probed), the insert statement; medians in ms, rolled back."""
    from consumer.ledger.inbox import task_lock_keys
    from consumer.store.db import q

    events = [e for e in simulated_events(batches * BATCH * 2 // 5 + 50, seed=13)
              if e.type.value.startswith("task.")]  # fmt: skip
    spent: dict[str, dict[str, list[float]]] = {
        k: {"lock": [], "terminal": [], "insert": []} for k in urls
    }
    conns = {k: await asyncpg.connect(asyncpg_dsn(u)) for k, u in urls.items()}
    try:
        at = 0
        for _ in range(batches):
            for name, conn in conns.items():
                batch, at = events[at : at + BATCH], at + BATCH
                ends = {
                    e.task_id for e in batch if e.type.value in ("task.completed", "task.failed")
                }
                columns = (
                    [e.id for e in batch], [e.type.value for e in batch], [e.source for e in batch],
                    [e.task_id for e in batch], [e.time for e in batch],
                    [e.envelope.schemaversion for e in batch], [e.body.decode() for e in batch],
                    [None] * len(batch), "count", True,
                )  # fmt: skip
                tr = conn.transaction()
                await tr.start()
                t0 = time.perf_counter()
                await conn.execute(
                    q("lock_tasks"),
                    [k for e in batch if e.task_id for k in task_lock_keys(e.task_id)],
                )
                t1 = time.perf_counter()
                await conn.fetch(q("existing_terminal_events"), list(ends))
                t2 = time.perf_counter()
                await conn.fetch(q("insert_ledger_events"), *columns)
                t3 = time.perf_counter()
                await tr.rollback()
                for key, value in (("lock", t1 - t0), ("terminal", t2 - t1), ("insert", t3 - t2)):
                    spent[name][key].append(value)
    finally:
        for conn in conns.values():
            await conn.close()
    return {name: {k: round(statistics.median(v) * 1000, 1) for k, v in parts.items()}
            for name, parts in spent.items()}  # fmt: skip


async def ledger_queries(
    pool: asyncpg.Pool,
) -> dict[str, tuple[str, Callable[[asyncpg.Pool], Awaitable[Any]]]]:
    """The reads of the partitioned ledger itself."""
    return {
        "ledger_orphans": (
            "events waiting for their task (orphans)",
            lambda p: queries.orphans(p, 600, limit=50),
        ),
        "ledger_dispatches": (
            "dispatch requests, first page",
            lambda p: dispatches(p, limit=50),
        ),
    }


async def run_queries(url: str, runs: int) -> list[dict[str, Any]]:
    """p50/p95 of the audit queries on the filled database."""
    # a query past 10 s is reported as such (the ledger-wide scans), not waited for 50 times
    pool = await create_pool(url, min_size=1, max_size=2,
                             server_settings={"statement_timeout": "10000"})  # fmt: skip
    try:
        catalogue = await build_queries(pool, runs)
        catalogue.update(await ledger_queries(pool))
        figures = []
        for name, (what, query) in catalogue.items():
            try:
                f = await measure(pool, name, what, query, runs)
            except Exception as exc:  # one query failing must not hide the others
                console.print(f"  {name}: failed: {type(exc).__name__}: {exc}")
                figures.append({"name": name, "what": what, "failed": f"{type(exc).__name__}: {exc}",
                                "example": name in EXAMPLES})  # fmt: skip
                continue
            f.example = name in EXAMPLES  # the seeds' questions are gated; the rest reported
            console.print(f"  {name}: p50 {f.p50_ms} ms, p95 {f.p95_ms} ms", highlight=False)
            figures.append(f.__dict__)
        return figures
    finally:
        await pool.close()


DISK_SQL = """
SELECT p.relname AS parent, c.relname AS part, i.relname AS index_name,
       pg_relation_size(i.oid) AS bytes
FROM pg_inherits h
JOIN pg_class p ON p.oid = h.inhparent
JOIN pg_class c ON c.oid = h.inhrelid
JOIN pg_index x ON x.indrelid = c.oid
JOIN pg_class i ON i.oid = x.indexrelid
WHERE p.relname = $1
"""


async def disk(url: str, empty_url: str) -> dict[str, Any]:
    """Bytes per row of each structure."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        out: dict[str, Any] = {}
        for parent, per in (("event_ledger", "ledger_rows"), ("execution_logs", "steps")):
            rows = await conn.fetchval(f"SELECT count(*) FROM {parent}")
            heap = await conn.fetchval(
                "SELECT sum(pg_relation_size(c.oid))::bigint, sum(coalesce(pg_total_relation_size("
                "nullif(c.reltoastrelid, 0)), 0)) FROM pg_inherits h JOIN pg_class c ON "
                "c.oid = h.inhrelid WHERE h.inhparent = $1::regclass", parent)  # fmt: skip
            toast = await conn.fetchval(
                "SELECT sum(coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0))::bigint "
                "FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid "
                "WHERE h.inhparent = $1::regclass", parent)  # fmt: skip
            indexes: dict[str, int] = {}
            for r in await conn.fetch(DISK_SQL, parent):
                kind = r["index_name"].removeprefix(r["part"] + "_")
                indexes[kind] = indexes.get(kind, 0) + r["bytes"]
            out[parent] = {
                per: rows, "heap_bytes": heap, "toast_bytes": toast, "index_bytes": indexes,
                "heap_per_row": round(heap / max(rows, 1), 1),
                "toast_per_row": round(toast / max(rows, 1), 1),
                "index_per_row": {k: round(v / max(rows, 1), 1) for k, v in indexes.items()},
            }  # fmt: skip
        ids = await conn.fetchrow(
            "SELECT count(*) AS n, pg_relation_size('ledger_event_ids') AS heap, "
            "pg_relation_size('pk_ledger_event_ids') AS pk FROM ledger_event_ids")  # fmt: skip
        out["ledger_event_ids"] = {"rows": ids["n"], "heap_per_row": round(ids["heap"] / ids["n"], 1),
                                   "pk_per_row": round(ids["pk"] / ids["n"], 1)}  # fmt: skip
        tasks = await conn.fetchrow(
            "SELECT count(*) AS n, pg_total_relation_size('tasks') AS b FROM tasks"
        )
        out["tasks"] = {"rows": tasks["n"], "total_per_row": round(tasks["b"] / tasks["n"], 1)}
        out["envelope_bytes_avg"] = await conn.fetchval(
            "SELECT round(avg(pg_column_size(envelope)))::int FROM event_ledger "
            "TABLESAMPLE SYSTEM (0.1)"
        )
        out["database_bytes"] = await conn.fetchval("SELECT pg_database_size(current_database())")
    finally:
        await conn.close()
    conn = await asyncpg.connect(asyncpg_dsn(empty_url))
    try:
        chain = await conn.fetchrow(
            "SELECT count(*) AS links, coalesce(sum(cardinality(seqs)), 0)::bigint AS rows, "
            "pg_total_relation_size('ledger_chain') AS bytes FROM ledger_chain")  # fmt: skip
        out["ledger_chain"] = {"links": chain["links"], "sealed_rows": chain["rows"],
                               "bytes_per_sealed_row": round(chain["bytes"] / max(chain["rows"], 1), 1)}  # fmt: skip
    finally:
        await conn.close()
    return out


async def freeze_one(url: str, back: int) -> dict[str, Any]:
    """VACUUM (FREEZE) of the month partition ``back`` months ago (never vacuumed with
    FREEZE before: the fill's VACUUM ANALYZE set hint bits and the visibility map)."""
    this_month = datetime.now(UTC).date().replace(day=1)
    m = _months_before(this_month, back)
    name = f"event_ledger_p{m:%Y%m}"
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetchval(f"SELECT count(*) FROM {name}")
        size = await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", name)
        started = time.perf_counter()
        await conn.execute(f"VACUUM (FREEZE, DISABLE_PAGE_SKIPPING) {name}")
        spent = time.perf_counter() - started
        started = time.perf_counter()
        await conn.execute(f"VACUUM (FREEZE) {name}")
        again = time.perf_counter() - started
    finally:
        await conn.close()
    return {"partition": name, "rows": rows, "bytes": size, "freeze_s": round(spent, 2),
            "freeze_again_s": round(again, 3),
            "mb_per_s": round(size / 2**20 / max(spent, 1e-6), 1)}  # fmt: skip


def project(
    disk_figures: dict[str, Any],
    freeze: dict[str, Any],
    rows: int = 100_000_000,
    months: int = 36,
    events_per_task: float = 6.9,
    step_share: float = 0.38,
) -> dict[str, Any]:
    """What ``rows`` ledger rows over ``months`` months cost, from the measured per-row
    figures (bytes) and the measured VACUUM (FREEZE) rate. ``events_per_task`` and
    ``step_share`` (task.step events per ledger row) are those of ``taskledger simulate``
    (3,438 events and 1,310 steps for 500 tasks)."""
    ledger = disk_figures["event_ledger"]
    index_per_row = sum(ledger["index_per_row"].values())
    ids = disk_figures["ledger_event_ids"]
    chain = disk_figures["ledger_chain"]["bytes_per_sealed_row"]
    steps = disk_figures["execution_logs"]
    step_row = steps["heap_per_row"] + steps["toast_per_row"] + sum(steps["index_per_row"].values())
    tasks = rows / events_per_task * disk_figures["tasks"]["total_per_row"]
    per_row = {
        "ledger_heap": ledger["heap_per_row"], "ledger_toast": ledger["toast_per_row"],
        "ledger_indexes": round(index_per_row, 1),
        "ledger_event_ids": round(ids["heap_per_row"] + ids["pk_per_row"], 1),
        "ledger_chain": chain, "execution_logs": round(step_share * step_row, 1),
    }  # fmt: skip
    total = sum(per_row.values()) * rows + tasks
    partition_rows = rows / months
    per_partition = partition_rows * (
        ledger["heap_per_row"] + ledger["toast_per_row"] + index_per_row
    )
    freeze_s = freeze["freeze_s"] * partition_rows / max(freeze["rows"], 1)
    return {
        "rows": rows, "months": months, "bytes_per_row": per_row,
        "ledger_bytes": round((ledger["heap_per_row"] + ledger["toast_per_row"]) * rows),
        "ledger_index_bytes": round(index_per_row * rows),
        "ids_bytes": round(per_row["ledger_event_ids"] * rows),
        "chain_bytes": round(chain * rows), "steps_bytes": round(per_row["execution_logs"] * rows),
        "tasks_bytes": round(tasks), "total_bytes": round(total),
        "partition_rows": round(partition_rows), "partition_bytes": round(per_partition),
        "freeze_one_partition_s": round(freeze_s, 1),
        "freeze_all_partitions_s": round(freeze_s * months, 1),
    }  # fmt: skip


async def main_async(args: argparse.Namespace) -> int:
    suffix = "_quick" if args.quick else ""  # a quick run never drops the full-size one
    full, empty = FULL + suffix, EMPTY + suffix
    settings = Settings(database_url=with_database(ADMIN_URL, empty))
    urls = {"empty": with_database(ADMIN_URL, empty), "filled": with_database(ADMIN_URL, full)}
    results: dict[str, Any] = {"rows": args.rows, "months": args.months, "batches": args.batches}
    try:
        await create(empty)
        results["server"] = await server_settings(urls["empty"])
        console.print(f"server: {results['server']}", highlight=False)
        if not args.reuse:
            await create(full)
            console.print(f"filling {full}: {args.rows:,} ledger rows over {args.months} months")
            results["fill"] = await fill(urls["filled"], args.rows, args.months)
        results["insert"] = await insert_throughput(
            urls, args.batches, warmup=args.warmup, seed=args.seed
        )
        results["insert_ordered_ids"] = await insert_throughput(
            urls, args.batches, warmup=args.warmup, seed=args.seed + 1, ids="uuid7"
        )
        pool = await create_pool(urls["empty"], min_size=1, max_size=2)
        try:
            await seal_all(pool, settings)  # the chain's per-row figure
        finally:
            await pool.close()
        ratio = (
            results["insert"]["filled"]["events_per_s"] / results["insert"]["empty"]["events_per_s"]
        )
        results["insert_ratio"] = round(ratio, 3)
        ordered = results["insert_ordered_ids"]
        ratio_ordered = ordered["filled"]["events_per_s"] / ordered["empty"]["events_per_s"]
        results["insert_ratio_ordered_ids"] = round(ratio_ordered, 3)
        results["insert_breakdown_ms"] = await breakdown(urls)
        console.print(f"breakdown (median ms): {results['insert_breakdown_ms']}", highlight=False)
        console.print(f"insert: {results['insert']} ratio {ratio:.3f}", highlight=False)
        console.print(f"insert, time-ordered ids: {ordered} ratio {ratio_ordered:.3f}",
                      highlight=False)  # fmt: skip
        results["queries"] = await run_queries(urls["filled"], args.runs)
        results["disk"] = await disk(urls["filled"], urls["empty"])
        back = args.freeze_back or max(1, args.months // 2)
        results["freeze"] = await freeze_one(urls["filled"], back)
        results["projection"] = project(results["disk"], results["freeze"])
    finally:
        if not args.keep:
            for name in (empty, full):
                await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    slow = [f["name"] for f in results["queries"]
            if f["example"] and ("failed" in f or f["p95_ms"] > args.p95_ms)]  # fmt: skip
    rows = [
        ("ledger rows present", f"{args.rows:,} over {args.months} months"),
        ("time-ordered ids: insert, empty / filled ledger",
         f"{results['insert_ordered_ids']['empty']['events_per_s']:,} / "
         f"{results['insert_ordered_ids']['filled']['events_per_s']:,} ev/s"),
        ("time-ordered ids: ratio filled/empty", f"{results['insert_ratio_ordered_ids']:.3f} "
         f"(>= 0.90), after {args.warmup} untimed batches each; cold "
         f"{results['insert_ordered_ids'].get('cold_ratio', '-')}"),
        ("random ids: insert, empty / filled ledger",
         f"{results['insert']['empty']['events_per_s']:,} / "
         f"{results['insert']['filled']['events_per_s']:,} ev/s"),
        ("random ids: ratio filled/empty", f"{results['insert_ratio']:.3f} (reported), cold "
         f"{results['insert'].get('cold_ratio', '-')}"),
        ("example queries over p95 budget", ", ".join(slow) or "none"),
        ("VACUUM (FREEZE) of one month", f"{results['freeze']['freeze_s']} s for "
         f"{results['freeze']['rows']:,} rows"),
        ("100M rows / 36 months: disk", f"{results['projection']['total_bytes'] / 2**30:,.0f} GiB"),
    ]  # fmt: skip
    Bench("ledger_scale" + ("_quick" if args.quick else "")).report(results, rows)
    return 0 if results["insert_ratio_ordered_ids"] >= 0.90 and not slow else 1


def main() -> int:
    """Parse the command line and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--batches", type=int, default=200, help="timed batches per database")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per query")
    parser.add_argument(
        "--warmup", type=int, default=300, help="untimed write batches per database first"
    )
    parser.add_argument(
        "--seed", type=int, default=11, help="of the inserted events (another one with --reuse)"
    )
    parser.add_argument("--p95-ms", type=float, default=50.0)
    parser.add_argument("--quick", action="store_true", help="100,000 rows (CI)")
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    parser.add_argument("--reuse", action="store_true", help="reuse the filled database")
    parser.add_argument(
        "--freeze-back",
        type=int,
        default=0,
        help="VACUUM (FREEZE) the partition this many months back "
        "(default: half of --months; pick another one with --reuse)",
    )
    args = parser.parse_args()
    if args.quick:
        args.rows, args.months, args.batches, args.runs = 100_000, 6, 20, 10
        args.warmup = min(args.warmup, 10)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
