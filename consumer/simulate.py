"""`taskledger simulate`: realistic traffic from fake agents and an orchestrator.

:func:`generate` is pure (a list of ``(routing_key, body)``) so tests and benchmarks use
the same traffic the demo shows; :func:`simulate_traffic` publishes it with confirms.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from consumer import broker
from consumer.core.settings import Settings
from consumer.producer import Publisher
from contracts import AgentType, ErrorCause, EventType, make_event, new_id

SERVICES = (
    "kuma", "portainer", "dns", "auth", "traefik", "grafana", "prometheus", "nextcloud",
    "jellyfin", "homeassistant", "pihole", "vaultwarden", "gitea", "minio", "postgres",
)  # fmt: skip
VERBS = {
    "deploy": "Deploy {s} with the latest stable image",
    "restart": "Restart {s}; it stopped answering health checks",
    "upgrade": "Upgrade {s} to the newest minor release",
    "backup": "Back up the {s} volume to minio",
    "rollback": "Roll back {s} to the previous image",
    "configure": "Add a traefik route and an auth rule for {s}",
}
STEP_ACTIONS = (
    "ssh.exec docker compose pull", "portainer.stack.redeploy", "dns.record.upsert",
    "traefik.route.check", "http.probe", "volume.snapshot", "auth.policy.apply",
    "kuma.monitor.update", "git.commit config", "llm.plan.review",
)  # fmt: skip
FAILURES = (
    (ErrorCause.RESOURCE, "OOMKilled", "container exceeded its 512 MiB memory limit"),
    (ErrorCause.RESOURCE, "DiskFull", "no space left on device while pulling the image"),
    (ErrorCause.APPLICATION, "HealthCheckFailed", "service answered 502 after redeploy"),
    (ErrorCause.APPLICATION, "ConfigInvalid", "traefik rejected the router rule"),
    (ErrorCause.DEPENDENCY, "DNSResolutionFailed", "pihole did not answer within 5s"),
    (ErrorCause.DEPENDENCY, "RegistryUnavailable", "registry-1.docker.io returned 503"),
    (ErrorCause.UNKNOWN, "Timeout", "agent lost contact with the host"),
)
WORKER_TYPES = (AgentType.INFRA, AgentType.CODE, AgentType.DESKTOP, AgentType.RESEARCH)


@dataclass
class SimulationConfig:
    """What `simulate` publishes."""

    tasks: int = 200
    agents: int = 6
    rate: float = 0.0
    duplicate_share: float = 0.05
    reorder_share: float = 0.1
    poison: int = 5
    seed: int | None = None
    dispatch_share: float = 0.3
    capacity_reports: int = 3


@dataclass
class SimulationStats:
    """What was published, by type."""

    by_type: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    poison: int = 0
    tasks: int = 0
    published: int = 0
    seconds: float = 0.0

    def render(self) -> Table:
        """A rich table of the counts."""
        table = Table(title=f"published {self.published} messages for {self.tasks} tasks "
                            f"in {self.seconds:.1f}s")  # fmt: skip
        table.add_column("type")
        table.add_column("messages", justify="right")
        for name, count in sorted(self.by_type.items()):
            table.add_row(name, str(count))
        table.add_row("(duplicates)", str(self.duplicates))
        table.add_row("(poison)", str(self.poison))
        return table


@dataclass
class _Agent:
    agent_id: str
    agent_type: AgentType


def _lifecycle(rng: random.Random, agent: _Agent, start: datetime) -> list[tuple[str, bytes]]:
    """One task's events in their natural order."""
    task_id = new_id()
    services = rng.sample(SERVICES, rng.randint(1, 3))
    verb = rng.choice(list(VERBS))
    t = start
    out: list[tuple[str, bytes]] = []

    def emit(kind: EventType, data: dict[str, Any], source: str) -> None:
        nonlocal t
        t += timedelta(milliseconds=rng.randint(50, 4000))
        out.append((kind.value, make_event(kind, data, source=source, subject=task_id, time=t)))

    steps = [f"{rng.choice(STEP_ACTIONS)} {s}" for s in services] + ["http.probe"]
    emit(EventType.TASK_REQUESTED, {
        "request_text": VERBS[verb].format(s=services[0]) + f" ({verb}_{services[0]})",
        "created_by": rng.choice(("alice", "bob", "cron", "ops-bot")),
        "project_id": "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f",
        "plan": {"steps": [f"{verb} {s}" for s in services], "estimated_duration_seconds":
                 rng.randint(30, 900), "complexity": rng.choice(("low", "medium", "high"))},
        "estimated_resources": {"duration_seconds": rng.randint(30, 900), "gpu_vram_mb": 0,
                                "cpu_cores": 1.0, "memory_mb": rng.choice((256, 512, 1024))},
        "services": services,
    }, "orchestrator")  # fmt: skip
    if rng.random() < 0.05:
        emit(EventType.TASK_REJECTED, {"reason": "outside the maintenance window"}, "orchestrator")
        return out
    emit(EventType.TASK_APPROVED, {"approved_by": rng.choice(("alice", "bob", "auto-policy"))},
         "orchestrator")  # fmt: skip
    src = f"agents/{agent.agent_id}"
    emit(
        EventType.TASK_STARTED,
        {"agent_id": agent.agent_id, "agent_type": agent.agent_type.value},
        src,
    )
    failed_at = rng.randint(1, len(steps)) if rng.random() < 0.25 else None
    for n, action in enumerate(steps, start=1):
        failed = n == failed_at
        emit(EventType.TASK_STEP, {
            "step_number": n, "agent_type": agent.agent_type.value, "action": action,
            "status": "failed" if failed else "completed",
            "output_summary": ("error: " if failed else "ok: ") + action + " " + "." * rng.randint(0, 600),
            "duration_ms": rng.randint(20, 30000),
        }, src)  # fmt: skip
        if failed:
            break
    resources = {"duration_seconds": round(rng.uniform(5, 900)), "cpu_time_ms": rng.randint(10, 90000),
                 "gpu_vram_mb_used": 0, "peak_memory_mb": rng.randint(64, 2048),
                 "agent_load_pct": round(rng.uniform(5, 95), 1)}  # fmt: skip
    ai = ([{"provider": "anthropic", "model": "claude-sonnet", "token_count": rng.randint(500, 20000),
            "cost_usd": round(rng.uniform(0.001, 0.4), 4)}] if rng.random() < 0.3 else None)  # fmt: skip
    if failed_at is None:
        emit(EventType.TASK_COMPLETED, {
            "services_touched": services, "actual_resources": resources, "external_ai_used": ai,
            "outcome": {"success": True, "output_summary": f"{verb} of {services[0]} done",
                        "last_lines": [f"{services[0]}: healthy"]},
        }, src)  # fmt: skip
    else:
        cause, etype, msg = rng.choice(FAILURES)
        emit(EventType.TASK_FAILED, {
            "services_touched": services[:failed_at], "actual_resources": resources,
            "external_ai_used": ai, "failed_step": failed_at,
            "outcome": {"success": False, "error_type": etype, "error_cause": cause.value,
                        "error_message": msg, "last_lines": [msg]},
        }, src)  # fmt: skip
    return out


def _capacity(rng: random.Random, agent: _Agent, t: datetime) -> tuple[str, bytes]:
    data = {"agent_id": agent.agent_id, "agent_type": agent.agent_type.value,
            "free": {"gpu_vram_mb": rng.choice((0, 4096, 8192)), "cpu_cores": rng.choice((1, 2, 4)),
                     "memory_mb": rng.choice((512, 2048, 8192))},
            "load_pct": round(rng.uniform(10, 95), 1), "accepting": rng.random() > 0.1}  # fmt: skip
    kind = EventType.CAPACITY_REPORTED
    return kind.value, make_event(kind, data, source=f"agents/{agent.agent_id}", time=t)


def _dispatch(rng: random.Random, agent_type: AgentType, t: datetime) -> tuple[str, bytes]:
    data = {"work_plan": {"steps": ["pull", "apply", "verify"], "target": rng.choice(SERVICES)},
            "required": {"gpu_vram_mb": rng.choice((0, 0, 2048, 16384)), "cpu_cores": rng.choice((1, 2)),
                         "memory_mb": rng.choice((256, 1024, 4096))},
            "agent_type": agent_type.value, "priority": rng.randint(1, 5)}  # fmt: skip
    kind = EventType.DISPATCH_REQUESTED
    return kind.value, make_event(kind, data, source="orchestrator", subject=new_id(), time=t)


def poison_messages(n: int, rng: random.Random) -> list[tuple[str, bytes]]:
    """``n`` invalid messages cycling through every dead-letter reason."""
    good = orjson.loads(make_event(EventType.TASK_APPROVED, {"approved_by": "x"},
                                   source="orchestrator", subject=new_id()))  # fmt: skip
    kinds: list[tuple[str, bytes]] = [
        ("task.approved", b"{not json"),
        ("task.approved", orjson.dumps({**good, "data": {"approved_by": "x", "aproved": 1}})),
        ("task.exploded", orjson.dumps({**good, "type": "task.exploded"})),
        ("task.approved", orjson.dumps({**good, "schemaversion": 2})),
        ("task.approved", orjson.dumps({**good, "data": {"approved_by": "x" * (1024 * 1024)}})),
    ]
    return [kinds[i % len(kinds)] for i in range(n)]


def generate(config: SimulationConfig) -> tuple[list[tuple[str, bytes]], SimulationStats]:
    """Build the whole traffic: ``(routing_key, body)`` in publishing order, and its stats."""
    rng = random.Random(config.seed)
    agents = [_Agent(f"{t.value}-{i:02d}", t)
              for i in range(config.agents) for t in [WORKER_TYPES[i % len(WORKER_TYPES)]]]  # fmt: skip
    now = datetime.now(UTC) - timedelta(minutes=30)
    streams: list[list[tuple[str, bytes]]] = []
    for n in range(config.tasks):
        events = _lifecycle(rng, rng.choice(agents), now + timedelta(seconds=n))
        if rng.random() < config.reorder_share:
            rng.shuffle(events)
        streams.append(events)
    # interleave the tasks as a real fleet would
    messages: list[tuple[str, bytes]] = []
    while streams:
        stream = streams[rng.randrange(min(len(streams), 8))]
        messages.append(stream.pop(0))
        if not stream:
            streams.remove(stream)
    extra: list[tuple[str, bytes]] = []
    for n in range(int(config.tasks * config.dispatch_share)):
        extra.append(_dispatch(rng, rng.choice(WORKER_TYPES), now + timedelta(seconds=n)))
    for r in range(config.capacity_reports):
        extra += [_capacity(rng, a, datetime.now(UTC) + timedelta(milliseconds=r)) for a in agents]
    for item in extra:
        messages.insert(rng.randrange(len(messages) + 1), item)
    stats = SimulationStats(tasks=config.tasks)
    dupes = [m for m in messages if rng.random() < config.duplicate_share]
    for dupe in dupes:
        messages.insert(rng.randrange(len(messages) + 1), dupe)
    stats.duplicates = len(dupes)
    for item in poison_messages(config.poison, rng):
        messages.insert(rng.randrange(len(messages) + 1), item)
    stats.poison = config.poison
    for key, _ in messages:
        stats.by_type[key] += 1
    return messages, stats


async def publish_all(
    settings: Settings,
    messages: list[tuple[str, bytes]],
    *,
    rate: float = 0.0,
    window: int = 256,
    progress: Progress | None = None,
) -> None:
    """Publish ``messages`` persistently to the events exchange, waiting for confirms.

    Declares the topology, then publishes with :class:`consumer.producer.Publisher`
    (mandatory, confirmed, the same body again on a lost confirm).

    Up to ``window`` publishes are in flight at once; ``rate`` (messages/s) paces them.
    """
    connection = await broker.connect(settings.amqp)
    try:
        channel = await broker.confirm_channel(connection)
        await broker.declare_topology(channel, settings)
    finally:
        await connection.close()
    publisher = Publisher(settings.amqp, source="orchestrator", prefix=settings.prefix)
    async with publisher:
        task_id = progress.add_task("publishing", total=len(messages)) if progress else None
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i in range(0, len(messages), window):
            chunk = messages[i : i + window]
            await asyncio.gather(*(publisher.publish_body(key, body) for key, body in chunk))
            if progress is not None and task_id is not None:
                progress.advance(task_id, len(chunk))
            if rate > 0:
                due = started + (i + len(chunk)) / rate
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)


async def simulate_traffic(
    settings: Settings, config: SimulationConfig, *, show_progress: bool = False
) -> SimulationStats:
    """Generate and publish the traffic; returns what was published."""
    messages, stats = generate(config)
    window = 1 if config.rate and config.rate < 50 else 256
    loop = asyncio.get_running_loop()
    started = loop.time()
    if show_progress:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn())  # fmt: skip
        with Progress(*columns) as progress:
            await publish_all(
                settings, messages, rate=config.rate, window=window, progress=progress
            )
    else:
        await publish_all(settings, messages, rate=config.rate, window=window)
    stats.published = len(messages)
    stats.seconds = loop.time() - started
    return stats
