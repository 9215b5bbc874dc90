"""`taskledger archive`: export a month, verify the export, detach it; verify afterwards.

The ledger is seeded over three past months (rows inserted by the owner with a chosen
``received_at``, projected by the audit handler, sealed by the real sealer), with the
write batches of the oldest two months interleaved, so their links interleave too.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest

from consumer.audit.handler import AuditHandler
from consumer.core.errors import ConfigurationError
from consumer.core.settings import Settings
from consumer.ledger.archived import check_export, digest_path
from consumer.ledger.sealer import seal_all
from consumer.operations.archive import ArchiveRefused, archive, plan
from contracts import Event, decode
from tests.support.ledger import verify_db, without_triggers
from tests.support.processes import run_cli
from tests.support.traffic import lifecycle

#: Insert events as the service would, but received at a chosen instant, listed for the sealer.
INSERT = """
WITH e AS (
    SELECT nextval('event_ledger_seq_seq') AS seq, e.*
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::timestamptz[], $6::text[])
         WITH ORDINALITY AS e(event_id, event_type, source, task_id, event_time, body, n)
    ORDER BY e.n
), ids AS (
    INSERT INTO ledger_event_ids (event_id, seq, received_at) SELECT event_id, seq, $7 FROM e
), ins AS (
    INSERT INTO event_ledger (seq, event_id, event_type, source, task_id, event_time,
                              received_at, schema_version, envelope)
    SELECT seq, event_id, event_type, source, task_id, event_time, $7, 1, body::jsonb FROM e
    RETURNING seq, received_at, sha256(convert_to(
        seq::text || '|' || event_id::text || '|' || event_type || '|' || source
        || '|' || coalesce(task_id::text, '')
        || '|' || to_char(event_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')
        || '|' || to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')
        || '|' || schema_version::text || '|' || envelope::text
        || '|' || coalesce(conflict_with::text, ''), 'UTF8')) AS digest
)
INSERT INTO ledger_unsealed (batch, seq, received_at, digest, trigger)
SELECT min(seq) OVER (), seq, received_at, digest, 'count' FROM ins
"""


def month_start(months_back: int) -> date:
    """The first day of the month ``months_back`` before the current one (UTC)."""
    today = datetime.now(UTC).date().replace(day=1)
    total = today.year * 12 + today.month - 1 - months_back
    return date(total // 12, total % 12 + 1, 1)


@dataclass
class Seeded:
    """Three past months of ledger, oldest first."""

    months: list[date]
    seqs: dict[date, list[int]]


async def record(conn: asyncpg.Connection, events: Sequence[Event], at: datetime) -> None:
    """Record and project ``events`` as received at ``at`` (one write batch)."""
    async with conn.transaction():
        await conn.execute(
            INSERT, [e.id for e in events], [e.type.value for e in events],
            [e.source for e in events], [e.task_id for e in events], [e.time for e in events],
            [e.body.decode() for e in events], at,
        )  # fmt: skip
        await AuditHandler().apply(conn, events)


def events_of(start: datetime, steps: int = 2) -> list[Event]:
    """One finished task's events."""
    return [decode(body, key) for key, body in lifecycle(steps=steps, start=start)]


@pytest.fixture
async def seeded(pool: asyncpg.Pool, settings: Settings) -> Seeded:
    """Tasks in three past months; batches of the oldest two interleave; all sealed."""
    months = [month_start(3), month_start(2), month_start(1)]
    async with pool.acquire() as conn:
        for m in months:
            for parent in ("event_ledger", "execution_logs"):
                await conn.execute("SELECT create_ledger_partition($1, $2)", parent, m)
        at = [datetime(m.year, m.month, 10, 12, tzinfo=UTC) for m in months]
        order = [(0, at[0]), (1, at[1]), (0, at[0] + timedelta(days=5)), (2, at[2])]
        for n, (_, when) in enumerate(order):
            await record(conn, events_of(when - timedelta(hours=1 + n)), when)
            await seal_all(pool, settings)  # one link per batch, in batch order
    seqs: dict[date, list[int]] = {}
    for m in months:
        rows = await pool.fetch(
            "SELECT seq FROM event_ledger WHERE received_at >= $1 AND received_at < $2 "
            "ORDER BY seq", datetime(m.year, m.month, 1, tzinfo=UTC),
            datetime(m.year, m.month, 1, tzinfo=UTC) + timedelta(days=32),
        )  # fmt: skip
        seqs[m] = [r["seq"] for r in rows if r["seq"]]
    return Seeded(months, seqs)


def label(m: date) -> str:
    return m.strftime("%Y-%m")


async def test_archive_month_then_verify(
    pool: asyncpg.Pool, settings: Settings, seeded: Seeded, tmp_path: Path
) -> None:
    oldest, second = seeded.months[0], seeded.months[1]
    # a pause of all agents names its event and no task: archived with its month, it is
    # not an orphan (verify finds the event's key in an archived month)
    await pool.execute(
        "INSERT INTO pause_history (task_id, action, reason, event_id) "
        "SELECT NULL, 'held', 'control.pause scope all', event_id FROM event_ledger "
        "WHERE seq = $1", seeded.seqs[oldest][0],
    )  # fmt: skip
    assert (await verify_db(settings)).ok
    async with pool.acquire() as conn:
        nothing = await archive(conn, oldest, tmp_path / "a", "tester", dry_run=True)
    assert nothing.plans == [] and nothing.done == []
    code, out, err = await run_cli(
        settings, "archive", "--before", label(second), "--output", str(tmp_path / "a"), "--dry-run"
    )
    assert code == 0 and "would archive" in out and label(oldest) in out, (out, err)
    assert not (tmp_path / "a").exists()
    assert await pool.fetchval("SELECT count(*) FROM ledger_archives") == 0

    code, out, err = await run_cli(
        settings, "archive", "--before", label(second), "--output", str(tmp_path / "a")
    )
    assert code == 0, (out, err)
    path = tmp_path / "a" / f"ledger-{label(oldest)}.jsonl.gz"
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest_path(path).read_text().split() == [sha, path.name]
    check = check_export(path)
    assert check.ok, check.problems
    assert check.events == len(seeded.seqs[oldest]) == 12 and check.tasks == 2 and check.steps == 4

    # detached, moved out of public, recorded, and the action too
    parts = {r[0] for r in await pool.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent IN ('event_ledger'::regclass, 'execution_logs'::regclass)")}  # fmt: skip
    suffix = oldest.strftime("%Y%m")
    assert f"event_ledger_p{suffix}" not in parts and f"execution_logs_p{suffix}" not in parts
    assert await pool.fetchval(f"SELECT count(*) FROM ledger_archive.event_ledger_p{suffix}") == 12
    row = await pool.fetchrow("SELECT * FROM ledger_archives")
    assert row["month"] == oldest and row["sha256"] == sha and row["row_count"] == 12
    assert (row["first_seq"], row["last_seq"]) == (seeded.seqs[oldest][0], seeded.seqs[oldest][-1])
    assert len(row["link_ids"]) == 2 and row["boundary_links"] == row["link_ids"]  # interleaved
    action = await pool.fetchrow("SELECT * FROM operator_actions WHERE action = 'ledger.archive'")
    assert action["params"]["month"] == label(oldest) and action["result"]["sha256"] == sha
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 4  # projections kept
    assert await pool.fetchval("SELECT count(*) FROM ledger_event_ids") == 24  # dedup stays

    report = await verify_db(settings)
    assert report.ok, report.findings
    assert report.archived_months == [label(oldest)] and report.rows == 12
    code, out, _ = await run_cli(settings, "verify")
    assert code == 0 and label(oldest) in out and "ledger intact" in out
    code, out, _ = await run_cli(settings, "archive", "verify", str(path))
    assert code == 0 and "export intact" in out

    # idempotent: a second run finds nothing more before that month
    async with pool.acquire() as conn:
        again = await archive(conn, second, tmp_path / "b", "tester")
    assert again.plans == [] and again.done == [] and not (tmp_path / "b").exists()
    assert await pool.fetchval("SELECT count(*) FROM ledger_archives") == 1


async def test_verify_after_archive_catches_tampering(
    pool: asyncpg.Pool, settings: Settings, seeded: Seeded, tmp_path: Path
) -> None:
    oldest, second = seeded.months[0], seeded.months[1]
    async with pool.acquire() as conn:
        run = await archive(conn, second, tmp_path, "tester")
    assert [a.month for a in run.done] == [label(oldest)] and run.refused is None
    archived = set(await pool.fetchval("SELECT link_ids FROM ledger_archives"))
    # pruning the archived links from the chain loses nothing: the boundaries stand in
    await without_triggers(
        pool, "DELETE FROM ledger_chain WHERE link = ANY($1::bigint[])", list(archived)
    )
    assert (await verify_db(settings)).ok
    # a remaining link re-chained (its own hash recomputed) is caught by the boundary hash
    victim = min(r["link"] for r in await pool.fetch("SELECT link FROM ledger_chain"))
    await without_triggers(
        pool,
        "UPDATE ledger_chain SET prev_hash = sha256('forged'), hash = sha256(sha256('forged') || "
        "(SELECT string_agg(d, ''::bytea ORDER BY i) FROM unnest(row_digests) "
        "WITH ORDINALITY AS u(d, i))) WHERE link = $1",
        victim,
    )
    report = await verify_db(settings)
    assert {f.kind for f in report.findings} >= {"link_broken"}
    assert report.exit_code == 1
    # and a remaining row altered is caught as before
    target = seeded.seqs[second][0]
    await without_triggers(
        pool, "UPDATE event_ledger SET source = 'mallory' WHERE seq = $1", target
    )
    report = await verify_db(settings)
    assert ("altered", target) in {(f.kind, f.seq) for f in report.findings}


def _rewrite(path: Path, change: dict[str, str], *, digest: bool) -> None:
    records = [orjson.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    first = next(r for r in records if r["kind"] == "event")
    first.update(change)
    path.write_bytes(gzip.compress(b"\n".join(orjson.dumps(r) for r in records) + b"\n"))
    if digest:
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        digest_path(path).write_text(f"{sha}  {path.name}\n")


async def test_tampered_export_is_caught(
    pool: asyncpg.Pool, settings: Settings, seeded: Seeded, tmp_path: Path
) -> None:
    async with pool.acquire() as conn:
        run = await archive(conn, seeded.months[1], tmp_path, "tester")
    path = run.done[0].path
    _rewrite(path, {"source": "agents/mallory"}, digest=False)
    code, out, _ = await run_cli(settings, "archive", "verify", str(path))
    assert code == 1 and "SHA-256" in out
    _rewrite(path, {"source": "agents/mallory"}, digest=True)  # digest recomputed: the chain says
    code, out, _ = await run_cli(settings, "archive", "verify", str(path))
    assert code == 1 and f"row {seeded.seqs[seeded.months[0]][0]} differs" in out
    code, _, err = await run_cli(settings, "archive", "verify", str(tmp_path / "none.jsonl.gz"))
    assert code == 4 and "no such file" in err


async def test_refusals_change_nothing(
    pool: asyncpg.Pool, settings: Settings, seeded: Seeded, tmp_path: Path
) -> None:
    oldest, second = seeded.months[0], seeded.months[1]
    # the app role cannot detach: refused before anything is written (exit 3)
    as_app = f"{settings.dsn}?options=-c%20role%3Dtaskledger_app"
    code, _, err = await run_cli(
        settings, "archive", "--before", label(second), "--output", str(tmp_path),
        TASKLEDGER_MIGRATION_DATABASE_URL=as_app,
    )  # fmt: skip
    assert code == 3 and "owner role" in err and "Traceback" not in err
    async with pool.acquire() as conn:
        await conn.execute("SET ROLE taskledger_app")
        with pytest.raises(ConfigurationError, match="does not own"):
            await archive(conn, second, tmp_path, "tester")
        await conn.execute("RESET ROLE")
    # the current month (and later) is refused
    this_month = month_start(0)
    nxt = date(this_month.year + this_month.month // 12, this_month.month % 12 + 1, 1)
    code, _, err = await run_cli(
        settings, "archive", "--before", label(nxt), "--output", str(tmp_path)
    )
    assert code == 1 and "current month" in err
    # rows the sealer has not sealed yet: the month is refused
    async with pool.acquire() as conn:
        when = datetime(oldest.year, oldest.month, 20, tzinfo=UTC)
        await record(conn, events_of(when), when)
        run = await archive(conn, second, tmp_path, "tester")
    assert (
        run.done == [] and run.refused is not None and "not sealed yet" in str(run.refused.refusal)
    )
    # a task not finished: refused unless --allow-open
    await seal_all(pool, settings)
    async with pool.acquire() as conn:
        when = datetime(oldest.year, oldest.month, 21, tzinfo=UTC)
        await record(conn, events_of(when)[:3], when)  # requested, approved, started
        await seal_all(pool, settings)
        run = await archive(conn, second, tmp_path, "tester")
        assert run.refused is not None and "not finished" in str(run.refused.refusal)
    assert os.listdir(tmp_path) == []
    assert await pool.fetchval("SELECT count(*) FROM ledger_archives") == 0
    assert (
        await pool.fetchval("SELECT count(*) FROM operator_actions WHERE action = 'ledger.archive'")
        == 0
    )
    with pytest.raises(ArchiveRefused):
        async with pool.acquire() as conn:
            await archive(conn, nxt, tmp_path, "tester")


async def test_a_month_is_refused_until_an_hour_after_its_end(
    pool: asyncpg.Pool, seeded: Seeded
) -> None:
    oldest, end = seeded.months[0], datetime.combine(seeded.months[1], time(), UTC)
    async with pool.acquire() as conn:
        early = await plan(conn, seeded.months[1], now=end + timedelta(minutes=10))
        later = await plan(conn, seeded.months[1], now=end + timedelta(hours=2))
    assert [p.month for p in early] == [oldest] == [p.month for p in later]
    assert early[0].refusal is not None and "ended less than" in early[0].refusal
    assert later[0].refusal is None
