"""`verify` never crashes and keeps memory bounded, whatever the ledger holds.

Odd rows are written as a superuser with triggers off (what a tamperer or a broken
restore could leave): edge timestamps, a multi-megabyte body, bodies the fold cannot
read, links with NULL digests. Each gives findings, never a traceback.
"""

from __future__ import annotations

import uuid

import aio_pika
import asyncpg
import pytest

from consumer.core.settings import Settings
from consumer.ledger import verify as verify_module
from tests.support.ledger import verify_db, without_triggers
from tests.support.processes import run_cli
from tests.support.traffic import burst, lifecycle, publish

pytestmark = pytest.mark.usefixtures("topology")

INSERT = (
    "INSERT INTO event_ledger (event_id, event_type, source, task_id, event_time, received_at,"
    " schema_version, envelope) VALUES ($1, $2, 'agents/x', $3, $4::text::timestamptz,"
    " $5::text::timestamptz, 1, $6::text::jsonb)"
)


@pytest.fixture
async def task(amqp: aio_pika.abc.AbstractConnection, settings: Settings) -> uuid.UUID:
    """One completed task recorded by the consumer."""
    task_id = uuid.uuid4()
    await publish(amqp, settings, lifecycle(task_id, steps=1))
    await burst(settings)
    return task_id


async def test_odd_rows_give_findings_not_tracebacks(
    settings: Settings, pool: asyncpg.Pool, task: uuid.UUID
) -> None:
    odd = [
        ("task.step", None, "infinity", "-infinity", '{"data": 1}'),
        ("task.step", None, "0099-01-01T00:00:00Z", "4713-01-01 00:00:00+00 BC", "[]"),
        ("task.approved", None, "294276-12-31T23:59:59Z", "2026-01-01T00:00:00Z", '"x"'),
        # a body of 4 MB
        ("dispatch.requested", None, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z",
         '{"data": "' + "é" * (2 << 20) + '"}'),
        # events of the recorded task the fold and the steps projection cannot read
        ("task.completed", task, "-infinity", "2026-01-01T00:00:00Z", '{"data": {"outcome": "no"}}'),
        ("task.approved", task, "2030-01-01T00:00:00Z", "2030-01-01T00:00:00Z",
         '{"data": {"approved_by": "x", "n": 1e400, "big": 123456789012345678901234567890}}'),
        ("task.started", task, "2030-01-01T00:00:00Z", "2030-01-01T00:00:00Z",
         '{"data": ' + "[" * 3000 + "]" * 3000 + "}"),
        ("task.step", task, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z",
         '{"data": {"step_number": "abc", "agent_type": "infra", "action": "a", "status": "completed"}}'),
    ]  # fmt: skip
    for event_type, task_id, when, received, body in odd:
        await without_triggers(
            pool, INSERT, uuid.uuid4(), event_type, task_id, when, received, body
        )
    await without_triggers(
        pool,
        "INSERT INTO ledger_chain (seqs, row_digests, prev_hash, hash) "
        "VALUES ('{1, NULL, 99999}', ARRAY[NULL, '\\x00'::bytea], NULL, '\\xdead')",
    )
    await without_triggers(
        pool,
        "INSERT INTO ledger_chain (seqs, row_digests, prev_hash, hash) "
        "VALUES ('{{2, 3}}', '{{\"\\\\x00\", \"\\\\x01\"}}', '\\xdead', '\\xbeef')",
    )
    report = await verify_db(settings)
    assert report.counts["link_malformed"] == 2, report.findings
    kinds = set(report.counts)
    assert {"unsealed", "link_malformed", "link_broken", "removed"} <= kinds, report.counts
    assert {"task_unprojectable", "steps_unprojectable"} <= kinds, [
        (f.kind, f.detail[:150]) for f in report.findings
    ]
    (unsealed,) = [f for f in report.findings if f.kind == "unsealed"]
    assert unsealed.count == len(odd), (unsealed, report.findings)
    code, out, err = await run_cli(settings, "verify")
    assert code == 1, (out, err)
    assert "Traceback" not in out + err and "first discrepancy" in out
    code, out, err = await run_cli(settings, "verify", "--json")
    assert code == 1 and '"exit_code": 1' in out, err


async def test_findings_are_bounded_per_kind(
    settings: Settings, pool: asyncpg.Pool, task: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every row altered: all are counted, only KEEP_PER_KIND are kept."""
    monkeypatch.setattr(verify_module, "KEEP_PER_KIND", 2)
    await without_triggers(pool, "UPDATE event_ledger SET source = 'agents/mallory'")
    report = await verify_db(settings)
    assert report.counts["altered"] == 5  # requested, approved, started, step, completed
    assert [f.kind for f in report.findings].count("altered") == 2
    assert report.exit_code == 1
