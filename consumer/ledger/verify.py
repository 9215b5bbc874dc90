"""`taskledger verify`: walk the ledger's hash chain and find what changed behind our back.

Every write batch appends a ``ledger_chain`` link with the sequence numbers and SHA-256
digests of the rows it recorded, chained to the previous link (migration 006). This
module recomputes, in Python, each row's digest and each link's hash, and reports:

- ``altered``: a row whose content no longer matches the digest sealed for it;
- ``unsealed``: a range of rows no link seals (first and last seq, count): written with
  ``TASKLEDGER_LEDGER_CHAIN=false``, or inserted around the service: the chain cannot
  tell which, so they are a warning of their own (exit 5), not a proof of tampering;
- ``removed``: a sealed row that is gone;
- ``link_altered`` / ``link_broken`` / ``link_malformed``: a link whose hash does not
  recompute, that does not follow its predecessor, or whose arrays are unusable;
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
from consumer.store.db import q, translate_errors

#: Findings kept per kind; beyond, they are only counted (``VerifyReport.counts``).
KEEP_PER_KIND = 1000
#: Findings that are warnings, not evidence of tampering.
WARNING_KINDS = frozenset({"unsealed"})
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

    @property
    def tampered(self) -> bool:
        """True when a finding proves a change (anything but unsealed rows)."""
        return any(kind not in WARNING_KINDS for kind in self.counts)

    @property
    def ok(self) -> bool:
        """True when nothing at all was found."""
        return not self.counts

    @property
    def exit_code(self) -> int:
        """0 intact, 1 tampered (or the anchor is missing), 5 only unsealed rows."""
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


async def _walk_chain(conn: asyncpg.Connection, found: Collector, anchor: bytes | None) -> _Chain:
    chain = _Chain()
    prev: bytes | None = None
    async for link in conn.cursor(q("verify_chain_links"), prefetch=_PREFETCH):
        chain.links += 1
        number = link["link"]
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
        prev = link["hash"]
        if anchor is not None and prev == anchor:
            chain.anchor_seen = True
        chain.head_link = number
    chain.head = prev
    return chain


@dataclass
class _Unsealed:
    """The open range of consecutive unsealed rows."""

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
            kind="unsealed", first_seq=self.first, last_seq=self.last, count=self.count,
            seq=self.first,
            detail=f"rows {span} ({self.count}) are not sealed by any link (written with "
            "TASKLEDGER_LEDGER_CHAIN=false, or inserted around the service)",
        ))  # fmt: skip
        self.first, self.count = None, 0


async def _walk_rows(
    conn: asyncpg.Connection, found: Collector, progress: Callable[[int], None] | None
) -> int:
    rows, pending, last_seq = 0, 0, None
    unsealed = _Unsealed()
    async for row in conn.cursor(q("verify_rows_against_seals"), prefetch=_PREFETCH):
        at, link, seq = row["at_seq"], row["link"], row["seq"]
        if at is None:  # a NULL seq in a link: reported by the chain walk
            continue
        if seq is not None and at != last_seq:
            rows += 1
            pending += 1
        elif seq is not None:
            found.add(Finding(kind="link_altered", link=link, seq=seq,
                              detail=f"row {seq} sealed twice (again by link {link})"))  # fmt: skip
        last_seq = at
        if link is None:
            unsealed.add(seq)
            continue
        unsealed.close(found)
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
    if progress is not None and pending:
        progress(pending)
    return rows


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
) -> tuple[_Chain, int, int]:
    from consumer.ledger.verify_projections import check_projections

    tasks = 0
    with translate_errors():
        for typename in ("jsonb", "json"):
            await conn.set_type_codec(typename, encoder=lambda v: orjson.dumps(v).decode(),
                                      decoder=tolerant_json, schema="pg_catalog")  # fmt: skip
        async with conn.transaction(isolation="repeatable_read"):
            chain = await _walk_chain(conn, found, expect_head)
            rows = await _walk_rows(conn, found, progress)
            if projections:
                tasks = await check_projections(conn, found)
    return chain, rows, tasks


async def verify(
    conn: asyncpg.Connection,
    progress: Callable[[int], None] | None = None,
    *,
    expect_head: bytes | None = None,
    projections: bool = True,
) -> VerifyReport:
    """Check the ledger against its chain, and its projections against the ledger.

    Runs in one repeatable-read snapshot; sets :func:`tolerant_json` as the JSON decoder
    of ``conn``. ``progress`` is called with the number of ledger rows checked since its
    last call. With ``expect_head`` (an anchor recorded earlier), a finding
    ``anchor_missing`` unless it is a link of the current chain. Raises
    :class:`~consumer.core.errors.DatabaseUnavailable` if PostgreSQL is unreachable, and
    :class:`VerifyFailed` if it refuses one of verify's own statements.
    """
    found = Collector()
    try:
        chain, rows, tasks = await _snapshot(conn, found, progress, expect_head, projections)
    except asyncpg.PostgresError as exc:  # outages were translated; this is anything else
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise VerifyFailed(f"verify could not finish: {first}") from exc
    if expect_head is not None and not chain.anchor_seen:
        found.add(Finding(kind="anchor_missing",
                          detail=f"expected head {expect_head.hex()} is not a link of the "
                          "current chain (newest links removed, or the chain rewritten)"))  # fmt: skip
    return VerifyReport(
        rows=rows, links=chain.links, head_hash=chain.head.hex() if chain.head else None,
        head_link=chain.head_link, tasks_checked=tasks, findings=found.kept,
        counts=found.counts, expected_head=expect_head.hex() if expect_head else None,
    )  # fmt: skip
