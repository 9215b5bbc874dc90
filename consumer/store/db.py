"""The database boundary: pool creation, named queries, driver-error translation.

Only this module (and the repositories built on it) talk to asyncpg. Driver errors are
translated here into :mod:`consumer.core.errors`, so the rest of the service decides on
"retry later" (:class:`DatabaseUnavailable`) or "refused by the tamper guard"
(:class:`ImmutableRecord`) without knowing asyncpg.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import cache
from importlib import resources
from typing import Any, Literal

import asyncpg
import orjson

from consumer.core.errors import (
    DatabaseMisconfigured,
    DatabaseTimeout,
    DatabaseUnavailable,
    ImmutableRecord,
)
from consumer.core.settings import redact_text
from consumer.store.urls import asyncpg_dsn

#: SQLSTATE raised by the immutability triggers (migration 004).
IMMUTABLE_SQLSTATE = "TL001"

_QUERY_HEADER = re.compile(r"^-- (?P<name>[a-z_][a-z0-9_]*) --\s*$", re.MULTILINE)

#: SQLSTATE classes (first two characters) after which the same work, run again as is,
#: can succeed once the server is back: connection exceptions, insufficient resources,
#: operator intervention (shutdown, cannot connect now), system errors, transaction
#: rollback (deadlock, serialization failure), object not in prerequisite state (lock
#: not available), internal errors.
_TRANSIENT_CLASSES = frozenset({"08", "53", "57", "58", "40", "55", "XX"})
#: SQLSTATE classes and codes that need an operator: the login (28), the database name
#: (3D), the schema name (3F), privileges and objects a migration creates (42501
#: insufficient_privilege, 42P01 undefined_table, 42703 undefined_column, 42883
#: undefined_function).
_CONFIGURATION_CLASSES = frozenset({"28", "3D", "3F"})
_CONFIGURATION_CODES = frozenset({"42501", "42P01", "42703", "42883"})
#: query_canceled: a statement timeout (or a cancel by an operator).
_TIMEOUT_CODES = frozenset({"57014"})

#: Driver and socket errors that mean "the server is away" (no SQLSTATE).
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    asyncpg.InterfaceError,
)

Kind = Literal["unavailable", "misconfigured", "timeout", "data"]


def classify(exc: BaseException) -> Kind:
    """How the service treats a database error: the one place that decides.

    ``unavailable``, ``misconfigured`` and ``timeout`` hold the work (nothing acked,
    nothing dead-lettered); ``data`` means this work itself is refused (bisect, retry
    later, dead-letter). Never the other way: an unknown driver error without SQLSTATE
    is ``unavailable``.
    """
    if isinstance(exc, TimeoutError):
        return "timeout"
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(exc, asyncpg.PostgresError) and isinstance(sqlstate, str):
        if sqlstate in _TIMEOUT_CODES:
            return "timeout"
        if sqlstate[:2] in _CONFIGURATION_CLASSES or sqlstate in _CONFIGURATION_CODES:
            return "misconfigured"
        if sqlstate[:2] in _TRANSIENT_CLASSES:
            return "unavailable"
        return "data"
    if isinstance(exc, _CONNECTION_ERRORS):
        return "unavailable"
    return "data"


def _describe(exc: BaseException) -> str:
    text = redact_text(str(exc)) or type(exc).__name__
    sqlstate = getattr(exc, "sqlstate", None)
    return f"{text} (SQLSTATE {sqlstate})" if sqlstate else text


@cache
def queries() -> dict[str, str]:
    """Return every named SQL statement of ``consumer/store/sql/*.sql`` by name.

    Each statement is preceded by a header line ``-- name --`` and a one-line comment
    saying what it is for. Names are unique across files.
    """
    found: dict[str, str] = {}
    for entry in sorted(resources.files("consumer.store.sql").iterdir(), key=lambda e: e.name):
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


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (for DDL, which takes no bind parameters)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """``text`` as a quoted SQL string literal (for DDL, which takes no bind parameters)."""
    return "'" + text.replace("'", "''") + "'"


#: Session settings of every taskledger connection. ``jit`` off: PostgreSQL compiles a
#: statement whose estimated cost passes ``jit_above_cost``, and an estimate inflated by
#: its correlated subqueries made `audit orphans` at 20M ledger rows compile 569
#: functions (about 350 ms) to return 50 rows; these statements are short, by index.
SESSION_SETTINGS = {"jit": "off"}


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("jsonb", "json"):
        await conn.set_type_codec(
            typename,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 4,
    command_timeout: float | None = 60,
    server_settings: dict[str, str] | None = None,
) -> asyncpg.Pool:
    """Open an asyncpg pool with JSON codecs and :data:`SESSION_SETTINGS`
    (``server_settings``: more session settings, such as ``statement_timeout``); raises
    :class:`DatabaseUnavailable`."""
    with translate_errors():
        pool = await asyncpg.create_pool(
            asyncpg_dsn(dsn),
            min_size=min_size,
            max_size=max_size,
            init=_init_connection,
            command_timeout=command_timeout,
            server_settings={**SESSION_SETTINGS, **(server_settings or {})},
        )
    assert pool is not None
    return pool


async def connect(dsn: str) -> asyncpg.Connection:
    """Open one connection with JSON codecs and :data:`SESSION_SETTINGS`; raises
    :class:`DatabaseUnavailable`."""
    with translate_errors():
        conn = await asyncpg.connect(asyncpg_dsn(dsn), server_settings=SESSION_SETTINGS)
        await _init_connection(conn)
    return conn


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn asyncpg/socket errors into the package's own (messages redacted).

    :class:`ImmutableRecord` for the tamper guard; :class:`DatabaseMisconfigured`,
    :class:`DatabaseTimeout` or :class:`DatabaseUnavailable` for what :func:`classify`
    says holds; anything else (bad data, a bug) passes unchanged.
    """
    try:
        yield
    except (asyncpg.PostgresError, *_CONNECTION_ERRORS, TimeoutError) as exc:
        if getattr(exc, "sqlstate", None) == IMMUTABLE_SQLSTATE:
            raise ImmutableRecord(str(exc)) from exc
        kind = classify(exc)
        if kind == "misconfigured":
            raise DatabaseMisconfigured(_describe(exc)) from exc
        if kind == "timeout":
            raise DatabaseTimeout(_describe(exc)) from exc
        if kind == "unavailable":
            raise DatabaseUnavailable(_describe(exc)) from exc
        raise


async def ping(pool: asyncpg.Pool, timeout: float = 2.0) -> bool:
    """True if the server answers ``SELECT 1`` within ``timeout`` seconds."""
    try:
        async with pool.acquire(timeout=timeout) as conn:
            await conn.fetchval(q("ping"), timeout=timeout)
    except Exception:
        return False
    return True


@asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """Acquire a connection and run a READ COMMITTED transaction on it, translating errors.

    The level is explicit, not the server's default: the writers' ordering rests on it
    (each statement after the per-task locks sees what the lock's previous holder
    committed; under REPEATABLE READ the snapshot of the first statement would hide it)."""
    with translate_errors():
        async with pool.acquire() as conn, conn.transaction(isolation="read_committed"):
            yield conn


def record_dict(record: Any) -> dict[str, Any]:
    """Return an asyncpg Record as a plain dict."""
    return dict(record.items())
