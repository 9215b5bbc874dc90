"""One message taken from the queue and not yet acknowledged, and how to read it.

A delivery is decoded as it arrives (:meth:`Delivery.prepare`, called by the runner):
while the batch before it commits, the event loop decodes the next one, so a flush only
writes. The outcome is kept on the delivery: its :class:`~contracts.Event`, or the
dead-letter reason and error; the batcher acts on it at the flush, after the batch
before it was committed and acknowledged, exactly as if it had decoded it then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aiormq.abc import DeliveredMessage

from consumer.broker.frames import MAX_DEPTH, unreadable
from consumer.broker.headers import H_ROUTING_KEY
from consumer.core.errors import BrokerUnavailable
from contracts import DeadLetterReason, DecodeError, Event, decode

#: Errors of the AMQP client that mean the connection or channel is gone.
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    aio_pika.exceptions.AMQPError,
    ConnectionError,
    OSError,
    BrokerUnavailable,
)

#: Dead-letter reason of a message whose headers the client could not decode.
INVALID_HEADERS = DeadLetterReason.INVALID_HEADERS.value


def attempt_of(value: Any) -> int:
    """The retry attempt a message carries; a forged or garbled header counts as none."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return 0
    try:
        return max(int(value), 0)
    except ValueError:
        return 0


def unreadable_error(names: list[str]) -> str:
    """The dead-letter error of a message whose headers ``names`` could not be decoded."""
    shown = ", ".join(repr(n[:80]) for n in names[:5])
    return (
        f"header {shown} could not be decoded (nested deeper than {MAX_DEPTH} levels, or "
        "malformed); kept as its raw bytes"
    )


@dataclass(slots=True)
class Delivery:
    """One message taken from the queue and not yet acknowledged."""

    message: DeliveredMessage
    received: float
    #: The decoded event, once :meth:`prepare` found the message valid.
    event: Event | None = None
    #: Why the message can never be valid (a dead-letter reason), and what is wrong.
    reason: str | None = None
    error: str | None = None

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

    def prepare(self) -> None:
        """Decode the message: set :attr:`event`, or :attr:`reason` and :attr:`error`.

        Never raises: it runs in the channel's frame reader (:func:`deliver_inline`), where
        an exception would close the channel under every buffered delivery. Whatever is
        not a :class:`~contracts.DecodeError` is dead-lettered as a schema violation
        naming the exception (the boundary :func:`contracts.decode` keeps too).
        """
        try:
            self._prepare()
        except Exception as exc:  # the frame reader's boundary: nothing may escape
            self.event = None
            self.reason = DeadLetterReason.SCHEMA_VIOLATION.value
            self.error = f"unexpected {type(exc).__name__} while reading the message: {exc}"

    def _prepare(self) -> None:
        message = self.message
        properties = message.header.properties
        headers = properties.headers
        if headers:
            broken = unreadable(headers)
            if broken:
                self.reason, self.error = INVALID_HEADERS, unreadable_error(broken)
                return
        try:
            self.event = decode(
                message.body,
                routing_key=self.routing_key(),  # the type, or our header after a retry
                headers=headers,  # CloudEvents binary mode
                content_type=properties.content_type,
            )
        except DecodeError as exc:
            self.reason, self.error = exc.reason.value, exc.message
