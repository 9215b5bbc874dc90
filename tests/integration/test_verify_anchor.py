"""Anchors: truncation and consistent rewrites are caught with `verify --expect-head`."""

from __future__ import annotations

import logging

import aio_pika
import asyncpg
import orjson
import pytest

from consumer.broker import Names
from consumer.core.settings import Settings
from consumer.ledger.anchors import chain_head
from consumer.ledger.verify import VerifyReport, link_hash
from tests.support.ledger import verify_db, without_triggers
from tests.support.processes import run_cli
from tests.support.traffic import burst, drain_queue, lifecycle, publish

pytestmark = pytest.mark.usefixtures("topology")


async def _verify(settings: Settings, head: str | None = None) -> VerifyReport:
    return await verify_db(settings, expect_head=bytes.fromhex(head) if head else None)


@pytest.fixture
async def links(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> list[str]:
    """Three tasks recorded in three batches; returns the link hashes, oldest first."""
    for _ in range(3):
        await publish(amqp, settings, lifecycle(steps=1))
        await burst(settings)
    return [
        bytes(r["hash"]).hex()
        for r in await pool.fetch("SELECT hash FROM ledger_chain ORDER BY link")
    ]


async def test_expect_head_accepts_the_head_and_its_ancestors(
    settings: Settings, links: list[str]
) -> None:
    assert (await _verify(settings, links[0])).ok  # the oldest ancestor
    missing = await _verify(settings, "ab" * 32)
    assert list(missing.counts) == ["anchor_missing"] and missing.exit_code == 1
    code, out, err = await run_cli(settings, "verify", "--expect-head", links[-1])
    assert code == 0, (out, err)
    assert "is a link of the chain" in out and "ledger intact" in out
    code, out, err = await run_cli(settings, "verify", "--expect-head", "not-hex")
    assert code == 2 and err.strip().count("\n") == 0 and "64 hex digits" in err


async def test_deleted_newest_link_and_rows_need_the_anchor(
    settings: Settings, pool: asyncpg.Pool, links: list[str]
) -> None:
    newest = await pool.fetchrow("SELECT link, seqs FROM ledger_chain ORDER BY link DESC LIMIT 1")
    await without_triggers(
        pool, "DELETE FROM event_ledger WHERE seq = ANY($1::bigint[])", newest["seqs"]
    )
    await without_triggers(pool, "DELETE FROM ledger_chain WHERE link = $1", newest["link"])
    # the ids' keys outlive their rows: caught without an anchor (019) ...
    gone = await _verify(settings)
    assert {f.kind for f in gone.findings} >= {"dangling_key"} and gone.exit_code == 1
    # ... unless the tamperer deletes them too
    await without_triggers(
        pool, "DELETE FROM ledger_event_ids WHERE seq = ANY($1::bigint[])", newest["seqs"]
    )
    await without_triggers(pool, "DELETE FROM execution_logs WHERE task_id NOT IN "
                     "(SELECT task_id FROM event_ledger WHERE task_id IS NOT NULL)")  # fmt: skip
    await without_triggers(pool, "DELETE FROM tasks WHERE task_id NOT IN "
                     "(SELECT task_id FROM event_ledger WHERE task_id IS NOT NULL)")  # fmt: skip
    assert (await _verify(settings)).ok  # without an anchor: not detectable
    report = await _verify(settings, links[-1])
    assert list(report.counts) == ["anchor_missing"] and report.exit_code == 1
    assert (await _verify(settings, links[-2])).ok  # an older anchor still holds


async def test_rewrite_with_recomputed_chain_needs_the_anchor(
    settings: Settings, pool: asyncpg.Pool, links: list[str]
) -> None:
    """A superuser rewrites a row no projection reads, then recomputes every link."""
    seq = await pool.fetchval("SELECT min(seq) FROM event_ledger")
    await without_triggers(
        pool, "UPDATE event_ledger SET source = 'agents/mallory' WHERE seq = $1", seq
    )
    prev: bytes | None = None
    for link in await pool.fetch("SELECT link, seqs FROM ledger_chain ORDER BY link"):
        digests = [
            bytes(r["d"])
            for r in await pool.fetch(
                "SELECT ledger_row_digest(l) AS d FROM unnest($1::bigint[]) WITH ORDINALITY AS u(s, n)"
                " JOIN event_ledger AS l ON l.seq = u.s ORDER BY u.n",
                link["seqs"],
            )
        ]
        new = link_hash(prev, digests)
        await without_triggers(
            pool,
            "UPDATE ledger_chain SET row_digests = $2, prev_hash = $3, hash = $4 WHERE link = $1",
            link["link"], digests, prev, new,
        )  # fmt: skip
        prev = new
    assert (await _verify(settings)).ok  # consistent: the chain alone cannot tell
    report = await _verify(settings, links[-1])
    assert list(report.counts) == ["anchor_missing"]
    code, out, _ = await run_cli(settings, "verify", "--expect-head", links[-1])
    assert code == 1 and "is not a link of the current chain" in out


async def test_service_logs_the_chain_head(
    amqp: aio_pika.abc.AbstractConnection,
    settings: Settings,
    pool: asyncpg.Pool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await publish(amqp, settings, lifecycle(steps=1))
    with caplog.at_level(logging.INFO, logger="consumer.ledger.anchors"):
        await burst(settings.model_copy(update={"anchor_interval_s": 0.2}))
    heads = [r for r in caplog.records if getattr(r, "action", None) == "chain_head"]
    assert heads, "no action=chain_head line"
    head = await chain_head(pool)
    assert head is not None
    last = heads[-1]
    assert (last.hash, last.link, last.seq) == (head.hash, head.link, head.seq)  # type: ignore[attr-defined]
    code, out, _ = await run_cli(settings, "verify", "--expect-head", last.hash)  # type: ignore[attr-defined]
    assert code == 0, out


async def test_service_publishes_the_chain_head_to_the_anchors_queue(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    await publish(amqp, settings, lifecycle(steps=1))
    await burst(settings.model_copy(update={"anchor_interval_s": 0.2, "anchor_publish": True}))
    messages = await drain_queue(amqp, Names(settings.prefix).anchors)
    assert messages and all(m.type == "taskledger.chain_head" for m in messages)
    head = await chain_head(pool)
    assert head is not None
    assert orjson.loads(messages[-1].body) == {
        "link": head.link,
        "hash": head.hash,
        "seq": head.seq,
    }
