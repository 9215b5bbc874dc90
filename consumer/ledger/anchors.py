"""Anchors: the ledger chain's head, recorded outside the database.

A superuser can delete the newest links with their rows, or rewrite rows and recompute
the whole chain; the chain alone cannot show it. What shows it is a head hash kept
somewhere the database's owner cannot rewrite: the audit service logs the head every
``TASKLEDGER_ANCHOR_INTERVAL_S`` seconds as ``action=chain_head`` (with ``hash``,
``link`` and ``seq``), and ``taskledger verify --expect-head HEX`` exits 1 unless that
hash is still a link of the chain (README, "Operations"). With
``TASKLEDGER_ANCHOR_PUBLISH`` each head is also published (confirmed, mandatory) to the
``<prefix>.anchors`` fanout exchange, whose quorum queue keeps them for a collector.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import aio_pika
import asyncpg
import orjson
from aio_pika.abc import AbstractChannel, AbstractConnection

from consumer import broker
from consumer.broker import Names
from consumer.core.errors import DatabaseUnavailable
from consumer.core.retry import Backoff, pause
from consumer.core.settings import Settings, redact_text
from consumer.runtime.handler import ServiceContext
from consumer.store.db import q, translate_errors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Head:
    """The newest link of the chain: its number, hash, and the highest seq it seals."""

    link: int
    hash: str
    seq: int | None


async def chain_head(conn: asyncpg.Connection | asyncpg.Pool) -> Head | None:
    """The chain's newest link, or None while the chain is empty."""
    with translate_errors():
        row = await conn.fetchrow(q("chain_head"))
    if row is None:
        return None
    return Head(link=row["link"], hash=bytes(row["hash"]).hex(), seq=row["seq"])


def log_head(head: Head) -> None:
    """Write the ``action=chain_head`` line an operator keeps as an anchor."""
    log.info(
        "ledger chain head",
        extra={"action": "chain_head", "hash": head.hash, "link": head.link, "seq": head.seq},
    )


class AnchorPublisher:
    """Publishes heads to ``<prefix>.anchors`` on its own confirm channel (reconnects)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None

    async def publish(self, head: Head) -> None:
        """Publish ``head`` and wait for the broker's confirm; raises on any failure."""
        if self._channel is None or self._channel.is_closed:
            await self.close()
            self._connection = await broker.connect(self.settings.amqp)
            self._channel = await broker.confirm_channel(self._connection)
        exchange = await self._channel.get_exchange(Names(self.settings.prefix).anchors)
        message = aio_pika.Message(
            orjson.dumps(asdict(head)),
            content_type="application/json",
            type="taskledger.chain_head",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await broker.publish_confirmed(exchange, message, routing_key="")

    async def close(self) -> None:
        """Close the publisher's connection (it reconnects on the next publish)."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            try:
                await connection.close()
            except Exception:  # already broken: nothing more to release
                log.debug("closing the anchor connection failed", exc_info=True)


async def _record(head: Head, publisher: AnchorPublisher | None) -> None:
    log_head(head)
    if publisher is None:
        return
    try:
        await publisher.publish(head)
    except Exception as exc:  # the log line is the anchor; the message is a copy
        await publisher.close()
        log.warning("cannot publish the chain head", extra={
            "action": "chain_head_publish_failed",
            "error": redact_text(f"{type(exc).__name__}: {exc}")})  # fmt: skip


async def anchor_loop(ctx: ServiceContext) -> None:
    """Log the chain's head every ``anchor_interval_s`` until the service stops.

    Logs once more when stopping (so a ``--burst`` run ends with its head). Survives a
    database outage: logs a warning and tries again with back-off.
    """
    interval = ctx.settings.anchor_interval_s
    if interval <= 0:
        return
    publisher = AnchorPublisher(ctx.settings) if ctx.settings.anchor_publish else None
    try:
        await _loop(ctx, interval, publisher)
    finally:
        if publisher is not None:
            await publisher.close()


async def _loop(ctx: ServiceContext, interval: float, publisher: AnchorPublisher | None) -> None:
    backoff = Backoff(first=1.0, cap=max(interval, 1.0))
    while True:
        try:
            head = await chain_head(ctx.pool)
        except DatabaseUnavailable as exc:
            log.warning("cannot read the chain head", extra={"action": "chain_head_failed",
                                                            "error": str(exc)})  # fmt: skip
            if ctx.stopping.is_set():
                return
            await pause(backoff.next(), ctx.stopping)
            continue
        backoff.reset()
        if head is not None:
            await _record(head, publisher)
        if ctx.stopping.is_set():
            return
        await pause(interval, ctx.stopping)
