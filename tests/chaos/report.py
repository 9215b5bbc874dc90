"""The chaos summary table: rows collected by the scenarios, printed at the end of the
run, and written into ``docs/RELIABILITY.md`` after a complete full-length run."""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from aio_pika.abc import AbstractConnection

DOC = Path(__file__).resolve().parents[2] / "docs" / "RELIABILITY.md"
START = "<!-- chaos-table:start -->"
END = "<!-- chaos-table:end -->"

#: Scenario names of a complete run (the table is written only when all are there).
SCENARIOS = (
    "kill -9 of the consumer under load",
    "AMQP connection cut repeatedly",
    "PostgreSQL unreachable, then slow",
    "3 consumers + 2 capacity handlers killed in turn",
    "capacity handler killed between commit and publish",
    "burst of poison messages",
)


@dataclass(frozen=True)
class Row:
    """One scenario's figures."""

    scenario: str
    scale: str
    events: int
    faults: str
    lost: int
    duplicated: int
    recover_s: float
    notes: str


#: Rows of this pytest session, in the order the scenarios ran.
RESULTS: list[Row] = []
#: Server versions seen during the session (for the machine line).
VERSIONS: dict[str, str] = {}


async def note_versions(pool: asyncpg.Pool, amqp: AbstractConnection) -> None:
    """Remember the PostgreSQL and RabbitMQ versions the scenarios ran against."""
    if VERSIONS:
        return
    VERSIONS["PostgreSQL"] = str(await pool.fetchval("SHOW server_version")).split()[0]
    props = amqp.transport.connection.server_properties  # type: ignore[union-attr]
    VERSIONS["RabbitMQ"] = str(props.get("version", "?"))


def machine() -> str:
    """One line saying where the figures were measured."""
    cpu = platform.processor() or platform.machine()
    with_model = Path("/proc/cpuinfo")
    if with_model.exists():
        match = re.search(r"^model name\s*:\s*(.+)$", with_model.read_text(), re.MULTILINE)
        cpu = match.group(1).strip() if match else cpu
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        match = re.search(r"^MemTotal:\s*(\d+) kB", meminfo.read_text(), re.MULTILINE)
        memory = f", {int(match.group(1)) / 1024 / 1024:.0f} GiB RAM" if match else ""
    servers = ", ".join(f"{k} {v}" for k, v in sorted(VERSIONS.items()))
    return (f"{platform.system()} {platform.release()} {platform.machine()}, {os.cpu_count()} CPUs "
            f"({cpu}){memory}; Python {platform.python_version()}; {servers}")  # fmt: skip


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| Scenario | Form | Events | Faults injected | Lost | Duplicated | Time to recover | Notes |",
        "|---|---|--:|---|--:|--:|--:|---|",
    ]
    for r in rows:
        lines.append(f"| {r.scenario} | {r.scale} | {r.events} | {r.faults} | {r.lost} | "
                     f"{r.duplicated} | {r.recover_s:.1f} s | {r.notes} |")  # fmt: skip
    return "\n".join(lines)


def section(rows: list[Row]) -> str:
    """The generated part of ``docs/RELIABILITY.md`` (between the markers)."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"{START}\nMeasured {when} on {machine()}.\n\n{table(rows)}\n{END}")  # fmt: skip


def complete(rows: list[Row]) -> list[Row] | None:
    """The full-length rows if every scenario has one, in the documented order."""
    full = {r.scenario: r for r in rows if r.scale == "full"}
    if not all(name in full for name in SCENARIOS):
        return None
    return [full[name] for name in SCENARIOS]


def write_doc(rows: list[Row], doc: Path = DOC) -> None:
    """Replace the table section of ``doc`` (or append one if it has none)."""
    text = doc.read_text() if doc.exists() else "# Reliability\n"
    new = section(rows)
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + new + tail
    else:
        text = text.rstrip() + "\n\n" + new + "\n"
    doc.write_text(text)
