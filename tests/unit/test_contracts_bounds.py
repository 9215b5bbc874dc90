"""Wire contract v1 bounds: every time, integer, string and array, at the edge and past it.

Each case is judged twice, by :func:`contracts.decode` and by the checked-in JSON Schema
(``jsonschema_rs``), and both must agree. The integer bounds are also checked against the
columns of :mod:`consumer.store.models` the values land in.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Integer, String

from consumer.store import models
from contracts import (
    AgentType,
    ControlScope,
    DeadLetterReason,
    DecodeError,
    ErrorCause,
    EventType,
    StepStatus,
    TriggerType,
    decode,
    make_event,
)
from contracts._types import parse_timestamp
from contracts.bounds import (
    ATTRIBUTE_MAX,
    COST_USD_MAX,
    CPU_CORES_MAX,
    INT32_MAX,
    JSON_SAFE_MAX,
    LINES_MAX,
    LIST_MAX,
    NAME_MAX,
    TEXT_MAX,
    TRACE_MAX,
)
from contracts.examples import EXAMPLE_TASK_ID, example_event
from tests.unit.test_contracts_schema_agreement import schema_accepts

Mutate = Callable[[dict[str, Any]], object]


def message(event_type: EventType, mutate: Mutate | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = json.loads(example_event(event_type))
    if mutate is not None:
        mutate(msg)
    return msg


def verdict(msg: dict[str, Any]) -> bool:
    """True if valid; decode and the schema must agree, and a refusal is a schema violation."""
    try:
        decode(json.dumps(msg).encode())
        by_decode = True
    except DecodeError as error:
        assert error.reason is DeadLetterReason.SCHEMA_VIOLATION, error
        by_decode = False
    assert schema_accepts(msg) is by_decode, json.dumps(msg)[:500]
    return by_decode


def setter(*path: str | int, value: Any) -> Mutate:
    def mutate(msg: dict[str, Any]) -> None:
        target = msg["data"]
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return mutate


# --- times ----------------------------------------------------------------------------

TIMES = [
    ("2025-06-01T20:00:00Z", True),
    ("2025-06-01t20:00:00z", True),
    ("2025-06-01T22:00:00.123+02:00", True),
    ("2025-06-01T20:00:00.123456789Z", True),
    ("2000-01-01T00:00:00Z", True),
    ("2000-01-01T00:00:00+14:00", True),  # 1999-12-31T10:00Z: written in 2000
    ("9999-12-31T23:59:59.999999Z", True),
    ("9999-12-31T23:59:59+01:00", True),
    ("9999-12-31T23:59:59-00:00", True),
    ("9999-12-31T23:59:59-01:00", False),  # past 9999 in UTC
    ("1999-12-31T23:59:59Z", False),
    ("0001-01-01T00:00:00Z", False),  # stored as -infinity
    ("0999-06-01T00:00:00Z", False),
    ("2025-06-01 20:00:00Z", False),  # space for T
    ("2025-06-01T20:00Z", False),  # no seconds
    ("2025-06-01T20:00:00", False),  # no offset
    ("2025-06-01T20:00:00+0200", False),
    ("2025-06-01T20:00:00+24:00", False),
    ("2025-06-01T20:00:00.1234567890Z", False),  # more than 9 fraction digits
    ("2016-12-31T23:59:60Z", False),  # a leap second: Python cannot hold it
    ("2025-02-29T00:00:00Z", False),
    ("2025-06-01T24:00:00Z", False),
    ("10000-01-01T00:00:00Z", False),
]


@pytest.mark.parametrize(("text", "valid"), TIMES)
@pytest.mark.parametrize(
    ("event_type", "key"),
    [
        (EventType.TASK_STARTED, None),
        (EventType.DISPATCH_REQUESTED, "not_before"),
        (EventType.CONTROL_PAUSE, "resume_after"),
        (EventType.TASK_RECOVERY_REQUESTED, "last_event_at"),
    ],
)
def test_times(text: str, valid: bool, event_type: EventType, key: str | None) -> None:
    msg = message(event_type)
    (msg["data"] if key else msg)[key or "time"] = text
    assert verdict(msg) is valid


def test_times_are_normalised_to_utc() -> None:
    assert parse_timestamp("2025-06-01T22:00:00.1234567+02:00") == datetime(
        2025, 6, 1, 20, 0, 0, 123456, tzinfo=UTC
    )
    assert parse_timestamp("2000-01-01T00:00:00+14:00").year == 1999
    assert parse_timestamp("9999-12-31T23:59:59-00:00").tzinfo is UTC


@pytest.mark.parametrize(
    "time",
    [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 0, tzinfo=timezone(-timedelta(hours=5))),
        datetime(2025, 6, 1, 20, 0),  # naive
    ],
)
def test_make_event_refuses_times_out_of_the_window(time: datetime) -> None:
    with pytest.raises(ValueError):
        make_event(
            EventType.TASK_APPROVED, {}, source="orchestrator", subject=EXAMPLE_TASK_ID, time=time
        )


# --- UUIDs ------------------------------------------------------------------------------

TASK = str(EXAMPLE_TASK_ID)
UUIDS = [
    (TASK, True),
    (TASK.upper(), True),
    (f"urn:uuid:{TASK}", False),
    (f"{{{TASK}}}", False),
    (EXAMPLE_TASK_ID.hex, False),
    (f" {TASK}", False),
    (TASK[:-1], False),
]


@pytest.mark.parametrize(("text", "valid"), UUIDS)
@pytest.mark.parametrize(
    "where",
    ["id", "subject", "control.pause task_id", "control.resume task_id"],
)
def test_uuid_spellings(text: str, valid: bool, where: str) -> None:
    if where in ("id", "subject"):
        msg = message(EventType.TASK_STEP)
        msg[where] = text
    else:
        msg = message(EventType(where.split()[0]), setter("task_id", value=text))
    assert verdict(msg) is valid


# --- integers and numbers ------------------------------------------------------------------

#: (type, path to the field, largest valid value, smallest valid value)
NUMBERS: list[tuple[EventType, tuple[str | int, ...], float, float]] = [
    (EventType.TASK_STEP, ("step_number",), INT32_MAX, 1),
    (EventType.TASK_STEP, ("duration_ms",), INT32_MAX, 0),
    (EventType.TASK_FAILED, ("failed_step",), INT32_MAX, 1),
    (EventType.CAPACITY_REPORTED, ("free", "gpu_vram_mb"), INT32_MAX, 0),
    (EventType.CAPACITY_REPORTED, ("free", "memory_mb"), INT32_MAX, 0),
    (EventType.CAPACITY_REPORTED, ("free", "cpu_cores"), CPU_CORES_MAX, 0),
    (EventType.DISPATCH_REQUESTED, ("required", "gpu_vram_mb"), INT32_MAX, 0),
    (EventType.DISPATCH_REQUESTED, ("required", "memory_mb"), INT32_MAX, 0),
    (EventType.DISPATCH_REQUESTED, ("required", "cpu_cores"), CPU_CORES_MAX, 0),
    (EventType.DISPATCH_REQUESTED, ("priority",), 5, 1),
    (EventType.TASK_REQUESTED, ("plan", "estimated_duration_seconds"), JSON_SAFE_MAX, 0),
    (EventType.TASK_REQUESTED, ("estimated_resources", "gpu_vram_mb"), JSON_SAFE_MAX, 0),
    (EventType.TASK_REQUESTED, ("estimated_resources", "memory_mb"), JSON_SAFE_MAX, 0),
    (EventType.TASK_REQUESTED, ("estimated_resources", "cpu_cores"), CPU_CORES_MAX, 0),
    (EventType.TASK_COMPLETED, ("actual_resources", "cpu_time_ms"), JSON_SAFE_MAX, 0),
    (EventType.TASK_COMPLETED, ("actual_resources", "gpu_vram_mb_used"), INT32_MAX, 0),
    (EventType.TASK_COMPLETED, ("actual_resources", "duration_seconds"), INT32_MAX, 0),
    (EventType.TASK_REQUESTED, ("estimated_resources", "duration_seconds"), INT32_MAX, 0),
    (EventType.TASK_COMPLETED, ("actual_resources", "peak_memory_mb"), JSON_SAFE_MAX, 0),
    (EventType.TASK_COMPLETED, ("actual_resources", "agent_load_pct"), 100.0, 0),
    (EventType.TASK_COMPLETED, ("external_ai_used", 0, "token_count"), JSON_SAFE_MAX, 0),
    (EventType.TASK_COMPLETED, ("external_ai_used", 0, "cost_usd"), COST_USD_MAX, 0),
    (EventType.CAPACITY_REPORTED, ("load_pct",), 100.0, 0),
]


@pytest.mark.parametrize(("event_type", "path", "high", "low"), NUMBERS, ids=str)
def test_number_bounds(
    event_type: EventType, path: tuple[str | int, ...], high: float, low: float
) -> None:
    assert verdict(message(event_type, setter(*path, value=high)))
    assert verdict(message(event_type, setter(*path, value=low)))
    step = 1 if isinstance(high, int) else 0.5
    assert not verdict(message(event_type, setter(*path, value=high + step)))
    assert not verdict(message(event_type, setter(*path, value=low - 1)))
    assert not verdict(message(event_type, setter(*path, value=str(high))))  # lax mode: no
    assert not verdict(message(event_type, setter(*path, value=True)))
    if isinstance(high, int):
        assert verdict(message(event_type, setter(*path, value=float(low))))  # 1.0 is 1
        assert not verdict(message(event_type, setter(*path, value=low + 0.5)))


def test_the_issue_s_integers_are_refused() -> None:
    assert not verdict(message(EventType.TASK_STEP, setter("duration_ms", value=3_000_000_000)))
    assert not verdict(message(EventType.TASK_FAILED, setter("failed_step", value=2**31)))
    assert not verdict(
        message(EventType.CAPACITY_REPORTED, setter("free", "memory_mb", value=2**40))
    )


@pytest.mark.parametrize(
    ("column", "field"),
    [
        (models.ExecutionLog.step_number, "task.step step_number"),
        (models.ExecutionLog.duration_ms, "task.step duration_ms"),
        (models.Task.failed_step, "task.failed failed_step"),
        (models.AgentCapacity.free_gpu_vram_mb, "capacity.reported free.gpu_vram_mb"),
        (models.AgentCapacity.free_memory_mb, "capacity.reported free.memory_mb"),
        (models.PauseQueueEntry.required_gpu_vram_mb, "dispatch.requested required.gpu_vram_mb"),
        (models.PauseQueueEntry.required_memory_mb, "dispatch.requested required.memory_mb"),
    ],
)
def test_integer_columns_are_what_the_bound_assumes(column: Any, field: str) -> None:
    assert type(column.property.columns[0].type) is Integer, field
    assert any(n[0] == EventType(field.split()[0]) and n[2] == INT32_MAX for n in NUMBERS)


def test_costs_fit_the_cost_column() -> None:
    numeric = models.Task.cost_usd.property.columns[0].type
    largest = Decimal(10) ** (numeric.precision - numeric.scale)
    assert Decimal(str(COST_USD_MAX)) * LIST_MAX < largest


@pytest.mark.parametrize(
    ("column", "values"),
    [
        (models.Task.agent_type, AgentType),
        (models.Task.error_cause, ErrorCause),
        (models.ExecutionLog.status, StepStatus),
        (models.PauseHistory.trigger, TriggerType),
        (models.DispatchHold.scope, ControlScope),
    ],
)
def test_enum_values_fit_their_varchar_columns(column: Any, values: Any) -> None:
    length = column.property.columns[0].type.length
    assert type(column.property.columns[0].type) is String
    assert max(len(v.value) for v in values) <= length


# --- strings and arrays --------------------------------------------------------------------

STRINGS: list[tuple[EventType, tuple[str | int, ...], int]] = [
    (EventType.TASK_REQUESTED, ("request_text",), TEXT_MAX),
    (EventType.TASK_REQUESTED, ("created_by",), NAME_MAX),
    (EventType.TASK_REQUESTED, ("services", 0), NAME_MAX),
    (EventType.TASK_REQUESTED, ("plan", "steps", 0), TEXT_MAX),
    (EventType.TASK_APPROVED, ("approved_by",), NAME_MAX),
    (EventType.TASK_REJECTED, ("reason",), TEXT_MAX),
    (EventType.TASK_STARTED, ("agent_id",), NAME_MAX),
    (EventType.TASK_STEP, ("action",), TEXT_MAX),
    (EventType.TASK_STEP, ("output_summary",), TEXT_MAX),
    (EventType.TASK_COMPLETED, ("services_touched", 0), NAME_MAX),
    (EventType.TASK_COMPLETED, ("outcome", "output_summary"), TEXT_MAX),
    (EventType.TASK_COMPLETED, ("outcome", "last_lines", 0), TEXT_MAX),
    (EventType.TASK_COMPLETED, ("external_ai_used", 0, "provider"), NAME_MAX),
    (EventType.TASK_COMPLETED, ("external_ai_used", 0, "model"), NAME_MAX),
    (EventType.TASK_FAILED, ("outcome", "error_type"), NAME_MAX),
    (EventType.TASK_FAILED, ("outcome", "error_message"), TEXT_MAX),
    (EventType.TASK_FAILED, ("outcome", "stack_trace"), TRACE_MAX),
    (EventType.CAPACITY_REPORTED, ("agent_id",), NAME_MAX),
    (EventType.CONTROL_PAUSE, ("reason",), TEXT_MAX),
    (EventType.DISPATCH_ASSIGNED, ("agent_id",), NAME_MAX),
    (EventType.TASK_RECOVERY_REQUESTED, ("agent_id",), NAME_MAX),
]


@pytest.mark.parametrize(("event_type", "path", "cap"), STRINGS, ids=str)
def test_string_caps(event_type: EventType, path: tuple[str | int, ...], cap: int) -> None:
    assert verdict(message(event_type, setter(*path, value="é" * cap)))
    assert not verdict(message(event_type, setter(*path, value="x" * (cap + 1))))


@pytest.mark.parametrize(
    ("attribute", "event_type", "prefix"),
    [
        ("source", EventType.CAPACITY_REPORTED, "agents/"),
        ("subject", EventType.CAPACITY_REPORTED, ""),
    ],
)
def test_attribute_caps(attribute: str, event_type: EventType, prefix: str) -> None:
    msg = message(event_type)
    msg[attribute] = prefix + "a" * (ATTRIBUTE_MAX - len(prefix))
    assert verdict(msg)
    msg[attribute] += "a"
    assert not verdict(msg)


@pytest.mark.parametrize("char", ["\x85", "\ufeff", "\xa0", "\u2028", "\x7f", "\x1f", " "])
def test_source_refuses_white_space_and_controls_alike(char: str) -> None:
    msg = message(EventType.CAPACITY_REPORTED)
    msg["source"] = f"agents/infra{char}01"
    assert not verdict(msg)


ARRAYS: list[tuple[EventType, tuple[str, ...], int]] = [
    (EventType.TASK_REQUESTED, ("services",), LIST_MAX),
    (EventType.TASK_REQUESTED, ("plan", "steps"), LIST_MAX),
    (EventType.TASK_COMPLETED, ("services_touched",), LIST_MAX),
    (EventType.TASK_COMPLETED, ("outcome", "last_lines"), LINES_MAX),
    (EventType.TASK_COMPLETED, ("external_ai_used",), LIST_MAX),
    (EventType.TASK_FAILED, ("outcome", "last_lines"), LINES_MAX),
]


@pytest.mark.parametrize(("event_type", "path", "cap"), ARRAYS, ids=str)
def test_array_caps(event_type: EventType, path: tuple[str, ...], cap: int) -> None:
    item = message(event_type)["data"]
    for step in path:
        item = item[step]
    first = item[0]
    assert verdict(message(event_type, setter(*path, value=[first] * cap)))
    assert not verdict(message(event_type, setter(*path, value=[first] * (cap + 1))))


@pytest.mark.parametrize(
    "text", ["2000-01-01T00:00:00+02:60", "2026-01-01T00:00:00+24:00", "2026-01-01T00:00:00-23:60"]
)
def test_an_offset_out_of_range_is_refused_on_the_fast_path_too(text: str) -> None:
    """fromisoformat (the fast path) would read +02:60 as +03:00; the schema refuses it."""
    from contracts._types import parse_timestamp

    with pytest.raises(ValueError):
        parse_timestamp(text)


@settings(max_examples=500, deadline=None)
@given(st.from_regex(r"2[0-9]{3}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-6][0-9]:[0-6][0-9](\.[0-9]{1,9})?(Z|[+-][0-2][0-9]:[0-6][0-9])", fullmatch=True))  # fmt: skip
def test_the_fast_timestamp_path_agrees_with_the_slow_one(text: str) -> None:
    from contracts._types import _parse_timestamp_slowly, parse_timestamp

    def outcome(parse: Any) -> object:
        try:
            return parse(text)
        except ValueError:
            return "refused"

    assert outcome(parse_timestamp) == outcome(_parse_timestamp_slowly), text
