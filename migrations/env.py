"""Alembic environment: metadata from :mod:`consumer.store.models`, URL from the settings.

Online mode runs over SQLAlchemy's async engine (asyncpg); offline mode prints SQL.
The URL is taken, in order, from ``config.attributes["url"]`` (set by ``taskledger
migrate``), ``TASKLEDGER_MIGRATION_DATABASE_URL``, ``TASKLEDGER_DATABASE_URL``.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from consumer.core.settings import Settings
from consumer.store.models import Base
from consumer.store.partitions import is_partition_name
from consumer.store.urls import sqlalchemy_url

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url")
    if url is None:
        url = Settings().owner_dsn
    return sqlalchemy_url(str(url))


def run_migrations_offline() -> None:
    """Emit the migration SQL to stdout instead of running it."""
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Autogenerate compares the models with the parents of the monthly partitions (013),
    not with the partitions themselves (they are created at run time)."""
    return not (type_ == "table" and name is not None and is_partition_name(name))


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection, target_metadata=target_metadata, include_name=_include_name
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    """Run the migrations against the database (reusing a given connection if any)."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    asyncio.run(_run_async())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
