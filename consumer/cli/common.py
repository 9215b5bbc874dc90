"""What every CLI command shares: settings, one-line errors, async running, output."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeVar

import orjson
import typer
from pydantic import ValidationError
from rich.console import Console

from consumer.exceptions import (
    BrokerUnavailable,
    ConfigurationError,
    DatabaseUnavailable,
    InvalidArgument,
    TaskledgerError,
    TaskNotFound,
)
from consumer.settings import Settings, redact_text

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)

#: Exit codes: 1 = the operation found a problem (verify, failed replays), 2 = usage or
#: configuration error, 3 = a service is unreachable, 4 = not found.
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
        fail(f"invalid setting TASKLEDGER_{where.upper()}: {first['msg']}")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``; turn the package's errors into one-line messages and exit codes."""
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise typer.Exit(130) from None
    except (DatabaseUnavailable, BrokerUnavailable) as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    except TaskNotFound as exc:
        fail(str(exc), EXIT_NOT_FOUND)
    except (InvalidArgument, ConfigurationError) as exc:
        fail(str(exc), EXIT_USAGE)
    except TaskledgerError as exc:
        fail(str(exc), 1)


_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(value: str | None, *, name: str = "time") -> datetime | None:
    """Parse an RFC 3339 time or a relative one (``15m``, ``7d``: that long ago).

    Raises :class:`InvalidArgument` with a one-line reason.
    """
    if value is None or value == "":
        return None
    text = value.strip()
    if text[:-1].isdigit() and text[-1:] in _UNITS:
        return datetime.now(UTC) - timedelta(**{_UNITS[text[-1]]: int(text[:-1])})
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument(
            f"{name} {value!r} is neither RFC 3339 (2026-11-01T10:00:00Z) nor relative (7d, 12h, 30m)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def print_json(value: Any) -> None:
    """Write ``value`` as indented JSON to stdout (for ``--json``)."""
    sys.stdout.write(
        orjson.dumps(
            value, default=str, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
        ).decode()
        + "\n"
    )
