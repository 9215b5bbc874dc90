"""The buffered frame reader (:func:`consumer.broker.frames.buffered_frames`) reads the
same frames as the AMQP client's own reader, whatever the socket's chunking, and falls
back to it for a frame still arriving, the connection's first bytes and bad frames."""

from __future__ import annotations

import asyncio

import pytest
from aiormq.connection import FrameReceiver
from aiormq.exceptions import InvalidFrameError
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import body, commands, frame, header, heartbeat

from consumer.broker import frames


def stream(messages: int = 3) -> bytes:
    """Frames as a broker sends them: a start method, deliveries with header and body
    (one body empty, one large), a heartbeat."""
    out = [frame.marshal(commands.Connection.Start(), 0)]
    for n in range(messages):
        payload = b"x" * (n * 70_000)  # 0 bytes, then bodies larger than a socket read
        out.append(frame.marshal(commands.Basic.Deliver(
            consumer_tag="tl", delivery_tag=n + 1, exchange="ex", routing_key="rk"), 1))  # fmt: skip
        props = commands.Basic.Properties(message_id=f"m{n}", headers={"k": {"n": [n]}})
        out.append(frame.marshal(header.ContentHeader(0, len(payload), props), 1))
        if payload:
            out.append(frame.marshal(body.ContentBody(payload), 1))
        out.append(frame.marshal(heartbeat.Heartbeat(), 0))
    return b"".join(out)


def canonical(received: list[tuple[int, int, object]]) -> list[bytes]:
    """Frames as bytes again (pamqp frames do not compare equal to their copies)."""
    return [frame.marshal(f, channel) for _, channel, f in received]  # type: ignore[arg-type]


async def read_all(
    data: bytes, chunks: list[int], *, buffered: bool
) -> list[tuple[int, int, object]]:
    """Feed ``data`` in ``chunks`` (sizes, cycled) while a receiver reads every frame."""
    frames.buffered_frames()
    get_frame = FrameReceiver.get_frame
    reader = asyncio.StreamReader()
    receiver = FrameReceiver(reader)

    async def feed() -> None:
        at, i = 0, 0
        while at < len(data):
            size = chunks[i % len(chunks)]
            reader.feed_data(data[at : at + size])
            at, i = at + size, i + 1
            await asyncio.sleep(0)
        reader.feed_eof()

    feeder = asyncio.create_task(feed())
    read = get_frame if buffered else get_frame.__wrapped__  # type: ignore[attr-defined]
    got = []
    try:
        while True:
            try:
                got.append(await read(receiver))
            except StopAsyncIteration:
                break
            except Exception as exc:  # the client's own reader ends with its error at EOF
                if "unexpectedly closed" in str(exc):
                    break
                raise
    finally:
        await feeder
    return got


async def test_the_buffered_reader_is_installed_once() -> None:
    frames.buffered_frames()
    assert frames.buffered_frames() is False  # already installed: nothing to change
    assert getattr(FrameReceiver.get_frame, "_taskledger_buffered", False)


@pytest.mark.parametrize("chunks", [[1_000_000], [1], [7], [8, 3, 4096], [65_536]])
async def test_same_frames_as_the_clients_reader(chunks: list[int]) -> None:
    data = stream()
    ours = await read_all(data, chunks, buffered=True)
    theirs = await read_all(data, chunks, buffered=False)
    assert canonical(ours) == canonical(theirs)
    assert len(ours) == 1 + 3 * 3 + 2  # start, (deliver, header, heartbeat) x3, 2 bodies
    assert [w for w, _, _ in ours] == [w for w, _, _ in theirs]


@settings(max_examples=40, deadline=None)
@given(chunks=st.lists(st.integers(min_value=1, max_value=20_000), min_size=1, max_size=8))
def test_any_chunking_reads_the_same_frames(chunks: list[int]) -> None:
    data = stream(2)
    ours = asyncio.run(read_all(data, chunks, buffered=True))
    theirs = asyncio.run(read_all(data, chunks, buffered=False))
    assert canonical(ours) == canonical(theirs)


async def test_a_frame_without_its_end_byte_is_refused_by_both_paths() -> None:
    good = frame.marshal(commands.Connection.Start(), 0)
    bad = frame.marshal(
        commands.Basic.Deliver(consumer_tag="t", delivery_tag=1, exchange="e", routing_key="r"), 1
    )
    bad = bad[:-1] + b"\x00"
    for chunks in ([1_000_000], [3]):  # whole in the buffer / arriving in pieces
        with pytest.raises(InvalidFrameError):
            await read_all(good + bad, chunks, buffered=True)
