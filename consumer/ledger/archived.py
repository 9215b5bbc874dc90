"""Archived months: what `verify` skips, and the check of an export file against its chain.

``taskledger archive`` (:mod:`consumer.operations.archive`) writes each archived month to
a gzip JSONL file (format below) beside ``<file>.sha256``, then detaches the month and
records it in ``ledger_archives`` (migration 014) with the archived links and the
*boundary* links: archived links whose successor in the chain was not archived (links
of adjacent months interleave around a month's end). Here:

- :class:`ArchivedChain` tells :mod:`consumer.ledger.verify` which links were archived
  (their rows are gone on purpose: not ``removed``) and, before each remaining link, the
  hash its ``prev_hash`` must equal when archived links precede it: the recorded
  boundary hash, so a remaining link rewritten or cut off is still caught even if the
  archived links were pruned from ``ledger_chain``;
- :func:`check_export` re-reads an export file offline: its SHA-256 against the digest
  file, every row's digest recomputed (:func:`~consumer.ledger.verify.row_digest`) against
  the link that sealed it, every link's hash (:func:`~consumer.ledger.verify.link_hash`)
  and the chain between the file's links.

File format, one JSON object per line (``kind`` first): ``archive`` (header: format,
month, partitions), then for each link in chain order its ``event`` lines (the columns of
the row digest as verify renders them, in the link's order) followed by the ``link``
line (``link``, ``seqs``, ``row_digests`` and hashes in hex, ``pred_link``: its
predecessor in the chain), then ``task`` and ``step`` lines (the projections, as
stored), and an ``end`` line with the counts and the boundary links.
"""

from __future__ import annotations

import gzip
import hashlib
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from consumer.store.db import q

FORMAT = 1
#: Where detached months are kept (migration 014).
ARCHIVE_SCHEMA = "ledger_archive"
_CHUNK = 1 << 20


@dataclass
class ArchivedChain:
    """The archived links, and the boundary hashes that stand in for them."""

    months: list[str] = field(default_factory=list)
    rows: int = 0
    links: set[int] = field(default_factory=set)
    boundary_links: list[int] = field(default_factory=list)
    boundary_hashes: list[bytes] = field(default_factory=list)
    _next: int = 0

    def prev_before(self, link: int, prev: bytes | None) -> bytes | None:
        """The hash that must be ``link``'s ``prev_hash``: the recorded hash of the newest
        boundary link passed since the last call, else ``prev`` (links come in order)."""
        end = bisect_left(self.boundary_links, link, lo=self._next)
        if end > self._next:
            self._next = end
            return self.boundary_hashes[end - 1]
        return prev

    def recorded_hash(self, link: int) -> bytes | None:
        """The hash recorded for boundary link ``link`` (None if it is not one)."""
        at = bisect_left(self.boundary_links, link)
        if at < len(self.boundary_links) and self.boundary_links[at] == link:
            return self.boundary_hashes[at]
        return None

    def covers(self, link: int | None) -> bool:
        """True when ``link`` was archived (its rows left the ledger with its month)."""
        return link is not None and link in self.links


async def load_archived(conn: asyncpg.Connection) -> ArchivedChain:
    """The archived months of the database (none before migration 014)."""
    chain = ArchivedChain()
    if not await conn.fetchval(q("archived_table_exists")):
        return chain
    boundaries: list[tuple[int, bytes]] = []
    for row in await conn.fetch(q("archived_months")):
        chain.months.append(row["month"].strftime("%Y-%m"))
        chain.rows += int(row["row_count"])
        chain.links.update(row["link_ids"])
        boundaries += zip(row["boundary_links"], map(bytes, row["boundary_hashes"]), strict=True)
    boundaries.sort()
    chain.boundary_links = [link for link, _ in boundaries]
    chain.boundary_hashes = [h for _, h in boundaries]
    return chain


# ---------------------------------------------------------------- the export file


def digest_path(path: Path) -> Path:
    """The SHA-256 file beside an export (``sha256sum`` format)."""
    return path.with_name(path.name + ".sha256")


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def read_digest(path: Path) -> str | None:
    """The hex digest written in ``<path>.sha256``, or None if the file is missing."""
    try:
        text = digest_path(path).read_text(encoding="utf-8")
    except OSError:
        return None
    return (text.split() or [""])[0].lower()


def lines(path: Path) -> Iterator[dict[str, Any]]:
    """The records of an export file, one at a time."""
    with gzip.open(path, "rb") as f:
        for raw in f:
            if raw.strip():
                yield orjson.loads(raw)


def _hex(value: str | None) -> bytes | None:
    return None if value is None else bytes.fromhex(value)


@dataclass
class ExportCheck:
    """What re-reading an export file found."""

    path: Path
    sha256: str = ""
    month: str | None = None
    events: int = 0
    links: int = 0
    tasks: int = 0
    steps: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    link_ids: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    end: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when nothing was found."""
        return not self.problems

    def problem(self, text: str) -> None:
        """Note one problem (the first 100 are kept)."""
        if len(self.problems) < 100:
            self.problems.append(text)


@dataclass
class _Group:
    """The events read since the last link line."""

    seqs: list[int] = field(default_factory=list)
    digests: list[bytes] = field(default_factory=list)


def _check_link(
    rec: dict[str, Any], group: _Group, hashes: dict[int, bytes], c: ExportCheck
) -> None:
    from consumer.ledger.verify import link_hash

    number = int(rec["link"])
    seqs = [int(s) for s in rec["seqs"]]
    sealed = [bytes.fromhex(d) for d in rec["row_digests"]]
    prev, own = _hex(rec.get("prev_hash")), bytes.fromhex(rec["hash"])
    if seqs != group.seqs:
        c.problem(f"link {number}: its rows in the file are not the rows it seals")
    for seq, computed, recorded in zip(group.seqs, group.digests, sealed, strict=False):
        if computed != recorded:
            c.problem(f"row {seq} differs from what link {number} sealed")
    if link_hash(prev, sealed) != own:
        c.problem(f"link {number} does not recompute")
    pred = rec.get("pred_link")
    if pred is not None and int(pred) in hashes and hashes[int(pred)] != prev:
        c.problem(f"link {number} does not follow its predecessor {pred}")
    hashes[number] = own
    c.links += 1
    c.link_ids.append(number)


def _check_event(rec: dict[str, Any], group: _Group, c: ExportCheck) -> None:
    from consumer.ledger.verify import row_digest

    seq = int(rec["seq"])
    group.seqs.append(seq)
    group.digests.append(row_digest(rec))
    c.events += 1
    c.first_seq = seq if c.first_seq is None else min(c.first_seq, seq)
    c.last_seq = seq if c.last_seq is None else max(c.last_seq, seq)


def _read(path: Path, c: ExportCheck, progress: Callable[[int], None] | None) -> _Group:
    """Read every record into ``c``; returns the events left without their link."""
    group, hashes, pending = _Group(), dict[int, bytes](), 0
    for rec in lines(path):
        kind = rec.get("kind")
        if kind == "archive":
            c.month = rec.get("month")
        elif kind == "event":
            _check_event(rec, group, c)
        elif kind == "link":
            _check_link(rec, group, hashes, c)
            group = _Group()
        elif kind in ("task", "step"):
            c.tasks += kind == "task"
            c.steps += kind == "step"
        elif kind == "end":
            c.end = rec
        pending += 1
        if progress is not None and pending >= 1000:
            progress(pending)
            pending = 0
    if progress is not None and pending:
        progress(pending)
    return group


def check_export(path: Path, progress: Callable[[int], None] | None = None) -> ExportCheck:
    """Re-read an export file and check it against its digest file and its chain.

    ``progress`` is called with the number of records read since its last call. Never
    raises for a bad file: what is wrong is in :attr:`ExportCheck.problems`.
    """
    c = ExportCheck(path)
    try:
        c.sha256 = file_sha256(path)
    except OSError as exc:
        c.problem(f"cannot read {path}: {exc.strerror or exc}")
        return c
    recorded = read_digest(path)
    if recorded is None:
        c.problem(f"no digest file {digest_path(path).name}")
    elif recorded != c.sha256:
        c.problem(f"the file's SHA-256 {c.sha256} is not the recorded {recorded}")
    try:
        group = _read(path, c, progress)
    except (OSError, EOFError, ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
        c.problem(f"unreadable export ({type(exc).__name__}: {exc})")
        return c
    if group.seqs:
        c.problem(f"rows {group.seqs[0]}..{group.seqs[-1]} are not followed by their link")
    if not c.end:
        c.problem("the file has no end record (truncated)")
    else:
        counts = {"events": c.events, "links": c.links, "tasks": c.tasks, "steps": c.steps}
        for key, value in counts.items():
            if c.end.get(key) != value:
                c.problem(f"the end record says {c.end.get(key)} {key}, the file holds {value}")
    return c


def check_archived_link(chain: ArchivedChain, link: Any, found: Any) -> None:
    """Report an archived link still in ``ledger_chain`` whose hash is not the one its
    archive recorded (``found``: verify's collector)."""
    from consumer.ledger.verify import Finding

    recorded = chain.recorded_hash(int(link["link"]))
    if recorded is not None and bytes(link["hash"]) != recorded:
        number = link["link"]
        found.add(Finding(kind="link_altered", link=number,
                          detail=f"archived link {number} differs from its archive record"))  # fmt: skip
