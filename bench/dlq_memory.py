"""Dead-letter memory benchmark: peak RSS of ``taskledger dlq`` commands against the depth.

For each ``--messages`` depth (20,000 and 100,000 by default; the issue's figure is
200,000), fills ``<prefix>.dead`` (fresh database, random prefix) with dead letters of 2 KB
made the way the consumer makes them, then runs, each as its own process as an operator
would, and reads its peak resident set size (``ru_maxrss`` from ``wait4``):

- ``dlq summary`` and ``dlq list --limit 10`` (every message stays, in order);
- ``dlq export --out FILE --purge`` then ``dlq import FILE`` (the queue ends as it began).

Each answer (``--json``) is checked: every message looked at, 10 listed, all exported and
imported.

Memory bounded by a window means the figures do not grow with the depth. Run:
``.venv/bin/python bench/dlq_memory.py [--messages 20000 100000 200000]``. Needs
PostgreSQL and RabbitMQ (see bench/common.py); everything it creates is removed
afterwards; the figures go to bench/results/dlq_memory.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import Bench, fresh_database  # noqa: E402
from bench.dlq_replay import fill  # noqa: E402
from consumer.core.settings import Settings  # noqa: E402

BODY_BYTES = 2048


def run_measured(settings: Settings, *args: str) -> tuple[float, int, float, dict[str, Any]]:
    """Run ``taskledger dlq ARGS --json``; return (peak RSS in MiB, exit code, seconds,
    its JSON answer)."""
    env = {
        **os.environ,
        "TASKLEDGER_DATABASE_URL": settings.dsn,
        "TASKLEDGER_AMQP_URL": settings.amqp,
        "TASKLEDGER_PREFIX": settings.prefix,
        "NO_COLOR": "1",
    }
    with tempfile.TemporaryFile() as answer, tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "consumer.cli", "dlq", *args, "--json"],
            env=env,
            cwd=ROOT,
            stdout=answer,
            stderr=errors,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        code = os.waitstatus_to_exitcode(status)
        answer.seek(0)
        errors.seek(0)
        if code != 0:
            sys.stderr.write(errors.read().decode())
        parsed = orjson.loads(answer.read() or b"{}")
    return usage.ru_maxrss / 1024, code, seconds, parsed


async def measure(count: int) -> dict[str, Any]:
    """Fill ``count`` dead letters of 2 KB; measure each command; return the figures."""
    async with fresh_database() as settings:
        started = time.perf_counter()
        await fill(settings, count, body_bytes=BODY_BYTES)
        figures: dict[str, Any] = {"messages": count, "fill_s": time.perf_counter() - started}
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "dead.jsonl"
            commands = {
                "summary": ("summary",),
                "list --limit 10": ("list", "--limit", "10"),
                "export --purge": ("export", "--out", str(out), "--purge"),
                "import": ("import", str(out)),
            }
            expected = {
                "summary": ("scanned", count),
                "list --limit 10": ("items", 10),
                "export --purge": ("exported", count),
                "import": ("imported", count),
            }
            for name, args in commands.items():
                rss, code, seconds, answer = await asyncio.to_thread(run_measured, settings, *args)
                if code != 0:
                    raise SystemExit(f"dlq {name} exited {code}")
                field, wanted = expected[name]
                got = answer.get(field)
                got = len(got) if isinstance(got, list) else got
                if got != wanted:  # a figure for a pass that did not do the work is no figure
                    raise SystemExit(f"dlq {name}: {field} = {got}, expected {wanted}")
                figures[name] = {"peak_rss_mib": round(rss, 1), "seconds": round(seconds, 1)}
            figures["export_file_mib"] = round(out.stat().st_size / 2**20, 1)
    return figures


def main() -> None:
    """Parse arguments, run each depth, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--messages", type=int, nargs="+", default=[20_000, 100_000], help="depths to measure"
    )
    args = parser.parse_args()
    results = [asyncio.run(measure(n)) for n in args.messages]
    rows: list[tuple[str, str]] = []
    for r in results:
        for name in ("summary", "list --limit 10", "export --purge", "import"):
            rows.append(
                (
                    f"{r['messages']:,} x 2 KB: dlq {name}",
                    f"{r[name]['peak_rss_mib']:.0f} MiB peak RSS, {r[name]['seconds']:.1f} s",
                )
            )
    Bench("dlq_memory").report({"body_bytes": BODY_BYTES, "depths": results}, rows)


if __name__ == "__main__":
    main()
