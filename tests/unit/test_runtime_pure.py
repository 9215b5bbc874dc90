"""Pure parts of the runtime and its edges: retry-attempt parsing, the back-off policy,
database error classification, the admission room, the AMQP header guard."""

from __future__ import annotations

import asyncio
import struct

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp import decode, encode

from consumer.admission.policy import Room
from consumer.broker import frames
from consumer.core.retry import Backoff, pause
from consumer.runtime.delivery import attempt_of
from consumer.store.db import classify


@pytest.mark.parametrize(
    "value,expected",
    [(0, 0), (2, 2), ("3", 3), (-5, 0), ("-1", 0), ("1e9", 0), ("²", 0), (None, 0),
     (True, 0), ({}, 0), ([1], 0), (2.5, 0), (4611686018427387904, 4611686018427387904)],
)  # fmt: skip
def test_retry_attempt_of_any_header_value(value: object, expected: int) -> None:
    assert attempt_of(value) == expected


def test_backoff_doubles_to_its_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(first=0.1, cap=1.0)
    delays = [backoff.next() for _ in range(8)]
    bases = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    for delay, base in zip(delays, bases, strict=True):
        assert base / 2 <= delay <= base
    assert backoff.active
    backoff.reset()
    assert not backoff.active and backoff.next() <= 0.1


async def test_pause_wakes_on_an_event_and_times_out_without_one() -> None:
    event = asyncio.Event()
    assert await pause(0.01, event) is False
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await pause(5, event) is True
    assert await pause(5, event) is True  # already set: returns at once


@pytest.mark.parametrize(
    "exc,kind",
    [
        (asyncpg.InvalidPasswordError("bad password"), "misconfigured"),
        (asyncpg.InvalidCatalogNameError("no such database"), "misconfigured"),
        (asyncpg.InvalidAuthorizationSpecificationError("no role"), "misconfigured"),
        (asyncpg.UndefinedTableError("no table"), "misconfigured"),
        (asyncpg.InsufficientPrivilegeError("denied"), "misconfigured"),
        (asyncpg.QueryCanceledError("statement timeout"), "timeout"),
        (TimeoutError(), "timeout"),
        (asyncpg.AdminShutdownError("bye"), "unavailable"),
        (asyncpg.CannotConnectNowError("starting"), "unavailable"),
        (asyncpg.TooManyConnectionsError("full"), "unavailable"),
        (asyncpg.DeadlockDetectedError("deadlock"), "unavailable"),
        (asyncpg.SerializationError("retry"), "unavailable"),
        (ConnectionRefusedError(), "unavailable"),
        (asyncpg.InterfaceError("connection closed"), "unavailable"),
        (asyncpg.NumericValueOutOfRangeError("int4"), "data"),
        (asyncpg.UniqueViolationError("dup"), "data"),
        (asyncpg.PostgresSyntaxError("bug"), "data"),
        (ValueError("bug"), "data"),
    ],
)
def test_database_errors_are_classified_by_sqlstate(exc: BaseException, kind: str) -> None:
    assert classify(exc) == kind


def test_room_takes_what_fits_and_refuses_the_rest() -> None:
    room = Room(gpu_vram_mb=1000, cpu_cores=2.0, memory_mb=4096)
    entry = {"required_gpu_vram_mb": 600, "required_cpu_cores": 1.0, "required_memory_mb": 1024}
    assert room.take(entry) is True
    assert room.take(entry) is False  # GPU memory left: 400
    assert (room.gpu_vram_mb, room.cpu_cores, room.memory_mb) == (400, 1.0, 3072)
    small = {"required_gpu_vram_mb": 0, "required_cpu_cores": 0.5, "required_memory_mb": 1024}
    assert [room.take(small) for _ in range(3)] == [True, True, False]  # CPU runs out
    assert room.cpu_cores == pytest.approx(0.0)


@given(st.lists(st.tuples(st.integers(0, 500), st.integers(0, 8), st.integers(0, 2048)),
                max_size=30))  # fmt: skip
def test_room_never_goes_negative(entries: list[tuple[int, int, int]]) -> None:
    room = Room(gpu_vram_mb=2000, cpu_cores=4.0, memory_mb=8192)
    for gpu, cpu, mem in entries:
        room.take({"required_gpu_vram_mb": gpu, "required_cpu_cores": cpu / 2,
                   "required_memory_mb": mem})  # fmt: skip
        assert room.gpu_vram_mb >= 0 and room.cpu_cores >= -1e-9 and room.memory_mb >= 0


def _nested(depth: int) -> bytes:
    """The AMQP encoding of a header table {"n": {"n": ... {"leaf": "x"}}} ``depth`` deep,
    built without recursion (as another client could send it)."""
    inner = b"\x04leafS" + struct.pack(">I", 1) + b"x"
    table = struct.pack(">I", len(inner)) + inner
    for _ in range(depth):
        field = b"\x01nF" + table
        table = struct.pack(">I", len(field)) + field
    return table


def test_a_table_nested_thousands_deep_decodes_with_its_depth_cut() -> None:
    frames.install()
    consumed, headers = decode.by_type(_nested(3000), "table")
    assert consumed == len(_nested(3000))
    assert frames.unreadable(headers) == ["n"]
    value, depth = headers, 0
    while isinstance(value, dict):
        value, depth = value["n"], depth + 1
    assert isinstance(value, frames.UnreadableValue) and depth == frames.MAX_DEPTH
    # what is kept encodes again (as a byte array), so the message can be dead-lettered
    assert encode.field_table(headers)


def test_a_table_with_a_key_that_is_not_utf8_is_kept_raw() -> None:
    frames.install()
    inner = b"\x02\xff\xfeS" + struct.pack(">I", 1) + b"x"
    nested = struct.pack(">I", len(inner)) + inner
    field = b"\x03badF" + nested + b"\x02okS" + struct.pack(">I", 2) + b"hi"
    _, headers = decode.by_type(struct.pack(">I", len(field)) + field, "table")
    assert isinstance(headers["bad"], frames.UnreadableValue) and headers["ok"] == "hi"
    assert frames.unreadable(headers) == ["bad"]


def test_shallow_headers_are_untouched() -> None:
    frames.install()
    data = encode.field_table({"a": {"b": [1, "two", {"c": True}]}})
    _, headers = decode.by_type(data, "table")
    assert headers == {"a": {"b": [1, "two", {"c": True}]}}
    assert frames.unreadable(headers) == []
