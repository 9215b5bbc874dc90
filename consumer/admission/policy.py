"""Admission policy: what an agent has left, what an entry needs, hold keys, triggers.

An agent is *usable* while its last report is fresh (``capacity_freshness_s``), it
accepts work and its load is under ``pause_threshold_pct`` (:class:`Policy`). What it
has left (:class:`Room`) is what it reported free minus what was reserved on it since;
a new report resets the reservations.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from consumer.broker import Names
from consumer.core.settings import Settings
from contracts import ControlScope, TriggerType

#: Most entries one capacity report (or one agent in one timer sweep) releases.
RELEASE_LIMIT = 500

#: Candidates locked per round while releasing to one agent.
CLAIM_CHUNK = 100

#: Most finished tasks' entries taken out per timer pass.
CANCEL_LIMIT = 500

#: Tolerance when comparing CPU cores (floats that were added and subtracted).
CPU_EPSILON = 1e-9

#: Chooses the trigger recorded for a released pause-queue entry.
TriggerFor = Callable[[Mapping[str, Any]], TriggerType]


def hold_key(scope: ControlScope, task_id: uuid.UUID | None) -> str:
    """The ``dispatch_holds`` key of a hold: ``all`` or ``task:<uuid>``."""
    if scope is ControlScope.ALL:
        return "all"
    return f"task:{task_id}"


def always(trigger: TriggerType) -> TriggerFor:
    """A :data:`TriggerFor` that gives every entry ``trigger``."""
    return lambda _entry: trigger


def timer_trigger(entry: Mapping[str, Any]) -> TriggerType:
    """Sweep trigger: ``timeout`` when a ``not_before`` held the entry back, else capacity."""
    return TriggerType.TIMEOUT if entry["not_before"] is not None else TriggerType.CAPACITY


def requirements(entry: Mapping[str, Any]) -> tuple[int, float, int]:
    """What a pause-queue entry requires: GPU memory (MB), CPU cores, memory (MB)."""
    return (
        int(entry["required_gpu_vram_mb"]),
        float(entry["required_cpu_cores"]),
        int(entry["required_memory_mb"]),
    )


@dataclass
class Room:
    """What an agent has left for new work."""

    gpu_vram_mb: int
    cpu_cores: float
    memory_mb: int

    @classmethod
    def of(cls, agent: Mapping[str, Any]) -> Room:
        """The room of an agent row (``rem_*`` columns)."""
        return cls(
            int(agent["rem_gpu_vram_mb"]),
            float(agent["rem_cpu_cores"]),
            int(agent["rem_memory_mb"]),
        )

    def take(self, entry: Mapping[str, Any]) -> bool:
        """Subtract what ``entry`` requires if it fits; returns whether it did."""
        gpu, cpu, mem = requirements(entry)
        if gpu > self.gpu_vram_mb or cpu > self.cpu_cores + CPU_EPSILON or mem > self.memory_mb:
            return False
        self.gpu_vram_mb -= gpu
        self.cpu_cores -= cpu
        self.memory_mb -= mem
        return True


@dataclass(frozen=True)
class Policy:
    """The settings admission decisions depend on."""

    names: Names
    freshness_s: float
    threshold_pct: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        """The policy of ``settings``."""
        return cls(
            names=Names(settings.prefix),
            freshness_s=settings.capacity_freshness_s,
            threshold_pct=settings.pause_threshold_pct,
        )
