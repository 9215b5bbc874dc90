"""A three-node RabbitMQ cluster loses a node, then another: nothing is lost or doubled.

The test starts its own cluster with ``scripts/rabbitmq-cluster.sh`` (nodes tl1..tl3 on
127.0.0.1:5681..5683, beside the system broker) and stops it afterwards. The topology is
declared through the cluster, so every quorum queue has a replica on each node. One
``taskledger run`` subprocess (both handlers and the outbox relay) consumes with
``TASKLEDGER_AMQP_URL`` listing the three nodes, while the test publishes the traffic
through the cluster (reconnecting to another node, and publishing the same messages
again, when its node dies). Faults:

1. kill -9 of the node leading ``<prefix>.audit``, then that node is started again and
   rejoins;
2. kill -9 of another node (the one the service is connected to, if that is not the
   node of 1.), which stays down to the end.

After each kill the consumer must resume within 15 s ("resumed": the time from the kill to
the first ledger growth after the service consumed again on a surviving node; the longest
ledger stall after the kill is reported beside it). The end is the
chaos suite's exact account (:meth:`tests.chaos.scenarios.Chaos.conclude`): every event
in the ledger once, projections equal to a fault-free run, every admitted dispatch
published under one id, every dispatch request admitted or waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import aiormq
import asyncpg
import pytest
from aio_pika.abc import AbstractConnection, AbstractQueue
from pydantic import SecretStr

from consumer.broker import Names, declare_topology
from consumer.broker.connection import connect
from consumer.core.errors import BrokerUnavailable
from consumer.core.settings import Settings
from tests.chaos.scenarios import Chaos, Scale, Sent, Traffic, background, build_traffic
from tests.support.cluster import NODES, PORTS, Cluster, node_of_port, remote_ports
from tests.support.processes import Service

#: The promise: after a node dies, the consumer resumes on a survivor within this.
RESUME_BUDGET_S = 15.0
#: Measures one kill for at most this long.
WINDOW_S = 30.0

SCENARIO = "3-node RabbitMQ cluster: node leading the audit queue killed, then another"


@dataclass(frozen=True)
class Form:
    """One form of the scenario."""

    label: str
    events: int
    seconds: float
    kills: int
    settle_s: float


FULL = Form("full", events=20_000, seconds=90, kills=2, settle_s=180)
SHORT = Form("short", events=1_000, seconds=20, kills=1, settle_s=90)


@dataclass
class Kill:
    """What one kill did and how long the ledger stood still.

    ``resumed_s``: from the kill to the first ledger growth after the service consumed
    again (on a surviving node) when it was connected to the killed node, else to the
    first ledger growth. ``stall_s``: from the kill to the end of the longest stretch
    without ledger growth that followed it (it includes the publisher's own failover and
    the queue's leader election: no new messages, nothing to record).
    """

    node: str
    why: str
    service_was_there: bool
    resumed_s: float
    stall_s: float
    reconnected_s: float | None
    #: ``time.monotonic()`` of the kill.
    at: float
    rejoin_s: float | None = None

    def describe(self) -> str:
        """One line for the report."""
        there = "the service's node" if self.service_was_there else "not the service's node"
        line = (f"kill -9 {self.node} ({self.why}; {there}): resumed in {self.resumed_s:.1f} s "
                f"(longest ledger stall ended {self.stall_s:.1f} s after the kill)")  # fmt: skip
        if self.reconnected_s is not None:
            line += f", service re-consumed after {self.reconnected_s:.1f} s"
        if self.rejoin_s is not None:
            line += f", restarted and rejoined in {self.rejoin_s:.1f} s"
        return line


def cluster_traffic(events: int, seed: int) -> Traffic:
    """Simulated traffic (lifecycles, dispatch requests, capacity reports) cut right after
    its ``events``-th distinct valid event."""
    traffic = build_traffic(tasks=max(10, events // 5), seed=seed)
    seen: set[str] = set()
    for index, sent in enumerate(traffic.sent):
        if sent.event_id is not None:
            seen.add(sent.event_id)
        if len(seen) == events:
            return Traffic(traffic.sent[: index + 1])
    raise AssertionError(f"the traffic holds only {len(seen)} events")


async def publish_through(
    settings: Settings,
    sent: list[Sent],
    seconds: float,
    stats: dict[str, int],
    hold: tuple[int, asyncio.Event] | None = None,
) -> None:
    """Publish ``sent`` persistently with confirms, paced over ``seconds``, through the
    cluster: when the node goes, reconnect (the next node) and publish the unconfirmed
    chunk again (same bodies and ids: the ledger absorbs the copies). With ``hold`` =
    (n, gate), stop after message n until the gate opens (so traffic still flows at a
    later fault however long a node takes to restart), pacing the rest as before."""
    names = Names(settings.prefix)
    connection: AbstractConnection | None = None
    loop = asyncio.get_running_loop()
    started = loop.time()
    chunk, i = 50, 0
    while i < len(sent):
        if hold is not None and i >= hold[0] and not hold[1].is_set():
            waited = loop.time()
            await hold[1].wait()
            started += loop.time() - waited
        part = sent[i : i + chunk]
        began = loop.time()
        try:
            if connection is None or connection.is_closed:
                connection = await connect(settings.amqp, attempts=60, backoff_s=0.2)
                stats["connections"] += 1
                channel = await connection.channel(publisher_confirms=True)
                exchange = await channel.get_exchange(names.events)
            await asyncio.gather(*(
                exchange.publish(aio_pika.Message(s.body, message_id=s.message_id,
                                                  content_type="application/json",
                                                  delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                                 routing_key=s.routing_key, timeout=20)
                for s in part
            ))  # fmt: skip
        except (
            aio_pika.exceptions.AMQPError,
            aiormq.exceptions.ChannelInvalidStateError,
            ConnectionError,
            TimeoutError,
            BrokerUnavailable,
        ):
            stats["republished"] += len(part)
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.close()
            connection = None
            continue
        i += len(part)
        stats["slowest_confirm_ms"] = max(stats["slowest_confirm_ms"],
                                          int((loop.time() - began) * 1000))  # fmt: skip
        delay = started + seconds * i / len(sent) - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the load
    if connection is not None:
        await connection.close()


async def ledger_rows(pool: asyncpg.Pool) -> int:
    """Rows in the ledger."""
    return int(await pool.fetchval("SELECT count(*) FROM event_ledger"))


def service_nodes(service: Service) -> set[str]:
    """The cluster nodes the service's process holds connections to."""
    assert service.proc is not None
    return {n for p in remote_ports(service.proc.pid) if (n := node_of_port(p))}


async def kill_and_measure(
    cluster: Cluster, pool: asyncpg.Pool, service: Service, node: str, why: str, total: int
) -> Kill:
    """kill -9 ``node``; sample the ledger until it grew steadily again (or ``total``)."""
    there = node in service_nodes(service)
    consumed_before = service.log().count("action=consume ")
    await cluster.kill(node)
    killed = time.monotonic()
    growth: list[float] = []
    last = await ledger_rows(pool)
    reconnected: float | None = None
    while time.monotonic() - killed < WINDOW_S:
        await asyncio.sleep(0.05)
        now = await ledger_rows(pool)
        at = time.monotonic() - killed
        if reconnected is None and service.log().count("action=consume ") > consumed_before:
            reconnected = at
        if now > last:
            growth.append(at)
            last = now
        if last >= total:
            break
        # growing steadily for 3 s after the kill's stall: measured
        if len(growth) > 20 and growth[-1] - growth[-20] < 3 and growth[-1] > 3:
            break
    starts = [0.0, *growth]
    gaps = [(b - a, b) for a, b in zip(starts, growth, strict=False)]
    stall = max(gaps)[1] if gaps else float("inf")
    since = (reconnected if reconnected is not None else WINDOW_S) if there else 0.0
    resumed = next((g for g in growth if g >= since), float("inf"))
    return Kill(node, why, there, resumed, stall, reconnected, killed)


async def fleet_queue(
    connection: AbstractConnection, settings: Settings, kind: str
) -> AbstractQueue:
    """A replicated queue standing for the agents, bound to ``<kind>.#`` on the dispatch
    exchange (an exclusive queue would die with its node and lose what it held)."""
    channel = await connection.channel()
    queue = await channel.declare_queue(f"{settings.prefix}.fleet.{kind}", durable=True,
                                        arguments={"x-queue-type": "quorum"})  # fmt: skip
    await queue.bind(Names(settings.prefix).dispatch, routing_key=f"{kind}.#")
    return queue


@pytest.mark.parametrize(
    "form",
    [
        pytest.param(FULL, id="full", marks=[pytest.mark.slow, pytest.mark.timeout(1200)]),
        pytest.param(SHORT, id="short", marks=[pytest.mark.cluster, pytest.mark.timeout(600)]),
    ],
)
async def test_cluster_loses_nothing_when_nodes_die(
    form: Form,
    settings: Settings,
    pool: asyncpg.Pool,
    pg_admin_url: str,
    template_db: str,
    amqp_url: str,
    request: pytest.FixtureRequest,
) -> None:
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="taskledger-cluster-")))
    chaos: Chaos | None = None
    connections: list[AbstractConnection] = []
    try:
        await cluster.start()
        on_cluster = settings.model_copy(update={"amqp_url": SecretStr(cluster.url())})
        names = Names(on_cluster.prefix)
        first = await connect(on_cluster.amqp, attempts=5)
        connections.append(first)
        await declare_topology(await first.channel(), on_cluster)
        assert await cluster.members(names.audit) == list(NODES), "a replica on every node"
        dispatch = await fleet_queue(first, on_cluster, "dispatch")
        await fleet_queue(first, on_cluster, "recovery")
        seed = sum(map(ord, request.node.name))
        chaos = Chaos(settings=on_cluster, pool=pool, amqp=first, dispatch=dispatch,
                      pg_admin_url=pg_admin_url, template_db=template_db, amqp_url=amqp_url,
                      seed=seed, rng=random.Random(seed))  # fmt: skip
        service = await chaos.start()
        traffic = cluster_traffic(form.events, seed=201)
        total = len(traffic.valid_ids)
        stats = {"connections": 0, "republished": 0, "slowest_confirm_ms": 0}
        victim = await cluster.leader(names.audit)  # asked before: the kill comes on time
        kills: list[Kill] = []
        gate = asyncio.Event()
        held = len(traffic.sent) * 3 // 5 if form.kills > 1 else None
        async with background(
            publish_through(on_cluster, traffic.sent, form.seconds, stats,
                            None if held is None else (held, gate))
        ) as publishing:  # fmt: skip
            await wait_for_rows(pool, total // 5, form.seconds)
            kill = await kill_and_measure(
                cluster, pool, service, victim, "leader of the audit queue", total
            )
            kill.rejoin_s = await cluster.restart(victim)
            kills.append(kill)
            if form.kills > 1:
                leader = await cluster.leader(names.audit)
                gate.set()  # the rest of the traffic flows; kill once it is being consumed
                await wait_for_rows(pool, total * 13 // 20, form.seconds)
                now_on = service_nodes(service) - {victim}
                other = next(iter(sorted(now_on)), leader if leader != victim else None)
                other = other or next(n for n in NODES if n != victim)
                why = f"a second node; the audit queue's leader then: {leader}"
                kills.append(await kill_and_measure(cluster, pool, service, other, why, total))
            await publishing
        survivors = tuple(n for n in NODES if all(k.node != n or k.rejoin_s for k in kills))
        # the test's own connection may have died with a node: inspect through a survivor
        fresh = await connect(on_cluster.amqp, attempts=10)
        connections.append(fresh)
        chaos.amqp = fresh
        chaos.dispatch = await (await fresh.channel()).declare_queue(
            f"{on_cluster.prefix}.fleet.dispatch", passive=True
        )
        # the fault-free reference run goes through the same cluster (a survivor), on a
        # prefix of its own
        chaos.amqp_url = f"amqp://guest:guest@127.0.0.1:{PORTS[survivors[0]]}/"
        faults = "; ".join(k.describe() for k in kills)
        account = await chaos.conclude(
            SCENARIO, form_scale(form), traffic, faults, kills[-1].at,
            notes=f"cluster start {cluster.timings['start_s']:.1f} s; publisher reconnected "
            f"{stats['connections'] - 1} times, {stats['republished']} messages published again, "
            f"slowest confirmed chunk {stats['slowest_confirm_ms'] / 1000:.1f} s; "
            f"nodes up at the end: {', '.join(survivors)}",
        )  # fmt: skip
        assert await ledger_rows(pool) == total
        assert account.duplicated == 0
        for kill in kills:
            assert kill.resumed_s < RESUME_BUDGET_S, kill.describe()
        print(f"\ncluster: {total} events, {faults}; {stats}")
    finally:
        if chaos is not None:
            await chaos.close()
        for connection in connections:
            with contextlib.suppress(Exception):
                await connection.close()
        await cluster.stop()


async def wait_for_rows(pool: asyncpg.Pool, rows: int, within: float) -> None:
    """Wait until the ledger holds ``rows`` (at most about the publishing time)."""
    deadline = time.monotonic() + within
    while await ledger_rows(pool) < rows and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


def form_scale(form: Form) -> Scale:
    """The chaos driver's :class:`~tests.chaos.scenarios.Scale` for ``form``."""
    return Scale(form.label, tasks=form.events, seconds=form.seconds, gap=(0, 0),
                 settle_s=form.settle_s)  # fmt: skip
