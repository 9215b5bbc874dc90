"""What a replayed dead letter carries: its headers, and the routing key it was sent with.

Headers of a replayed message: everything it had, including the broker's ``x-death``
history and ``x-taskledger-routing-key`` (set from the origin when missing: the consumer
needs it for messages arriving through the default exchange), except the headers of the
last failure (``x-taskledger-reason``, ``-error``, ``-failed-at``, ``-source-queue``,
``-exchange``), which would otherwise be mistaken for the reason of a later broker
dead-lettering, and ``x-taskledger-attempt``, so a replay gets the full retry budget
again. The last reason is kept as ``x-taskledger-last-reason``,
``x-taskledger-replay-count`` is incremented, ``x-taskledger-replayed-at`` set and
``x-taskledger-replay-run`` names the run (see :mod:`consumer.dlq.replayer`). A
message that fails again gets fresh failure headers from the consumer.
``x-delivery-count`` (a delivery annotation of the dead queue) is dropped on replay and
export. aiormq gives a message without ``message_id`` a random one when publishing (it
needs one to match returns); every other property is kept as it was.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from consumer.broker import (
    H_ATTEMPT,
    H_ERROR,
    H_EXCHANGE,
    H_FAILED_AT,
    H_REASON,
    H_REPLAY_COUNT,
    H_ROUTING_KEY,
    H_SOURCE_QUEUE,
)
from consumer.dlq.codec import as_text
from consumer.dlq.letters import H_REPLAY_RUN, DeadLetter

#: Header holding the reason of the failure a replayed message was taken out of.
H_LAST_REASON = "x-taskledger-last-reason"
#: Header saying when a message was last replayed (ISO 8601).
H_REPLAYED_AT = "x-taskledger-replayed-at"
#: Headers of the last failure (and its retry attempt), dropped when a message is replayed.
FAILURE_HEADERS = (H_REASON, H_ERROR, H_FAILED_AT, H_SOURCE_QUEUE, H_EXCHANGE, H_ATTEMPT)


def original_routing_key(letter: DeadLetter) -> str | None:
    """The routing key the producer used, when anything says."""
    known = as_text(letter.headers.get(H_ROUTING_KEY))
    if known is not None:
        return known
    if letter.origin is not None and letter.origin.exchange:
        return letter.origin.routing_key
    return letter.event_type


def replay_headers(letter: DeadLetter, now: datetime, run_id: str | None = None) -> dict[str, Any]:
    """Headers of the republished message (see the module docstring for the choice)."""
    headers = {k: v for k, v in letter.headers.items() if k not in FAILURE_HEADERS}
    routing_key = original_routing_key(letter)
    if routing_key is not None:
        # The consumer reads it when a message arrives through the default exchange
        # (--to-queue, or an origin that was a retry queue).
        headers[H_ROUTING_KEY] = routing_key
    headers[H_REPLAY_COUNT] = letter.replay_count + 1
    headers[H_REPLAYED_AT] = now.isoformat()
    headers[H_LAST_REASON] = letter.reason
    if run_id is not None:
        headers[H_REPLAY_RUN] = run_id
    return headers
