"""Property tests: whatever the bytes, :func:`contracts.decode` raises only DecodeError."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import (
    DATA_MODELS,
    DeadLetterReason,
    DecodeError,
    Event,
    EventType,
    decode,
    make_event,
)
from contracts.examples import EXAMPLE_TASK_ID, EXAMPLES, example_event

ENVELOPE_KEYS = [
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "subject",
    "schemaversion",
    "datacontenttype",
    "data",
]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # json.dumps writes NaN and Infinity, which are not JSON
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=40,
)
envelope_parts = st.dictionaries(st.sampled_from(ENVELOPE_KEYS), json_values, max_size=4)

finite_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=40,
)
"""JSON values orjson writes back unchanged: finite floats, 64-bit integers."""


def decodes_or_dead_letters(body: bytes, routing_key: str | None = None) -> Event | None:
    """Decode ``body``; return None for a DecodeError, let anything else fail the test."""
    try:
        event = decode(body, routing_key)
    except DecodeError as error:
        assert isinstance(error.reason, DeadLetterReason)
        assert error.message
        assert "\n" not in error.message
        assert len(error.message) <= 500
        return None
    assert isinstance(event.data, DATA_MODELS[event.type])
    return event


@given(st.binary(max_size=2048))
def test_arbitrary_bytes(body: bytes) -> None:
    decodes_or_dead_letters(body)


@given(json_values)
def test_arbitrary_json(value: Any) -> None:
    decodes_or_dead_letters(json.dumps(value).encode())


@given(envelope_parts, st.sampled_from([t.value for t in EventType] + ["task.nope"]))
def test_envelope_attributes_replaced(parts: dict[str, Any], event_type: str) -> None:
    """A valid envelope with some attributes set to any JSON value reaches the deeper checks."""
    base = json.loads(example_event(EventType.TASK_STARTED))
    body = json.dumps({**base, "type": event_type, **parts}).encode()
    decodes_or_dead_letters(body, event_type)


@given(
    st.sampled_from(list(EventType)),
    st.data(),
)
def test_examples_with_one_field_replaced(event_type: EventType, data: st.DataObject) -> None:
    """A valid message with one payload field set to any JSON value or removed."""
    msg = json.loads(example_event(event_type))
    payload = msg["data"]
    key = data.draw(st.sampled_from([*sorted(payload), "unexpected"]), label="key")
    if data.draw(st.booleans(), label="remove") and key in payload:
        del payload[key]
    else:
        payload[key] = data.draw(json_values, label="value")
    decodes_or_dead_letters(json.dumps(msg).encode())


@given(
    action=st.text(min_size=1, max_size=200),
    summary=st.none() | st.text(max_size=600),
    full=st.none() | st.dictionaries(st.text(max_size=12), finite_values, max_size=5),
    step=st.integers(min_value=1, max_value=2**31 - 1),  # execution_logs.step_number: INTEGER
)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_any_valid_step_round_trips(
    action: str, summary: str | None, full: dict[str, Any] | None, step: int
) -> None:
    """Unicode text, big integers and nested output survive make_event -> decode."""
    data = {
        **EXAMPLES[EventType.TASK_STEP],
        "action": action,
        "output_summary": summary,
        "output_full": full,
        "step_number": step,
    }
    expected = DATA_MODELS[EventType.TASK_STEP].model_validate(data)
    body = make_event(EventType.TASK_STEP, data, source="agents/infra-01", subject=EXAMPLE_TASK_ID)
    event = decodes_or_dead_letters(body)
    assert event is not None
    assert event.data == expected


@pytest.mark.parametrize("opener,closer", [(b"[", b"]"), (b'{"a":', b"}")])
def test_deep_nesting_is_invalid_json(opener: bytes, closer: bytes) -> None:
    body = opener * 5000 + b"1" + closer * 5000
    with pytest.raises(DecodeError) as caught:
        decode(body)
    assert caught.value.reason is DeadLetterReason.INVALID_JSON


def test_deep_nesting_inside_a_valid_message_is_invalid_json() -> None:
    msg = json.loads(example_event(EventType.TASK_STEP))
    msg["data"]["output_full"] = {"x": "NESTED"}
    body = orjson.dumps(msg).replace(b'"NESTED"', b"[" * 5000 + b"]" * 5000)
    with pytest.raises(DecodeError) as caught:
        decode(body)
    assert caught.value.reason is DeadLetterReason.INVALID_JSON


def test_nesting_within_the_parser_limit_is_accepted() -> None:
    msg = json.loads(example_event(EventType.TASK_STEP))
    msg["data"]["output_full"] = {"x": "NESTED"}
    body = orjson.dumps(msg).replace(b'"NESTED"', b"[" * 1000 + b"1" + b"]" * 1000)
    event = decode(body)
    assert event.type is EventType.TASK_STEP
