"""Message headers taskledger writes, and building a message to publish again.

A dead letter carries the broker's ``x-death`` plus the ``x-taskledger-*`` headers set
here; a retried or replayed message keeps its body and properties byte for byte.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aio_pika

from consumer.core.settings import redact_text

#: Headers a dead letter carries besides the broker's ``x-death``.
H_REASON = "x-taskledger-reason"
H_ERROR = "x-taskledger-error"
H_SOURCE_QUEUE = "x-taskledger-source-queue"
H_ROUTING_KEY = "x-taskledger-routing-key"
H_EXCHANGE = "x-taskledger-exchange"
H_FAILED_AT = "x-taskledger-failed-at"
H_ATTEMPT = "x-taskledger-attempt"
H_REPLAY_COUNT = "x-taskledger-replay-count"

ERROR_HEADER_LIMIT = 1024


def cut(text: str, limit: int = ERROR_HEADER_LIMIT) -> str:
    """Cut ``text`` to at most ``limit`` UTF-8 bytes (for header values)."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode("utf-8", errors="ignore") + "..."


def dead_letter_headers(
    original: Mapping[str, Any] | None,
    *,
    reason: str,
    error: str,
    source_queue: str,
    routing_key: str,
    exchange: str,
) -> dict[str, Any]:
    """Headers of a dead letter: the original ones plus the ``x-taskledger-*`` set."""
    headers = dict(original or {})
    headers.update(
        {
            H_REASON: reason,
            H_ERROR: cut(redact_text(error)),
            H_SOURCE_QUEUE: source_queue,
            H_ROUTING_KEY: routing_key,
            H_EXCHANGE: exchange,
            H_FAILED_AT: datetime.now(UTC).isoformat(),
        }
    )
    return headers


def encodable(value: Any) -> Any:
    """``value`` with every ``bytes`` turned into ``bytearray``, recursively.

    The client decodes a header string that is not UTF-8 (other clients can send one) as
    ``bytes``, which it cannot encode again; a byte array keeps the bytes as they were.
    """
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, Mapping):
        return {k: encodable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [encodable(v) for v in value]
    return value


def copy_message(
    body: bytes, properties: Any, headers: Mapping[str, Any] | None
) -> aio_pika.Message:
    """Build a persistent message with ``body``, the original properties and ``headers``."""
    return aio_pika.Message(
        body=body,
        headers=encodable(dict(headers or {})),
        content_type=getattr(properties, "content_type", None) or "application/json",
        content_encoding=getattr(properties, "content_encoding", None),
        message_id=getattr(properties, "message_id", None),
        correlation_id=getattr(properties, "correlation_id", None),
        timestamp=getattr(properties, "timestamp", None),
        type=getattr(properties, "message_type", None),  # pamqp's name for `type`
        app_id=getattr(properties, "app_id", None),
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )
