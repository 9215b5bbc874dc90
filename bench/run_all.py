"""Run every benchmark in turn: consumer, capacity release, dead-letter replay, writer
processes side by side (and, with ``--quick``, the console pages' render time; at full size
it runs in ``make scale``; the 20,000,000-row ledger benchmark is ``make bench-ledger``).

Usage: python bench/run_all.py [--quick]

``--quick`` runs each at a small size (what CI runs, to keep the harness working); the
figures in the README come from the full sizes on a quiet machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

FULL = [
    ["consumer_throughput.py"],
    ["capacity_release.py"],
    ["dlq_replay.py"],
    ["writers_scale.py"],  # 1, 2, 3 writer processes on one backlog (the chain lock's absence)
]
QUICK = [
    ["consumer_throughput.py", "--quick"],
    ["capacity_release.py", "--quick"],
    ["dlq_replay.py", "--messages", "2000"],
    ["ui_render.py", "--quick"],  # the console's pages on 20,000 tasks (the full size: make scale)
    ["writers_scale.py", "--quick"],
]


def main() -> int:
    """Run the benchmarks; returns the first non-zero exit code, or 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (CI)")
    args = parser.parse_args()
    for argv in QUICK if args.quick else FULL:
        print(f"== {' '.join(argv)}", flush=True)
        code = subprocess.call([sys.executable, str(HERE / argv[0]), *argv[1:]], cwd=HERE.parent)
        if code != 0:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
