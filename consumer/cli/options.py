"""The task-filter options of the ``audit`` commands, declared once.

Each option (``--status``, ``--since``, ``--until``, ``--service``, ``--all-services``,
``--agent-type``, ``--cause``, ``--intent``, ``--project``, ``--has-suggestions``, ``--limit``, ``--cursor``) is declared in
:data:`FILTER_OPTIONS`. A command takes them with :func:`filter_options`: it declares
one parameter ``f: TaskFilter`` and the decorator puts the options (all, or all but
those it leaves out) in its place; the command is called with the :class:`TaskFilter`
that :func:`build_filter` makes of them. ``JsonOpt`` and ``LimitOpt`` serve the other
commands too.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from consumer.cli.common import fail, usage_errors
from consumer.queries.filters import DEFAULT_PAGE, MAX_PAGE, TaskFilter
from consumer.queries.times import parse_time
from contracts import AgentType, ErrorCause, TaskStatus

__all__ = ["FILTER_OPTIONS", "JsonOpt", "LimitOpt", "build_filter", "filter_options"]

E = TypeVar("E", TaskStatus, AgentType, ErrorCause)
Command = Callable[..., None]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
LimitOpt = Annotated[
    int, typer.Option(min=1, max=MAX_PAGE, metavar="N", help="Rows per page (1..500).")
]

#: Every filter option: (parameter name, type with its typer.Option, default).
FILTER_OPTIONS: tuple[tuple[str, Any, Any], ...] = (
    (
        "status",
        Annotated[
            list[str] | None,
            typer.Option(
                "--status",
                metavar="STATUS",
                show_default=False,
                help="Task status: pending, approved, executing, completed, failed, rejected. "
                "Repeat for several (any of them).",
            ),
        ],
        None,
    ),
    (
        "since",
        Annotated[
            str | None,
            typer.Option(
                metavar="TIME",
                help="Created at or after: RFC 3339 (2026-11-01T10:00:00Z) or relative "
                "(7d, 12h, 30m).",
            ),
        ],
        None,
    ),
    (
        "until",
        Annotated[
            str | None,
            typer.Option(
                metavar="TIME", help="Created before: RFC 3339 or relative (1d = a day ago)."
            ),
        ],
        None,
    ),
    (
        "service",
        Annotated[
            list[str] | None,
            typer.Option(
                "--service",
                metavar="SERVICE",
                show_default=False,
                help="Touched this service. Repeat for several: any of them (all: --all-services).",
            ),
        ],
        None,
    ),
    (
        "all_services",
        Annotated[
            bool,
            typer.Option("--all-services", help="With several --service: touched all of them."),
        ],
        False,
    ),
    (
        "agent_type",
        Annotated[
            str | None,
            typer.Option(
                metavar="TYPE",
                help="Agent type that ran it: orchestrator, infra, desktop, code, research.",
            ),
        ],
        None,
    ),
    (
        "cause",
        Annotated[
            str | None,
            typer.Option(
                "--cause",
                metavar="CAUSE",
                help="Error cause: resource, application, dependency, unknown.",
            ),
        ],
        None,
    ),
    (
        "intent",
        Annotated[
            str | None,
            typer.Option(
                metavar="VERB_SERVICE",
                help="e.g. deploy_kuma, restart_dns: the request, plan or steps carry the verb "
                "(or a synonym: install, rollout; reboot, bounce; ...) and the task touched the "
                "service.",
            ),
        ],
        None,
    ),
    (
        "project",
        Annotated[
            str | None,
            typer.Option(metavar="UUID", help="Tasks of this project (its UUID)."),
        ],
        None,
    ),
    (
        "has_suggestions",
        Annotated[
            bool | None,
            typer.Option(
                "--has-suggestions/--no-suggestions",
                show_default=False,
                help="Only tasks with suggestions (or, --no-suggestions, without any).",
            ),
        ],
        None,
    ),
    ("limit", LimitOpt, DEFAULT_PAGE),
    (
        "cursor",
        Annotated[
            str | None,
            typer.Option(
                metavar="CURSOR", help="Continue after a previous page (its printed cursor)."
            ),
        ],
        None,
    ),
)

_OPTION_OF = {
    "services": "--service",
    "statuses": "--status",
    "error_cause": "--cause",
    "project_id": "--project",
}


def _enum(kind: type[E], value: str, option: str) -> E:
    try:
        return kind(value.strip().lower())
    except ValueError:
        choices = ", ".join(m.value for m in kind)
        fail(f"{option} {value!r} is not one of: {choices}")


def build_filter(
    *,
    status: list[str] | None = None,
    since: str | None = None,
    until: str | None = None,
    service: list[str] | None = None,
    all_services: bool = False,
    agent_type: str | None = None,
    cause: str | None = None,
    intent: str | None = None,
    project: str | None = None,
    has_suggestions: bool | None = None,
    limit: int = DEFAULT_PAGE,
    cursor: str | None = None,
) -> TaskFilter:
    """Build the :class:`TaskFilter` of the command-line options; bad values exit 2."""
    statuses = [_enum(TaskStatus, s, "--status") for s in status or []]
    with usage_errors():
        start = parse_time(since, name="--since")
        end = parse_time(until, name="--until")
    try:
        return TaskFilter(
            statuses=statuses,
            since=start,
            until=end,
            services=service or [],
            service_mode="all" if all_services else "any",
            agent_type=_enum(AgentType, agent_type, "--agent-type") if agent_type else None,
            error_cause=_enum(ErrorCause, cause, "--cause") if cause else None,
            intent=intent,
            project_id=project.strip() if project else None,
            has_suggestions=has_suggestions,
            limit=limit,
            cursor=cursor,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "filter"
        option = _OPTION_OF.get(field, "--" + field.replace("_", "-"))
        fail(f"{option}: {first['msg'].removeprefix('Value error, ')}")


def filter_options(*, without: Iterable[str] = ()) -> Callable[[Command], Command]:
    """Give a command the filter options (but those named in ``without``) in place of its
    parameter ``f``, in the order of :data:`FILTER_OPTIONS`; it is called with
    ``f=build_filter(...)`` of their values and its other parameters as given."""
    skipped = set(without)
    chosen = [
        (name, kind, default) for name, kind, default in FILTER_OPTIONS if name not in skipped
    ]

    def decorate(command: Command) -> Command:
        options = [
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind
            )
            for name, kind, default in chosen
        ]
        parameters: list[inspect.Parameter] = []
        for parameter in inspect.signature(command, eval_str=True).parameters.values():
            if parameter.name == "f":
                parameters.extend(options)
            else:
                parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))

        @functools.wraps(command, assigned=("__module__", "__name__", "__qualname__", "__doc__"))
        def with_filter(**given: Any) -> None:
            values = {name: given.pop(name) for name, _, _ in chosen}
            command(f=build_filter(**values), **given)

        signature = inspect.Signature(parameters, return_annotation=None)
        with_filter.__signature__ = signature  # type: ignore[attr-defined]
        with_filter.__annotations__ = {p.name: p.annotation for p in parameters}
        return with_filter

    return decorate
