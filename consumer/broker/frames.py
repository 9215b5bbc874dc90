"""Header tables any client can send but the AMQP client cannot decode, made harmless.

pamqp decodes nested header tables and arrays recursively: a table nested a few
thousand levels deep (21 KB is enough) raises ``RecursionError`` inside the client's
frame reader, which closes the whole connection. Every message delivered in the same
window then comes back again and again until the queue's delivery limit dead-letters
them all, the valid ones included, without a reason. A table whose keys are not UTF-8
does the same with ``UnicodeDecodeError``.

:func:`install` wraps pamqp's table and array decoders: past :data:`MAX_DEPTH` levels, or
when a nested table cannot be decoded, the value is kept as its raw encoded bytes in an
:class:`UnreadableValue` (a ``bytearray``, which pamqp encodes again as a byte array),
and decoding goes on after it. The consumer dead-letters such a message with reason
``invalid_headers``; the dead-letter tools show and replay it like any other.

:func:`deliver_inline` also lives here, the other adaptation of the client's frame
reader: it hands each delivery of one consumer to a plain function, in order, instead of
starting an asyncio task per message (the client's way; creating and running those
tasks was 5-10% of the consumer's samples while draining a backlog).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiormq.abc import DeliveredMessage
from pamqp import decode

log = logging.getLogger(__name__)

#: Deepest nesting of header tables/arrays decoded as values.
MAX_DEPTH = 64

#: Header under which a top-level header table that cannot be decoded is kept.
H_UNREADABLE = "x-taskledger-unreadable-headers"

Decoder = Callable[[bytes], tuple[int, Any]]

_state = threading.local()
_installed = False


class UnreadableValue(bytearray):
    """A header value kept as its raw AMQP encoding: nested too deep, or malformed."""


def _depth() -> int:
    return int(getattr(_state, "depth", 0))


def _raw(value: bytes) -> tuple[int, UnreadableValue]:
    """Skip one length-prefixed table or array without decoding it."""
    try:
        length = struct.unpack(">I", value[0:4])[0]
    except struct.error as exc:
        raise ValueError("Could not unpack data") from exc
    end = 4 + length
    if end > len(value):
        raise ValueError("Field table length exceeds available data")
    return end, UnreadableValue(value[:end])


def _guard(original: Decoder, *, top_level: bool) -> Decoder:
    def guarded(value: bytes) -> tuple[int, Any]:
        depth = _depth()
        if depth >= MAX_DEPTH:
            return _raw(value)
        _state.depth = depth + 1
        try:
            return original(value)
        except (ValueError, RecursionError):
            consumed, raw = _raw(value)  # a malformed length still fails the frame
            return consumed, ({H_UNREADABLE: raw} if top_level and depth == 0 else raw)
        finally:
            _state.depth = depth

    guarded.__wrapped__ = original  # type: ignore[attr-defined]
    return guarded


def install() -> None:
    """Wrap pamqp's table and array decoders (idempotent; process-wide)."""
    global _installed
    if _installed:
        return
    table, array = decode.field_table, decode.field_array
    decode.TABLE_MAPPING[b"F"] = _guard(table, top_level=False)
    decode.TABLE_MAPPING[b"A"] = _guard(array, top_level=False)
    decode.METHODS["table"] = _guard(table, top_level=True)
    decode.METHODS["array"] = _guard(array, top_level=False)
    _installed = True


#: Bytes of an AMQP frame around its payload: type (1), channel (2), size (4), end (1).
_FRAME_OVERHEAD = 8


def buffered_frames() -> bool:
    """Let the client's frame reader take a frame that is already whole in the socket's
    read buffer in one step.

    aiormq reads every frame with three ``readexactly`` calls under a lock into a
    ``BytesIO``: three coroutines and a copy per frame, three frames per message (a
    quarter of the consumer's samples while draining a backlog). When the buffer holds
    the whole next frame, this slices it out and hands it to the same pamqp decoder;
    otherwise (a frame still arriving, the connection's first bytes, an error pending on
    the stream) the client's own reader runs, unchanged. Returns False, changing nothing,
    when the client or asyncio lack what this relies on.
    """
    from aiormq import connection as client
    from aiormq.exceptions import InvalidFrameError
    from pamqp import frame as pamqp_frame
    from pamqp.exceptions import PAMQPException

    receiver: Any = getattr(client, "FrameReceiver", None)
    original = getattr(receiver, "get_frame", None)
    if (
        original is None
        or getattr(original, "_taskledger_buffered", False)
        or not callable(getattr(asyncio.StreamReader, "_maybe_resume_transport", None))
    ):
        return False

    async def get_frame(self: Any) -> Any:
        reader: Any = getattr(self, "reader", None)
        buffer = getattr(reader, "_buffer", None)
        if (
            self.started
            and isinstance(buffer, bytearray)
            and len(buffer) >= _FRAME_OVERHEAD
            and getattr(reader, "_exception", True) is None
            and not self.lock.locked()
        ):
            end = int.from_bytes(buffer[3:7], "big") + _FRAME_OVERHEAD
            if len(buffer) >= end:
                data = bytes(buffer[:end])
                del buffer[:end]
                reader._maybe_resume_transport()
                try:
                    return pamqp_frame.unmarshal(data)
                except PAMQPException as exc:
                    raise InvalidFrameError(str(exc)) from exc
        return await original(self)

    get_frame._taskledger_buffered = True  # type: ignore[attr-defined]
    get_frame.__wrapped__ = original  # type: ignore[attr-defined]
    receiver.get_frame = get_frame
    return True


def unreadable(headers: Mapping[str, Any] | None) -> list[str]:
    """The header names whose value (at any depth) could not be decoded."""
    if not headers:
        return []
    found: list[str] = []

    def walk(value: Any, depth: int) -> bool:
        if isinstance(value, UnreadableValue):
            return True
        if depth > MAX_DEPTH:
            return False
        if isinstance(value, Mapping):
            return any(walk(v, depth + 1) for v in value.values())
        if isinstance(value, list):
            return any(walk(v, depth + 1) for v in value)
        return False

    for name, value in (headers or {}).items():
        if walk(value, 1):
            found.append(str(name))
    return found


def deliver_inline(
    channel: Any, consumer_tag: str, accept: Callable[[DeliveredMessage], None]
) -> bool:
    """Hand the deliveries of ``consumer_tag`` on ``channel`` (an aiormq channel) to
    ``accept``, called in delivery order from the channel's frame reader, without a task
    per message. Deliveries to other consumers keep the client's own path.

    Call it before ``basic_consume(..., consumer_tag=consumer_tag)``, whose callback
    stays registered (and would only see deliveries if this could not be installed).
    ``accept`` must not block and must not raise. Returns False, changing nothing, when
    the client does not have the internals this relies on (another aiormq version).
    """
    read_header: Callable[[], Awaitable[Any]] | None = getattr(
        channel, "_Channel__get_content_header", None
    )
    read_content: Callable[[Any, Any], Awaitable[DeliveredMessage]] | None = getattr(
        channel, "_read_content", None
    )
    original: Callable[[Any], Awaitable[None]] | None = getattr(channel, "_on_deliver_frame", None)
    if read_header is None or read_content is None or original is None:
        log.warning("AMQP client internals not found; consuming through its callback path")
        return False

    async def on_deliver_frame(frame: Any) -> None:
        if frame.consumer_tag != consumer_tag:
            await original(frame)
            return
        header = await read_header()
        accept(await read_content(frame, header))

    channel._on_deliver_frame = on_deliver_frame
    return True
