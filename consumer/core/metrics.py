"""Prometheus metrics of the consumer side (the capacity side keeps its own next to it)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

EVENTS_RECEIVED = Counter(
    "taskledger_events_received_total", "Deliveries taken from a queue.", ["handler"]
)
EVENTS_APPLIED = Counter(
    "taskledger_events_applied_total",
    "Events recorded for the first time and applied.",
    ["handler"],
)
EVENTS_DUPLICATE = Counter(
    "taskledger_events_duplicate_total",
    "Deliveries of an event already in the ledger (acknowledged, not applied).",
    ["handler"],
)
DEAD_LETTERED = Counter(
    "taskledger_dead_lettered_total",
    "Messages sent to the dead-letter queue.",
    ["handler", "reason"],
)
RETRIED = Counter(
    "taskledger_retried_total", "Messages sent to a delayed retry queue.", ["handler"]
)
CONFLICTS = Counter(
    "taskledger_terminal_conflicts_total",
    "Second terminal events for a task: kept in the ledger, flagged, not applied.",
)
BATCH_SIZE = Histogram(
    "taskledger_batch_size",
    "Deliveries per write batch.",
    ["handler"],
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000),
)
FLUSHES = Counter(
    "taskledger_batch_flush_total",
    "Write batches by what triggered the flush (count, timeout, end_of_source).",
    ["handler", "trigger"],
)
COMMIT_SECONDS = Histogram(
    "taskledger_commit_seconds",
    "Time to write and commit one batch.",
    ["handler"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LAG_SECONDS = Histogram(
    "taskledger_event_lag_seconds",
    "Time from an event's `time` at its producer to the commit that recorded it.",
    ["handler"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
DB_RETRIES = Counter(
    "taskledger_db_retries_total",
    "Batch writes retried because PostgreSQL was unavailable.",
    ["handler"],
)
RECONNECTS = Counter(
    "taskledger_broker_reconnects_total", "Reconnections to RabbitMQ.", ["handler"]
)
IN_FLIGHT = Gauge(
    "taskledger_deliveries_in_hand", "Deliveries received and not yet acknowledged.", ["handler"]
)


def serve(port: int, host: str = "0.0.0.0") -> None:
    """Expose the default registry over HTTP on ``host:port`` (a daemon thread)."""
    start_http_server(port, addr=host)
