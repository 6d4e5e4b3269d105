"""The one middleware of every request: an idempotent POST looks its key up once."""

from __future__ import annotations

from sqlalchemy import event

from services.registry.app import create_app
from tests.conftest import running
from tests.factories import bearer, make_admin_key


async def test_an_idempotent_post_looks_its_api_key_up_once(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        look_ups: list[str] = []

        def count(_conn, _cursor, statement, *_args) -> None:
            if "FROM hub.api_keys" in statement:
                look_ups.append(statement)

        engine = app.state.runtime.engine.sync_engine
        event.listen(engine, "before_cursor_execute", count)
        try:
            created = await client.post(
                "/partners",
                json={"name": "IOM", "kind": "un_agency"},
                headers={**bearer(admin), "Idempotency-Key": "one-look-up"},
            )
            assert created.status_code == 201, created.text
            assert len(look_ups) == 1
            look_ups.clear()
            listed = await client.get("/partners", headers=bearer(admin))
            assert listed.status_code == 200
            assert len(look_ups) == 1
        finally:
            event.remove(engine, "before_cursor_execute", count)
