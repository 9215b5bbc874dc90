"""The CloudEvents 1.0 envelope of wire contract v1, the decoded event, and the encoder.

Every message body is one JSON object in CloudEvents structured mode. Unknown
top-level attributes are kept as extensions (``Envelope.model_extra``); the ``data``
payload is validated separately by the type's model (see :mod:`contracts.events`).
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, TypeVar
from uuid import UUID

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from contracts._types import Timestamp, Uuid, parse_uuid
from contracts.bounds import ATTRIBUTE_MAX
from contracts.enums import EventType
from contracts.events import DATA_MODELS, DispatchAssigned, TaskRecoveryRequested
from contracts.ids import new_id

__all__ = [
    "CORE_ATTRIBUTES",
    "DATACONTENTTYPE_PATTERN",
    "MAX_BODY_BYTES",
    "SCHEMA_VERSION",
    "SERVICE_SOURCE",
    "SOURCE_PATTERN",
    "Envelope",
    "Event",
    "make_event",
    "parse_task_subject",
]

SCHEMA_VERSION: Final = 1
"""The ``schemaversion`` this contract defines and this code speaks."""

MAX_BODY_BYTES: Final = 1024 * 1024
"""Largest accepted message body, in bytes (1 MiB)."""

SERVICE_SOURCE: Final = "taskledger"
"""The ``source`` of the messages taskledger itself publishes (the outbound types)."""

# No slash, control character or white space (spelled out: regex engines disagree on \s).
_NAME_CHAR = r"[^/\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
SOURCE_PATTERN: Final = rf"^(agents/{_NAME_CHAR}+|orchestrator|ops/{_NAME_CHAR}+|taskledger)$"
"""Who may send: ``agents/<agent_id>``, ``orchestrator``, ``ops/<user>``, or taskledger."""

DATACONTENTTYPE_PATTERN: Final = r"^application/json(; ?charset=(utf-8|UTF-8))?$"
"""The ``datacontenttype`` values accepted: JSON, optionally with ``charset=utf-8``."""

CORE_ATTRIBUTES: Final = frozenset(
    {
        "specversion",
        "id",
        "source",
        "type",
        "time",
        "subject",
        "schemaversion",
        "datacontenttype",
        "data",
    }
)
"""Top-level attributes the contract defines; any other is an extension."""

_EXTENSION_NAME = re.compile(r"[a-z0-9]{1,20}")


def _schema_version(value: Any) -> Any:
    """Take ``1`` or ``1.0`` (JSON Schema's ``"const": 1`` matches both), never ``true``."""
    if type(value) is float and value.is_integer():
        return int(value)
    if type(value) is not int:
        raise ValueError("Input should be an integer")
    return value


def parse_task_subject(subject: str) -> UUID:
    """Parse an envelope ``subject`` as a task UUID.

    Only the canonical hyphenated form (either case) is accepted, as JSON Schema's
    ``"format": "uuid"`` does.

    Raises:
        ValueError: ``subject`` is not a UUID in that form.
    """
    try:
        return parse_uuid(subject)
    except ValueError:
        raise ValueError(f"subject must be a task UUID, got {subject[:64]!r}") from None


class Envelope(BaseModel):
    """A CloudEvents 1.0 envelope, as wire contract v1 constrains it.

    ``id`` must be a canonical UUID; ``time`` an RFC 3339 date-time with an offset in
    the years 2000..9999, normalised to UTC; ``source`` must match
    :data:`SOURCE_PATTERN`; ``source`` and ``subject`` have at most
    :data:`~contracts.bounds.ATTRIBUTE_MAX` characters; ``datacontenttype``, when
    given, is ``application/json`` (optionally ``; charset=utf-8``).
    ``type`` is kept as the string sent: the decoder checks it against
    :class:`~contracts.enums.EventType` before building the envelope. Unknown
    top-level attributes are kept as extensions in ``model_extra``.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: Literal["1.0"]
    id: Uuid
    source: str = Field(min_length=1, max_length=ATTRIBUTE_MAX, pattern=SOURCE_PATTERN)
    type: str = Field(min_length=1)
    time: Timestamp
    subject: Annotated[str, StringConstraints(max_length=ATTRIBUTE_MAX)] | None = None
    schemaversion: Annotated[Literal[1], BeforeValidator(_schema_version)]
    datacontenttype: Annotated[str, StringConstraints(pattern=DATACONTENTTYPE_PATTERN)] | None = (
        None
    )
    data: dict[str, Any]


_M = TypeVar("_M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Event:
    """A message that passed :func:`contracts.decode.decode`.

    Attributes:
        envelope: the validated envelope (``envelope.data`` is the raw payload dict).
        type: the event type.
        data: the validated payload, an instance of ``DATA_MODELS[type]``.
        task_id: the subject as a UUID for ``task.*`` and ``dispatch.*``; else None.
        body: the message body exactly as received.
    """

    envelope: Envelope
    type: EventType
    data: BaseModel
    task_id: UUID | None
    body: bytes

    @property
    def id(self) -> UUID:
        """The event id: the idempotency key."""
        return self.envelope.id

    @property
    def source(self) -> str:
        """Who sent the event."""
        return self.envelope.source

    @property
    def time(self) -> datetime:
        """When the event happened at its producer, in UTC."""
        return self.envelope.time

    @property
    def extensions(self) -> dict[str, Any]:
        """Top-level attributes beyond the contract's, as sent."""
        return dict(self.envelope.model_extra or {})

    def payload(self, model: builtins.type[_M]) -> _M:
        """Return :attr:`data` typed as ``model``.

        Raises:
            TypeError: the payload is not a ``model`` (the event is of another type).
        """
        if not isinstance(self.data, model):
            raise TypeError(f"{self.type} carries {type(self.data).__name__}, not {model.__name__}")
        return self.data


def make_event(
    type: EventType | str,
    data: BaseModel | Mapping[str, Any],
    *,
    source: str,
    subject: UUID | str | None = None,
    id: UUID | None = None,
    time: datetime | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> bytes:
    """Build a valid v1 message and return its JSON body.

    ``data`` is the payload model, or a mapping validated into it. ``subject`` is the
    task UUID, required for ``task.*`` and ``dispatch.*``; for ``dispatch.assigned`` and
    ``task.recovery_requested`` it defaults to ``data.task_id``. ``id`` defaults to a
    new time-ordered UUIDv7 (:func:`contracts.ids.new_id`), ``time`` to now (UTC). ``extensions`` are extra top-level attributes
    (lowercase alphanumeric names, at most 20 characters, as CloudEvents asks).

    Raises:
        ValueError: the type is unknown, ``data`` or an attribute is invalid (pydantic's
            ``ValidationError`` is a ``ValueError``), the subject is missing or is no
            UUID, or the body would exceed :data:`MAX_BODY_BYTES`.
        TypeError: ``data`` is a model of another type, or a free-form value (an
            extension, ``work_plan``, ``output_full``, ...) cannot be serialised to JSON
            by orjson: integers beyond 64 bits, nesting deeper than 255.
    """
    event_type = EventType(type)
    model = DATA_MODELS[event_type]
    if isinstance(data, BaseModel):
        if not isinstance(data, model):
            raise TypeError(
                f"{event_type} takes {model.__name__}, not {builtins.type(data).__name__}"
            )
        payload = data
    else:
        payload = model.model_validate(data)

    subject_text = _subject_text(event_type, payload, subject)
    envelope: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(id if id is not None else new_id()),
        "source": source,
        "type": event_type.value,
        "time": (time if time is not None else datetime.now(UTC)).isoformat(),
        **({"subject": subject_text} if subject_text is not None else {}),
        "schemaversion": SCHEMA_VERSION,
        "datacontenttype": "application/json",
        "data": payload.model_dump(mode="json"),
    }
    for name, value in (extensions or {}).items():
        if name in CORE_ATTRIBUTES or not _EXTENSION_NAME.fullmatch(name):
            raise ValueError(f"invalid extension attribute name {name!r}")
        envelope[name] = value

    Envelope.model_validate(envelope)  # source pattern, aware time
    body = orjson.dumps(envelope)
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"message is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
    return body


def _subject_text(
    event_type: EventType, payload: BaseModel, subject: UUID | str | None
) -> str | None:
    """The subject to send: checked as a task UUID where the type requires one."""
    if isinstance(payload, DispatchAssigned | TaskRecoveryRequested):
        if subject is None:
            subject = payload.task_id
        elif str(subject).lower() != str(payload.task_id):
            raise ValueError(f"subject {subject} differs from data.task_id {payload.task_id}")
    if subject is None:
        if event_type.requires_subject:
            raise ValueError(f"{event_type} requires a subject: the task UUID")
        return None
    if isinstance(subject, UUID):
        return str(subject)
    if event_type.requires_subject:
        return str(parse_task_subject(subject))
    return subject
