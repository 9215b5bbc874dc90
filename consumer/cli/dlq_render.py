"""How ``taskledger dlq`` shows what it found: tables, panels and the replay progress bar.

The commands (:mod:`consumer.cli.dlq`) call the dead-letter tools; everything here only
prints their results, to stdout (``console``) or, for the progress bar, stderr.

Key columns (key, id, reason, type) are never cut: piped or redirected (no terminal), the
tables are as wide as their content, so ``| grep`` finds every value whole; on a
terminal those columns keep their full width and the error column gives way.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.syntax import Syntax
from rich.table import Table

from consumer.cli.common import console, err_console
from consumer.cli.render import cut, when
from consumer.dlq.replayer import ReplayResult
from consumer.dlq.views import DeadLetterDetail, DlqListing, DlqSummary

#: Console width used when stdout is not a terminal: wide enough for any table.
UNBOUNDED_WIDTH = 100_000
#: Characters of a body ``show`` prints without ``--full``.
BODY_PREVIEW = 4096


def out() -> Console:
    """The stdout console, unbounded in width when stdout is not a terminal."""
    if console.is_terminal:
        return console
    return Console(width=UNBOUNDED_WIDTH, no_color=console.no_color, highlight=False)


def _key_columns(table: Table, values: dict[str, list[str]]) -> None:
    """Add columns; those in ``values`` never wrap and are as wide as their widest value."""
    for name in values:
        widest = max((len(v) for v in values[name]), default=0)
        table.add_column(name, no_wrap=True, min_width=max(widest, len(name)))


def print_summary(result: DlqSummary, queue: str) -> None:
    """The groups of ``dlq summary`` as a table (or that the queue is empty)."""
    if result.total == 0:
        out().print(f"{queue} is empty: no dead letters", highlight=False)
        return
    table = Table(title=f"{queue}: {result.total} dead letters", title_justify="left")
    reasons = [g.reason for g in result.groups]
    types = [g.event_type or "-" for g in result.groups]
    _key_columns(table, {"reason": reasons, "type": types})
    table.add_column("error", overflow="fold")
    table.add_column("count", justify="right", no_wrap=True)
    table.add_column("oldest", no_wrap=True)
    table.add_column("newest", no_wrap=True)
    for group, reason, type_ in zip(result.groups, reasons, types, strict=True):
        table.add_row(
            escape(reason),
            escape(type_),
            escape(cut(group.error, 80)),
            str(group.count),
            when(group.oldest),
            when(group.newest),
        )
    out().print(table)
    if result.scanned < result.total:
        out().print(f"looked at the first {result.scanned} of {result.total}")


def print_listing(listing: DlqListing, queue: str, limit: int) -> None:
    """The dead letters of ``dlq list`` as a table, and how many were shown."""
    if listing.total == 0:
        out().print(f"{queue} is empty: no dead letters", highlight=False)
        return
    if not listing.items:
        out().print(f"none of the {listing.total} dead letters in {queue} match", highlight=False)
        return
    table = Table(title=f"{queue}: {listing.total} dead letters", title_justify="left")
    items = listing.items
    # the key is what `show` and `replay --id` take: never cut or wrapped
    _key_columns(
        table,
        {
            "key": [i.key for i in items],
            "id": [i.id for i in items],
            "type": [i.event_type or "-" for i in items],
            "reason": [i.reason for i in items],
            "failed at": [when(i.failed_at) for i in items],
        },
    )
    for column in ("task", "replays", "error"):
        table.add_column(column, overflow="fold")
    for item in items:
        table.add_row(
            escape(item.key),
            escape(item.id),
            escape(item.event_type or "-"),
            escape(item.reason),
            when(item.failed_at),
            escape(item.subject or "-"),
            str(item.replay_count),
            escape(cut(item.error, 50)),
        )
    out().print(table)
    shown = len(items)
    more = " (the limit: there may be more, use --limit)" if shown == limit else ""
    out().print(f"{shown} shown{more}")


def print_detail(detail: DeadLetterDetail, *, full: bool = False) -> None:
    """One dead letter of ``dlq show``: facts, error, headers, death history, body.

    The body is cut to :data:`BODY_PREVIEW` characters unless ``full``.
    """
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    origin = (
        f"{detail.exchange or '(default)'} / {detail.routing_key} (from {detail.origin_from})"
        if detail.routing_key is not None
        else "unknown"
    )
    rows = [
        ("key", detail.key),
        ("id", detail.id),
        ("fingerprint", detail.fingerprint),
        ("message_id", detail.message_id or "-"),
        ("type", detail.event_type or "-"),
        ("task", detail.subject or "-"),
        ("reason", detail.reason),
        ("failed at", when(detail.failed_at)),
        ("source queue", detail.source_queue or "-"),
        ("replays to", origin),
        ("replayed", str(detail.replay_count)),
        ("size", f"{detail.size} bytes"),
    ]
    for key, value in rows:
        facts.add_row(key, escape(value))
    console.print(Panel(facts, title="dead letter", title_align="left"))
    if detail.error_full:
        console.print(Panel(escape(detail.error_full), title="error", title_align="left"))
    _print_headers(detail)
    body: Any = detail.body
    text = (
        orjson.dumps(body, option=orjson.OPT_INDENT_2).decode()
        if detail.body_is_json
        else str(body)
    )
    title = "body" if detail.body_is_json else "body (not JSON)"
    if len(text) > BODY_PREVIEW:
        if full:  # as it is, without a panel: fast for any size, and easy to pipe
            console.print(f"{title} ({len(text):,} characters):", highlight=False)
            sys.stdout.write(text + "\n")
            return
        title += f": the first {BODY_PREVIEW:,} of {len(text):,} characters (--full for all)"
        text = text[:BODY_PREVIEW]
    if detail.body_is_json:
        console.print(Panel(Syntax(text, "json", word_wrap=True), title=title, title_align="left"))
    else:
        console.print(Panel(escape(text), title=title, title_align="left"))


def _print_headers(detail: DeadLetterDetail) -> None:
    headers = Table(title="headers and properties", title_justify="left")
    headers.add_column("name")
    headers.add_column("value", overflow="fold")
    for name, value in {**detail.properties, **detail.headers}.items():
        if name == "x-death":
            continue
        shown = value if isinstance(value, str) else orjson.dumps(value).decode()
        headers.add_row(escape(name), escape(cut(shown, 200)))
    console.print(headers)
    if not detail.deaths:
        return
    deaths = Table(title="death history (x-death, newest first)", title_justify="left")
    for column in ("queue", "reason", "exchange", "routing keys", "count", "time"):
        deaths.add_column(column)
    for death in detail.deaths:
        deaths.add_row(
            escape(str(death.get("queue", "-"))),
            escape(str(death.get("reason", "-"))),
            escape(str(death.get("exchange", "-")) or "(default)"),
            escape(", ".join(str(k) for k in death.get("routing-keys", []))),
            str(death.get("count", "-")),
            escape(str(death.get("time", "-"))),
        )
    console.print(deaths)


class ReplayBar:
    """A rich progress bar on stderr fed by :func:`consumer.dlq.replay`'s progress callback."""

    def __init__(self, enabled: bool) -> None:
        self.last: ReplayResult | None = None
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("replayed {task.fields[replayed]}  failed {task.fields[failed]}"),
            TimeElapsedColumn(),
            console=err_console,
            disable=not enabled,
            transient=False,
        )
        self._task = self._progress.add_task("replaying", total=None, replayed=0, failed=0)
        self._started = False

    def __enter__(self) -> ReplayBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            self._progress.stop()

    def __call__(self, result: ReplayResult) -> None:
        self.last = result
        if not self._started:
            if not result.total:
                return  # started lazily: an early error prints one line, not a bar
            self._progress.start()
            self._started = True
        self._progress.update(
            self._task,
            total=result.total,
            completed=result.scanned,
            replayed=result.replayed,
            failed=result.failed,
        )


def print_plan(result: ReplayResult) -> None:
    """What a dry run would replay, and where to."""
    table = Table(title="would replay", title_justify="left")
    moves = result.planned
    _key_columns(
        table,
        {
            "id": [m.id for m in moves],
            "type": [m.event_type or "-" for m in moves],
            "reason": [m.reason for m in moves],
            "to exchange": [m.exchange or "(default)" for m in moves],
            "routing key": [m.routing_key for m in moves],
        },
    )
    for move in moves:
        table.add_row(
            escape(move.id),
            escape(move.event_type or "-"),
            escape(move.reason),
            escape(move.exchange or "(default)"),
            escape(move.routing_key),
        )
    out().print(table)
    _print_bounced(result)
    console.print(
        f"dry run: would replay {len(result.planned)}, skip {result.skipped}, "
        f"cannot replay {result.failed} (looked at {result.scanned} of {result.total}); "
        "nothing was moved"
    )


def _print_bounced(result: ReplayResult) -> None:
    if result.bounced:
        console.print(
            f"skipped {result.bounced} that the interrupted replay sent already and that came "
            "back (name them with --id to replay them again)"
        )


def print_counts(result: ReplayResult, queue: str) -> None:
    """The counts of a replay, what an interruption left, errors and the action id."""
    if result.total == 0 and result.status == "completed":
        console.print(f"{queue} is empty: nothing to replay", highlight=False)
    console.print(
        f"replayed {result.replayed}, skipped {result.skipped}, failed {result.failed}"
        + (f", in doubt {result.in_doubt}" if result.in_doubt else "")
        + f" (looked at {result.scanned} of {result.total} in {queue}, {result.elapsed_s:.1f} s)"
    )
    _print_bounced(result)
    if result.status == "interrupted":
        console.print(
            f"[yellow]interrupted:[/yellow] the {result.replayed} replayed are out of {queue}; "
            "the rest are still in it. Run the same command again to continue."
        )
    if result.in_doubt:
        console.print(
            f"{result.in_doubt} were published but could not be removed from {queue}: "
            "they are in both places (the ledger ignores the duplicate)."
        )
    for error in result.errors:
        console.print(f"  - {escape(error)}", highlight=False)
    if result.action_id is not None:
        console.print(f"recorded as operator action #{result.action_id}")
