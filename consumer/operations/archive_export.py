"""The export of one archived month: written from the plan's snapshot, then verified.

``ledger-YYYY-MM.jsonl.gz`` (format: :mod:`consumer.ledger.archived`) is written under a
temporary name, fsynced and renamed, then ``ledger-YYYY-MM.jsonl.gz.sha256`` the same
way; :func:`verify_written` re-reads it and compares it with the month
(:mod:`consumer.operations.archive` runs the whole operation).
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from consumer.core.errors import TaskledgerError
from consumer.ledger.archived import FORMAT, check_export, digest_path, file_sha256
from consumer.store.db import q

_PREFETCH = 500


class ArchiveRefused(TaskledgerError):
    """A month cannot be archived as it stands (one line, exit 1)."""


@dataclass
class MonthPlan:
    """One month partition and whether it may be archived."""

    month: date
    ledger: str
    steps: str | None
    rows: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    pending: int = 0
    open_tasks: int = 0
    links: list[dict[str, Any]] = field(default_factory=list)
    refusal: str | None = None

    @property
    def label(self) -> str:
        """``YYYY-MM``."""
        return self.month.strftime("%Y-%m")

    @property
    def file_name(self) -> str:
        """The export's file name."""
        return f"ledger-{self.label}.jsonl.gz"


def _link_record(link: dict[str, Any], seqs: list[int], digests: list[bytes]) -> dict[str, Any]:
    prev = link["prev_hash"]
    return {
        "kind": "link", "link": link["link"], "seqs": seqs,
        "row_digests": [d.hex() for d in digests],
        "prev_hash": bytes(prev).hex() if prev is not None else None,
        "hash": bytes(link["hash"]).hex(), "pred_link": link["pred_link"],
        "created_at": link["created_at"].isoformat(), "trigger": link["trigger"],
    }  # fmt: skip


def _check_links(p: MonthPlan) -> None:
    for link in p.links:
        pred = bytes(link["pred_hash"]) if link["pred_hash"] is not None else None
        prev = bytes(link["prev_hash"]) if link["prev_hash"] is not None else None
        if pred != prev:
            raise ArchiveRefused(
                f"{p.label}: link {link['link']} does not follow its predecessor in the chain: "
                "run taskledger verify"
            )


async def _write_events(
    conn: asyncpg.Connection, p: MonthPlan, out: Any, progress: Callable[[int], None]
) -> int:
    by_link = {link["link"]: link for link in p.links}
    statement = q("archive_month_events").format(ledger=p.ledger)
    current: int | None = None
    seqs: list[int] = []
    digests: list[bytes] = []
    events = 0

    def close() -> None:
        if current is not None:
            out.write(orjson.dumps(_link_record(by_link[current], seqs, digests)) + b"\n")

    async for row in conn.cursor(statement, list(by_link), prefetch=_PREFETCH):
        if row["link"] != current:
            close()
            current, seqs, digests = row["link"], [], []
        if row["seq"] is None:
            raise ArchiveRefused(
                f"{p.label}: row {row['sealed_seq']}, sealed by link {row['link']}, is not in "
                "this month's partition (removed, or the link spans months): run taskledger verify"
            )
        event = {k: v for k, v in row.items() if k not in ("link", "sealed_seq", "digest")}
        out.write(orjson.dumps({"kind": "event", **event}) + b"\n")
        seqs.append(row["seq"])
        digests.append(bytes(row["digest"]))
        events += 1
        if events % 1000 == 0:
            progress(1000)
    close()
    progress(events % 1000)
    return events


async def _write_rows(
    conn: asyncpg.Connection, statement: str, kind: str, out: Any, progress: Callable[[int], None]
) -> int:
    n = 0
    async for row in conn.cursor(statement, prefetch=_PREFETCH):
        out.write(b'{"kind":"' + kind.encode() + b'","row":' + row["row"].encode() + b"}\n")
        n += 1
        if n % 1000 == 0:
            progress(1000)
    progress(n % 1000)
    return n


def _prepare(directory: Path, name: str) -> tuple[Path, Path]:
    """The export's path and its temporary name (the directory is created)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    return path, path.with_name(path.name + ".partial")


def _publish(partial: Path, path: Path) -> None:
    """Rename the written export into place, then write its digest file the same way."""
    os.replace(partial, path)
    digest = digest_path(path)
    digest_partial = digest.with_name(digest.name + ".partial")
    with digest_partial.open("w", encoding="utf-8") as f:
        f.write(f"{file_sha256(path)}  {path.name}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(digest_partial, digest)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def export_month(
    conn: asyncpg.Connection,
    p: MonthPlan,
    directory: Path,
    boundaries: list[tuple[int, bytes]],
    progress: Callable[[int], None],
) -> tuple[Path, dict[str, int]]:
    """Write the month's export and its digest file (atomically); returns the path and counts.

    Runs inside the caller's repeatable-read transaction (the plan's snapshot).
    """
    _check_links(p)
    path, partial = _prepare(directory, p.file_name)
    counts: dict[str, int] = {}
    with partial.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:
        header = {"kind": "archive", "format": FORMAT, "month": p.label,
                  "partitions": [p.ledger, p.steps], "written_at": datetime.now(UTC).isoformat()}  # fmt: skip
        out.write(orjson.dumps(header) + b"\n")
        counts["events"] = await _write_events(conn, p, out, progress)
        counts["links"] = len(p.links)
        tasks = q("archive_month_tasks").format(ledger=p.ledger)
        counts["tasks"] = await _write_rows(conn, tasks, "task", out, progress)
        counts["steps"] = 0
        if p.steps is not None:
            steps = q("archive_month_steps").format(steps=p.steps)
            counts["steps"] = await _write_rows(conn, steps, "step", out, progress)
        end = {"kind": "end", **counts, "first_seq": p.first_seq, "last_seq": p.last_seq,
               "boundary": [{"link": n, "hash": h.hex()} for n, h in boundaries]}  # fmt: skip
        out.write(orjson.dumps(end) + b"\n")
        out.flush()
        raw.flush()
        os.fsync(raw.fileno())
    if counts["events"] != p.rows:
        partial.unlink(missing_ok=True)
        raise ArchiveRefused(
            f"{p.label}: {p.rows - counts['events']} rows are sealed by no link of the month"
        )
    _publish(partial, path)
    return path, counts


def verify_written(p: MonthPlan, path: Path, counts: dict[str, int]) -> str:
    """Re-read the export and compare it with the month; returns its SHA-256."""
    check = check_export(path)
    if not check.ok:
        raise ArchiveRefused(f"{p.label}: the export does not verify: {check.problems[0]}")
    if check.link_ids != [link["link"] for link in p.links] or check.events != p.rows:
        raise ArchiveRefused(f"{p.label}: the export does not hold the month's links and rows")
    if check.month != p.label or check.tasks != counts["tasks"] or check.steps != counts["steps"]:
        raise ArchiveRefused(f"{p.label}: the export's header or projections differ")
    return check.sha256
