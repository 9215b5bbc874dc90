"""Render time of the ops console's pages at scale, against a served ``taskledger api``.

Usage: python bench/ui_render.py [--database-url URL] [--requests 200] [--quick]

Without ``--quick`` it reads the ``make scale`` database (``--database-url``, default
``$SCALE_DB`` or postgresql://postgres@127.0.0.1:5432/tl_scale: 1,000,000 tasks and
5,000,000 steps, filled by scripts/generate_scale_data.py; nothing is written to it).
``--quick`` fills a scratch database with 20,000 tasks instead (what CI runs, to keep the
harness working) and drops it afterwards.

``taskledger api`` runs as a subprocess on a free port, with a fresh prefix whose topology
is declared (the overview reads the queue depths), and answers the pages one request at
a time over HTTP/1.1 keep-alive, anonymously (the read-only pages need no token). Each
page is asked ``--requests`` times after a warm-up; p50, p95 and max are reported, and the
p95 as a ratio of the 150 ms limit. The baseline, measured in the same run against the
same server, is the JSON API endpoint answering the same question: ``/readyz`` (both
services asked, as the overview's health does) for ``/ui/``, ``/api/v1/audit/tasks``
for ``/ui/tasks`` and ``/api/v1/audit/failures`` for ``/ui/failures``. Figures go to
bench/results/ui_render.json (``ui_render_quick.json`` for ``--quick``). Exits 1 when a page
answers other than 200 or a p95 misses the limit in the full run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import AMQP_URL, Bench, console, fresh_database  # noqa: E402
from consumer.broker import declare_topology, delete_topology  # noqa: E402
from consumer.core.childenv import child_env  # noqa: E402
from consumer.core.settings import Settings, redact_url  # noqa: E402

LIMIT_MS = 150.0
QUICK_TASKS = 20_000
SCALE_DB = os.environ.get("SCALE_DB", "postgresql://postgres@127.0.0.1:5432/tl_scale")
#: (label, page, baseline): each console page and the JSON endpoint answering the same.
TARGETS = [
    ("overview", "/ui/", "/readyz"),
    ("tasks", "/ui/tasks", "/api/v1/audit/tasks"),
    ("failures", "/ui/failures?window=24h", "/api/v1/audit/failures?since=24h"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fill(url: str, tasks: int) -> None:
    """Fill ``url`` with ``tasks`` tasks the way ``make scale`` does."""
    script = ROOT / "scripts" / "generate_scale_data.py"
    subprocess.run(
        [sys.executable, str(script), "--database-url", url, "--tasks", str(tasks)],
        cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip


def timings(client: httpx.Client, path: str, n: int) -> dict[str, Any]:
    """GET ``path`` ``n`` times after 5 warm-ups; latency figures in ms (200 required)."""
    for _ in range(5):
        answer = client.get(path)
        if answer.status_code != 200:
            raise SystemExit(f"{path} answered {answer.status_code}: {answer.text[:300]}")
    times: list[float] = []
    size = 0
    for _ in range(n):
        started = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            raise SystemExit(f"{path} answered {answer.status_code}: {answer.text[:300]}")
        size = len(answer.content)
    cuts = statistics.quantiles(times, n=100, method="inclusive")
    return {"path": path, "requests": n, "p50_ms": round(cuts[49], 2),
            "p95_ms": round(cuts[94], 2), "max_ms": round(max(times), 2), "bytes": size}  # fmt: skip


def measure(settings: Settings, requests: int) -> dict[str, Any]:
    """Serve the console for ``settings`` and time every target."""
    port = free_port()
    with tempfile.TemporaryFile() as log:
        env = child_env(settings, TASKLEDGER_LOG_LEVEL="WARNING")
        proc = subprocess.Popen(
            [sys.executable, "-m", "consumer.cli", "api", "--port", str(port)],
            cwd=ROOT, env=env, stdout=log, stderr=log,
        )  # fmt: skip
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        if client.get("/healthz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if proc.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        raise SystemExit(
                            "taskledger api did not start: " + log.read().decode()[-2000:]
                        )
                    time.sleep(0.1)
                pages: dict[str, Any] = {}
                for label, page, baseline in TARGETS:
                    figures = timings(client, page, requests)
                    figures["baseline"] = timings(client, baseline, requests)
                    figures["ratio_to_limit"] = round(figures["p95_ms"] / LIMIT_MS, 3)
                    figures["over_baseline"] = round(
                        figures["p95_ms"] / max(figures["baseline"]["p95_ms"], 0.01), 2
                    )
                    pages[label] = figures
                    console.print(f"  {label}: p95 {figures['p95_ms']} ms "
                                  f"(baseline {figures['baseline']['p95_ms']} ms)", highlight=False)  # fmt: skip
                return pages
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def with_topology(database_url: str, requests: int) -> dict[str, Any]:
    """Measure against ``database_url`` with a fresh prefix (declared, deleted after)."""
    settings = Settings(database_url=database_url, amqp_url=AMQP_URL,
                        prefix=f"tlb{uuid.uuid4().hex[:8]}")  # fmt: skip
    connection = await aio_pika.connect(settings.amqp)
    try:
        await declare_topology(await connection.channel(), settings)
        return await asyncio.to_thread(measure, settings, requests)
    finally:
        await delete_topology(await connection.channel(), settings)
        await connection.close()


async def tasks_in(database_url: str) -> int:
    import asyncpg

    from consumer.store.urls import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM tasks"))
    finally:
        await conn.close()


async def run(database_url: str | None, requests: int, quick: bool) -> int:
    if quick:
        async with fresh_database() as scratch:
            await asyncio.to_thread(fill, scratch.dsn, QUICK_TASKS)
            tasks = await tasks_in(scratch.dsn)
            pages = await asyncio.to_thread(measure, scratch, requests)
    else:
        url = database_url or SCALE_DB
        console.print(f"database {redact_url(url)}")
        tasks = await tasks_in(url)
        pages = await with_topology(url, requests)
    results = {"tasks": tasks, "requests_per_page": requests, "limit_ms": LIMIT_MS,
               "quick": quick, "pages": pages}  # fmt: skip
    rows = [
        (f"{label} {f['path']} p50 / p95 / max",
         f"{f['p50_ms']:.1f} / {f['p95_ms']:.1f} / {f['max_ms']:.1f} ms "
         f"= {f['ratio_to_limit']:.2f} x limit")
        for label, f in pages.items()
    ] + [
        (f"  baseline {f['baseline']['path']} p50 / p95",
         f"{f['baseline']['p50_ms']:.1f} / {f['baseline']['p95_ms']:.1f} ms "
         f"(page = {f['over_baseline']:.1f} x)")
        for f in pages.values()
    ]  # fmt: skip
    Bench("ui_render_quick" if quick else "ui_render").report(results, [
        ("tasks in the database", f"{tasks:,}"), *rows])  # fmt: skip
    over = [label for label, f in pages.items() if f["p95_ms"] > LIMIT_MS]
    if over and not quick:
        console.print(f"[red]p95 over {LIMIT_MS:g} ms: {', '.join(over)}[/red]")
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help=f"the filled database (default {SCALE_DB})")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per page")
    parser.add_argument("--quick", action="store_true",
                        help=f"a scratch database of {QUICK_TASKS:,} tasks, 50 requests")  # fmt: skip
    args = parser.parse_args()
    requests = 50 if args.quick and args.requests == 200 else args.requests
    return asyncio.run(run(args.database_url, requests, args.quick))


if __name__ == "__main__":
    sys.exit(main())
