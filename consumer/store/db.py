"""The database boundary: pool creation, named queries, driver-error translation.

Only this module (and the repositories built on it) talk to asyncpg. Driver errors are
translated here into :mod:`consumer.exceptions`, so the rest of the service decides on
"retry later" (:class:`DatabaseUnavailable`) or "refused by the tamper guard"
(:class:`ImmutableRecord`) without knowing asyncpg.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import cache
from importlib import resources
from typing import Any

import asyncpg
import orjson

from consumer.db_url import asyncpg_dsn
from consumer.exceptions import DatabaseUnavailable, ImmutableRecord
from consumer.settings import redact_text

#: SQLSTATE raised by the immutability triggers (migration 004).
IMMUTABLE_SQLSTATE = "TL001"

_QUERY_HEADER = re.compile(r"^-- (?P<name>[a-z_][a-z0-9_]*) --\s*$", re.MULTILINE)

# Errors after which the same work, run again as is, can succeed: the server went away,
# is not there yet, or rolled the transaction back (deadlock, serialization failure).
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.QueryCanceledError,
    # deadlock_detected, serialization_failure: the same transaction succeeds when re-run
    asyncpg.TransactionRollbackError,
)


@cache
def queries() -> dict[str, str]:
    """Return every named SQL statement of ``consumer/sql/*.sql`` by name.

    Each statement is preceded by a header line ``-- name --`` and a one-line comment
    saying what it is for. Names are unique across files.
    """
    found: dict[str, str] = {}
    for entry in sorted(resources.files("consumer.sql").iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        text = entry.read_text(encoding="utf-8")
        parts = _QUERY_HEADER.split(text)
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in found:
                raise RuntimeError(f"query {name!r} defined twice (in {entry.name})")
            found[name] = body.strip()
    return found


def q(name: str) -> str:
    """Return the named SQL statement ``name``; raises KeyError if there is none."""
    return queries()[name]


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("jsonb", "json"):
        await conn.set_type_codec(
            typename,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 4, command_timeout: float | None = 60
) -> asyncpg.Pool:
    """Open an asyncpg pool with JSON codecs; raises :class:`DatabaseUnavailable`."""
    with translate_errors():
        pool = await asyncpg.create_pool(
            asyncpg_dsn(dsn),
            min_size=min_size,
            max_size=max_size,
            init=_init_connection,
            command_timeout=command_timeout,
        )
    assert pool is not None
    return pool


async def connect(dsn: str) -> asyncpg.Connection:
    """Open one connection with JSON codecs; raises :class:`DatabaseUnavailable`."""
    with translate_errors():
        conn = await asyncpg.connect(asyncpg_dsn(dsn))
        await _init_connection(conn)
    return conn


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn asyncpg/socket errors into the package's own (messages redacted)."""
    try:
        yield
    except asyncpg.PostgresError as exc:
        if getattr(exc, "sqlstate", None) == IMMUTABLE_SQLSTATE:
            raise ImmutableRecord(str(exc)) from exc
        if isinstance(exc, _UNAVAILABLE):
            raise DatabaseUnavailable(redact_text(str(exc)) or type(exc).__name__) from exc
        raise
    except _UNAVAILABLE as exc:
        raise DatabaseUnavailable(redact_text(str(exc)) or type(exc).__name__) from exc


@asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """Acquire a connection and run a transaction on it, translating errors."""
    with translate_errors():
        async with pool.acquire() as conn, conn.transaction():
            yield conn


def record_dict(record: Any) -> dict[str, Any]:
    """Return an asyncpg Record as a plain dict."""
    return dict(record.items())
