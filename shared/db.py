"""Async SQLAlchemy engine and sessions on asyncpg."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import MetaData
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from shared.settings import Settings

# One naming convention for every schema, so that constraint names stay stable in migrations.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def schema_metadata(schema: str) -> MetaData:
    """A MetaData for one PostgreSQL schema with the project's naming convention."""
    return MetaData(schema=schema, naming_convention=NAMING_CONVENTION)


def asyncpg_url(url: str) -> str:
    """Normalise any PostgreSQL URL to the asyncpg dialect SQLAlchemy expects."""
    parsed = make_url(url)
    if parsed.drivername in {"postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"}:
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def plain_url(url: str) -> str:
    """The URL without the SQLAlchemy driver suffix, as asyncpg.connect takes it."""
    parsed = make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


def create_engine(settings: Settings, *, application_name: str = "relais") -> AsyncEngine:
    """Build the engine of one process: a pool without pre-ping, bounded idle transactions.

    No `pool_pre_ping`: with asyncpg it costs three round trips on every checkout (a third of
    an intake's). A connection that died with the server fails the statement that finds it;
    SQLAlchemy recognises the disconnect and invalidates the whole pool, so one request per
    process answers 503 (`shared/problems.py`) and the next ones get fresh connections.
    """
    return create_async_engine(
        asyncpg_url(settings.require_database_url()),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_recycle=1800,
        connect_args={
            "server_settings": {
                "application_name": application_name,
                "idle_in_transaction_session_timeout": str(settings.idle_in_transaction_timeout_ms),
                "timezone": "UTC",
            },
            # Prepared statements stay valid across pgbouncer-less deployments; keep the cache.
            "command_timeout": 60,
        },
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def transaction(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """One unit of work: a session in a transaction, committed on success."""
    async with sessionmaker() as session, session.begin():
        yield session
