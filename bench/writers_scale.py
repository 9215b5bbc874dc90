"""Writers benchmark: 1, 2, 3 `taskledger run --only audit --burst` processes on one backlog.

For each process count, a fresh database and prefix get the same backlog; the N
processes start together and drain it. Measured:

- events/s: ledger rows over the span from the first to the last recording transaction
  (``received_at``), as bench/consumer_throughput.py measures (c); the wall time from
  the start of the processes to the exit of the last one is printed too (it includes
  start-up and, from migration 012 on, the final seal);
- commit latency: each process's ``taskledger_commit_seconds`` histogram, scraped from
  its metrics port while it runs (mean, and p50/p95 read from the buckets);
- lock wait: ``pg_locks`` sampled every ``--sample-ms`` (default 10 ms): how many
  backends of the database wait for the chain's advisory lock, and for any other
  advisory lock (the per-task locks); wait seconds = waiting samples x sample period, also
  per committed batch; and the share of samples in which the chain's lock is held
  (its utilisation: a writer from its link to its commit before 012, a sealer's pass
  after);
- unsealed after exit: ledger rows no link seals once every process exited (0 expected).

``--sealer N`` instead measures the sealer alone (needs migration 012): N ledger rows
listed in ``ledger_unsealed`` with their digests in batches of 500, then ``seal_all``
once; rows/s.

Usage: python bench/writers_scale.py [--events N] [--procs 1,2,3] [--repeat R] [--quick]
       python bench/writers_scale.py --sealer 100000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import Bench, fresh_database, publish_backlog  # noqa: E402
from bench.consumer_throughput import backlog  # noqa: E402
from consumer.core.childenv import child_env  # noqa: E402
from consumer.core.settings import Settings  # noqa: E402
from consumer.store import db  # noqa: E402

#: The chain's advisory lock key (``lock_chain`` before 012, the sealer's from 012 on).
CHAIN_KEY = 8243149463017541731
BUCKET_LINE = 'taskledger_commit_seconds_bucket{handler="audit",le="'


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, Any] | None:
    """The commit-latency histogram of the process serving metrics on ``port``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=0.5) as r:
            text = r.read().decode()
    except OSError:
        return None
    buckets: list[tuple[float, float]] = []
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith(BUCKET_LINE):
            le, value = line[len(BUCKET_LINE) :].split('"} ')
            buckets.append((float(le), float(value)))
        elif line.startswith('taskledger_commit_seconds_sum{handler="audit"}'):
            total = float(line.split()[-1])
        elif line.startswith('taskledger_commit_seconds_count{handler="audit"}'):
            count = float(line.split()[-1])
    return {"buckets": buckets, "sum": total, "count": count}


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """The ``q`` quantile read from cumulative buckets (linear within a bucket)."""
    if not buckets or buckets[-1][1] == 0:
        return 0.0
    target = q * buckets[-1][1]
    lower_le, lower_n = 0.0, 0.0
    for le, n in buckets:
        if n >= target:
            if le == float("inf"):
                return lower_le
            share = (target - lower_n) / (n - lower_n) if n > lower_n else 1.0
            return lower_le + (le - lower_le) * share
        lower_le, lower_n = le, n
    return lower_le


def merge(histograms: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the histograms of several processes."""
    merged: dict[float, float] = {}
    for h in histograms:
        for le, n in h["buckets"]:
            merged[le] = merged.get(le, 0.0) + n
    return {
        "buckets": sorted(merged.items()),
        "sum": sum(h["sum"] for h in histograms),
        "count": sum(h["count"] for h in histograms),
    }


class LockSampler:
    """Samples ``pg_locks`` of one database: backends waiting for advisory locks."""

    def __init__(self, settings: Settings, interval: float) -> None:
        self.settings = settings
        self.interval = interval
        self.samples = 0
        self.chain_waiting = 0
        self.other_waiting = 0
        self.chain_held = 0
        self.seconds = 0.0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        """Sample until :attr:`stop` is set."""
        conn = await db.connect(self.settings.dsn)
        hi, lo = CHAIN_KEY >> 32, CHAIN_KEY & 0xFFFFFFFF
        sql = (
            "SELECT count(*) FILTER (WHERE NOT granted AND classid = $1 AND objid = $2) AS chain,"
            " count(*) FILTER (WHERE NOT granted AND NOT (classid = $1 AND objid = $2)) AS other,"
            " count(*) FILTER (WHERE granted AND classid = $1 AND objid = $2) AS held "
            "FROM pg_locks WHERE locktype = 'advisory' "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        started = time.perf_counter()
        try:
            while not self.stop.is_set():
                row = await conn.fetchrow(sql, hi, lo)
                self.seconds = time.perf_counter() - started
                self.samples += 1
                self.chain_waiting += row["chain"]
                self.other_waiting += row["other"]
                self.chain_held += row["held"]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), self.interval)
        finally:
            await conn.close()


async def drain_with(settings: Settings, procs: int, sample_s: float) -> dict[str, Any]:
    """Start ``procs`` burst processes together on the published backlog; measure them."""
    ports = [free_port() for _ in range(procs)]
    sampler = LockSampler(settings, sample_s)
    sampling = asyncio.create_task(sampler.run())
    logs = [tempfile.TemporaryFile() for _ in ports]  # noqa: SIM115 - a pipe would block
    started = time.perf_counter()
    children = [
        subprocess.Popen(  # noqa: ASYNC220 - polled below without blocking the loop
            [sys.executable, "-m", "consumer.cli", "run", "--only", "audit", "--burst"],
            env=child_env(settings, TASKLEDGER_METRICS_PORT=str(port)),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        for port, log in zip(ports, logs, strict=True)
    ]
    last: dict[int, dict[str, Any]] = {}
    try:
        while any(c.poll() is None for c in children):
            for port, child in zip(ports, children, strict=True):
                if child.poll() is None and (h := await asyncio.to_thread(scrape, port)):
                    last[port] = h
            await asyncio.sleep(0.2)
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
                child.wait(30)
        wall = time.perf_counter() - started
        sampler.stop.set()
        await sampling
    for child, log in zip(children, logs, strict=True):
        log.seek(0)
        err = log.read().decode(errors="replace")
        log.close()
        if child.returncode != 0:
            raise SystemExit(f"taskledger run failed ({child.returncode}):\n{err[-2000:]}")
    conn = await db.connect(settings.dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, extract(epoch FROM max(received_at) - min(received_at)) AS s "
            "FROM event_ledger"
        )
        links = await conn.fetchval("SELECT count(*) FROM ledger_chain")
        sealed = await conn.fetchval("SELECT coalesce(sum(cardinality(seqs)), 0) FROM ledger_chain")
    finally:
        await conn.close()
    commits = merge(list(last.values()))
    batches = commits["count"] or float(links) or 1.0
    # mean number of waiters x sampled time = waiter-seconds (a sample can take longer
    # than the interval on a busy machine: the elapsed time counts, not the interval)
    per_sample = sampler.seconds / (sampler.samples or 1)
    chain_wait = sampler.chain_waiting * per_sample
    return {
        "procs": procs,
        "rows": int(row["n"]),
        "span_s": float(row["s"] or 0.0),
        "ev_per_s": int(row["n"]) / float(row["s"] or 1e-9),
        "wall_s": wall,
        "links": int(links),
        "unsealed_after_exit": int(row["n"]) - int(sealed),
        "commits_scraped": int(commits["count"]),
        "commit_mean_ms": 1000 * commits["sum"] / (commits["count"] or 1),
        "commit_p50_ms": 1000 * quantile(commits["buckets"], 0.5),
        "commit_p95_ms": 1000 * quantile(commits["buckets"], 0.95),
        "lock_samples": sampler.samples,
        "chain_lock_wait_s": chain_wait,
        "chain_lock_wait_per_batch_ms": 1000 * chain_wait / batches,
        "task_lock_wait_s": sampler.other_waiting * per_sample,
        # share of the samples in which someone held the chain's lock (its utilisation)
        "chain_lock_held_share": sampler.chain_held / (sampler.samples or 1),
    }


async def scale(events: int, procs: list[int], repeat: int, sample_ms: int) -> dict[str, Any]:
    """Every process count in ``procs``, ``repeat`` times (interleaved)."""
    messages = backlog(events)
    distinct = len({orjson.loads(b)["id"] for _, b in messages})
    runs: list[dict[str, Any]] = []
    for r in range(repeat):
        for n in procs:
            async with fresh_database() as settings:
                await publish_backlog(settings, messages)
                result = await drain_with(settings, n, sample_ms / 1000)
            assert result["rows"] == distinct, f"{result['rows']} rows, expected {distinct}"
            result["round"] = r + 1
            runs.append(result)
            print(orjson.dumps(result).decode(), flush=True)
    return {"events": len(messages), "runs": runs}


def report(name: str, results: dict[str, Any]) -> None:
    """Print and save the runs of :func:`scale`."""
    rows = []
    for r in results["runs"]:
        rows.append((
            f"{r['procs']} process(es), round {r['round']}",
            f"{r['ev_per_s']:,.0f} ev/s (wall {r['wall_s']:.1f} s); commit mean "
            f"{r['commit_mean_ms']:.1f} ms, p50 {r['commit_p50_ms']:.1f}, p95 "
            f"{r['commit_p95_ms']:.1f}; chain-lock wait {r['chain_lock_wait_s']:.2f} s "
            f"({r['chain_lock_wait_per_batch_ms']:.1f} ms/batch); task-lock wait "
            f"{r['task_lock_wait_s']:.2f} s; chain lock held "
            f"{r.get('chain_lock_held_share', 0):.0%} of the time; unsealed after exit "
            f"{r['unsealed_after_exit']}",
        ))  # fmt: skip
    Bench(name).report(results, rows)


async def sealer_alone(rows: int) -> dict[str, Any]:
    """List ``rows`` ledger rows as unsealed (batches of 500), then time one seal_all."""
    from consumer.ledger.sealer import seal_all

    async with fresh_database() as settings:
        conn = await db.connect(settings.dsn)
        try:
            for first in range(0, rows, 20_000):
                n = min(20_000, rows - first)
                top = await conn.fetchval("SELECT coalesce(max(seq), 0) FROM event_ledger")
                await conn.execute(
                    "INSERT INTO event_ledger (event_id, event_type, source, task_id, "
                    "event_time, schema_version, envelope) SELECT gen_random_uuid(), "
                    "'task.step', 'bench', gen_random_uuid(), now(), 1, jsonb_build_object("
                    "'n', g, 'data', repeat('x', 300)) FROM generate_series(1, $1) AS g",
                    n,
                )
                await conn.execute(  # as writers list them: batches of 500, with the digest
                    "INSERT INTO ledger_unsealed (batch, seq, received_at, digest, trigger) "
                    "SELECT min(seq) OVER (PARTITION BY seq / 500), seq, received_at, "
                    "ledger_row_digest(l), 'count' FROM event_ledger AS l WHERE seq > $1",
                    top,
                )
        finally:
            await conn.close()
        pool = await db.create_pool(settings.dsn, max_size=2)
        try:
            started = time.perf_counter()
            sealed = await seal_all(pool, settings)
            took = time.perf_counter() - started
        finally:
            await pool.close()
    return {"rows": rows, "sealed": sealed, "seconds": took, "rows_per_s": sealed / took}


def main() -> None:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--procs", default="1,2,3")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--sample-ms", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="5,000 events")
    parser.add_argument("--sealer", type=int, default=0, help="measure the sealer alone")
    parser.add_argument("--name", default="writers_scale", help="bench/results/<name>.json")
    args = parser.parse_args()
    if args.sealer:
        result = asyncio.run(sealer_alone(args.sealer))
        Bench(f"{args.name}_sealer").report(result, [
            ("rows sealed", f"{result['sealed']:,}"),
            ("seal_all", f"{result['seconds']:.2f} s, {result['rows_per_s']:,.0f} rows/s"),
        ])  # fmt: skip
        return
    events = 5_000 if args.quick else args.events
    procs = [int(p) for p in args.procs.split(",")]
    report(args.name, asyncio.run(scale(events, procs, args.repeat, args.sample_ms)))


if __name__ == "__main__":
    main()
