"""One connection's worth of consuming: gather deliveries into batches and flush them.

A batch is flushed on count (``batch_size``), on a short linger, or at the end (a stop,
or an idle queue in burst mode). Each delivery was decoded as it arrived
(:meth:`~consumer.runtime.delivery.Delivery.prepare`); at the flush an invalid one is
dead-lettered with its reason; the valid ones are written in one transaction by the
:class:`~consumer.runtime.writer.BatchWriter`; then the whole batch is acknowledged with
one ``multiple=True`` ack. Nothing is acknowledged before it is committed or confirmed
in the dead letters.

Pipelining (handlers with ``pipelined``, i.e. the audit handler): up to
``settings.write_pipeline`` batches are in flight at once, each committing on its own
pool connection, so PostgreSQL works on one batch while this process sends the next.
A batch that shares a task with a batch in flight starts writing only once that batch
has ended (committed, bisected or failed), so a task's events are recorded in the order
they arrived, also when the earlier batch rolled back and was bisected or retried.
Batches are acknowledged strictly in order: batch n+1 only after batch n was (one
``multiple=True`` ack for n+1 would cover n's deliveries too). If batch n fails, the
batches after it are neither written (when they wait for it) nor acknowledged, and come
again with it. The capacity handler writes one batch at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

import aiormq
import asyncpg

from consumer.broker.connection import queue_depth
from consumer.broker.topology import Names
from consumer.core import metrics
from consumer.core.errors import BrokerUnavailable
from consumer.core.retry import pause
from consumer.core.settings import Settings
from consumer.runtime.delivery import BROKER_ERRORS, Delivery
from consumer.runtime.failures import FailureRouter
from consumer.runtime.handler import Handler
from consumer.runtime.writer import BatchWriter
from contracts import Event


class FlushTrigger(StrEnum):
    """Why a write batch was flushed (internal: not on the wire; see ``contracts.TriggerType``).

    Recorded on the batch's ledger chain link (``ledger_chain.trigger``) and counted in
    ``taskledger_batch_flush_total``; ``taskledger audit flushes`` shows them.
    """

    COUNT = "count"  # the batch was full
    TIMEOUT = "timeout"  # its linger time passed
    END_OF_SOURCE = "end_of_source"  # the consumer stopped and drained what it held


if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel


class Source(Protocol):
    """What the batcher needs of the consumer that feeds it (the
    :class:`~consumer.runtime.runner.Runner`): its settings and names, the buffer the
    broker fills, the events that wake or stop the loop, and the shutdown budget."""

    settings: Settings
    handler: Handler
    pool: asyncpg.Pool
    names: Names
    queue: str
    label: str
    burst: bool
    buffer: list[Delivery]
    wake: asyncio.Event
    lost: asyncio.Event
    stopping: asyncio.Event
    idle: asyncio.Event

    def check_deadline(self) -> None:
        """Raise once a stop was asked for and its budget is spent."""

    def start_shutdown_budget(self) -> None:
        """Start the stop budget if not started yet."""


log = logging.getLogger(__name__)


class Batcher:
    """The batching loop of one consuming session."""

    def __init__(
        self, runner: Source, publish_channel: AbstractChannel, raw: aiormq.abc.AbstractChannel
    ) -> None:
        self.r = runner
        self.publish_channel = publish_channel
        self.raw = raw
        self.router = FailureRouter(
            runner.settings, publish_channel, runner.names, runner.queue, runner.label
        )
        self.writer = BatchWriter(
            runner.settings, runner.handler, runner.pool, self.router, runner.check_deadline
        )
        self._last_delivery = time.monotonic()
        self._last_flush = 0.0
        self._depth = pipeline_depth(runner.settings, runner.handler)
        #: Batches committing or waiting for their ack, oldest first.
        self._inflight: deque[InFlight] = deque()

    async def loop(self, consumer_tag: str) -> None:
        """Flush batches until the connection is lost, a stop, or (burst) an idle queue.

        Batches still in flight when the loop ends are waited for, also when it ends on
        an error (their transactions finish; an ack that cannot be sent any more leaves
        the deliveries to come again); when the loop is cancelled they are cancelled
        (rolled back, delivered again)."""
        try:
            await self._loop(consumer_tag)
        except asyncio.CancelledError:
            await self._settle(cancel=True)
            raise
        except BaseException:
            await self._settle(cancel=False)  # the first error is the one that counts
            raise
        error = await self._settle(cancel=False)
        if error is not None:
            raise error

    async def _loop(self, consumer_tag: str) -> None:
        r = self.r
        linger = r.settings.batch_linger_ms / 1000
        while True:
            while self._inflight and self._inflight[0].task.done():
                self._inflight.popleft().task.result()  # a failed batch ends the session
            if r.lost.is_set():
                raise BrokerUnavailable("connection closed")
            if r.stopping.is_set():
                await self._drain_and_stop(consumer_tag)
                return
            buffer = r.buffer
            now = time.monotonic()
            if len(buffer) >= r.settings.batch_size:
                await self._flush(FlushTrigger.COUNT)
                continue
            # A partial batch waits out the linger from its first message, and at least
            # the linger since the last flush: under load that lets batches grow instead
            # of committing whatever trickled in during the previous write.
            due = max(buffer[0].received, self._last_flush) + linger if buffer else 0.0
            if buffer and now >= due:
                await self._flush(FlushTrigger.TIMEOUT)
                continue
            if buffer:
                timeout: float | None = due - now
            elif r.burst:
                if await self._burst_done():
                    r.idle.set()
                    await self._drain_and_stop(consumer_tag)
                    return
                timeout = 0.1
            else:
                timeout = None
            r.wake.clear()
            if r.buffer and r.buffer[-1].received > self._last_delivery:
                self._last_delivery = r.buffer[-1].received
            await pause(timeout, r.stopping, r.wake)

    async def _burst_done(self) -> bool:
        """In burst mode: nothing in hand, nothing arrived lately, the queue is empty."""
        if time.monotonic() - self._last_delivery < 0.3:
            return False
        depth = await queue_depth(self.publish_channel, self.r.queue)
        if depth:
            self._last_delivery = time.monotonic()
            return False
        return not self.r.buffer and not self._inflight

    async def _settle(self, *, cancel: bool) -> BaseException | None:
        """Wait for every batch in flight (cancelled first if ``cancel``); return the
        first failure. Cancelled while waiting: cancel them, wait, re-raise."""
        tasks = [f.task for f in self._inflight]
        self._inflight.clear()
        if not tasks:
            return None
        if cancel:
            for task in tasks:
                task.cancel()
        try:
            await asyncio.wait(tasks)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
            raise
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                return task.exception()
        return None

    async def _drain_and_stop(self, consumer_tag: str) -> None:
        """Stop taking deliveries, then commit and acknowledge everything in hand."""
        r = self.r
        r.start_shutdown_budget()
        try:
            await asyncio.wait_for(self.raw.basic_cancel(consumer_tag), 5)
        except (TimeoutError, *BROKER_ERRORS):  # type: ignore[misc]
            return  # connection gone: what is in hand comes again elsewhere
        while r.buffer:
            await self._flush(FlushTrigger.END_OF_SOURCE)
        log.info("stopped consuming", extra={"action": "stop", "handler": r.label})

    async def _flush(self, trigger: FlushTrigger) -> None:
        r = self.r
        batch = r.buffer[: r.settings.batch_size]
        del r.buffer[: len(batch)]
        label = r.label
        metrics.EVENTS_RECEIVED.labels(label).inc(len(batch))
        metrics.BATCH_SIZE.labels(label).observe(len(batch))
        metrics.FLUSHES.labels(label, trigger.value).inc()
        valid: list[tuple[Delivery, Event]] = []
        invalid: list[Delivery] = []
        for delivery in batch:
            if delivery.event is None and delivery.reason is None:
                delivery.prepare()  # decoded on arrival as a rule; never acted on undecoded
            if delivery.event is not None:
                valid.append((delivery, delivery.event))
            else:
                invalid.append(delivery)
        tag = batch[-1].tag
        if self._depth == 1:
            metrics.IN_FLIGHT.labels(label).set(len(r.buffer) + len(batch))
            await self._dead_letter(invalid)
            if valid:
                await self.writer.write(valid, trigger.value)
            await self.raw.basic_ack(tag, multiple=True)
            metrics.IN_FLIGHT.labels(label).set(len(r.buffer))
            self._last_flush = time.monotonic()
            return
        while len(self._inflight) >= self._depth:
            await self._inflight.popleft().task  # the oldest ends first: acks go in order
        tasks = frozenset(e.task_id for _, e in valid if e.task_id is not None)
        after = [f.task for f in self._inflight if f.tasks & tasks]
        previous = self._inflight[-1].task if self._inflight else None
        task = asyncio.create_task(
            self._commit(valid, invalid, tag, trigger, after=after, previous=previous)
        )
        task.add_done_callback(lambda _: r.wake.set())
        self._inflight.append(InFlight(task, tasks, len(batch)))
        self._show_in_flight()
        self._last_flush = time.monotonic()

    async def _commit(
        self,
        valid: list[tuple[Delivery, Event]],
        invalid: list[Delivery],
        tag: int,
        trigger: FlushTrigger,
        *,
        after: list[asyncio.Task[None]],
        previous: asyncio.Task[None] | None,
    ) -> None:
        """One pipelined batch: wait for the batches in flight that share a task with it,
        commit, wait for the batch before it, dead-letter its invalid deliveries, then
        acknowledge. Raises (and is never acknowledged) if a batch before it failed."""
        try:
            if after:
                await asyncio.wait(after)
                for earlier in after:
                    if earlier.cancelled() or earlier.exception() is not None:
                        raise BatchAbandoned("a batch before it with a common task failed")
            if valid:
                await self.writer.write(valid, trigger.value)
            if previous is not None:
                await previous
            await self._dead_letter(invalid)
            await self.raw.basic_ack(tag, multiple=True)
        finally:
            self._show_in_flight()

    async def _dead_letter(self, invalid: list[Delivery]) -> None:
        for delivery in invalid:
            await self.router.dead_letter(delivery, delivery.reason or "", delivery.error or "")

    def _show_in_flight(self) -> None:
        """``taskledger_deliveries_in_hand``: buffered plus in batches not yet acknowledged."""
        held = sum(f.size for f in self._inflight if not f.task.done())
        metrics.IN_FLIGHT.labels(self.r.label).set(len(self.r.buffer) + held)


class BatchAbandoned(Exception):
    """A pipelined batch is not written because a batch before it that shares a task
    failed: it is left unacknowledged and comes again with that batch."""


@dataclass(frozen=True)
class InFlight:
    """A pipelined batch: its task, the task ids it writes, its delivery count."""

    task: asyncio.Task[None]
    tasks: frozenset[uuid.UUID]
    size: int


def pipeline_depth(settings: Settings, handler: Handler) -> int:
    """Batches a handler may have in flight: ``settings.write_pipeline`` for a pipelined
    handler (the audit handler), 1 for any other."""
    return settings.write_pipeline if handler.pipelined else 1
