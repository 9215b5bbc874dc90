"""Scalar types that accept exactly what their JSON Schema accepts, and the payload base.

Pydantic's lax mode would coerce ``"3"`` into an integer, ``"yes"`` into ``True``, a Unix
timestamp or ``"2025-06-01 20:00"`` into a datetime and ``"urn:uuid:…"`` into a UUID. A
producer that validates against the exported JSON Schema gets none of that, so neither
does the decoder: what the schema rejects becomes a ``schema_violation`` dead letter
rather than a silent guess. Every integer and time is also bounded (see
:mod:`contracts.bounds`), in the models and in the schema alike.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal
from uuid import UUID

from annotated_types import Ge, Le
from pydantic import BaseModel, BeforeValidator, ConfigDict, Strict, WithJsonSchema

from contracts.bounds import INT32_MAX, JSON_SAFE_MAX

__all__ = [
    "TIMESTAMP_PATTERN",
    "UUID_PATTERN",
    "Boolean",
    "FalseConst",
    "Int32",
    "Integer",
    "JsonCount",
    "Number",
    "Payload",
    "PositiveInt32",
    "Timestamp",
    "TrueConst",
    "Uuid",
    "parse_timestamp",
    "parse_uuid",
]

UUID_PATTERN: Final = (
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
"""The canonical hyphenated 8-4-4-4-12 form, either case: JSON Schema's ``uuid`` format."""

_UUID = re.compile(UUID_PATTERN.strip("^$"))

# RFC 3339 ``date-time`` with seconds, at most 9 fraction digits and an offset, written in
# the years 2000..9999; in 9999 only with an offset >= 0, so that the time in UTC is
# always a year Python, PostgreSQL and the chain digest agree on.
_TIME = r"[Tt][0-9]{2}:[0-9]{2}:[0-5][0-9](\.[0-9]{1,9})?"
_YEARS_TO_9998 = r"([2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])"
TIMESTAMP_PATTERN: Final = (
    rf"^{_YEARS_TO_9998}-[0-9]{{2}}-[0-9]{{2}}{_TIME}([Zz]|[+-][0-9]{{2}}:[0-9]{{2}})$"
    rf"|^9999-[0-9]{{2}}-[0-9]{{2}}{_TIME}([Zz]|\+[0-9]{{2}}:[0-9]{{2}}|-00:00)$"
)
"""What a timestamp must look like, on top of JSON Schema's ``date-time`` format."""

_TIMESTAMP = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)
# The spelling producers use nearly always (Python's isoformat in UTC, or Z), in the years
# 2000..2099: a subset of TIMESTAMP_PATTERN that fromisoformat reads exactly as the
# general path does, and in UTC already (an impossible date falls to the general path).
_UTC_TIMESTAMP = re.compile(
    r"20[0-9]{2}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(?:\.[0-9]{1,6})?(?:Z|\+00:00)"
)
_TIMESTAMP_RULE = (
    "Input should be an RFC 3339 date-time such as 2025-06-01T20:00:00Z: 'T', seconds, "
    "an offset, at most 9 fraction digits, in the years 2000..9999"
)


def parse_uuid(text: str) -> UUID:
    """Parse a UUID written in the canonical hyphenated form (either case) only.

    Raises:
        ValueError: any other form (``urn:uuid:``, braces, 32 bare hex digits, ...).
    """
    check_uuid_text(text)
    return UUID(text)


def check_uuid_text(text: str) -> str:
    """``text`` if it is a UUID in the canonical hyphenated form; raises ValueError."""
    if not _UUID.fullmatch(text):
        raise ValueError(f"Input should be a UUID in the 8-4-4-4-12 form, got {text[:64]!r}")
    return text


def parse_timestamp(text: str) -> datetime:
    """Parse an RFC 3339 date-time as :data:`TIMESTAMP_PATTERN` allows it; return it in UTC.

    Fraction digits beyond microseconds are dropped.

    Raises:
        ValueError: anything else: a space for ``T``, no seconds, no offset, a leap
            second, a date that does not exist, a year outside 2000..9999.
    """
    if _UTC_TIMESTAMP.fullmatch(text) is not None:
        try:
            return datetime.fromisoformat(text)  # tzinfo is datetime.UTC itself
        except ValueError:
            pass  # 2026-02-30: the general path refuses it with the rule
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        raise ValueError(_TIMESTAMP_RULE)
    sign, off_hours, off_minutes = match.group(8, 9, 10)
    if sign is not None and (int(off_hours) > 23 or int(off_minutes) > 59):
        raise ValueError(_TIMESTAMP_RULE)  # fromisoformat would take +02:60 as +03:00
    try:  # the common spelling, parsed in C; lower-case t/z and odd cases take the slow path
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return _parse_timestamp_slowly(text)
    offset = parsed.utcoffset()
    if offset is None or not 2000 <= parsed.year <= 9999:
        raise ValueError(_TIMESTAMP_RULE)
    if parsed.year == 9999 and offset < timedelta(0):
        raise ValueError(_TIMESTAMP_RULE)
    return parsed.astimezone(UTC)


def _parse_timestamp_slowly(text: str) -> datetime:
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        raise ValueError(_TIMESTAMP_RULE)
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    fraction, sign, off_hours, off_minutes = match.group(7, 8, 9, 10)
    offset = 0
    if sign is not None:
        if int(off_hours) > 23 or int(off_minutes) > 59:
            raise ValueError(_TIMESTAMP_RULE)
        offset = (int(off_hours) * 60 + int(off_minutes)) * (-1 if sign == "-" else 1)
    if not 2000 <= year <= 9999 or second > 59 or (year == 9999 and offset < 0):
        raise ValueError(_TIMESTAMP_RULE)
    micro = int((fraction or "").ljust(6, "0")[:6])
    try:
        local = datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
    except ValueError:
        raise ValueError(_TIMESTAMP_RULE) from None
    return local - timedelta(minutes=offset)


def _timestamp(value: Any) -> datetime:
    """Text is parsed strictly; an aware datetime (from Python) must fit the same rule."""
    if type(value) is str:  # the wire's case first
        return parse_timestamp(value)
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(_TIMESTAMP_RULE)
        return parse_timestamp(value.isoformat())
    if not isinstance(value, str):
        raise ValueError(_TIMESTAMP_RULE)
    return parse_timestamp(value)


def _uuid(value: Any) -> Any:
    """Text must be canonical; a :class:`~uuid.UUID` (from Python) passes."""
    if type(value) is str and _UUID.fullmatch(value) is not None:  # the wire's case first
        return value
    if isinstance(value, UUID):
        return value
    if not isinstance(value, str):
        raise ValueError("Input should be a UUID string in the 8-4-4-4-12 form")
    return check_uuid_text(value)  # the canonical text; pydantic's core parses it (fast)


def _integral_float_to_int(value: Any) -> Any:
    """Let ``3.0`` through as ``3``: JSON Schema's ``integer`` accepts it, so must we."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def _require_boolean(value: Any) -> Any:
    """Refuse ``0`` and ``1`` where a JSON ``true``/``false`` constant is expected."""
    if not isinstance(value, bool):
        raise ValueError("Input should be a valid boolean")
    return value


# The bounds sit inside the Annotated, before the validator: given as Field(ge=...) on
# an optional field, pydantic would enforce them but write "ge" into the JSON Schema.

Integer = Annotated[int, Strict(), BeforeValidator(_integral_float_to_int)]
"""A JSON integer: an int, or a float with no fractional part; never a bool or string.

Unbounded: give it bounds (``Field(ge=..., le=...)``) where it is used."""

Int32 = Annotated[int, Strict(), Ge(0), Le(INT32_MAX), BeforeValidator(_integral_float_to_int)]
"""A JSON integer 0..2,147,483,647: one stored in a PostgreSQL ``INTEGER`` column."""

PositiveInt32 = Annotated[
    int, Strict(), Ge(1), Le(INT32_MAX), BeforeValidator(_integral_float_to_int)
]
"""A JSON integer 1..2,147,483,647: a 1-based number stored in an ``INTEGER`` column."""

JsonCount = Annotated[
    int, Strict(), Ge(0), Le(JSON_SAFE_MAX), BeforeValidator(_integral_float_to_int)
]
"""A JSON integer 0..2**53-1: one kept only inside a JSONB document."""

Number = Annotated[float, Strict()]
"""A JSON number: an int or a float; never a bool or string."""

Boolean = Annotated[bool, Strict()]
"""A JSON boolean: ``true`` or ``false`` only."""

Timestamp = Annotated[
    datetime,
    BeforeValidator(_timestamp),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": TIMESTAMP_PATTERN}),
]
"""An RFC 3339 date-time as :data:`TIMESTAMP_PATTERN` allows it, normalised to UTC."""

Uuid = Annotated[UUID, BeforeValidator(_uuid)]
"""A UUID in the canonical hyphenated form (``format: uuid``), never another spelling."""

TrueConst = Annotated[Literal[True], BeforeValidator(_require_boolean)]
"""The JSON constant ``true`` (a bare ``Literal[True]`` would also take ``1``)."""

FalseConst = Annotated[Literal[False], BeforeValidator(_require_boolean)]
"""The JSON constant ``false`` (a bare ``Literal[False]`` would also take ``0``)."""


class Payload(BaseModel):
    """Base of every payload model and of the objects nested in them.

    Frozen, and strict about keys: an unknown key is a validation error.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
