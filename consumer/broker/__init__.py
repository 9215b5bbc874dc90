"""RabbitMQ topology and helpers: names, declaration, dead-letter headers, connections.

Every exchange and queue name is derived here from the configured prefix, so the
dead-letter and retry naming is never spelled twice. Declaration is idempotent and
happens at start. Only AMQP 0-9-1 is used (no management plugin).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractQueue

from consumer.exceptions import BrokerUnavailable
from consumer.settings import Settings, redact_text

log = logging.getLogger(__name__)

#: Headers a dead letter carries besides the broker's ``x-death``.
H_REASON = "x-taskledger-reason"
H_ERROR = "x-taskledger-error"
H_SOURCE_QUEUE = "x-taskledger-source-queue"
H_ROUTING_KEY = "x-taskledger-routing-key"
H_EXCHANGE = "x-taskledger-exchange"
H_FAILED_AT = "x-taskledger-failed-at"
H_ATTEMPT = "x-taskledger-attempt"
H_REPLAY_COUNT = "x-taskledger-replay-count"

ERROR_HEADER_LIMIT = 1024

AUDIT_BINDINGS = ("task.#",)
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
    def audit(self) -> str:
        """Quorum queue of the audit consumer (``task.#``)."""
        return f"{self.prefix}.audit"

    @property
    def capacity(self) -> str:
        """Quorum queue of the capacity handler."""
        return f"{self.prefix}.capacity"

    @property
    def dead(self) -> str:
        """Quorum queue holding dead letters; nothing expires there."""
        return f"{self.prefix}.dead"

    def retry(self, source_queue: str, delay_ms: int) -> str:
        """The retry queue that holds messages of ``source_queue`` for ``delay_ms``."""
        return f"{source_queue}.retry.{delay_ms}"

    def work_queues(self) -> tuple[str, str]:
        """The queues the service consumes."""
        return (self.audit, self.capacity)

    def all_queues(self, delays_ms: list[int]) -> list[str]:
        """Every queue the topology declares (for tests and tear-down)."""
        queues = [self.audit, self.capacity, self.dead]
        queues += [self.retry(q, d) for q in self.work_queues() for d in delays_ms]
        return queues

    def all_exchanges(self) -> list[str]:
        """Every exchange the topology declares."""
        return [self.events, self.dispatch, self.dlx]


def quorum_arguments(names: Names, delivery_limit: int) -> dict[str, Any]:
    """Arguments of a work queue: quorum, delivery limit, at-least-once dead-lettering."""
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": names.dlx,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


async def declare_topology(channel: AbstractChannel, settings: Settings) -> Names:
    """Declare every exchange, queue and binding (idempotent); return the names."""
    names = Names(settings.prefix)
    events = await channel.declare_exchange(names.events, aio_pika.ExchangeType.TOPIC, durable=True)
    await channel.declare_exchange(names.dispatch, aio_pika.ExchangeType.TOPIC, durable=True)
    dlx = await channel.declare_exchange(names.dlx, aio_pika.ExchangeType.FANOUT, durable=True)
    dead = await channel.declare_queue(
        names.dead, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead.bind(dlx, routing_key="#")
    args = quorum_arguments(names, settings.delivery_limit)
    for queue_name, keys in ((names.audit, AUDIT_BINDINGS), (names.capacity, CAPACITY_BINDINGS)):
        queue = await channel.declare_queue(queue_name, durable=True, arguments=args)
        for key in keys:
            await queue.bind(events, routing_key=key)
        for delay in settings.retry_delays_ms:
            # Expired messages go back, through the default exchange, to the queue they
            # came from: a delayed retry that never spins in a tight requeue loop.
            await channel.declare_queue(
                names.retry(queue_name, delay),
                durable=True,
                arguments={
                    "x-queue-type": "quorum",
                    "x-message-ttl": delay,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": queue_name,
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                },
            )
    return names


async def delete_topology(channel: AbstractChannel, settings: Settings) -> None:
    """Delete every queue and exchange of the prefix (tests and benchmarks only)."""
    names = Names(settings.prefix)
    for queue in names.all_queues(settings.retry_delays_ms):
        await channel.queue_delete(queue)
    for exchange in names.all_exchanges():
        await channel.exchange_delete(exchange)


def cut(text: str, limit: int = ERROR_HEADER_LIMIT) -> str:
    """Cut ``text`` to at most ``limit`` UTF-8 bytes (for header values)."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode("utf-8", errors="ignore") + "..."


def dead_letter_headers(
    original: Mapping[str, Any] | None,
    *,
    reason: str,
    error: str,
    source_queue: str,
    routing_key: str,
    exchange: str,
) -> dict[str, Any]:
    """Headers of a dead letter: the original ones plus the ``x-taskledger-*`` set."""
    headers = dict(original or {})
    headers.update(
        {
            H_REASON: reason,
            H_ERROR: cut(redact_text(error)),
            H_SOURCE_QUEUE: source_queue,
            H_ROUTING_KEY: routing_key,
            H_EXCHANGE: exchange,
            H_FAILED_AT: datetime.now(UTC).isoformat(),
        }
    )
    return headers


def encodable(value: Any) -> Any:
    """``value`` with every ``bytes`` turned into ``bytearray``, recursively.

    The client decodes a header string that is not UTF-8 (other clients can send one) as
    ``bytes``, which it cannot encode again; a byte array keeps the bytes as they were.
    """
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, dict):
        return {k: encodable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [encodable(v) for v in value]
    return value


def copy_message(
    body: bytes, properties: Any, headers: Mapping[str, Any] | None
) -> aio_pika.Message:
    """Build a persistent message with ``body``, the original properties and ``headers``."""
    return aio_pika.Message(
        body=body,
        headers=encodable(dict(headers or {})),
        content_type=getattr(properties, "content_type", None) or "application/json",
        content_encoding=getattr(properties, "content_encoding", None),
        message_id=getattr(properties, "message_id", None),
        correlation_id=getattr(properties, "correlation_id", None),
        timestamp=getattr(properties, "timestamp", None),
        type=getattr(properties, "message_type", None),  # pamqp's name for `type`
        app_id=getattr(properties, "app_id", None),
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


async def connect(url: str, *, attempts: int = 1, backoff_s: float = 0.5) -> AbstractConnection:
    """Open a (non-robust) connection; raises :class:`BrokerUnavailable` with a redacted message.

    The service handles reconnection itself (re-declare, consume again), which avoids the
    known traps of robust connections that do not restore consumers.
    """
    last: BaseException | None = None
    for attempt in range(attempts):
        try:
            return await aio_pika.connect(url, timeout=10)
        except (OSError, ConnectionError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
            last = exc
            if attempt + 1 < attempts:
                await asyncio.sleep(min(backoff_s * 2**attempt, 5.0))
    raise BrokerUnavailable(
        f"cannot reach RabbitMQ: {redact_text(str(last)) or type(last).__name__}"
    )


async def publish_confirmed(
    exchange: AbstractExchange, message: aio_pika.Message, routing_key: str, *, timeout: float = 30
) -> None:
    """Publish and wait for the broker's confirm; raise if it nacks or returns it.

    The channel must have publisher confirms on (aio-pika's default).
    """
    await exchange.publish(message, routing_key=routing_key, mandatory=False, timeout=timeout)


async def queue_depth(channel: AbstractChannel, name: str) -> int:
    """Messages ready in queue ``name`` (passive declare; the queue must exist)."""
    queue: AbstractQueue = await channel.declare_queue(name, passive=True)
    return int(queue.declaration_result.message_count or 0)
