"""`taskledger verify`: walk the ledger's hash chain and find what changed behind our back.

Every write batch appends a ``ledger_chain`` link with the sequence numbers and SHA-256
digests of the rows it recorded, chained to the previous link (migration 006). This
module recomputes, in Python and independently of the database's own functions, each
row's digest and each link's hash, and reports:

- ``altered``: a row whose content no longer matches the digest sealed for it;
- ``inserted``: a row no link seals (written around the service);
- ``removed``: a sealed row that is gone;
- ``link_altered`` / ``link_broken``: a link whose hash does not recompute, or that does
  not follow its predecessor.

A superuser can still rewrite rows *and* the whole chain consistently; to catch that,
keep the head hash printed by ``verify`` somewhere outside the database (anchoring).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from pydantic import BaseModel

from consumer.store.db import q, translate_errors

_TS = "%Y-%m-%dT%H:%M:%S.%f"


class Finding(BaseModel):
    """One discrepancy between the ledger and its chain."""

    kind: str
    seq: int | None = None
    link: int | None = None
    event_id: str | None = None
    detail: str


class VerifyReport(BaseModel):
    """What `verify` checked and found; ``ok`` when nothing was found."""

    rows: int
    links: int
    head_hash: str | None
    findings: list[Finding]

    @property
    def ok(self) -> bool:
        """True when the ledger matches its chain."""
        return not self.findings

    @property
    def first(self) -> Finding | None:
        """The first finding in ledger order (rows by seq, then links)."""
        if not self.findings:
            return None
        return min(self.findings, key=lambda f: (f.seq is None, f.seq or 0, f.link or 0))


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime(_TS)


def row_digest(row: Mapping[str, Any]) -> bytes:
    """SHA-256 of a ledger row's canonical text (the same as SQL ``ledger_row_digest``)."""
    text = "|".join(
        (
            str(row["seq"]),
            str(row["event_id"]),
            row["event_type"],
            row["source"],
            str(row["task_id"]) if row["task_id"] is not None else "",
            _ts(row["event_time"]),
            _ts(row["received_at"]),
            str(row["schema_version"]),
            row["envelope_text"],
            str(row["conflict_with"]) if row["conflict_with"] is not None else "",
        )
    )
    return hashlib.sha256(text.encode("utf-8")).digest()


def link_hash(prev: bytes | None, digests: list[bytes]) -> bytes:
    """SHA-256 over the previous link's hash and the link's row digests, in order."""
    h = hashlib.sha256(prev or b"")
    for digest in digests:
        h.update(digest)
    return h.digest()


@dataclass
class _Sealed:
    digest: bytes
    link: int


@dataclass
class _Walk:
    sealed: dict[int, _Sealed] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    links: int = 0
    head: bytes | None = None


async def _walk_chain(conn: asyncpg.Connection, walk: _Walk) -> None:
    prev: bytes | None = None
    async for link in conn.cursor(q("verify_chain_links")):
        walk.links += 1
        number = link["link"]
        if link["prev_hash"] != prev:
            walk.findings.append(Finding(kind="link_broken", link=number,
                                         detail=f"link {number} does not follow its predecessor"))  # fmt: skip
        digests = list(link["row_digests"])
        if link_hash(link["prev_hash"], digests) != link["hash"]:
            walk.findings.append(Finding(kind="link_altered", link=number,
                                         detail=f"link {number} does not recompute"))  # fmt: skip
        for seq, digest in zip(link["seqs"], digests, strict=False):
            if seq in walk.sealed:
                walk.findings.append(Finding(kind="link_altered", link=number, seq=seq,
                                             detail=f"row {seq} sealed twice"))  # fmt: skip
            walk.sealed[seq] = _Sealed(bytes(digest), number)
        prev = link["hash"]
    walk.head = prev


async def _walk_rows(
    conn: asyncpg.Connection, walk: _Walk, progress: Callable[[int], None] | None
) -> int:
    rows = 0
    async for row in conn.cursor(q("verify_ledger_rows")):
        rows += 1
        seq = row["seq"]
        sealed = walk.sealed.pop(seq, None)
        if sealed is None:
            walk.findings.append(Finding(kind="inserted", seq=seq, event_id=str(row["event_id"]),
                                         detail=f"row {seq} is not sealed by any link"))  # fmt: skip
        elif row_digest(row) != sealed.digest:
            walk.findings.append(Finding(
                kind="altered", seq=seq, link=sealed.link, event_id=str(row["event_id"]),
                detail=f"row {seq} (event {row['event_id']}) differs from what link {sealed.link} sealed",
            ))  # fmt: skip
        if progress is not None and rows % 1000 == 0:
            progress(1000)
    for seq, sealed in sorted(walk.sealed.items()):
        walk.findings.append(Finding(kind="removed", seq=seq, link=sealed.link,
                                     detail=f"row {seq}, sealed by link {sealed.link}, is gone"))  # fmt: skip
    return rows


async def verify(
    conn: asyncpg.Connection, progress: Callable[[int], None] | None = None
) -> VerifyReport:
    """Check the whole ledger against its chain (one repeatable-read snapshot).

    ``progress`` is called with the number of rows checked since its last call.
    Raises :class:`~consumer.core.errors.DatabaseUnavailable` if PostgreSQL is unreachable.
    """
    walk = _Walk()
    with translate_errors():
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await _walk_chain(conn, walk)
            rows = await _walk_rows(conn, walk, progress)
    return VerifyReport(rows=rows, links=walk.links,
                        head_hash=walk.head.hex() if walk.head else None,
                        findings=walk.findings)  # fmt: skip
