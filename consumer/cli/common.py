"""What every CLI command shares: settings, one-line errors, async running, a database
pool, JSON output."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, NoReturn, TypeVar

import asyncpg
import orjson
import typer
from pydantic import ValidationError
from rich.console import Console

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
