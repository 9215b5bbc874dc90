"""What the benchmarks share: a scratch database and prefix, publishing, reporting."""

from __future__ import annotations

import asyncio
import os
import platform
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import orjson
from rich.console import Console
from rich.table import Table

from consumer.broker import declare_topology, delete_topology
from consumer.core.settings import Settings
from consumer.simulate import publish_all
from consumer.store.migrate import upgrade
from consumer.store.urls import asyncpg_dsn, with_database

RESULTS = Path(__file__).resolve().parent / "results"
ADMIN_URL = os.environ.get(
    "TASKLEDGER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
AMQP_URL = os.environ.get("TASKLEDGER_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
console = Console()


def machine() -> str:
    """A one-line description of this machine."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.system()} {platform.release()}"
    )


@asynccontextmanager
async def fresh_database(**overrides: Any) -> AsyncIterator[Settings]:
    """A new migrated database and a random prefix with its topology; removed afterwards
    (also when the migration or the declaration fails)."""
    name = f"tl_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(asyncpg_dsn(with_database(ADMIN_URL, "postgres")))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = with_database(ADMIN_URL, name)
            await asyncio.to_thread(upgrade, url)
            settings = Settings(database_url=url, amqp_url=AMQP_URL,
                                prefix=f"tlb{uuid.uuid4().hex[:8]}", **overrides)  # fmt: skip
            connection = await aio_pika.connect(settings.amqp)
            try:
                await declare_topology(await connection.channel(), settings)
                yield settings
            finally:
                await delete_topology(await connection.channel(), settings)
                await connection.close()
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def publish_backlog(settings: Settings, messages: Sequence[tuple[str, bytes]]) -> None:
    """Publish ``messages`` with confirms (not timed)."""
    await publish_all(settings, list(messages), window=500)


def rss_of(pid: int) -> int:
    """Peak resident set size (VmHWM) of a running process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


class Bench:
    """Prints a result table and keeps the figures in bench/results/<name>.json."""

    def __init__(self, name: str) -> None:
        self.name = name

    def report(self, results: dict[str, Any], rows: Sequence[tuple[str, str]]) -> Path:
        """Print ``rows`` as a table; write ``results`` with date and machine as JSON."""
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        table = Table(title=f"{self.name} benchmark, {stamp}\n{machine()}")
        table.add_column("measure")
        table.add_column("result", justify="right")
        for label, value in rows:
            table.add_row(label, value)
        console.print(table)
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{self.name}.json"
        payload = {"date": stamp, "machine": machine(), "results": results}
        path.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))
        return path
