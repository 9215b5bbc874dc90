"""How the CLI shows things: times, shortened text, status colours, tables, ``--json``.

Shared by every command group (``audit``, ``pause``/``resume``/``paused``, ``dlq``):
:func:`when` prints a time, :func:`cut` a one-line excerpt, :func:`emit` a result as
JSON when ``--json`` asks for it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from rich.table import Table

from consumer.cli.common import console, print_json
from consumer.queries.models import TaskSummary

__all__ = ["counts_table", "cut", "emit", "print_page", "status", "tasks_table", "when"]

_STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "rejected": "magenta",
    "executing": "cyan",
    "approved": "blue",
    "pending": "yellow",
}


def when(value: datetime | None) -> str:
    """A time for tables: UTC, to the second (``-`` for None)."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def cut(text: str | None, width: int = 60) -> str:
    """``text`` on one line (whitespace runs become one space), at most ``width``
    characters (``…`` marks a cut); ``-`` for empty or None."""
    if not text:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def status(value: str) -> str:
    """A task status in its colour (rich markup)."""
    style = _STATUS_STYLE.get(value, "white")
    return f"[{style}]{value}[/{style}]"


def emit(result: BaseModel | list[Any], as_json: bool) -> bool:
    """Print ``result`` (a model or a list of models) as JSON when ``as_json``; return
    True if it was printed."""
    if not as_json:
        return False
    if isinstance(result, BaseModel):
        print_json(result.model_dump(mode="json"))
    else:
        print_json([r.model_dump(mode="json") for r in result])
    return True


def tasks_table(items: list[TaskSummary], title: str) -> Table:
    """A table of tasks: created, id, status, agent, services, cause, request."""
    table = Table(title=title, title_justify="left")
    table.add_column("created")
    table.add_column("task", no_wrap=True)
    table.add_column("status")
    table.add_column("agent")
    table.add_column("services")
    table.add_column("cause")
    table.add_column("request")
    for t in items:
        table.add_row(
            when(t.created_at),
            str(t.task_id),
            status(t.status.value),
            t.agent_type or "-",
            ", ".join(t.services_touched) or "-",
            t.error_cause or "-",
            cut(t.request_text),
        )
    return table


def print_page(items: list[TaskSummary], next_cursor: str | None, title: str) -> None:
    """Print a page of tasks as a table, and how to get the next page if there is one."""
    if not items:
        console.print("no matching tasks")
        return
    console.print(tasks_table(items, title))
    if next_cursor:
        console.print(f"more: add --cursor {next_cursor}", highlight=False, soft_wrap=True)


def counts_table(title: str, counts: dict[str, int]) -> Table:
    """A two-column table of counts (key, tasks)."""
    table = Table(title=title, title_justify="left")
    table.add_column("key")
    table.add_column("tasks", justify="right")
    for key, n in counts.items():
        table.add_row(key, str(n))
    return table
