"""One valid, realistic ``data`` payload per event type, for tests and documentation.

The payloads tell one story from a homelab: the orchestrator asks for Uptime Kuma to be
upgraded, an infra agent does it and touches kuma, portainer, dns and traefik on the
way. :func:`example_event` wraps any of them in a complete envelope.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from contracts.enums import EventType
from contracts.envelope import SERVICE_SOURCE, make_event

__all__ = ["EXAMPLES", "EXAMPLE_SOURCES", "EXAMPLE_TASK_ID", "example_event"]

EXAMPLE_TASK_ID: Final = UUID("6f1c2a9e-3b4d-4e8f-9a0b-1c2d3e4f5a6b")
"""The task every example is about."""

_TASK = str(EXAMPLE_TASK_ID)
_WORK_PLAN: dict[str, Any] = {
    "task": "upgrade uptime-kuma to 1.23.13",
    "steps": ["pull image louislam/uptime-kuma:1.23.13", "recreate stack kuma", "verify"],
    "stack": "kuma",
}

EXAMPLES: Final[dict[EventType, dict[str, Any]]] = {
    EventType.TASK_REQUESTED: {
        "request_text": "Upgrade Uptime Kuma to 1.23.13 and make sure kuma.home.lan still resolves",
        "created_by": "alice",
        "project_id": "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f",
        "plan": {
            "steps": [
                "back up the kuma volume",
                "pull the new image through portainer",
                "recreate the kuma stack",
                "check dns and the traefik route",
            ],
            "estimated_duration_seconds": 600,
            "complexity": "medium",
        },
        "estimated_resources": {
            "duration_seconds": 600,
            "gpu_vram_mb": 0,
            "cpu_cores": 1.0,
            "memory_mb": 512,
        },
        "services": ["kuma", "portainer", "dns", "traefik"],
    },
    EventType.TASK_APPROVED: {"approved_by": "alice"},
    EventType.TASK_REJECTED: {"reason": "maintenance window closed; retry after 22:00"},
    EventType.TASK_STARTED: {"agent_id": "infra-01", "agent_type": "infra"},
    EventType.TASK_STEP: {
        "step_number": 2,
        "agent_type": "infra",
        "action": "portainer.stack.redeploy kuma",
        "status": "completed",
        "output_summary": "stack kuma redeployed; container uptime-kuma healthy",
        "output_full": {"stack": "kuma", "endpoint": 2, "containers": ["uptime-kuma"]},
        "duration_ms": 18_450,
    },
    EventType.TASK_COMPLETED: {
        "services_touched": ["kuma", "portainer", "dns", "traefik"],
        "outcome": {
            "success": True,
            "output_summary": "Uptime Kuma 1.23.13 running; kuma.home.lan answers 200 via traefik",
            "last_lines": [
                "dig +short kuma.home.lan -> 192.168.1.20",
                "curl -sI https://kuma.home.lan -> HTTP/2 200",
            ],
        },
        "actual_resources": {
            "duration_seconds": 413,
            "cpu_time_ms": 35_210,
            "gpu_vram_mb_used": 0,
            "peak_memory_mb": 384,
            "agent_load_pct": 37.5,
        },
        "external_ai_used": [
            {
                "provider": "anthropic",
                "model": "claude-sonnet-4",
                "token_count": 5230,
                "cost_usd": 0.0412,
            }
        ],
    },
    EventType.TASK_FAILED: {
        "services_touched": ["portainer", "traefik"],
        "outcome": {
            "success": False,
            "error_type": "HealthcheckTimeout",
            "error_cause": "dependency",
            "error_message": "traefik returned 502 for kuma.home.lan after 120 s",
            "stack_trace": None,
            "last_lines": [
                "waiting for kuma.home.lan ... 502",
                "giving up after 120 s",
            ],
        },
        "actual_resources": {
            "duration_seconds": 188,
            "cpu_time_ms": 12_030,
            "gpu_vram_mb_used": 0,
            "peak_memory_mb": 301,
            "agent_load_pct": 64.0,
        },
        "external_ai_used": None,
        "failed_step": 4,
        "resource_state": {"kuma": "restarting", "traefik_router": "kuma@docker: no healthy"},
    },
    EventType.DISPATCH_REQUESTED: {
        "work_plan": _WORK_PLAN,
        "required": {"gpu_vram_mb": 0, "cpu_cores": 1.0, "memory_mb": 512},
        "agent_type": "infra",
        "priority": 2,
        "not_before": None,
    },
    EventType.CAPACITY_REPORTED: {
        "agent_id": "infra-01",
        "agent_type": "infra",
        "free": {"gpu_vram_mb": 0, "cpu_cores": 3.5, "memory_mb": 6144},
        "load_pct": 22.5,
        "accepting": True,
    },
    EventType.CONTROL_PAUSE: {
        "scope": "task",
        "task_id": _TASK,
        "reason": "hold the kuma upgrade until the dns migration is done",
        "resume_after": "2025-06-01T22:00:00+02:00",
    },
    EventType.CONTROL_RESUME: {"scope": "task", "task_id": _TASK, "force": False},
    EventType.DISPATCH_ASSIGNED: {
        "task_id": _TASK,
        "agent_id": "infra-01",
        "work_plan": _WORK_PLAN,
        "trigger": "capacity",
    },
    EventType.TASK_RECOVERY_REQUESTED: {
        "task_id": _TASK,
        "agent_id": "infra-01",
        "agent_type": "infra",
        "last_event_at": "2025-06-01T20:15:00+00:00",
        "stale_seconds": 1800.0,
    },
    EventType.TASK_SUGGESTED: {
        "suggestions": [
            {"suggestion": "pin the kuma image tag", "reason": "latest pulled a broken build"}
        ],
    },
    EventType.SUGGESTION_RESOLVED: {
        "suggestion_id": "0b7e4a52-93c1-4f0e-a6d2-5c8b1e9f3a74",
        "resolution": "applied",
        "resolved_by": "alice",
        "note": "tag pinned in compose.yml",
    },
}
"""A valid ``data`` payload for every event type."""

EXAMPLE_SOURCES: Final[dict[EventType, str]] = {
    EventType.TASK_REQUESTED: "orchestrator",
    EventType.TASK_APPROVED: "orchestrator",
    EventType.TASK_REJECTED: "orchestrator",
    EventType.TASK_STARTED: "agents/infra-01",
    EventType.TASK_STEP: "agents/infra-01",
    EventType.TASK_COMPLETED: "agents/infra-01",
    EventType.TASK_FAILED: "agents/infra-01",
    EventType.DISPATCH_REQUESTED: "orchestrator",
    EventType.CAPACITY_REPORTED: "agents/infra-01",
    EventType.CONTROL_PAUSE: "ops/alice",
    EventType.CONTROL_RESUME: "ops/alice",
    EventType.DISPATCH_ASSIGNED: SERVICE_SOURCE,
    EventType.TASK_RECOVERY_REQUESTED: SERVICE_SOURCE,
    EventType.TASK_SUGGESTED: "agents/postmortem",
    EventType.SUGGESTION_RESOLVED: "ops/alice",
}
"""A plausible ``source`` for every event type."""


def example_event(
    event_type: EventType,
    *,
    task_id: UUID = EXAMPLE_TASK_ID,
    id: UUID | None = None,
    time: datetime | None = None,
) -> bytes:
    """Return a complete, valid message body carrying ``EXAMPLES[event_type]``.

    ``task_id`` becomes the subject of ``task.*``/``dispatch.*`` messages and replaces
    the example task in ``data`` (``task_id`` of the outbound and control types).
    """
    data = copy.deepcopy(EXAMPLES[event_type])
    if "task_id" in data:
        data["task_id"] = str(task_id)
    subject = task_id if event_type.requires_subject else None
    return make_event(
        event_type,
        data,
        source=EXAMPLE_SOURCES[event_type],
        subject=subject,
        id=id,
        time=time,
    )
