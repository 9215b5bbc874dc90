"""Looking at the dead queue: ``summary``, ``list`` and ``show`` and what they return.

Every message stays in the queue, in order (see :mod:`consumer.dlq.scan`).
"""

from __future__ import annotations

import re
from contextlib import aclosing
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel

from consumer.broker import Names
from consumer.core.errors import TaskledgerError
from consumer.core.settings import Settings
from consumer.dlq.codec import PROPERTY_FIELDS, jsonable, parse_envelope
from consumer.dlq.lease import dead_letter_lease
from consumer.dlq.letters import DeadLetter, Filters, deaths_of
from consumer.dlq.scan import DeadQueueScan


class DeadLetterNotFound(TaskledgerError):
    """No message of the dead queue has that id (CloudEvent id, message_id or fingerprint)."""


_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")
_UUID = re.compile(
    r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
)
_TIME = re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?")
_HEX = re.compile(r"\b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b")
_NUMBER = re.compile(r"(?:(?<![A-Za-z0-9_])[-+])?\d+(\.\d+)?")  # "UTF-8" keeps its hyphen


def error_pattern(error: str | None) -> str | None:
    """The first line of an error with what varies between messages taken out.

    Quoted values, UUIDs, times, long hex ids and numbers (character offsets, line and
    column) become ``'…'``, ``<uuid>``, ``<time>``, ``<hex>`` and ``N``, so one cause is one
    group: ``unexpected character: line 1 column 7 (char 6)`` and ``... column 9 (char 8)``
    both read ``unexpected character: line N column N (char N)``.
    """
    if not error:
        return None
    text = _QUOTED.sub("'…'", error)
    text = _UUID.sub("<uuid>", text)
    text = _TIME.sub("<time>", text)
    text = _HEX.sub("<hex>", text)
    return " ".join(_NUMBER.sub("N", text).split())


class DlqGroup(BaseModel):
    """Dead letters sharing reason, event type and error pattern (:func:`error_pattern`);
    ``example`` is the first line of one of their errors as it was."""

    reason: str
    event_type: str | None
    error: str | None
    example: str | None = None
    count: int
    oldest: datetime | None
    newest: datetime | None


class DlqSummary(BaseModel):
    """The dead queue grouped; ``total`` is its depth, ``scanned`` how many were looked at."""

    total: int
    scanned: int
    groups: list[DlqGroup]


class DeadLetterInfo(BaseModel):
    """One dead letter as ``list`` shows it; ``key`` is unique to the message (several can
    share an ``id``) and is what ``show`` and ``replay --id`` take."""

    key: str
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
            key=letter.key,
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
        key = (letter.reason, letter.event_type, error_pattern(letter.error_line))
        group = self._groups.get(key)
        at = letter.failed_at
        if group is None:
            self._groups[key] = DlqGroup(
                reason=key[0],
                event_type=key[1],
                error=key[2],
                example=letter.error_line,
                count=1,
                oldest=at,
                newest=at,
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
) -> DlqSummary:
    """Group the dead letters by reason, event type and error pattern.

    Looks at most at ``limit`` messages (all when None); every message stays in the queue,
    in order. Raises :class:`BrokerUnavailable`.
    """
    names = Names(settings.prefix)
    groups = _Groups()
    async with (
        dead_letter_lease(settings) as conn,
        DeadQueueScan(conn, names, max_messages=limit) as scan,
    ):
        async with aclosing(scan.messages()) as letters:
            async for letter in letters:
                groups.add(letter)
        return DlqSummary(total=scan.depth, scanned=scan.delivered, groups=groups.sorted())


async def list_dead_letters(settings: Settings, filters: Filters) -> DlqListing:
    """The dead letters matching ``filters`` (up to ``filters.limit``), in queue order.

    Every message stays in the queue, in order. Raises :class:`BrokerUnavailable`.
    """
    names = Names(settings.prefix)
    items: list[DeadLetterInfo] = []
    async with dead_letter_lease(settings) as conn, DeadQueueScan(conn, names) as scan:
        async with aclosing(scan.messages()) as letters:
            async for letter in letters:
                if filters.matches(letter):
                    items.append(DeadLetterInfo.of(letter))
                    if filters.limit is not None and len(items) >= filters.limit:
                        break
        return DlqListing(total=scan.depth, scanned=scan.delivered, items=items)


async def show(settings: Settings, ident: str) -> list[DeadLetterDetail]:
    """Every dead letter whose CloudEvent id, message_id or fingerprint is ``ident``.

    Raises :class:`DeadLetterNotFound` when there is none, :class:`BrokerUnavailable`.
    """
    names = Names(settings.prefix)
    found: list[DeadLetterDetail] = []
    async with (
        dead_letter_lease(settings) as conn,
        DeadQueueScan(conn, names) as scan,
        aclosing(scan.messages()) as letters,
    ):
        async for letter in letters:
            if letter.has_id(ident):
                found.append(DeadLetterDetail.of(letter))
    if not found:
        raise DeadLetterNotFound(f"no dead letter with id {ident!r} in {names.dead}")
    return found
