"""The sealer: chains committed ledger rows into the hash chain, off the writers' path.

Writers list each row they record in ``ledger_unsealed`` (migration 012), with the row's
digest taken in the same transaction, without a lock. A sealing pass, in one transaction:

1. takes the chain's advisory lock with ``pg_try_advisory_xact_lock``: only sealers
   take it, so writers never wait; if another sealer holds it, the pass is skipped;
2. reads the oldest listed write batches, whole (about ``seal_batch_rows`` rows), with
   each row's digest (the canonical text of ``ledger_row_digest()``, byte for byte what
   :func:`consumer.ledger.verify.row_digest` recomputes, taken by the writer) and its
   UTC calendar month of ``received_at``; it reads markers only, never ledger rows;
3. appends one link per write batch and month, oldest batch first (a link never seals
   rows of two months, so a month's links and rows can be archived together); the
   batch's flush trigger (011) goes on its link;
4. deletes the markers of exactly the rows it sealed, and commits.

The service runs :func:`seal_loop` whenever it hosts the audit handler (every
``seal_interval_ms``; on stop, and at the end of ``run --burst``, it seals everything
listed before it exits); ``taskledger seal`` runs :func:`seal_all` once. ``taskledger
verify`` reports listed rows younger than ``seal_bound_s`` as pending, older ones as
``seal_overdue``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from consumer.core import metrics
from consumer.core.errors import TaskledgerError
from consumer.core.retry import Backoff, pause
from consumer.core.settings import Settings, redact_text
from consumer.ledger.verify import link_hash
from consumer.store.db import q, translate_errors

log = logging.getLogger(__name__)

#: How long :func:`seal_all` waits between tries while another sealer holds the lock.
_BUSY_WAIT_S = 0.05


@dataclass(frozen=True)
class Backlog:
    """Rows listed for sealing whose ledger row exists: how many, highest seq, oldest."""

    rows: int
    max_seq: int | None
    oldest: datetime | None


async def backlog(conn: asyncpg.Connection | asyncpg.Pool) -> Backlog:
    """What is waiting for the sealer now."""
    with translate_errors():
        row = await conn.fetchrow(q("seal_backlog"))
    assert row is not None
    return Backlog(rows=row["rows"], max_seq=row["max_seq"], oldest=row["oldest"])


def _links(
    records: list[asyncpg.Record], prev: bytes | None
) -> tuple[list[tuple[list[int], list[bytes], bytes | None, bytes, str | None]], list[int]]:
    """The links for ``records`` (in sealing order), chained from ``prev``; and the batches."""
    links: list[tuple[list[int], list[bytes], bytes | None, bytes, str | None]] = []
    batches: list[int] = []
    key: tuple[int, str] | None = None
    seqs: list[int] = []
    digests: list[bytes] = []
    trigger: str | None = None

    def close() -> None:
        nonlocal prev
        if seqs:
            digest = link_hash(prev, digests)
            links.append((list(seqs), list(digests), prev, digest, trigger))
            prev = digest

    for r in records:
        batches.append(r["batch"])
        if (r["batch"], r["month"]) != key:
            close()
            key, trigger = (r["batch"], r["month"]), r["trigger"]
            seqs.clear()
            digests.clear()
        seqs.append(r["seq"])
        digests.append(bytes(r["digest"]))
    close()
    return links, batches


async def seal_once(conn: asyncpg.Connection, limit: int) -> int | None:
    """One sealing pass on ``conn`` (its own transaction): rows sealed, None if another
    sealer holds the chain's lock. Raises :class:`DatabaseUnavailable` on outages."""
    started = time.perf_counter()
    with translate_errors():
        async with conn.transaction():
            if not await conn.fetchval(q("seal_try_lock")):
                return None
            records = await conn.fetch(q("seal_take"), limit)
            if not records:
                return 0
            head = await conn.fetchrow(q("chain_head"))
            links, batches = _links(records, bytes(head["hash"]) if head else None)
            await conn.executemany(q("seal_append_link"), links)
            await conn.execute(q("seal_forget"), batches, [r["seq"] for r in records])
    metrics.SEAL_SECONDS.observe(time.perf_counter() - started)
    metrics.SEALED_ROWS.inc(len(records))
    metrics.SEAL_LINKS.inc(len(links))
    return len(records)


async def seal_all(
    pool: asyncpg.Pool,
    settings: Settings,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Seal every row listed now (and what other sealers leave), until none at or below
    the highest seq listed at the start is left; returns the rows this call sealed.

    Waits while another sealer holds the lock (it makes progress meanwhile). Rows listed
    after the start may be sealed too. Raises :class:`DatabaseUnavailable` on outages.
    """
    start = await backlog(pool)
    if start.max_seq is None:
        return 0
    sealed = 0
    with translate_errors():
        async with pool.acquire() as conn:
            while True:
                n = await seal_once(conn, settings.seal_batch_rows)
                if n:
                    sealed += n
                    if progress is not None:
                        progress(n)
                    continue
                if not await conn.fetchval(q("seal_left_upto"), start.max_seq):
                    return sealed
                await asyncio.sleep(_BUSY_WAIT_S)  # another sealer holds the lock


async def seal_pending(pool: asyncpg.Pool, settings: Settings) -> int:
    """Seal passes until one finds less than a full pass (or the lock busy); rows sealed."""
    sealed = 0
    with translate_errors():
        async with pool.acquire() as conn:
            while True:
                n = await seal_once(conn, settings.seal_batch_rows)
                sealed += n or 0
                if n is None or n < settings.seal_batch_rows:
                    return sealed


async def seal_loop(
    pool: asyncpg.Pool, settings: Settings, until: asyncio.Event, budget_s: float
) -> None:
    """Seal every ``seal_interval_ms`` until ``until`` is set, then seal everything
    listed (for up to ``budget_s`` seconds) and return.

    Survives a database outage or any other database error (a timeout, a refused
    statement): logs a warning and tries again with back-off, so the service's other
    parts go on (a final seal that cannot finish is logged; the rows stay listed for the
    next sealer, and verify reports them as overdue past the bound).
    """
    interval = settings.seal_interval_ms / 1000
    backoff = Backoff(first=0.5, cap=max(settings.db_retry_max_backoff_s, interval))
    while not until.is_set():
        try:
            await seal_pending(pool, settings)
            backoff.reset()
            wait = interval
        except (TaskledgerError, asyncpg.PostgresError, OSError) as exc:
            log.warning("cannot seal the ledger now", extra={"action": "seal_failed",
                                                             "error": redact_text(str(exc))})  # fmt: skip
            wait = backoff.next()
        await pause(wait, until)
    try:
        sealed = await asyncio.wait_for(seal_all(pool, settings), budget_s)
    except (TaskledgerError, asyncpg.PostgresError, OSError, TimeoutError) as exc:
        log.warning("stopped before sealing every row; the next sealer will",
                    extra={"action": "seal_unfinished",
                           "error": redact_text(str(exc)) or "timeout"})  # fmt: skip
        return
    log.debug("final seal", extra={"action": "sealed", "rows": sealed})
