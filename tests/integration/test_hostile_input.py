"""Hostile input through real RabbitMQ: nothing crashes the consumer, nothing is lost.

Hypothesis generates hostile messages for the audit and the capacity queues: random bodies
(binary, text, random JSON, bodies around the 1 MiB limit, JSON nested thousands deep),
random AMQP headers (nested tables, arrays, big values, every field type, spoofed
``x-taskledger-*`` headers, strings that are not UTF-8 on the wire), random properties,
and valid envelopes carrying hostile values (NUL characters that PostgreSQL refuses,
numbers out of every column's range, payloads nested deep, very long strings).

The examples of one run are published together to one real ``taskledger run`` process
(one consumer for all of them keeps the run bounded; every failure names the example).
Then every message must be either in the ledger (by its CloudEvents id) or in the dead
letters with an ``x-taskledger-reason`` (found by the ``x-hostile-id`` header each carries),
the process must still be running and still record a valid event published after them,
stop cleanly on SIGTERM, and an in-process ``--burst`` must return normally.

What PostgreSQL does with ``\\u0000``: jsonb refuses it (``unsupported Unicode escape
sequence``, SQLSTATE 22P05) and text columns refuse a NUL byte, so such an event decodes
but can never be stored: the runner bisects its batch down to it, retries it through the
retry queue, then dead-letters it with ``retries_exhausted``; its batch-mates are stored.

API parameter fuzzing is ``tests/integration/test_api.py::test_no_server_errors``
(schemathesis); it is not repeated here.
"""

from __future__ import annotations

import contextlib
import copy
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg
import orjson
import pamqp.encode
import pytest
from aio_pika.abc import AbstractConnection
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from consumer.broker import H_ATTEMPT, H_REASON, Names
from consumer.core.settings import Settings
from contracts import DeadLetterReason, DecodeError, EventType, decode
from contracts.examples import EXAMPLES
from tests.support.processes import Service
from tests.support.traffic import burst, drain_queue, lifecycle, running, wait_until

TRACE = "x-hostile-id"
EXAMPLES_PER_KIND = 30
#: Headers of the service a producer could forge.
SPOOFED = ("x-taskledger-attempt", "x-taskledger-reason", "x-taskledger-routing-key",
           "x-taskledger-error", "x-taskledger-source-queue", "x-taskledger-replay-count")  # fmt: skip
AUDIT_TYPES = [t for t in EventType if t.value.startswith("task.")]
CAPACITY_TYPES = [EventType.DISPATCH_REQUESTED, EventType.CAPACITY_REPORTED,
                  EventType.CONTROL_PAUSE, EventType.CONTROL_RESUME]  # fmt: skip
MAX_BODY = 1024 * 1024


@pytest.fixture
def settings(db_url: str, amqp_url: str, prefix: str) -> Settings:
    """One short retry delay: events the database refuses reach the dead letters quickly."""
    return Settings(database_url=db_url, amqp_url=amqp_url, prefix=prefix, batch_linger_ms=5,
                    retry_delays_ms=[50], shutdown_timeout_s=10)  # fmt: skip


# --- what a hostile producer sends ---------------------------------------------------


@dataclass(frozen=True)
class NotUtf8:
    """A header string whose bytes are not UTF-8 (other clients can send that)."""

    raw: bytes


@dataclass
class Hostile:
    """One hostile message: where it goes, its body, headers and properties."""

    routing_key: str
    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    trace: str = ""

    def describe(self) -> str:
        """A short description for assertion messages."""
        return (f"{self.trace} key={self.routing_key!r} body[{len(self.body)}]={self.body[:120]!r} "
                f"headers={str(self.headers)[:300]} properties={self.properties}")  # fmt: skip


def _deep(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


not_utf8 = st.binary(min_size=1, max_size=32).filter(lambda b: not _is_utf8(b)).map(NotUtf8)
small_text = st.text(max_size=60)  # at most 240 bytes: fits an AMQP short string
timestamps = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1),
                          timezones=st.just(UTC))  # fmt: skip
header_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    # NaN and infinity are left out: RabbitMQ itself closes the publisher's connection
    # (INTERNAL_ERROR) on them, the message never reaches a queue
    st.floats(width=32, allow_nan=False, allow_infinity=False),  # pamqp packs floats as 32 bits
    st.text(max_size=200),
    st.integers(1_000, 12_000).map(lambda n: "v" * n),  # big values
    st.binary(max_size=64).map(bytearray),
    not_utf8,
    st.decimals(min_value=-(10**5), max_value=10**5, places=2, allow_nan=False,
                allow_infinity=False),
    timestamps,
)  # fmt: skip
header_values = st.recursive(
    header_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner,
                                                                max_size=4),
    max_leaves=12,
)  # fmt: skip
spoofed_values = st.one_of(
    st.integers(-(2**63), 2**63 - 1), st.sampled_from(["abc", "", "-1", "1e9"]), st.none(),
    st.lists(st.integers(-9, 9), max_size=2), st.dictionaries(st.text(max_size=5), st.integers(-9, 9),
                                                         max_size=2),
)  # fmt: skip
headers_strategy = st.dictionaries(
    st.text(max_size=40), header_values, max_size=5
) | st.fixed_dictionaries({}, optional={k: spoofed_values for k in SPOOFED})
properties_strategy = st.fixed_dictionaries(
    {},
    optional={
        "content_type": small_text,
        "content_encoding": small_text,
        "message_id": small_text,
        "correlation_id": small_text,
        "type": small_text,
        "app_id": small_text,
        "reply_to": small_text,
        "timestamp": timestamps,
        "priority": st.integers(0, 9),
        "delivery_mode": st.sampled_from([1, 2]),
    },
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=5),
    max_leaves=30,
)  # fmt: skip
routing_keys = st.one_of(
    st.sampled_from([t.value for t in AUDIT_TYPES + CAPACITY_TYPES]),
    st.text(max_size=80).map(lambda s: f"task.{s}"),
    st.text(max_size=80).map(lambda s: f"capacity.{s}"),
    st.text(max_size=80).map(lambda s: f"control.{s}"),
)
raw_bodies = st.one_of(
    st.binary(max_size=4096),
    st.text(max_size=2000).map(lambda s: s.encode("utf-8", "surrogatepass")),
    json_values.map(orjson.dumps),
    st.tuples(st.integers(1, 5000), st.sampled_from(["array", "object"])).map(lambda t: _deep(*t)),
    # around the 1 MiB limit, both sides of it
    st.integers(MAX_BODY - 2_000, MAX_BODY + 100_000).map(lambda n: b'{"a":"' + b"x" * n + b'"}'),
)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, (*path, i))
    else:
        yield path, value


def _set(target: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value


hostile_text = st.one_of(
    st.text(max_size=50).map(lambda s: s + "\x00"),
    st.just("\x00"),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=200),
    st.sampled_from(["\u2028\u2029", "\ufeff", "\u202e evil", "' OR 1=1 --", "{{7*7}}", "%s%n"]),
    st.integers(10_000, 300_000).map(lambda n: "y" * n),
)
hostile_numbers = st.one_of(
    st.integers(-(2**70), 2**70), st.sampled_from([2**31, 2**63, -(2**31) - 1, 10**30]),
    st.floats(allow_nan=False), st.just(1e308),
)  # fmt: skip
DEEP = "__deep__"


@st.composite
def hostile_envelopes(draw: st.DrawFn) -> tuple[str, bytes]:
    """A well-formed envelope of an inbound type with one hostile value in it."""
    event_type = draw(st.sampled_from(AUDIT_TYPES + CAPACITY_TYPES))
    data = copy.deepcopy(EXAMPLES[event_type])
    envelope: dict[str, Any] = {
        "specversion": "1.0", "id": str(uuid.uuid4()), "source": "agents/infra-01",
        "type": event_type.value, "time": "2026-11-01T12:00:00+00:00", "schemaversion": 1,
        "data": data,
    }  # fmt: skip
    if event_type.requires_subject:
        envelope["subject"] = str(uuid.uuid4())
    leaves = list(_leaves(data))
    how = draw(st.sampled_from(["text", "number", "deep", "source", "extension"]))
    texts = [p for p, v in leaves if isinstance(v, str)]
    numbers = [p for p, v in leaves if isinstance(v, int | float) and not isinstance(v, bool)]
    if how == "text" and texts:
        _set(data, draw(st.sampled_from(texts)), draw(hostile_text))
    elif how == "number" and numbers:
        _set(data, draw(st.sampled_from(numbers)), draw(hostile_numbers))
    elif how == "source":
        envelope["source"] = draw(hostile_text)
    else:  # deep nesting where an object is allowed, else as an extension attribute
        objects = [k for k, v in data.items() if isinstance(v, dict) and k in
                   ("output_full", "resource_state", "work_plan")]  # fmt: skip
        if objects:
            data[objects[0]] = DEEP
        else:
            envelope["ext" + draw(st.text(alphabet="abcxyz", min_size=1, max_size=5))] = DEEP
    body = json.dumps(envelope).encode()  # orjson refuses integers beyond 64 bits
    if DEEP.encode() in body:  # orjson will not write more than 254 levels; splice them in
        depth = draw(st.integers(1, 1200))
        body = body.replace(f'"{DEEP}"'.encode(), _deep(depth, "object"))
    return event_type.value, body


@st.composite
def hostile_messages(draw: st.DrawFn, kind: str) -> Hostile:
    """One message: a random body or a hostile envelope, random headers and properties."""
    if kind == "raw":
        key, body = draw(routing_keys), draw(raw_bodies)
    else:
        key, body = draw(hostile_envelopes())
    return Hostile(key, body, draw(headers_strategy), draw(properties_strategy))


def sample(kind: str, n: int = EXAMPLES_PER_KIND) -> list[Hostile]:
    """``n`` hostile messages generated by hypothesis (repeatable: derandomized)."""
    out: list[Hostile] = []

    @hsettings(max_examples=n, derandomize=True, database=None, deadline=None,
               phases=[Phase.generate], suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(hostile_messages(kind))
    def collect(message: Hostile) -> None:
        out.append(message)

    collect()
    return out


def _refused(text: str) -> bytes:
    """A valid ``task.requested`` whose text PostgreSQL cannot store (a NUL character)."""
    return orjson.dumps({
        "specversion": "1.0", "id": str(uuid.uuid4()), "source": "orchestrator",
        "type": "task.requested", "time": "2026-11-01T12:00:00+00:00", "schemaversion": 1,
        "subject": str(uuid.uuid4()), "data": {"request_text": f"restart {text}\u0000"},
    })  # fmt: skip


def pinned() -> list[Hostile]:
    """Cases worth having every run whatever hypothesis draws."""
    return [
        Hostile("task.requested", _refused("kuma")),  # stored nowhere: retried, dead-lettered
        # a refused event with a forged, huge retry counter: straight to the dead letters
        Hostile("task.requested", _refused("gitea"), {H_ATTEMPT: 2**62}),
        Hostile("task.requested", _refused("dns"), {H_ATTEMPT: "abc"}),  # garbled: attempt 0
        # header strings that are not UTF-8 on the wire, on a dead letter and on a retry
        Hostile("task.step", b"{not json", {"x-note": NotUtf8(b"\xff\xfe")}),
        Hostile("task.requested", _refused("auth"), {"x": {"n": [NotUtf8(b"\xc3\x28")]}}),
        Hostile("task.approved", b"[" * 100_000 + b"]" * 100_000),  # nested 100,000 deep
        Hostile("task.approved", b'{"a":"' + b"x" * (MAX_BODY + 50_000) + b'"}'),
    ]


# --- publishing ------------------------------------------------------------------------


@contextlib.contextmanager
def not_utf8_headers() -> Iterator[None]:
    """Let this process publish :class:`NotUtf8` header values as AMQP long strings.

    Only the publisher (this test process) is changed, for the block; the consumer under
    test runs in its own process and decodes what the broker delivers.
    """
    original = pamqp.encode.encode_table_value

    def encode(value: Any) -> bytes:
        if isinstance(value, NotUtf8):
            return b"S" + len(value.raw).to_bytes(4, "big") + value.raw
        return original(value)

    pamqp.encode.encode_table_value = encode
    try:
        yield
    finally:
        pamqp.encode.encode_table_value = original


async def publish_hostile(
    connection: AbstractConnection, settings: Settings, messages: list[Hostile]
) -> None:
    """Publish each message with its headers and properties (confirmed, one by one)."""
    channel = await connection.channel(publisher_confirms=True)
    try:
        exchange = await channel.get_exchange(Names(settings.prefix).events)
        with not_utf8_headers():
            for message in messages:
                amqp_message = aio_pika.Message(
                    message.body, headers={**message.headers, TRACE: message.trace},
                    **message.properties,
                )  # fmt: skip
                await exchange.publish(amqp_message, routing_key=message.routing_key)
    finally:
        await channel.close()


# --- accounting ------------------------------------------------------------------------


def expected_reason(message: Hostile) -> tuple[str | None, str | None]:
    """(event id, None) if the message decodes, else (None, the dead-letter reason)."""
    try:
        event = decode(message.body, routing_key=message.routing_key)
    except DecodeError as exc:
        return None, exc.reason.value
    return str(event.id), None


@dataclass
class Outcome:
    """Where the hostile messages ended."""

    dead: dict[str, list[aio_pika.abc.AbstractIncomingMessage]] = field(default_factory=dict)
    recorded: set[str] = field(default_factory=set)

    async def refresh(
        self, connection: AbstractConnection, pool: asyncpg.Pool, names: Names
    ) -> None:
        """Take the new dead letters; read the ledger."""
        for message in await drain_queue(connection, names.dead):
            trace = (message.headers or {}).get(TRACE)
            self.dead.setdefault(str(trace), []).append(message)
        rows = await pool.fetch("SELECT event_id FROM event_ledger")
        self.recorded = {str(r[0]) for r in rows}

    def where(self, message: Hostile) -> str | None:
        """ "ledger", "dead", or None if unaccounted (yet)."""
        event_id, _ = expected_reason(message)
        if message.trace in self.dead:
            return "dead"
        if event_id is not None and event_id in self.recorded:
            return "ledger"
        return None


async def test_hostile_messages_end_in_the_ledger_or_the_dead_letters(
    amqp: AbstractConnection, settings: Settings, pool: asyncpg.Pool, topology: Any
) -> None:
    messages = pinned() + sample("raw") + sample("envelope")
    for n, message in enumerate(messages):
        message.trace = f"hostile-{n:03d}"
    env = {"TASKLEDGER_RETRY_DELAYS_MS": "[50]"}
    service = await Service(settings, (), env).start()
    names = Names(settings.prefix)
    outcome = Outcome()
    try:
        await publish_hostile(amqp, settings, messages)

        async def all_accounted() -> bool:
            assert service.proc is not None
            assert service.proc.returncode is None, f"the consumer died:\n{service.log()[-4000:]}"
            await outcome.refresh(amqp, pool, names)
            return all(outcome.where(m) for m in messages)

        try:
            await wait_until(all_accounted, timeout=60, what="every hostile message accounted")
        except AssertionError:
            missing = [m.describe() for m in messages if not outcome.where(m)]
            raise AssertionError(f"unaccounted: {missing}\n{service.log()[-4000:]}") from None

        # still healthy: a valid task published after them is recorded
        after = lifecycle(steps=1)
        await publish_hostile(amqp, settings, [Hostile(k, b, trace="valid") for k, b in after])
        await wait_until(lambda: _recorded(pool, after), what="a valid task after the hostile ones")
        service.terminate()
        assert await service.wait(30) == 0, service.log()[-4000:]
        assert "loop_crash" not in service.log()
    finally:
        await service.close()

    for message in messages:
        event_id, reason = expected_reason(message)
        copies = outcome.dead.get(message.trace, [])
        if copies:
            got = (copies[0].headers or {}).get(H_REASON)
            want = reason or DeadLetterReason.RETRIES_EXHAUSTED.value
            assert got == want, f"reason {got!r}, expected {want!r}: {message.describe()}"
            assert event_id is None or event_id not in outcome.recorded, message.describe()
        else:
            assert event_id in outcome.recorded, message.describe()
    assert any(outcome.where(m) == "ledger" for m in messages), "no hostile value was storable?"
    assert len(outcome.dead.get("valid", [])) == 0

    # and the service still runs in-process, returning normally from a burst
    later = lifecycle(steps=1)
    await publish_hostile(amqp, settings, [Hostile(k, b, trace="valid") for k, b in later])
    await burst(settings, only=None)
    assert await _recorded(pool, later)


async def _recorded(pool: asyncpg.Pool, messages: list[tuple[str, bytes]]) -> bool:
    ids = [uuid.UUID(orjson.loads(body)["id"]) for _, body in messages]
    count = await pool.fetchval(
        "SELECT count(*) FROM event_ledger WHERE event_id = ANY($1::uuid[])", ids
    )
    return int(count) == len(set(ids))


# --- forged retry counters and header strings that are not UTF-8 ----------------------------


async def _dead_letters_of(
    amqp: AbstractConnection, settings: Settings, pool: asyncpg.Pool, messages: list[Hostile]
) -> dict[str, list[aio_pika.abc.AbstractIncomingMessage]]:
    """Publish ``messages``, consume with an in-process service until each is accounted."""
    await publish_hostile(amqp, settings, messages)
    outcome = Outcome()
    async with running(settings, only=None) as service:

        async def accounted() -> bool:
            if service.done():
                service.result()  # the consumer crashed: raise its error here
            await outcome.refresh(amqp, pool, Names(settings.prefix))
            return all(outcome.where(m) for m in messages)

        await wait_until(accounted, timeout=30, what="every message accounted")
    return outcome.dead


async def test_forged_retry_counter_does_not_crash_the_consumer(
    amqp: AbstractConnection, settings: Settings, pool: asyncpg.Pool, topology: Any
) -> None:
    forged = ["abc", -5, "", {"a": 1}, [1], 1.5]
    messages = [Hostile("task.requested", _refused(f"svc{i}"), {H_ATTEMPT: value}, trace=f"f{i}")
                for i, value in enumerate(forged)]  # fmt: skip
    dead = await _dead_letters_of(amqp, settings, pool, messages)
    for message in messages:
        [copy_] = dead[message.trace][:1]
        assert (copy_.headers or {}).get(H_REASON) == DeadLetterReason.RETRIES_EXHAUSTED.value


async def test_header_strings_that_are_not_utf8_do_not_crash_the_consumer(
    amqp: AbstractConnection, settings: Settings, pool: asyncpg.Pool, topology: Any
) -> None:
    values = [NotUtf8(b"\xff\xfe"), NotUtf8(b"\xc3\x28")]

    @hsettings(max_examples=10, derandomize=True, database=None, deadline=None,
               phases=[Phase.generate], suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(not_utf8)
    def collect(value: NotUtf8) -> None:
        values.append(value)

    collect()
    messages = [Hostile("task.step", b"{not json", {"x-note": v}) for v in values]  # dead letter
    messages.append(Hostile("task.requested", _refused("kuma"), {"x-note": values[0]}))  # retry
    messages.append(Hostile("capacity.reported", b"\x00", {"x": {"nested": [values[1]]}}))
    for n, message in enumerate(messages):
        message.trace = f"u{n}"
    dead = await _dead_letters_of(amqp, settings, pool, messages)
    assert all(dead.get(m.trace) for m in messages)
