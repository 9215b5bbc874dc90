"""The one decoder of wire contract v1: bytes in, :class:`Event` or :class:`DecodeError` out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

import orjson
from pydantic import BaseModel, ValidationError
from pydantic_core import SchemaValidator, core_schema

from contracts._types import check_uuid_text
from contracts.binary import BinaryModeError, structured_body
from contracts.enums import DeadLetterReason, EventType
from contracts.envelope import MAX_BODY_BYTES, SCHEMA_VERSION, Envelope, Event, parse_task_subject
from contracts.events import DATA_MODELS, DispatchAssigned, TaskRecoveryRequested

__all__ = ["DecodeError", "decode"]

MESSAGE_LIMIT = 500
"""Longest :attr:`DecodeError.message`, in characters."""

_MAX_LISTED_ERRORS = 8
_TYPES_BY_VALUE: dict[str, EventType] = {t.value: t for t in EventType}
_REQUIRES_SUBJECT = frozenset(t for t in EventType if t.requires_subject)
_CARRIES_TASK_ID = (DispatchAssigned, TaskRecoveryRequested)
# The validators themselves: model_validate adds a Python call around each.
_ENVELOPE = Envelope.__pydantic_validator__
_DATA_VALIDATORS = {t: m.__pydantic_validator__ for t, m in DATA_MODELS.items()}
# A canonical UUID text (checked first) to a UUID, in pydantic's core: ~2x uuid.UUID(text).
_UUID_FROM_TEXT = SchemaValidator(core_schema.uuid_schema())
_JSON_TYPE_NAMES: dict[type, str] = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


class DecodeError(Exception):
    """A message that can never be valid: dead-letter it at once, do not retry.

    Attributes:
        reason: the dead-letter reason (header ``x-taskledger-reason``).
        message: what is wrong, one line of at most :data:`MESSAGE_LIMIT` characters.

    ``str(error)`` is ``"<reason>: <message>"``.
    """

    def __init__(self, reason: DeadLetterReason, message: str) -> None:
        message = _one_line(message)
        super().__init__(reason, message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.message}"


def decode(
    body: bytes | bytearray | memoryview,
    routing_key: str | None = None,
    *,
    headers: Mapping[str, Any] | None = None,
    content_type: str | None = None,
) -> Event:
    """Parse and validate one message body.

    Pass the message's AMQP ``headers`` and ``content_type`` to accept CloudEvents
    binary content mode as well (attributes in ``ce-*`` / ``cloudEvents_*`` /
    ``cloudEvents:*`` headers, the body the ``data``): such a message is turned into its
    structured-mode body first (:func:`contracts.binary.structured_body`), validated
    the same way, and :attr:`Event.body` is that structured body.

    Checks, in order: size (``too_large``); JSON and a top-level object
    (``invalid_json``); an integer ``schemaversion`` other than 1
    (``unsupported_schema_version``); a string ``type`` (else ``schema_violation``) that
    names a known type (else ``unknown_event_type``); the envelope; the subject, a task
    UUID for ``task.*`` and ``dispatch.*``; the ``data`` payload; and, when
    ``routing_key`` is given, that ``type`` equals it (all ``schema_violation``).

    Pass ``routing_key`` for messages from the events exchange only: outbound types are
    routed by agent (``dispatch.<agent_type>.<agent_id>``), not by type.

    Raises:
        DecodeError: for any input that is not a valid v1 message; never anything else.
    """
    try:
        return _decode(body, routing_key, headers, content_type)
    except DecodeError:
        raise
    except Exception as exc:  # the boundary: nothing but DecodeError may leave decode
        raise DecodeError(
            DeadLetterReason.SCHEMA_VIOLATION,
            f"unexpected {type(exc).__name__} while decoding: {exc}",
        ) from exc


def _decode(
    body: bytes | bytearray | memoryview,
    routing_key: str | None,
    headers: Mapping[str, Any] | None,
    content_type: str | None,
) -> Event:
    if not isinstance(body, bytes):
        body = bytes(body)  # bytearray, memoryview
    if len(body) > MAX_BODY_BYTES:
        raise DecodeError(
            DeadLetterReason.TOO_LARGE,
            f"body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}",
        )
    if headers:
        try:
            structured = structured_body(headers, content_type, body)
        except BinaryModeError as exc:
            raise DecodeError(exc.reason, str(exc)) from None
        if structured is not None:
            body = structured
            if len(body) > MAX_BODY_BYTES:
                raise DecodeError(
                    DeadLetterReason.TOO_LARGE,
                    f"event is {len(body)} bytes with its attributes; the limit is "
                    f"{MAX_BODY_BYTES}",
                )
    obj = _parse_json(body)
    event_type = _check_version_and_type(obj)
    try:
        envelope: Envelope = _ENVELOPE.validate_python(obj)
    except ValidationError as exc:
        raise DecodeError(DeadLetterReason.SCHEMA_VIOLATION, _summarise(exc)) from None
    task_id = _task_id(event_type, envelope.subject)
    data = _validate_data(event_type, envelope.data, task_id)
    if routing_key is not None and routing_key != envelope.type:  # == event_type.value
        raise DecodeError(
            DeadLetterReason.SCHEMA_VIOLATION,
            f"type {event_type.value!r} does not equal the routing key {routing_key[:100]!r}",
        )
    return Event(envelope=envelope, type=event_type, data=data, task_id=task_id, body=body)


def _parse_json(body: bytes) -> dict[str, Any]:
    """Parse ``body`` once; the top level must be an object."""
    try:
        obj = orjson.loads(body)
    except Exception as exc:  # JSONDecodeError; anything else is as undecodable
        raise DecodeError(DeadLetterReason.INVALID_JSON, f"not valid UTF-8 JSON: {exc}") from None
    if not isinstance(obj, dict):
        kind = _JSON_TYPE_NAMES.get(type(obj), type(obj).__name__)
        raise DecodeError(DeadLetterReason.INVALID_JSON, f"top level is {kind}, not an object")
    return obj


def _check_version_and_type(obj: dict[str, Any]) -> EventType:
    """Refuse other schema versions and unknown types before validating anything else."""
    version = obj.get("schemaversion")
    if type(version) is float and version.is_integer():
        version = int(version)
    if type(version) is int and version != SCHEMA_VERSION:
        raise DecodeError(
            DeadLetterReason.UNSUPPORTED_SCHEMA_VERSION,
            f"schemaversion {version} is not supported; this service speaks {SCHEMA_VERSION}",
        )
    raw_type = obj.get("type")
    if not isinstance(raw_type, str):
        raise DecodeError(DeadLetterReason.SCHEMA_VIOLATION, "type: missing or not a string")
    event_type = _TYPES_BY_VALUE.get(raw_type)
    if event_type is None:
        raise DecodeError(
            DeadLetterReason.UNKNOWN_EVENT_TYPE, f"unknown event type {raw_type[:100]!r}"
        )
    return event_type


def _task_id(event_type: EventType, subject: str | None) -> UUID | None:
    """The subject as a task UUID where the type requires one; None elsewhere."""
    if event_type not in _REQUIRES_SUBJECT:
        return None
    if subject is None:
        raise DecodeError(
            DeadLetterReason.SCHEMA_VIOLATION,
            f"subject: required for {event_type.value} (the task UUID)",
        )
    try:
        check_uuid_text(subject)  # what parse_task_subject accepts, the UUID made faster
        uuid: UUID = _UUID_FROM_TEXT.validate_python(subject)
        return uuid
    except ValueError:
        pass
    try:
        return parse_task_subject(subject)  # raises, with its message
    except ValueError as exc:
        raise DecodeError(DeadLetterReason.SCHEMA_VIOLATION, f"subject: {exc}") from None


def _validate_data(event_type: EventType, data: dict[str, Any], task_id: UUID | None) -> BaseModel:
    """Validate the payload with the type's model."""
    try:
        payload: BaseModel = _DATA_VALIDATORS[event_type].validate_python(data)
    except ValidationError as exc:
        raise DecodeError(DeadLetterReason.SCHEMA_VIOLATION, _summarise(exc, "data")) from None
    if isinstance(payload, _CARRIES_TASK_ID) and payload.task_id != task_id:
        raise DecodeError(
            DeadLetterReason.SCHEMA_VIOLATION,
            f"data.task_id {payload.task_id} differs from subject {task_id}",
        )
    return payload


def _summarise(exc: ValidationError, prefix: str | None = None) -> str:
    """Pydantic's errors as ``"field.path: msg; ..."``, the first few only."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    parts = []
    for error in errors[:_MAX_LISTED_ERRORS]:
        loc = [prefix] if prefix else []
        loc.extend(str(part) for part in error["loc"])
        parts.append(f"{'.'.join(loc)}: {error['msg']}" if loc else error["msg"])
    if len(errors) > _MAX_LISTED_ERRORS:
        parts.append(f"(+{len(errors) - _MAX_LISTED_ERRORS} more)")
    return "; ".join(parts)


def _one_line(text: str) -> str:
    """``text`` on one line, cut to :data:`MESSAGE_LIMIT` characters."""
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    if len(text) > MESSAGE_LIMIT:
        text = text[: MESSAGE_LIMIT - 3] + "..."
    return text
