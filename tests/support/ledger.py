"""Helpers of the ledger tests: verify a test database, change rows behind the guards."""

from __future__ import annotations

from typing import Any

import asyncpg

from consumer.core.settings import Settings
from consumer.ledger.verify import VerifyReport, verify
from consumer.store import db


async def verify_db(settings: Settings, **options: Any) -> VerifyReport:
    """:func:`consumer.ledger.verify.verify` on its own connection to ``settings``' database
    (``options``: ``expect_head``, ``projections``, ``seal_bound_s``)."""
    conn = await db.connect(settings.dsn)
    try:
        return await verify(conn, **options)
    finally:
        await conn.close()


async def without_triggers(pool: asyncpg.Pool, sql: str, *args: object) -> None:
    """Run ``sql`` as a superuser with the append-only triggers off (a tamperer)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")  # triggers off
        await conn.execute(sql, *args)
