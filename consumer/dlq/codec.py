"""The dead-letter tools' codec: AMQP values and properties to JSON and back, and body ids.

An export file must give back every message byte for byte, headers included, so AMQP
field values JSON has no type for (bytes, timestamps, decimals, non-finite floats) are
tagged (:func:`encode_value` / :func:`decode_value`). :func:`jsonable` is the lossy
display form. The ``as_*`` helpers read a header value that may arrive as ``str`` or
``bytes`` (another client) without ever raising.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from pamqp import commands as spec

from consumer.broker.headers import encodable

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


def with_headers(props: spec.Basic.Properties, headers: Mapping[str, Any]) -> spec.Basic.Properties:
    """A copy of ``props`` with ``headers`` instead of its own."""
    values = {name: getattr(props, name) for name in PROPERTY_FIELDS}
    return spec.Basic.Properties(headers=encodable(dict(headers)), **values)


def stored_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """``headers`` without the broker's delivery annotations."""
    return {k: v for k, v in (headers or {}).items() if k not in DELIVERY_ANNOTATIONS}


def message_key(body: bytes, properties: spec.Basic.Properties, headers: Mapping[str, Any]) -> str:
    """A short id of one message: SHA-256 of its body, properties and stored headers.

    Several dead letters can share an event id or a body (one event failing twice); the
    key tells them apart, and stays the same from one pass to the next. Only messages
    identical in every byte share a key.
    """
    digest = hashlib.sha256(body)
    props = {name: getattr(properties, name) for name in PROPERTY_FIELDS}
    for value in (props, dict(headers)):
        try:
            encoded = orjson.dumps(encode_value(value), option=orjson.OPT_SORT_KEYS)
        except (TypeError, ValueError, orjson.JSONEncodeError):
            encoded = repr(value).encode("utf-8", errors="replace")
        digest.update(len(encoded).to_bytes(8, "big") + encoded)
    return "k" + digest.hexdigest()[:15]


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


def as_text(value: Any) -> str | None:
    """A header value as text (bytes decoded leniently), None if it is neither."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    return None


def as_time(value: Any) -> datetime | None:
    """A header value as an aware datetime (naive ones taken as UTC), None if it is none."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = as_text(value)
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def as_int(value: Any) -> int:
    """A header value as an integer (an int, or digits as text; 0 otherwise and for a bool)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    text = (as_text(value) or "").strip()
    # ASCII digits only: "²".isdigit() is true, and int("²") raises
    return int(text) if text.isascii() and text.isdigit() else 0
