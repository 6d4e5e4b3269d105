"""One Alembic history for all schemas; the models and the migrations never drift apart."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.notifications.app import create_app as notifications_app
from services.notifications.tables import metadata as notifications
from services.referrals.tables import metadata as referrals
from services.registry.tables import metadata as registry
from shared.db import asyncpg_url
from shared.migrate import code_revisions
from shared.tables import metadata as hub
from tests.conftest import running

SCHEMAS = {"hub", "registry", "referrals", "notifications"}


def _diff(connection) -> list:
    context = MigrationContext.configure(
        connection,
        opts={
            "include_schemas": True,
            "include_name": lambda name, type_, _p: type_ != "schema" or name in SCHEMAS,
            "compare_type": True,
            "version_table_schema": "hub",
        },
    )
    return compare_metadata(context, [hub, registry, referrals, notifications])


async def test_the_migrated_database_matches_every_model(database_url):
    engine = create_async_engine(asyncpg_url(database_url))
    async with engine.connect() as connection:
        diff = await connection.run_sync(_diff)
    await engine.dispose()
    assert diff == [], f"models and migrations differ: {diff}"


async def test_the_history_has_one_head_and_the_database_is_at_it(database_url):
    head, known = code_revisions()
    assert head in known
    engine = create_async_engine(asyncpg_url(database_url))
    async with engine.connect() as connection:
        current = (
            await connection.execute(text("SELECT version_num FROM hub.alembic_version"))
        ).scalar()
        schemas = set(
            (await connection.execute(text("SELECT nspname FROM pg_namespace"))).scalars()
        )
    await engine.dispose()
    assert current == head
    assert schemas >= SCHEMAS


async def test_readyz_answers_503_until_the_schema_reaches_this_codes_revision(settings):
    async with running(notifications_app(settings)) as client:
        async with client._transport.app.state.sessionmaker() as session:
            await session.execute(text("UPDATE hub.alembic_version SET version_num = 'older'"))
            await session.commit()
        # 'older' is unknown to the code: that is how a later revision looks, so: ready.
        assert (await client.get("/readyz")).status_code == 200
        async with client._transport.app.state.sessionmaker() as session:
            await session.execute(text("DELETE FROM hub.alembic_version"))
            await session.commit()
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert "migrations" in response.json()["detail"]
