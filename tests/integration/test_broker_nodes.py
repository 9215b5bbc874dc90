"""TASKLEDGER_AMQP_URL as a list of nodes, and quorum queues' initial group size, against
the real broker.

Two TCP proxies in front of the one broker stand for two nodes of a cluster: the client
takes the first that answers, and once its connection to a node is lost the next connect
starts at the next node even if the lost one answers again. (The three-node cluster
itself, with kill -9 of nodes, is tests/chaos/test_cluster.py.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aio_pika
import pytest
from pydantic import SecretStr, ValidationError

from consumer.broker import Names, declare_topology
from consumer.broker.connection import connect
from consumer.broker.topology import GROUP_SIZE, quorum_arguments
from consumer.core.errors import BrokerUnavailable
from consumer.core.settings import Settings, split_amqp_urls
from consumer.dlq.lease import lease_url
from tests.support.proxy import Proxy


@pytest.fixture
async def nodes(amqp_url: str) -> AsyncIterator[tuple[Proxy, Proxy]]:
    parts = urlsplit(amqp_url)
    a = await Proxy(parts.hostname or "127.0.0.1", parts.port or 5672).start()
    b = await Proxy(parts.hostname or "127.0.0.1", parts.port or 5672).start()
    try:
        yield a, b
    finally:
        await a.stop()
        await b.stop()


def node_url(amqp_url: str, port: int) -> str:
    parts = urlsplit(amqp_url)
    return parts._replace(netloc=f"{parts.netloc.rsplit('@', 1)[0]}@127.0.0.1:{port}").geturl()


async def test_connects_to_the_first_node_that_answers_and_moves_on_after_a_loss(
    amqp_url: str, nodes: tuple[Proxy, Proxy]
) -> None:
    a, b = nodes
    # a port nothing listens on comes first: it is skipped
    urls = ",".join([node_url(amqp_url, 1), node_url(amqp_url, a.port), node_url(amqp_url, b.port)])
    first = await connect(urls)
    lost = asyncio.Event()
    first.close_callbacks.add(lambda *_: lost.set())
    try:
        assert first.url.port == a.port
        a.cut()  # node a goes away: the connection is lost ...
        await asyncio.wait_for(lost.wait(), 10)
    finally:
        await first.close()
    a.restore()  # ... and a answers again at once; the next connect moves on all the same
    second = await connect(urls)
    try:
        assert second.url.port == b.port
        channel = await second.channel()
        await channel.close()
    finally:
        await second.close()
    # a connection closed by us is no loss: the next connect stays on b
    third = await connect(urls)
    try:
        assert third.url.port == b.port
    finally:
        await third.close()


async def test_no_node_answers_names_every_node_without_passwords() -> None:
    urls = "amqp://u:s3cr3t-a@127.0.0.1:1/,amqp://u:s3cr3t-b@127.0.0.1:2/"
    with pytest.raises(BrokerUnavailable) as caught:
        await connect(urls)
    message = str(caught.value)
    assert "s3cr3t" not in message
    assert "127.0.0.1:1" in message and "127.0.0.1:2" in message


def test_every_url_of_the_list_is_checked_and_redacted() -> None:
    ok = Settings(amqp_url=SecretStr("amqp://g:p@h1:5681/, amqps://g:p@h2:5682/"))
    assert ok.amqp.count("amqp") == 2
    with pytest.raises(ValidationError) as caught:
        Settings(amqp_url=SecretStr("amqp://g:hunter2@h1:5681/,http://g:hunter2@h2:5682/"))
    assert "scheme must be amqp or amqps" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ValidationError, match="no AMQP URL"):
        Settings(amqp_url=SecretStr(" , "))
    with pytest.raises(ValidationError, match="not an AMQP URL"):
        Settings(amqp_url=SecretStr("amqp://g:p@h1:5681/,amqp://g:p@h2:notaport/"))
    assert lease_url("amqp://g:p@h1:5681/,amqp://g:p@h2:5682/v") == (
        "amqp://g:p@h1:5681/?heartbeat=0,amqp://g:p@h2:5682/v?heartbeat=0"
    )
    # a comma in a password (plain or %2C) stays in its URL, and is never echoed
    assert split_amqp_urls("amqp://u:s3cr,et@h1:5681/, amqp://u:p%2Cq@h2:5682/") == [
        "amqp://u:s3cr,et@h1:5681/", "amqp://u:p%2Cq@h2:5682/",
    ]  # fmt: skip
    assert Settings(amqp_url=SecretStr("amqp://u:s3cr,et@h1:5681/")).amqp.count("amqp") == 1
    assert lease_url("amqp://u:p%2Cq@h1:5681/?heartbeat=30") == (
        "amqp://u:p%2Cq@h1:5681/?heartbeat=0"
    )


async def test_group_size_on_new_and_on_existing_queues(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings
) -> None:
    names = Names(settings.prefix)
    channel = await amqp.channel()
    # the audit queue as an earlier version created it (no initial group size), and the
    # capacity queue created with another size: both are declared again without
    # PRECONDITION_FAILED, keeping what they have; the rest are created with the setting
    legacy = quorum_arguments(names, settings.delivery_limit)
    await channel.declare_queue(names.audit, durable=True, arguments=legacy)
    await channel.declare_queue(names.capacity, durable=True, arguments={**legacy, GROUP_SIZE: 5})
    await declare_topology(channel, settings)
    await declare_topology(channel, settings.model_copy(update={"quorum_group_size": 1}))
    assert not channel.is_closed
    for name, arguments in (
        (names.audit, legacy),
        (names.capacity, {**legacy, GROUP_SIZE: 5}),
        (names.dead, {"x-queue-type": "quorum", GROUP_SIZE: 3}),
    ):
        # exactly these arguments are equivalent (a wrong guess closes the channel)
        probe = await amqp.channel()
        await probe.declare_queue(name, durable=True, arguments=arguments)
        await probe.close()
    # another argument that drifted still fails, naming it
    drifted = settings.model_copy(update={"delivery_limit": settings.delivery_limit + 1})
    bad = await amqp.channel()
    with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed, match="x-delivery-limit"):
        await declare_topology(bad, drifted)
    await channel.close()


async def test_a_node_that_never_answers_is_skipped_by_callers_with_a_short_budget(
    amqp_url: str,
) -> None:
    held: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accepts the TCP connection, never speaks AMQP

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    urls = f"{node_url(amqp_url, port)},{node_url(amqp_url, urlsplit(amqp_url).port or 5672)}"
    try:
        with pytest.raises(TimeoutError):  # like /readyz: a budget shorter than a node's
            await asyncio.wait_for(connect(urls), 0.5)
        connection = await asyncio.wait_for(connect(urls), 2.0)  # starts at the next node
        await connection.close()
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
