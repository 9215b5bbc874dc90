"""The contract between the generic consumer runner and the handlers it hosts.

The runner (:mod:`consumer.runtime.runner`) owns everything per message that is not domain
logic: decoding, dead-lettering invalid messages, batching, the ledger insert that makes
every event idempotent, the transaction, acknowledgement after commit, retries and
metrics. A handler only turns *newly recorded* events into projections, inside the
runner's transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import asyncpg

from consumer.broker import Names
from consumer.core.settings import Settings
from contracts import Event


@dataclass
class ServiceContext:
    """What background loops of a handler get: settings, a pool, the stop signal."""

    settings: Settings
    pool: asyncpg.Pool
    names: Names
    stopping: asyncio.Event
    #: True in ``--burst`` mode: loops should finish their current work and return once
    #: ``stopping`` is set, after one last pass (e.g. the outbox drained once more).
    burst: bool = False
    #: Set by a loop to tell ``--burst`` it still has work (e.g. unsent outbox rows).
    busy: dict[str, bool] = field(default_factory=dict)


class Handler(Protocol):
    """A domain handler hosted by the runner."""

    #: "audit" or "capacity"; also the label of its metrics.
    name: str

    def queue(self, names: Names) -> str:
        """The queue this handler consumes."""

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Event]) -> None:
        """Apply events that this transaction just inserted into the ledger.

        ``events`` are in delivery order, already de-duplicated against the ledger (an
        event seen before is never passed again). Runs inside the runner's transaction:
        the ledger rows and the projections commit together, then the deliveries are
        acknowledged. Raise :class:`~consumer.core.errors.DatabaseUnavailable` for
        failures that may pass by themselves (the batch is retried as is); any other
        exception makes the runner bisect the batch and send the offending event to a
        delayed retry, then to the dead letters (``retries_exhausted``).
        """

    def background(self, ctx: ServiceContext) -> Sequence[Callable[[], Awaitable[None]]]:
        """Loops to run beside consumption (timers, outbox relay); may be empty.

        Each loop runs until ``ctx.stopping`` is set and must survive database and
        broker outages by itself (log, back off, try again).
        """
