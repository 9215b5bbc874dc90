"""CPU seconds spent by the parties of a benchmark: the broker, PostgreSQL, and us.

On a machine with few cores the consumer, RabbitMQ and PostgreSQL share the CPUs, so a
drain can be bound by their summed CPU time rather than by any one of them waiting. This
reads ``/proc`` (Linux only): the RabbitMQ VM (``beam.smp``) and every process of the
PostgreSQL server behind the benchmark's database (the postmaster and its children).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> tuple[str, int, float, float] | None:
    """(command name, parent pid, own CPU seconds, CPU seconds of its reaped children) of
    ``pid`` (user + system each), or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is the state (field 3 of stat); ppid is field 4, utime 14, stime 15
    own = (int(fields[11]) + int(fields[12])) / _TICKS
    children = (int(fields[13]) + int(fields[14])) / _TICKS
    return name, int(fields[1]), own, children


def _all() -> dict[int, tuple[str, int, float, float]]:
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                out[int(entry.name)] = stat
    return out


@dataclass(frozen=True)
class CpuSample:
    """Cumulative CPU seconds of the broker and of one PostgreSQL server at one moment."""

    broker: float
    database: float


def sample(postmaster_pid: int | None) -> CpuSample:
    """The broker's and the database server's CPU seconds so far: every server process
    alive, plus the postmaster's reaped children (backends that have exited)."""
    procs = _all()
    broker = sum(own for name, _, own, _ in procs.values() if name == "beam.smp")
    database = 0.0
    if postmaster_pid is not None and postmaster_pid in procs:
        database = procs[postmaster_pid][2] + procs[postmaster_pid][3]
        database += sum(own for _, ppid, own, _ in procs.values() if ppid == postmaster_pid)
    return CpuSample(broker=broker, database=database)


def postmaster_of(data_directory: str) -> int | None:
    """The postmaster's pid from ``postmaster.pid`` in ``data_directory`` (None if unreadable)."""
    try:
        return int(Path(data_directory, "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
