"""Chaos scenarios: known traffic, injected faults, and an exact account afterwards.

Every scenario of ``tests/chaos/test_chaos.py`` takes the same path:

1. :func:`build_traffic` builds a known set of messages (``consumer.simulate`` traffic
   from a seed: lifecycles, dispatch requests, capacity reports, duplicates, poison);
   each message gets its own AMQP ``message_id`` so a dead letter can be traced back to
   the exact message published;
2. the scenario starts real ``taskledger run`` processes (:meth:`Chaos.start`), publishes
   the traffic spread over its fault window (:meth:`Chaos.publish`) and injects its
   fault: kill -9, a TCP proxy cutting or slowing the connections, a crash hook;
3. :meth:`Chaos.conclude` waits until the system has recovered *by itself* (every valid
   event in the ledger, every invalid message dead-lettered, the outbox drained; the time
   that takes after the last fault is the "time to recover"), stops the processes with
   SIGTERM (each must exit 0), runs a final in-process ``--burst`` pass, and accounts:

   - every valid event id is in the ledger exactly once, and nothing else is;
   - every invalid message (by ``message_id``) is in the dead letters with an
     ``x-taskledger-reason``;
   - the projections (``tasks``, ``execution_logs``) equal those of a fault-free run of
     the same messages into a second database (:func:`reference_snapshot`);
   - every ``dispatch.assigned`` the outbox holds was published at least once, all
     copies of a task's dispatch carry the same CloudEvents id, and every dispatch
     request ended either admitted (in the outbox) or waiting (in ``pause_queue``),
     never both, never neither;
   - the work queues and retry queues are empty.

Faults only touch processes and proxies the scenario started itself; all traffic stays
on 127.0.0.1 (the proxies listen there and forward to the test services).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
import orjson
from aio_pika.abc import AbstractConnection, AbstractQueue
from pydantic import SecretStr

from consumer.broker import H_REASON, Names, declare_topology, delete_topology, queue_depth
from consumer.core.settings import Settings
from consumer.outbox import dispatch_message_id
from consumer.simulate import WORKER_TYPES, SimulationConfig, generate, poison_messages
from consumer.store import db
from contracts import DecodeError, EventType, decode, make_event
from tests.chaos.report import RESULTS, Row, note_versions
from tests.support import services
from tests.support.processes import Service
from tests.support.proxy import Proxy
from tests.support.traffic import burst, snapshot, wait_until

#: Routing keys the capacity queue is bound to (the rest of the traffic is ``task.*``).
CAPACITY_KEYS = re.compile(r"^(dispatch\.requested|capacity\..*|control\..*)$")

#: Marker the runner logs once per handler when it consumes (text log format).
CONSUMING = "action=consume "


@dataclass(frozen=True)
class Scale:
    """How big and how long one form (full or short) of a scenario is."""

    label: str
    #: Task lifecycles in the traffic (about 7 messages each, plus dispatch and capacity).
    tasks: int
    #: Length of the fault window; the traffic is published spread over it.
    seconds: float
    #: Seconds between two faults, drawn uniformly from this range.
    gap: tuple[float, float]
    #: Longest the system may take to recover after the last fault.
    settle_s: float
    #: Scenario-specific knobs (outage lengths, rounds, poison counts).
    knobs: dict[str, float] = field(default_factory=dict)

    def __getitem__(self, name: str) -> float:
        return self.knobs[name]


# --- the traffic -------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """One message as published."""

    routing_key: str
    body: bytes
    message_id: str
    #: The CloudEvents id if the message is valid and storable; None for a message that
    #: must end in the dead letters (poison, or refused by the database).
    event_id: str | None
    event_type: str | None = None
    task_id: uuid.UUID | None = None


@dataclass
class Traffic:
    """The known set of messages of a scenario."""

    sent: list[Sent]

    @cached_property
    def valid_ids(self) -> set[str]:
        """CloudEvents ids that must be in the ledger exactly once."""
        return {s.event_id for s in self.sent if s.event_id is not None}

    @cached_property
    def doomed(self) -> set[str]:
        """``message_id`` of every message that must end in the dead letters."""
        return {s.message_id for s in self.sent if s.event_id is None}

    @cached_property
    def dispatch_tasks(self) -> set[uuid.UUID]:
        """Tasks with a valid ``dispatch.requested``."""
        return {
            s.task_id
            for s in self.sent
            if s.event_type == EventType.DISPATCH_REQUESTED.value and s.task_id is not None
        }

    @property
    def events(self) -> int:
        """Distinct messages: valid events plus every invalid message published."""
        return len(self.valid_ids) + len(self.doomed)

    def capacity_ids(self, sent: Sequence[Sent]) -> set[str]:
        """Valid event ids among ``sent`` that go to the capacity queue."""
        return {
            s.event_id
            for s in sent
            if s.event_id is not None and CAPACITY_KEYS.match(s.routing_key)
        }


def refused_event(rng: random.Random) -> tuple[str, bytes]:
    """A valid ``task.requested`` that PostgreSQL cannot store (a NUL character in jsonb)."""
    task_id = uuid.UUID(int=rng.getrandbits(128), version=4)
    data = {"request_text": f"deploy kuma\u0000{rng.randint(0, 10**6)}", "services": ["kuma"]}
    body = make_event(EventType.TASK_REQUESTED, data, source="orchestrator", subject=task_id)
    return EventType.TASK_REQUESTED.value, body


def _classify(index: int, routing_key: str, body: bytes) -> Sent:
    message_id = f"chaos-{index:06d}"
    try:
        event = decode(body, routing_key=routing_key)
    except DecodeError:
        return Sent(routing_key, body, message_id, None)
    if b"\\u0000" in body:  # decodes, but jsonb refuses it: retried, then dead-lettered
        return Sent(routing_key, body, message_id, None, event.type.value, event.task_id)
    return Sent(routing_key, body, message_id, str(event.id), event.type.value, event.task_id)


#: The fake agents of ``consumer.simulate`` with ``agents=AGENTS`` (ids and types).
AGENTS = 8


def capacity_rounds(rng: random.Random, rounds: int) -> list[list[tuple[str, bytes]]]:
    """``rounds`` rounds of capacity reports from every simulated agent, later rounds with
    later event times (a report older than the stored one changes nothing, so reports
    scattered at random would mostly be ignored)."""
    start = datetime.now(UTC)
    out = []
    for k in range(rounds):
        batch = []
        for i in range(AGENTS):
            agent_type = WORKER_TYPES[i % len(WORKER_TYPES)].value
            agent_id = f"{agent_type}-{i:02d}"
            data = {"agent_id": agent_id, "agent_type": agent_type, "accepting": rng.random() > 0.1,
                    "free": {"gpu_vram_mb": rng.choice((0, 8192, 16384)), "cpu_cores": rng.choice((2, 4)),
                             "memory_mb": rng.choice((2048, 8192))},
                    "load_pct": round(rng.uniform(10, 90), 1)}  # fmt: skip
            body = make_event(EventType.CAPACITY_REPORTED, data, source=f"agents/{agent_id}",
                              time=start + timedelta(milliseconds=k))  # fmt: skip
            batch.append((EventType.CAPACITY_REPORTED.value, body))
        out.append(batch)
    return out


def build_traffic(
    *, tasks: int, seed: int, poison: int = 0, poison_burst: int = 0, refused: int = 0
) -> Traffic:
    """Simulated traffic for ``tasks`` lifecycles (with duplicates, reordering and dispatch
    requests), rounds of capacity reports spread evenly through it, ``poison`` invalid
    messages scattered in it, a burst of ``poison_burst`` invalid messages in one block in
    the middle, and ``refused`` valid events the database refuses."""
    messages, _ = generate(
        SimulationConfig(tasks=tasks, agents=AGENTS, poison=poison, seed=seed,
                         dispatch_share=0.3, capacity_reports=0)
    )  # fmt: skip
    rng = random.Random(seed)
    rounds = capacity_rounds(rng, max(4, tasks // 10))
    for k in reversed(range(len(rounds))):  # in time order along the stream
        at = (k + 1) * len(messages) // (len(rounds) + 1)
        messages[at:at] = rounds[k]
    if poison_burst:
        middle = len(messages) // 2
        messages[middle:middle] = poison_messages(poison_burst, rng)
    for _ in range(refused):
        messages.insert(rng.randrange(len(messages) + 1), refused_event(rng))
    return Traffic([_classify(i, key, body) for i, (key, body) in enumerate(messages)])


async def publish(
    connection: AbstractConnection,
    settings: Settings,
    sent: Sequence[Sent],
    *,
    seconds: float = 0.0,
) -> None:
    """Publish ``sent`` persistently with confirms, paced evenly over ``seconds``."""
    if not sent:
        return
    chunk = 50 if seconds else 500
    channel = await connection.channel(publisher_confirms=True)
    try:
        exchange = await channel.get_exchange(Names(settings.prefix).events)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i in range(0, len(sent), chunk):
            part = sent[i : i + chunk]
            await asyncio.gather(*(
                exchange.publish(aio_pika.Message(s.body, message_id=s.message_id,
                                                  content_type="application/json",
                                                  delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                                 routing_key=s.routing_key)
                for s in part
            ))  # fmt: skip
            delay = started + seconds * (i + len(part)) / len(sent) - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the load, not waiting for a result
    finally:
        await channel.close()


# --- proxies -------------------------------------------------------------------------


async def proxy_for(url: str, default_port: int) -> Proxy:
    """A started :class:`Proxy` on 127.0.0.1 in front of the host and port of ``url``."""
    parts = urlsplit(url)
    return await Proxy(parts.hostname or "127.0.0.1", parts.port or default_port).start()


def via(url: str, proxy: Proxy) -> str:
    """``url`` with its host and port replaced by the proxy's (credentials kept)."""
    parts = urlsplit(url)
    credentials, _, _ = parts.netloc.rpartition("@")
    host = f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=f"{credentials}@{host}" if credentials else host))


# --- the fault-free reference --------------------------------------------------------


async def reference_snapshot(
    pg_admin_url: str, template_db: str, amqp_url: str, sent: Sequence[Sent], like: Settings
) -> dict[str, Any]:
    """The projections of a fault-free in-process burst of ``sent`` into a new database."""
    name = services.unique("tl_ref")
    url = await services.create_database(pg_admin_url, name, template=template_db)
    settings = like.model_copy(
        update={"database_url": SecretStr(url), "prefix": services.unique("tlref")}
    )
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await declare_topology(channel, settings)
        try:
            await publish(connection, settings, sent)
            await burst(settings, only="audit", timeout=120)
            pool = await db.create_pool(url, min_size=1, max_size=2)
            try:
                return await snapshot(pool)
            finally:
                await pool.close()
        finally:
            await delete_topology(await connection.channel(), settings)
    finally:
        await connection.close()
        await services.drop_database(pg_admin_url, name)


# --- the scenario driver -------------------------------------------------------------


@dataclass
class Accounting:
    """What the final check found."""

    missing_events: set[str]
    unexpected_events: set[str]
    ledger_duplicates: int
    missing_dead: set[str]
    unexplained_dead: set[str]
    dead_copies: int
    dead_without_reason: int
    projection_equal: bool
    log_rows_extra: int
    undelivered_dispatch: set[str]
    foreign_dispatch: set[str]
    tasks_with_two_dispatch_ids: int
    dispatch_unaccounted: set[uuid.UUID]
    dispatch_both: set[uuid.UUID]
    admitted: int
    dispatch_messages: int
    left_in_queues: dict[str, int]

    @property
    def lost(self) -> int:
        """Valid events not recorded, invalid messages not dead-lettered, dispatches never
        published, dispatch requests neither admitted nor waiting."""
        return (
            len(self.missing_events)
            + len(self.missing_dead)
            + len(self.undelivered_dispatch)
            + len(self.dispatch_unaccounted)
        )

    @property
    def duplicated(self) -> int:
        """Events applied twice, step rows doubled, a task dispatched under two ids or both
        admitted and waiting."""
        return (
            self.ledger_duplicates
            + self.log_rows_extra
            + self.tasks_with_two_dispatch_ids
            + len(self.dispatch_both)
        )


@dataclass
class Chaos:
    """Drives one scenario: its processes, its traffic, its final account."""

    settings: Settings
    pool: asyncpg.Pool
    amqp: AbstractConnection
    dispatch: AbstractQueue
    pg_admin_url: str
    template_db: str
    amqp_url: str
    seed: int = 0
    rng: random.Random = field(default_factory=random.Random)
    processes: list[Service] = field(default_factory=list)
    proxies: list[Proxy] = field(default_factory=list)

    @property
    def names(self) -> Names:
        """Queue and exchange names of the scenario's prefix."""
        return Names(self.settings.prefix)

    def env(self) -> dict[str, str]:
        """Environment of every ``taskledger run`` of the scenario."""
        return {
            # as the topology fixture declared them (a different list would add queues)
            "TASKLEDGER_RETRY_DELAYS_MS": json.dumps(self.settings.retry_delays_ms),
            "TASKLEDGER_BATCH_SIZE": "100",  # many commits to interrupt
            "TASKLEDGER_TIMER_INTERVAL_S": "0.2",
            "TASKLEDGER_OUTBOX_INTERVAL_S": "0.2",
            # the simulated reports are taken at traffic-building time: keep them usable
            "TASKLEDGER_CAPACITY_FRESHNESS_S": "3600",
            "TASKLEDGER_DB_RETRY_MAX_BACKOFF_S": "1",
        }

    # -- processes ----------------------------------------------------------------

    async def start(
        self, *args: str, settings: Settings | None = None, ready: bool = True, **env: str
    ) -> Service:
        """Start ``taskledger run ARGS``; with ``ready``, wait until each handler consumes."""
        service = Service(settings or self.settings, args, {**self.env(), **env})
        self.processes.append(service)
        await service.start()
        if ready:
            handlers = 1 if "--only" in args else 2

            async def consuming() -> bool:
                assert service.proc is not None
                assert service.proc.returncode is None, f"it exited:\n{service.log()[-3000:]}"
                return service.log().count(CONSUMING) >= handlers

            await wait_until(consuming, timeout=60, what=f"taskledger run {' '.join(args)} ready")
        return service

    async def kill(self, service: Service) -> None:
        """kill -9 and reap it."""
        service.kill()
        await service.wait(30)

    async def stop_all(self) -> None:
        """SIGTERM every process still running; each must exit 0 (a graceful stop)."""
        running = [s for s in self.processes if s.proc and s.proc.returncode is None]
        for service in running:
            service.terminate()
        for service in running:
            code = await service.wait(self.settings.shutdown_timeout_s + 20)
            assert code == 0, f"exit {code} after SIGTERM:\n{service.log()[-3000:]}"

    async def proxy(self, url: str, default_port: int) -> Proxy:
        """A proxy in front of ``url`` (stopped when the scenario ends)."""
        proxy = await proxy_for(url, default_port)
        self.proxies.append(proxy)
        return proxy

    async def close(self) -> None:
        """Kill what is left, remove the logs, stop the proxies."""
        for service in self.processes:
            await service.close()
        for proxy in self.proxies:
            await proxy.stop()

    async def pause(self, scale: Scale) -> None:
        """Wait a random gap of ``scale.gap`` seconds between two faults (on purpose)."""
        await asyncio.sleep(self.rng.uniform(*scale.gap))

    # -- traffic ------------------------------------------------------------------

    async def publish(self, sent: Sequence[Sent], seconds: float = 0.0) -> None:
        """Publish ``sent`` (directly, never through a proxy), paced over ``seconds``."""
        await publish(self.amqp, self.settings, sent, seconds=seconds)

    async def recorded(self, ids: set[str]) -> int:
        """How many of ``ids`` the ledger holds."""
        return int(
            await self.pool.fetchval(
                "SELECT count(*) FROM event_ledger WHERE event_id = ANY($1::uuid[])",
                [uuid.UUID(i) for i in ids],
            )
        )

    async def unsent(self) -> int:
        """Outbox rows not yet confirmed by the broker."""
        return int(await self.pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL"))

    async def depth(self, queue: str) -> int:
        """Ready messages in ``queue``."""
        channel = await self.amqp.channel()
        try:
            return await queue_depth(channel, queue)
        finally:
            await channel.close()

    async def recovered(self, traffic: Traffic) -> bool:
        """Every valid event recorded, every invalid message dead-lettered, outbox drained."""
        return (
            await self.recorded(traffic.valid_ids) == len(traffic.valid_ids)
            and await self.depth(self.names.dead) >= len(traffic.doomed)
            and await self.unsent() == 0
        )

    # -- the end ------------------------------------------------------------------

    async def conclude(
        self,
        scenario: str,
        scale: Scale,
        traffic: Traffic,
        faults: str,
        since: float,
        notes: str = "",
    ) -> Accounting:
        """Settle, stop, drain, account; record the row, then assert nothing lost or doubled.

        ``since`` is the ``time.monotonic()`` at which the last fault ended.
        """
        await wait_until(lambda: self.recovered(traffic), timeout=scale.settle_s,
                         what=f"{scenario}: recovery by itself after the last fault")  # fmt: skip
        recover_s = time.monotonic() - since
        # the fault-free run of the same messages, beside the stop and the final burst
        async with background(reference_snapshot(self.pg_admin_url, self.template_db,
                                                 self.amqp_url, traffic.sent, self.settings)
                              ) as fault_free:  # fmt: skip
            await self.stop_all()
            await burst(self.settings, only=None, timeout=120)  # the final --burst pass
            reference = await fault_free
        account = await self.account(traffic, reference)
        await note_versions(self.pool, self.amqp)
        extra = (f"{len(traffic.sent)} msgs published; {account.admitted} dispatches admitted, "
                 f"{account.dispatch_messages - account.admitted} re-published with the same id; "
                 f"{account.dead_copies} dead-letter copies")  # fmt: skip
        RESULTS.append(
            Row(
                scenario=scenario,
                scale=scale.label,
                events=traffic.events,
                faults=faults,
                lost=account.lost,
                duplicated=account.duplicated,
                recover_s=recover_s,
                notes="; ".join(n for n in (notes, extra) if n),
            )
        )
        self.check(account)
        return account

    async def account(self, traffic: Traffic, reference: dict[str, Any]) -> Accounting:
        """Compare what the databases and queues hold with what was published."""
        ledger = [str(r[0]) for r in await self.pool.fetch("SELECT event_id FROM event_ledger")]
        dead = await self._drain(self.names.dead)
        dead_ids = [m.message_id or "" for m in dead]
        got = await snapshot(self.pool)
        dispatch = await self._drain_dispatch()
        outbox = await self.pool.fetch(
            "SELECT message_id, task_id FROM outbox WHERE event_type = 'dispatch.assigned'"
        )
        admitted = {r["task_id"] for r in outbox}
        waiting = {r[0] for r in await self.pool.fetch("SELECT task_id FROM pause_queue")}
        ids_per_task: dict[str, set[str]] = {}
        for envelope in dispatch:
            ids_per_task.setdefault(envelope["data"]["task_id"], set()).add(envelope["id"])
        expected_ids = {str(r["message_id"]) for r in outbox}
        seen_ids = {e["id"] for e in dispatch}
        foreign = {
            e["id"]
            for e in dispatch
            if e["id"] != str(dispatch_message_id(uuid.UUID(e["subject"])))
        }
        queues = [self.names.audit, self.names.capacity]
        queues += [self.names.retry(q, d) for q in queues for d in self.settings.retry_delays_ms]
        return Accounting(
            missing_events=traffic.valid_ids - set(ledger),
            unexpected_events=set(ledger) - traffic.valid_ids,
            ledger_duplicates=len(ledger) - len(set(ledger)),
            missing_dead=traffic.doomed - set(dead_ids),
            unexplained_dead=set(dead_ids) - traffic.doomed,
            dead_copies=len(dead_ids) - len(set(dead_ids)),
            dead_without_reason=sum(1 for m in dead if not (m.headers or {}).get(H_REASON)),
            projection_equal=got == reference,
            log_rows_extra=max(0, len(got["logs"]) - len(reference["logs"])),
            undelivered_dispatch=expected_ids - seen_ids,
            foreign_dispatch=foreign | (seen_ids - expected_ids),
            tasks_with_two_dispatch_ids=sum(1 for ids in ids_per_task.values() if len(ids) > 1),
            dispatch_unaccounted=traffic.dispatch_tasks - admitted - waiting,
            dispatch_both=admitted & waiting,
            admitted=len(admitted),
            dispatch_messages=len(dispatch),
            left_in_queues={q: n for q in queues if (n := await self.depth(q))},
        )

    @staticmethod
    def check(account: Accounting) -> None:
        """Assert the promise: nothing lost, nothing doubled, nothing unexplained."""
        assert not account.missing_events, f"valid events never recorded: {account.missing_events}"
        assert not account.unexpected_events, (
            f"recorded, never published: {account.unexpected_events}"
        )
        assert not account.missing_dead, (
            f"invalid messages not dead-lettered: {account.missing_dead}"
        )
        assert not account.unexplained_dead, (
            f"dead letters of valid messages: {account.unexplained_dead}"
        )
        assert account.dead_without_reason == 0, "dead letters without x-taskledger-reason"
        assert account.projection_equal, "projections differ from the fault-free run"
        assert not account.undelivered_dispatch, (
            f"admitted, never published: {account.undelivered_dispatch}"
        )
        assert not account.foreign_dispatch, (
            f"dispatch ids not from the outbox: {account.foreign_dispatch}"
        )
        assert account.tasks_with_two_dispatch_ids == 0, "a task was dispatched under two ids"
        assert not account.dispatch_unaccounted, (
            f"requests neither admitted nor waiting: {account.dispatch_unaccounted}"
        )
        assert not account.dispatch_both, f"admitted and still waiting: {account.dispatch_both}"
        assert account.left_in_queues == {}, f"messages left behind: {account.left_in_queues}"
        assert account.admitted > 0, (
            "the scenario admitted no dispatch: the capacity side went unexercised"
        )

    async def _drain(self, queue_name: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
        """Take and acknowledge every message of ``queue_name``."""
        channel = await self.amqp.channel()
        out = []
        try:
            queue = await channel.declare_queue(queue_name, passive=True)
            while (message := await queue.get(fail=False, no_ack=False)) is not None:
                await message.ack()
                out.append(message)
        finally:
            await channel.close()
        return out

    async def _drain_dispatch(self) -> list[dict[str, Any]]:
        """Every ``dispatch.assigned`` envelope the agents' queue received."""
        out = []
        while (message := await self.dispatch.get(no_ack=True, fail=False)) is not None:
            envelope = orjson.loads(message.body)
            assert envelope["id"] == message.message_id, "the AMQP message_id is the event id"
            out.append(envelope)
        return out


@contextlib.asynccontextmanager
async def background(coro: Any) -> Any:
    """Run ``coro`` as a task for the block; re-raise its error, cancel it if unfinished."""
    task = asyncio.ensure_future(coro)
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
