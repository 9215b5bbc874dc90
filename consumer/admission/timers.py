"""The capacity timers: expired holds, the pause-queue sweep, finished tasks, stale work.

Every ``timer_interval_s`` a pass lifts holds whose ``resume_after`` passed and
re-admits their entries (trigger ``timeout``), and sweeps the waiting entries against
usable agents: entries whose ``not_before`` passed go with trigger ``timeout``, others
(left over by the per-report limit or skipped while another transaction held them)
with ``capacity``. Less often (:func:`slow_interval`) it takes out entries whose task
already finished (``released``, trigger ``cancelled``) and runs the recovery of stale work
(:mod:`consumer.admission.recovery`: ask, re-dispatch, or fail as agent_lost).

:func:`run_timer` survives outages: a failed pass is logged and retried after a
jittered back-off (:class:`consumer.core.retry.Backoff`, capped at 5 s); after a
successful pass it waits the normal interval. Either wait ends early on stop.
"""

from __future__ import annotations

import logging
import time

import asyncpg

from consumer.admission import recovery, stale
from consumer.admission.holds import unhold
from consumer.admission.policy import CANCEL_LIMIT, Policy, always, timer_trigger
from consumer.admission.release import CANCELLED, History, admit_waiting, append_history
from consumer.broker import Names
from consumer.core.errors import DatabaseUnavailable
from consumer.core.metrics import RELEASED
from consumer.core.retry import Backoff, pause
from consumer.core.settings import Settings
from consumer.runtime.handler import ServiceContext
from consumer.store import db
from consumer.store.db import q
from contracts import ControlScope, TriggerType

log = logging.getLogger(__name__)

#: Failures of a timer pass that need no traceback: they pass by themselves.
TRANSIENT: tuple[type[BaseException], ...] = (DatabaseUnavailable, asyncpg.TransactionRollbackError)

#: First and longest pause before retrying a failed timer pass.
RETRY_FIRST_S = 0.2
RETRY_CAP_S = 5.0


def slow_interval(settings: Settings) -> float:
    """Seconds between the timer's slow passes (stale work, finished tasks' entries).

    At most 30 s, a quarter of the stale limit when that is shorter (tests use small
    limits), never faster than the timer itself.
    """
    quarter = min(settings.stale_after_s, settings.recovery_timeout_s) / 4
    return max(settings.timer_interval_s, min(30.0, quarter))


async def expire_holds(pool: asyncpg.Pool, policy: Policy) -> int:
    """Lift holds whose ``resume_after`` passed and re-admit their entries (timeout).

    Returns how many entries were released. Raises :class:`DatabaseUnavailable`.
    """
    async with db.transaction(pool) as conn:
        expired = await conn.fetch(q("capacity_expired_holds"))
        if not expired:
            return 0
        scopes = {h["task_id"] for h in expired}
        if any(h["scope"] == ControlScope.ALL for h in expired):
            scopes = {None}
        unheld: list[asyncpg.Record] = []
        for task_id in scopes:
            unheld += await unhold(conn, task_id)
        rows = [
            History(
                h["task_id"],
                "unheld",
                trigger=TriggerType.TIMEOUT,
                details={"scope": h["scope"], "resume_after": h["resume_after"]},
            )
            for h in expired
        ]
        rows += [
            History(r["task_id"], "unheld", trigger=TriggerType.TIMEOUT, details={"expired": True})
            for r in unheld
            if r["task_id"] not in scopes
        ]
        await append_history(conn, rows)
        released = await admit_waiting(
            conn,
            policy,
            trigger_for=always(TriggerType.TIMEOUT),
            agent_types={r["agent_type"] for r in unheld},
            task_ids=[r["task_id"] for r in unheld],
        )
    log.info(
        "holds expired",
        extra={"action": "holds_expired", "holds": len(expired), "released": released},
    )
    return released


async def sweep(pool: asyncpg.Pool, policy: Policy) -> int:
    """Release waiting entries that fit usable agents now; returns how many.

    Entries whose ``not_before`` held them back go with trigger ``timeout``, the others
    with ``capacity``. Raises :class:`DatabaseUnavailable`.
    """
    async with db.transaction(pool) as conn:
        if not await conn.fetchval(q("capacity_waiting_exists")):
            return 0
        return await admit_waiting(conn, policy, trigger_for=timer_trigger)


async def cancel_finished(pool: asyncpg.Pool) -> int:
    """Take out waiting entries whose task already finished (trigger cancelled).

    Returns how many. Raises :class:`DatabaseUnavailable`.
    """
    async with db.transaction(pool) as conn:
        taken = await conn.fetch(q("capacity_cancel_finished"), CANCEL_LIMIT)
        await append_history(
            conn,
            [
                History(r["task_id"], "released", reason=r["reason"], trigger=CANCELLED)
                for r in taken
            ],
        )
    RELEASED.labels(CANCELLED).inc(len(taken))
    return len(taken)


async def announce_stale(pool: asyncpg.Pool, names: Names, stale_after_s: float) -> int:
    """Queue ``task.recovery_requested`` for newly stale tasks; returns how many."""
    async with db.transaction(pool) as conn:
        announced = await stale.announce_stale(conn, names, stale_after_s)
    return len(announced)


async def recover(pool: asyncpg.Pool, names: Names, settings: Settings) -> int:
    """One recovery pass (:mod:`consumer.admission.recovery`); returns how many steps."""
    async with db.transaction(pool) as conn:
        steps = await recovery.recover(conn, names, settings)
    return len(steps)


async def tick(
    pool: asyncpg.Pool, policy: Policy, settings: Settings, *, slow: bool = False
) -> int:
    """One timer pass (holds, sweep; with ``slow`` also finished tasks and stale work).

    Returns how many entries were released. Raises :class:`DatabaseUnavailable`.
    """
    released = await expire_holds(pool, policy)
    released += await sweep(pool, policy)
    if slow:
        await cancel_finished(pool)
        await recover(pool, policy.names, settings)
    return released


async def run_timer(ctx: ServiceContext, policy: Policy, settings: Settings) -> None:
    """Run :func:`tick` every ``timer_interval_s`` until ``ctx.stopping``; survives outages."""
    next_slow = 0.0
    backoff = Backoff(first=RETRY_FIRST_S, cap=RETRY_CAP_S)
    while not ctx.stopping.is_set():
        slow = time.monotonic() >= next_slow
        try:
            await tick(ctx.pool, policy, settings, slow=slow)
        except Exception as exc:  # outages, deadlocks: log, back off, try again
            delay = backoff.next()
            log.warning(
                "capacity timer pass failed: %s",
                exc,
                extra={"action": "timer_retry"},
                exc_info=not isinstance(exc, TRANSIENT),
            )
        else:
            backoff.reset()
            delay = settings.timer_interval_s
            if slow:
                next_slow = time.monotonic() + slow_interval(settings)
        await pause(delay, ctx.stopping)
