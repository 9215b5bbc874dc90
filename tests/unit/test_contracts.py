"""Wire contract v1: encoding, decoding, dead-letter reasons, validators, JSON Schema."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest
from pydantic import BaseModel, ValidationError

from contracts import (
    DATA_MODELS,
    DISPATCH_TRIGGERS,
    EVENT_STATUS,
    INBOUND_TYPES,
    MAX_BODY_BYTES,
    OUTBOUND_TYPES,
    SCHEMA_VERSION,
    TERMINAL_EVENT_TYPES,
    AgentType,
    CapacityReported,
    ControlPause,
    ControlResume,
    DeadLetterReason,
    DecodeError,
    DispatchAssigned,
    Event,
    EventType,
    TaskStarted,
    TaskStatus,
    TaskStep,
    TriggerType,
    check_schemas,
    decode,
    json_schemas,
    make_event,
    new_id,
)
from contracts.examples import EXAMPLE_SOURCES, EXAMPLE_TASK_ID, EXAMPLES, example_event
from contracts.export import SCHEMA_DIR, export_schemas, render_schema

EVENT_ID = UUID("0b5e1d2c-7f3a-4c6b-9d8e-1a2b3c4d5e6f")
EVENT_TIME = datetime(2025, 6, 1, 20, 0, tzinfo=timezone(timedelta(hours=2)))

R = DeadLetterReason


def message(event_type: EventType = EventType.TASK_STARTED) -> dict[str, Any]:
    """A valid message of ``event_type`` as a dict, to be broken by a test."""
    parsed: dict[str, Any] = orjson.loads(example_event(event_type, id=EVENT_ID))
    return parsed


def reason_of(body: bytes, routing_key: str | None = None) -> DeadLetterReason:
    """Decode ``body``, which must fail, and return why."""
    with pytest.raises(DecodeError) as caught:
        decode(body, routing_key)
    return caught.value.reason


def broken(mutate: Callable[[dict[str, Any]], object], event_type: EventType) -> bytes:
    """A message of ``event_type`` after ``mutate`` changed it in place."""
    msg = message(event_type)
    mutate(msg)
    return orjson.dumps(msg)


# --- round trips -----------------------------------------------------------------------


def test_every_type_has_a_model_an_example_and_a_source() -> None:
    assert set(DATA_MODELS) == set(EventType)
    assert set(EXAMPLES) == set(EventType)
    assert set(EXAMPLE_SOURCES) == set(EventType)


@pytest.mark.parametrize("event_type", list(EventType), ids=str)
def test_example_round_trips(event_type: EventType) -> None:
    model = DATA_MODELS[event_type]
    subject = EXAMPLE_TASK_ID if event_type.requires_subject else None
    body = make_event(
        event_type,
        EXAMPLES[event_type],
        source=EXAMPLE_SOURCES[event_type],
        subject=subject,
        id=EVENT_ID,
        time=EVENT_TIME,
    )
    routing_key = event_type.value if event_type in INBOUND_TYPES else None

    event = decode(body, routing_key)

    assert isinstance(event, Event)
    assert event.type is event_type
    assert isinstance(event.data, model)
    assert event.data == model.model_validate(EXAMPLES[event_type])
    assert event.id == EVENT_ID
    assert event.time == EVENT_TIME
    assert event.source == EXAMPLE_SOURCES[event_type]
    assert event.task_id == subject
    assert event.body == body
    assert event.envelope.schemaversion == SCHEMA_VERSION
    assert event.extensions == {}


@pytest.mark.parametrize("event_type", list(EventType), ids=str)
def test_make_event_takes_a_model_instance(event_type: EventType) -> None:
    data = DATA_MODELS[event_type].model_validate(EXAMPLES[event_type])
    subject = EXAMPLE_TASK_ID if event_type.requires_subject else None
    body = make_event(event_type, data, source=EXAMPLE_SOURCES[event_type], subject=subject)
    assert decode(body).data == data


def test_make_event_defaults_id_and_time() -> None:
    before = datetime.now(UTC)
    event = decode(example_event(EventType.CAPACITY_REPORTED))
    assert event.time.tzinfo is not None
    assert before <= event.time <= datetime.now(UTC)
    assert event.id.version == 7  # time-ordered (contracts.ids): keeps the id index fast


def test_new_ids_are_uuid7_ordered_by_their_millisecond() -> None:
    ids = [new_id(at_ms=ms) for ms in (1_700_000_000_000, 1_700_000_000_001, 2**47)]
    assert [i.version for i in ids] == [7, 7, 7]
    assert all(str(i)[19] in "89ab" for i in ids)  # the RFC 9562 variant
    assert ids == sorted(ids)
    assert [i.int >> 80 for i in ids] == [1_700_000_000_000, 1_700_000_000_001, 2**47]
    now = new_id()
    assert abs((now.int >> 80) - datetime.now(UTC).timestamp() * 1000) < 5_000
    assert len({new_id(at_ms=1) for _ in range(1000)}) == 1000  # 74 random bits apart
    assert decode(make_event(EventType.TASK_REQUESTED, EXAMPLES[EventType.TASK_REQUESTED],
                             source="orchestrator", subject=now, id=new_id())).task_id == now  # fmt: skip


def test_outbound_subject_defaults_to_data_task_id() -> None:
    task_id = uuid4()
    data = {**EXAMPLES[EventType.DISPATCH_ASSIGNED], "task_id": str(task_id)}
    event = decode(make_event(EventType.DISPATCH_ASSIGNED, data, source="taskledger"))
    assert event.task_id == task_id
    assert event.envelope.subject == str(task_id)


def test_payload_accessor_types_the_data() -> None:
    event = decode(example_event(EventType.TASK_STARTED))
    assert event.payload(TaskStarted).agent_id == "infra-01"
    with pytest.raises(TypeError):
        event.payload(TaskStep)


def test_decode_accepts_bytearray_and_memoryview() -> None:
    body = example_event(EventType.TASK_APPROVED)
    assert decode(bytearray(body)).body == body
    assert decode(memoryview(body)).body == body


def test_body_of_exactly_the_limit_is_accepted() -> None:
    body = example_event(EventType.TASK_APPROVED)
    padded = body + b" " * (MAX_BODY_BYTES - len(body))
    assert len(padded) == MAX_BODY_BYTES
    assert decode(padded).type is EventType.TASK_APPROVED


# --- what the decoder tolerates ---------------------------------------------------------


def test_unknown_top_level_attributes_are_kept() -> None:
    msg = message(EventType.TASK_STEP)
    msg["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    msg["partitionkey"] = {"nested": [1, 2]}
    event = decode(orjson.dumps(msg), "task.step")
    assert event.envelope.model_extra == {
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "partitionkey": {"nested": [1, 2]},
    }
    assert event.extensions == event.envelope.model_extra


def test_make_event_writes_extensions() -> None:
    body = make_event(
        EventType.TASK_APPROVED,
        {},
        source="orchestrator",
        subject=EXAMPLE_TASK_ID,
        extensions={"traceparent": "00-abc-def-01", "attempt": 2},
    )
    assert decode(body).extensions == {"traceparent": "00-abc-def-01", "attempt": 2}


@pytest.mark.parametrize("name", ["type", "data", "Trace", "trace-parent", "x" * 21, ""])
def test_make_event_refuses_bad_extension_names(name: str) -> None:
    with pytest.raises(ValueError, match="extension"):
        make_event(
            EventType.CAPACITY_REPORTED,
            EXAMPLES[EventType.CAPACITY_REPORTED],
            source="agents/infra-01",
            extensions={name: 1},
        )


def test_optional_attributes_may_be_absent() -> None:
    msg = message(EventType.TASK_APPROVED)
    del msg["datacontenttype"]
    msg["data"] = {}
    event = decode(orjson.dumps(msg))
    assert event.envelope.datacontenttype is None
    assert event.data == DATA_MODELS[EventType.TASK_APPROVED]()


def test_integral_floats_count_as_integers_and_ints_as_numbers() -> None:
    msg = message(EventType.TASK_STEP)
    msg["data"]["duration_ms"] = 18450.0
    msg["data"]["step_number"] = 2.0
    data = decode(orjson.dumps(msg)).payload(TaskStep)
    assert (data.duration_ms, data.step_number) == (18450, 2)
    assert type(data.duration_ms) is int

    msg = message(EventType.CAPACITY_REPORTED)
    msg["data"]["load_pct"] = 40
    assert decode(orjson.dumps(msg)).payload(CapacityReported).load_pct == 40.0


def test_schemaversion_may_be_written_as_a_float() -> None:
    # JSON Schema's "const": 1 matches 1.0, so the decoder takes it too.
    body = broken(lambda m: m.update(schemaversion=1.0), EventType.TASK_STARTED)
    assert decode(body).envelope.schemaversion == 1


def test_subject_in_upper_case_and_on_other_types() -> None:
    msg = message(EventType.TASK_STARTED)
    msg["subject"] = str(EXAMPLE_TASK_ID).upper()
    assert decode(orjson.dumps(msg)).task_id == EXAMPLE_TASK_ID

    msg = message(EventType.CAPACITY_REPORTED)
    msg["subject"] = "infra-01"
    event = decode(orjson.dumps(msg))
    assert event.task_id is None
    assert event.envelope.subject == "infra-01"


def test_time_is_normalised_to_utc() -> None:
    msg = message(EventType.TASK_STARTED)
    msg["time"] = "2025-06-01T22:00:00.123+02:00"
    event = decode(orjson.dumps(msg))
    assert event.time == datetime(2025, 6, 1, 20, 0, 0, 123000, tzinfo=UTC)
    assert event.time.utcoffset() == timedelta(0)
    assert b'"2025-06-01T22:00:00.123+02:00"' in event.body  # the body is kept as sent


# --- dead-letter reasons ----------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe\x00{",
        b'{"type": "task.started"',
        b'{"a": 1} trailing',
        b"[1, 2]",
        b'"task.started"',
        b"42",
        b"null",
        b'{"text": "\\ud800"}',
        b'{"a": NaN}',
    ],
)
def test_invalid_json(body: bytes) -> None:
    assert reason_of(body) is R.INVALID_JSON


def test_too_large_is_refused_before_parsing() -> None:
    assert reason_of(b"{" * (MAX_BODY_BYTES + 1)) is R.TOO_LARGE
    body = example_event(EventType.TASK_APPROVED)
    assert reason_of(body + b" " * (MAX_BODY_BYTES + 1 - len(body))) is R.TOO_LARGE


@pytest.mark.parametrize("version", [0, 2, 99, -1, 2.0])
def test_unsupported_schema_version(version: float) -> None:
    assert reason_of(broken(lambda m: m.update(schemaversion=version), EventType.TASK_STARTED)) is (
        R.UNSUPPORTED_SCHEMA_VERSION
    )
    # Judged before the rest of the envelope: a v2 envelope may look different.
    body = orjson.dumps({"schemaversion": version, "kind": "something new"})
    assert reason_of(body) is R.UNSUPPORTED_SCHEMA_VERSION


@pytest.mark.parametrize("event_type", ["task.exploded", "", "TASK.STARTED", "dispatch"])
def test_unknown_event_type(event_type: str) -> None:
    body = broken(lambda m: m.update(type=event_type), EventType.TASK_STARTED)
    assert reason_of(body) is R.UNKNOWN_EVENT_TYPE


def _set_data(key: str, value: Any) -> Callable[[dict[str, Any]], object]:
    return lambda m: m["data"].__setitem__(key, value)


def _delete(key: str) -> Callable[[dict[str, Any]], object]:
    return lambda m: m.pop(key)


SCHEMA_VIOLATIONS: dict[str, tuple[EventType, Callable[[dict[str, Any]], object]]] = {
    # envelope
    "type missing": (EventType.TASK_STARTED, _delete("type")),
    "type not a string": (EventType.TASK_STARTED, lambda m: m.update(type=["task.started"])),
    "schemaversion missing": (EventType.TASK_STARTED, _delete("schemaversion")),
    "schemaversion a string": (EventType.TASK_STARTED, lambda m: m.update(schemaversion="1")),
    "schemaversion true": (EventType.TASK_STARTED, lambda m: m.update(schemaversion=True)),
    "specversion 0.3": (EventType.TASK_STARTED, lambda m: m.update(specversion="0.3")),
    "id missing": (EventType.TASK_STARTED, _delete("id")),
    "id not a uuid": (EventType.TASK_STARTED, lambda m: m.update(id="evt-1")),
    "naive time": (EventType.TASK_STARTED, lambda m: m.update(time="2025-06-01T20:00:00")),
    "unix time": (EventType.TASK_STARTED, lambda m: m.update(time=1748808000)),
    "time not a date": (EventType.TASK_STARTED, lambda m: m.update(time="yesterday")),
    "source empty": (EventType.TASK_STARTED, lambda m: m.update(source="")),
    "source agent/": (EventType.TASK_STARTED, lambda m: m.update(source="agent/infra-01")),
    "source agents/": (EventType.TASK_STARTED, lambda m: m.update(source="agents/")),
    "source nested": (EventType.TASK_STARTED, lambda m: m.update(source="agents/a/b")),
    "source newline": (EventType.TASK_STARTED, lambda m: m.update(source="orchestrator\n")),
    "source space": (EventType.CONTROL_PAUSE, lambda m: m.update(source="ops/al ice")),
    "source unknown": (EventType.TASK_REQUESTED, lambda m: m.update(source="cron")),
    "datacontenttype": (EventType.TASK_STARTED, lambda m: m.update(datacontenttype="text/plain")),
    "data missing": (EventType.TASK_STARTED, _delete("data")),
    "data an array": (EventType.TASK_STARTED, lambda m: m.update(data=[])),
    # subject
    "subject missing": (EventType.TASK_STARTED, _delete("subject")),
    "subject missing, dispatch": (EventType.DISPATCH_REQUESTED, _delete("subject")),
    "subject not a uuid": (EventType.TASK_STARTED, lambda m: m.update(subject="task-42")),
    "subject a bare hex uuid": (
        EventType.TASK_STARTED,
        lambda m: m.update(subject=EXAMPLE_TASK_ID.hex),
    ),
    "subject a number": (EventType.TASK_STARTED, lambda m: m.update(subject=42)),
    "subject differs from data.task_id": (
        EventType.DISPATCH_ASSIGNED,
        lambda m: m.update(subject=str(uuid4())),
    ),
    # data
    "unknown data key": (EventType.TASK_STARTED, _set_data("agent_name", "infra-01")),
    "unknown nested data key": (
        EventType.TASK_COMPLETED,
        lambda m: m["data"]["outcome"].__setitem__("exit_code", 0),
    ),
    "data field missing": (EventType.TASK_STARTED, lambda m: m["data"].pop("agent_id")),
    "unknown agent type": (EventType.TASK_STARTED, _set_data("agent_type", "robot")),
    "empty agent id": (EventType.TASK_STARTED, _set_data("agent_id", "")),
    "empty request text": (EventType.TASK_REQUESTED, _set_data("request_text", "")),
    "request text too long": (EventType.TASK_REQUESTED, _set_data("request_text", "x" * 10_001)),
    "step 0": (EventType.TASK_STEP, _set_data("step_number", 0)),
    "integer as string": (EventType.TASK_STEP, _set_data("step_number", "2")),
    "integer as bool": (EventType.TASK_STEP, _set_data("step_number", True)),
    "fractional integer": (EventType.TASK_STEP, _set_data("duration_ms", 1.5)),
    "negative duration": (EventType.TASK_STEP, _set_data("duration_ms", -1)),
    "output_full not an object": (EventType.TASK_STEP, _set_data("output_full", "text")),
    "success 1": (
        EventType.TASK_COMPLETED,
        lambda m: m["data"]["outcome"].__setitem__("success", 1),
    ),
    "success false on completed": (
        EventType.TASK_COMPLETED,
        lambda m: m["data"]["outcome"].__setitem__("success", False),
    ),
    "unknown error cause": (
        EventType.TASK_FAILED,
        lambda m: m["data"]["outcome"].__setitem__("error_cause", "cosmic rays"),
    ),
    "load over 100": (EventType.CAPACITY_REPORTED, _set_data("load_pct", 100.5)),
    "accepting as string": (EventType.CAPACITY_REPORTED, _set_data("accepting", "true")),
    "accepting as 1": (EventType.CAPACITY_REPORTED, _set_data("accepting", 1)),
    "number as string": (EventType.CAPACITY_REPORTED, _set_data("load_pct", "22.5")),
    "priority 0": (EventType.DISPATCH_REQUESTED, _set_data("priority", 0)),
    "priority 6": (EventType.DISPATCH_REQUESTED, _set_data("priority", 6)),
    "naive not_before": (EventType.DISPATCH_REQUESTED, _set_data("not_before", "2025-06-01T22:00")),
    "pause task without task_id": (EventType.CONTROL_PAUSE, lambda m: m["data"].pop("task_id")),
    "pause all with task_id": (EventType.CONTROL_PAUSE, _set_data("scope", "all")),
    "resume force with all": (
        EventType.CONTROL_RESUME,
        lambda m: m.update(data={"scope": "all", "force": True}),
    ),
    "trigger count": (EventType.DISPATCH_ASSIGNED, _set_data("trigger", "count")),
}


@pytest.mark.parametrize("case", list(SCHEMA_VIOLATIONS))
def test_schema_violation(case: str) -> None:
    event_type, mutate = SCHEMA_VIOLATIONS[case]
    assert reason_of(broken(mutate, event_type)) is R.SCHEMA_VIOLATION


def test_type_must_equal_the_routing_key() -> None:
    body = example_event(EventType.TASK_STARTED)
    assert decode(body, "task.started").type is EventType.TASK_STARTED
    assert reason_of(body, "task.completed") is R.SCHEMA_VIOLATION


def test_error_message_names_the_field_on_one_short_line() -> None:
    msg = message(EventType.TASK_COMPLETED)
    msg["data"]["outcome"]["exit_code"] = 0
    msg["data"]["actual_resources"]["agent_load_pct"] = 250
    with pytest.raises(DecodeError) as caught:
        decode(orjson.dumps(msg))
    error = caught.value
    assert "data.outcome.exit_code: Extra inputs are not permitted" in error.message
    assert "data.actual_resources.agent_load_pct:" in error.message
    assert str(error) == f"schema_violation: {error.message}"


def test_error_message_is_bounded() -> None:
    msg = message(EventType.TASK_COMPLETED)
    msg["data"].update({f"typo_{i}\nwith a newline": i for i in range(200)})
    with pytest.raises(DecodeError) as caught:
        decode(orjson.dumps(msg))
    assert len(caught.value.message) <= 500
    assert "\n" not in str(caught.value)
    assert "more)" in caught.value.message or caught.value.message.endswith("...")


def test_decode_error_pickles() -> None:
    error = DecodeError(R.TOO_LARGE, "body is 2 MiB")
    copy_ = pickle.loads(pickle.dumps(error))
    assert (copy_.reason, copy_.message, str(copy_)) == (R.TOO_LARGE, "body is 2 MiB", str(error))


# --- validators on the models -------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "valid"),
    [
        ({"scope": "all"}, True),
        (
            {"scope": "all", "reason": "upgrading the NAS", "resume_after": "2025-06-01T22:00:00Z"},
            True,
        ),
        ({"scope": "all", "resume_after": "2025-06-01T22:00Z"}, False),  # RFC 3339 wants seconds
        ({"scope": "task", "task_id": str(EXAMPLE_TASK_ID)}, True),
        ({"scope": "task"}, False),
        ({"scope": "task", "task_id": None}, False),
        ({"scope": "all", "task_id": str(EXAMPLE_TASK_ID)}, False),
        ({"scope": "everything"}, False),
        ({"scope": "all", "resume_after": "2025-06-01T22:00:00"}, False),
    ],
)
def test_control_pause_scope(data: dict[str, Any], valid: bool) -> None:
    _assert_validity(ControlPause, data, valid)


@pytest.mark.parametrize(
    ("data", "valid"),
    [
        ({"scope": "all"}, True),
        ({"scope": "all", "force": False}, True),
        ({"scope": "task", "task_id": str(EXAMPLE_TASK_ID)}, True),
        ({"scope": "task", "task_id": str(EXAMPLE_TASK_ID), "force": True}, True),
        ({"scope": "all", "force": True}, False),
        ({"scope": "task", "force": True}, False),
        ({"scope": "all", "task_id": str(EXAMPLE_TASK_ID)}, False),
        ({"scope": "task", "task_id": str(EXAMPLE_TASK_ID), "force": "yes"}, False),
    ],
)
def test_control_resume_scope_and_force(data: dict[str, Any], valid: bool) -> None:
    _assert_validity(ControlResume, data, valid)


@pytest.mark.parametrize("trigger", list(TriggerType), ids=str)
def test_dispatch_assigned_trigger_is_restricted(trigger: TriggerType) -> None:
    data = {**EXAMPLES[EventType.DISPATCH_ASSIGNED], "trigger": trigger.value}
    valid = trigger in {"immediate", "capacity", "timeout", "manual"}
    assert (trigger in DISPATCH_TRIGGERS) is valid
    _assert_validity(DispatchAssigned, data, valid)


def test_dispatch_assigned_without_agent() -> None:
    data: dict[str, Any] = {
        "task_id": str(EXAMPLE_TASK_ID),
        "agent_id": None,
        "work_plan": {},
        "trigger": "manual",
    }
    assert DispatchAssigned.model_validate(data).agent_id is None


def test_payloads_are_frozen() -> None:
    data = TaskStarted(agent_id="infra-01", agent_type=AgentType.INFRA)
    with pytest.raises(ValidationError):
        data.agent_id = "infra-02"  # type: ignore[misc]


def _assert_validity(model: type[BaseModel], data: dict[str, Any], valid: bool) -> None:
    if valid:
        model.model_validate(data)
    else:
        with pytest.raises(ValidationError):
            model.model_validate(data)


# --- make_event refuses what decode would refuse -----------------------------------------


def test_make_event_requires_a_task_subject() -> None:
    with pytest.raises(ValueError, match="subject"):
        make_event(EventType.TASK_APPROVED, {}, source="orchestrator")
    with pytest.raises(ValueError, match="subject"):
        make_event(EventType.TASK_APPROVED, {}, source="orchestrator", subject="task-42")


def test_make_event_refuses_a_subject_that_contradicts_data() -> None:
    with pytest.raises(ValueError, match="differs"):
        make_event(
            EventType.DISPATCH_ASSIGNED,
            EXAMPLES[EventType.DISPATCH_ASSIGNED],
            source="taskledger",
            subject=uuid4(),
        )


def test_make_event_refuses_a_model_of_another_type() -> None:
    data = TaskStarted(agent_id="infra-01", agent_type=AgentType.INFRA)
    with pytest.raises(TypeError):
        make_event(EventType.TASK_APPROVED, data, source="orchestrator", subject=EXAMPLE_TASK_ID)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"source": "somebody"},
        {"source": "agents/infra-01", "time": datetime(2025, 6, 1, 20, 0)},
    ],
)
def test_make_event_refuses_bad_envelopes(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make_event(EventType.TASK_APPROVED, {}, subject=EXAMPLE_TASK_ID, **kwargs)


def test_make_event_refuses_bad_data_and_unknown_types() -> None:
    with pytest.raises(ValidationError):
        make_event(EventType.TASK_STARTED, {"agent_id": "x"}, source="agents/x", subject=uuid4())
    with pytest.raises(ValueError):
        make_event("task.exploded", {}, source="orchestrator")


def test_make_event_refuses_oversized_messages() -> None:
    data = {**EXAMPLES[EventType.TASK_STEP], "output_full": {"log": "x" * MAX_BODY_BYTES}}
    with pytest.raises(ValueError, match="limit"):
        make_event(EventType.TASK_STEP, data, source="agents/infra-01", subject=EXAMPLE_TASK_ID)


# --- enums and tables ----------------------------------------------------------------------


def test_task_status_rank_and_terminality() -> None:
    ranks = {status: status.rank for status in TaskStatus}
    assert ranks == {
        TaskStatus.PENDING: 0,
        TaskStatus.APPROVED: 1,
        TaskStatus.EXECUTING: 2,
        TaskStatus.COMPLETED: 3,
        TaskStatus.FAILED: 3,
        TaskStatus.REJECTED: 3,
    }
    assert {s for s in TaskStatus if s.is_terminal} == {"completed", "failed", "rejected"}


def test_enums_are_their_wire_values() -> None:
    assert EventType("task.requested") is EventType.TASK_REQUESTED
    assert isinstance(EventType.TASK_REQUESTED, str)
    assert {"task.requested": 1}[EventType.TASK_REQUESTED] == 1
    assert str(EventType.TASK_RECOVERY_REQUESTED) == "task.recovery_requested"
    assert orjson.dumps(TaskStatus.EXECUTING) == b'"executing"'


def test_type_tables() -> None:
    assert len(INBOUND_TYPES) == 13  # with task.suggested and suggestion.resolved
    assert {EventType.DISPATCH_ASSIGNED, EventType.TASK_RECOVERY_REQUESTED} == OUTBOUND_TYPES
    assert set(EventType) == INBOUND_TYPES | OUTBOUND_TYPES
    assert not INBOUND_TYPES & OUTBOUND_TYPES
    assert {t for t in TERMINAL_EVENT_TYPES} == {
        t for t, s in EVENT_STATUS.items() if s.is_terminal
    }
    assert EVENT_STATUS[EventType.TASK_STARTED] is TaskStatus.EXECUTING
    assert {t for t in EventType if t.requires_subject} == {
        t for t in EventType if t.value.startswith(("task.", "dispatch.", "suggestion."))
    }


# --- JSON Schema ---------------------------------------------------------------------------


def test_checked_in_schemas_match_the_models() -> None:
    problems = check_schemas(SCHEMA_DIR)
    assert not problems, (
        "contracts/schemas/ has drifted from the models; run `taskledger schema export` "
        "and commit the result:\n  " + "\n  ".join(problems)
    )


def test_json_schemas_cover_every_type_and_are_deterministic() -> None:
    schemas = json_schemas()
    assert set(schemas) == {"envelope.json"} | {f"{t.value}.json" for t in EventType}
    assert {n: render_schema(s) for n, s in schemas.items()} == {
        n: render_schema(s) for n, s in json_schemas().items()
    }
    for event_type in EventType:
        schema = schemas[f"{event_type.value}.json"]
        assert schema["properties"]["type"]["const"] == event_type.value
        assert schema["$id"].endswith(event_type.value)
        assert schema["properties"]["data"]["$ref"] in {
            f"#/$defs/{name}" for name in schema["$defs"]
        }


def test_export_writes_files_that_check_clean(tmp_path: Path) -> None:
    written = export_schemas(tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(json_schemas())
    assert all(p.read_bytes().endswith(b"}\n") for p in written)
    assert check_schemas(tmp_path / "out") == []
    (tmp_path / "out" / "task.requested.json").write_bytes(b"{}\n")
    (tmp_path / "out" / "task.legacy.json").write_bytes(b"{}\n")
    assert check_schemas(tmp_path / "out") == [
        "task.requested.json: differs from the models",
        "task.legacy.json: not defined by the contract",
    ]


def test_schemas_accept_the_examples_and_refuse_what_decode_refuses() -> None:
    import jsonschema_rs

    validators = {
        name: jsonschema_rs.Draft202012Validator(schema, validate_formats=True)
        for name, schema in json_schemas().items()
    }
    for event_type in EventType:
        msg = message(event_type)
        assert validators[f"{event_type.value}.json"].is_valid(msg), event_type
        assert validators["envelope.json"].is_valid(msg), event_type

    checked = 0
    for case, (event_type, mutate) in SCHEMA_VIOLATIONS.items():
        if case == "subject differs from data.task_id":
            continue  # a cross-field rule JSON Schema cannot express
        msg = message(event_type)
        mutate(msg)
        schema_name = f"{msg['type']}.json" if isinstance(msg.get("type"), str) else None
        validator = validators.get(schema_name or "", validators["envelope.json"])
        assert not validator.is_valid(copy.deepcopy(msg)), case
        checked += 1
    assert checked > 40
