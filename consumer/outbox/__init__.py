"""The transactional outbox: messages written with the decision behind them, published after.

:mod:`consumer.outbox.messages` builds and enqueues rows in the deciding transaction;
:mod:`consumer.outbox.relay` publishes them after commit. This package re-exports the
names other packages use.
"""

from consumer.outbox.messages import (
    DISPATCH_NAMESPACE,
    NOTIFY_CHANNEL,
    Outgoing,
    dispatch_assigned,
    dispatch_message_id,
    dispatch_routing_key,
    enqueue,
    recovery_message_id,
    recovery_requested,
)
from consumer.outbox.relay import RELAY_BATCH, OutboxRelay

__all__ = [
    "DISPATCH_NAMESPACE",
    "NOTIFY_CHANNEL",
    "RELAY_BATCH",
    "OutboxRelay",
    "Outgoing",
    "dispatch_assigned",
    "dispatch_message_id",
    "dispatch_routing_key",
    "enqueue",
    "recovery_message_id",
    "recovery_requested",
]
