"""Dead-letter operations against a real RabbitMQ and PostgreSQL.

Dead letters are made both ways the service makes them: the consumer way (a copy
published to ``<prefix>.dlx`` with the ``x-taskledger-*`` headers) and the broker way
(a message rejected without requeue from a work queue, so only ``x-death`` says where it
came from). Queue contents are read back with plain aio-pika, not with the code under test.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import orjson
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection
from pydantic import SecretStr

from consumer import dlq
from consumer.broker import (
    H_ATTEMPT,
    H_ERROR,
    H_EXCHANGE,
    H_FAILED_AT,
    H_REASON,
    H_REPLAY_COUNT,
    H_ROUTING_KEY,
    Names,
    dead_letter_headers,
)
from consumer.core.errors import DatabaseUnavailable, InvalidArgument
from consumer.core.settings import Settings
from contracts import EventType
from tests.support.dead_letters import (
    WAIT_S,
    Seen,
    broker_dead_letter,
    consumer_dead_letter,
    depth,
    drain,
    event_body,
    event_id,
    ids,
    peek,
    seen,
    wait_depth,
)

# --------------------------------------------------------------------------- helpers


async def actions(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT action, actor, params, result FROM operator_actions ORDER BY id"
    )
    return [dict(r) for r in rows]


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def names(settings: Settings) -> Names:
    return Names(settings.prefix)


# --------------------------------------------------------------------------- pure parts


def test_header_codec_round_trips_every_field_type() -> None:
    value = {
        "s": "text",
        "i": -7,
        "big": 2**40,
        "b": True,
        "f": 1.5,
        "nan": float("inf"),
        "none": None,
        "raw": bytearray(b"\xff\x00"),
        "t": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "d": Decimal("1.25"),
        "list": [1, "a", {"nested": [datetime(2026, 1, 1, tzinfo=UTC)]}],
        "$odd": {"$bytes": "not a tag here"},
    }
    encoded = dlq.encode_value(value)
    assert orjson.loads(orjson.dumps(encoded)) == encoded
    assert dlq.decode_value(orjson.loads(orjson.dumps(encoded))) == value
    with pytest.raises(ValueError, match="unknown tagged value"):
        dlq.decode_value({"$what": 1, "x": 2})


def test_origin_prefers_consumer_headers_then_x_death_then_body() -> None:
    names = Names("p")
    body = {"type": "task.step"}
    death = {"exchange": "p.events", "routing-keys": ["task.failed"], "queue": "p.audit"}
    consumer = {H_ROUTING_KEY: "task.started", H_EXCHANGE: "p.events", "x-death": [death]}
    assert dlq.resolve_origin(consumer, body, names) == dlq.Origin(
        "p.events", "task.started", "headers"
    )
    assert dlq.resolve_origin({"x-death": [death]}, body, names) == dlq.Origin(
        "p.events", "task.failed", "x-death"
    )
    via_dlx = {"exchange": "p.dlx", "routing-keys": ["x"], "queue": "p.dead"}
    assert dlq.resolve_origin({"x-death": [via_dlx]}, body, names) == dlq.Origin(
        "p.events", "task.step", "body"
    )
    assert dlq.resolve_origin({}, None, names) is None


def test_filters_time_window_and_patterns() -> None:
    names = Names("p")
    at = datetime(2026, 5, 1, 12, tzinfo=UTC)
    headers = dead_letter_headers(
        None,
        reason="invalid_json",
        error="x",
        source_queue="q",
        routing_key="task.step",
        exchange="p.events",
    )
    headers[H_FAILED_AT] = at.isoformat()
    letter = dlq.inspect(b"{oops", aio_pika_properties(headers), names)
    assert letter.event_type == "task.step"  # from the routing key: the body is not JSON
    assert letter.id == "m1" and letter.has_id(letter.fingerprint)
    assert dlq.Filters(types=("task.*",), reasons=("invalid_*",)).matches(letter)
    assert dlq.Filters(since=at, until=at + timedelta(seconds=1)).matches(letter)
    assert not dlq.Filters(until=at).matches(letter)  # until is exclusive
    assert not dlq.Filters(since=at + timedelta(seconds=1)).matches(letter)
    assert not dlq.Filters(task=str(uuid.uuid4())).matches(letter)


def aio_pika_properties(headers: dict[str, Any]) -> Any:
    from pamqp import commands

    return commands.Basic.Properties(headers=headers, message_id="m1")


# --------------------------------------------------------------------------- summary, list, show


async def test_summary_groups_and_leaves_every_message_in_order(
    settings: Settings, topology: AbstractChannel, amqp: AbstractConnection, names: Names
) -> None:
    published = [
        await consumer_dead_letter(topology, names, event_body(), error="bad step\nmore detail"),
        await consumer_dead_letter(
            topology, names, b"{not json", reason="invalid_json", error="unexpected character"
        ),
        await consumer_dead_letter(topology, names, event_body(), error="bad step\nother"),
        await broker_dead_letter(topology, names, event_body(EventType.TASK_COMPLETED)),
        await consumer_dead_letter(topology, names, event_body(), error="bad step"),
    ]
    await wait_depth(topology, names.dead, lambda n: n == 5, "5 dead letters")

    first = await dlq.summary(settings)
    again = await dlq.summary(settings)

    assert first == again
    assert (first.total, first.scanned) == (5, 5)
    counts = {(g.reason, g.event_type, g.error): g.count for g in first.groups}
    assert counts == {
        ("schema_violation", "task.step", "bad step"): 3,
        ("invalid_json", "task.step", "unexpected character"): 1,
        ("rejected", "task.completed", None): 1,
    }
    top = first.groups[0]
    assert top.count == 3 and top.oldest is not None and top.newest is not None
    assert top.oldest <= top.newest
    assert ids(await peek(amqp, names.dead)) == published

    limited = await dlq.summary(settings, limit=2)
    assert (limited.total, limited.scanned) == (5, 2)
    assert ids(await drain(amqp, names.dead)) == published


async def test_repeated_reads_lose_nothing_the_dead_queue_has_no_delivery_limit(
    settings: Settings, topology: AbstractChannel, amqp: AbstractConnection, names: Names
) -> None:
    published = [await consumer_dead_letter(topology, names, event_body()) for _ in range(2)]
    await wait_depth(topology, names.dead, lambda n: n == 2, "2 dead letters")
    for _ in range(25):  # more than RabbitMQ 4's default quorum delivery limit (20)
        assert (await dlq.summary(settings)).scanned == 2
    channel = await amqp.channel()
    q = await channel.get_queue(names.dead)
    message = await q.get(no_ack=True)
    assert message.headers["x-delivery-count"] == 25
    await channel.close()
    assert ids([seen(message)] + await drain(amqp, names.dead)) == published


async def test_list_filters(
    settings: Settings, topology: AbstractChannel, amqp: AbstractConnection, names: Names
) -> None:
    task = uuid.uuid4()
    day = datetime(2026, 3, 1, tzinfo=UTC)
    a = await consumer_dead_letter(topology, names, event_body(task=task), failed_at=day)
    b = await consumer_dead_letter(
        topology,
        names,
        b"\xff\xfe",
        reason="invalid_json",
        error="not UTF-8",
        failed_at=day + timedelta(hours=1),
    )
    c = await consumer_dead_letter(
        topology,
        names,
        event_body(EventType.CAPACITY_REPORTED),
        routing_key="capacity.reported",
        source_queue=names.capacity,
        failed_at=day + timedelta(hours=2),
    )
    d = await broker_dead_letter(
        topology, names, event_body(EventType.TASK_STARTED, task=task), routing_key="task.started"
    )
    await wait_depth(topology, names.dead, lambda n: n == 4, "4 dead letters")

    async def listed(**kw: Any) -> list[str | None]:
        listing = await dlq.list_dead_letters(settings, dlq.Filters(**kw))
        assert listing.total == 4
        return [item.message_id for item in listing.items]

    assert await listed() == [a, b, c, d]
    assert await listed(reasons=("schema_violation",)) == [a, c]
    assert await listed(reasons=("invalid_*", "rejected")) == [b, d]
    assert await listed(types=("task.*",)) == [a, b, d]  # b: type from its routing key
    assert await listed(types=("capacity.reported",)) == [c]
    assert await listed(since=day + timedelta(minutes=30)) == [b, c, d]  # d: x-death time
    assert await listed(until=day + timedelta(hours=1)) == [a]
    assert await listed(since=day, until=day + timedelta(hours=2)) == [a, b]
    assert await listed(task=str(task).upper()) == [a, d]
    assert await listed(limit=2) == [a, b]
    assert await listed(types=("task.*",), limit=1) == [a]
    assert await listed(reasons=("nothing",)) == []
    assert ids(await peek(amqp, names.dead)) == [a, b, c, d]


async def test_show_finds_by_event_id_message_id_or_fingerprint(
    settings: Settings, topology: AbstractChannel, names: Names
) -> None:
    body = event_body(EventType.TASK_COMPLETED)
    binary = b"\x00\x01 not json"
    m_json = await broker_dead_letter(topology, names, body)
    m_bin = await consumer_dead_letter(topology, names, binary, reason="invalid_json", error="x")
    await wait_depth(topology, names.dead, lambda n: n == 2, "2 dead letters")
    listing = await dlq.list_dead_letters(settings, dlq.Filters())
    assert [i.id for i in listing.items] == [event_id(body), m_bin]

    (detail,) = await dlq.show(settings, event_id(body))
    assert detail.message_id == m_json and detail.body_is_json
    assert detail.body["type"] == "task.completed"
    assert detail.reason == "rejected" and detail.origin_from == "x-death"
    assert (detail.exchange, detail.routing_key) == (names.events, "task.completed")
    assert detail.deaths[0]["queue"] == names.audit
    assert detail.deaths[0]["routing-keys"] == ["task.completed"]
    assert (await dlq.show(settings, m_json))[0].id == event_id(body)

    fp = dlq.fingerprint(binary)
    (raw,) = await dlq.show(settings, fp)
    assert raw.message_id == m_bin and not raw.body_is_json
    assert raw.headers[H_REASON] == "invalid_json" and raw.origin_from == "headers"
    with pytest.raises(dlq.DeadLetterNotFound):
        await dlq.show(settings, "no-such-id")


# --------------------------------------------------------------------------- replay


async def test_dry_run_moves_nothing(
    settings: Settings,
    topology: AbstractChannel,
    amqp: AbstractConnection,
    names: Names,
    pool: asyncpg.Pool,
) -> None:
    published = [await consumer_dead_letter(topology, names, event_body()) for _ in range(3)]
    await wait_depth(topology, names.dead, lambda n: n == 3, "3 dead letters")
    result = await dlq.replay(settings, dlq.Filters(), dry_run=True)
    assert (result.matched, result.replayed, result.failed) == (3, 0, 0)
    assert [(m.exchange, m.routing_key) for m in result.planned] == [
        (names.events, "task.step")
    ] * 3
    assert await depth(topology, names.audit) == 0
    assert ids(await peek(amqp, names.dead)) == published
    assert await actions(pool) == []


async def test_replay_puts_messages_back_where_they_came_from(
    settings: Settings,
    topology: AbstractChannel,
    amqp: AbstractConnection,
    names: Names,
    pool: asyncpg.Pool,
) -> None:
    step = event_body()
    made = await consumer_dead_letter(
        topology,
        names,
        step,
        headers={"x-custom": "kept", H_ATTEMPT: 3},
        correlation_id="corr-1",
        app_id="agent-a1",
    )
    completed = event_body(EventType.TASK_COMPLETED)
    by_broker = await broker_dead_letter(topology, names, completed)
    capacity = event_body(EventType.CAPACITY_REPORTED)
    to_capacity = await consumer_dead_letter(
        topology, names, capacity, routing_key="capacity.reported", source_queue=names.capacity
    )
    await wait_depth(topology, names.dead, lambda n: n == 3, "3 dead letters")
    reports: list[int] = []

    result = await dlq.replay(
        settings, dlq.Filters(), actor="alice", progress=lambda r: reports.append(r.scanned)
    )

    assert (result.status, result.total, result.replayed, result.failed) == ("completed", 3, 3, 0)
    assert reports[-1] == 3
    assert await depth(topology, names.dead) == 0
    audit = await drain(amqp, names.audit)
    assert ids(audit) == [made, by_broker]
    assert ids(await drain(amqp, names.capacity)) == [to_capacity]
    first, second = audit
    assert first.body == step and second.body == completed
    assert first.properties["correlation_id"] == "corr-1"
    assert first.properties["app_id"] == "agent-a1"
    assert first.headers["x-custom"] == "kept"
    assert first.headers[H_REPLAY_COUNT] == 1
    assert first.headers[dlq.H_LAST_REASON] == "schema_violation"
    assert H_REASON not in first.headers and H_ERROR not in first.headers
    assert H_ATTEMPT not in first.headers  # a replay gets the full retry budget again
    assert first.headers[H_ROUTING_KEY] == "task.step"
    assert second.headers[H_ROUTING_KEY] == "task.completed"  # from x-death
    assert second.headers["x-death"][0]["queue"] == names.audit  # history kept
    assert second.headers[dlq.H_LAST_REASON] == "rejected"

    (row,) = await actions(pool)
    assert (row["action"], row["actor"]) == ("dlq.replay", "alice")
    assert row["params"]["dry_run"] is False
    assert row["result"]["replayed"] == 3 and row["result"]["status"] == "completed"
    assert result.action_id is not None


async def test_replay_twice_changes_nothing_the_second_time(
    settings: Settings, topology: AbstractChannel, names: Names
) -> None:
    for _ in range(3):
        await consumer_dead_letter(topology, names, event_body())
    await wait_depth(topology, names.dead, lambda n: n == 3, "3 dead letters")
    assert (await dlq.replay(settings, dlq.Filters())).replayed == 3
    second = await dlq.replay(settings, dlq.Filters())
    assert (second.total, second.scanned, second.replayed) == (0, 0, 0)
    assert await depth(topology, names.audit) == 3


async def test_messages_not_matching_stay_in_order(
    settings: Settings, topology: AbstractChannel, amqp: AbstractConnection, names: Names
) -> None:
    published = []
    for i in range(8):
        reason = "invalid_json" if i % 3 == 0 else "schema_violation"
        published.append(await consumer_dead_letter(topology, names, event_body(), reason=reason))
    await wait_depth(topology, names.dead, lambda n: n == 8, "8 dead letters")
    result = await dlq.replay(settings, dlq.Filters(reasons=("invalid_json",)))
    assert (result.scanned, result.matched, result.replayed, result.skipped) == (8, 3, 3, 5)
    moved = [published[i] for i in (0, 3, 6)]
    assert ids(await drain(amqp, names.audit)) == moved
    assert ids(await drain(amqp, names.dead)) == [m for m in published if m not in moved]


async def test_replay_by_id_limit_and_to_queue(
    settings: Settings, topology: AbstractChannel, amqp: AbstractConnection, names: Names
) -> None:
    bodies = [event_body() for _ in range(4)]
    published = [await consumer_dead_letter(topology, names, b) for b in bodies]
    await wait_depth(topology, names.dead, lambda n: n == 4, "4 dead letters")
    scratch = f"{settings.prefix}.scratch"
    await topology.declare_queue(scratch, durable=True)
    try:
        with pytest.raises(InvalidArgument, match="does not exist"):
            await dlq.replay(settings, dlq.Filters(), to_queue=f"{settings.prefix}.nope")
        by_id = dlq.Filters(ids=(event_id(bodies[2]), published[3]))
        result = await dlq.replay(settings, by_id, to_queue=scratch)
        assert (result.matched, result.replayed) == (2, 2)
        assert ids(await drain(amqp, scratch)) == published[2:]
        limited = await dlq.replay(settings, dlq.Filters(limit=1))
        assert (limited.scanned, limited.replayed) == (1, 1)
        assert ids(await drain(amqp, names.audit)) == published[:1]
        assert ids(await peek(amqp, names.dead)) == published[1:2]
    finally:
        await topology.queue_delete(scratch)


async def test_unroutable_or_unknown_destination_fails_and_stays(
    settings: Settings, topology: AbstractChannel, amqp: AbstractConnection, names: Names
) -> None:
    good = await consumer_dead_letter(topology, names, event_body())
    nowhere = await consumer_dead_letter(topology, names, event_body(), routing_key="no.binding")
    dlx = await topology.get_exchange(names.dlx)
    gone_headers = {
        H_REASON: "retries_exhausted",
        H_ROUTING_KEY: "task.step",
        H_EXCHANGE: f"{settings.prefix}.gone",
    }
    await dlx.publish(aio_pika.Message(event_body(), headers=gone_headers, message_id="gone"), "")
    await dlx.publish(aio_pika.Message(b"opaque", message_id="no-origin"), "")
    await wait_depth(topology, names.dead, lambda n: n == 4, "4 dead letters")

    result = await dlq.replay(settings, dlq.Filters())

    # "no.binding" is taken by the events exchange's alternate exchange: it is published
    # (counted as replayed) and lands in the dead letters again, now as `unroutable`
    assert (result.matched, result.replayed, result.failed) == (4, 2, 2)
    assert any("does not exist" in e for e in result.errors)
    assert any("origin is unknown" in e for e in result.errors)
    assert ids(await drain(amqp, names.audit)) == [good]
    assert sorted(ids(await peek(amqp, names.dead))) == sorted([nowhere, "gone", "no-origin"])
    summary = await dlq.summary(settings)
    assert [(g.reason, g.count) for g in summary.groups if g.reason == "unroutable"] == [
        ("unroutable", 1)
    ]


# --------------------------------------------------------------------------- export, import


async def test_export_then_import_round_trips_byte_for_byte(
    settings: Settings,
    topology: AbstractChannel,
    amqp: AbstractConnection,
    names: Names,
    pool: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    odd_headers = {
        "int": 42,
        "neg": -70000,
        "flag": True,
        "none": None,
        "raw": bytearray(b"\xff\x00"),
        "when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "price": Decimal("12.50"),
        "list": ["a", 1, [2]],
        "table": {"$weird": "key", "n": {"deep": "x"}},
    }
    await consumer_dead_letter(
        topology,
        names,
        event_body(),
        headers=odd_headers,
        correlation_id="c",
        reply_to="r",
        app_id="app",
        type="t",
        priority=3,
        content_encoding="identity",
        user_id="guest",
        timestamp=datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC),
    )
    await consumer_dead_letter(
        topology,
        names,
        b"\xff\xfe\x00 binary",
        reason="invalid_json",
        content_type="application/octet-stream",
    )
    await broker_dead_letter(topology, names, event_body(EventType.TASK_FAILED), "task.failed")
    await wait_depth(topology, names.dead, lambda n: n == 3, "3 dead letters")
    before = await peek(amqp, names.dead)

    keep = tmp_path / "keep.jsonl"
    kept = await dlq.export(settings, dlq.Filters(), keep)
    assert (kept.exported, kept.purged) == (3, 0)
    assert await peek(amqp, names.dead) == before
    with pytest.raises(InvalidArgument, match="already exists"):
        await dlq.export(settings, dlq.Filters(), keep)

    out = tmp_path / "dead.jsonl"
    exported = await dlq.export(settings, dlq.Filters(), out, purge=True, actor="bob")
    assert (exported.exported, exported.purged, exported.status) == (3, 3, "completed")
    assert await depth(topology, names.dead) == 0
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [base64.b64decode(line["body_b64"]) for line in lines] == [m.body for m in before]
    assert lines[0]["preview"]["type"] == "task.step"
    assert files_in(tmp_path) == ["dead.jsonl", "keep.jsonl"]  # no partial file left

    imported = await dlq.import_file(settings, out, actor="bob")
    assert (imported.read, imported.imported) == (3, 3)
    await wait_depth(topology, names.dead, lambda n: n == 3, "3 imported")
    assert await peek(amqp, names.dead) == before

    rows = await actions(pool)
    assert [r["action"] for r in rows] == ["dlq.export", "dlq.export", "dlq.purge", "dlq.import"]
    assert [r["actor"] for r in rows[1:]] == ["bob", "bob", "bob"]
    assert rows[2]["result"]["purged"] == 3 and rows[2]["params"]["purge"] is True
    assert rows[3]["result"]["imported"] == 3


async def test_import_rejects_a_bad_file_before_publishing(
    settings: Settings, topology: AbstractChannel, names: Names, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(
        b'{"format": "taskledger.dlq/1", "body_b64": "AA==", "headers": {}}\nnot json\n'
    )
    with pytest.raises(InvalidArgument, match="line 2"):
        await dlq.import_file(settings, bad)
    with pytest.raises(InvalidArgument, match="cannot read"):
        await dlq.import_file(settings, tmp_path / "missing.jsonl")
    assert await depth(topology, names.dead) == 0


# --------------------------------------------------------------------------- interruptions


async def fill(topology: AbstractChannel, names: Names, n: int) -> list[str]:
    published = [await consumer_dead_letter(topology, names, event_body()) for _ in range(n)]
    await wait_depth(topology, names.dead, lambda d: d == n, f"{n} dead letters")
    return published


def assert_each_in_exactly_one(published: list[str], dead: list[Seen], target: list[Seen]) -> None:
    placed = ids(dead) + ids(target)
    assert sorted(placed, key=str) == sorted(published, key=str), "lost or doubled messages"


async def test_cancelled_replay_loses_nothing_and_running_again_continues(
    settings: Settings,
    topology: AbstractChannel,
    amqp: AbstractConnection,
    names: Names,
    pool: asyncpg.Pool,
) -> None:
    published = await fill(topology, names, 20)
    last: list[dlq.ReplayResult] = []
    task = asyncio.create_task(
        dlq.replay(settings, dlq.Filters(), rate=50, progress=lambda r: last.append(r.model_copy()))
    )
    await wait_depth(topology, names.audit, lambda n: n >= 5, "5 replayed")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    final = last[-1]
    assert final.status == "interrupted" and 5 <= final.replayed < 20
    assert final.in_doubt == 0
    dead, audit = await peek(amqp, names.dead), await peek(amqp, names.audit)
    assert_each_in_exactly_one(published, dead, audit)
    assert len(audit) == final.replayed
    assert ids(dead) == published[final.replayed :]  # the rest, still in order
    (row,) = await actions(pool)
    assert row["result"]["status"] == "interrupted"
    assert row["result"]["replayed"] == final.replayed

    again = await dlq.replay(settings, dlq.Filters())
    assert again.replayed == 20 - final.replayed
    assert ids(await drain(amqp, names.audit)) == published


async def test_lost_connection_mid_replay_loses_nothing(
    settings: Settings,
    topology: AbstractChannel,
    amqp: AbstractConnection,
    names: Names,
    amqp_url: str,
) -> None:
    published = await fill(topology, names, 20)
    connection = await aio_pika.connect(amqp_url)
    task = asyncio.create_task(dlq.replay(settings, dlq.Filters(), rate=50, connection=connection))
    await wait_depth(topology, names.audit, lambda n: n >= 5, "5 replayed")
    await connection.close()
    result = await asyncio.wait_for(task, WAIT_S)

    assert result.status == "interrupted" and result.errors, result
    dead = await peek(amqp, names.dead)
    audit = await peek(amqp, names.audit)
    placed = ids(dead) + ids(audit)
    assert set(placed) == set(published), "a message was lost"
    assert len(placed) - len(published) <= result.in_doubt
    assert result.replayed + result.failed + result.in_doubt <= result.matched
    assert result.replayed <= len(audit) <= result.replayed + result.in_doubt
    still = set(ids(dead))
    assert ids(dead) == [m for m in published if m in still], "the rest lost their order"

    again = await dlq.replay(settings, dlq.Filters())
    assert again.status == "completed" and await depth(topology, names.dead) == 0
    assert set(ids(await drain(amqp, names.audit))) == set(published)


async def test_replay_refuses_to_start_when_it_cannot_record(
    settings: Settings, topology: AbstractChannel, amqp: AbstractConnection, names: Names
) -> None:
    published = await fill(topology, names, 2)
    nowhere = settings.model_copy(
        update={"database_url": SecretStr("postgresql://postgres@127.0.0.1:1/none")}
    )
    with pytest.raises(DatabaseUnavailable, match="cannot reach PostgreSQL to record"):
        await dlq.replay(nowhere, dlq.Filters())
    assert (await dlq.replay(nowhere, dlq.Filters(), dry_run=True)).matched == 2
    assert ids(await peek(amqp, names.dead)) == published
