"""`taskledger verify`: walk the ledger's hash chain and find what changed behind our back.

Every write batch gets a ``ledger_chain`` link with the sequence numbers and SHA-256
digests of the rows it recorded, chained to the previous link (migration 006); since
012 the sealer (:mod:`consumer.ledger.sealer`) appends it shortly after the batch
commits, and until then the rows are listed in ``ledger_unsealed``. This module
recomputes, in Python, each row's digest and each link's hash, and reports:

- ``altered``: a row whose content no longer matches the digest sealed for it;
- ``unsealed``: a range of rows no link seals (first and last seq, count): written with
  ``TASKLEDGER_LEDGER_CHAIN=false``, or inserted around the service: the chain cannot
  tell which, so they are a warning of their own (exit 5), not a proof of tampering
  (a row whose ``ledger_unsealed`` marker was deleted by hand is one of these);
- ``seal_overdue``: a range of rows listed for the sealer but received more than
  ``seal_bound_s`` ago (the sealer is not running): a warning too (exit 5). Listed rows
  younger than the bound are pending, counted in ``VerifyReport.pending``, not a finding;
- ``removed``: a sealed row that is gone, or a row listed for the sealer that is gone;
- ``link_altered`` / ``link_broken`` / ``link_malformed``: a link whose hash does not
  recompute, that does not follow its predecessor, or whose arrays are unusable;
- ``unkeyed``: a row whose id has no row in ``ledger_event_ids`` naming it (019: ids
  are deduplicated and looked up only through that table); a warning (exit 5);
- ``dangling_key``: a key in ``ledger_event_ids`` whose row is gone outside the archived
  months: later events with that id would be dropped as duplicates (exit 1);
- ``anchor_missing``: ``--expect-head HEX`` is not a link of the current chain (the
  newest links were removed, or the chain was rewritten and recomputed);
- projection findings (:mod:`consumer.ledger.verify_projections`).

Everything streams through server-side cursors; findings are kept up to
:data:`KEEP_PER_KIND` per kind (the rest are counted), so memory is bounded whatever
the ledger holds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from pydantic import BaseModel

from consumer.core.errors import TaskledgerError
from consumer.ledger.archived import ArchivedChain, check_archived_link, load_archived
from consumer.store.db import q, translate_errors

#: Findings kept per kind; beyond, they are only counted (``VerifyReport.counts``).
KEEP_PER_KIND = 1000
#: Findings that are warnings, not evidence of tampering (an ``unkeyed`` row was, like an
#: unsealed one, most likely inserted around the service: its content is what the chain
#: says, but its id is missing from the key table that deduplicates and finds ids).
WARNING_KINDS = frozenset({"unsealed", "seal_overdue", "unkeyed"})
_PREFETCH = 64


class VerifyFailed(TaskledgerError):
    """The database refused a statement of verify itself (reported as one line, exit 1)."""


class Finding(BaseModel):
    """One discrepancy between the ledger, its chain, or its projections."""

    kind: str
    seq: int | None = None
    link: int | None = None
    event_id: str | None = None
    task_id: str | None = None
    first_seq: int | None = None
    last_seq: int | None = None
    count: int | None = None
    detail: str


class VerifyReport(BaseModel):
    """What `verify` checked and found; ``ok`` when nothing was found."""

    rows: int
    links: int
    head_hash: str | None
    head_link: int | None = None
    tasks_checked: int = 0
    findings: list[Finding]
    counts: dict[str, int] = {}
    expected_head: str | None = None
    #: Rows listed for the sealer and younger than the seal bound (not a finding).
    pending: int = 0
    #: Months archived (014): their rows left the ledger with a verified export.
    archived_months: list[str] = []
    archived_rows: int = 0

    @property
    def tampered(self) -> bool:
        """True when a finding proves a change (anything but the warnings: unsealed, overdue
        or unkeyed rows)."""
        return any(kind not in WARNING_KINDS for kind in self.counts)

    @property
    def ok(self) -> bool:
        """True when nothing at all was found."""
        return not self.counts

    @property
    def exit_code(self) -> int:
        """0 intact (pending rows allowed), 1 tampered (or the anchor is missing), 5 only
        warnings (unsealed, overdue or unkeyed rows)."""
        if self.tampered:
            return 1
        return 5 if self.counts else 0

    @property
    def first(self) -> Finding | None:
        """The first proof of tampering in ledger order (rows by seq, then the rest)."""
        proofs = [f for f in self.findings if f.kind not in WARNING_KINDS] or self.findings
        if not proofs:
            return None
        return min(proofs, key=lambda f: (f.seq is None, f.seq or 0, f.link or 0))


@dataclass
class Collector:
    """Findings, kept up to :data:`KEEP_PER_KIND` per kind and counted beyond."""

    kept: list[Finding] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, finding: Finding) -> None:
        """Count ``finding``; keep it while its kind has room."""
        n = self.counts.get(finding.kind, 0)
        self.counts[finding.kind] = n + 1
        if n < KEEP_PER_KIND:
            self.kept.append(finding)


def _text(value: object) -> str:
    return "" if value is None else str(value)


def row_digest(row: Mapping[str, Any]) -> bytes:
    """SHA-256 of a ledger row's canonical text (the same as SQL ``ledger_row_digest``).

    ``event_time`` and ``received_at`` are the texts the SQL renders (``verify_rows_against_seals``).
    """
    text = "|".join(
        _text(row[k])
        for k in (
            "seq", "event_id", "event_type", "source", "task_id", "event_time",
            "received_at", "schema_version", "envelope_text", "conflict_with",
        )
    )  # fmt: skip
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def link_hash(prev: bytes | None, digests: list[bytes]) -> bytes:
    """SHA-256 over the previous link's hash and the link's row digests, in order."""
    h = hashlib.sha256(prev or b"")
    for digest in digests:
        h.update(digest)
    return h.digest()


@dataclass
class _Chain:
    links: int = 0
    head: bytes | None = None
    head_link: int | None = None
    anchor_seen: bool = False


async def _walk_chain(
    conn: asyncpg.Connection, found: Collector, anchor: bytes | None, archived: ArchivedChain
) -> _Chain:
    chain = _Chain()
    prev = head = None
    async for link in conn.cursor(q("verify_chain_links"), prefetch=_PREFETCH):
        chain.links += 1
        number = link["link"]
        chain.head_link = number
        if archived.covers(number):  # its rows left with its month (014): its export checks it
            check_archived_link(archived, link, found)
            head = link["hash"]
            chain.anchor_seen = chain.anchor_seen or head == anchor
            continue
        prev = archived.prev_before(number, prev)  # after archived links: the boundary hash
        seqs, digests = list(link["seqs"] or []), list(link["row_digests"] or [])
        if link["prev_hash"] != prev:
            found.add(Finding(kind="link_broken", link=number,
                              detail=f"link {number} does not follow its predecessor"))  # fmt: skip
        well_formed = len(seqs) == len(digests) and all(isinstance(x, int) for x in seqs)
        if not well_formed or not all(isinstance(d, bytes) for d in digests):
            found.add(Finding(kind="link_malformed", link=number,
                              detail=f"link {number} has missing seqs or digests"))  # fmt: skip
        elif link_hash(link["prev_hash"], digests) != link["hash"]:
            found.add(Finding(kind="link_altered", link=number,
                              detail=f"link {number} does not recompute"))  # fmt: skip
        prev = head = link["hash"]
        if anchor is not None and prev == anchor:
            chain.anchor_seen = True
    chain.head = head
    return chain


_RANGE_DETAIL = {
    "unsealed": "are not sealed by any link (written with TASKLEDGER_LEDGER_CHAIN=false, "
    "or inserted around the service)",
    "seal_overdue": "are listed for the sealer but still not sealed after the seal bound "
    "(is a service with the audit handler running? `taskledger seal` seals them)",
}


@dataclass
class _Unsealed:
    """The open range of consecutive unsealed (or overdue) rows."""

    kind: str = "unsealed"
    first: int | None = None
    last: int = 0
    count: int = 0

    def add(self, seq: int) -> None:
        if self.first is None:
            self.first = seq
        self.last, self.count = seq, self.count + 1

    def close(self, found: Collector) -> None:
        if self.first is None:
            return
        span = f"{self.first}" if self.count == 1 else f"{self.first}..{self.last}"
        found.add(Finding(
            kind=self.kind, first_seq=self.first, last_seq=self.last, count=self.count,
            seq=self.first, detail=f"rows {span} ({self.count}) {_RANGE_DETAIL[self.kind]}",
        ))  # fmt: skip
        self.first, self.count = None, 0


@dataclass
class _Rows:
    rows: int = 0
    pending: int = 0
    archived_months: list[str] = field(default_factory=list)
    archived_rows: int = 0


def _not_sealed(
    row: asyncpg.Record, found: Collector, counted: _Rows, unsealed: _Unsealed, overdue: _Unsealed
) -> None:
    """A row no link seals: pending, overdue or unsealed; a listed row is checked against
    the digest its writer took (012), so a change before the seal is ``altered`` too."""
    seq = row["seq"]
    if row["listed"] and row_digest(row) != bytes(row["listed_digest"]):
        found.add(Finding(
            kind="altered", seq=seq, event_id=row["event_id"],
            detail=f"row {seq} (event {row['event_id']}) differs from the digest its writer "
            "took (not sealed yet)",
        ))  # fmt: skip
    if row["listed"] and row["recent"]:
        counted.pending += 1  # listed for the sealer, within the bound
        unsealed.close(found)
        overdue.close(found)
        return
    (overdue if row["listed"] else unsealed).add(seq)
    (unsealed if row["listed"] else overdue).close(found)


async def _walk_rows(
    conn: asyncpg.Connection,
    found: Collector,
    progress: Callable[[int], None] | None,
    seal_bound_s: float,
    archived: ArchivedChain,
) -> _Rows:
    counted, pending, last_seq = _Rows(), 0, None
    unsealed, overdue = _Unsealed(), _Unsealed(kind="seal_overdue")
    sql = q("verify_rows_against_seals")
    async for row in conn.cursor(sql, float(seal_bound_s), prefetch=_PREFETCH):
        at, link, seq = row["at_seq"], row["link"], row["seq"]
        # a NULL seq in a link: reported by the chain walk; a row archived with its month
        # (014) is not removed
        if at is None or (seq is None and archived.covers(link)):
            continue
        if seq is not None and at != last_seq:
            counted.rows += 1
            pending += 1
        elif seq is not None:
            found.add(Finding(kind="link_altered", link=link, seq=seq,
                              detail=f"row {seq} sealed twice (again by link {link})"))  # fmt: skip
        last_seq = at
        if link is None:
            _not_sealed(row, found, counted, unsealed, overdue)
            continue
        unsealed.close(found)
        overdue.close(found)
        if seq is None:
            found.add(Finding(kind="removed", seq=at, link=link,
                              detail=f"row {at}, sealed by link {link}, is gone"))  # fmt: skip
        elif row["digest"] is None or row_digest(row) != bytes(row["digest"]):
            found.add(Finding(
                kind="altered", seq=seq, link=link, event_id=row["event_id"],
                detail=f"row {seq} (event {row['event_id']}) differs from what link {link} sealed",
            ))  # fmt: skip
        if progress is not None and pending >= 1000:
            progress(pending)
            pending = 0
    unsealed.close(found)
    overdue.close(found)
    if progress is not None and pending:
        progress(pending)
    async for marker in conn.cursor(q("verify_orphan_markers"), prefetch=_PREFETCH):
        at = marker["seq"]
        found.add(Finding(kind="removed", seq=at,
                          detail=f"row {at}, listed for the sealer, is gone"))  # fmt: skip
    return counted


async def _walk_keys(conn: asyncpg.Connection, found: Collector) -> None:
    """The key table against the ledger (019: ids are deduplicated and found only through
    ``ledger_event_ids``): rows without their key, keys without their row."""
    async for row in conn.cursor(q("verify_unkeyed_rows"), prefetch=_PREFETCH):
        seq, key = row["seq"], row["key_seq"]
        what = (
            "no key in ledger_event_ids: a re-delivery of this id would be recorded again"
            if key is None
            else f"a key naming row {key} in ledger_event_ids: a re-delivery of this id "
            f"would be compared with row {key}"
        )
        found.add(Finding(kind="unkeyed", seq=seq, event_id=row["event_id"],
                          detail=f"row {seq} (event {row['event_id']}) has {what}"))  # fmt: skip
    async for row in conn.cursor(q("verify_dangling_keys"), prefetch=_PREFETCH):
        seq, event_id = row["seq"], row["event_id"]
        found.add(Finding(
            kind="dangling_key", seq=seq, event_id=event_id,
            detail=f"the key of event {event_id} names row {seq}, which is gone (and not in an "
            "archived month): every later event with this id would be taken for a duplicate",
        ))  # fmt: skip


def tolerant_json(text: str) -> Any:
    """Decode JSON the way the service does, and any JSON PostgreSQL holds besides.

    orjson refuses integers beyond 64 bits and very deep nesting; the standard library
    takes the numbers, and what neither can read becomes ``{"undecodable": <text>}``
    (whose projection then fails and is reported), never an exception.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return {"undecodable": text[:200]}


def parse_head(text: str) -> bytes:
    """The bytes of a head hash given as 64 hex digits; raises ValueError otherwise."""
    cleaned = text.strip().lower()
    if len(cleaned) != 64:
        raise ValueError("expected a head hash of 64 hex digits")
    return bytes.fromhex(cleaned)


async def _snapshot(
    conn: asyncpg.Connection,
    found: Collector,
    progress: Callable[[int], None] | None,
    expect_head: bytes | None,
    projections: bool,
    seal_bound_s: float,
) -> tuple[_Chain, _Rows, int]:
    from consumer.ledger.verify_projections import check_projections

    tasks = 0
    with translate_errors():
        for typename in ("jsonb", "json"):
            await conn.set_type_codec(typename, encoder=lambda v: orjson.dumps(v).decode(),
                                      decoder=tolerant_json, schema="pg_catalog")  # fmt: skip
        async with conn.transaction(isolation="repeatable_read"):
            archived = await load_archived(conn)
            chain = await _walk_chain(conn, found, expect_head, archived)
            rows = await _walk_rows(conn, found, progress, seal_bound_s, archived)
            await _walk_keys(conn, found)
            rows.archived_months, rows.archived_rows = archived.months, archived.rows
            if projections:
                tasks = await check_projections(conn, found)
    return chain, rows, tasks


async def verify(
    conn: asyncpg.Connection,
    progress: Callable[[int], None] | None = None,
    *,
    expect_head: bytes | None = None,
    projections: bool = True,
    seal_bound_s: float = 60.0,
) -> VerifyReport:
    """Check the ledger against its chain, and its projections against the ledger.

    Runs in one repeatable-read snapshot; sets :func:`tolerant_json` as the JSON decoder
    of ``conn``. ``progress`` is called with the number of ledger rows checked since its
    last call. With ``expect_head`` (an anchor recorded earlier), a finding
    ``anchor_missing`` unless it is a link of the current chain. Rows listed for the
    sealer and received less than ``seal_bound_s`` ago are pending, older ones
    ``seal_overdue``. Raises
    :class:`~consumer.core.errors.DatabaseUnavailable` if PostgreSQL is unreachable, and
    :class:`VerifyFailed` if it refuses one of verify's own statements.
    """
    found = Collector()
    try:
        chain, rows, tasks = await _snapshot(
            conn, found, progress, expect_head, projections, seal_bound_s
        )
    except asyncpg.PostgresError as exc:  # outages were translated; this is anything else
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise VerifyFailed(f"verify could not finish: {first}") from exc
    if expect_head is not None and not chain.anchor_seen:
        found.add(Finding(kind="anchor_missing",
                          detail=f"expected head {expect_head.hex()} is not a link of the "
                          "current chain (newest links removed, or the chain rewritten)"))  # fmt: skip
    return VerifyReport(
        rows=rows.rows, pending=rows.pending, links=chain.links, head_hash=chain.head.hex() if chain.head else None,
        head_link=chain.head_link, tasks_checked=tasks, findings=found.kept,
        archived_months=rows.archived_months, archived_rows=rows.archived_rows,
        counts=found.counts, expected_head=expect_head.hex() if expect_head else None,
    )  # fmt: skip
