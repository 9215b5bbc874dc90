"""Committing one batch: the ledger insert and the handler's projection in one transaction.

What a failure means is decided by :func:`consumer.store.db.classify`:

- PostgreSQL unavailable or misconfigured (login refused, database missing, schema not
  migrated): the batch is HELD and retried with back-off; nothing is acked or
  dead-lettered, and the prefetch window stops the broker from sending more;
- a statement timeout: held like an outage, but once it happened
  ``settings.db_timeout_bisect_after`` times in a row while the server answers a
  trivial query promptly, the batch itself is slow: it is bisected like bad data;
- an event whose id is recorded already for a different event (another source or other
  content) is dead-lettered as ``id_conflict`` after the commit; a true re-delivery is a
  silent duplicate;
- anything else (bad data, a bug): the batch is bisected down to the event that fails,
  which goes to a delayed retry queue and after the last delay to the dead letters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import asyncpg

from consumer.core import metrics
from consumer.core.errors import DatabaseMisconfigured, DatabaseTimeout, DatabaseUnavailable
from consumer.core.retry import Backoff, pause
from consumer.core.settings import Settings
from consumer.ledger.inbox import id_conflicts, record_events
from consumer.runtime.delivery import Delivery
from consumer.runtime.failures import FailureRouter
from consumer.runtime.handler import Handler
from consumer.store import db
from contracts import DeadLetterReason, Event

log = logging.getLogger(__name__)

Item = tuple[Delivery, Event]


class BatchWriter:
    """Writes batches of valid events for one handler; never loses one."""

    def __init__(
        self,
        settings: Settings,
        handler: Handler,
        pool: asyncpg.Pool,
        router: FailureRouter,
        check_deadline: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.handler = handler
        self.pool = pool
        self.router = router
        self.label = handler.name
        #: Raises :class:`~consumer.runtime.runner.ShutdownAbandoned` once a stop was
        #: asked for and its budget is spent while a batch is held.
        self.check_deadline = check_deadline

    async def write(self, items: Sequence[Item], trigger: str | None = None) -> None:
        """Commit ``items``; hold and retry while PostgreSQL is away; bisect on bad data.

        ``trigger`` (why the batch was flushed) is recorded on its ledger chain link."""
        backoff = Backoff(first=0.1, cap=self.settings.db_retry_max_backoff_s)
        timeouts = 0
        while True:
            try:
                started = time.perf_counter()
                events = [e for _, e in items]
                async with db.transaction(self.pool) as conn:
                    new = await record_events(
                        conn, events, chain=self.settings.ledger_chain, trigger=trigger
                    )
                    conflicts = await id_conflicts(conn, events, new)
                    await self.handler.apply(conn, new)
                self._observe(items, new, time.perf_counter() - started)
                await self._refuse(items, conflicts)
                return
            except DatabaseUnavailable as exc:
                if isinstance(exc, DatabaseTimeout):
                    timeouts += 1
                    if await self._slow_batch(timeouts):
                        await self._bisect(items, exc)
                        return
                self.check_deadline()
                await self._hold(items, exc, backoff)
            except Exception as exc:  # bad data or a bug: find the event, not the batch
                await self._bisect(items, exc)
                return

    async def _refuse(self, items: Sequence[Item], conflicts: list[tuple[Event, str]]) -> None:
        """Dead-letter the events whose id another event holds (``id_conflict``)."""
        for event, error in conflicts:
            delivery = next(d for d, e in items if e is event)
            await self.router.dead_letter(delivery, DeadLetterReason.ID_CONFLICT.value, error)

    async def _slow_batch(self, timeouts: int) -> bool:
        """True once this batch timed out often enough while the server answers."""
        if timeouts < self.settings.db_timeout_bisect_after:
            return False
        return await db.ping(self.pool)

    async def _hold(
        self, items: Sequence[Item], exc: DatabaseUnavailable, backoff: Backoff
    ) -> None:
        delay = backoff.next()
        metrics.DB_RETRIES.labels(self.label).inc()
        if isinstance(exc, DatabaseMisconfigured):
            message = (
                "database refuses us (fix TASKLEDGER_DATABASE_URL or the schema); holding the batch"
            )
            cause = "misconfigured"
        elif isinstance(exc, DatabaseTimeout):
            message, cause = "database statement timed out; holding the batch", "timeout"
        else:
            message, cause = "database unavailable; holding the batch", "unavailable"
        metrics.DB_HOLD_REASON.labels(self.label).state(cause)
        log.warning(
            message,
            extra={"action": "db_retry", "handler": self.label, "events": len(items),
                   "cause": cause, "error": str(exc), "backoff_s": round(delay, 3)},
        )  # fmt: skip
        await pause(delay)

    async def _bisect(self, items: Sequence[Item], exc: BaseException) -> None:
        if len(items) == 1:
            await self.router.retry_later(*items[0], exc)
            return
        half = len(items) // 2
        await self.write(items[:half])
        await self.write(items[half:])

    def _observe(self, items: Sequence[Item], new: list[Event], took: float) -> None:
        label = self.label
        metrics.DB_HOLD_REASON.labels(label).state("none")
        metrics.COMMIT_SECONDS.labels(label).observe(took)
        metrics.EVENTS_APPLIED.labels(label).inc(len(new))
        if len(new) != len(items):
            metrics.EVENTS_DUPLICATE.labels(label).inc(len(items) - len(new))
        now = datetime.now(UTC)
        lag = metrics.LAG_SECONDS.labels(label)
        for event in new:
            lag.observe(max((now - event.time).total_seconds(), 0.0))
