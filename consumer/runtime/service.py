"""`taskledger run`: host the handlers, their background loops, signals and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator, Sequence

from consumer import db
from consumer.audit import AuditHandler
from consumer.broker import Names
from consumer.handlers import Handler, ServiceContext
from consumer.runner import Runner
from consumer.settings import Settings

log = logging.getLogger(__name__)

HANDLER_NAMES = ("audit", "capacity")


def make_handlers(only: str | None = None) -> list[Handler]:
    """The handlers to host: both, or only the one named ``audit`` or ``capacity``."""
    handlers: list[Handler] = []
    if only in (None, "audit"):
        handlers.append(AuditHandler())
    if only in (None, "capacity"):
        from consumer.capacity import CapacityHandler

        handlers.append(CapacityHandler())
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


async def _guard(name: str, loop_fn: Callable[[], Awaitable[None]]) -> None:
    try:
        await loop_fn()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("background loop crashed", extra={"action": "loop_crash", "loop": name})
        raise


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
    within ``settings.shutdown_timeout_s``, background loops finish their pass.
    """
    stopping = stopping or asyncio.Event()
    hosted = list(handlers) if handlers is not None else make_handlers(only)
    # min_size=0: starting while PostgreSQL is down is fine; writes retry until it is back.
    pool = await db.create_pool(settings.dsn, min_size=0, max_size=2 + 2 * len(hosted))
    ctx = ServiceContext(settings=settings, pool=pool, names=Names(settings.prefix),
                         stopping=stopping, burst=burst)  # fmt: skip
    runners = [Runner(settings, h, pool, stopping, burst=burst) for h in hosted]
    try:
        with stop_on_signals(stopping):
            background = [
                asyncio.create_task(_guard(f"{h.name}.{i}", fn), name=f"{h.name}-loop-{i}")
                for h in hosted
                for i, fn in enumerate(h.background(ctx))
            ]
            consuming = [asyncio.create_task(r.run(), name=f"runner-{r.label}") for r in runners]
            log.info("service started", extra={"action": "start", "handlers": [h.name for h in hosted],
                                               "burst": burst})  # fmt: skip
            await asyncio.gather(*consuming)
            stopping.set()  # burst: consumers idle; background loops take their last pass
            if background:
                done, pending = await asyncio.wait(background, timeout=settings.shutdown_timeout_s)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                for task in done:
                    if not task.cancelled() and task.exception() is not None:
                        log.error("background loop ended with an error",
                                  extra={"action": "loop_error", "loop": task.get_name()})  # fmt: skip
    finally:
        await pool.close()
    log.info("service stopped", extra={"action": "stopped"})
