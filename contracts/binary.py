"""CloudEvents binary content mode: attributes in message headers, ``data`` as the body.

Two bindings put the attributes in headers:

* the RabbitMQ binding (the CloudEvents SDK's ``cloudevents.core.bindings.rabbitmq``, as
  used with pika or aio-pika): ``ce-<attribute>`` headers, every value a string, and the
  AMQP ``content_type`` property as ``datacontenttype``;
* the AMQP binding: ``cloudEvents_<attribute>`` or ``cloudEvents:<attribute>``
  application properties (AMQP headers on RabbitMQ), values of native types (``time``
  may be an AMQP timestamp).

:func:`structured_body` turns such a message into the structured-mode JSON body the
same event would have had, so binary events are validated by the one decoder and stored
in the one canonical form: a binary event and its structured twin are equal JSON, and a
replay of one is a duplicate of the other.

Conversion, by the CloudEvents type system's canonical string forms: ``schemaversion``
(an Integer) from a decimal string (``"1"``) becomes the number 1; ``time`` from an AMQP
timestamp (a datetime or milliseconds since the epoch) becomes an RFC 3339 string in
UTC; every other attribute is kept as given. Anything else the contract refuses is then
refused by :func:`contracts.decode.decode` exactly as in structured mode.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from contracts.enums import DeadLetterReason

__all__ = ["CE_PREFIXES", "STRUCTURED_CONTENT_TYPE", "BinaryModeError", "structured_body"]

STRUCTURED_CONTENT_TYPE: Final = "application/cloudevents+json"
"""AMQP ``content_type`` of a structured-mode message (what taskledger sends)."""

CE_PREFIXES: Final = ("ce-", "cloudEvents_", "cloudEvents:")
"""Header name prefixes that carry a CloudEvents attribute in binary mode."""

_INTEGER = re.compile(r"-?[0-9]{1,18}")
_INTEGER_ATTRIBUTES: Final = frozenset({"schemaversion"})
_JSON_MEDIA_TYPE = re.compile(r"application/json\s*(;.*)?", re.IGNORECASE)


class BinaryModeError(ValueError):
    """The headers say binary mode, but the message cannot be read as such.

    Attributes:
        reason: ``invalid_json`` for a body that is not JSON, else ``schema_violation``.
    """

    def __init__(
        self, message: str, reason: DeadLetterReason = DeadLetterReason.SCHEMA_VIOLATION
    ) -> None:
        super().__init__(message)
        self.reason = reason


def _attribute_name(header: str) -> str | None:
    """The attribute a header carries, or None for any other header."""
    if header[:3].lower() == "ce-":
        return header[3:].lower()
    for prefix in CE_PREFIXES[1:]:
        if header.startswith(prefix):
            return header[len(prefix) :]
    return None


def _text(value: Any) -> Any:
    """A header string the client could not decode as UTF-8 arrives as bytes."""
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise BinaryModeError("a CloudEvents header is not UTF-8 text") from None
    return value


def _time_text(value: datetime) -> str:
    """An AMQP timestamp as RFC 3339 in UTC (``Z``), as the SDK writes it."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    text = aware.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _convert(name: str, value: Any) -> Any:
    """One attribute value, by the binding's rules (see the module docstring)."""
    value = _text(value)
    if name in _INTEGER_ATTRIBUTES and isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    if name == "time":
        if isinstance(value, datetime):
            return _time_text(value)
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return _time_text(datetime.fromtimestamp(value / 1000, UTC))
            except (OverflowError, OSError, ValueError):
                raise BinaryModeError(f"time: {value} is no AMQP timestamp") from None
    return value


def structured_body(
    headers: Mapping[str, Any] | None, content_type: str | None, body: bytes
) -> bytes | None:
    """The structured-mode JSON body of a binary-mode message; None if it is not one.

    A message is in binary mode when its AMQP ``content_type`` is not
    ``application/cloudevents+json`` and its headers (:data:`CE_PREFIXES`) carry the
    ``specversion`` attribute, which binary mode always has. Its ``content_type`` becomes ``datacontenttype`` (left out when
    absent); the body, which must then be JSON, becomes ``data``.

    Raises:
        BinaryModeError: an attribute is named twice, a header is not UTF-8, the content
            type is not JSON, or the body is not JSON (all ``schema_violation`` or
            ``invalid_json`` for the caller).
    """
    if not headers:
        return None
    if content_type and content_type.lower().startswith("application/cloudevents"):
        return None
    attributes: dict[str, Any] = {}
    for header, value in headers.items():
        name = _attribute_name(str(header))
        if name is None:
            continue
        if name in attributes or name in ("data", "data_base64"):
            raise BinaryModeError(f"attribute {name!r} is given twice or is not an attribute")
        attributes[name] = _convert(name, value)
    if "specversion" not in attributes:
        return None  # binary mode always names its specversion; stray headers are no event
    if content_type is not None:
        if not _JSON_MEDIA_TYPE.fullmatch(content_type):
            raise BinaryModeError(
                f"binary mode: content_type {content_type[:100]!r} is not application/json"
            )
        attributes["datacontenttype"] = content_type
    try:
        attributes["data"] = orjson.loads(body) if body else None
    except orjson.JSONDecodeError as exc:
        raise BinaryModeError(
            f"binary mode: the body (data) is not valid UTF-8 JSON: {exc}",
            DeadLetterReason.INVALID_JSON,
        ) from None
    try:
        return orjson.dumps(attributes)
    except TypeError as exc:
        raise BinaryModeError(f"binary mode: an attribute has no JSON form: {exc}") from None
