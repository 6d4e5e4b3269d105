"""One Alembic history for all schemas; the models and the migrations never drift apart.

Comparing the models with the database goes through Alembic, so through a SQLAlchemy engine;
the rest reads the database as the services do, on the asyncpg pool."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from services.notifications.app import create_app as notifications_app
from services.notifications.tables import metadata as notifications
from services.referrals.tables import metadata as referrals
from services.registry.tables import metadata as registry
from shared.db import Database, asyncpg_url
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


async def test_the_history_has_one_head_and_the_database_is_at_it(db: Database):
    head, known = code_revisions()
    assert head in known
    async with db.connection() as conn:
        current = await conn.fetchval("SELECT version_num FROM hub.alembic_version")
        schemas = {r["nspname"] for r in await conn.fetch("SELECT nspname FROM pg_namespace")}
    assert current == head
    assert schemas >= SCHEMAS


async def test_readyz_answers_503_until_the_schema_reaches_this_codes_revision(settings):
    async with running(notifications_app(settings)) as client:
        db = client._transport.app.state.db
        async with db.connection() as conn:
            await conn.execute("UPDATE hub.alembic_version SET version_num = 'older'")
        # 'older' is unknown to the code: that is how a later revision looks, so: ready.
        assert (await client.get("/readyz")).status_code == 200
        async with db.connection() as conn:
            await conn.execute("DELETE FROM hub.alembic_version")
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert "migrations" in response.json()["detail"]
