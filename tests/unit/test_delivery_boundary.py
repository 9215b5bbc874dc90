"""Delivery.prepare runs in the channel's frame reader: it must never raise."""

from __future__ import annotations

from aiormq.abc import DeliveredMessage
from pamqp import commands
from pamqp.header import ContentHeader

from consumer.runtime.delivery import Delivery
from contracts import EventType, make_event


def _message(body: bytes, headers: object) -> DeliveredMessage:
    deliver = commands.Basic.Deliver("tag", 7, False, "tl.events", "task.requested")
    properties = commands.Basic.Properties(content_type="application/json")
    properties.headers = headers  # type: ignore[assignment]  # what a client bug could hand us
    header = ContentHeader(body_size=len(body), properties=properties)
    return DeliveredMessage(delivery=deliver, header=header, body=body, channel=None)  # type: ignore[arg-type]


def test_an_unexpected_error_is_a_dead_letter_reason_not_an_exception() -> None:
    body = b'{"specversion": "1.0"}'
    delivery = Delivery(_message(body, headers=["not", "a", "table"]), 0.0)
    delivery.prepare()  # must not raise
    assert delivery.event is None
    assert delivery.reason == "schema_violation"
    assert delivery.error is not None and delivery.error.startswith("unexpected ")


def test_a_valid_message_still_decodes() -> None:
    body = make_event(EventType.CAPACITY_REPORTED, {
        "agent_id": "gpu-01", "agent_type": "research", "load_pct": 1.0, "accepting": True,
        "free": {"gpu_vram_mb": 1, "cpu_cores": 1.0, "memory_mb": 1},
    }, source="agents/gpu-01")  # fmt: skip
    message = _message(body, headers=None)
    message.delivery.routing_key = "capacity.reported"  # type: ignore[union-attr]
    delivery = Delivery(message, 0.0)
    delivery.prepare()
    assert delivery.reason is None and delivery.event is not None
