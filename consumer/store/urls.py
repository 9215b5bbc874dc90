"""Small helpers for PostgreSQL URLs shared by the db layer, migrations and tests."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def sqlalchemy_url(dsn: str) -> str:
    """Turn a libpq-style ``postgresql://`` URL into SQLAlchemy's asyncpg form."""
    scheme, rest = dsn.split("://", 1) if "://" in dsn else ("postgresql", dsn)
    if scheme in ("postgres", "postgresql"):
        scheme = "postgresql+asyncpg"
    return f"{scheme}://{rest}"


def asyncpg_dsn(dsn: str) -> str:
    """Turn a SQLAlchemy-style URL (``postgresql+asyncpg://``) into one asyncpg accepts."""
    scheme, sep, rest = dsn.partition("://")
    if not sep:
        return dsn
    return f"postgresql://{rest}" if scheme.startswith("postgres") else dsn


def database_name(dsn: str) -> str:
    """Return the database named in ``dsn`` (``postgres`` when none is given)."""
    path = urlsplit(asyncpg_dsn(dsn)).path.lstrip("/")
    return path or "postgres"


def with_database(dsn: str, name: str) -> str:
    """Return ``dsn`` pointing at database ``name`` instead."""
    parts = urlsplit(asyncpg_dsn(dsn))
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
