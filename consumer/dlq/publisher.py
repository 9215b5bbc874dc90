"""Publishing with a confirm that the dead-letter tools trust: a refusal is an exception."""

from __future__ import annotations

from contextlib import suppress
from typing import Literal, cast

import aiormq
from aio_pika.abc import AbstractChannel as PikaChannel
from aio_pika.abc import AbstractConnection
from aiormq.abc import AbstractChannel
from pamqp import commands as spec

from consumer.core.errors import BrokerUnavailable, TaskledgerError

PUBLISH_TIMEOUT_S = 30.0


class PublishRefused(TaskledgerError):
    """The broker refused a publish: it nacked it or returned it as unroutable."""


class Publisher:
    """A confirm channel that raises :class:`PublishRefused` on a nack or a return."""

    def __init__(self, connection: AbstractConnection) -> None:
        self._connection = connection
        self._pika: PikaChannel | None = None
        self._channel: AbstractChannel | None = None
        self._exchanges: dict[str, bool] = {"": True}

    async def __aenter__(self) -> Publisher:
        self._pika = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        self._channel = await self._pika.get_underlay_channel()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pika is not None and not self._pika.is_closed:
            with suppress(Exception):
                await self._pika.close()

    async def _passive(self, kind: Literal["exchange", "queue"], name: str) -> bool:
        channel = await self._connection.channel(publisher_confirms=False)
        try:
            raw = await channel.get_underlay_channel()
            if kind == "exchange":
                await raw.exchange_declare(name, passive=True)
            else:
                await raw.queue_declare(name, passive=True)
            return True
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
        except aiormq.exceptions.ChannelLockedResource:
            return True  # an exclusive queue of another connection: it exists, publishing works
        finally:
            if not channel.is_closed:
                with suppress(Exception):
                    await channel.close()

    async def exchange_exists(self, name: str) -> bool:
        """Whether exchange ``name`` exists (cached; the default exchange always does)."""
        if name not in self._exchanges:
            self._exchanges[name] = await self._passive("exchange", name)
        return self._exchanges[name]

    async def queue_exists(self, name: str) -> bool:
        """Whether queue ``name`` exists."""
        return await self._passive("queue", name)

    @property
    def lost(self) -> bool:
        """Whether the publishing channel is closed."""
        return self._channel is None or self._channel.is_closed

    async def publish(
        self, body: bytes, properties: spec.Basic.Properties, exchange: str, routing_key: str
    ) -> None:
        """Publish (mandatory) and wait for the confirm.

        Raises :class:`PublishRefused` when nacked or unroutable, :class:`BrokerUnavailable`
        when the channel is already closed (nothing was sent), aiormq errors or TimeoutError
        when it is lost or the confirm does not come in time (the publish may have landed).
        """
        if self._channel is None or self._channel.is_closed:
            raise BrokerUnavailable("the publishing channel is closed")
        # The concrete aiormq channel: ``wait=False`` lets publishes queue up behind the
        # channel lock instead of each waiting for the socket to drain (the confirm is
        # still awaited); the abstract class does not declare the parameter.
        channel = cast(aiormq.Channel, self._channel)
        try:
            confirm = await channel.basic_publish(
                body,
                exchange=exchange,
                routing_key=routing_key,
                properties=properties,
                mandatory=True,
                timeout=PUBLISH_TIMEOUT_S,
                wait=False,
            )
        except aiormq.exceptions.PublishError as exc:
            raise PublishRefused(
                f"unroutable: no queue is bound to {exchange or '(default)'} / {routing_key}"
            ) from exc
        if not isinstance(confirm, spec.Basic.Ack):
            raise PublishRefused(f"the broker refused the publish to {exchange or '(default)'}")
