"""Operator control of dispatch, shared by the CLI (``taskledger pause|resume``) and the API.

An operator's decision travels as a ``control.pause`` / ``control.resume`` CloudEvent on
the ``<prefix>.events`` exchange, so every capacity-handler instance sees it (the
handler applies it; this module only publishes and records). Each action is also
written to ``operator_actions``: the row is inserted in a transaction that commits only
after the broker confirmed the event, so a failed publish leaves no record of an action
that did not happen.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import aio_pika

from consumer import broker
from consumer.core.errors import BrokerUnavailable, InvalidArgument
from consumer.core.settings import Settings, redact_text
from consumer.operations.actions import default_actor, record_action
from consumer.queries import schema_errors
from consumer.store.db import connect, translate_errors
from contracts import ControlPause, ControlResume, ControlScope, EventType, make_event

__all__ = ["default_actor", "pause", "resume"]

log = logging.getLogger(__name__)

_ACTOR_UNSAFE = re.compile(r"[/\s]+")
_MAX_REASON = 1000


def _source(actor: str) -> str:
    """``ops/<actor>`` with the characters the envelope's source pattern forbids replaced."""
    return "ops/" + (_ACTOR_UNSAFE.sub("-", actor.strip()) or "unknown")


async def pause(
    settings: Settings,
    *,
    task_id: UUID | None,
    until: datetime | None,
    reason: str | None,
    actor: str,
) -> UUID:
    """Hold dispatch: of one task (``task_id``) or of all work (``task_id=None``).

    ``until`` lifts the hold by itself at that time (``resume_after``). Publishes a
    ``control.pause`` event and records the ``pause`` operator action.

    Returns the event id. Raises :class:`InvalidArgument` (``until`` in the past, reason
    too long), :class:`BrokerUnavailable`, :class:`DatabaseUnavailable`.
    """
    if until is not None:
        if until.tzinfo is None:
            until = until.replace(tzinfo=UTC)
        if until <= datetime.now(UTC):
            raise InvalidArgument(f"--until {until.isoformat()} is in the past")
    if reason is not None and (len(reason) > _MAX_REASON or "\x00" in reason):
        raise InvalidArgument(f"reason must be at most {_MAX_REASON} characters, without NUL")
    scope = ControlScope.TASK if task_id is not None else ControlScope.ALL
    data = ControlPause(scope=scope, task_id=task_id, reason=reason, resume_after=until)
    return await _send(settings, EventType.CONTROL_PAUSE, data, action="pause", actor=actor)


async def resume(settings: Settings, *, task_id: UUID | None, force: bool, actor: str) -> UUID:
    """Lift a hold: of one task (``task_id``) or the hold on all dispatch (``None``).

    ``force`` dispatches that task now, capacity or not (trigger ``manual``); it needs a
    task. Publishes a ``control.resume`` event and records the ``resume`` or ``force``
    operator action.

    Returns the event id. Raises :class:`InvalidArgument` (``force`` without a task),
    :class:`BrokerUnavailable`, :class:`DatabaseUnavailable`.
    """
    if force and task_id is None:
        raise InvalidArgument("--force needs a task: give --task ID")
    scope = ControlScope.TASK if task_id is not None else ControlScope.ALL
    data = ControlResume(scope=scope, task_id=task_id, force=force)
    action = "force" if force else "resume"
    return await _send(settings, EventType.CONTROL_RESUME, data, action=action, actor=actor)


async def _send(
    settings: Settings,
    event_type: EventType,
    data: ControlPause | ControlResume,
    *,
    action: str,
    actor: str,
) -> UUID:
    event_id = uuid4()
    body = make_event(event_type, data, source=_source(actor), id=event_id)
    params: dict[str, Any] = data.model_dump(mode="json", exclude_none=True)
    conn = await connect(settings.dsn)
    try:
        with translate_errors(), schema_errors():
            async with conn.transaction():
                await record_action(
                    conn,
                    action,
                    actor,
                    params,
                    {"published": True, "routing_key": event_type.value},
                    event_id=event_id,
                )
                # Commit only once the broker confirmed: no record of an unpublished action.
                await _publish(settings, event_type, body, event_id)
    finally:
        await conn.close()
    log.info(
        "operator %s published",
        action,
        extra={
            "action": f"control_{action}",
            "event_id": str(event_id),
            "task_id": str(params.get("task_id")) if params.get("task_id") else None,
            "actor": actor,
        },
    )
    return event_id


async def _publish(settings: Settings, event_type: EventType, body: bytes, event_id: UUID) -> None:
    """Declare the topology (a fresh broker works too) and publish with a confirm."""
    connection = await broker.connect(settings.amqp)
    try:
        channel = await broker.confirm_channel(connection)
        names = await broker.declare_topology(channel, settings)
        exchange = await channel.get_exchange(names.events, ensure=False)
        message = aio_pika.Message(
            body=body,
            content_type="application/json",
            message_id=str(event_id),
            type=event_type.value,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await broker.publish_confirmed(exchange, message, event_type.value)
    except (aio_pika.exceptions.AMQPError, OSError, TimeoutError) as exc:
        detail = redact_text(str(exc)) or type(exc).__name__
        raise BrokerUnavailable(f"could not publish {event_type.value}: {detail}") from exc
    finally:
        await connection.close()
