"""Monthly partitions of the ledger (migration 013): names, bounds, and creating them ahead.

``event_ledger`` is partitioned by ``received_at`` and ``execution_logs`` by
``recorded_at`` (a projected step is recorded at its event's ``received_at``, so both
tables split on the same instants). Each UTC calendar month is one partition,
``<table>_pYYYYMM``; ``<table>_default`` takes rows whose month has no partition, so an
insert never fails for want of one. The database function ``ensure_ledger_partitions``
(SECURITY DEFINER: it runs as the owner even when the service's role calls it) creates
the current month and the next ``months_ahead``, moving any rows of those months out of
the default partition in the same transaction. ``taskledger migrate`` calls it once, the
service at start and then daily (:func:`partition_loop`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, date, datetime

import asyncpg

from consumer.core.errors import TaskledgerError
from consumer.core.retry import Backoff, pause
from consumer.store.db import connect, q, translate_errors

log = logging.getLogger(__name__)

#: The partitioned tables and the column each is partitioned by.
PARTITION_KEYS = {"event_ledger": "received_at", "execution_logs": "recorded_at"}
#: How often the service makes sure the coming months have their partitions.
CHECK_INTERVAL_S = 24 * 3600.0
#: How long creating a partition may wait for its locks before trying again later.
LOCK_TIMEOUT = "5s"

_PARTITION_NAME = re.compile(r"^(event_ledger|execution_logs)_(p[0-9]{6}|default)$")


def is_partition_name(name: str) -> bool:
    """True for the name of a partition of a partitioned ledger table (not the parent)."""
    return _PARTITION_NAME.match(name) is not None


def month_start(day: date | datetime) -> datetime:
    """The first instant (UTC) of the calendar month of ``day`` (naive: taken as UTC)."""
    if isinstance(day, datetime) and day.tzinfo is not None:
        day = day.astimezone(UTC)
    return datetime(day.year, day.month, 1, tzinfo=UTC)


def month_bounds(day: date | datetime) -> tuple[datetime, datetime]:
    """The range ``[start, end)`` of the monthly partition holding ``day``."""
    start = month_start(day)
    end = datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def partition_name(table: str, day: date | datetime) -> str:
    """The name of ``table``'s partition for the month of ``day``: ``<table>_pYYYYMM``."""
    if table not in PARTITION_KEYS:
        raise ValueError(f"{table} is not partitioned")
    start = month_start(day)
    return f"{table}_p{start.year:04d}{start.month:02d}"


async def ensure_partitions(conn: asyncpg.Connection, months_ahead: int) -> list[tuple[str, int]]:
    """Create the partitions of this month and the next ``months_ahead`` that are missing.

    Runs in its own transaction on ``conn`` (waiting at most :data:`LOCK_TIMEOUT` for the
    tables' locks); returns ``(partition, rows moved out of the default partition)`` for
    each partition created, and logs each one. Errors are translated as
    :func:`~consumer.store.db.translate_errors` does.
    """
    with translate_errors():
        async with conn.transaction():
            await conn.execute(q("partitions_lock_timeout"), LOCK_TIMEOUT)
            rows = await conn.fetch(q("ensure_ledger_partitions"), months_ahead)
    created = [(str(r["partition_name"]), int(r["moved_rows"])) for r in rows]
    for name, moved in created:
        log.info(
            f"partition {name} created" + (f", {moved} rows moved out of default" if moved else ""),
            extra={"action": "partition_created", "partition": name, "moved_rows": moved},
        )
    return created


async def ensure_partitions_at(dsn: str, months_ahead: int) -> list[tuple[str, int]]:
    """:func:`ensure_partitions` on a connection of its own to ``dsn`` (``taskledger migrate``)."""
    conn = await connect(dsn)
    try:
        return await ensure_partitions(conn, months_ahead)
    finally:
        await conn.close()


async def partition_loop(
    pool: asyncpg.Pool,
    months_ahead: int,
    stopping: asyncio.Event,
    interval_s: float = CHECK_INTERVAL_S,
) -> None:
    """Create partitions ahead now and every ``interval_s`` until ``stopping`` is set.

    The first pass runs even if ``stopping`` is already set (a ``--burst`` run that ends
    at once still creates them). A failure (database away, a lock not granted in time, a
    partition name taken by a table that is not a partition) is logged and retried with
    back-off, never fatal: rows of a month without its partition land in the default
    partition meanwhile and move out when it is created.
    """
    backoff = Backoff(first=5.0, cap=min(3600.0, interval_s))
    while True:
        try:
            async with pool.acquire() as conn:
                await ensure_partitions(conn, months_ahead)
        except (TaskledgerError, asyncpg.PostgresError, OSError) as exc:
            delay = backoff.next()
            log.warning(
                f"cannot create the ledger partitions ahead (again in {delay:.0f} s): {exc}",
                extra={"action": "partitions_failed", "error": str(exc)},
            )
            if await pause(delay, stopping):
                return
            continue
        backoff.reset()
        if await pause(interval_s, stopping):
            return
