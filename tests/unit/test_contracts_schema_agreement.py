"""Property test: :func:`contracts.decode` accepts a message exactly when its JSON Schema does.

The schema side is an independent validator (``jsonschema_rs``, formats checked) reading
the checked-in files in ``contracts/schemas/``, the ones producers use. Messages start
from the valid examples and are mutated: wrong types, numbers written as strings,
integers and times out of range, UUIDs in other spellings, long strings and arrays,
extra and missing fields. Both sides must agree on every one.

One rule JSON Schema cannot express is left out on purpose: for ``dispatch.assigned``
and ``task.recovery_requested`` the subject must equal ``data.task_id`` (decode refuses
a mismatch the schema lets through). A body over the 1 MiB limit must be ``too_large``
whatever the schema says: the limit is on bytes, which JSON Schema does not see.
"""

from __future__ import annotations

import copy
import json
import string
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import jsonschema_rs
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from contracts import MAX_BODY_BYTES, DeadLetterReason, DecodeError, EventType, decode
from contracts._types import parse_uuid
from contracts.examples import example_event
from contracts.export import SCHEMA_DIR

VALIDATORS = {
    path.name: jsonschema_rs.Draft202012Validator(
        json.loads(path.read_text(encoding="utf-8")), validate_formats=True
    )
    for path in sorted(SCHEMA_DIR.glob("*.json"))
}
CROSS_FIELD_TYPES = {EventType.DISPATCH_ASSIGNED.value, EventType.TASK_RECOVERY_REQUESTED.value}
# a failing example with a 100 kB string would otherwise hide behind a repr-size warning
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- the two judges ------------------------------------------------------------------


def schema_accepts(msg: Any) -> bool:
    """The checked-in schema of the message's type (else ``envelope.json``) says valid."""
    kind = msg.get("type") if isinstance(msg, dict) else None
    name = f"{kind}.json" if isinstance(kind, str) else ""
    return VALIDATORS.get(name, VALIDATORS["envelope.json"]).is_valid(msg)


def body_of(msg: Any, ascii_only: bool = True) -> bytes:
    """The message's JSON text, ``\\u``-escaped or raw UTF-8."""
    return json.dumps(msg, allow_nan=False, ensure_ascii=ascii_only).encode()


def decode_accepts(msg: Any, ascii_only: bool = True) -> bool:
    """:func:`decode` takes the message's JSON text."""
    try:
        decode(body_of(msg, ascii_only))
    except DecodeError:
        return False
    return True


def _uuid_or_none(value: Any) -> UUID | None:
    try:
        return parse_uuid(value) if isinstance(value, str) else None
    except ValueError:
        return None


def subject_contradicts_data(msg: Any) -> bool:
    """The cross-field rule JSON Schema cannot state: subject == data.task_id."""
    if not isinstance(msg, dict) or msg.get("type") not in CROSS_FIELD_TYPES:
        return False
    data = msg.get("data")
    subject = _uuid_or_none(msg.get("subject"))
    task_id = _uuid_or_none(data.get("task_id")) if isinstance(data, dict) else None
    return subject is not None and task_id is not None and subject != task_id


def assert_agree(msg: Any, ascii_only: bool = True) -> None:
    """Both judges give the same verdict (modulo the cross-field rule and the size limit)."""
    if len(body_of(msg, ascii_only)) > MAX_BODY_BYTES:  # a limit of the bytes, not the JSON
        with pytest.raises(DecodeError) as caught:
            decode(body_of(msg, ascii_only))
        assert caught.value.reason is DeadLetterReason.TOO_LARGE
        event("too large")
        return
    by_schema = schema_accepts(msg) and not subject_contradicts_data(msg)
    by_decode = decode_accepts(msg, ascii_only)
    event("accepted" if by_decode else "refused")
    assert by_decode == by_schema, (
        f"decode {'accepts' if by_decode else 'refuses'} but the schema "
        f"{'accepts' if by_schema else 'refuses'}: {json.dumps(msg)[:2000]}"
    )


# --- valid messages -------------------------------------------------------------------

EXTRA_PAYLOADS: list[tuple[EventType, dict[str, Any]]] = [
    (EventType.CONTROL_PAUSE, {"scope": "all"}),
    (EventType.CONTROL_RESUME, {"scope": "all", "force": False}),
    (EventType.TASK_REQUESTED, {"request_text": "restart gitea"}),
    (
        EventType.TASK_STEP,
        {"step_number": 1, "agent_type": "code", "action": "x", "status": "running"},
    ),
    (EventType.DISPATCH_REQUESTED, {"work_plan": {}, "required": {}, "agent_type": "infra"}),
]


def _bases() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [json.loads(example_event(t)) for t in EventType]
    for event_type, data in EXTRA_PAYLOADS:
        msg = json.loads(example_event(event_type))
        msg["data"] = data
        out.append(msg)
    return out


BASES = _bases()
base_messages = st.sampled_from(BASES).map(copy.deepcopy)


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every (path, value) below the root, containers included."""
    if isinstance(value, dict | list):
        items: Any = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in items:
            yield (*path, key), child
            yield from _nodes(child, (*path, key))


def _at(root: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        root = root[step]
    return root


# --- mutant values -----------------------------------------------------------------------

BOUNDARY_INTS = [
    -(2**63),
    -(2**31) - 1,
    -(2**31),
    -1,
    0,
    1,
    2,
    5,
    6,
    100,
    101,
    2**31 - 1,
    2**31,
    3_000_000_000,
    2**32,
    2**53 - 1,
    2**53,
    2**63 - 1,
    2**63,
    2**64,
    2**70,
]
boundary_numbers = st.one_of(
    st.sampled_from(BOUNDARY_INTS),
    st.sampled_from(BOUNDARY_INTS).map(float),
    st.sampled_from(
        [
            0.5,
            -0.0,
            1.5,
            99.999,
            100.0,
            100.5,
            1e6,
            1e6 + 0.5,
            1e5,
            100_000.01,
            1e15,
            1e300,
            2.2250738585072014e-308,
        ]
    ),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(),
)

YEARS = ["0001", "0999", "1000", "1969", "1999", "2000", "2025", "9998", "9999", "10000", "99"]
times = st.builds(
    lambda year, month, day, sep, hms, fraction, offset: (
        f"{year}-{month:02d}-{day:02d}{sep}{hms}{fraction}{offset}"
    ),
    st.sampled_from(YEARS) | st.integers(0, 9999).map(lambda y: f"{y:04d}"),
    st.sampled_from([1, 2, 6, 12]) | st.integers(0, 13),
    st.sampled_from([1, 28, 29, 31]) | st.integers(0, 32),
    st.sampled_from(["T", "t", " ", "_", ""]),
    st.sampled_from(["00:00:00", "23:59:59", "23:59:60", "12:00", "24:00:00", "12:60:00"])
    | st.builds(
        lambda h, m, s: f"{h:02d}:{m:02d}:{s:02d}",
        st.integers(0, 25),
        st.integers(0, 61),
        st.integers(0, 61),
    ),
    st.sampled_from(["", ".", ".5", ".123456", ".123456789", ".1234567890"])
    | st.integers(1, 12).map(lambda n: "." + "9" * n),
    st.sampled_from(
        [
            "Z",
            "z",
            "",
            "+00:00",
            "-00:00",
            "+02:00",
            "-05:00",
            "+14:00",
            "-23:59",
            "+24:00",
            "+02:60",
            "+0200",
            "+02",
            " Z",
            "UTC",
        ]
    )
    | st.builds(
        lambda sign, h, m: f"{sign}{h:02d}:{m:02d}",
        st.sampled_from("+-"),
        st.integers(0, 25),
        st.integers(0, 61),
    ),
) | st.sampled_from(
    [
        "2016-12-31T23:59:60Z",
        "9999-12-31T23:59:59Z",
        "9999-12-31T23:59:59-00:01",
        "9999-12-31T23:59:59+14:00",
        "2000-01-01T00:00:00+14:00",
        "1999-12-31T23:59:59-01:00",
        "2025-02-29T00:00:00Z",
        "2024-02-29T00:00:00Z",
        "2025-06-01T20:00:00.Z",
        "",
        "2025-06-01",
        "20:00:00Z",
        "2025-06-01T20:00:00+02:00:00",
    ]
)


def _uuid_forms(value: UUID) -> st.SearchStrategy[str]:
    text = str(value)
    return st.sampled_from(
        [
            text,
            text.upper(),
            text[:9] + text[9:].upper(),
            f"urn:uuid:{text}",
            f"{{{text}}}",
            value.hex,
            value.hex.upper(),
            f" {text}",
            f"{text}\n",
            text[:-1],
            text + "0",
            text.replace("-", "", 1),
            text[:8] + text[9:13] + "-" + text[8:9] + text[13:],
            text.replace(text[0], "g", 1),
            "00000000-0000-0000-0000-000000000000",
        ]
    )


uuid_texts = st.uuids().flatmap(_uuid_forms)
ODD_CHARS = ["\x00", "\x1f", "\x7f", "\x85", "\xa0", "\u2028", "\ufeff", "\u3000", "é", "😀"]
long_strings = st.builds(
    lambda n, ch: ch * n,
    st.sampled_from([0, 1, 199, 200, 201, 255, 256, 257, 500, 10_000, 10_001, 100_000, 100_001]),
    st.sampled_from(["x", "é", "😀"]),
)
odd_strings = st.one_of(
    st.text(max_size=20),
    st.builds(
        lambda a, ch, b: a + ch + b,
        st.sampled_from(["agents/", "ops/", ""]),
        st.sampled_from(ODD_CHARS),
        st.text(string.ascii_lowercase, max_size=5),
    ),
    st.sampled_from(
        [
            "orchestrator",
            "taskledger",
            "agents/infra-01",
            "ops/alice",
            "agents/",
            "agents/a/b",
            "infra",
            "running",
            "task",
            "all",
            "capacity",
            "1.0",
            "application/json",
            "medium",
            "dependency",
        ]
    ),
)
json_scalars = st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.text(max_size=10)
wrong_types = st.one_of(
    json_scalars,
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(json_scalars, max_size=3),
    st.dictionaries(st.text(max_size=8), json_scalars, max_size=3),
)


@st.composite
def mutant_value(draw: st.DrawFn, original: Any) -> Any:
    """A value to put where ``original`` was: related to it, or anything."""
    options: list[st.SearchStrategy[Any]] = [wrong_types, odd_strings, long_strings]
    if isinstance(original, int | float) and not isinstance(original, bool):
        options += [boundary_numbers, boundary_numbers, st.just(str(original))]
        options.append(st.just(json.dumps(original)))
    if isinstance(original, str):
        options += [times, uuid_texts, st.just(original.upper()), st.just(original + " ")]
        if original.replace(".", "", 1).isdigit():
            options.append(st.just(json.loads(original)))
    if isinstance(original, list):
        options.append(
            st.builds(
                lambda n, item: [item] * n,
                st.sampled_from([0, 255, 256, 257, 1000, 1001]),
                st.sampled_from(original or ["x"]),
            )
        )
    if isinstance(original, bool):
        options += [st.sampled_from([0, 1, "true", "false", None])]
    return draw(st.one_of(*options))


@st.composite
def mutated_messages(draw: st.DrawFn, kinds: tuple[str, ...]) -> dict[str, Any]:
    """A valid base message after one to three mutations of the given kinds."""
    msg = draw(base_messages)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(kinds))
        nodes = list(_nodes(msg))
        objects = [()] + [path for path, value in nodes if isinstance(value, dict)]
        if kind == "replace" and nodes:
            path, value = draw(st.sampled_from(nodes))
            _at(msg, path[:-1])[path[-1]] = draw(mutant_value(value))
        elif kind == "time":
            fields = [
                p
                for p, v in nodes
                if p[-1] in {"time", "not_before", "resume_after", "last_event_at"}
            ]
            target = draw(st.sampled_from(fields)) if fields else ("time",)
            _at(msg, target[:-1])[target[-1]] = draw(times)
        elif kind == "uuid":
            fields = [p for p, v in nodes if p[-1] in {"id", "subject", "task_id"}]
            target = draw(st.sampled_from(fields)) if fields else ("id",)
            _at(msg, target[:-1])[target[-1]] = draw(uuid_texts)
        elif kind == "delete":
            keyed = [path for path, _ in nodes if isinstance(path[-1], str)]
            if not keyed:
                continue
            path = draw(st.sampled_from(keyed))
            del _at(msg, path[:-1])[path[-1]]
        elif kind == "extra":
            target = _at(msg, draw(st.sampled_from(objects)))
            name = draw(st.text(max_size=12) | st.sampled_from(["extra", "subject", "task_id"]))
            target[name] = draw(wrong_types)
    return msg


# --- the properties --------------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(BASES)))
def test_the_valid_bases_are_valid_for_both(index: int) -> None:
    assert schema_accepts(BASES[index])
    assert decode_accepts(BASES[index])


@SETTINGS
@given(mutated_messages(("replace",)), st.booleans())
def test_replaced_values(msg: dict[str, Any], ascii_only: bool) -> None:
    assert_agree(msg, ascii_only)


@SETTINGS
@given(mutated_messages(("time",)))
def test_times(msg: dict[str, Any]) -> None:
    assert_agree(msg)


@SETTINGS
@given(mutated_messages(("uuid",)))
def test_uuid_spellings(msg: dict[str, Any]) -> None:
    assert_agree(msg)


@SETTINGS
@given(mutated_messages(("delete", "extra")))
def test_missing_and_extra_fields(msg: dict[str, Any]) -> None:
    assert_agree(msg)


@SETTINGS
@given(mutated_messages(("replace", "time", "uuid", "delete", "extra")))
def test_any_mutations(msg: dict[str, Any]) -> None:
    assert_agree(msg)


@SETTINGS
@given(times)
def test_every_time_field_alike(text: str) -> None:
    """Envelope ``time`` and every payload time take the same texts."""
    verdicts = set()
    for event_type, key in [
        (None, "time"),
        (EventType.DISPATCH_REQUESTED, "not_before"),
        (EventType.CONTROL_PAUSE, "resume_after"),
        (EventType.TASK_RECOVERY_REQUESTED, "last_event_at"),
    ]:
        msg = json.loads(example_event(event_type or EventType.TASK_STARTED))
        target = msg if event_type is None else msg["data"]
        target[key] = text
        assert_agree(msg)
        verdicts.add(decode_accepts(msg))
    assert len(verdicts) == 1, text
