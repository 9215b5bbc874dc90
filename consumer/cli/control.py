"""``taskledger pause|resume|paused``: operator control of dispatch on the command line.

``pause`` and ``resume`` publish ``control.*`` events (every capacity-handler instance
sees them) and record the operator action (:mod:`consumer.operations.control`); ``paused`` shows
what waits in the pause queue and why (:func:`consumer.queries.reads.pause_queue`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

import typer
from rich.table import Table

from consumer.cli.common import (
    console,
    fail,
    load_settings,
    open_pool,
    print_json,
    quiet_client_logs,
    run,
    usage_errors,
)
from consumer.cli.render import when
from consumer.core.settings import Settings
from consumer.operations import control
from consumer.queries import reads
from consumer.queries.models import PauseEntry, PauseQueueView
from consumer.queries.times import parse_time

__all__ = ["register"]

TaskOpt = Annotated[
    str | None, typer.Option("--task", metavar="TASK_ID", help="One task (UUID); default: all.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _task(value: str | None) -> UUID | None:
    if value is None:
        return None
    try:
        return UUID(value)
    except ValueError:
        fail(f"--task {value!r} is not a UUID")


def _needs(entry: PauseEntry) -> str:
    r = entry.required
    parts = [f"{entry.agent_type}: {r.cpu_cores:g} CPU", f"{r.memory_mb} MB RAM"]
    if r.gpu_vram_mb:
        parts.append(f"{r.gpu_vram_mb} MB VRAM")
    text = ", ".join(parts)
    if entry.not_before and entry.not_before > datetime.now(UTC):
        text += f"; not before {when(entry.not_before)}"
    if entry.held:
        text += "; held by an operator"
    return text


def pause(
    task: TaskOpt = None,
    until: Annotated[
        str | None,
        typer.Option(
            metavar="TIME",
            help="Lift the hold by itself then: RFC 3339, or from now (30m, 2h, 1d).",
        ),
    ] = None,
    reason: Annotated[
        str | None, typer.Option(metavar="TEXT", help="Why (recorded and shown by paused).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Hold dispatch: of all work, or of one task (--task). Every handler instance obeys."""
    task_id = _task(task)
    with usage_errors():  # relative times count from now: --until 30m
        resume_after = parse_time(until, name="--until", ahead=True)
    settings = load_settings()
    quiet_client_logs(settings)
    actor = control.default_actor(settings)
    event_id = run(
        control.pause(settings, task_id=task_id, until=resume_after, reason=reason, actor=actor)
    )
    what = f"task {task_id}" if task_id else "all dispatch"
    if as_json:
        print_json(
            {"event_id": event_id, "action": "pause", "task_id": task_id, "until": resume_after}
        )
        return
    tail = f" until {when(resume_after)}" if resume_after else ""
    console.print(f"paused {what}{tail} (event {event_id}, by {actor})", highlight=False)


def resume(
    task: TaskOpt = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Dispatch that task now, capacity or not (needs --task; trigger manual).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Lift a hold: the one on all dispatch, or one task's (--task); --force sends it now."""
    task_id = _task(task)
    if force and task_id is None:
        fail("--force needs a task: give --task ID")
    settings = load_settings()
    quiet_client_logs(settings)
    actor = control.default_actor(settings)
    event_id = run(control.resume(settings, task_id=task_id, force=force, actor=actor))
    action = "force" if force else "resume"
    if as_json:
        print_json({"event_id": event_id, "action": action, "task_id": task_id})
        return
    what = f"task {task_id}" if task_id else "all dispatch"
    verb = "forced" if force else "resumed"
    console.print(f"{verb} {what} (event {event_id}, by {actor})", highlight=False)


async def _view(settings: Settings) -> PauseQueueView:
    async with open_pool(settings) as pool:
        return await reads.pause_queue(pool)


def paused(as_json: JsonOpt = False) -> None:
    """What waits and why: the pause queue (most urgent first) and the operator holds."""
    settings = load_settings()
    view = run(_view(settings))
    if as_json:
        print_json(view.model_dump(mode="json"))
        return
    if not view.entries:
        console.print("nothing waits in the pause queue")
    else:
        table = Table(title=f"pause queue ({len(view.entries)})", title_justify="left")
        for name in ("task", "reason", "priority", "waiting since", "resume after", "needs"):
            table.add_column(name, no_wrap=name == "task")
        for e in view.entries:
            table.add_row(
                str(e.task_id),
                e.reason,
                str(e.priority),
                when(e.paused_at),
                when(e.resume_after),
                _needs(e),
            )
        console.print(table)
    if view.holds:
        holds = Table(title="holds", title_justify="left")
        for name in ("scope", "task", "reason", "since", "until"):
            holds.add_column(name)
        for h in view.holds:
            holds.add_row(
                h.scope,
                str(h.task_id) if h.task_id else "all",
                h.reason or "-",
                when(h.created_at),
                when(h.resume_after),
            )
        console.print(holds)


def register(app: typer.Typer) -> None:
    """Add the top-level commands ``pause``, ``resume`` and ``paused`` to ``app``."""
    app.command("pause")(pause)
    app.command("resume")(resume)
    app.command("paused")(paused)
