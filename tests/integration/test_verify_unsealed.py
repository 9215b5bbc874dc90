"""Rows written with TASKLEDGER_LEDGER_CHAIN=false are an unsealed range, not tampering."""

from __future__ import annotations

import aio_pika
import asyncpg
import pytest

from consumer.core.settings import Settings
from tests.support.ledger import verify_db, without_triggers
from tests.support.processes import run_cli
from tests.support.traffic import burst, lifecycle, publish

pytestmark = pytest.mark.usefixtures("topology")


async def _record(amqp: aio_pika.abc.AbstractConnection, settings: Settings, tasks: int) -> None:
    await publish(amqp, settings, [m for _ in range(tasks) for m in lifecycle(steps=2)])
    await burst(settings)


@pytest.fixture
async def unsealed(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> list[int]:
    """Sealed, then 10 tasks without the chain, then sealed again; the unsealed seqs."""
    await _record(amqp, settings, 1)
    before = await pool.fetchval("SELECT max(seq) FROM event_ledger")
    await _record(amqp, settings.model_copy(update={"ledger_chain": False}), 10)
    after = await pool.fetchval("SELECT max(seq) FROM event_ledger")
    await _record(amqp, settings, 1)
    return [r["seq"] for r in await pool.fetch(
        "SELECT seq FROM event_ledger WHERE seq > $1 AND seq <= $2 ORDER BY seq", before, after
    )]  # fmt: skip


async def test_unsealed_rows_are_one_range_and_exit_5(
    settings: Settings, unsealed: list[int]
) -> None:
    assert len(unsealed) == 60
    report = await verify_db(settings)
    assert [(f.kind, f.first_seq, f.last_seq, f.count) for f in report.findings] == [
        ("unsealed", unsealed[0], unsealed[-1], 60)
    ]
    assert not report.tampered and report.exit_code == 5 and report.tasks_checked == 12
    code, out, err = await run_cli(settings, "verify")
    assert code == 5, (out, err)
    assert f"rows {unsealed[0]}..{unsealed[-1]} (60) are not sealed" in out
    assert "warning:" in out and "inserted:" not in out and "first discrepancy" not in out


async def test_unsealed_with_a_real_change_is_tampering(
    settings: Settings, pool: asyncpg.Pool, unsealed: list[int]
) -> None:
    await without_triggers(pool, "UPDATE event_ledger SET source = 'x' WHERE seq = 1")
    report = await verify_db(settings)
    assert set(report.counts) == {"unsealed", "altered"} and report.exit_code == 1
    assert report.first is not None and report.first.kind == "altered"
