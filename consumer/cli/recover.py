"""``taskledger recover TASK [--redispatch|--fail]``: act on a silent executing task.

Without an option it asks the task's agent now (``task.recovery_requested``); with
``--redispatch`` it dispatches the task again (attempt n+1); with ``--fail`` it fails the
task with cause ``agent_lost``. Trigger ``manual``; see :mod:`consumer.operations.recover`.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import typer

from consumer.admission.recovery import ManualAction
from consumer.cli.common import console, fail, load_settings, open_pool, print_json, run
from consumer.operations.actions import default_actor
from consumer.operations.recover import recover_task

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the ``recover`` command to ``app``."""
    app.command(name="recover")(recover)


def recover(
    task_id: Annotated[str, typer.Argument(metavar="TASK_ID", help="The executing task's UUID.")],
    redispatch: Annotated[
        bool, typer.Option("--redispatch", help="Dispatch it again (attempt n+1).")
    ] = False,
    fail_task: Annotated[
        bool, typer.Option("--fail", help="Fail it with cause agent_lost.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Recover a silent executing task: ask its agent now, --redispatch it, or --fail it."""
    if redispatch and fail_task:
        fail("--redispatch and --fail exclude each other", code=2)
    try:
        uid = UUID(task_id)
    except ValueError:
        fail(f"TASK_ID {task_id!r} is not a UUID", code=2)
    what: ManualAction = "redispatch" if redispatch else "fail" if fail_task else "request"
    settings = load_settings()

    async def go() -> dict[str, Any]:
        async with open_pool(settings) as pool:
            return await recover_task(pool, settings, uid, what, default_actor(settings))

    result = run(go())
    if as_json:
        print_json(result)
        return
    console.print(
        f"task {result['task_id']}: recovery {result['action']} (manual), "
        f"attempt {result['attempt']}; {result['message_type']} queued as {result['message_id']}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
