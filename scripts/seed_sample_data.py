"""Load realistic sample data: homelab tasks in every status, with their execution steps.

    python scripts/seed_sample_data.py [--database-url URL] [--seed N]

The database must be migrated (``taskledger migrate``). Rows are written directly with
SQL in their final state (the immutability triggers guard UPDATE and DELETE, not
INSERT); the event ledger is left empty, so this data shows the audit queries, not the
consumer. The data is deterministic for a given seed (ids, texts, durations); times are
spread over the last ten days before now. Running it twice with the same seed adds
nothing the second time (ids are derived from the seed).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

import asyncpg
import orjson
import typer

from consumer.audit.fold import ai_summary
from consumer.cli.common import EXIT_UNAVAILABLE, fail, load_settings
from consumer.cli.common import run as run_cli
from consumer.store.db import connect

STATUSES = ("pending", "approved", "executing", "completed", "failed", "rejected")
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Failure:
    """How a template's task goes wrong, at which step, and what the agent reports."""

    error_type: str
    cause: str  # resource | application | dependency
    message: str
    step: int  # 1-based step that fails
    suggestion: str
    stack_trace: str | None = None
    resource_state: dict[str, Any] | None = None


@dataclass(frozen=True)
class Template:
    """A kind of request the homelab sees, with the steps an agent takes for it."""

    agent_type: str
    request: str
    services: tuple[str, ...]
    steps: tuple[tuple[str, str], ...]  # (action, output summary)
    failure: Failure
    complexity: str = "medium"
    memory_mb: int = 512
    gpu_vram_mb: int = 0
    uses_ai: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


TEMPLATES: tuple[Template, ...] = (
    Template(
        "infra",
        "Upgrade Uptime Kuma to 1.23.15 and confirm every monitor still reports up",
        ("kuma", "portainer"),
        (
            ("portainer: pull louislam/uptime-kuma:1.23.15", "pulled 1.23.15 (152 MB)"),
            ("portainer: redeploy stack monitoring", "stack monitoring redeployed"),
            ("wait for the kuma container healthcheck", "kuma healthy after 18 s"),
            ("kuma api: list monitors", "42 monitors, 42 up"),
        ),
        Failure(
            "HealthcheckTimeout",
            "application",
            "kuma did not become healthy in 120 s: SQLITE_BUSY: database is locked",
            3,
            "stop the old container before starting the new one; check the kuma volume",
            stack_trace="Error: SQLITE_BUSY: database is locked\n    at Database.run (sqlite3)",
        ),
    ),
    Template(
        "infra",
        "Renew the wildcard certificate for *.home.lan on Traefik before it expires",
        ("traefik", "dns"),
        (
            ("traefik: read the ACME store", "3 certificates, *.home.lan expires in 6 days"),
            ("dns: create _acme-challenge TXT record", "TXT record created, ttl 60"),
            ("traefik: request renewal for *.home.lan", "certificate issued by Let's Encrypt R11"),
            ("dns: remove _acme-challenge TXT record", "TXT record removed"),
            ("verify the certificate served on grafana.home.lan", "valid until in 90 days"),
        ),
        Failure(
            "DNS01ChallengeFailed",
            "dependency",
            "TXT record for _acme-challenge.home.lan not visible on 1.1.1.1 after 120 s",
            3,
            "check propagation on the public resolver; raise the challenge delay",
        ),
    ),
    Template(
        "infra",
        "Publish grafana.home.lan through Traefik behind Authelia forward auth",
        ("dns", "traefik", "auth", "grafana"),
        (
            ("dns: add A record grafana.home.lan", "grafana.home.lan -> 192.168.1.20"),
            ("auth: add access rule for grafana.home.lan", "rule two_factor for group admins"),
            ("traefik: add router grafana with middleware authelia", "router grafana@docker up"),
            ("curl https://grafana.home.lan", "302 to auth.home.lan, then 200 after login"),
        ),
        Failure(
            "ConfigInvalid",
            "application",
            "traefik: middleware authelia@docker does not exist (router grafana@docker)",
            3,
            "declare the authelia middleware on the auth container labels first",
        ),
        complexity="high",
    ),
    Template(
        "infra",
        "Raise the Nextcloud PHP memory limit to 1G and restart it",
        ("nextcloud", "portainer"),
        (
            ("portainer: edit env PHP_MEMORY_LIMIT=1G", "stack nextcloud env updated"),
            ("portainer: restart container nextcloud", "nextcloud restarted"),
            ("nextcloud occ status", "installed: true, maintenance: false"),
            ("nextcloud occ files:scan --all", "scanned 181 224 files in 312 s"),
        ),
        Failure(
            "OOMKilled",
            "resource",
            "container nextcloud OOMKilled during occ files:scan (limit 2048 MB)",
            4,
            "raise the container memory limit to 4 GB or scan one user at a time",
            resource_state={"memory_limit_mb": 2048, "peak_memory_mb": 2047, "swap_used_mb": 0},
        ),
        memory_mb=2048,
    ),
    Template(
        "infra",
        "Back up the Portainer and Grafana volumes to the NAS",
        ("portainer", "grafana"),
        (
            ("portainer: stop stack grafana", "stack grafana stopped"),
            ("tar portainer_data to /mnt/nas/backups", "portainer_data.tar.zst, 84 MB"),
            ("tar grafana_data to /mnt/nas/backups", "grafana_data.tar.zst, 412 MB"),
            ("portainer: start stack grafana", "stack grafana running"),
        ),
        Failure(
            "DiskFull",
            "resource",
            "No space left on device: /mnt/nas/backups (99% of 2 TB used)",
            3,
            "prune backups older than 30 days on the NAS",
            resource_state={"disk_free_mb": 310, "disk_total_mb": 2_000_000},
        ),
    ),
    Template(
        "infra",
        "Update the DNS blocklists and flush the resolver cache",
        ("dns",),
        (
            ("dns: fetch blocklists", "5 lists, 1 204 331 domains"),
            ("dns: reload blocklists", "reloaded in 2.1 s"),
            ("dns: flush cache", "cache flushed"),
            ("dig @192.168.1.2 doubleclick.net", "0.0.0.0 (blocked)"),
        ),
        Failure(
            "UpstreamUnavailable",
            "dependency",
            "resolver answered SERVFAIL: upstream 1.1.1.1 unreachable after the reload",
            4,
            "check the resolver's upstream settings and the WAN link, then rerun the check",
        ),
        complexity="low",
    ),
    Template(
        "desktop",
        "Move the ISO images from the workstation Downloads folder to the NAS share",
        ("nextcloud",),
        (
            ("list ~/Downloads/*.iso", "7 files, 24.6 GB"),
            ("copy ISOs to \\\\nas\\isos", "7 files copied, checksums match"),
            ("nextcloud: rescan external storage isos", "external storage isos rescanned"),
            ("delete the local copies", "24.6 GB freed"),
        ),
        Failure(
            "ExternalStorageUnavailable",
            "dependency",
            "nextcloud: external storage 'isos' is unavailable (SMB: authentication failed)",
            3,
            "update the SMB credentials of the isos external storage in Nextcloud",
        ),
        complexity="low",
    ),
    Template(
        "desktop",
        "Pin the new Grafana home dashboards in the browser on the office desktop",
        ("grafana",),
        (
            ("grafana: list dashboards tagged home", "6 dashboards"),
            ("open firefox profile office", "profile office opened"),
            ("add bookmarks to the toolbar folder Homelab", "6 bookmarks added"),
        ),
        Failure(
            "ProfileLocked",
            "application",
            "places.sqlite of Firefox profile 'office' is locked by a running instance",
            3,
            "close the running browser before the agent edits the profile",
        ),
        complexity="low",
    ),
    Template(
        "code",
        "Fix the kuma healthcheck script in homelab-ops that reports false outages",
        ("kuma",),
        (
            ("git clone homelab-ops", "cloned at 9f2c41e"),
            ("read scripts/kuma_check.py and the last 20 alerts", "timeout is 2 s, p95 is 2.4 s"),
            ("edit: timeout from settings, retry once", "1 file changed, 14 insertions"),
            ("run pytest", "33 passed"),
            ("kuma: update push monitor healthcheck", "monitor 17 updated"),
        ),
        Failure(
            "TestFailure",
            "application",
            "pytest: 2 failed, 31 passed (test_retry_after_timeout, test_alert_once)",
            4,
            "the retry changes alert timing: update the two tests or keep one alert per outage",
            stack_trace="FAILED tests/test_kuma_check.py::test_retry_after_timeout",
        ),
        uses_ai=True,
    ),
    Template(
        "code",
        "Write a Grafana dashboard for Traefik request latency per router",
        ("grafana", "traefik"),
        (
            ("traefik: list routers and metrics", "11 routers, histogram metrics enabled"),
            ("generate dashboard JSON (p50/p95/p99 per router)", "dashboard with 4 panels"),
            ("grafana: import dashboard", "dashboard traefik-latency imported"),
            ("grafana: render the panels", "all panels return data"),
        ),
        Failure(
            "QueryError",
            "application",
            "grafana: bad_data: invalid parameter 'query': parse error at char 41",
            4,
            "escape the router label in the PromQL template variable",
        ),
        uses_ai=True,
    ),
    Template(
        "research",
        "Compare Authelia and Authentik for homelab SSO and recommend one",
        ("auth",),
        (
            ("collect docs and release notes of both projects", "38 pages collected"),
            ("check resource needs on the current host", "authentik needs 2 GB more memory"),
            ("summarise features with the local model", "feature matrix of 24 rows"),
            ("write recommendation", "recommend Authelia: lighter, already deployed"),
        ),
        Failure(
            "GpuOutOfMemory",
            "resource",
            "local model needs 10240 MB of VRAM, 6144 MB free on gpu0",
            3,
            "run the summary on the external provider or wait for the GPU to be free",
            resource_state={"gpu_vram_mb_free": 6144, "gpu_vram_mb_total": 12288},
        ),
        gpu_vram_mb=8192,
        memory_mb=4096,
        uses_ai=True,
    ),
    Template(
        "research",
        "Find out why the Nextcloud cron job takes 20 minutes since the last upgrade",
        ("nextcloud",),
        (
            ("nextcloud: read cron.log of the last 7 days", "median run 19 min 40 s"),
            ("nextcloud occ background-job:list", "preview generation job runs every time"),
            ("search upstream issues", "known issue #41382, fixed in 28.0.4"),
            ("write findings", "upgrade to 28.0.4 or disable preview pre-generation"),
        ),
        Failure(
            "ProviderRateLimited",
            "dependency",
            "external AI provider answered 429 Too Many Requests after 3 retries",
            3,
            "retry later or lower the request rate of research agents",
        ),
        uses_ai=True,
    ),
)

REJECTIONS = (
    "touches production DNS outside the maintenance window",
    "plan deletes volumes without a backup step",
    "duplicate of a task already running",
    "needs the GPU host, which is reserved for the weekend",
    "request too vague: which service?",
)
PEOPLE = ("alice", "bob", "carol", "scheduler")
#: The sample's two projects ("homelab" and "media"), as UUIDs (tasks.project_id).
PROJECTS = (
    uuid.UUID("6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f"),
    uuid.UUID("0b7e4a52-93c1-4f0e-a6d2-5c8b1e9f3a74"),
)
AI_MODELS = (
    ("anthropic", "claude-sonnet-4", Decimal("0.000009")),
    ("openai", "gpt-4.1-mini", Decimal("0.0000016")),
    ("mistral", "mistral-large", Decimal("0.000006")),
)
AGENT_SPEED_MS = {"infra": (1_500, 60_000), "desktop": (800, 20_000), "code": (4_000, 180_000),
                  "research": (10_000, 400_000)}  # fmt: skip

INSERT_TASK = """
INSERT INTO tasks (
    task_id, status, request_text, created_by, project_id, plan, services_requested,
    agent_id, agent_type, approved_by, approved_at, started_at, completed_at,
    rejected_reason, error_message, services_touched, outcome,
    estimated_resources, actual_resources, external_ai_used, cost_usd, error_type,
    error_cause, failed_step, resource_state, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
        $17::text::jsonb, $18::text::jsonb, $19::text::jsonb, $20::text::jsonb,
        $21, $22, $23, $24, $25::text::jsonb, $26, $27)
ON CONFLICT (task_id) DO NOTHING
RETURNING task_id
"""
TASK_COLUMNS = (
    "task_id", "status", "request_text", "created_by", "project_id", "plan",
    "services_requested", "agent_id", "agent_type", "approved_by", "approved_at",
    "started_at", "completed_at", "rejected_reason", "error_message", "services_touched",
    "outcome", "estimated_resources", "actual_resources", "external_ai_used",
    "cost_usd", "error_type", "error_cause", "failed_step", "resource_state", "created_at",
    "updated_at",
)  # fmt: skip
JSON_COLUMNS = frozenset(
    ("plan", "outcome", "suggestions", "estimated_resources", "actual_resources",
     "external_ai_used", "resource_state", "output_full", "work_plan_json")
)  # fmt: skip

INSERT_LOG = """
INSERT INTO execution_logs (log_id, event_id, task_id, step_number, agent_type, action,
                            status, output_summary, output_full, duration_ms, timestamp)
VALUES ($1, $1, $2, $3, $4, $5, $6, $7, $8::text::jsonb, $9, $10)
ON CONFLICT (event_id, recorded_at) DO NOTHING  -- 013: execution_logs is partitioned
RETURNING log_id
"""
LOG_COLUMNS = ("event_id", "task_id", "step_number", "agent_type", "action", "status",
               "output_summary", "output_full", "duration_ms", "timestamp")  # fmt: skip

INSERT_SUGGESTION = """
INSERT INTO task_suggestions (suggestion_id, task_id, position, suggestion, reason, created_at,
                              source)
VALUES ($1, $2, $3, $4, $5, $6, 'agents/postmortem')
ON CONFLICT (suggestion_id) DO NOTHING
"""

INSERT_PAUSE = """
INSERT INTO pause_queue (task_id, work_plan_json, reason, paused_at, resume_after, priority,
                         agent_type, required_gpu_vram_mb, required_cpu_cores,
                         required_memory_mb, request_event_id)
VALUES ($1, $2::text::jsonb, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (task_id) DO NOTHING
RETURNING id
"""
PAUSE_COLUMNS = ("task_id", "work_plan_json", "reason", "paused_at", "resume_after", "priority",
                 "agent_type", "required_gpu_vram_mb", "required_cpu_cores",
                 "required_memory_mb", "request_event_id")  # fmt: skip

INSERT_PAUSE_HISTORY = """
INSERT INTO pause_history (task_id, action, reason, event_id, at, details)
VALUES ($1, 'paused', $2, $3, $4, $5::text::jsonb)
"""


def _args(row: dict[str, Any], columns: tuple[str, ...]) -> list[Any]:
    """Positional arguments for ``columns``; JSON values go as text (no codec needed)."""
    return [
        orjson.dumps(row.get(c)).decode() if c in JSON_COLUMNS and row.get(c) is not None
        else row.get(c)
        for c in columns
    ]  # fmt: skip


@dataclass
class Sample:
    """The rows of one task: the task, its steps, and its pause-queue entry if waiting."""

    task: dict[str, Any]
    logs: list[dict[str, Any]] = field(default_factory=list)
    pause: dict[str, Any] | None = None


class SampleBuilder:
    """Builds deterministic sample rows from one random generator and a fixed "now"."""

    def __init__(self, rng: random.Random, now: datetime) -> None:
        self.rng = rng
        self.now = now

    def uuid(self) -> uuid.UUID:
        """A version-4 UUID drawn from the seeded generator."""
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    def templates(self, count: int) -> list[Template]:
        """``count`` templates for one status, at least one touching kuma and one using AI.

        So every status has something for "what touched kuma" and "what did AI cost".
        """
        chosen = [
            self.rng.choice([t for t in TEMPLATES if "kuma" in t.services]),
            self.rng.choice([t for t in TEMPLATES if t.uses_ai]),
        ]
        chosen += [self.rng.choice(TEMPLATES) for _ in range(count - len(chosen))]
        self.rng.shuffle(chosen)
        return chosen

    def created_at(self, status: str, index: int, count: int) -> datetime:
        """Creation time: waiting work is recent; finished work spreads over 10 days.

        (Executing tasks are moved afterwards so their last step is recent.)
        """
        span = {"pending": 2 * DAY, "approved": 2 * DAY}.get(status, 10 * DAY)
        # One slice of the span per task, so each status covers its whole span.
        ago = span * (index + self.rng.uniform(0.1, 0.9)) / count
        return (self.now - ago).replace(microsecond=0)

    def base_task(self, template: Template, status: str, created: datetime) -> dict[str, Any]:
        """The columns every task has, whatever its status."""
        steps = [action for action, _ in template.steps]
        return {
            "task_id": self.uuid(),
            "status": status,
            "request_text": template.request,
            "created_by": self.rng.choice(PEOPLE),
            "project_id": PROJECTS[len(template.request) % len(PROJECTS)],
            "plan": {
                "steps": steps,
                "estimated_duration_seconds": 60 * len(steps) * self.rng.randint(1, 5),
                "complexity": template.complexity,
            },
            "services_requested": list(template.services),
            "estimated_resources": {
                "duration_seconds": 60 * len(steps) * self.rng.randint(1, 5),
                "gpu_vram_mb": template.gpu_vram_mb,
                "cpu_cores": self.rng.choice((0.5, 1.0, 2.0)),
                "memory_mb": template.memory_mb,
            },
            "services_touched": [],
            "created_at": created,
            "updated_at": created,
        }

    def approve(self, task: dict[str, Any]) -> datetime:
        """Mark the task approved a few minutes after it was requested; returns when."""
        approved_at: datetime = task["created_at"] + timedelta(seconds=self.rng.randint(30, 900))
        task.update(approved_by=self.rng.choice(PEOPLE[:3]), approved_at=approved_at)
        task["updated_at"] = approved_at
        return approved_at

    def run_steps(
        self, task: dict[str, Any], template: Template, started: datetime, last_status: str
    ) -> tuple[list[dict[str, Any]], datetime]:
        """Step rows up to the last one (which gets ``last_status``); returns them and the end."""
        agent_type = template.agent_type
        count = template.failure.step if last_status == "failed" else len(template.steps)
        low, high = AGENT_SPEED_MS[agent_type]
        at = started
        logs: list[dict[str, Any]] = []
        for number, (action, summary) in enumerate(template.steps[:count], start=1):
            status = last_status if number == count else "completed"
            duration = None if status == "running" else self.rng.randint(low, high)
            output = template.failure.message if status == "failed" else summary
            logs.append(
                {
                    "event_id": self.uuid(),
                    "task_id": task["task_id"],
                    "step_number": number,
                    "agent_type": agent_type,
                    "action": action,
                    "status": status,
                    "output_summary": output[:500],
                    "output_full": {
                        "stdout_tail": [output],
                        "exit_code": 1 if status == "failed" else 0,
                    },
                    "duration_ms": duration,
                    "timestamp": at,
                }
            )
            at += timedelta(milliseconds=(duration or 0) + self.rng.randint(200, 3_000))
        return logs, at

    def start(self, task: dict[str, Any], template: Template) -> datetime:
        """Mark the task started by an agent of the template's type; returns when."""
        started = self.approve(task) + timedelta(seconds=self.rng.randint(5, 600))
        task.update(
            agent_type=template.agent_type,
            agent_id=f"{template.agent_type}-{self.rng.randint(1, 3):02d}",
            started_at=started,
            updated_at=started,
        )
        return started

    def ai_use(self, template: Template) -> list[dict[str, Any]] | None:
        """External AI calls of the task (one or two) if its kind of work uses AI."""
        if not template.uses_ai:
            return None
        calls = []
        for _ in range(self.rng.randint(1, 2)):
            provider, model, per_token = self.rng.choice(AI_MODELS)
            tokens = self.rng.randint(2_000, 120_000)
            calls.append(
                {
                    "provider": provider,
                    "model": model,
                    "token_count": tokens,
                    "cost_usd": float(round(per_token * tokens, 6)),
                }
            )
        return calls

    def finish(
        self, task: dict[str, Any], template: Template, logs: list[dict[str, Any]], end: datetime
    ) -> None:
        """Resource use, AI use and the end time of a task that completed or failed."""
        busy_ms = sum(log["duration_ms"] or 0 for log in logs)
        calls = self.ai_use(template)
        task.update(
            completed_at=end,
            updated_at=end,
            actual_resources={
                "duration_seconds": round((end - task["started_at"]).total_seconds()),
                "cpu_time_ms": int(busy_ms * self.rng.uniform(0.05, 0.6)),
                "gpu_vram_mb_used": int(template.gpu_vram_mb * self.rng.uniform(0.6, 0.95)),
                "peak_memory_mb": int(template.memory_mb * self.rng.uniform(0.3, 0.9)),
                "agent_load_pct": round(self.rng.uniform(8, 85), 1),
            },
            external_ai_used=calls,
            cost_usd=sum((Decimal(str(c["cost_usd"])) for c in calls), Decimal(0))
            if calls
            else None,
        )

    def record_success(
        self, task: dict[str, Any], template: Template, logs: list[dict[str, Any]]
    ) -> None:
        """Outcome of a successful task."""
        task["services_touched"] = list(template.services)
        task["outcome"] = {
            "success": True,
            "output_summary": template.steps[-1][1],
            "last_lines": [log["output_summary"] for log in logs[-3:]],
        }

    def record_failure(
        self, task: dict[str, Any], template: Template, logs: list[dict[str, Any]]
    ) -> None:
        """Outcome, cause and suggestion of a failed task."""
        failure = template.failure
        # A task that failed on its first step touched only the first service it went to.
        touched = template.services if failure.step > 1 else template.services[:1]
        task.update(
            services_touched=list(touched),
            outcome={
                "success": False,
                "error_type": failure.error_type,
                "error_cause": failure.cause,
                "error_message": failure.message,
                "stack_trace": failure.stack_trace,
                "last_lines": [log["output_summary"] for log in logs[-3:]],
            },
            error_type=failure.error_type,
            error_cause=failure.cause,
            error_message=failure.message,
            failed_step=failure.step,
            resource_state=failure.resource_state,
        )
        # A post-mortem agent's suggestion, added after the task ran (task_suggestions).
        task["suggestions"] = [
            {
                "suggestion": failure.suggestion,
                "reason": f"{failure.cause} failure at step {failure.step}: {failure.error_type}",
                "created_at": task["completed_at"],
            }
        ]

    def sample(self, status: str, template: Template, created: datetime) -> Sample:
        """All rows of one task in ``status``."""
        task = self.base_task(template, status, created)
        result = Sample(task)
        if status == "approved":
            self.approve(task)
        elif status == "rejected":
            task.update(rejected_reason=self.rng.choice(REJECTIONS))
            task["updated_at"] = created + timedelta(seconds=self.rng.randint(30, 3_600))
        elif status != "pending":
            started = self.start(task, template)
            last = {"executing": "running", "completed": "completed", "failed": "failed"}[status]
            result.logs, end = self.run_steps(task, template, started, last)
            if status == "executing":
                # Still running: its last step began between a minute and 40 minutes ago
                # (some of them are past the stale limit, as in real life).
                last_step = self.now - timedelta(seconds=self.rng.randint(60, 2_400))
                self.shift(task, result.logs, last_step - result.logs[-1]["timestamp"])
                task["updated_at"] = result.logs[-1]["timestamp"]
            else:
                self.finish(task, template, result.logs, end)
                record = self.record_success if status == "completed" else self.record_failure
                record(task, template, result.logs)
        return result

    @staticmethod
    def shift(task: dict[str, Any], logs: list[dict[str, Any]], delta: timedelta) -> None:
        """Move every time of a task and its steps by ``delta``."""
        for key in ("created_at", "updated_at", "approved_at", "started_at", "completed_at"):
            if task.get(key) is not None:
                task[key] += delta
        for log in logs:
            log["timestamp"] += delta

    def pause_entry(self, task: dict[str, Any], agent_type: str, reason: str) -> dict[str, Any]:
        """A pause-queue entry for an approved task waiting for capacity or an operator."""
        estimated = task["estimated_resources"]
        paused_at = task["approved_at"] + timedelta(seconds=self.rng.randint(1, 30))
        return {
            "task_id": task["task_id"],
            "work_plan_json": {"request_text": task["request_text"], **task["plan"]},
            "reason": reason,
            "paused_at": paused_at,
            "resume_after": self.now + timedelta(hours=2) if reason == "manual_pause" else None,
            "priority": self.rng.randint(1, 5),
            "agent_type": agent_type,
            "required_gpu_vram_mb": estimated["gpu_vram_mb"],
            "required_cpu_cores": estimated["cpu_cores"],
            "required_memory_mb": estimated["memory_mb"],
            "request_event_id": self.uuid(),
        }

    def build(self) -> Iterator[Sample]:
        """5 to 10 tasks of every status; three approved ones wait in the pause queue."""
        for status in STATUSES:
            count = self.rng.randint(5, 10)
            for index, template in enumerate(self.templates(count)):
                sample = self.sample(status, template, self.created_at(status, index, count))
                if status == "approved" and index < 3:
                    reason = "manual_pause" if index == 2 else "insufficient_capacity"
                    sample.pause = self.pause_entry(sample.task, template.agent_type, reason)
                yield sample


async def _write(conn: asyncpg.Connection, samples: list[Sample]) -> tuple[int, int]:
    tasks = logs = 0
    for sample in samples:
        # The task row stores the summary of the external AI calls, as the projection does.
        row = {**sample.task, "external_ai_used": ai_summary(sample.task.get("external_ai_used"))}
        if await conn.fetchval(INSERT_TASK, *_args(row, TASK_COLUMNS)) is None:
            continue  # already seeded with this seed
        tasks += 1
        for n, item in enumerate(sample.task.get("suggestions") or [], start=1):
            await conn.execute(
                INSERT_SUGGESTION,
                uuid.uuid5(sample.task["task_id"], f"suggestion:{n}"),
                sample.task["task_id"],
                n,
                item["suggestion"],
                item["reason"],
                item["created_at"],
            )
        for log in sample.logs:
            if await conn.fetchval(INSERT_LOG, *_args(log, LOG_COLUMNS)) is not None:
                logs += 1
        entry = sample.pause
        if entry is not None and await conn.fetchval(INSERT_PAUSE, *_args(entry, PAUSE_COLUMNS)):
            await conn.execute(
                INSERT_PAUSE_HISTORY,
                entry["task_id"],
                entry["reason"],
                entry["request_event_id"],
                entry["paused_at"],
                orjson.dumps({"priority": entry["priority"], "seeded": True}).decode(),
            )
    return tasks, logs


async def seed(
    conn_or_pool: asyncpg.Connection | asyncpg.Pool, *, seed: int = 7
) -> tuple[int, int]:
    """Insert the sample data for ``seed`` in one transaction.

    Returns (tasks created, execution logs created); both are 0 when this seed was
    already loaded. Raises asyncpg errors (e.g. ``UndefinedTableError`` on a database
    that was not migrated).
    """
    samples = list(SampleBuilder(random.Random(seed), datetime.now(UTC)).build())
    if isinstance(conn_or_pool, asyncpg.Pool):
        async with conn_or_pool.acquire() as conn, conn.transaction():
            return await _write(conn, samples)
    async with conn_or_pool.transaction():
        return await _write(conn_or_pool, samples)


async def _main(dsn: str, seed_value: int) -> tuple[int, int]:
    conn = await connect(dsn)
    try:
        return await seed(conn, seed=seed_value)
    finally:
        await conn.close()


app = typer.Typer(add_completion=False)


@app.command()
def main(
    database_url: Annotated[
        str | None,
        typer.Option(help="PostgreSQL URL (default: TASKLEDGER_DATABASE_URL)", show_default=False),
    ] = None,
    seed_value: Annotated[int, typer.Option("--seed", help="Random seed of the sample")] = 7,
) -> None:
    """Load sample tasks in every status, with execution steps, into a migrated database."""
    settings = load_settings(database_url=database_url)
    try:
        tasks, logs = run_cli(_main(settings.dsn, seed_value))
    except asyncpg.UndefinedTableError:
        fail("the database is not migrated: run `taskledger migrate` first", EXIT_UNAVAILABLE)
    except asyncpg.PostgresError as exc:
        fail(f"{type(exc).__name__}: {exc}", 1)
    print(f"Created {tasks} tasks with {logs} execution logs")


if __name__ == "__main__":
    app()
