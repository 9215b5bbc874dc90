"""The one way taskledger waits and retries: exponential back-off with full jitter.

Every loop that retries (the runner's reconnect and its held batch, the outbox relay,
the capacity timers, the broker connect, the dead-letter tools) takes a :class:`Backoff`
and sleeps with :func:`pause`, which wakes early when the service is asked to stop or
when another event says there is work. Jitter spreads the retries of many processes
that lost the same server at the same moment, so they do not return in lock-step.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """Delays ``first, 2*first, 4*first ...`` capped at ``cap``, each with full jitter.

    ``next()`` returns the delay to sleep before the next attempt: a random value in
    ``[delay/2, delay]`` (half jitter keeps a floor, so a tight loop never spins).
    ``reset()`` starts over after a success; ``current`` is the un-jittered delay that
    the next call is based on (0.0 right after a reset), for logs.
    """

    first: float = 0.1
    cap: float = 5.0
    factor: float = 2.0
    _next: float = field(default=0.0, init=False)
    _rng: random.Random = field(default_factory=random.Random, init=False, repr=False)

    @property
    def current(self) -> float:
        """The delay (before jitter) that the next :meth:`next` is based on."""
        return self._next or self.first

    @property
    def active(self) -> bool:
        """True once a failure was counted and no success reset it."""
        return self._next > 0.0

    def next(self) -> float:
        """Count one more failure; return the jittered delay to wait before retrying."""
        base = min(self._next or self.first, self.cap)
        self._next = min(base * self.factor, self.cap)
        return base / 2 + self._rng.random() * base / 2

    def reset(self) -> None:
        """A success: the next failure waits ``first`` again."""
        self._next = 0.0


async def pause(seconds: float | None, *events: asyncio.Event) -> bool:
    """Sleep ``seconds`` (forever if None), waking early when any of ``events`` is set.

    Returns True if an event woke it, False if the time ran out. Pass the service's
    ``stopping`` event first so that every wait in the service ends on SIGTERM.
    """
    if any(e.is_set() for e in events):
        return True
    if not events:
        await asyncio.sleep(seconds or 0)
        return False
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        done, _ = await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    return bool(done)
