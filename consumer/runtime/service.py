"""`taskledger run`: host the handlers and their background loops as one unit.

Every runner and every background loop runs in one :class:`asyncio.TaskGroup`: when one
of them dies, the others are cancelled, one clear line says which and why, and the
process exits non-zero (:class:`ServiceCrashed`). Nothing keeps running half-alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator, Sequence
from functools import partial

from consumer.broker.topology import Names
from consumer.core.errors import TaskledgerError
from consumer.core.settings import Settings, redact_text
from consumer.runtime.handler import Handler, ServiceContext
from consumer.runtime.runner import Runner
from consumer.store import db
from consumer.store.partitions import partition_loop

log = logging.getLogger(__name__)

HANDLER_NAMES = ("audit", "capacity")


class ServiceCrashed(TaskledgerError):
    """A runner or background loop of the service died; the service stopped with it."""


def make_handlers(only: str | None = None) -> list[Handler]:
    """The handlers to host: both, or only the one named ``audit`` or ``capacity``."""
    handlers: list[Handler] = []
    if only in (None, "audit"):
        from consumer.audit.handler import AuditHandler

        handlers.append(AuditHandler())
    if only in (None, "capacity"):
        from consumer.admission.handler import CapacityHandler
        from consumer.runtime.faults import before_publish_hook

        # test-only fault hooks are read from the environment here, once, at start-up
        handlers.append(CapacityHandler(before_publish=before_publish_hook()))
    return handlers


@contextlib.contextmanager
def stop_on_signals(stopping: asyncio.Event) -> Iterator[None]:
    """Set ``stopping`` on SIGTERM/SIGINT for the duration of the block."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stopping.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def _named(name: str, work: Callable[[], Awaitable[None]]) -> None:
    """Run ``work``; an exception leaves tagged with the name of what died."""
    try:
        await work()
    except Exception as exc:
        exc.add_note(f"taskledger: {name}")
        raise


async def _stop_when_done(
    consuming: Sequence[asyncio.Task[None]],
    background: Sequence[asyncio.Task[None]],
    stopping: asyncio.Event,
    budget_s: float,
    sealing: tuple[asyncio.Event, asyncio.Task[None]] | None = None,
) -> None:
    """Once every runner returned (a stop, or burst mode idle), let the sealer seal what
    was committed, then tell the background loops to take their last pass (the anchor
    loop logs the final head), and cancel those still running after ``budget_s``."""
    await asyncio.wait(consuming)
    if sealing is not None:
        seal_stop, sealer = sealing
        seal_stop.set()
        await asyncio.wait([sealer])
    stopping.set()
    if not background:
        return
    _, pending = await asyncio.wait(background, timeout=budget_s)
    for task in pending:
        log.warning("background loop did not finish in time; cancelled",
                    extra={"action": "loop_cancelled", "loop": task.get_name()})  # fmt: skip
        task.cancel()


def _crash_line(group: ExceptionGroup[Exception]) -> tuple[str, str]:
    """Which part died and why, from the TaskGroup's exceptions (the first one)."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    notes = [n for n in getattr(exc, "__notes__", []) if n.startswith("taskledger: ")]
    where = notes[0].removeprefix("taskledger: ") if notes else "service"
    return where, redact_text(f"{type(exc).__name__}: {exc}")


async def run_service(
    settings: Settings,
    *,
    only: str | None = None,
    burst: bool = False,
    stopping: asyncio.Event | None = None,
    handlers: Sequence[Handler] | None = None,
) -> None:
    """Consume until SIGTERM/SIGINT (or ``stopping``), or in burst mode until idle.

    On stop: no new deliveries are taken, what is in hand is committed and acknowledged
    within ``settings.shutdown_timeout_s``, background loops finish their pass. Raises
    :class:`ServiceCrashed` when any runner or loop dies (the rest is cancelled first).
    """
    stopping = stopping or asyncio.Event()
    hosted = list(handlers) if handlers is not None else make_handlers(only)
    # min_size=0: starting while PostgreSQL is down is fine; writes retry until it is back.
    pool = await db.create_pool(settings.dsn, min_size=0, max_size=2 + 2 * len(hosted))
    ctx = ServiceContext(settings=settings, pool=pool, names=Names(settings.prefix),
                         stopping=stopping, burst=burst)  # fmt: skip
    runners = [Runner(settings, h, pool, stopping, burst=burst) for h in hosted]
    seal_stop = asyncio.Event()
    try:
        with stop_on_signals(stopping):
            async with asyncio.TaskGroup() as group:
                background = [
                    group.create_task(_named(f"{h.name} loop {i}", fn), name=f"{h.name}-loop-{i}")
                    for h in hosted
                    for i, fn in enumerate(h.background(ctx))
                ]
                # ledger partitions of the coming months: at start, then daily (013)
                ahead = partial(partition_loop, pool, settings.partitions_ahead, stopping)
                background.append(
                    group.create_task(_named("partitions loop", ahead), name="partitions-loop")
                )
                consuming = [
                    group.create_task(_named(f"{r.label} runner", r.run), name=f"runner-{r.label}")
                    for r in runners
                ]
                sealing = None
                if any(h.name == "audit" for h in hosted):  # 012: chain what writers commit
                    from consumer.ledger.sealer import seal_loop

                    work = partial(
                        seal_loop, pool, settings, seal_stop, settings.shutdown_timeout_s
                    )
                    sealing = (seal_stop, group.create_task(_named("sealer", work), name="sealer"))
                group.create_task(
                    _stop_when_done(consuming, background, stopping, settings.shutdown_timeout_s,
                                    sealing),
                    name="stop-when-done",
                )  # fmt: skip
                log.info("service started", extra={"action": "start", "burst": burst,
                                                   "handlers": [h.name for h in hosted]})  # fmt: skip
    except ExceptionGroup as group_error:
        where, why = _crash_line(group_error)
        log.error(f"{where} crashed; service stopped: {why}",
                  extra={"action": "service_crashed", "loop": where, "error": why})  # fmt: skip
        raise ServiceCrashed(f"{where} crashed: {why}") from None
    finally:
        await pool.close()
    log.info("service stopped", extra={"action": "stopped"})
