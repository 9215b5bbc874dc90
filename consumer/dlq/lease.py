"""The dead-letter lease: one operation on the dead queue at a time, across processes.

Reading the dead queue checks its messages out (AMQP has no peek), so a second reader
running at the same time would see only part of it and present that as the whole. Every
dead-letter operation (``summary``, ``list``, ``show``, ``replay``, ``export``,
``import``) therefore first declares the exclusive queue ``<prefix>.dead.lease`` on a
connection of its own. RabbitMQ lets one connection own an exclusive queue; another
connection declaring it gets ``RESOURCE_LOCKED``, which becomes :class:`DeadLettersBusy`
("busy: another operation holds the dead letters"). The broker deletes an exclusive
queue when its connection closes, so a crashed or killed operation releases the lease.

The lease connection is also the one the scan consumes on (see
:mod:`consumer.dlq.scan`): it has heartbeats off, because a scan stops reading its socket
while the operation works through a window (TCP then holds the broker back), and a
heartbeat monitor would take that pause for a dead peer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import aiormq
from aio_pika.abc import AbstractConnection

from consumer import broker
from consumer.broker import Names
from consumer.core.errors import TaskledgerError
from consumer.core.settings import Settings, split_amqp_urls

#: The one line an operation that finds the lease taken reports.
BUSY = "busy: another operation holds the dead letters (try again when it is done)"


class DeadLettersBusy(TaskledgerError):
    """Another dead-letter operation holds the lease (the API answers 409)."""


def lease_queue(names: Names) -> str:
    """Name of the exclusive queue whose owner holds the dead letters."""
    return f"{names.dead}.lease"


def lease_url(url: str) -> str:
    """``url`` (each node of a comma-separated list) with heartbeats off (see the module
    docstring)."""
    return ",".join(_without_heartbeat(one) for one in split_amqp_urls(url))


def _without_heartbeat(url: str) -> str:
    """``url`` with ``heartbeat=0`` in its query, every other byte as it was written (a
    parser would decode ``%2C`` in a password back into a comma)."""
    head, _, query = url.partition("?")
    kept = [p for p in query.split("&") if p and not p.lower().startswith("heartbeat=")]
    return head + "?" + "&".join([*kept, "heartbeat=0"])


@asynccontextmanager
async def dead_letter_lease(settings: Settings) -> AsyncIterator[AbstractConnection]:
    """Hold the lease while the block runs; yields the connection that holds it.

    Raises :class:`DeadLettersBusy` when another operation holds it,
    :class:`~consumer.core.errors.BrokerUnavailable` when RabbitMQ cannot be reached.
    """
    conn = await broker.connect(lease_url(settings.amqp))
    try:
        channel = await conn.channel(publisher_confirms=False)
        raw = await channel.get_underlay_channel()
        try:
            await raw.queue_declare(
                lease_queue(Names(settings.prefix)), exclusive=True, auto_delete=True
            )
        except aiormq.exceptions.ChannelLockedResource:
            raise DeadLettersBusy(BUSY) from None
        with suppress(Exception):
            await channel.close()
        yield conn
    finally:
        with suppress(Exception):
            await conn.close()
