"""Dead-letter operations: look at, filter, replay, export and import ``<prefix>.dead``.

Reading without consuming. AMQP 0-9-1 has no peek, so a pass consumes the dead queue
with manual acks on a dedicated channel whose prefetch window is the whole depth at start,
and closes that channel without acknowledging what should stay. Checked on RabbitMQ 3.10
quorum queues: a closed channel's messages go back ahead of the rest of the queue, in
the order they were delivered, but behind messages already waiting in the queue's
returned list; so a pass always checks out the whole queue, even when it looks at fewer
messages (``limit``), and never uses ``basic.nack(requeue=True)`` on a live consumer
(which reorders). A pass looks at no more than the depth at start, so messages arriving
meanwhile (a replayed message failing again) are not looked at twice and a pass always
ends. Each return counts as a delivery (header ``x-delivery-count``); the dead queue has
no delivery limit, so this is harmless (checked: 25 passes in a row lose nothing). On
RabbitMQ 4, whose quorum queues get a default delivery limit of 20, that limit must be
lifted on the dead queue the way that version documents, or repeated passes would drop
messages (not with ``x-delivery-limit: -1`` on 3.x: there it drops a message at its first
return, also checked). One pass holds the queue: two operators scanning at once each see
part of it.

Replay. A chosen message is republished to where it came from (the ``x-taskledger-*``
headers a consumer-made dead letter carries, else the newest ``x-death`` entry, else the
events exchange with the body's ``type``), with the same body and properties, and is
acknowledged in the dead queue only after the broker confirmed the publish: at no
instant is it in neither place. An interruption between confirm and ack leaves it in both
(the ledger makes the duplicate a no-op); the result counts those as ``in_doubt``.

Headers of a replayed message: everything it had, including the broker's ``x-death``
history and ``x-taskledger-routing-key`` (set from the origin when missing: the consumer
needs it for messages arriving through the default exchange), except the headers of the
last failure (``x-taskledger-reason``, ``-error``, ``-failed-at``, ``-source-queue``,
``-exchange``), which would otherwise be mistaken for the reason of a later broker
dead-lettering, and ``x-taskledger-attempt``, so a replay gets the full retry budget
again. The last reason is kept as ``x-taskledger-last-reason``,
``x-taskledger-replay-count`` is incremented and ``x-taskledger-replayed-at`` set. A
message that fails again gets fresh failure headers from the consumer.
``x-delivery-count`` (a delivery annotation of the dead queue) is dropped on replay and
export. aiormq gives a message without ``message_id`` a random one when publishing (it
needs one to match returns); every other property is kept as it was.
"""

from __future__ import annotations

import asyncio
import base64
import getpass
import hashlib
import logging
import math
import os
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
)
from contextlib import aclosing, asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from fnmatch import fnmatchcase
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast

import aiormq
import orjson
from aio_pika.abc import AbstractChannel as PikaChannel
from aio_pika.abc import AbstractConnection
from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp import commands as spec
from pydantic import BaseModel, ConfigDict, Field

from consumer import broker, db
from consumer.broker import (
    H_ATTEMPT,
    H_ERROR,
    H_EXCHANGE,
    H_FAILED_AT,
    H_REASON,
    H_REPLAY_COUNT,
    H_ROUTING_KEY,
    H_SOURCE_QUEUE,
    Names,
)
from consumer.exceptions import (
    BrokerUnavailable,
    DatabaseUnavailable,
    InvalidArgument,
    TaskledgerError,
)
from consumer.settings import Settings, redact_text

log = logging.getLogger(__name__)

#: Format tag of every line ``export`` writes.
EXPORT_FORMAT = "taskledger.dlq/1"
#: Header holding the reason of the failure a replayed message was taken out of.
H_LAST_REASON = "x-taskledger-last-reason"
#: Header saying when a message was last replayed (ISO 8601).
H_REPLAYED_AT = "x-taskledger-replayed-at"
#: Headers of the last failure (and its retry attempt), dropped when a message is replayed.
FAILURE_HEADERS = (H_REASON, H_ERROR, H_FAILED_AT, H_SOURCE_QUEUE, H_EXCHANGE, H_ATTEMPT)
#: Headers the broker adds on delivery; they are not part of the stored message.
DELIVERY_ANNOTATIONS = ("x-delivery-count",)
#: Basic properties other than ``headers``, in AMQP order.
PROPERTY_FIELDS = (
    "content_type",
    "content_encoding",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "message_type",
    "user_id",
    "app_id",
    "cluster_id",
)
MAX_PREFETCH = 65535  # basic.qos prefetch-count is a 16-bit field; 0 means unlimited
PUBLISH_TIMEOUT_S = 30.0
REPLAY_WINDOW = 128  # publishes awaiting their confirm at once
MAX_ERRORS_KEPT = 20
PREVIEW_LIMIT = 4096


class DeadLetterNotFound(TaskledgerError):
    """No message of the dead queue has that id (CloudEvent id, message_id or fingerprint)."""


class PublishRefused(TaskledgerError):
    """The broker refused a publish: it nacked it or returned it as unroutable."""


# --------------------------------------------------------------------------- codec


def encode_value(value: Any) -> Any:
    """Return an AMQP field value as JSON, tagging what JSON lacks.

    Bytes become ``{"$bytes": base64}``, timestamps ``{"$time": iso}``, decimals
    ``{"$decimal": str}``, non-finite floats ``{"$float": repr}``; a table with a key
    starting with ``$`` is wrapped as ``{"$table": ...}``. Raises TypeError for other types.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, bytes | bytearray):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, datetime):
        return {"$time": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, list | tuple):
        return [encode_value(v) for v in value]
    if isinstance(value, Mapping):
        table = {str(k): encode_value(v) for k, v in value.items()}
        return {"$table": table} if any(k.startswith("$") for k in table) else table
    raise TypeError(f"cannot encode header value of type {type(value).__name__}")


def _decode_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _decode_bytes(text: str) -> bytearray:
    # pamqp encodes bytearray (field type 'x'), not bytes
    return bytearray(base64.b64decode(text, validate=True))


def _decode_table(table: dict[str, Any]) -> dict[str, Any]:
    return {k: decode_value(v) for k, v in table.items()}


_TAGS: dict[str, Callable[[Any], Any]] = {
    "$bytes": _decode_bytes,
    "$time": _decode_time,
    "$decimal": Decimal,
    "$float": float,
    "$table": _decode_table,
}


def decode_value(value: Any) -> Any:
    """Inverse of :func:`encode_value`; raises ValueError on an unknown ``$`` tag."""
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, inner),) = value.items()
            if key in _TAGS:
                return _TAGS[key](inner)
        if any(k.startswith("$") for k in value):
            raise ValueError(f"unknown tagged value {sorted(value)}")
        return _decode_table(value)
    return value


def jsonable(value: Any) -> Any:
    """Return a header value as plain JSON for display (times as ISO strings)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return "base64:" + base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


def properties_to_json(props: spec.Basic.Properties) -> dict[str, Any]:
    """The set basic properties (without headers) as tagged JSON."""
    out: dict[str, Any] = {}
    for name in PROPERTY_FIELDS:
        value = getattr(props, name)
        if value is not None:
            out[name] = encode_value(value)
    return out


def properties_from_json(
    data: Mapping[str, Any], headers: Mapping[str, Any]
) -> spec.Basic.Properties:
    """Build basic properties from :func:`properties_to_json` output and decoded headers.

    Raises ValueError on an unknown property name.
    """
    unknown = set(data) - set(PROPERTY_FIELDS)
    if unknown:
        raise ValueError(f"unknown properties {sorted(unknown)}")
    values = {name: decode_value(v) for name, v in data.items()}
    return spec.Basic.Properties(headers=dict(headers), **values)


def amqp_safe(value: Any) -> Any:
    """``value`` with every ``bytes`` made a ``bytearray`` (the only binary type pamqp
    encodes; a non-UTF-8 long string is decoded as ``bytes``)."""
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, list):
        return [amqp_safe(v) for v in value]
    if isinstance(value, Mapping):
        return {k: amqp_safe(v) for k, v in value.items()}
    return value


def with_headers(props: spec.Basic.Properties, headers: Mapping[str, Any]) -> spec.Basic.Properties:
    """A copy of ``props`` with ``headers`` instead of its own."""
    values = {name: getattr(props, name) for name in PROPERTY_FIELDS}
    return spec.Basic.Properties(headers=amqp_safe(dict(headers)), **values)


def stored_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """``headers`` without the broker's delivery annotations."""
    return {k: v for k, v in (headers or {}).items() if k not in DELIVERY_ANNOTATIONS}


# --------------------------------------------------------------------------- reading


def fingerprint(body: bytes) -> str:
    """A stable short id for a body: the first 12 hex digits of its SHA-256."""
    return hashlib.sha256(body).hexdigest()[:12]


def parse_envelope(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is not one (never raises)."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    return None


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = _text(value)
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    text = _text(value)
    return int(text) if text and text.strip().isdigit() else 0


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
    via: Literal["headers", "x-death", "body", "override"]


def resolve_origin(
    headers: Mapping[str, Any], envelope: Mapping[str, Any] | None, names: Names
) -> Origin | None:
    """Where to republish a dead letter, or None when nothing says.

    Order: the consumer's ``x-taskledger-exchange``/``-routing-key``; the newest
    ``x-death`` entry that names an exchange other than the dead-letter exchange (the
    queue the broker took it out of); the events exchange with the body's ``type``.
    """
    routing_key = _text(headers.get(H_ROUTING_KEY))
    if routing_key is not None:
        exchange = _text(headers.get(H_EXCHANGE))
        return Origin(names.events if exchange is None else exchange, routing_key, "headers")
    for death in deaths_of(headers):
        exchange = _text(death.get("exchange"))
        keys = death.get("routing-keys")
        if exchange is None or exchange == names.dlx or not isinstance(keys, list) or not keys:
            continue
        key = _text(keys[0])
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

    @property
    def id(self) -> str:
        """The id shown and accepted: CloudEvent id, else message_id, else fingerprint."""
        return self.event_id or self.properties.message_id or self.fingerprint

    def has_id(self, ident: str) -> bool:
        """Whether ``ident`` is this message's CloudEvent id, message_id or fingerprint."""
        wanted = ident.strip().lower()
        candidates = (self.event_id, self.properties.message_id, self.fingerprint)
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
) -> DeadLetter:
    """Derive id, type, reason, error, failure time and origin of a dead letter (never raises)."""
    raw_headers = dict(properties.headers or {})
    headers = stored_headers(raw_headers)
    envelope = parse_envelope(body)
    deaths = deaths_of(headers)
    newest = deaths[0] if deaths else {}
    event_id = _text(envelope.get("id")) if envelope else None
    event_type = _text(envelope.get("type")) if envelope else None
    subject = _text(envelope.get("subject")) if envelope else None
    return DeadLetter(
        body=body,
        properties=properties,
        delivery_tag=delivery_tag,
        routing_key=routing_key,
        headers=headers,
        envelope=envelope,
        fingerprint=fingerprint(body),
        event_id=event_id,
        event_type=event_type or _text(headers.get(H_ROUTING_KEY)),
        subject=subject,
        reason=_text(headers.get(H_REASON)) or _text(newest.get("reason")) or "unknown",
        error=_text(headers.get(H_ERROR)),
        failed_at=_time(headers.get(H_FAILED_AT)) or _time(newest.get("time")),
        source_queue=_text(headers.get(H_SOURCE_QUEUE)) or _text(newest.get("queue")),
        origin=resolve_origin(headers, envelope, names),
        replay_count=_int(headers.get(H_REPLAY_COUNT)),
        delivery_count=_int(raw_headers.get("x-delivery-count")),
    )


class Filters(BaseModel):
    """Which dead letters an operation applies to (all of them when empty).

    ``reasons`` and ``types`` are shell patterns (``task.*``); ``since``/``until`` bound
    the failure time (``since`` inclusive, ``until`` exclusive; messages without one do
    not match a time bound); ``task`` is the CloudEvent subject; ``ids`` accept the
    CloudEvent id, the message_id or the fingerprint; ``limit`` caps how many match.
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


class DeadQueueScan:
    """One pass over the dead queue: at most the depth at start, nothing taken unless acked.

    Use as ``async with DeadQueueScan(conn, names) as scan: async for m in scan.messages()``.
    Leaving the block closes the channel, which returns every unacknowledged message to
    the head of the queue in its original order.
    """

    def __init__(
        self,
        connection: AbstractConnection,
        names: Names,
        *,
        max_messages: int | None = None,
        idle_timeout_s: float = 10.0,
    ) -> None:
        self._connection = connection
        self._names = names
        self._max = max_messages
        self._idle_timeout_s = idle_timeout_s
        self._inbox: asyncio.Queue[DeliveredMessage | None] = asyncio.Queue()
        self._pika: PikaChannel | None = None
        self._channel: AbstractChannel | None = None
        self._consumer_tag: str | None = None
        self.depth = 0
        """Messages ready in the dead queue when the pass started."""
        self.delivered = 0
        self.acked = 0

    @property
    def total(self) -> int:
        """How many messages this pass looks at, at most."""
        return self.depth if self._max is None else min(self.depth, self._max)

    async def __aenter__(self) -> DeadQueueScan:
        self._pika = await self._connection.channel(publisher_confirms=False)
        self._channel = await self._pika.get_underlay_channel()
        try:
            declared = await self._channel.queue_declare(self._names.dead, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise InvalidArgument(
                f"queue {self._names.dead} does not exist: check TASKLEDGER_PREFIX, or start "
                "the service once so it declares its topology"
            ) from None
        self.depth = int(declared.message_count or 0)
        if self.total == 0:
            return self
        self._channel.closing.add_done_callback(lambda _: self._inbox.put_nowait(None))
        # The whole queue is checked out to this consumer, even when fewer messages will be
        # looked at: a quorum queue returns a closed channel's messages to the back of its
        # returned-messages list, so only a pass that holds all of them keeps the order.
        prefetch = self.depth if self.depth <= MAX_PREFETCH else 0
        await self._channel.basic_qos(prefetch_count=prefetch)
        consume_ok = await self._channel.basic_consume(
            self._names.dead, self._on_message, no_ack=False
        )
        self._consumer_tag = consume_ok.consumer_tag
        return self

    async def _on_message(self, message: DeliveredMessage) -> None:
        self._inbox.put_nowait(message)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop_consuming()
        if self._pika is not None and not self._pika.is_closed:
            with suppress(Exception):
                await self._pika.close()
            if self.delivered:
                await self._await_returned()

    async def _await_returned(self, timeout_s: float = 5.0) -> None:
        """Wait until the broker has put back what this pass held and did not ack.

        A quorum queue returns a closed channel's messages asynchronously: without this,
        a read right after a pass (``dlq summary`` then ``dlq list``) could find the
        queue empty. Bounded: another consumer of the dead queue could keep it lower.
        """
        expected = self.depth - self.acked
        deadline = asyncio.get_running_loop().time() + timeout_s
        with suppress(Exception):
            channel = await self._connection.channel(publisher_confirms=False)
            try:
                raw = await channel.get_underlay_channel()
                while asyncio.get_running_loop().time() < deadline:
                    declared = await raw.queue_declare(self._names.dead, passive=True)
                    if int(declared.message_count or 0) >= expected:
                        return
                    await asyncio.sleep(0.01)
            finally:
                await channel.close()

    async def _stop_consuming(self) -> None:
        tag, self._consumer_tag = self._consumer_tag, None
        if tag is None or self._channel is None or self._channel.is_closed:
            return
        with suppress(aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError):
            await self._channel.basic_cancel(tag)

    async def messages(self) -> AsyncGenerator[DeadLetter, None]:
        """Yield the messages of this pass in queue order.

        Raises :class:`BrokerUnavailable` when the connection or channel is lost. Stops
        early (with a warning) if nothing arrives for the idle timeout, which only
        happens when another consumer took messages from the dead queue meanwhile.
        """
        while self.delivered < self.total:
            try:
                item = await self._next()
            except TimeoutError:
                log.warning(
                    "dead queue pass ended early: nothing delivered",
                    extra={"action": "dlq_scan", "seen": self.delivered, "expected": self.total},
                )
                break
            if item is None or self.lost:
                raise BrokerUnavailable("the connection to RabbitMQ was lost during the pass")
            self.delivered += 1
            yield inspect(
                item.body,
                item.header.properties,
                self._names,
                delivery_tag=item.delivery_tag or 0,
                routing_key=item.routing_key or "",
            )
        await self._stop_consuming()

    async def _next(self) -> DeliveredMessage | None:
        if not self._inbox.empty():  # the common case: no timer, no task per message
            return self._inbox.get_nowait()
        return await asyncio.wait_for(self._inbox.get(), self._idle_timeout_s)

    @property
    def lost(self) -> bool:
        """Whether the channel closed under the pass (nothing held can be acked any more)."""
        return self._channel is not None and self._channel.is_closed

    async def ack(self, letter: DeadLetter) -> None:
        """Remove ``letter`` from the dead queue; raises aiormq errors if the channel is gone."""
        if self._channel is None:
            raise aiormq.exceptions.ChannelInvalidStateError("scan not open")
        # wait=True: the ack is on the wire when this returns, so a connection closed right
        # after does not silently drop it (the message would then be counted as moved and
        # still be in the dead queue).
        await self._channel.basic_ack(letter.delivery_tag, wait=True)
        self.acked += 1


class Publisher:
    """A confirm channel that raises :class:`PublishRefused` on a nack or a return."""

    def __init__(self, connection: AbstractConnection) -> None:
        self._connection = connection
        self._pika: PikaChannel | None = None
        self._channel: AbstractChannel | None = None
        self._exchanges: dict[str, bool] = {"": True}

    async def __aenter__(self) -> Publisher:
        self._pika = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        self._channel = await self._pika.get_underlay_channel()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pika is not None and not self._pika.is_closed:
            with suppress(Exception):
                await self._pika.close()

    async def _passive(self, kind: Literal["exchange", "queue"], name: str) -> bool:
        channel = await self._connection.channel(publisher_confirms=False)
        try:
            raw = await channel.get_underlay_channel()
            if kind == "exchange":
                await raw.exchange_declare(name, passive=True)
            else:
                await raw.queue_declare(name, passive=True)
            return True
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
        except aiormq.exceptions.ChannelLockedResource:
            return True  # an exclusive queue of another connection: it exists, publishing works
        finally:
            if not channel.is_closed:
                with suppress(Exception):
                    await channel.close()

    async def exchange_exists(self, name: str) -> bool:
        """Whether exchange ``name`` exists (cached; the default exchange always does)."""
        if name not in self._exchanges:
            self._exchanges[name] = await self._passive("exchange", name)
        return self._exchanges[name]

    async def queue_exists(self, name: str) -> bool:
        """Whether queue ``name`` exists."""
        return await self._passive("queue", name)

    @property
    def lost(self) -> bool:
        """Whether the publishing channel is closed."""
        return self._channel is None or self._channel.is_closed

    async def publish(
        self, body: bytes, properties: spec.Basic.Properties, exchange: str, routing_key: str
    ) -> None:
        """Publish (mandatory) and wait for the confirm.

        Raises :class:`PublishRefused` when nacked or unroutable, :class:`BrokerUnavailable`
        when the channel is already closed (nothing was sent), aiormq errors or TimeoutError
        when it is lost or the confirm does not come in time (the publish may have landed).
        """
        if self._channel is None or self._channel.is_closed:
            raise BrokerUnavailable("the publishing channel is closed")
        # The concrete aiormq channel: ``wait=False`` lets publishes queue up behind the
        # channel lock instead of each waiting for the socket to drain (the confirm is
        # still awaited); the abstract class does not declare the parameter.
        channel = cast(aiormq.Channel, self._channel)
        try:
            confirm = await channel.basic_publish(
                body,
                exchange=exchange,
                routing_key=routing_key,
                properties=properties,
                mandatory=True,
                timeout=PUBLISH_TIMEOUT_S,
                wait=False,
            )
        except aiormq.exceptions.PublishError as exc:
            raise PublishRefused(
                f"unroutable: no queue is bound to {exchange or '(default)'} / {routing_key}"
            ) from exc
        if not isinstance(confirm, spec.Basic.Ack):
            raise PublishRefused(f"the broker refused the publish to {exchange or '(default)'}")


@asynccontextmanager
async def _broker(
    settings: Settings, connection: AbstractConnection | None
) -> AsyncIterator[AbstractConnection]:
    """The caller's connection, or one of our own closed afterwards."""
    if connection is not None:
        yield connection
        return
    own = await broker.connect(settings.amqp)
    try:
        yield own
    finally:
        with suppress(Exception):
            await own.close()


# --------------------------------------------------------------------------- recording


def operator_name(settings: Settings) -> str:
    """Who is acting: ``settings.operator``, else the OS user, else ``unknown``."""
    if settings.operator:
        return settings.operator
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


class ActionRecorder:
    """Records operator actions; opened before an operation so a dead database stops it early."""

    def __init__(self, settings: Settings, conn: Any) -> None:
        self._settings = settings
        self._conn = conn

    @classmethod
    async def open(cls, settings: Settings) -> ActionRecorder:
        """Connect to PostgreSQL; raises :class:`DatabaseUnavailable`."""
        try:
            return cls(settings, await db.connect(settings.dsn))
        except DatabaseUnavailable as exc:
            raise DatabaseUnavailable(
                f"cannot reach PostgreSQL to record the operator action: {exc}"
            ) from exc

    async def record(
        self, action: str, actor: str, params: Mapping[str, Any], result: Mapping[str, Any]
    ) -> int:
        """Insert one ``operator_actions`` row; return its id. Retries once on a new connection.

        Raises :class:`DatabaseUnavailable`.
        """
        for attempt in (1, 2):
            try:
                with db.translate_errors():
                    row = await self._conn.fetchrow(
                        db.q("dlq_record_action"), action, actor, dict(params), dict(result)
                    )
                assert row is not None
                log.info(
                    "operator action recorded",
                    extra={"action": action, "actor": actor, "action_id": row["id"]},
                )
                return int(row["id"])
            except DatabaseUnavailable:
                if attempt == 2:
                    raise
                with suppress(Exception):
                    await self._conn.close()
                self._conn = await db.connect(self._settings.dsn)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        """Close the connection (errors ignored)."""
        with suppress(Exception):
            await self._conn.close()


async def _record_safely(
    recorder: ActionRecorder,
    action: str,
    actor: str,
    params: Mapping[str, Any],
    result: BaseModel,
) -> int | None:
    """Record an action; a failure is logged and returned as None (the moves stand)."""
    payload = result.model_dump(mode="json", exclude={"planned", "action_ids", "action_id"})
    try:
        return await recorder.record(action, actor, params, payload)
    except Exception as exc:  # the moves stand whatever the database says
        log.error(
            "could not record the operator action",
            extra={"action": action, "error": redact_text(str(exc))},
        )
        return None


# --------------------------------------------------------------------------- summary, list, show


class DlqGroup(BaseModel):
    """Dead letters sharing reason, event type and first line of error."""

    reason: str
    event_type: str | None
    error: str | None
    count: int
    oldest: datetime | None
    newest: datetime | None


class DlqSummary(BaseModel):
    """The dead queue grouped; ``total`` is its depth, ``scanned`` how many were looked at."""

    total: int
    scanned: int
    groups: list[DlqGroup]


class DeadLetterInfo(BaseModel):
    """One dead letter as ``list`` shows it."""

    id: str
    fingerprint: str
    message_id: str | None
    event_type: str | None
    subject: str | None
    reason: str
    error: str | None
    failed_at: datetime | None
    source_queue: str | None
    exchange: str | None
    routing_key: str | None
    replay_count: int
    size: int

    @classmethod
    def of(cls, letter: DeadLetter) -> DeadLetterInfo:
        """Build from a :class:`DeadLetter`."""
        return cls(
            id=letter.id,
            fingerprint=letter.fingerprint,
            message_id=letter.properties.message_id,
            event_type=letter.event_type,
            subject=letter.subject,
            reason=letter.reason,
            error=letter.error_line,
            failed_at=letter.failed_at,
            source_queue=letter.source_queue,
            exchange=letter.origin.exchange if letter.origin else None,
            routing_key=letter.origin.routing_key if letter.origin else None,
            replay_count=letter.replay_count,
            size=len(letter.body),
        )


class DeadLetterDetail(DeadLetterInfo):
    """One dead letter in full, as ``show`` prints it."""

    error_full: str | None
    origin_from: str | None
    delivery_count: int
    properties: dict[str, Any]
    headers: dict[str, Any]
    deaths: list[dict[str, Any]]
    body: Any
    body_is_json: bool

    @classmethod
    def of(cls, letter: DeadLetter) -> DeadLetterDetail:
        """Build from a :class:`DeadLetter`; the body is parsed JSON or text."""
        info = DeadLetterInfo.of(letter).model_dump()
        envelope = parse_envelope(letter.body)
        body: Any = envelope
        if envelope is None:
            try:
                body = orjson.loads(letter.body)
            except orjson.JSONDecodeError:
                body = letter.body.decode("utf-8", errors="replace")
        is_json = envelope is not None or not isinstance(body, str)
        return cls(
            **info,
            error_full=letter.error,
            origin_from=letter.origin.via if letter.origin else None,
            delivery_count=letter.delivery_count,
            properties=jsonable(
                {
                    name: getattr(letter.properties, name)
                    for name in PROPERTY_FIELDS
                    if getattr(letter.properties, name) is not None
                }
            ),
            headers=jsonable(letter.headers),
            deaths=jsonable(deaths_of(letter.headers)),
            body=body,
            body_is_json=is_json,
        )


class DlqListing(BaseModel):
    """Dead letters that matched, in queue order."""

    total: int
    scanned: int
    items: list[DeadLetterInfo]


class _Groups:
    def __init__(self) -> None:
        self._groups: dict[tuple[str, str | None, str | None], DlqGroup] = {}

    def add(self, letter: DeadLetter) -> None:
        key = (letter.reason, letter.event_type, letter.error_line)
        group = self._groups.get(key)
        at = letter.failed_at
        if group is None:
            self._groups[key] = DlqGroup(
                reason=key[0], event_type=key[1], error=key[2], count=1, oldest=at, newest=at
            )
            return
        group.count += 1
        if at is not None:
            group.oldest = at if group.oldest is None else min(group.oldest, at)
            group.newest = at if group.newest is None else max(group.newest, at)

    def sorted(self) -> list[DlqGroup]:
        return sorted(
            self._groups.values(),
            key=lambda g: (-g.count, g.reason, g.event_type or "", g.error or ""),
        )


async def summary(
    settings: Settings,
    *,
    limit: int | None = None,
    connection: AbstractConnection | None = None,
) -> DlqSummary:
    """Group the dead letters by reason, event type and first line of error.

    Looks at most at ``limit`` messages (all when None); every message stays in the queue,
    in order. Raises :class:`BrokerUnavailable`.
    """
    names = Names(settings.prefix)
    groups = _Groups()
    async with (
        _broker(settings, connection) as conn,
        DeadQueueScan(conn, names, max_messages=limit) as scan,
    ):
        async with aclosing(scan.messages()) as letters:
            async for letter in letters:
                groups.add(letter)
        return DlqSummary(total=scan.depth, scanned=scan.delivered, groups=groups.sorted())


async def list_dead_letters(
    settings: Settings, filters: Filters, *, connection: AbstractConnection | None = None
) -> DlqListing:
    """The dead letters matching ``filters`` (up to ``filters.limit``), in queue order.

    Every message stays in the queue, in order. Raises :class:`BrokerUnavailable`.
    """
    names = Names(settings.prefix)
    items: list[DeadLetterInfo] = []
    async with _broker(settings, connection) as conn, DeadQueueScan(conn, names) as scan:
        async with aclosing(scan.messages()) as letters:
            async for letter in letters:
                if filters.matches(letter):
                    items.append(DeadLetterInfo.of(letter))
                    if filters.limit is not None and len(items) >= filters.limit:
                        break
        return DlqListing(total=scan.depth, scanned=scan.delivered, items=items)


async def show(
    settings: Settings, ident: str, *, connection: AbstractConnection | None = None
) -> list[DeadLetterDetail]:
    """Every dead letter whose CloudEvent id, message_id or fingerprint is ``ident``.

    Raises :class:`DeadLetterNotFound` when there is none, :class:`BrokerUnavailable`.
    """
    names = Names(settings.prefix)
    found: list[DeadLetterDetail] = []
    async with (
        _broker(settings, connection) as conn,
        DeadQueueScan(conn, names) as scan,
        aclosing(scan.messages()) as letters,
    ):
        async for letter in letters:
            if letter.has_id(ident):
                found.append(DeadLetterDetail.of(letter))
    if not found:
        raise DeadLetterNotFound(f"no dead letter with id {ident!r} in {names.dead}")
    return found


# --------------------------------------------------------------------------- replay


class Move(BaseModel):
    """A message a dry run would replay, and where to."""

    id: str
    event_type: str | None
    reason: str
    exchange: str
    routing_key: str


class ReplayResult(BaseModel):
    """Counts of a replay. ``replayed`` were confirmed at the destination, then acked in
    the dead queue; ``skipped`` did not match; ``failed`` matched but stay in the dead
    queue; ``in_doubt`` may have reached the destination but could not be acked (they
    may be in both places). On an interruption, matched messages not counted in any of
    these were not sent and stay in the dead queue."""

    status: Literal["completed", "interrupted"] = "completed"
    dry_run: bool = False
    total: int = 0
    scanned: int = 0
    matched: int = 0
    replayed: int = 0
    skipped: int = 0
    failed: int = 0
    in_doubt: int = 0
    elapsed_s: float = 0.0
    errors: list[str] = []
    planned: list[Move] = []
    action_id: int | None = None

    def note(self, error: str) -> None:
        """Keep an error message (the first few distinct ones)."""
        if error not in self.errors and len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(error)


ProgressCallback = Callable[[ReplayResult], None]


class _RateLimiter:
    """Spaces publishes ``1/rate`` seconds apart (no limit when rate is None)."""

    def __init__(self, rate: float | None) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._next = time.monotonic()

    async def wait(self) -> None:
        if not self._interval:
            return
        now = time.monotonic()
        if self._next > now:
            await asyncio.sleep(self._next - now)
        self._next = max(self._next, now) + self._interval


def original_routing_key(letter: DeadLetter) -> str | None:
    """The routing key the producer used, when anything says."""
    known = _text(letter.headers.get(H_ROUTING_KEY))
    if known is not None:
        return known
    if letter.origin is not None and letter.origin.exchange:
        return letter.origin.routing_key
    return letter.event_type


def replay_headers(letter: DeadLetter, now: datetime) -> dict[str, Any]:
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
    return headers


_LOST: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
    TimeoutError,
)


class _Replayer:
    """One replay pass; keeps the counts in ``result`` as it goes."""

    def __init__(
        self,
        scan: DeadQueueScan,
        publisher: Publisher,
        filters: Filters,
        result: ReplayResult,
        *,
        to_queue: str | None,
        rate: float | None,
        progress: ProgressCallback | None,
    ) -> None:
        self.scan = scan
        self.publisher = publisher
        self.filters = filters
        self.result = result
        self.to_queue = to_queue
        self.progress = progress
        self._limiter = _RateLimiter(rate)
        self._slots = asyncio.Semaphore(1 if rate else REPLAY_WINDOW)
        self._inflight: set[asyncio.Task[None]] = set()

    def report(self) -> None:
        if self.progress is not None:
            self.progress(self.result)

    async def run(self) -> None:
        self.result.total = self.scan.total
        self.report()
        async with aclosing(self.scan.messages()) as letters:
            async for letter in letters:
                if self.scan.lost or self.publisher.lost:
                    raise BrokerUnavailable("the connection to RabbitMQ was lost during the replay")
                self.result.scanned += 1
                await self._consider(letter)
                self.report()
                if self.filters.limit is not None and self.result.matched >= self.filters.limit:
                    break

    def _destination(self, letter: DeadLetter) -> Origin | None:
        if self.to_queue is not None:
            return Origin("", self.to_queue, "override")
        return letter.origin

    async def _consider(self, letter: DeadLetter) -> None:
        if not self.filters.matches(letter):
            self.result.skipped += 1
            return
        self.result.matched += 1
        dest = self._destination(letter)
        if dest is None:
            self._fail(letter, "its origin is unknown (no x-taskledger headers, x-death or type)")
            return
        if not await self.publisher.exchange_exists(dest.exchange):
            self._fail(letter, f"exchange {dest.exchange!r} does not exist")
            return
        if self.result.dry_run:
            self.result.planned.append(
                Move(
                    id=letter.id,
                    event_type=letter.event_type,
                    reason=letter.reason,
                    exchange=dest.exchange,
                    routing_key=dest.routing_key,
                )
            )
            return
        await self._limiter.wait()
        await self._slots.acquire()
        if self.scan.lost or self.publisher.lost:
            self._slots.release()
            raise BrokerUnavailable("the connection to RabbitMQ was lost during the replay")
        task = asyncio.create_task(self._move(letter, dest))
        self._inflight.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._slots.release()
        self.report()

    def _fail(self, letter: DeadLetter, why: str) -> None:
        self.result.failed += 1
        self.result.note(why)
        log.info("dead letter not replayed", extra={"action": "dlq_replay", "id": letter.id})

    async def _move(self, letter: DeadLetter, dest: Origin) -> None:
        props = with_headers(letter.properties, replay_headers(letter, datetime.now(UTC)))
        try:
            await self.publisher.publish(letter.body, props, dest.exchange, dest.routing_key)
        except (PublishRefused, BrokerUnavailable) as exc:  # refused, or never sent
            self._fail(letter, str(exc))
            return
        except (TypeError, ValueError) as exc:  # a header pamqp cannot encode: not sent
            self._fail(letter, f"cannot republish: {exc}")
            return
        except BaseException as exc:
            # Lost connection, timeout, or the confirm cancelled by a closing channel: the
            # publish may have reached the broker, so the message may be in both places.
            self._doubt("publish interrupted", exc)
            return
        try:
            await self.scan.ack(letter)
        except BaseException as exc:
            self._doubt("ack lost", exc)
            return
        self.result.replayed += 1

    def _doubt(self, what: str, exc: BaseException) -> None:
        """Count a message that may be in both places; re-raise if this task is cancelled."""
        self.result.in_doubt += 1
        self.result.note(f"{what}: {redact_text(str(exc)) or type(exc).__name__}")
        task = asyncio.current_task()
        if isinstance(exc, asyncio.CancelledError) and task is not None and task.cancelling():
            raise exc
        if not isinstance(exc, Exception | asyncio.CancelledError):
            raise exc  # KeyboardInterrupt, SystemExit

    async def drain(self) -> None:
        """Wait for every publish in flight to be confirmed and acked (or to fail)."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)


async def replay(
    settings: Settings,
    filters: Filters,
    *,
    dry_run: bool = False,
    rate: float | None = None,
    to_queue: str | None = None,
    actor: str | None = None,
    progress: ProgressCallback | None = None,
    connection: AbstractConnection | None = None,
) -> ReplayResult:
    """Republish the matching dead letters to where they came from (or ``to_queue``).

    Each one is acked in the dead queue only after the publisher confirm. ``rate`` caps
    messages per second. The action is recorded in ``operator_actions`` (not for a dry
    run). A lost connection ends the pass with ``status="interrupted"``; cancellation
    (Ctrl-C) finishes the publishes in flight, records the action as interrupted, reports
    the final counts to ``progress`` and re-raises. Running it again continues.
    Raises :class:`InvalidArgument`, :class:`DatabaseUnavailable` (before moving
    anything), :class:`BrokerUnavailable` (when the broker cannot be reached at all).
    """
    if rate is not None and rate <= 0:
        raise InvalidArgument(f"rate must be positive, got {rate}")
    actor = actor or operator_name(settings)
    params = {**filters.params(), "dry_run": dry_run, "rate": rate, "to_queue": to_queue}
    result = ReplayResult(dry_run=dry_run)
    recorder = None if dry_run else await ActionRecorder.open(settings)
    started = time.monotonic()
    try:
        try:
            await _replay_pass(settings, filters, result, to_queue, rate, progress, connection)
        except asyncio.CancelledError:
            result.status = "interrupted"
            result.note("interrupted by the operator")
            await _finish(recorder, actor, params, result, started, progress)
            raise
        await _finish(recorder, actor, params, result, started, progress)
    finally:
        if recorder is not None:
            await recorder.close()
    return result


async def _finish(
    recorder: ActionRecorder | None,
    actor: str,
    params: Mapping[str, Any],
    result: ReplayResult,
    started: float,
    progress: ProgressCallback | None,
) -> None:
    result.elapsed_s = round(time.monotonic() - started, 3)
    if recorder is not None:
        result.action_id = await _record_safely(recorder, "dlq.replay", actor, params, result)
    log.info(
        "dead-letter replay %s",
        result.status,
        extra={"action": "dlq_replay", "replayed": result.replayed, "failed": result.failed},
    )
    if progress is not None:
        progress(result)


async def _replay_pass(
    settings: Settings,
    filters: Filters,
    result: ReplayResult,
    to_queue: str | None,
    rate: float | None,
    progress: ProgressCallback | None,
    connection: AbstractConnection | None,
) -> None:
    names = Names(settings.prefix)
    try:
        async with _broker(settings, connection) as conn, Publisher(conn) as publisher:
            if to_queue is not None and not await publisher.queue_exists(to_queue):
                raise InvalidArgument(f"queue {to_queue!r} does not exist")
            async with DeadQueueScan(conn, names) as scan:
                replayer = _Replayer(
                    scan,
                    publisher,
                    filters,
                    result,
                    to_queue=to_queue,
                    rate=rate,
                    progress=progress,
                )
                try:
                    await replayer.run()
                finally:
                    await replayer.drain()
    except BrokerUnavailable as exc:
        if result.total == 0 and result.scanned == 0:
            raise
        result.status = "interrupted"
        result.note(str(exc))
    except _LOST as exc:
        result.status = "interrupted"
        result.note(f"connection lost: {redact_text(str(exc)) or type(exc).__name__}")


# --------------------------------------------------------------------------- export, import


class ExportResult(BaseModel):
    """What ``export`` wrote and (with ``purge``) removed from the dead queue."""

    status: Literal["completed", "interrupted"] = "completed"
    file: str
    total: int = 0
    scanned: int = 0
    exported: int = 0
    purged: int = 0
    errors: list[str] = []
    action_ids: list[int] = []


class ImportResult(BaseModel):
    """How many exported messages were put back into the dead queue."""

    status: Literal["completed", "interrupted"] = "completed"
    file: str
    read: int = 0
    imported: int = 0
    errors: list[str] = []
    action_ids: list[int] = []


def export_record(letter: DeadLetter, exported_at: datetime) -> dict[str, Any]:
    """One JSONL record: byte-exact body (base64), tagged properties and headers, preview."""
    preview_body: Any
    if letter.envelope is not None:
        preview_body = letter.envelope
    else:
        preview_body = letter.body[:PREVIEW_LIMIT].decode("utf-8", errors="replace")
    return {
        "format": EXPORT_FORMAT,
        "id": letter.id,
        "fingerprint": letter.fingerprint,
        "routing_key": letter.routing_key,
        "exported_at": exported_at.isoformat(),
        "properties": properties_to_json(letter.properties),
        "headers": encode_value(letter.headers),
        "body_b64": base64.b64encode(letter.body).decode("ascii"),
        "preview": {
            "type": letter.event_type,
            "subject": letter.subject,
            "reason": letter.reason,
            "error": letter.error_line,
            "failed_at": letter.failed_at.isoformat() if letter.failed_at else None,
            "body": preview_body,
        },
    }


@dataclass(frozen=True)
class ExportedMessage:
    """A message read back from an export file, ready to publish."""

    body: bytes
    properties: spec.Basic.Properties
    routing_key: str


def parse_export_line(line: bytes, number: int) -> ExportedMessage:
    """Parse one export line; raises :class:`InvalidArgument` naming the line."""
    try:
        record = orjson.loads(line)
        if not isinstance(record, dict) or record.get("format") != EXPORT_FORMAT:
            raise ValueError(f"not a {EXPORT_FORMAT} record")
        headers = decode_value(record.get("headers") or {})
        if not isinstance(headers, dict):
            raise ValueError("headers is not an object")
        return ExportedMessage(
            body=base64.b64decode(record["body_b64"], validate=True),
            properties=properties_from_json(record.get("properties") or {}, headers),
            routing_key=str(record.get("routing_key") or ""),
        )
    except (ValueError, TypeError, KeyError, orjson.JSONDecodeError) as exc:
        raise InvalidArgument(f"line {number}: {exc}") from None


def read_export(path: Path) -> list[ExportedMessage]:
    """Read and validate a whole export file; raises :class:`InvalidArgument`."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror or exc}") from None
    lines = [(n, line) for n, line in enumerate(raw.splitlines(), start=1) if line.strip()]
    return [parse_export_line(line, n) for n, line in lines]


def write_durably(path: Path, lines: Iterable[bytes]) -> None:
    """Write ``lines`` to ``path`` through a temporary file, fsync it and its directory.

    Raises :class:`InvalidArgument` if ``path`` exists or cannot be written.
    """
    tmp = path.with_name(path.name + ".partial")
    try:
        with tmp.open("xb") as fh:
            for line in lines:
                fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            raise FileExistsError(path)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        with suppress(OSError):
            tmp.unlink()
        raise InvalidArgument(f"cannot write {path}: {exc.strerror or exc}") from None


async def export(
    settings: Settings,
    filters: Filters,
    out: Path,
    *,
    purge: bool = False,
    actor: str | None = None,
    connection: AbstractConnection | None = None,
) -> ExportResult:
    """Write the matching dead letters to ``out`` (JSONL), fsync, then with ``purge`` ack them.

    Records ``dlq.export`` (and ``dlq.purge``) in ``operator_actions``. Nothing is acked
    unless the file is durably written. Raises :class:`InvalidArgument` (``out`` exists),
    :class:`DatabaseUnavailable`, :class:`BrokerUnavailable`.
    """
    out = Path(out)
    if out.exists():
        raise InvalidArgument(f"{out} already exists: choose another file")
    if not out.parent.is_dir():
        raise InvalidArgument(f"directory {out.parent} does not exist")
    actor = actor or operator_name(settings)
    params = {**filters.params(), "file": str(out), "purge": purge}
    result = ExportResult(file=str(out))
    recorder = await ActionRecorder.open(settings)

    async def record() -> None:
        for action in ("dlq.export", "dlq.purge") if purge else ("dlq.export",):
            action_id = await _record_safely(recorder, action, actor, params, result)
            if action_id is not None:
                result.action_ids.append(action_id)

    try:
        async with _broker(settings, connection) as conn:
            await _recorded(
                _export_pass(conn, settings, filters, out, purge, result), result, record
            )
    finally:
        await recorder.close()
    return result


Outcome = ExportResult | ImportResult
_INTERRUPTIONS: tuple[type[BaseException], ...] = (BrokerUnavailable, PublishRefused, *_LOST)


async def _recorded(
    work: Coroutine[Any, Any, None], result: Outcome, record: Callable[[], Awaitable[None]]
) -> None:
    """Run ``work``, then ``record()`` it, also when it is interrupted or cancelled."""
    try:
        await work
    except asyncio.CancelledError:
        result.status = "interrupted"
        result.errors.append("interrupted by the operator")
        await record()
        raise
    except _INTERRUPTIONS as exc:
        result.status = "interrupted"
        result.errors.append(redact_text(str(exc)) or type(exc).__name__)
    await record()


async def _export_pass(
    conn: AbstractConnection,
    settings: Settings,
    filters: Filters,
    out: Path,
    purge: bool,
    result: ExportResult,
) -> None:
    names = Names(settings.prefix)
    now = datetime.now(UTC)
    async with DeadQueueScan(conn, names) as scan:
        result.total = scan.depth
        chosen: list[DeadLetter] = []
        lines: list[bytes] = []
        async with aclosing(scan.messages()) as letters:
            async for letter in letters:
                result.scanned += 1
                if not filters.matches(letter):
                    continue
                chosen.append(letter)
                lines.append(orjson.dumps(export_record(letter, now)) + b"\n")
                if filters.limit is not None and len(chosen) >= filters.limit:
                    break
        await asyncio.to_thread(write_durably, out, lines)
        result.exported = len(chosen)
        if purge:
            for letter in chosen:
                await scan.ack(letter)
                result.purged += 1


async def import_file(
    settings: Settings,
    path: Path,
    *,
    actor: str | None = None,
    connection: AbstractConnection | None = None,
) -> ImportResult:
    """Put the messages of an export file back into the dead queue (via the dlx), confirmed.

    The file is validated whole before anything is published. Importing a file twice
    puts its messages in twice. Records ``dlq.import``. Raises :class:`InvalidArgument`,
    :class:`DatabaseUnavailable`, :class:`BrokerUnavailable`.
    """
    path = Path(path)
    messages = await asyncio.to_thread(read_export, path)
    actor = actor or operator_name(settings)
    names = Names(settings.prefix)
    result = ImportResult(file=str(path), read=len(messages))
    recorder = await ActionRecorder.open(settings)

    async def record() -> None:
        params = {"file": str(path), "read": result.read}
        action_id = await _record_safely(recorder, "dlq.import", actor, params, result)
        if action_id is not None:
            result.action_ids.append(action_id)

    async def publish_all(conn: AbstractConnection) -> None:
        async with Publisher(conn) as publisher:
            if not await publisher.exchange_exists(names.dlx):
                raise InvalidArgument(f"exchange {names.dlx} does not exist: run the service")
            for message in messages:
                await publisher.publish(
                    message.body, message.properties, names.dlx, message.routing_key
                )
                result.imported += 1

    try:
        async with _broker(settings, connection) as conn:
            await _recorded(publish_all(conn), result, record)
    finally:
        await recorder.close()
    return result
