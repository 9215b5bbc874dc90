"""SQLAlchemy 2 typed models: the one description of the schema.

Alembic's environment takes its metadata from here and a migration test proves the
migrated database and these models agree. Triggers, functions and grants live in the
migrations (SQL); the names of those objects are kept in :mod:`consumer.schema_sql`.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TASK_STATUSES = ("pending", "approved", "executing", "completed", "failed", "rejected")
TERMINAL_STATUSES = ("completed", "failed", "rejected")


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    """Declarative base carrying the constraint naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)

    def __repr__(self) -> str:
        pk = ", ".join(
            f"{c.key}={getattr(self, c.key, None)!r}" for c in self.__table__.primary_key
        )
        return f"<{type(self).__name__} {pk}>"


TZ = DateTime(timezone=True)


class Task(Base):
    """One task: the projection of its lifecycle events (furthest state seen)."""

    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint(_in("status", TASK_STATUSES), name="status"),
        Index("ix_tasks_created_at", "created_at"),
        Index("ix_tasks_status", "status"),
        Index("idx_tasks_status_created_at", "status", text("created_at DESC")),
        Index("idx_tasks_services_touched", "services_touched", postgresql_using="gin"),
        Index("ix_tasks_created_at_task_id", "created_at", "task_id"),
        Index("ix_tasks_project_id", "project_id", "created_at"),
        Index(
            "ix_tasks_failed_created_at",
            "created_at",
            postgresql_include=["error_cause", "error_type"],
            postgresql_where=text("status = 'failed'"),
        ),
        Index(
            "ix_tasks_failed_cause_type",
            "error_cause",
            "error_type",
            "created_at",
            postgresql_where=text("status = 'failed'"),
        ),
    )

    task_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    request_text: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(Text)
    # 008: a UUID, as the plan has it (nullable, for grouping tasks by project)
    project_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    plan: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    services_requested: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    agent_id: Mapped[str | None] = mapped_column(Text)
    agent_type: Mapped[str | None] = mapped_column(String(16))
    approved_by: Mapped[str | None] = mapped_column(Text)
    approved_at: Mapped[datetime | None] = mapped_column(TZ)
    started_at: Mapped[datetime | None] = mapped_column(TZ)
    completed_at: Mapped[datetime | None] = mapped_column(TZ)
    rejected_reason: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    # 004_audit_columns
    services_touched: Mapped[list[str]] = mapped_column(
        ARRAY(Text), server_default=text("'{}'::text[]")
    )
    outcome: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    estimated_resources: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    actual_resources: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # 008: a summary {model, provider, token_count, cost_usd, calls} (see migration 008)
    external_ai_used: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    cost_usd: Mapped[Decimal | None] = mapped_column(Numeric(14, 6))
    error_type: Mapped[str | None] = mapped_column(Text)
    error_cause: Mapped[str | None] = mapped_column(String(16))
    failed_step: Mapped[int | None] = mapped_column(Integer)
    resource_state: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(TZ)
    updated_at: Mapped[datetime] = mapped_column(TZ)


class ExecutionLog(Base):
    """One `task.step` event of a task (append-only).

    013: partitioned by month of ``recorded_at``, which for a projected step is the
    ``received_at`` of its event (same month as its ledger row); ``(event_id,
    recorded_at)`` is unique, as strong as ``event_id`` alone since an id has one
    ``received_at``."""

    __tablename__ = "execution_logs"
    __table_args__ = (
        CheckConstraint(_in("status", ("running", "completed", "failed")), name="status"),
        UniqueConstraint("event_id", "recorded_at"),
        Index("ix_execution_logs_task_id", "task_id", "step_number"),
        {"postgresql_partition_by": "RANGE (recorded_at)"},
    )

    # 008: the plan's names, log_id (the task.step event's id when projected) and timestamp
    log_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, primary_key=True, server_default=text("gen_random_uuid()")
    )
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    task_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("tasks.task_id"))
    step_number: Mapped[int] = mapped_column(Integer)
    agent_type: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    output_summary: Mapped[str | None] = mapped_column(String(500))
    output_full: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    timestamp: Mapped[datetime] = mapped_column(TZ)
    recorded_at: Mapped[datetime] = mapped_column(TZ, primary_key=True, server_default=func.now())


class LedgerEvent(Base):
    """Every accepted event, stored once, keyed by its CloudEvents id (the inbox).

    013: partitioned by month of ``received_at`` (``event_ledger_pYYYYMM`` and a default
    partition); the id is unique through :class:`LedgerEventId`, which outlives archiving,
    and found through it (019: no index on ``event_id`` here)."""

    __tablename__ = "event_ledger"
    __table_args__ = (
        Index("ix_event_ledger_task_id", "task_id", "seq"),
        Index("ix_event_ledger_event_type_received_at", "event_type", "received_at"),
        {"postgresql_partition_by": "RANGE (received_at)"},
    )

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    event_type: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    task_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    event_time: Mapped[datetime] = mapped_column(TZ)
    received_at: Mapped[datetime] = mapped_column(TZ, primary_key=True, server_default=func.now())
    schema_version: Mapped[int] = mapped_column(SmallInteger)
    envelope: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # set when a second terminal event arrives for a task that already has one
    conflict_with: Mapped[uuid.UUID | None] = mapped_column(Uuid)


class LedgerEventId(Base):
    """Every event id ever recorded, with its ledger row's key (013, append-only).

    Not partitioned and never archived: the insert path claims an id here first, so a
    duplicate is refused across every month, including months detached from the ledger."""

    __tablename__ = "ledger_event_ids"

    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(TZ)


class AgentCapacity(Base):
    """Each agent's capacity as last reported, minus what was reserved since."""

    __tablename__ = "agent_capacity"
    __table_args__ = (Index("ix_agent_capacity_agent_type", "agent_type", "reported_at"),)

    agent_id: Mapped[str] = mapped_column(Text, primary_key=True)
    agent_type: Mapped[str] = mapped_column(String(16))
    free_gpu_vram_mb: Mapped[int] = mapped_column(Integer)
    free_cpu_cores: Mapped[float] = mapped_column(Float)
    free_memory_mb: Mapped[int] = mapped_column(Integer)
    load_pct: Mapped[float] = mapped_column(Float)
    accepting: Mapped[bool] = mapped_column(Boolean)
    reported_at: Mapped[datetime] = mapped_column(TZ)
    report_event_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    received_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    reserved_gpu_vram_mb: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    reserved_cpu_cores: Mapped[float] = mapped_column(Float, server_default=text("0"))
    reserved_memory_mb: Mapped[int] = mapped_column(Integer, server_default=text("0"))


class OutboxMessage(Base):
    """A message to publish; written in the same transaction as the decision behind it."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_unsent", "id", postgresql_where=text("sent_at IS NULL")),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    message_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    exchange: Mapped[str] = mapped_column(Text)
    routing_key: Mapped[str] = mapped_column(Text)
    event_type: Mapped[str] = mapped_column(Text)
    task_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column(TZ)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)


class OperatorAction(Base):
    """What an operator did (replay, export, purge, pause, resume, force), append-only."""

    __tablename__ = "operator_actions"
    __table_args__ = (Index("ix_operator_actions_at", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    action: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    event_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)


class DispatchHold(Base):
    """A manual hold on dispatch: all of it (key ``all``) or one task (key ``task:<id>``)."""

    __tablename__ = "dispatch_holds"
    __table_args__ = (CheckConstraint(_in("scope", ("all", "task")), name="scope"),)

    hold_key: Mapped[str] = mapped_column(Text, primary_key=True)
    scope: Mapped[str] = mapped_column(String(8))
    task_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    reason: Mapped[str | None] = mapped_column(Text)
    resume_after: Mapped[datetime | None] = mapped_column(TZ)
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    event_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)


class PauseQueueEntry(Base):
    """A dispatch request waiting for capacity or for an operator."""

    __tablename__ = "pause_queue"
    __table_args__ = (
        CheckConstraint(_in("reason", ("insufficient_capacity", "manual_pause")), name="reason"),
        CheckConstraint("priority BETWEEN 1 AND 5", name="priority"),
        Index("idx_pause_queue_resume", "resume_after", "priority"),
        Index("ix_pause_queue_agent_type_priority", "agent_type", "priority", "paused_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    task_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    work_plan_json: Mapped[dict[str, Any]] = mapped_column(JSONB)
    reason: Mapped[str] = mapped_column(String(32))
    paused_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    resume_after: Mapped[datetime | None] = mapped_column(TZ)
    priority: Mapped[int] = mapped_column(SmallInteger, server_default=text("3"))
    agent_type: Mapped[str] = mapped_column(String(16))
    required_gpu_vram_mb: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    required_cpu_cores: Mapped[float] = mapped_column(Float, server_default=text("0"))
    required_memory_mb: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    not_before: Mapped[datetime | None] = mapped_column(TZ)
    request_event_id: Mapped[uuid.UUID] = mapped_column(Uuid)


class PauseHistory(Base):
    """Append-only history of pause-queue transitions and what triggered each release."""

    __tablename__ = "pause_history"
    __table_args__ = (
        CheckConstraint(_in("action", ("paused", "released", "held", "unheld")), name="action"),
        Index("ix_pause_history_task_id", "task_id", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    task_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    action: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    trigger: Mapped[str | None] = mapped_column(String(16))
    agent_id: Mapped[str | None] = mapped_column(Text)
    event_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class LedgerChainLink(Base):
    """One link of the ledger's hash chain: the rows one batch recorded, chained by SHA-256."""

    __tablename__ = "ledger_chain"

    link: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    seqs: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))
    row_digests: Mapped[list[bytes]] = mapped_column(ARRAY(LargeBinary))
    prev_hash: Mapped[bytes | None] = mapped_column(LargeBinary)
    hash: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    # 011: why the batch was flushed (count, timeout, end_of_source); not hashed
    trigger: Mapped[str | None] = mapped_column(String(16))


class LedgerUnsealed(Base):
    """012: a committed ledger row the sealer has not chained yet (deleted when sealed)."""

    __tablename__ = "ledger_unsealed"

    # the write batch: its first seq (one link per batch and month)
    batch: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    received_at: Mapped[datetime] = mapped_column(TZ)
    # the row's digest, taken by the writer in the recording transaction
    digest: Mapped[bytes] = mapped_column(LargeBinary)
    trigger: Mapped[str | None] = mapped_column(String(16))


class LedgerArchive(Base):
    """One month of the ledger archived (014): exported to a file, verified, detached."""

    __tablename__ = "ledger_archives"

    month: Mapped[date] = mapped_column(Date, primary_key=True)
    file_name: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(Text)
    row_count: Mapped[int] = mapped_column(BigInteger)
    step_count: Mapped[int] = mapped_column(BigInteger)
    task_count: Mapped[int] = mapped_column(BigInteger)
    first_seq: Mapped[int | None] = mapped_column(BigInteger)
    last_seq: Mapped[int | None] = mapped_column(BigInteger)
    link_ids: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))
    # archived links whose successor in the chain was not archived, with their hashes
    boundary_links: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))
    boundary_hashes: Mapped[list[bytes]] = mapped_column(ARRAY(LargeBinary))
    partitions: Mapped[list[str]] = mapped_column(ARRAY(Text))
    archived_by: Mapped[str] = mapped_column(Text)
    archived_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())


class LedgerArchivedTask(Base):
    """A task with events in an archived month (014): verify no longer recomputes it."""

    __tablename__ = "ledger_archived_tasks"

    task_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    month: Mapped[date] = mapped_column(Date)


class LedgerTaskTerminal(Base):
    """The first terminal event recorded for a task (015): a later one is a conflict.

    Written by the ledger's insert statement; not partitioned and never archived."""

    __tablename__ = "ledger_task_terminals"

    task_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    seq: Mapped[int] = mapped_column(BigInteger)


class LedgerTaskDispatch(Base):
    """The first ``dispatch.requested`` recorded for a task (016): the dispatches listing.

    Kept by a statement trigger on ``event_ledger`` (every writer, also one of the release
    before); append-only, not partitioned, never archived."""

    __tablename__ = "ledger_task_dispatches"
    __table_args__ = (Index("ix_ledger_task_dispatches_requested_at", "requested_at", "task_id"),)

    task_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    seq: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(TZ)
    requested_at: Mapped[datetime] = mapped_column(TZ)


class LedgerTasklessEvent(Base):
    """A ``task.*`` event recorded while its task had no ``tasks`` row (016): the
    candidates of the orphans listing's ``no_task`` kind.

    Listed by a statement trigger on ``event_ledger``, forgotten by a trigger on ``tasks``
    when the row is created. Derived state, not part of the tamper-evident record: mutable."""

    __tablename__ = "ledger_taskless_events"
    __table_args__ = (Index("ix_ledger_taskless_events_received_at", "received_at", "seq"),)

    task_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(TZ)


class LedgerTaskLifecycle(Base):
    """The (seq, received_at) key of each lifecycle event of a task that is not a conflict
    (018): the audit handler's re-fold reads the ledger rows by these keys, one month
    each, instead of probing every month partition by ``task_id``.

    Kept by a trigger on ``event_ledger``; append-only; derived state."""

    __tablename__ = "ledger_task_lifecycle"

    task_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(TZ)


class TaskStepAction(Base):
    """A task's step actions joined by newlines (017): what the intent filter reads.

    One row per task with a step, appended to by a trigger on ``execution_logs`` in the
    transaction that inserts the steps (a step after the task finished too). Derived
    state, not part of the tamper-evident record: mutable, not partitioned, not archived."""

    __tablename__ = "task_step_actions"

    task_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("tasks.task_id"), primary_key=True)
    actions: Mapped[str] = mapped_column(Text)


class TaskSuggestion(Base):
    """One suggestion added to a task after the fact (``task.suggested``), append-only.

    009: the read model of a task's suggestions (``tasks.suggestions`` is gone)."""

    __tablename__ = "task_suggestions"
    __table_args__ = (Index("ix_task_suggestions_task_id", "task_id", "created_at"),)

    suggestion_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    task_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("tasks.task_id"))
    event_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    position: Mapped[int] = mapped_column(Integer)
    suggestion: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TZ)
    source: Mapped[str] = mapped_column(Text)
    recorded_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())


class SuggestionResolutionRow(Base):
    """A suggestion applied or rejected (``suggestion.resolved``), append-only; the latest wins."""

    __tablename__ = "suggestion_resolutions"
    __table_args__ = (
        CheckConstraint(_in("resolution", ("applied", "rejected")), name="resolution"),
        Index("ix_suggestion_resolutions_suggestion_id", "suggestion_id", "resolved_at"),
    )

    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    suggestion_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("task_suggestions.suggestion_id")
    )
    task_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    resolution: Mapped[str] = mapped_column(String(16))
    resolved_by: Mapped[str] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)
    resolved_at: Mapped[datetime] = mapped_column(TZ)
    source: Mapped[str] = mapped_column(Text)
    recorded_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())


class TaskRecovery(Base):
    """One step of the recovery of a silent executing task (010), append-only."""

    __tablename__ = "task_recoveries"
    __table_args__ = (
        CheckConstraint(
            _in("action", ("requested", "resumed", "redispatched", "failed")), name="action"
        ),
        Index("ix_task_recoveries_task_id", "task_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    task_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    attempt: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(16))
    trigger: Mapped[str | None] = mapped_column(String(16))
    message_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    actor: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


#: Tables whose rows can never be updated or deleted (enforced by triggers).
APPEND_ONLY_TABLES = (
    "event_ledger",
    "ledger_event_ids",
    "ledger_task_terminals",
    "ledger_task_dispatches",
    "ledger_task_lifecycle",
    "execution_logs",
    "pause_history",
    "operator_actions",
    "ledger_chain",
    "task_suggestions",
    "suggestion_resolutions",
    "task_recoveries",
)
