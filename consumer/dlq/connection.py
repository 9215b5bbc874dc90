"""The broker connection the dead-letter tools work on, and what counts as losing it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import aiormq
from aio_pika.abc import AbstractConnection

from consumer import broker
from consumer.core.settings import Settings

#: Errors meaning the connection or channel went away under an operation.
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
    TimeoutError,
)


@asynccontextmanager
async def broker_connection(
    settings: Settings, connection: AbstractConnection | None
) -> AsyncIterator[AbstractConnection]:
    """The caller's connection, or one of our own closed afterwards."""
    if connection is not None:
        yield connection
        return
    own = await broker.connect(settings.amqp)
    try:
        yield own
    finally:
        with suppress(Exception):
            await own.close()
