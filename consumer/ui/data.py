"""What the console reads beyond the shared query layer: live figures, queue depths, pages.

The task lists, failure counts, timelines and the pause queue come from
:mod:`consumer.queries.reads` (the API's and the CLI's functions); the dead letters from
:mod:`consumer.dlq`. This module adds the overview's figures (health, ledger throughput,
queue depths by passive declare, chain head, last verify), failures by service and the
operator-actions log with a keyset cursor. SQL: ``consumer/store/sql/ui.sql``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import aiormq
from pydantic import BaseModel

from consumer import broker
from consumer.broker import Names
from consumer.core.errors import BrokerUnavailable, DatabaseMisconfigured, InvalidArgument
from consumer.core.settings import Settings, redact_text
from consumer.queries import reads
from consumer.queries.filters import TaskFilter
from consumer.queries.models import OperatorActionEntry
from consumer.store.db import q, translate_errors
from contracts import EventType, TaskStatus

__all__ = [
    "RATE_WINDOW_S",
    "ActionsPage",
    "Overview",
    "QueueDepth",
    "action_page",
    "failure_breakdown",
    "overview",
]

#: The overview's throughput is ledger rows received over this many seconds.
RATE_WINDOW_S = 60.0
_TIMEOUT_S = 3.0


@dataclass
class QueueDepth:
    """Messages ready in one queue (or group of queues); ``error`` when it could not be read."""

    name: str
    queues: list[str]
    messages: int | None = None
    consumers: int | None = None
    error: str | None = None


@dataclass
class Overview:
    """Everything the overview page shows."""

    database: str = "unknown"
    broker: str = "unknown"
    events_per_s: float | None = None
    events_in_window: int | None = None
    newest_received: datetime | None = None
    newest_age_s: float | None = None
    queues: list[QueueDepth] = field(default_factory=list)
    by_status: dict[str, int] = field(default_factory=dict)
    waiting: int | None = None
    holds: int | None = None
    chain_head: dict[str, Any] | None = None
    last_verify: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)


def _hex(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with its binary values (a hash) as hex text."""
    return {k: bytes(v).hex() if isinstance(v, bytes | memoryview) else v for k, v in row.items()}


async def _database_figures(pool: Any, view: Overview) -> None:
    """Fill in what the database says; a failure is noted, not raised."""
    since = datetime.now(UTC).timestamp() - 86400
    day = TaskFilter(since=datetime.fromtimestamp(since, UTC))
    try:
        with translate_errors():
            async with pool.acquire() as conn:
                await asyncio.wait_for(conn.fetchval(q("ping")), _TIMEOUT_S)
                view.database = "ok"
                types = [t.value for t in EventType]
                view.events_in_window = int(
                    await conn.fetchval(q("ui_ledger_rate"), types, RATE_WINDOW_S)
                )
                view.events_per_s = round(view.events_in_window / RATE_WINDOW_S, 2)
                newest = await conn.fetchrow(q("ui_ledger_newest"))
                if newest is not None:
                    view.newest_received = newest["received_at"]
                    age = newest["db_now"] - newest["received_at"]
                    view.newest_age_s = max(0.0, age.total_seconds())
                counts = await conn.fetchrow(q("ui_pause_counts"))
                view.waiting, view.holds = int(counts["waiting"]), int(counts["holds"])
                head = await conn.fetchrow(q("chain_head"))
                view.chain_head = _hex(dict(head.items())) if head is not None else None
                verify = await conn.fetchrow(q("ui_last_verify"))
                view.last_verify = dict(verify.items()) if verify is not None else None
        view.by_status = (await reads.summary(pool, day, top_services=1)).by_status
    except DatabaseMisconfigured as exc:
        view.database = f"refused: {redact_text(str(exc))}"
    except Exception as exc:  # the page still shows what it could read
        message = redact_text(str(exc)) or type(exc).__name__
        if view.database == "unknown":
            view.database = f"unavailable: {message}"
        else:
            view.errors.append(f"database: {message}")


def queue_groups(settings: Settings) -> list[QueueDepth]:
    """The queues the overview counts: audit, capacity, the retry queues, dead."""
    names = Names(settings.prefix)
    retry = [names.retry(q_, d) for q_ in names.work_queues() for d in settings.retry_delays_ms]
    return [
        QueueDepth("audit", [names.audit]),
        QueueDepth("capacity", [names.capacity]),
        QueueDepth("retry", retry),
        QueueDepth("dead", [names.dead]),
    ]


async def _broker_figures(settings: Settings, view: Overview) -> None:
    """Connect, then count each queue by a passive declare (a missing queue is noted)."""
    view.queues = queue_groups(settings)
    try:
        connection = await asyncio.wait_for(broker.connect(settings.amqp), _TIMEOUT_S)
    except (BrokerUnavailable, TimeoutError, OSError) as exc:
        view.broker = f"unavailable: {redact_text(str(exc)) or type(exc).__name__}"
        for group in view.queues:
            group.error = "broker unavailable"
        return
    view.broker = "ok"
    try:
        channel = await connection.channel(publisher_confirms=False)
        for group in view.queues:
            total = consumers = 0
            for name in group.queues:
                raw = await channel.get_underlay_channel()
                try:
                    declared = await asyncio.wait_for(
                        raw.queue_declare(name, passive=True), _TIMEOUT_S
                    )
                except aiormq.exceptions.ChannelNotFoundEntity:
                    group.error = f"{name} does not exist (has the service run?)"
                    channel = await connection.channel(publisher_confirms=False)
                    continue
                total += int(declared.message_count or 0)
                consumers += int(declared.consumer_count or 0)
            group.messages, group.consumers = total, consumers
    except Exception as exc:  # noted on the page; the rest of it still renders
        view.errors.append(f"broker: {redact_text(str(exc)) or type(exc).__name__}")
    finally:
        await connection.close()


#: How long one reading of the broker serves the overview (per broker and prefix): the
#: connection and the passive declares are most of the page's cost (p95 134 ms of 150 at
#: 1,000,000 tasks), and the page refreshes every 10 s anyway.
BROKER_TTL_S = 2.0
_broker_cache: dict[tuple[str, str], tuple[float, Overview]] = {}


async def _cached_broker_figures(settings: Settings, view: Overview) -> None:
    """:func:`_broker_figures`, reusing a reading younger than :data:`BROKER_TTL_S`."""
    key = (str(settings.amqp), settings.prefix)
    now = time.monotonic()
    hit = _broker_cache.get(key)
    if hit is None or now - hit[0] > BROKER_TTL_S:
        fresh = Overview()
        await _broker_figures(settings, fresh)
        hit = (time.monotonic(), fresh)
        _broker_cache.clear()  # one entry per process in practice; never grows
        _broker_cache[key] = hit
    reading = hit[1]
    view.broker = reading.broker
    view.queues = [replace(group) for group in reading.queues]
    view.errors.extend(reading.errors)


async def overview(pool: Any, settings: Settings) -> Overview:
    """Read the overview's figures from PostgreSQL and RabbitMQ at once (never raises)."""
    view = Overview()
    await asyncio.gather(_database_figures(pool, view), _cached_broker_figures(settings, view))
    return view


class ServiceFailures(BaseModel):
    """Failed tasks that touched one service, by error cause."""

    service: str
    total: int
    by_cause: dict[str, int]


class TypeFailures(BaseModel):
    """Failed tasks of one error type and cause."""

    error_type: str
    error_cause: str | None
    tasks: int


async def failure_breakdown(
    pool: Any, f: TaskFilter, *, top: int = 50
) -> tuple[list[ServiceFailures], list[TypeFailures]]:
    """Failed tasks matching ``f`` by service touched (the busiest ``top`` service and cause
    pairs) and by error type and cause (the counts ``reads.failures`` adds up by type)."""
    failed = f.model_copy(update={"statuses": [TaskStatus.FAILED]})
    args = failed.filter_args()
    with translate_errors(), reads.schema_errors():
        async with (
            pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            await conn.execute(q("read_custom_plans"))
            records = await conn.fetch(reads.statement("ui_failure_services"), *args, top)
            pairs = await conn.fetch(reads.statement("audit_failure_counts"), *args)
    types = [
        TypeFailures(
            error_type=r["error_type"] or "(none)", error_cause=r["error_cause"], tasks=r["n"]
        )
        for r in pairs
    ]
    types.sort(key=lambda t: (-t.tasks, t.error_type, t.error_cause or ""))
    services: dict[str, ServiceFailures] = {}
    for r in records:
        entry = services.setdefault(
            r["service"], ServiceFailures(service=r["service"], total=0, by_cause={})
        )
        cause = r["error_cause"] or "(none)"
        entry.by_cause[cause] = entry.by_cause.get(cause, 0) + int(r["n"])
        entry.total += int(r["n"])
    return sorted(services.values(), key=lambda s: (-s.total, s.service)), types


class ActionsPage(BaseModel):
    """A page of operator actions, newest first; ``next_cursor`` for the next one."""

    items: list[OperatorActionEntry]
    next_cursor: str | None = None


def _encode(at: datetime, action_id: int) -> str:
    raw = f"{at.astimezone(UTC).isoformat()}|{action_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, action_id = raw.partition("|")
        parsed = datetime.fromisoformat(at)
        if parsed.tzinfo is None:
            raise ValueError("no offset")
        return parsed, int(action_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument("cursor is not one this console issued") from None


async def action_page(pool: Any, cursor: str | None, limit: int) -> ActionsPage:
    """One page of ``operator_actions``, newest first, after ``cursor`` (keyset on at, id)."""
    at, action_id = _decode(cursor) if cursor else (None, None)
    with translate_errors(), reads.schema_errors():
        async with pool.acquire() as conn:
            records = await conn.fetch(q("ui_operator_actions_page"), at, action_id, limit + 1)
    items = [OperatorActionEntry.model_validate(dict(r.items())) for r in records[:limit]]
    more = len(records) > limit and items
    return ActionsPage(
        items=items, next_cursor=_encode(items[-1].at, items[-1].id) if more else None
    )
