"""What a dead letter is: the message with its id, reason, error, failure time and origin.

:func:`inspect` derives all of it from the body and headers without ever raising (a dead
letter may be anything, not even JSON); :class:`Filters` chooses the letters an
operation applies to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any, Literal

from pamqp import commands as spec
from pydantic import BaseModel, ConfigDict, Field

from consumer.broker import (
    H_ERROR,
    H_EXCHANGE,
    H_FAILED_AT,
    H_REASON,
    H_REPLAY_COUNT,
    H_ROUTING_KEY,
    H_SOURCE_QUEUE,
    Names,
)
from consumer.dlq.codec import (
    as_int,
    as_text,
    as_time,
    fingerprint,
    message_key,
    parse_envelope,
    stored_headers,
)
from contracts import DeadLetterReason

#: Header naming the replay run that republished a message (a re-run after an
#: interruption skips the messages its interrupted run already sent, that came back).
H_REPLAY_RUN = "x-taskledger-replay-run"


def deaths_of(headers: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The broker's ``x-death`` entries, newest first (empty when absent or malformed)."""
    raw = headers.get("x-death")
    if not isinstance(raw, list):
        return []
    return [dict(entry) for entry in raw if isinstance(entry, Mapping)]


@dataclass(frozen=True)
class Origin:
    """Where a dead letter came from: the exchange and routing key to republish it with."""

    exchange: str
    routing_key: str
    via: Literal["headers", "x-death", "body", "override", "unroutable"]


def resolve_origin(
    headers: Mapping[str, Any], envelope: Mapping[str, Any] | None, names: Names
) -> Origin | None:
    """Where to republish a dead letter, or None when nothing says.

    Order: the consumer's ``x-taskledger-exchange``/``-routing-key``; the newest
    ``x-death`` entry that names an exchange other than the dead-letter exchange (the
    queue the broker took it out of); the events exchange with the body's ``type``.
    """
    routing_key = as_text(headers.get(H_ROUTING_KEY))
    if routing_key is not None:
        exchange = as_text(headers.get(H_EXCHANGE))
        return Origin(names.events if exchange is None else exchange, routing_key, "headers")
    for death in deaths_of(headers):
        exchange = as_text(death.get("exchange"))
        keys = death.get("routing-keys")
        if exchange is None or exchange == names.dlx or not isinstance(keys, list) or not keys:
            continue
        key = as_text(keys[0])
        if key is not None:
            return Origin(exchange, key, "x-death")
    event_type = envelope.get("type") if envelope else None
    if isinstance(event_type, str) and event_type:
        return Origin(names.events, event_type, "body")
    return None


@dataclass(frozen=True)
class DeadLetter:
    """One message of the dead queue with what the tool derives from it."""

    body: bytes
    properties: spec.Basic.Properties
    key: str
    delivery_tag: int
    routing_key: str
    headers: dict[str, Any]
    envelope: dict[str, Any] | None
    fingerprint: str
    event_id: str | None
    event_type: str | None
    subject: str | None
    reason: str
    error: str | None
    failed_at: datetime | None
    source_queue: str | None
    origin: Origin | None
    replay_count: int
    delivery_count: int
    replay_run: str | None = None

    @property
    def id(self) -> str:
        """The id shown and accepted: CloudEvent id, else message_id, else fingerprint."""
        return self.event_id or self.properties.message_id or self.fingerprint

    def has_id(self, ident: str) -> bool:
        """Whether ``ident`` is this message's key, CloudEvent id, message_id or fingerprint."""
        wanted = ident.strip().lower()
        candidates = (self.key, self.event_id, self.properties.message_id, self.fingerprint)
        return any(c is not None and c.lower() == wanted for c in candidates)

    @property
    def error_line(self) -> str | None:
        """The first line of the error (cut to 200 characters), for grouping and lists."""
        if not self.error:
            return None
        line = self.error.strip().splitlines()[0] if self.error.strip() else ""
        return line[:200] or None


def inspect(
    body: bytes,
    properties: spec.Basic.Properties,
    names: Names,
    *,
    delivery_tag: int = 0,
    routing_key: str = "",
    exchange: str = "",
) -> DeadLetter:
    """Derive id, type, reason, error, failure time and origin of a dead letter (never raises).

    ``exchange`` is the exchange the dead queue received it from: the events exchange
    means its alternate exchange kept it because no binding took its routing key when it
    was published (reason ``unroutable``, origin: that exchange and routing key), whatever
    older failure headers it carries.
    """
    raw_headers = dict(properties.headers or {})
    headers = stored_headers(raw_headers)
    envelope = parse_envelope(body)
    deaths = deaths_of(headers)
    newest = deaths[0] if deaths else {}
    event_id = as_text(envelope.get("id")) if envelope else None
    event_type = as_text(envelope.get("type")) if envelope else None
    subject = as_text(envelope.get("subject")) if envelope else None
    reason = as_text(headers.get(H_REASON)) or as_text(newest.get("reason")) or "unknown"
    error = as_text(headers.get(H_ERROR))
    origin = resolve_origin(headers, envelope, names)
    if exchange and exchange == names.events:
        reason = DeadLetterReason.UNROUTABLE.value
        error = f"no queue was bound for routing key {routing_key!r} on {exchange!r}"
        origin = Origin(exchange, routing_key, "unroutable")
    return DeadLetter(
        body=body,
        properties=properties,
        key=message_key(body, properties, headers),
        delivery_tag=delivery_tag,
        routing_key=routing_key,
        headers=headers,
        envelope=envelope,
        fingerprint=fingerprint(body),
        event_id=event_id,
        event_type=event_type or as_text(headers.get(H_ROUTING_KEY)),
        subject=subject,
        reason=reason,
        error=error,
        failed_at=as_time(headers.get(H_FAILED_AT)) or as_time(newest.get("time")),
        source_queue=as_text(headers.get(H_SOURCE_QUEUE)) or as_text(newest.get("queue")),
        origin=origin,
        replay_count=as_int(headers.get(H_REPLAY_COUNT)),
        delivery_count=as_int(raw_headers.get("x-delivery-count")),
        replay_run=as_text(headers.get(H_REPLAY_RUN)),
    )


class Filters(BaseModel):
    """Which dead letters an operation applies to (all of them when empty).

    ``reasons`` and ``types`` are shell patterns (``task.*``); ``since``/``until`` bound
    the failure time (``since`` inclusive, ``until`` exclusive; messages without one do
    not match a time bound); ``task`` is the CloudEvent subject; ``ids`` accept the
    message key, the CloudEvent id, the message_id or the fingerprint; ``limit`` caps how
    many match.
    """

    model_config = ConfigDict(frozen=True)

    reasons: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    task: str | None = None
    ids: tuple[str, ...] = ()
    limit: int | None = Field(default=None, ge=1)

    def matches(self, letter: DeadLetter) -> bool:
        """Whether ``letter`` passes every filter (the limit is the caller's business)."""
        if self.ids and not any(letter.has_id(i) for i in self.ids):
            return False
        if self.reasons and not any(fnmatchcase(letter.reason, p) for p in self.reasons):
            return False
        if self.types and not (
            letter.event_type and any(fnmatchcase(letter.event_type, p) for p in self.types)
        ):
            return False
        if self.task and (letter.subject or "").lower() != self.task.strip().lower():
            return False
        return self._in_window(letter.failed_at)

    def _in_window(self, at: datetime | None) -> bool:
        if self.since is None and self.until is None:
            return True
        if at is None:
            return False
        if self.since is not None and at < self.since:
            return False
        return not (self.until is not None and at >= self.until)

    def params(self) -> dict[str, Any]:
        """The filters that are set, as JSON (recorded with operator actions)."""
        return self.model_dump(mode="json", exclude_defaults=True)
