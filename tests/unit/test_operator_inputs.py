"""Pure parsers behind the operator tools: cursors, times and durations, the dead-letter
codec, header readers and origin resolution (no broker, no database)."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.broker import H_EXCHANGE, H_ROUTING_KEY, Names
from consumer.core.errors import InvalidArgument
from consumer.dlq.codec import as_int, as_text, as_time, decode_value, encode_value, fingerprint
from consumer.dlq.letters import Origin, resolve_origin
from consumer.queries.filters import decode_cursor, encode_cursor
from consumer.queries.times import parse_duration, parse_time

NAMES = Names("tl")


@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(9000, 1, 1),
                 timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))])),
    st.uuids(),
)  # fmt: skip
def test_cursor_round_trips(when: datetime, task_id: uuid.UUID) -> None:
    assert decode_cursor(encode_cursor(when, task_id)) == (when, task_id)


def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    ["junk", "", "=", _cursor([]), _cursor(["2026-01-01T00:00:00+00:00"]),
     _cursor(["2026-01-01T00:00:00+00:00", 5]), _cursor(["2026-01-01T00:00:00+00:00", [1]]),
     _cursor(["2026-01-01T00:00:00", str(uuid.UUID(int=7))]),  # naive
     _cursor(["0001-01-01T00:00:00+01:00", str(uuid.UUID(int=7))]),  # overflows in UTC
     _cursor([7, str(uuid.UUID(int=7))]), _cursor({"a": 1})],
)  # fmt: skip
def test_a_bad_cursor_is_an_invalid_argument(cursor: str) -> None:
    with pytest.raises(InvalidArgument, match="cursor is not valid"):
        decode_cursor(cursor)


def test_relative_and_absolute_times() -> None:
    now = datetime.now(UTC)
    week_ago = parse_time("7d", name="--since")
    assert week_ago is not None and abs((now - week_ago) - timedelta(days=7)) < timedelta(seconds=5)
    ahead = parse_time("30 m", name="--until", ahead=True)
    assert ahead is not None and ahead > now
    assert parse_time("2026-11-01T10:00:00Z") == datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert parse_time("2026-11-01T10:00:00") == datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert parse_time(None) is None and parse_time("") is None


@pytest.mark.parametrize("value", ["yesterday", "7x", "-1d", "99999999999d", "2026-13-01"])
def test_a_bad_time_names_its_argument(value: str) -> None:
    with pytest.raises(InvalidArgument, match="--since"):
        parse_time(value, name="--since")


@pytest.mark.parametrize(
    "value,seconds", [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400),
                      ("1.5h", 5400)]
)  # fmt: skip
def test_durations(value: str, seconds: float) -> None:
    assert parse_duration(value, name="--older-than") == seconds


@pytest.mark.parametrize("value", ["0", "-5m", "m", "5y", ""])
def test_a_bad_duration_is_refused(value: str) -> None:
    with pytest.raises(InvalidArgument, match="--older-than"):
        parse_duration(value, name="--older-than")


header_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20)
    | st.binary(max_size=20).map(bytearray) | st.decimals(allow_nan=False, places=2)
    | st.floats() | st.datetimes(timezones=st.just(UTC)).map(lambda d: d.replace(microsecond=0)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)  # fmt: skip


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and a != a:  # NaN
        return isinstance(b, float) and b != b
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    return bool(a == b and type(a) is type(b)) or (isinstance(a, Decimal) and a == b)


@given(header_values)
def test_every_header_value_survives_the_json_codec(value: Any) -> None:
    encoded = encode_value(value)
    again = decode_value(orjson.loads(orjson.dumps(encoded)))
    assert _same(value, again), (value, encoded, again)


@pytest.mark.parametrize(
    "value,expected", [(3, 3), ("12", 12), (" 7 ", 7), ("²", 0), ("-1", 0), ("1e3", 0),
                       (True, 0), (None, 0), ({}, 0), (b"5", 5), ("٣", 0)]
)  # fmt: skip
def test_header_integers_never_raise(value: Any, expected: int) -> None:
    assert as_int(value) == expected


def test_header_text_and_time_readers() -> None:
    assert as_text(b"\xff") == "\ufffd" and as_text(5) is None
    assert as_time("2026-11-01T10:00:00Z") == datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert as_time("garbage") is None and as_time(7) is None
    assert len(fingerprint(b"x")) == 12 and fingerprint(b"x") == fingerprint(b"x")


def test_origin_comes_from_our_headers_then_x_death_then_the_body() -> None:
    ours = {H_ROUTING_KEY: "task.step", H_EXCHANGE: "tl.events"}
    assert resolve_origin(ours, None, NAMES) == Origin("tl.events", "task.step", "headers")
    death = {"x-death": [{"exchange": "tl.dlx", "routing-keys": ["ignored"]},
                         {"exchange": "tl.events", "routing-keys": ["task.failed"]}]}  # fmt: skip
    assert resolve_origin(death, None, NAMES) == Origin("tl.events", "task.failed", "x-death")
    body = {"type": "task.requested"}
    assert resolve_origin({}, body, NAMES) == Origin("tl.events", "task.requested", "body")
    assert resolve_origin({}, None, NAMES) is None
    assert resolve_origin({"x-death": "garbage"}, {"type": 5}, NAMES) is None


def test_error_patterns_keep_words_with_digits_readable() -> None:
    from consumer.dlq.views import error_pattern

    assert (
        error_pattern("bad UTF-8 at position 7, offset -3") == "bad UTF-N at position N, offset N"
    )
