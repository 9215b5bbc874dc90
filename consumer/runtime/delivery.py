"""One message taken from the queue and not yet acknowledged, and how to read it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aiormq.abc import DeliveredMessage

from consumer.broker.headers import H_ROUTING_KEY
from consumer.core.errors import BrokerUnavailable

#: Errors of the AMQP client that mean the connection or channel is gone.
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    aio_pika.exceptions.AMQPError,
    ConnectionError,
    OSError,
    BrokerUnavailable,
)


def attempt_of(value: Any) -> int:
    """The retry attempt a message carries; a forged or garbled header counts as none."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return 0
    try:
        return max(int(value), 0)
    except ValueError:
        return 0


@dataclass(slots=True)
class Delivery:
    """One message taken from the queue and not yet acknowledged."""

    message: DeliveredMessage
    received: float

    @property
    def tag(self) -> int:
        """The delivery tag on the consuming channel."""
        return int(self.message.delivery.delivery_tag or 0)  # type: ignore[union-attr]

    @property
    def headers(self) -> dict[str, Any]:
        """The AMQP headers (empty if none)."""
        return dict(self.message.header.properties.headers or {})

    def routing_key(self) -> str | None:
        """The routing key the producer used (from our header after a retry or replay)."""
        exchange = self.message.exchange
        if exchange:
            return self.message.routing_key
        value = (self.message.header.properties.headers or {}).get(H_ROUTING_KEY)
        return str(value) if value is not None else None
