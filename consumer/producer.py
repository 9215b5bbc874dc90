"""A publisher for Python agents and orchestrators: the few lines every team gets wrong.

:class:`Publisher` builds each event from the contract models (:func:`contracts.make_event`:
validated before it leaves), publishes it persistent and ``mandatory`` on a confirm
channel to ``<prefix>.events`` with the routing key equal to its type, and waits for
the broker's confirm. When the confirm is lost (a timeout, a nack, the connection
gone) it reconnects and publishes the *same body with the same id* again, with the one
back-off of :mod:`consumer.core.retry`: taskledger stores an id once, so a repeat is a
harmless duplicate and nothing is lost. A message no queue takes is not retried
(:class:`~consumer.core.errors.MessageUnroutable`)::

    async with Publisher("amqp://guest:guest@127.0.0.1/", source="agents/infra-01") as pub:
        await pub.publish(EventType.TASK_STARTED,
                          TaskStarted(agent_id="infra-01", agent_type="infra"),
                          subject=task_id)
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from pydantic import BaseModel

from consumer.broker.connection import confirm_channel, connect, publish_confirmed
from consumer.broker.topology import Names
from consumer.core.errors import BrokerUnavailable, MessageUnroutable
from consumer.core.retry import Backoff, pause
from consumer.core.settings import redact_text
from contracts import EventType, make_event, new_id
from contracts.binary import STRUCTURED_CONTENT_TYPE

__all__ = ["Publisher"]

#: Errors after which the confirm of a publish is unknown: publish the same body again.
_LOST_CONFIRM: tuple[type[BaseException], ...] = (
    TimeoutError,
    ConnectionError,
    OSError,
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    aio_pika.exceptions.AMQPError,
    BrokerUnavailable,
)


class Publisher:
    """Publishes contract v1 events to taskledger with confirms, ``mandatory``, and retry.

    Args:
        amqp_url: the broker, ``amqp://user:password@host:5672/vhost``.
        source: the ``source`` of every event (``agents/<id>``, ``orchestrator``, ...).
        prefix: the taskledger prefix; events go to ``<prefix>.events``.
        confirm_timeout: seconds to wait for one confirm before publishing again.
        attempts: publishes of one message before giving up with
            :class:`~consumer.core.errors.BrokerUnavailable`.
    """

    def __init__(
        self,
        amqp_url: str,
        *,
        source: str,
        prefix: str = "taskledger",
        confirm_timeout: float = 10.0,
        attempts: int = 5,
    ) -> None:
        self.amqp_url = amqp_url
        self.source = source
        self.exchange_name = Names(prefix).events
        self.confirm_timeout = confirm_timeout
        self.attempts = max(1, attempts)
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Publisher:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect now (publishing connects on demand too).

        Raises:
            BrokerUnavailable: the broker cannot be reached, or ``<prefix>.events`` does
                not exist (taskledger declares it when it starts).
        """
        await self._ensure()

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        connection, self._connection = self._connection, None
        self._channel = self._exchange = None
        if connection is not None and not connection.is_closed:
            await connection.close()

    def build(
        self,
        type: EventType | str,
        data: BaseModel | Mapping[str, Any],
        *,
        subject: uuid.UUID | str | None = None,
        id: uuid.UUID | None = None,
        time: datetime | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> bytes:
        """The JSON body of one event from this publisher's source (see ``make_event``).

        Raises:
            ValueError: the event breaks the contract.
        """
        return make_event(
            type, data, source=self.source, subject=subject, id=id, time=time,
            extensions=extensions,
        )  # fmt: skip

    async def publish(
        self,
        type: EventType | str,
        data: BaseModel | Mapping[str, Any],
        *,
        subject: uuid.UUID | str | None = None,
        id: uuid.UUID | None = None,
        time: datetime | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> uuid.UUID:
        """Build one event, publish it until confirmed, and return its id.

        Raises:
            ValueError: the event breaks the contract (nothing was sent).
            MessageUnroutable: no queue took it (not retried).
            BrokerUnavailable: no confirm after :attr:`attempts` publishes.
        """
        event_id = id or new_id()  # time-ordered: contracts.ids
        body = self.build(
            type, data, subject=subject, id=event_id, time=time, extensions=extensions
        )
        await self.publish_body(EventType(type).value, body, message_id=str(event_id))
        return event_id

    async def publish_body(
        self, routing_key: str, body: bytes, *, message_id: str | None = None
    ) -> None:
        """Publish a ready body until the broker confirms it; the same bytes every time.

        Raises:
            MessageUnroutable: no queue took it (not retried).
            BrokerUnavailable: no confirm after :attr:`attempts` publishes.
        """
        message = aio_pika.Message(
            body,
            content_type=STRUCTURED_CONTENT_TYPE,
            message_id=message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        backoff = Backoff(first=0.2, cap=5.0)
        last: BaseException | None = None
        for attempt in range(self.attempts):
            try:
                exchange = await self._ensure()
                await publish_confirmed(
                    exchange, message, routing_key, timeout=self.confirm_timeout
                )
                return
            except MessageUnroutable:
                raise
            except _LOST_CONFIRM as exc:  # nack, timeout, connection gone: publish again
                last = exc
                await self._drop()
                if attempt + 1 < self.attempts:
                    await pause(backoff.next())
        detail = redact_text(str(last)) or type(last).__name__
        raise BrokerUnavailable(
            f"no confirm for a message to {self.exchange_name!r} after {self.attempts} "
            f"attempts: {detail}"
        )

    async def _ensure(self) -> AbstractExchange:
        """The events exchange on a live confirm channel, connecting if needed."""
        async with self._lock:
            if self._exchange is not None and self._channel and not self._channel.is_closed:
                return self._exchange
            await self._drop_unlocked()
            self._connection = await connect(self.amqp_url)
            self._channel = await confirm_channel(self._connection)
            try:
                self._exchange = await self._channel.get_exchange(self.exchange_name)
            except aiormq.exceptions.ChannelNotFoundEntity:
                await self._drop_unlocked()
                raise BrokerUnavailable(
                    f"exchange {self.exchange_name!r} does not exist: start taskledger "
                    "(it declares its topology) or check the prefix"
                ) from None
            return self._exchange

    async def _drop(self) -> None:
        async with self._lock:
            await self._drop_unlocked()

    async def _drop_unlocked(self) -> None:
        connection, self._connection = self._connection, None
        self._channel = self._exchange = None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(*_LOST_CONFIRM):  # a hung peer must not hang us
                await asyncio.wait_for(connection.close(), 5)
