"""Removing what tests declare in RabbitMQ, and finding what a session left behind.

Every test prefix comes from :func:`tests.support.services.unique`. The ``prefix``
fixture deletes every queue and exchange of its prefix at teardown
(:func:`delete_prefix`), whoever declared them: the ``topology`` fixture, the API's
lifespan, a ``taskledger run`` subprocess (which declares the retry queues of its *own*
delays, by default :data:`DEFAULT_DELAYS`). At the end of the session :func:`leftovers`
looks for queues and exchanges that still carry one of the session's prefixes.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from contextlib import suppress
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq

from consumer.broker import Names
from consumer.core.settings import Settings

DEFAULT_DELAYS: list[int] = list(Settings.model_fields["retry_delays_ms"].default)
EXTRA_QUEUES = ("scratch",)  # ``<prefix>.<name>`` queues tests declare beside the topology


def delays_of(values: Iterable[Any]) -> set[int]:
    """The retry delays of every :class:`Settings` among ``values``, and the defaults."""
    delays = set(DEFAULT_DELAYS)
    for value in values:
        if isinstance(value, Settings):
            delays.update(value.retry_delays_ms)
    return delays


def names_of(prefix: str, delays: Iterable[int]) -> tuple[list[str], list[str]]:
    """(queues, exchanges) the topology of ``prefix`` may hold with any of ``delays``."""
    names = Names(prefix)
    queues = names.all_queues(sorted(set(delays))) + [f"{prefix}.{q}" for q in EXTRA_QUEUES]
    return queues, names.all_exchanges()


async def delete_names(amqp_url: str, queues: Iterable[str], exchanges: Iterable[str]) -> None:
    """Delete ``queues`` and ``exchanges`` (absent ones are no error)."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue)
        for exchange in exchanges:
            await channel.exchange_delete(exchange)
    finally:
        await connection.close()


async def delete_prefix(amqp_url: str, prefix: str, delays: Iterable[int]) -> None:
    """Delete every queue and exchange of ``prefix`` (the topology with any of ``delays``)."""
    await delete_names(amqp_url, *names_of(prefix, delays))


def _local(amqp_url: str) -> bool:
    return urlsplit(amqp_url).hostname in ("127.0.0.1", "localhost", "::1")


def _vhost(amqp_url: str) -> str:
    return unquote(urlsplit(amqp_url).path[1:]) or "/"


def _listed(amqp_url: str) -> tuple[list[str], list[str]] | None:
    """Every queue and exchange of the broker's vhost per ``rabbitmqctl`` (a local broker
    only), or None when it cannot tell."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None or not _local(amqp_url):
        return None
    out: list[list[str]] = []
    for what in ("list_queues", "list_exchanges"):
        try:
            done = subprocess.run(
                [ctl, "-q", what, "-p", _vhost(amqp_url), "name", "--no-table-headers"],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode != 0:
            return None
        out.append([line.strip() for line in done.stdout.splitlines() if line.strip()])
    return out[0], out[1]


async def _probed(amqp_url: str, prefixes: Iterable[str]) -> tuple[list[str], list[str]]:
    """The topology names of ``prefixes`` that exist, by passive declaration."""
    found: tuple[list[str], list[str]] = ([], [])
    connection = await aio_pika.connect(amqp_url)
    try:
        for prefix in prefixes:
            queues, exchanges = names_of(prefix, delays_of([]) | {50, 200, 1000})
            for kind, names in ((0, queues), (1, exchanges)):
                for name in names:
                    channel = await connection.channel()
                    with suppress(aiormq.exceptions.ChannelNotFoundEntity):
                        if kind == 0:
                            await channel.declare_queue(name, passive=True)
                        else:
                            await channel.declare_exchange(name, passive=True)
                        found[kind].append(name)
                    if not channel.is_closed:
                        await channel.close()
    finally:
        await connection.close()
    return found


async def leftovers(amqp_url: str, prefixes: Iterable[str]) -> tuple[list[str], list[str]]:
    """(queues, exchanges) of the broker whose names start with ``<prefix>.``."""
    wanted = set(prefixes)
    listed = _listed(amqp_url)
    if listed is None:
        return await _probed(amqp_url, sorted(wanted))
    queues, exchanges = listed
    return (
        sorted(q for q in queues if q.split(".", 1)[0] in wanted),
        sorted(e for e in exchanges if e.split(".", 1)[0] in wanted),
    )
