"""How ``taskledger dlq`` shows what it found: tables, panels and the replay progress bar.

The commands (:mod:`consumer.cli.dlq`) call the dead-letter tools; everything here only
prints their results, to stdout (``console``) or, for the progress bar, stderr.
"""

from __future__ import annotations

from typing import Any

import orjson
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.syntax import Syntax
from rich.table import Table

from consumer.cli.common import console, err_console
from consumer.cli.render import cut, when
from consumer.dlq.replayer import ReplayResult
from consumer.dlq.views import DeadLetterDetail, DlqListing, DlqSummary


def print_summary(result: DlqSummary, queue: str) -> None:
    """The groups of ``dlq summary`` as a table."""
    table = Table(title=f"{queue}: {result.total} dead letters", title_justify="left")
    for column in ("reason", "type", "error", "count", "oldest", "newest"):
        table.add_column(column, justify="right" if column == "count" else "left")
    for group in result.groups:
        table.add_row(
            escape(group.reason),
            escape(group.event_type or "-"),
            escape(cut(group.error)),
            str(group.count),
            when(group.oldest),
            when(group.newest),
        )
    console.print(table)
    if result.scanned < result.total:
        console.print(f"looked at the first {result.scanned} of {result.total}")


def print_listing(listing: DlqListing, queue: str, limit: int) -> None:
    """The dead letters of ``dlq list`` as a table, and how many were shown."""
    table = Table(title=f"{queue}: {listing.total} dead letters", title_justify="left")
    for column in ("id", "type", "reason", "failed at", "task", "replays", "error"):
        # the id is what `show` and `replay --id` take: never cut or wrapped
        table.add_column(column, no_wrap=column in ("id", "failed at"), overflow="ellipsis")
    for item in listing.items:
        table.add_row(
            escape(item.id),
            escape(item.event_type or "-"),
            escape(item.reason),
            when(item.failed_at),
            escape(item.subject or "-"),
            str(item.replay_count),
            escape(cut(item.error, 50)),
        )
    console.print(table)
    shown = len(listing.items)
    more = " (the limit: there may be more, use --limit)" if shown == limit else ""
    console.print(f"{shown} shown{more}")


def print_detail(detail: DeadLetterDetail) -> None:
    """One dead letter of ``dlq show``: facts, error, headers, death history, body."""
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    origin = (
        f"{detail.exchange or '(default)'} / {detail.routing_key} (from {detail.origin_from})"
        if detail.routing_key is not None
        else "unknown"
    )
    rows = [
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
    if detail.body_is_json:
        text = orjson.dumps(body, option=orjson.OPT_INDENT_2).decode()
        console.print(Panel(Syntax(text, "json", word_wrap=True), title="body", title_align="left"))
    else:
        console.print(Panel(escape(str(body)), title="body (not JSON)", title_align="left"))


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
    for column in ("id", "type", "reason", "to exchange", "routing key"):
        table.add_column(column, overflow="fold")
    for move in result.planned:
        table.add_row(
            escape(move.id),
            escape(move.event_type or "-"),
            escape(move.reason),
            escape(move.exchange or "(default)"),
            escape(move.routing_key),
        )
    console.print(table)
    console.print(
        f"dry run: would replay {len(result.planned)}, skip {result.skipped}, "
        f"cannot replay {result.failed} (looked at {result.scanned} of {result.total}); "
        "nothing was moved"
    )


def print_counts(result: ReplayResult, queue: str) -> None:
    """The counts of a replay, what an interruption left, errors and the action id."""
    console.print(
        f"replayed {result.replayed}, skipped {result.skipped}, failed {result.failed}"
        + (f", in doubt {result.in_doubt}" if result.in_doubt else "")
        + f" (looked at {result.scanned} of {result.total} in {queue}, {result.elapsed_s:.1f} s)"
    )
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
