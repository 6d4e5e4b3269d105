"""Alembic environment: async, on asyncpg, version table in schema `hub`.

The migrations are written by hand. `tools/new_migration.py` passes the metadata of every
schema in `config.attributes["target_metadata"]` for autogenerate; this module imports no
service so that `shared` stays free of service code.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.ext.asyncio import create_async_engine

from shared.db import asyncpg_url

SCHEMAS = ("hub", "registry", "referrals", "notifications")
VERSION_TABLE_SCHEMA = "hub"

config = context.config
target_metadata = config.attributes.get("target_metadata")


def _url() -> str:
    url = config.attributes.get("database_url") or os.environ.get("DATABASE_URL")
    if not url:
        raise RuntimeError("DATABASE_URL is not set")
    return asyncpg_url(url)


def _include_name(name: str | None, type_: str, _parent_names: object) -> bool:
    if type_ == "schema":
        return name in SCHEMAS
    return True


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table_schema=VERSION_TABLE_SCHEMA,
        include_schemas=True,
        include_name=_include_name,
        compare_type=True,
        transaction_per_migration=True,
    )


def _run_sync(connection) -> None:
    for schema in SCHEMAS:
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    connection.commit()
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = create_async_engine(_url(), poolclass=pool.NullPool)
    async with engine.connect() as connection:
        # Serialise concurrent migrators (several replicas starting at once).
        await connection.execute(text("SELECT pg_advisory_lock(7263541)"))
        await connection.commit()
        try:
            await connection.run_sync(_run_sync)
        finally:
            await connection.execute(text("SELECT pg_advisory_unlock(7263541)"))
            await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        version_table_schema=VERSION_TABLE_SCHEMA,
        include_schemas=True,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        _run_sync(connectable)
    else:
        asyncio.run(_run_online())
