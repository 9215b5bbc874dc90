"""What every CLI command shares: settings, one-line errors, async running, a database
pool, JSON output."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, NoReturn, TypeVar

import asyncpg
import orjson
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

# typer vendors its own click (typer._click): its exceptions and command classes.
from typer import _click as click
from typer._click import exceptions as click_errors

from consumer.core import logs
from consumer.core.errors import (
    BrokerUnavailable,
    ConfigurationError,
    DatabaseUnavailable,
    InvalidArgument,
    TaskledgerError,
    TaskNotFound,
)
from consumer.core.settings import Settings, redact_text, redact_url

# Transitional: the parser moved to consumer.queries.times; cli/dlq.py still imports it here.
from consumer.store.db import create_pool

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)

#: Exit codes: 1 = the operation found a problem (verify, failed replays) or the service
#: crashed; 2 = the command line is wrong (usage); 3 = the environment is wrong: an invalid
#: setting, a server unreachable or refusing us (login, missing database), a schema not
#: migrated; 4 = not found.
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_NOT_FOUND = 4


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``error: message`` on one line to stderr and exit with ``code``."""
    err_console.print(f"[red]error:[/red] {redact_text(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _no_type_label(ctx: Any = None) -> str:
    return ""


def plain_help(command: click.Command) -> None:
    """Use click's plain help and errors on ``command`` and every subcommand (typer's rich
    mode draws boxes and labels flags ``<bool>``); an option without a metavar shows its
    name (``--port PORT``), not its type (``<int range>``)."""
    if hasattr(command, "rich_markup_mode"):
        command.rich_markup_mode = None
    for param in command.params:
        flag = getattr(param, "is_flag", False) or getattr(param, "is_bool_flag", False)
        if param.metavar is None and param.name and not flag and param.param_type_name == "option":
            param.metavar = param.name.upper()  # not typer's <str> / <int range>
        if param.param_type_name == "argument" and hasattr(param, "display_type_rich"):
            setattr(param, "display_type_rich", _no_type_label)  # noqa: B010  ("KEY <str>")
    for sub in getattr(command, "commands", {}).values():
        plain_help(sub)


def run_app(app: typer.Typer, prog_name: str = "taskledger") -> NoReturn:
    """Run ``app`` as the console script: a wrong command line is one line, ``error: ...``,
    exit 2 (``--help`` for the usage); no arguments print the help."""
    command = typer.main.get_command(app)
    plain_help(command)
    try:
        code = command.main(prog_name=prog_name, standalone_mode=False)
    except click_errors.NoArgsIsHelpError as exc:
        exc.show()
        code = exc.exit_code
    except click_errors.UsageError as exc:
        where = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        message = " ".join(exc.format_message().split())
        err_console.print(
            f"error: {escape(redact_text(message))}{where}", highlight=False, soft_wrap=True
        )
        code = EXIT_USAGE
    except click_errors.ClickException as exc:
        err_console.print(
            f"error: {escape(redact_text(exc.format_message()))}", highlight=False, soft_wrap=True
        )
        code = exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("interrupted", highlight=False)
        code = 130
    sys.exit(code if isinstance(code, int) else 0)


def quiet_client_logs(settings: Settings) -> None:
    """Logging for a one-shot command: warnings and up on stderr, and nothing from the AMQP
    client, whose connection errors (``error when creating transport``) become our own
    one-line error."""
    level = "WARNING" if settings.log_level.upper() in ("INFO", "DEBUG") else settings.log_level
    logs.configure(level, settings.log_json)
    for noisy in ("aiormq", "aio_pika"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)


def load_settings(**overrides: Any) -> Settings:
    """Read the settings (with CLI overrides); a bad value exits with a one-line error."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        fail(f"invalid setting TASKLEDGER_{where.upper()}: {first['msg']}", EXIT_UNAVAILABLE)


@contextmanager
def usage_errors() -> Iterator[None]:
    """Turn an :class:`InvalidArgument` raised inside (a bad option value) into
    ``error: <its message>`` and exit 2."""
    try:
        yield
    except InvalidArgument as exc:
        fail(str(exc))


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``; turn the package's errors into one-line messages and exit codes."""
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise typer.Exit(130) from None
    except (DatabaseUnavailable, BrokerUnavailable, ConfigurationError) as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    except TaskNotFound as exc:
        fail(str(exc), EXIT_NOT_FOUND)
    except InvalidArgument as exc:
        fail(str(exc), EXIT_USAGE)
    except TaskledgerError as exc:
        fail(str(exc), 1)


def print_json(value: Any) -> None:
    """Write ``value`` as indented JSON to stdout (for ``--json``)."""
    sys.stdout.write(
        orjson.dumps(
            value, default=str, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
        ).decode()
        + "\n"
    )


@asynccontextmanager
async def open_pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A small pool for one command; an unreachable database says where it looked."""
    try:
        pool = await create_pool(settings.dsn, min_size=1, max_size=2)
    except DatabaseUnavailable as exc:
        where = redact_url(settings.dsn)
        raise DatabaseUnavailable(f"cannot reach PostgreSQL at {where}: {exc}") from exc
    try:
        yield pool
    finally:
        await pool.close()
