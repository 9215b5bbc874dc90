"""Operator actions: who is acting, and the one way to record what an operator did.

Every operator action (``pause``, ``resume``, ``force`` from :mod:`consumer.operations.control`;
``dlq.replay``, ``dlq.export``, ``dlq.purge``, ``dlq.import`` from :mod:`consumer.dlq`) is
one row of ``operator_actions``, written by :func:`record_action`. Control records inside
its own transaction (committed only once the broker confirmed the event); the dead-letter
tools hold an :class:`ActionRecorder`, a connection opened before they touch the queue so
that a database that cannot be reached stops them before anything moves.
"""

from __future__ import annotations

import getpass
import logging
from collections.abc import Mapping
from contextlib import suppress
from typing import Any
from uuid import UUID

import asyncpg

from consumer.core.errors import DatabaseUnavailable
from consumer.core.settings import Settings, redact_text
from consumer.store import db

__all__ = ["ActionRecorder", "default_actor", "record_action"]

log = logging.getLogger(__name__)


def default_actor(settings: Settings) -> str:
    """Who is acting: ``settings.operator``, else the OS user, else ``unknown``."""
    if settings.operator:
        return settings.operator
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "unknown"


async def record_action(
    conn: asyncpg.Connection,
    action: str,
    actor: str,
    params: Mapping[str, Any],
    result: Mapping[str, Any],
    *,
    event_id: UUID | None = None,
) -> int:
    """Insert one ``operator_actions`` row on ``conn``; return its id.

    ``event_id`` is the CloudEvent that carries the action, if one does. Runs in the
    caller's transaction, if any. Raises :class:`DatabaseUnavailable`.
    """
    with db.translate_errors():
        row = await conn.fetchrow(
            db.q("operator_record_action"), action, actor, dict(params), dict(result), event_id
        )
    assert row is not None
    return int(row["id"])


class ActionRecorder:
    """Records operator actions; opened before an operation so a dead database stops it early."""

    def __init__(self, settings: Settings, conn: asyncpg.Connection) -> None:
        self._settings = settings
        self._conn = conn

    @classmethod
    async def open(cls, settings: Settings) -> ActionRecorder:
        """Connect to PostgreSQL; raises :class:`DatabaseUnavailable`."""
        try:
            return cls(settings, await db.connect(settings.dsn))
        except DatabaseUnavailable as exc:
            raise DatabaseUnavailable(
                f"cannot reach PostgreSQL to record the operator action: {exc}"
            ) from exc

    async def record(
        self, action: str, actor: str, params: Mapping[str, Any], result: Mapping[str, Any]
    ) -> int:
        """Insert one ``operator_actions`` row; return its id. Retries once on a new connection.

        Raises :class:`DatabaseUnavailable`.
        """
        for attempt in (1, 2):
            try:
                action_id = await record_action(self._conn, action, actor, params, result)
            except DatabaseUnavailable:
                if attempt == 2:
                    raise
                with suppress(Exception):
                    await self._conn.close()
                self._conn = await db.connect(self._settings.dsn)
                continue
            log.info(
                "operator action recorded",
                extra={"action": action, "actor": actor, "action_id": action_id},
            )
            return action_id
        raise AssertionError("unreachable")

    async def record_quietly(
        self, action: str, actor: str, params: Mapping[str, Any], result: Mapping[str, Any]
    ) -> int | None:
        """:meth:`record`, but a failure is logged and returned as None (what was done stands)."""
        try:
            return await self.record(action, actor, params, result)
        except Exception as exc:  # the moves stand whatever the database says
            log.error(
                "could not record the operator action",
                extra={"action": action, "error": redact_text(str(exc))},
            )
            return None

    async def close(self) -> None:
        """Close the connection (errors ignored)."""
        with suppress(Exception):
            await self._conn.close()
