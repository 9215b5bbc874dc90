"""`taskledger migrate`: create the database if missing, then upgrade to head."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config

import migrations
from consumer.core.settings import Settings
from consumer.store.db import q, quote_ident, quote_literal, translate_errors
from consumer.store.partitions import ensure_partitions_at
from consumer.store.urls import asyncpg_dsn, database_name, with_database


def alembic_config(dsn: str, *, output_buffer: io.StringIO | None = None) -> Config:
    """Build the Alembic configuration in code (no ini file needed once installed).

    The application role's name comes from ``TASKLEDGER_APP_ROLE`` (migration 005).
    """
    cfg = Config(output_buffer=output_buffer) if output_buffer is not None else Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.attributes["url"] = dsn
    return cfg


async def ensure_database(dsn: str) -> bool:
    """Create the database named in ``dsn`` if it does not exist; True if created.

    Raises :class:`~consumer.core.errors.DatabaseUnavailable` if the server is not reachable.
    """
    name = database_name(dsn)
    with translate_errors():
        try:
            conn = await asyncpg.connect(asyncpg_dsn(dsn))
        except asyncpg.InvalidCatalogNameError:
            pass
        else:
            await conn.close()
            return False
        admin = await asyncpg.connect(asyncpg_dsn(with_database(dsn, "postgres")))
        try:
            try:
                await admin.execute(q("create_database").format(database=quote_ident(name)))
            except asyncpg.DuplicateDatabaseError:
                return False
        finally:
            await admin.close()
    return True


async def set_app_role_password(dsn: str, role: str, password: str) -> None:
    """Let the application role log in with ``password`` (owner privileges needed)."""
    with translate_errors():
        conn = await asyncpg.connect(asyncpg_dsn(dsn))
        try:
            statement = q("set_role_password").format(
                role=quote_ident(role), password=quote_literal(password)
            )
            await conn.execute(statement)
        finally:
            await conn.close()


def upgrade(dsn: str, revision: str = "head") -> None:
    """Upgrade the database at ``dsn`` to ``revision`` (in a worker thread's own loop)."""
    command.upgrade(alembic_config(dsn), revision)


def downgrade(dsn: str, revision: str = "base") -> None:
    """Downgrade the database at ``dsn`` to ``revision``."""
    command.downgrade(alembic_config(dsn), revision)


def offline_sql(dsn: str, revision: str = "head") -> str:
    """Return the SQL that upgrading from empty to ``revision`` would run."""
    buf = io.StringIO()
    command.upgrade(alembic_config(dsn, output_buffer=buf), revision, sql=True)
    return buf.getvalue()


def migrate(settings: Settings) -> bool:
    """Create the database if needed, upgrade it to head and create the ledger partitions
    ahead (``partitions_ahead`` months); True if the database was created."""
    created = asyncio.run(ensure_database(settings.owner_dsn))
    upgrade(settings.owner_dsn)
    # 013: this month's ledger partitions and the next TASKLEDGER_PARTITIONS_AHEAD
    asyncio.run(ensure_partitions_at(settings.owner_dsn, settings.partitions_ahead))
    if settings.app_role_password is not None:
        asyncio.run(
            set_app_role_password(
                settings.owner_dsn, settings.app_role, settings.app_role_password.get_secret_value()
            )
        )
    return created
