from __future__ import annotations

import asyncpg


async def test_cloned_database_is_migrated(pool: asyncpg.Pool) -> None:
    version = await pool.fetchval("SELECT version_num FROM alembic_version")
    assert version is not None
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 0
