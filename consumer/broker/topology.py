"""Exchange and queue names, and their idempotent declaration.

Every exchange and queue name is derived here from the configured prefix, so the
dead-letter and retry naming is never spelled twice. Declaration happens at start.
Only AMQP 0-9-1 is used (no management plugin).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractQueue

from consumer.core.settings import Settings

AUDIT_BINDINGS = ("task.#", "suggestion.#")
CAPACITY_BINDINGS = ("dispatch.requested", "capacity.#", "control.#")


@dataclass(frozen=True)
class Names:
    """Every exchange and queue name, derived from one prefix."""

    prefix: str = "taskledger"

    @property
    def events(self) -> str:
        """Topic exchange producers publish to."""
        return f"{self.prefix}.events"

    @property
    def dispatch(self) -> str:
        """Topic exchange of outbound dispatch and recovery messages."""
        return f"{self.prefix}.dispatch"

    @property
    def dlx(self) -> str:
        """Fanout exchange every queue dead-letters to."""
        return f"{self.prefix}.dlx"

    @property
    def unroutable(self) -> str:
        """Fanout exchange, the alternate exchange of ``events``: whatever no binding takes
        goes there and on to the dead-letter queue, instead of vanishing."""
        return f"{self.prefix}.unroutable"

    @property
    def audit(self) -> str:
        """Quorum queue of the audit consumer (``task.#``, ``suggestion.#``)."""
        return f"{self.prefix}.audit"

    @property
    def capacity(self) -> str:
        """Quorum queue of the capacity handler."""
        return f"{self.prefix}.capacity"

    @property
    def dead(self) -> str:
        """Quorum queue holding dead letters; nothing expires there."""
        return f"{self.prefix}.dead"

    @property
    def anchors(self) -> str:
        """Fanout exchange and quorum queue of the ledger chain's heads (anchors)."""
        return f"{self.prefix}.anchors"

    def retry(self, source_queue: str, delay_ms: int) -> str:
        """The retry queue that holds messages of ``source_queue`` for ``delay_ms``."""
        return f"{source_queue}.retry.{delay_ms}"

    def work_queues(self) -> tuple[str, str]:
        """The queues the service consumes."""
        return (self.audit, self.capacity)

    def all_queues(self, delays_ms: list[int]) -> list[str]:
        """Every queue the topology declares (for tests and tear-down)."""
        queues = [self.audit, self.capacity, self.dead, self.anchors]
        queues += [self.retry(q, d) for q in self.work_queues() for d in delays_ms]
        return queues

    def all_exchanges(self) -> list[str]:
        """Every exchange the topology declares."""
        return [self.events, self.dispatch, self.dlx, self.unroutable, self.anchors]


def quorum_arguments(names: Names, delivery_limit: int) -> dict[str, Any]:
    """Arguments of a work queue: quorum, delivery limit, at-least-once dead-lettering."""
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": names.dlx,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


GROUP_SIZE = "x-quorum-initial-group-size"
_GROUP_SIZE_DRIFT = re.compile(
    r"inequivalent arg 'x-quorum-initial-group-size'.*current is (?:none|(?:the value )?'(\d+)')"
)


async def _group_size_of(
    channel: AbstractChannel, name: str, arguments: dict[str, Any], wanted: int
) -> int | None:
    """The initial group size to declare quorum queue ``name`` with: ``wanted`` for a new
    queue, or what an existing queue was created with (None: created before this setting).

    RabbitMQ counts ``x-quorum-initial-group-size`` in the equivalence check of a
    re-declaration (3.10: PRECONDITION_FAILED, "received '3' but current is none"), yet it
    only matters when the queue is created. The probe declares on a channel of its own,
    since a refused declaration closes the channel it was made on.
    """
    raw = await channel.get_underlay_channel()
    probe = await raw.connection.channel(publisher_confirms=False)
    try:
        await probe.queue_declare(name, durable=True, arguments={**arguments, GROUP_SIZE: wanted})
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        drift = _GROUP_SIZE_DRIFT.search(str(exc))
        if drift is None:
            return wanted  # another argument differs: the real declaration says which
        return int(drift[1]) if drift[1] else None
    finally:
        if not probe.is_closed:
            await probe.close()
    return wanted


async def declare_quorum_queue(
    channel: AbstractChannel, name: str, arguments: dict[str, Any], group_size: int
) -> AbstractQueue:
    """Declare quorum queue ``name`` with ``arguments``, created with ``group_size``
    replicas (one per node up to that many); an existing queue keeps the size it has."""
    size = await _group_size_of(channel, name, arguments, group_size)
    args = dict(arguments) if size is None else {**arguments, GROUP_SIZE: size}
    return await channel.declare_queue(name, durable=True, arguments=args)


async def declare_topology(channel: AbstractChannel, settings: Settings) -> Names:
    """Declare every exchange, queue and binding (idempotent); return the names."""
    names = Names(settings.prefix)
    unroutable = await channel.declare_exchange(
        names.unroutable, aio_pika.ExchangeType.FANOUT, durable=True
    )
    # An exchange's arguments are fixed when it is created: an older `<prefix>.events`
    # without this argument makes the declaration fail (PRECONDITION_FAILED); see the
    # README, "Upgrading", for the one-off fix.
    events = await channel.declare_exchange(
        names.events,
        aio_pika.ExchangeType.TOPIC,
        durable=True,
        arguments={"alternate-exchange": names.unroutable},
    )
    await channel.declare_exchange(names.dispatch, aio_pika.ExchangeType.TOPIC, durable=True)
    dlx = await channel.declare_exchange(names.dlx, aio_pika.ExchangeType.FANOUT, durable=True)
    size = settings.quorum_group_size
    dead = await declare_quorum_queue(channel, names.dead, {"x-queue-type": "quorum"}, size)
    await dead.bind(dlx, routing_key="#")
    await dead.bind(unroutable, routing_key="#")
    anchors = await channel.declare_exchange(
        names.anchors, aio_pika.ExchangeType.FANOUT, durable=True
    )
    anchor_queue = await declare_quorum_queue(
        channel, names.anchors, {"x-queue-type": "quorum"}, size
    )
    await anchor_queue.bind(anchors, routing_key="")
    args = quorum_arguments(names, settings.delivery_limit)
    for queue_name, keys in ((names.audit, AUDIT_BINDINGS), (names.capacity, CAPACITY_BINDINGS)):
        queue = await declare_quorum_queue(channel, queue_name, args, size)
        for key in keys:
            await queue.bind(events, routing_key=key)
        for delay in settings.retry_delays_ms:
            # Expired messages go back, through the default exchange, to the queue they
            # came from: a delayed retry that never spins in a tight requeue loop.
            await declare_quorum_queue(
                channel,
                names.retry(queue_name, delay),
                {
                    "x-queue-type": "quorum",
                    "x-message-ttl": delay,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": queue_name,
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                },
                size,
            )
    return names


async def delete_topology(channel: AbstractChannel, settings: Settings) -> None:
    """Delete every queue and exchange of the prefix (tests and benchmarks only)."""
    names = Names(settings.prefix)
    for queue in names.all_queues(settings.retry_delays_ms):
        await channel.queue_delete(queue)
    for exchange in names.all_exchanges():
        await channel.exchange_delete(exchange)
