"""The one middleware of every request: an idempotent POST looks its key up once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager

from services.registry.app import create_app
from shared.db import Database
from tests.conftest import running
from tests.factories import bearer, make_admin_key


@contextmanager
def statements_run_on(db: Database, seen: list[str]) -> Iterator[None]:
    """Record the SQL of every statement run on the connections `db` hands out meanwhile."""

    def log(query) -> None:
        seen.append(query.query)

    def logged(open_):
        @asynccontextmanager
        async def opened(*args, **kwargs):
            async with open_(*args, **kwargs) as conn:
                with conn.query_logger(log):
                    yield conn

        return opened

    ways = ("connection", "transaction")
    for way in ways:
        setattr(db, way, logged(getattr(db, way)))
    try:
        yield
    finally:
        for way in ways:
            delattr(db, way)  # the methods again


async def test_an_idempotent_post_looks_its_api_key_up_once(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        statements: list[str] = []
        with statements_run_on(app.state.db, statements):
            created = await client.post(
                "/partners",
                json={"name": "IOM", "kind": "un_agency"},
                headers={**bearer(admin), "Idempotency-Key": "one-look-up"},
            )
            assert created.status_code == 201, created.text
            look_ups = [s for s in statements if "FROM hub.api_keys" in s]
            assert len(look_ups) == 1
            statements.clear()
            listed = await client.get("/partners", headers=bearer(admin))
            assert listed.status_code == 200
            look_ups = [s for s in statements if "FROM hub.api_keys" in s]
            assert len(look_ups) == 1
