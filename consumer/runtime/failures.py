"""Where a message goes when it cannot be recorded: the dead letters or a delayed retry.

Both publish on the session's confirm channel and return only once the broker has
confirmed, so the caller may acknowledge the original delivery afterwards.
"""

from __future__ import annotations

import logging

from aio_pika.abc import AbstractChannel, AbstractExchange

from consumer.broker.connection import publish_confirmed
from consumer.broker.headers import H_ATTEMPT, H_ROUTING_KEY, copy_message, cut, dead_letter_headers
from consumer.broker.topology import Names
from consumer.core import metrics
from consumer.core.settings import Settings, redact_text
from consumer.runtime.delivery import Delivery, attempt_of
from contracts import DeadLetterReason, Event

log = logging.getLogger(__name__)


class FailureRouter:
    """Dead-letters or schedules a retry of one delivery, with its reason in headers."""

    def __init__(
        self, settings: Settings, channel: AbstractChannel, names: Names, queue: str, label: str
    ) -> None:
        self.settings = settings
        self.channel = channel
        self.names = names
        self.queue = queue
        self.label = label
        self._dlx: AbstractExchange | None = None

    async def _dead_letter_exchange(self) -> AbstractExchange:
        if self._dlx is None:
            self._dlx = await self.channel.get_exchange(self.names.dlx, ensure=False)
        return self._dlx

    async def dead_letter(self, delivery: Delivery, reason: str, error: str) -> None:
        """Publish ``delivery`` to the dead letters with ``reason`` and ``error``."""
        dlx = await self._dead_letter_exchange()
        routing_key = delivery.routing_key() or ""
        headers = dead_letter_headers(
            delivery.headers,
            reason=reason,
            error=error,
            source_queue=self.queue,
            routing_key=routing_key,
            exchange=self.names.events,
        )
        message = copy_message(delivery.message.body, delivery.message.header.properties, headers)
        await publish_confirmed(dlx, message, routing_key)
        metrics.DEAD_LETTERED.labels(self.label, reason).inc()
        log.warning(
            "dead-lettered a message",
            extra={"action": "dead_letter", "handler": self.label, "reason": reason,
                   "routing_key": routing_key, "error": cut(error, 200)},
        )  # fmt: skip

    async def retry_later(self, delivery: Delivery, event: Event, exc: BaseException) -> None:
        """Send an event that failed to a delayed retry queue, or after the last delay to
        the dead letters (``retries_exhausted``)."""
        error = f"{type(exc).__name__}: {exc}"
        attempt = attempt_of(delivery.headers.get(H_ATTEMPT))
        delays = self.settings.retry_delays_ms
        ids = {"event_id": str(event.id), "task_id": str(event.task_id) if event.task_id else None}
        if attempt >= len(delays):
            log.error("event failed on every retry; dead-lettering it",
                      extra={"action": "retries_exhausted", "handler": self.label, **ids})  # fmt: skip
            await self.dead_letter(delivery, DeadLetterReason.RETRIES_EXHAUSTED.value, error)
            return
        headers = delivery.headers
        headers[H_ATTEMPT] = attempt + 1
        headers[H_ROUTING_KEY] = delivery.routing_key() or ""
        message = copy_message(delivery.message.body, delivery.message.header.properties, headers)
        queue = self.names.retry(self.queue, delays[attempt])
        await publish_confirmed(self.channel.default_exchange, message, queue)
        metrics.RETRIED.labels(self.label).inc()
        log.warning(
            "event failed; retrying later",
            extra={"action": "retry", "handler": self.label, "attempt": attempt + 1, **ids,
                   "delay_ms": delays[attempt], "error": cut(redact_text(error), 300)},
        )  # fmt: skip
