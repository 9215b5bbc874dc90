"""``taskledger archive``: export old months of the ledger, verify the export, detach them.

For each month partition ``event_ledger_pYYYYMM`` (013) before ``--before`` that is
still attached, oldest first:

1. **plan**: refuse the month if it is the current one or later, if the sealer has not
   sealed all its rows yet (``ledger_unsealed``) or some are sealed by no link, if rows
   of the month sit in the default partition, or (unless ``allow_open``) if some of its
   tasks are not finished (their projection could no longer follow their events);
2. **export** in one repeatable-read snapshot: the month's chain links with the rows
   they seal (grouped by link, in chain order), the ``tasks`` rows of its tasks and the
   month's ``execution_logs`` partition, to ``ledger-YYYY-MM.jsonl.gz`` (written under a
   temporary name, fsynced, renamed) and ``ledger-YYYY-MM.jsonl.gz.sha256``;
3. **verify**: re-read the file (:func:`consumer.ledger.archived.check_export`) and
   compare it with the database: every row digest, every link hash, the same links,
   the same row count;
4. **detach**, in ONE transaction: detach the month's partitions of ``event_ledger`` and
   ``execution_logs``, move them to the schema ``ledger_archive``, check the detached
   rows are exactly the exported ones, record ``ledger_archives`` (with the boundary
   links), ``ledger_archived_tasks`` and the ``operator_actions`` row.

A crash before step 4 commits leaves the month attached and unrecorded (the next run
exports it again, overwriting the file); after, the month is archived. ``tasks`` rows
are kept (exported, not deleted: the table is not partitioned).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg

from consumer.core.errors import ConfigurationError
from consumer.ledger.archived import ARCHIVE_SCHEMA, load_archived
from consumer.operations.actions import record_action
from consumer.operations.archive_export import (
    ArchiveRefused,
    MonthPlan,
    export_month,
    verify_written,
)
from consumer.store.db import q, quote_ident, translate_errors

__all__ = ["ArchiveRefused", "ArchiveRun", "Archived", "MonthPlan", "archive", "check_owner",
           "parse_month", "plan"]  # fmt: skip

_PARTITION = re.compile(r"^(?P<table>event_ledger|execution_logs)_p(?P<y>\d{4})(?P<m>\d{2})$")
#: How long the detach waits for writers' locks before giving up (it is retried by hand).
LOCK_TIMEOUT = "10s"


def parse_month(text: str) -> date:
    """``YYYY-MM`` as the first day of that month; raises ValueError otherwise."""
    match = re.fullmatch(r"(\d{4})-(\d{2})", text.strip())
    if not match or not 1 <= int(match[2]) <= 12:
        raise ValueError(f"expected a month as YYYY-MM, got {text!r}")
    return date(int(match[1]), int(match[2]), 1)


def _next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def _bound(month: date) -> datetime:
    return datetime(month.year, month.month, 1, tzinfo=UTC)


#: How long after a month ends it may still receive rows: ``received_at`` is the start of
#: the writer's transaction, so one that began before midnight UTC writes into the month
#: after it ended (into the default partition once the month is detached).
GRACE = timedelta(hours=1)


@dataclass
class Archived:
    """One month archived: where its file is and what it holds."""

    month: str
    path: Path
    sha256: str
    rows: int
    links: int
    tasks: int
    steps: int
    first_seq: int | None
    last_seq: int | None
    partitions: list[str]
    action_id: int


async def check_owner(conn: asyncpg.Connection) -> None:
    """Raise :class:`ConfigurationError` unless this role may detach ledger partitions."""
    with translate_errors():
        row = await conn.fetchrow(q("archive_owns_ledger"))
    if row is None:
        raise ConfigurationError("there is no event_ledger: run taskledger migrate first")
    if not row["partitioned"]:
        raise ConfigurationError(
            "event_ledger is not partitioned (migration 013): run taskledger migrate first"
        )
    if not row["owner"]:
        user = await conn.fetchval("SELECT current_user")
        raise ConfigurationError(
            f"role {user} cannot detach partitions of event_ledger (it does not own it): "
            "run archive with the owner role (TASKLEDGER_MIGRATION_DATABASE_URL)"
        )


async def _partitions(conn: asyncpg.Connection, parent: str) -> dict[date, str]:
    found: dict[date, str] = {}
    for row in await conn.fetch(q("archive_partitions"), parent):
        match = _PARTITION.match(row["name"])
        if match and match["table"] == parent:
            month = date(int(match["y"]), int(match["m"]), 1)
            found[month] = f"{quote_ident(row['schema'])}.{quote_ident(row['name'])}"
    return found


async def _default_partition(conn: asyncpg.Connection, parent: str, key: str) -> str:
    for row in await conn.fetch(q("archive_partitions"), parent):
        if row["bound"] == "DEFAULT":
            return f"{quote_ident(row['schema'])}.{quote_ident(row['name'])}"
    return f"(SELECT NULL::timestamptz AS {key} WHERE false)"


async def plan(
    conn: asyncpg.Connection,
    before: date,
    *,
    now: datetime | None = None,
    allow_open: bool = False,
) -> list[MonthPlan]:
    """The attached months before ``before``, oldest first, each with its refusal (if any):
    a month is refused until :data:`GRACE` after its end, and while rows of it are in a
    default partition, pending for the sealer, unsealed, or of unfinished tasks.

    Raises :class:`ArchiveRefused` when ``before`` is after the current month.
    """
    now = now or datetime.now(UTC)
    current = now.date().replace(day=1)
    if before > current:
        raise ArchiveRefused(
            f"--before {before:%Y-%m} would include the current month {current:%Y-%m}, "
            "which is still being written"
        )
    ledger = await _partitions(conn, "event_ledger")
    steps = await _partitions(conn, "execution_logs")
    default = await _default_partition(conn, "event_ledger", "received_at")
    steps_default = await _default_partition(conn, "execution_logs", "recorded_at")
    plans: list[MonthPlan] = []
    for month in sorted(m for m in ledger if m < before):
        p = MonthPlan(month, ledger[month], steps.get(month))
        statement = q("archive_month_facts").format(
            ledger=p.ledger, default=default, steps_default=steps_default
        )
        facts = await conn.fetchrow(statement, _bound(month), _bound(_next_month(month)))
        assert facts is not None
        p.rows, p.first_seq, p.last_seq = facts["rows"], facts["first_seq"], facts["last_seq"]
        p.pending, p.open_tasks = facts["pending"], facts["open_tasks"]
        if p.rows:
            statement = q("archive_month_links").format(ledger=p.ledger)
            p.links = [dict(r) for r in await conn.fetch(statement, p.first_seq, p.last_seq)]
        sealed = sum(link["size"] for link in p.links)
        if now - _bound(_next_month(month)) < GRACE:
            p.refusal = (
                f"the month ended less than {GRACE.seconds // 3600} hour ago: a transaction "
                "begun before its end may still write into it; archive it later"
            )
        elif facts["in_default"] or facts["steps_in_default"]:
            p.refusal = (
                f"{facts['in_default']} ledger rows and {facts['steps_in_default']} steps of the "
                "month are in a default partition (create_ledger_partition moves them out)"
            )
        elif p.pending:
            p.refusal = f"{p.pending} rows are not sealed yet (the sealer has them pending)"
        elif sealed != p.rows:
            p.refusal = (
                f"{p.rows - sealed} rows are sealed by no link (unsealed): run taskledger verify"
            )
        elif p.open_tasks and not allow_open:
            p.refusal = (
                f"{p.open_tasks} of its tasks are not finished (their later events could no "
                "longer be projected); archive later, or pass --allow-open"
            )
        plans.append(p)
    return plans


def _boundaries(p: MonthPlan, archived_links: set[int]) -> list[tuple[int, bytes]]:
    """Links of this month whose successor is neither of this month nor archived before."""
    ours = {link["link"] for link in p.links}
    return [
        (link["link"], bytes(link["hash"]))
        for link in p.links
        if link["succ_link"] is None
        or (link["succ_link"] not in ours and link["succ_link"] not in archived_links)
    ]


async def _detach(conn: asyncpg.Connection, parent: str, partition: str) -> str:
    await conn.execute(q("archive_detach").format(parent=parent, partition=partition))
    await conn.execute(q("archive_move").format(table=partition))
    name = partition.rsplit(".", 1)[-1].replace('"', "")  # a plain name (matched _PARTITION)
    return f"{ARCHIVE_SCHEMA}.{name}"


async def detach_month(
    conn: asyncpg.Connection,
    p: MonthPlan,
    path: Path,
    sha256: str,
    counts: dict[str, int],
    boundaries: list[tuple[int, bytes]],
    actor: str,
) -> Archived:
    """Detach the month and record it, in one transaction; raises :class:`ArchiveRefused`
    (nothing changed) if the month no longer holds exactly what was exported."""
    async with conn.transaction():
        await conn.fetchval(q("archive_lock_timeout"), LOCK_TIMEOUT)
        ledger = await _detach(conn, "event_ledger", p.ledger)
        moved = [ledger]
        if p.steps is not None:
            moved.append(await _detach(conn, "execution_logs", p.steps))
            steps = await conn.fetchval(q("archive_count_rows").format(table=moved[1]))
            if steps != counts["steps"]:
                raise ArchiveRefused(f"{p.label}: steps were added since the export: run again")
        now = await conn.fetchrow(q("archive_count_detached").format(table=ledger))
        assert now is not None
        if now["rows"] != p.rows or now["last_seq"] != p.last_seq:
            raise ArchiveRefused(f"{p.label}: rows were added since the export: run again")
        await conn.execute(q("archive_record_tasks").format(table=ledger), p.month)
        await conn.execute(
            q("archive_record_month"), p.month, path.name, sha256, p.rows, counts["steps"],
            counts["tasks"], p.first_seq, p.last_seq, [link["link"] for link in p.links],
            [n for n, _ in boundaries], [h for _, h in boundaries], moved, actor,
        )  # fmt: skip
        result = {"file": str(path), "sha256": sha256, **counts,
                  "first_seq": p.first_seq, "last_seq": p.last_seq, "partitions": moved}  # fmt: skip
        action_id = await record_action(
            conn, "ledger.archive", actor, {"month": p.label, "output": str(path.parent)}, result
        )
    return Archived(p.label, path, sha256, p.rows, len(p.links), counts["tasks"],
                    counts["steps"], p.first_seq, p.last_seq, moved, action_id)  # fmt: skip


@dataclass
class ArchiveRun:
    """What one ``archive`` run planned and did; ``refused``: the month it stopped at."""

    plans: list[MonthPlan]
    done: list[Archived]
    refused: MonthPlan | None


async def archive(
    conn: asyncpg.Connection,
    before: date,
    directory: Path,
    actor: str,
    *,
    allow_open: bool = False,
    dry_run: bool = False,
    on_plan: Callable[[list[MonthPlan]], Callable[[MonthPlan], Callable[[int], None]]]
    | None = None,
) -> ArchiveRun:
    """Archive every month before ``before`` that may be, oldest first; stop at the first
    month refused (it is returned as ``refused``; the months before it are archived).

    Every export is written from one repeatable-read snapshot, verified, then its month
    detached in a transaction of its own. ``on_plan`` receives the plan and returns the
    progress callback of each month. Raises :class:`ConfigurationError` when the role
    cannot detach, :class:`ArchiveRefused` when an export does not verify or the month
    changed under it (nothing of that month changed then).
    """
    await check_owner(conn)
    done: list[Archived] = []
    exports = []
    with translate_errors():
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            plans = await plan(conn, before, allow_open=allow_open)
            refused = next((p for p in plans if p.refusal is not None), None)
            if dry_run:
                return ArchiveRun(plans, [], refused)
            progress_for = on_plan(plans) if on_plan is not None else (lambda p: lambda n: None)
            archived = await load_archived(conn)
            for p in plans:
                if p.refusal is not None:
                    break
                bounds = _boundaries(p, archived.links)
                path, counts = await export_month(conn, p, directory, bounds, progress_for(p))
                exports.append((p, path, counts, bounds))
                archived.links.update(link["link"] for link in p.links)
        for p, path, counts, bounds in exports:
            sha256 = verify_written(p, path, counts)
            done.append(await detach_month(conn, p, path, sha256, counts, bounds, actor))
    return ArchiveRun(plans, done, refused)
