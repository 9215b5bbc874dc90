"""The audit query layer: one set of read functions behind both the HTTP API and the CLI.

- :mod:`consumer.queries.filters`: the task filter, intents, the page cursor;
- :mod:`consumer.queries.models`: the result models (pydantic, JSON-ready);
- :mod:`consumer.queries.reads`: the async query functions (``list_tasks``, ``failures``...);
- :mod:`consumer.queries.times`: time and duration arguments (RFC 3339 or relative).

This package face re-exports their public names: ``queries.list_tasks(pool, f)``.
"""

from __future__ import annotations

from consumer.queries.filters import (
    DEFAULT_PAGE,
    MAX_PAGE,
    VERB_SYNONYMS,
    Intent,
    TaskFilter,
    decode_cursor,
    encode_cursor,
    parse_intent,
)
from consumer.queries.models import (
    BusyService,
    FailureReport,
    HoldEntry,
    LedgerEntry,
    OperatorActionEntry,
    OrphanEvent,
    Page,
    PauseEntry,
    PauseHistoryEntry,
    PauseQueueView,
    StaleTask,
    StepEntry,
    Summary,
    TaskDetail,
    TaskRecord,
    TaskSummary,
    TimelineEntry,
)
from consumer.queries.reads import (
    by_service,
    failures,
    list_tasks,
    operator_actions,
    orphans,
    page_args,
    pause_queue,
    schema_errors,
    stale,
    statement,
    summary,
    task_detail,
)

__all__ = [
    "DEFAULT_PAGE",
    "MAX_PAGE",
    "VERB_SYNONYMS",
    "BusyService",
    "FailureReport",
    "HoldEntry",
    "Intent",
    "LedgerEntry",
    "OperatorActionEntry",
    "OrphanEvent",
    "Page",
    "PauseEntry",
    "PauseHistoryEntry",
    "PauseQueueView",
    "StaleTask",
    "StepEntry",
    "Summary",
    "TaskDetail",
    "TaskFilter",
    "TaskRecord",
    "TaskSummary",
    "TimelineEntry",
    "by_service",
    "decode_cursor",
    "encode_cursor",
    "failures",
    "list_tasks",
    "operator_actions",
    "orphans",
    "page_args",
    "parse_intent",
    "pause_queue",
    "schema_errors",
    "stale",
    "statement",
    "summary",
    "task_detail",
]
