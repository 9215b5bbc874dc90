"""Every connection taskledger opens runs with its session settings (consumer.store.db)."""

from __future__ import annotations

from consumer.store import db


async def test_pools_and_single_connections_run_without_jit(db_url: str) -> None:
    """JIT compilation of one statement whose estimated cost passed jit_above_cost took
    about 350 ms for a 50-row `audit orphans` answer at 20M rows: taskledger's sessions
    have it off, and a caller's own settings still apply beside it."""
    pool = await db.create_pool(db_url, server_settings={"statement_timeout": "1234"})
    try:
        assert await pool.fetchval("SHOW jit") == "off"
        assert await pool.fetchval("SHOW statement_timeout") == "1234ms"
    finally:
        await pool.close()
    conn = await db.connect(db_url)
    try:
        assert await conn.fetchval("SHOW jit") == "off"
    finally:
        await conn.close()
