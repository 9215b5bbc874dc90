"""``replay``: put chosen dead letters back where they came from, and record that it was done.

A chosen message is republished to where it came from (the ``x-taskledger-*``
headers a consumer-made dead letter carries, else the newest ``x-death`` entry, else the
events exchange with the body's ``type``), with the same body and properties, and is
acknowledged in the dead queue only after the broker confirmed the publish: at no
instant is it in neither place. An interruption between confirm and ack leaves it in both
(the ledger makes the duplicate a no-op); the result counts those as ``in_doubt``.

What a replayed message carries is :mod:`consumer.dlq.replay_headers`. Each run has an id
(``run_id``), stamped on what it republishes (``x-taskledger-replay-run``). When the newest
recorded replay was interrupted (Ctrl-C, a lost connection), the next run skips the dead
letters stamped by it (and by the runs it skipped in turn): those went out and came back
already, so running the same command again continues instead of replaying them once more.
Naming a message (``--id``) replays it whatever its stamp.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from aio_pika.abc import AbstractConnection
from pydantic import BaseModel, Field

from consumer.broker import Names
from consumer.core.errors import BrokerUnavailable, DatabaseUnavailable, InvalidArgument
from consumer.core.settings import Settings, redact_text
from consumer.dlq.codec import with_headers
from consumer.dlq.connection import CONNECTION_LOST, broker_connection
from consumer.dlq.lease import dead_letter_lease
from consumer.dlq.letters import DeadLetter, Filters, Origin
from consumer.dlq.publisher import Publisher, PublishRefused
from consumer.dlq.replay_headers import replay_headers
from consumer.dlq.scan import DeadQueueScan
from consumer.operations.actions import ActionRecorder, default_actor
from consumer.store import db

log = logging.getLogger(__name__)

REPLAY_WINDOW = 128  # publishes awaiting their confirm at once
MAX_ERRORS_KEPT = 20


class Move(BaseModel):
    """A message a dry run would replay, and where to."""

    id: str
    event_type: str | None
    reason: str
    exchange: str
    routing_key: str


class ReplayResult(BaseModel):
    """Counts of a replay. ``replayed`` were confirmed at the destination, then acked in
    the dead queue; ``skipped`` did not match; ``failed`` matched but stay in the dead
    queue; ``in_doubt`` may have reached the destination but could not be acked (they
    may be in both places). On an interruption, matched messages not counted in any of
    these were not sent and stay in the dead queue. ``bounced`` (counted in ``skipped``)
    came back from an interrupted run this one continues (``skipped_runs``)."""

    status: Literal["completed", "interrupted"] = "completed"
    dry_run: bool = False
    run_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    skipped_runs: list[str] = []
    bounced: int = 0
    total: int = 0
    scanned: int = 0
    matched: int = 0
    replayed: int = 0
    skipped: int = 0
    failed: int = 0
    in_doubt: int = 0
    elapsed_s: float = 0.0
    errors: list[str] = []
    planned: list[Move] = []
    action_id: int | None = None

    def note(self, error: str) -> None:
        """Keep an error message (the first few distinct ones)."""
        if error not in self.errors and len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(error)


ProgressCallback = Callable[[ReplayResult], None]


class _RateLimiter:
    """Spaces publishes ``1/rate`` seconds apart (no limit when rate is None)."""

    def __init__(self, rate: float | None) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._next = time.monotonic()

    async def wait(self) -> None:
        if not self._interval:
            return
        now = time.monotonic()
        if self._next > now:
            await asyncio.sleep(self._next - now)
        self._next = max(self._next, now) + self._interval


class Replayer:
    """One replay pass; keeps the counts in ``result`` as it goes."""

    def __init__(
        self,
        scan: DeadQueueScan,
        publisher: Publisher,
        filters: Filters,
        result: ReplayResult,
        *,
        to_queue: str | None,
        rate: float | None,
        progress: ProgressCallback | None,
    ) -> None:
        self.scan = scan
        self.publisher = publisher
        self.filters = filters
        self.result = result
        self.to_queue = to_queue
        self.progress = progress
        self._limiter = _RateLimiter(rate)
        self._slots = asyncio.Semaphore(1 if rate else REPLAY_WINDOW)
        self._inflight: set[asyncio.Task[None]] = set()

    def report(self) -> None:
        """Pass the counts so far to the progress callback, if any."""
        if self.progress is not None:
            self.progress(self.result)

    async def run(self) -> None:
        """Look at each message of the pass and replay the matching ones (until the limit).

        Raises :class:`BrokerUnavailable` when the connection is lost; call :meth:`drain`
        afterwards in every case.
        """
        self.result.total = self.scan.total
        self.report()
        async with aclosing(self.scan.messages()) as letters:
            async for letter in letters:
                if self.scan.lost or self.publisher.lost:
                    raise BrokerUnavailable("the connection to RabbitMQ was lost during the replay")
                self.result.scanned += 1
                await self._consider(letter)
                self.report()
                if self.filters.limit is not None and self.result.matched >= self.filters.limit:
                    break

    def _destination(self, letter: DeadLetter) -> Origin | None:
        if self.to_queue is not None:
            return Origin("", self.to_queue, "override")
        return letter.origin

    async def _consider(self, letter: DeadLetter) -> None:
        if not self.filters.matches(letter):
            self.result.skipped += 1
            return
        if letter.replay_run in self.result.skipped_runs and not self.filters.ids:
            self.result.skipped += 1
            self.result.bounced += 1
            return
        self.result.matched += 1
        dest = self._destination(letter)
        if dest is None:
            self._fail(letter, "its origin is unknown (no x-taskledger headers, x-death or type)")
            return
        if not await self.publisher.exchange_exists(dest.exchange):
            self._fail(letter, f"exchange {dest.exchange!r} does not exist")
            return
        if self.result.dry_run:
            self.result.planned.append(
                Move(
                    id=letter.id,
                    event_type=letter.event_type,
                    reason=letter.reason,
                    exchange=dest.exchange,
                    routing_key=dest.routing_key,
                )
            )
            return
        await self._limiter.wait()
        await self._slots.acquire()
        if self.scan.lost or self.publisher.lost:
            self._slots.release()
            raise BrokerUnavailable("the connection to RabbitMQ was lost during the replay")
        task = asyncio.create_task(self._move(letter, dest))
        self._inflight.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._slots.release()
        self.report()

    def _fail(self, letter: DeadLetter, why: str) -> None:
        self.result.failed += 1
        self.result.note(why)
        log.info("dead letter not replayed", extra={"action": "dlq_replay", "id": letter.id})

    async def _move(self, letter: DeadLetter, dest: Origin) -> None:
        headers = replay_headers(letter, datetime.now(UTC), self.result.run_id)
        props = with_headers(letter.properties, headers)
        try:
            await self.publisher.publish(letter.body, props, dest.exchange, dest.routing_key)
        except (PublishRefused, BrokerUnavailable) as exc:  # refused, or never sent
            self._fail(letter, str(exc))
            return
        except (TypeError, ValueError) as exc:  # a header pamqp cannot encode: not sent
            self._fail(letter, f"cannot republish: {exc}")
            return
        except BaseException as exc:
            # Lost connection, timeout, or the confirm cancelled by a closing channel: the
            # publish may have reached the broker, so the message may be in both places.
            self._doubt("publish interrupted", exc)
            return
        try:
            await self.scan.ack(letter)
        except BaseException as exc:
            self._doubt("ack lost", exc)
            return
        self.result.replayed += 1

    def _doubt(self, what: str, exc: BaseException) -> None:
        """Count a message that may be in both places; re-raise if this task is cancelled."""
        self.result.in_doubt += 1
        self.result.note(f"{what}: {redact_text(str(exc)) or type(exc).__name__}")
        task = asyncio.current_task()
        if isinstance(exc, asyncio.CancelledError) and task is not None and task.cancelling():
            raise exc
        if not isinstance(exc, Exception | asyncio.CancelledError):
            raise exc  # KeyboardInterrupt, SystemExit

    async def drain(self) -> None:
        """Wait for every publish in flight to be confirmed and acked (or to fail)."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)


async def replay(
    settings: Settings,
    filters: Filters,
    *,
    dry_run: bool = False,
    rate: float | None = None,
    to_queue: str | None = None,
    actor: str | None = None,
    progress: ProgressCallback | None = None,
    connection: AbstractConnection | None = None,
) -> ReplayResult:
    """Republish the matching dead letters to where they came from (or ``to_queue``).

    Each one is acked in the dead queue only after the publisher confirm. ``rate`` caps
    messages per second. The action is recorded in ``operator_actions`` (not for a dry
    run). A lost connection ends the pass with ``status="interrupted"``; cancellation
    (Ctrl-C) finishes the publishes in flight, records the action as interrupted, reports
    the final counts to ``progress`` and re-raises. Running it again continues.
    Raises :class:`InvalidArgument`, :class:`DatabaseUnavailable` (before moving
    anything), :class:`BrokerUnavailable` (when the broker cannot be reached at all).
    """
    if rate is not None and rate <= 0:
        raise InvalidArgument(f"rate must be positive, got {rate}")
    actor = actor or default_actor(settings)
    params = {**filters.params(), "dry_run": dry_run, "rate": rate, "to_queue": to_queue}
    result = ReplayResult(dry_run=dry_run)
    recorder = None if dry_run else await ActionRecorder.open(settings)
    result.skipped_runs = await _interrupted_runs(settings, quiet=dry_run)
    started = time.monotonic()
    try:
        try:
            await _replay_pass(settings, filters, result, to_queue, rate, progress, connection)
        except asyncio.CancelledError:
            result.status = "interrupted"
            result.note("interrupted by the operator")
            await _finish(recorder, actor, params, result, started, progress)
            raise
        await _finish(recorder, actor, params, result, started, progress)
    finally:
        if recorder is not None:
            await recorder.close()
    return result


async def _interrupted_runs(settings: Settings, *, quiet: bool) -> list[str]:
    """The runs whose bounced messages this one skips: the newest recorded replay and those
    it skipped, if it was interrupted. ``quiet``: an unreachable database means none."""
    try:
        conn = await db.connect(settings.dsn)
    except DatabaseUnavailable:
        if quiet:
            return []
        raise
    try:
        with db.translate_errors():
            raw = await conn.fetchval(db.q("dlq_last_replay"))
    except DatabaseUnavailable:
        if quiet:
            return []
        raise
    finally:
        await conn.close()
    last = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    if not isinstance(last, dict) or last.get("status") != "interrupted":
        return []
    runs = [last.get("run_id"), *(last.get("skipped_runs") or [])]
    return [r for r in runs if isinstance(r, str)][:MAX_ERRORS_KEPT]


async def _finish(
    recorder: ActionRecorder | None,
    actor: str,
    params: Mapping[str, Any],
    result: ReplayResult,
    started: float,
    progress: ProgressCallback | None,
) -> None:
    result.elapsed_s = round(time.monotonic() - started, 3)
    if recorder is not None:
        payload = result.model_dump(mode="json", exclude={"planned", "action_id"})
        result.action_id = await recorder.record_quietly("dlq.replay", actor, params, payload)
    log.info(
        "dead-letter replay %s",
        result.status,
        extra={"action": "dlq_replay", "replayed": result.replayed, "failed": result.failed},
    )
    if progress is not None:
        progress(result)


async def _replay_pass(
    settings: Settings,
    filters: Filters,
    result: ReplayResult,
    to_queue: str | None,
    rate: float | None,
    progress: ProgressCallback | None,
    connection: AbstractConnection | None,
) -> None:
    names = Names(settings.prefix)
    try:
        async with (
            dead_letter_lease(settings) as lease,
            broker_connection(settings, connection) as conn,
            Publisher(conn) as publisher,
        ):
            if to_queue is not None and not await publisher.queue_exists(to_queue):
                raise InvalidArgument(f"queue {to_queue!r} does not exist")
            async with DeadQueueScan(lease, names) as scan:
                replayer = Replayer(
                    scan,
                    publisher,
                    filters,
                    result,
                    to_queue=to_queue,
                    rate=rate,
                    progress=progress,
                )
                try:
                    await replayer.run()
                finally:
                    await replayer.drain()
    except BrokerUnavailable as exc:
        if result.total == 0 and result.scanned == 0:
            raise
        result.status = "interrupted"
        result.note(str(exc))
    except CONNECTION_LOST as exc:
        result.status = "interrupted"
        result.note(f"connection lost: {redact_text(str(exc)) or type(exc).__name__}")
