"""Prometheus metrics of the service: the consumer runner, admission and the outbox."""

from __future__ import annotations

from prometheus_client import Counter, Enum, Gauge, Histogram, start_http_server

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
ID_CONFLICTS = Counter(
    "taskledger_id_conflicts_total",
    "Events dead-lettered because their id was recorded before for a different event.",
)
DB_HOLD_REASON = Enum(
    "taskledger_db_hold",
    "Why the handler is holding a batch now (none while writes succeed).",
    ["handler"],
    states=["none", "unavailable", "misconfigured", "timeout"],
)
RECONNECTS = Counter(
    "taskledger_broker_reconnects_total", "Reconnections to RabbitMQ.", ["handler"]
)
IN_FLIGHT = Gauge(
    "taskledger_deliveries_in_hand", "Deliveries received and not yet acknowledged.", ["handler"]
)


# --- admission (consumer.admission) -------------------------------------------------
# Counted when a decision is made inside its transaction: a batch rolled back and
# retried counts twice.

ADMITTED = Counter(
    "taskledger_capacity_admitted_total",
    "Dispatch requests admitted on arrival (trigger immediate).",
    ["agent_type"],
)
PAUSED = Counter(
    "taskledger_capacity_paused_total",
    "Dispatch requests that entered the pause queue.",
    ["reason"],
)
RELEASED = Counter(
    "taskledger_capacity_released_total",
    "Pause-queue entries released, by trigger (cancelled: taken out, not dispatched).",
    ["trigger"],
)
REPORTS_SUPERSEDED = Counter(
    "taskledger_capacity_reports_superseded_total",
    "Capacity reports older than the one already stored (ignored).",
)
RELEASE_LATENCY = Histogram(
    "taskledger_capacity_release_latency_seconds",
    "Time from a capacity report's event time to the transaction releasing entries for it.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
WAIT_SECONDS = Histogram(
    "taskledger_pause_wait_seconds",
    "Time released entries waited in the pause queue.",
    buckets=(0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
)

# --- outbox (consumer.outbox) -------------------------------------------------------

OUTBOX_PUBLISHED = Counter(
    "taskledger_outbox_published_total",
    "Outbox messages confirmed by the broker.",
    ["event_type"],
)
OUTBOX_UNROUTABLE = Counter(
    "taskledger_outbox_unroutable_total",
    "Outbox publishes the broker returned (no queue bound for the routing key); they stay "
    "pending and are retried. Alert on any increase.",
    ["event_type"],
)
OUTBOX_PUBLISH_ERRORS = Counter(
    "taskledger_outbox_publish_errors_total",
    "Outbox publish attempts that failed (the message stays and is retried).",
)
OUTBOX_PENDING = Gauge(
    "taskledger_outbox_pending",
    "Outbox messages not yet confirmed by the broker (as of the last relay pass).",
)
OUTBOX_LATENCY = Histogram(
    "taskledger_outbox_publish_latency_seconds",
    "Time from an outbox row's commit to the broker's confirm of its message.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

SEALED_ROWS = Counter(
    "taskledger_sealed_rows_total", "Ledger rows the sealer chained into the hash chain (012)."
)
SEAL_LINKS = Counter("taskledger_seal_links_total", "Ledger chain links the sealer appended.")
SEAL_SECONDS = Histogram(
    "taskledger_seal_seconds",
    "Time of one sealing pass (lock, read, links, commit) that sealed rows.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def serve(port: int, host: str = "0.0.0.0") -> None:
    """Expose the default registry over HTTP on ``host:port`` (a daemon thread)."""
    start_http_server(port, addr=host)
