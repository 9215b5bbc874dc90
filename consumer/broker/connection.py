"""Connecting to RabbitMQ (one node or a cluster) and publishing with confirms.

``TASKLEDGER_AMQP_URL`` names one broker or the nodes of a cluster, comma-separated.
:func:`connect` tries them in turn and returns the first connection that opens. The first
connection of a process goes to the first node that answers; when a connection is lost
(not closed by us), the next :func:`connect` on the same list starts at the node after
the one that went, so a reconnecting service moves on to a surviving node at once instead
of waiting on the one that died.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractQueue

from consumer.core.errors import BrokerUnavailable, MessageUnroutable
from consumer.core.retry import Backoff, pause
from consumer.core.settings import redact_text, split_amqp_urls

#: Connect timeout with one URL; with several, each node gets :data:`NODE_TIMEOUT_S`, so
#: a node that does not answer (a host gone, packets dropped) costs little.
SINGLE_TIMEOUT_S = 10.0
NODE_TIMEOUT_S = 3.0

#: Where the next connect on a URL list starts (index into the list).
_start_at: dict[str, int] = {}

_CONNECT_ERRORS = (OSError, ConnectionError, TimeoutError, aio_pika.exceptions.AMQPError)


def node_label(url: str) -> str:
    """``host:port`` of one URL (no user, no password): what logs and errors name."""
    try:
        parts = urlsplit(url)
        return f"{parts.hostname}:{parts.port or (5671 if parts.scheme == 'amqps' else 5672)}"
    except ValueError:
        return "?"


def _lost(exc: BaseException | None) -> bool:
    """True when a connection closed because it was lost, not by our own ``close()``."""
    if exc is None or isinstance(exc, asyncio.CancelledError):
        return False
    # our close() ends the connection with a bare ConnectionClosed; the broker's own close
    # (CONNECTION_FORCED on a node's shutdown) carries its reply code
    return not (isinstance(exc, aiormq.exceptions.ConnectionClosed) and not exc.args)


def _follow(connection: AbstractConnection, key: str, index: int, count: int) -> None:
    """Start the next connect on ``key`` after node ``index`` once this connection is lost."""

    def closed(_: object, exc: BaseException | None) -> None:
        if _lost(exc) and _start_at.get(key, 0) == index:
            _start_at[key] = (index + 1) % count

    connection.close_callbacks.add(closed)


def _skip(key: str, index: int, count: int) -> None:
    """Start the next connect on ``key`` after node ``index``, which failed to answer (a
    caller whose budget is shorter than the node timeout still reaches the others)."""
    if _start_at.get(key, 0) % count == index:
        _start_at[key] = (index + 1) % count


async def _connect_once(url: str) -> AbstractConnection:
    """One pass over the nodes of ``url``; raises the errors of every node tried."""
    urls = split_amqp_urls(url) or [url]
    if len(urls) == 1:
        return await aio_pika.connect(urls[0], timeout=SINGLE_TIMEOUT_S)
    first = _start_at.get(url, 0) % len(urls)
    failures: list[str] = []
    for step in range(len(urls)):
        index = (first + step) % len(urls)
        try:
            connection = await aio_pika.connect(urls[index], timeout=NODE_TIMEOUT_S)
        except _CONNECT_ERRORS as exc:
            _skip(url, index, len(urls))
            failures.append(f"{node_label(urls[index])}: {str(exc) or type(exc).__name__}")
            continue
        except asyncio.CancelledError:  # a caller's shorter budget ran out on this node
            _skip(url, index, len(urls))
            raise
        _start_at[url] = index
        _follow(connection, url, index, len(urls))
        return connection
    raise ConnectionError("no node answers (" + "; ".join(failures) + ")")


async def connect(url: str, *, attempts: int = 1, backoff_s: float = 0.5) -> AbstractConnection:
    """Open a (non-robust) connection to the broker or the first node of the cluster that
    answers (``url`` may list several, comma-separated; see the module docstring).

    Raises :class:`BrokerUnavailable` with a redacted message. The service handles
    reconnection itself (re-declare, consume again), which avoids the known traps of
    robust connections that do not restore consumers.
    """
    last: BaseException | None = None
    backoff = Backoff(first=backoff_s, cap=5.0)
    for attempt in range(attempts):
        try:
            return await _connect_once(url)
        except _CONNECT_ERRORS as exc:
            last = exc
            if attempt + 1 < attempts:
                await pause(backoff.next())
    raise BrokerUnavailable(
        f"cannot reach RabbitMQ: {redact_text(str(last)) or type(last).__name__}"
    )


async def confirm_channel(connection: AbstractConnection) -> AbstractChannel:
    """A channel for :func:`publish_confirmed`: publisher confirms on, and a message the
    broker returns as unroutable fails its publish instead of vanishing."""
    return await connection.channel(publisher_confirms=True, on_return_raises=True)


async def publish_confirmed(
    exchange: AbstractExchange, message: aio_pika.Message, routing_key: str, *, timeout: float = 30
) -> None:
    """Publish ``mandatory`` and wait for the broker's confirm.

    Raises :class:`MessageUnroutable` when no queue took the message (the channel must
    come from :func:`confirm_channel`), and the client's errors when it nacks or the
    connection goes. Every publish of taskledger goes through here: nothing it sends
    can be confirmed and lost.
    """
    try:
        await exchange.publish(message, routing_key=routing_key, mandatory=True, timeout=timeout)
    except aiormq.exceptions.PublishError as exc:
        raise MessageUnroutable(
            f"no queue is bound to take routing key {routing_key!r} on exchange {exchange.name!r}"
        ) from exc


async def queue_depth(channel: AbstractChannel, name: str) -> int:
    """Messages ready in queue ``name`` (passive declare; the queue must exist)."""
    queue: AbstractQueue = await channel.declare_queue(name, passive=True)
    return int(queue.declaration_result.message_count or 0)
