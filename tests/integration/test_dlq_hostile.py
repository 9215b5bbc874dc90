"""The dead-letter tools under hostile input and concurrent use, against real services.

* Any header value of any type or depth and any body (binary, 1 MiB) is summarised,
  listed, shown, exported, imported byte for byte and replayed: a property test publishes
  generated messages into a real dead queue and runs every operation on each.
* Two operations at once: the second is told ``busy``, never given part of the queue.
* A replay re-run after an interruption skips what the interrupted run sent and got back.
* ``summary`` groups one cause once whatever the offsets in its error text; ``list`` gives
  every message its own key, which ``show`` takes.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import orjson
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from consumer import dlq
from consumer.broker import H_REPLAY_COUNT, Names
from consumer.core.settings import Settings
from tests.support.dead_letters import (
    consumer_dead_letter,
    depth,
    drain,
    event_body,
    ids,
    peek,
    wait_depth,
)

# --------------------------------------------------------------------------- strategies

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    # Not ±inf or NaN: RabbitMQ 3.10 closes (INTERNAL_ERROR) the connection it redelivers
    # such a header on (it re-encodes headers to add x-delivery-count), so no client can
    # read that message a second time. Checked by hand; nothing the tools can fix.
    st.floats(width=32, allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.binary(max_size=40).map(bytearray),
    st.builds(
        lambda m, s: Decimal(m).scaleb(-s),
        st.integers(min_value=-(2**31), max_value=2**31 - 1),
        st.integers(min_value=0, max_value=9),
    ),
    st.integers(min_value=0, max_value=4_102_444_800).map(lambda s: datetime.fromtimestamp(s, UTC)),
)
_names = st.text(min_size=1, max_size=24).filter(lambda k: len(k.encode()) <= 255)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_names, inner, max_size=4),
    max_leaves=12,
)
_taskledger = st.sampled_from(
    [
        "x-taskledger-replay-count",
        "x-taskledger-failed-at",
        "x-taskledger-reason",
        "x-taskledger-error",
        "x-taskledger-routing-key",
        "x-taskledger-exchange",
        "x-taskledger-source-queue",
        "x-taskledger-replay-run",
        "x-death",
    ]
)
_headers = st.dictionaries(_taskledger | _names, _values, max_size=6)
_bodies = st.binary(max_size=2048) | st.builds(event_body)


def nested(levels: int) -> dict[str, Any]:
    """A header table ``levels`` deep: past the client's limit it arrives as raw bytes."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels):
        value = {"n": value}
    return value


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def names(settings: Settings) -> Names:
    return Names(settings.prefix)


async def publish_raw(
    channel: AbstractChannel, names: Names, body: bytes, headers: dict[str, Any]
) -> str:
    """Put a message into the dead queue through the dead-letter exchange, as it is."""
    message_id = uuid.uuid4().hex
    dlx = await channel.get_exchange(names.dlx)
    await dlx.publish(
        aio_pika.Message(body, headers=headers, message_id=message_id), routing_key="any"
    )
    return message_id


# --------------------------------------------------------------------------- property


@hypothesis_settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=_bodies, headers=_headers)
@example(body=b"\x00\xff" * (512 * 1024), headers={H_REPLAY_COUNT: "\u00b2"})
@example(body=b"{not json", headers={"deep": nested(80), H_REPLAY_COUNT: bytearray(b"\xff")})
async def test_any_header_and_body_is_shown_grouped_exported_and_replayed(
    settings: Settings,
    topology: AbstractChannel,
    amqp_url: str,
    names: Names,
    tmp_path: Path,
    body: bytes,
    headers: dict[str, Any],
) -> None:
    # A connection per example: one example's failure must not take the next ones down.
    amqp = await aio_pika.connect(amqp_url)
    try:
        channel = await amqp.channel()
        await every_operation(settings, channel, amqp, names, tmp_path, body, headers)
    finally:
        await amqp.close()


async def every_operation(
    settings: Settings,
    channel: AbstractChannel,
    amqp: AbstractConnection,
    names: Names,
    tmp_path: Path,
    body: bytes,
    headers: dict[str, Any],
) -> None:
    published = await publish_raw(channel, names, body, headers)
    await wait_depth(channel, names.dead, lambda n: n == 1, "the message")
    before = await peek(amqp, names.dead)

    summary = await dlq.summary(settings)
    assert (summary.total, summary.scanned, sum(g.count for g in summary.groups)) == (1, 1, 1)
    summary.model_dump_json()
    (item,) = (await dlq.list_dead_letters(settings, dlq.Filters())).items
    assert item.message_id == published and item.size == len(body)
    (detail,) = await dlq.show(settings, item.key)
    orjson.loads(detail.model_dump_json())

    out = tmp_path / f"{uuid.uuid4().hex}.jsonl"
    exported = await dlq.export(settings, dlq.Filters(), out, purge=True)
    assert (exported.exported, exported.purged, exported.errors) == (1, 1, [])
    assert await depth(channel, names.dead) == 0
    imported = await dlq.import_file(settings, out)
    assert (imported.imported, imported.errors) == (1, [])
    await wait_depth(channel, names.dead, lambda n: n == 1, "the imported message")
    assert await peek(amqp, names.dead) == before  # byte for byte

    target = await channel.declare_queue(f"{names.dead}.target-{uuid.uuid4().hex[:8]}")
    try:
        result = await dlq.replay(settings, dlq.Filters(), to_queue=target.name)
        assert (result.replayed, result.failed, result.in_doubt) == (1, 0, 0), result.errors
        await wait_depth(channel, target.name, lambda n: n == 1, "the replayed message")
        (moved,) = await drain(amqp, target.name)
        assert moved.body == body
        assert moved.headers[dlq.H_REPLAY_RUN] == result.run_id
    finally:
        await target.delete(if_unused=False, if_empty=False)


# --------------------------------------------------------------------------- busy


async def test_a_second_operation_is_told_busy_never_given_part(
    settings: Settings, topology: AbstractChannel, amqp: AbstractConnection, names: Names
) -> None:
    published = [await consumer_dead_letter(topology, names, event_body()) for _ in range(5)]
    await wait_depth(topology, names.dead, lambda n: n == 5, "5 dead letters")

    async with dlq.dead_letter_lease(settings):
        with pytest.raises(dlq.DeadLettersBusy, match=r"^busy: another operation holds"):
            await dlq.summary(settings)
        with pytest.raises(dlq.DeadLettersBusy):
            await dlq.replay(settings, dlq.Filters(), dry_run=True)
        with pytest.raises(dlq.DeadLettersBusy):
            await dlq.list_dead_letters(settings, dlq.Filters())

    outcomes = await asyncio.gather(
        *(dlq.summary(settings) for _ in range(6)), return_exceptions=True
    )
    answers = [o for o in outcomes if isinstance(o, dlq.DlqSummary)]
    assert answers, outcomes
    assert all(isinstance(o, dlq.DlqSummary | dlq.DeadLettersBusy) for o in outcomes), outcomes
    assert all((a.total, a.scanned) == (5, 5) for a in answers)  # whole, or busy
    assert ids(await peek(amqp, names.dead)) == published


# --------------------------------------------------------------------------- re-run


async def test_a_rerun_after_an_interruption_does_not_replay_what_came_back(
    settings: Settings,
    topology: AbstractChannel,
    amqp: AbstractConnection,
    names: Names,
    pool: asyncpg.Pool,
) -> None:
    published = [await consumer_dead_letter(topology, names, event_body()) for _ in range(20)]
    await wait_depth(topology, names.dead, lambda n: n == 20, "20 dead letters")
    # Replaying into the dead queue itself: every replayed message "fails again" at once.
    some_moved = asyncio.Event()

    def progress(result: dlq.ReplayResult) -> None:
        if result.replayed >= 3:
            some_moved.set()

    task = asyncio.create_task(
        dlq.replay(settings, dlq.Filters(), rate=50, to_queue=names.dead, progress=progress)
    )
    await asyncio.wait_for(some_moved.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    row = await pool.fetchrow("SELECT result FROM operator_actions ORDER BY id DESC LIMIT 1")
    first = row["result"] if isinstance(row["result"], dict) else orjson.loads(row["result"])
    moved = first["replayed"]
    assert first["status"] == "interrupted" and 1 <= moved < 20

    again = await dlq.replay(settings, dlq.Filters(), to_queue=names.dead)
    assert again.skipped_runs == [first["run_id"]]
    assert (again.bounced, again.replayed) == (moved, 20 - moved)
    dead = await peek(amqp, names.dead)
    assert sorted(ids(dead), key=str) == sorted(published, key=str)
    counts = sorted(d.headers[H_REPLAY_COUNT] for d in dead)
    assert counts == [1] * 20  # nobody was replayed twice

    third = await dlq.replay(settings, dlq.Filters(), dry_run=True)
    assert third.skipped_runs == [] and third.matched == 20  # the last run completed


# --------------------------------------------------------------------------- grouping, keys


async def test_summary_groups_by_error_pattern_and_list_keys_are_unique(
    settings: Settings, topology: AbstractChannel, amqp: AbstractConnection, names: Names
) -> None:
    for column in (3, 17, 120):
        await consumer_dead_letter(
            topology,
            names,
            b"{oops" + b" " * column,
            reason="invalid_json",
            error=f"unexpected character: line 1 column {column} (char {column - 1})",
        )
    body = event_body()
    twins = [await consumer_dead_letter(topology, names, body) for _ in range(2)]
    await wait_depth(topology, names.dead, lambda n: n == 5, "5 dead letters")

    summary = await dlq.summary(settings)
    invalid = [g for g in summary.groups if g.reason == "invalid_json"]
    assert [(g.error, g.count) for g in invalid] == [
        ("unexpected character: line N column N (char N)", 3)
    ]
    assert invalid[0].example == "unexpected character: line 1 column 3 (char 2)"

    listing = await dlq.list_dead_letters(settings, dlq.Filters())
    keys = [i.key for i in listing.items]
    assert len(set(keys)) == 5
    same_id = [i for i in listing.items if i.message_id in twins]
    assert len({i.id for i in same_id}) == 1  # one event id, two messages, two keys
    (shown,) = await dlq.show(settings, same_id[1].key)
    assert shown.message_id == twins[1]

    await drain(amqp, names.dead)
    empty = await dlq.summary(settings)
    assert (empty.total, empty.groups) == (0, [])


# --------------------------------------------------------------------------- holders


async def test_a_pass_through_several_holder_channels_keeps_the_order(
    settings: Settings, topology: AbstractChannel, amqp: AbstractConnection, names: Names
) -> None:
    """Deeper than one prefetch (65,535): stretches held by channels opened one after the
    other and closed in order. Scaled down: 7 messages per channel, 20 messages. (A pass
    that acks before its last holder is full frees credit mid-queue, which can reorder
    what stays: the documented limit of queues deeper than 65,535.)"""
    published = [await consumer_dead_letter(topology, names, event_body()) for _ in range(20)]
    await wait_depth(topology, names.dead, lambda n: n == 20, "20 dead letters")

    async def one_pass(limit: int | None = None) -> list[str | None]:
        async with (
            dlq.dead_letter_lease(settings) as conn,
            dlq.DeadQueueScan(conn, names, max_messages=limit, per_channel=7, window=3) as scan,
        ):
            return [letter.properties.message_id async for letter in scan.messages()]

    for _ in range(3):
        assert await one_pass() == published
    assert await one_pass(limit=9) == published[:9]
    assert ids(await drain(amqp, names.dead)) == published
