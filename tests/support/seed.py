"""The operators' stories as database rows: the seed of the query, API and CLI tests.

Rows are inserted with SQL shaped like the audit projection builds them: a task row in
its furthest state, its ledger events, its steps, pause-queue entries and history. The
seed tells the operators' stories: kuma changes in the past week, failures by resource
versus application, task X step by step, what waits and why, and orphans.
The ``seeded_db`` / ``seeded`` fixtures (tests/conftest.py) hold one seeded database per
test module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from consumer.store import db

NOW = datetime.now(UTC).replace(microsecond=0)


def ago(**kw: float) -> datetime:
    """A time that long before the seed's NOW."""
    return NOW - timedelta(**kw)


@dataclass
class Seeded:
    """Ids of the seeded tasks by role."""

    ids: dict[str, UUID] = field(default_factory=dict)
    orphan_task: UUID = field(default_factory=uuid4)
    fresh_orphan_task: UUID = field(default_factory=uuid4)
    unrequested_waiting: UUID = field(default_factory=uuid4)

    def __getitem__(self, name: str) -> UUID:
        return self.ids[name]


def _envelope(
    event_id: UUID, event_type: str, task_id: UUID, at: datetime, source: str
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": str(event_id),
        "source": source,
        "type": event_type,
        "time": at.isoformat(),
        "subject": str(task_id),
        "schemaversion": 1,
        "data": {},
    }


async def add_event(
    conn: asyncpg.Connection,
    task_id: UUID,
    event_type: str,
    at: datetime,
    *,
    received_at: datetime | None = None,
    source: str = "orchestrator",
    conflict_with: UUID | None = None,
    event_id: UUID | None = None,
) -> UUID:
    """Insert one ledger row as the audit consumer records it (with its id claimed in
    ``ledger_event_ids`` and, for a task's first terminal event, ``ledger_task_terminals``;
    the trigger of 016 fills ``ledger_task_dispatches`` and ``ledger_taskless_events``)."""
    event_id = event_id or uuid4()
    await conn.execute(
        """WITH row AS (
               INSERT INTO event_ledger (event_id, event_type, source, task_id, event_time,
                                         received_at, schema_version, envelope, conflict_with)
               VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8)
               RETURNING event_id, seq, received_at, event_type, task_id, conflict_with,
                         event_time
           ), ids AS (
               INSERT INTO ledger_event_ids (event_id, seq, received_at)
               SELECT event_id, seq, received_at FROM row
           ), terminals AS (
               INSERT INTO ledger_task_terminals (task_id, event_id, seq)
               SELECT task_id, event_id, seq FROM row
               WHERE conflict_with IS NULL
                 AND event_type IN ('task.completed', 'task.failed', 'task.rejected')
               ON CONFLICT (task_id) DO NOTHING
           )
           SELECT 1""",
        event_id,
        event_type,
        source,
        task_id,
        at,
        received_at or at + timedelta(milliseconds=40),
        _envelope(event_id, event_type, task_id, at, source),
        conflict_with,
    )
    return event_id


async def add_task(
    conn: asyncpg.Connection,
    *,
    status: str,
    request: str,
    created_at: datetime,
    services: tuple[str, ...] = (),
    agent_type: str | None = "infra",
    plan_steps: list[str] | None = None,
    steps: Sequence[tuple[str, str]] = (),
    error: tuple[str, str, str] | None = None,
    cost: float | None = None,
    task_id: UUID | None = None,
    last_event_at: datetime | None = None,
    ledger: bool = True,
) -> UUID:
    """Insert a task row in its furthest state, its lifecycle ledger events and its steps.

    ``steps`` are (action, status); ``error`` is (cause, type, message).
    """
    task_id = task_id or uuid4()
    approved = created_at + timedelta(seconds=30) if status != "pending" else None
    started = (
        created_at + timedelta(minutes=1)
        if status in ("executing", "completed", "failed")
        else None
    )
    finished = (
        created_at + timedelta(minutes=9) if status in ("completed", "failed", "rejected") else None
    )
    agent_id = f"{agent_type}-01" if started and agent_type else None
    cause, etype, message = error or (None, None, None)
    plan = (
        {"steps": plan_steps, "estimated_duration_seconds": 600, "complexity": "medium"}
        if plan_steps
        else None
    )
    outcome = (
        {"success": status == "completed", "output_summary": "done", "last_lines": []}
        if status in ("completed", "failed")
        else None
    )
    await conn.execute(
        """INSERT INTO tasks (task_id, status, request_text, created_by, project_id, plan,
                              services_requested, agent_id, agent_type, approved_by, approved_at,
                              started_at, completed_at, rejected_reason, error_message,
                              services_touched, outcome, cost_usd, error_type, error_cause,
                              created_at, updated_at)
           VALUES ($1, $2, $3, 'alice', md5('homelab')::uuid, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                   $14, $15, $16, $17, $18, $19, $20)""",
        task_id,
        status,
        request,
        plan,
        list(services) or None,
        agent_id,
        agent_type if started else None,
        "alice" if approved else None,
        approved,
        started,
        finished,
        "window closed" if status == "rejected" else None,
        message,
        list(services) if status in ("completed", "failed") else [],
        outcome,
        cost,
        etype,
        cause,
        created_at,
        finished or last_event_at or started or approved or created_at,
    )
    if not ledger:
        return task_id
    await add_event(conn, task_id, "task.requested", created_at)
    if approved:
        await add_event(conn, task_id, "task.approved", approved)
    if status == "rejected":
        await add_event(conn, task_id, "task.rejected", finished or created_at)
    if started:
        await add_event(conn, task_id, "task.started", started, source=f"agents/{agent_id}")
    for number, (action, step_status) in enumerate(steps, start=1):
        at = (started or created_at) + timedelta(minutes=number)
        event_id = await add_event(conn, task_id, "task.step", at, source=f"agents/{agent_id}")
        await conn.execute(
            """INSERT INTO execution_logs (log_id, event_id, task_id, step_number, agent_type,
                                           action, status, output_summary, duration_ms, timestamp)
               VALUES ($1, $1, $2, $3, $4, $5, $6, $7, $8, $9)""",
            event_id,
            task_id,
            number,
            agent_type or "infra",
            action,
            step_status,
            f"{action}: {step_status}",
            1200 * number,
            at,
        )
    if last_event_at:
        await add_event(conn, task_id, "task.step", last_event_at, source=f"agents/{agent_id}")
    if status in ("completed", "failed"):
        await add_event(
            conn, task_id, f"task.{status}", finished or created_at, source=f"agents/{agent_id}"
        )
    return task_id


async def seed_examples(pool: asyncpg.Pool) -> Seeded:
    """Insert the operators' stories; return the ids by role."""
    s = Seeded()
    async with pool.acquire() as conn, conn.transaction():
        t = s.ids
        t["kuma_deploy"] = await add_task(
            conn,
            status="completed",
            request="Deploy Uptime Kuma 2.0 on the edge host",
            created_at=ago(days=2),
            services=("kuma", "traefik"),
            plan_steps=["back up the kuma volume", "pull the image", "recreate the stack"],
            steps=[
                ("backup kuma volume", "completed"),
                ("docker pull louislam/uptime-kuma", "completed"),
                ("portainer.stack.redeploy kuma", "completed"),
            ],
            cost=0.0412,
        )
        t["kuma_rollout"] = await add_task(
            conn,
            status="completed",
            request="Move kuma to 2.0.1",
            created_at=ago(days=1),
            services=("kuma",),
            plan_steps=["roll out kuma 2.0.1", "verify"],
            cost=0.01,
        )
        t["kuma_restart"] = await add_task(
            conn,
            status="completed",
            request="Kuma dashboard hangs",
            created_at=ago(days=3),
            services=("kuma",),
            steps=[("systemctl restart uptime-kuma", "completed")],
        )
        t["kuma_old"] = await add_task(
            conn,
            status="completed",
            request="Deploy kuma 1.23",
            created_at=ago(days=20),
            services=("kuma",),
        )
        t["dns_oom"] = await add_task(
            conn,
            status="failed",
            request="Bounce the DNS resolver",
            created_at=ago(days=1, hours=2),
            services=("dns",),
            steps=[("reboot coredns pod", "failed")],
            error=("resource", "OOMKilled", "coredns killed: out of memory"),
        )
        t["dns_steps"] = await add_task(
            conn,
            status="completed",
            request="DNS maintenance",
            created_at=ago(days=4),
            services=("dns",),
            steps=[("flush caches", "completed"), ("bounce coredns", "completed")],
        )
        t["billing_app"] = await add_task(
            conn,
            status="failed",
            request="Deploy the billing service",
            created_at=ago(days=4, hours=1),
            services=("billing", "postgres"),
            agent_type="code",
            steps=[
                ("pip install -r requirements.txt", "completed"),
                ("alembic upgrade head", "failed"),
            ],
            error=("application", "ImportError", "No module named 'billing.v2'"),
        )
        t["kuma_dns_dep"] = await add_task(
            conn,
            status="failed",
            request="Update the kuma DNS records",
            created_at=ago(days=5),
            services=("kuma", "dns"),
            error=("dependency", "ConnectionRefused", "pihole API refused the connection"),
        )
        t["gpu_oom"] = await add_task(
            conn,
            status="failed",
            request="Transcribe the meeting recording",
            created_at=ago(days=6),
            services=("whisper",),
            agent_type="research",
            error=("resource", "OOMKilled", "CUDA out of memory"),
        )
        t["stale"] = await add_task(
            conn,
            status="executing",
            request="Back up the postgres volume",
            created_at=ago(hours=3),
            last_event_at=ago(hours=2),
        )
        t["busy"] = await add_task(
            conn,
            status="executing",
            request="Rebuild the search index",
            created_at=ago(minutes=30),
            last_event_at=ago(seconds=20),
        )
        t["pending"] = await add_task(
            conn, status="pending", request="Install grafana", created_at=ago(minutes=10)
        )
        t["approved_waiting"] = await add_task(
            conn, status="approved", request="Renew the TLS certificates", created_at=ago(hours=5)
        )
        t["rejected"] = await add_task(
            conn, status="rejected", request="Wipe the NAS", created_at=ago(days=6, hours=5)
        )

        # A terminal event waiting for task.started (received long ago): an orphan.
        await add_event(
            conn, t["approved_waiting"], "task.completed", ago(hours=4), source="agents/infra-02"
        )
        # A second terminal event for a finished task: a conflict, not an orphan.
        first = await conn.fetchval(
            "SELECT event_id FROM event_ledger"
            " WHERE task_id = $1 AND event_type = 'task.completed'",
            t["kuma_restart"],
        )
        await add_event(
            conn,
            t["kuma_restart"],
            "task.failed",
            ago(days=2),
            source="agents/infra-01",
            conflict_with=first,
        )
        # Events of tasks never requested: one old (orphan), one fresh (not yet).
        await add_event(conn, s.orphan_task, "task.step", ago(hours=1), source="agents/infra-03")
        await add_event(
            conn, s.fresh_orphan_task, "task.started", ago(seconds=5), source="agents/infra-03"
        )

        # What waits and why.
        await conn.execute(
            """INSERT INTO pause_queue (task_id, work_plan_json, reason, paused_at, resume_after,
                                        priority, agent_type, required_gpu_vram_mb,
                                        required_cpu_cores, required_memory_mb, not_before,
                                        request_event_id)
               VALUES
                 ($1, $2, 'insufficient_capacity', $3, NULL, 2, 'infra', 0, 2.0, 4096, NULL, $4),
                      ($5, $6, 'manual_pause', $7, $8, 1, 'research', 8000, 4.0, 16384, $9, $10)""",
            t["pending"],
            {"task": "install grafana"},
            ago(minutes=9),
            uuid4(),
            s.unrequested_waiting,
            {"task": "transcribe"},
            ago(minutes=20),
            NOW + timedelta(hours=1),
            NOW + timedelta(minutes=5),
            uuid4(),
        )
        await conn.execute(
            """INSERT INTO dispatch_holds
                 (hold_key, scope, task_id, reason, resume_after, created_at)
               VALUES ($1, 'task', $2, 'wait for the dns migration', $3, $4)""",
            f"task:{s.unrequested_waiting}",
            s.unrequested_waiting,
            NOW + timedelta(hours=1),
            ago(minutes=20),
        )
        await conn.execute(
            """INSERT INTO pause_history (task_id, action, reason, trigger, agent_id, at)
               VALUES ($1, 'paused', 'insufficient_capacity', NULL, NULL, $2),
                      ($3, 'paused', 'insufficient_capacity', NULL, NULL, $4),
                      ($3, 'released', NULL, 'capacity', 'infra-01', $5)""",
            t["pending"],
            ago(minutes=9),
            t["kuma_deploy"],
            ago(days=2) + timedelta(seconds=40),
            ago(days=2) + timedelta(seconds=55),
        )
        await conn.execute(
            """INSERT INTO operator_actions (action, actor, at, params, event_id)
               VALUES ('pause', 'bob', $1, $2, $3), ('replay', 'alice', $4, '{}', NULL)""",
            ago(hours=1),
            {"scope": "task", "task_id": str(s.unrequested_waiting)},
            uuid4(),
            ago(days=10),
        )
    return s


@dataclass(frozen=True)
class SeededDb:
    """A database holding the seed, shared by the read-only tests of a module."""

    url: str
    seeded: Seeded


async def seed_url(url: str) -> Seeded:
    """Seed the database at ``url``; return the ids by role."""
    p = await db.create_pool(url, min_size=1, max_size=1)
    try:
        return await seed_examples(p)
    finally:
        await p.close()
