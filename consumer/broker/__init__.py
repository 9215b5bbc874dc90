"""RabbitMQ: topology and names, message headers, connections and confirmed publishing.

Importing the package installs the guard against undecodable header tables
(:mod:`consumer.broker.frames`) in the AMQP client, for every process of taskledger.
"""

from consumer.broker import frames
from consumer.broker.connection import confirm_channel, connect, publish_confirmed, queue_depth
from consumer.broker.headers import (
    ERROR_HEADER_LIMIT,
    H_ATTEMPT,
    H_ERROR,
    H_EXCHANGE,
    H_FAILED_AT,
    H_REASON,
    H_REPLAY_COUNT,
    H_ROUTING_KEY,
    H_SOURCE_QUEUE,
    copy_message,
    cut,
    dead_letter_headers,
    encodable,
)
from consumer.broker.topology import (
    AUDIT_BINDINGS,
    CAPACITY_BINDINGS,
    Names,
    declare_topology,
    delete_topology,
    quorum_arguments,
)

__all__ = [
    "AUDIT_BINDINGS",
    "CAPACITY_BINDINGS",
    "ERROR_HEADER_LIMIT",
    "H_ATTEMPT",
    "H_ERROR",
    "H_EXCHANGE",
    "H_FAILED_AT",
    "H_REASON",
    "H_REPLAY_COUNT",
    "H_ROUTING_KEY",
    "H_SOURCE_QUEUE",
    "Names",
    "confirm_channel",
    "connect",
    "copy_message",
    "cut",
    "dead_letter_headers",
    "declare_topology",
    "delete_topology",
    "encodable",
    "publish_confirmed",
    "queue_depth",
    "quorum_arguments",
]

frames.install()
