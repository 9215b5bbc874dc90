"""Time and duration arguments: RFC 3339, or relative (``7d``, ``12h``, ``30m``).

The one parser set behind the ``--since``/``--until``/``--older-than``/``--after``
options of the CLI and the ``since``/``until`` parameters of the HTTP API. Every error
is an :class:`~consumer.core.errors.InvalidArgument` whose one-line message names the
argument; the CLI turns it into exit 2, the API into 422.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from consumer.core.errors import InvalidArgument
from contracts._types import TIMESTAMP_PATTERN, parse_timestamp

__all__ = ["RELATIVE_PATTERN", "TIME_SCHEMA", "parse_duration", "parse_time"]

_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

#: A relative time as the API takes it: at most 5 digits (99999w is still after year 1).
RELATIVE_PATTERN = r"^[0-9]{1,5}[smhdw]$"
_STRICT_RELATIVE = re.compile(RELATIVE_PATTERN.strip("^$"))
#: The JSON Schema of what ``parse_time(strict=True)`` accepts: the wire contract's
#: timestamps (RFC 3339 with seconds and an offset, years 2000..9999) or a relative time.
TIME_SCHEMA: dict[str, object] = {
    "anyOf": [
        {"type": "string", "format": "date-time", "pattern": TIMESTAMP_PATTERN},
        {"type": "string", "pattern": RELATIVE_PATTERN},
    ]
}


def parse_time(
    value: str | None, *, name: str = "time", ahead: bool = False, strict: bool = False
) -> datetime | None:
    """Parse an RFC 3339 time or a relative one; None or ``""`` give None.

    A relative time (``15m``, ``7d``, ``2w``) is that long ago, or with ``ahead`` that
    long from now (``pause --until 30m``). A time without offset is UTC. The result is
    always in UTC. Raises :class:`InvalidArgument` (``name`` says which argument) for
    anything else, or for a time out of range (``99999999999d``, or
    ``0001-01-01T00:00:00+01:00``, which is before year 1 in UTC).

    ``strict`` (the HTTP API) takes exactly what :data:`TIME_SCHEMA` documents: a
    timestamp as the wire contract takes it, or ``<1..5 digits><s|m|h|d|w>``; ``""`` is
    refused.
    """
    if strict:
        return _parse_strict(value, name=name, ahead=ahead)
    if value is None or value == "":
        return None
    try:
        match = _RELATIVE.match(value)
        if match:
            delta = timedelta(**{_UNITS[match[2]]: int(match[1])})
            now = datetime.now(UTC)
            return now + delta if ahead else now - delta
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except OverflowError:
        raise InvalidArgument(f"{name} {value!r} is out of range") from None
    except ValueError:
        raise InvalidArgument(
            f"{name} {value!r} is neither RFC 3339 (2026-11-01T10:00:00Z) nor relative (7d, 12h, 30m)"
        ) from None


def _parse_strict(value: str | None, *, name: str, ahead: bool) -> datetime | None:
    if value is None:
        return None
    if _STRICT_RELATIVE.fullmatch(value):
        return parse_time(value, name=name, ahead=ahead)
    try:
        return parse_timestamp(value)
    except ValueError:
        raise InvalidArgument(
            f"{name} {value[:80]!r} is neither RFC 3339 with seconds and an offset, years "
            "2000..9999 (2026-11-01T10:00:00Z) nor relative (7d, 12h, 30m)"
        ) from None


def parse_duration(value: str, *, name: str) -> float:
    """Seconds in ``value`` (``90``, ``90s``, ``15m``, ``2h``, ``1d``).

    Raises :class:`InvalidArgument` (``name`` says which argument) unless it is a
    positive duration.
    """
    match = _DURATION.match(value)
    if not match or float(match[1]) <= 0:
        raise InvalidArgument(
            f"{name} {value!r} is not a positive duration like 600, 90s, 15m, 2h or 1d"
        )
    return float(match[1]) * _SECONDS[match[2]]
