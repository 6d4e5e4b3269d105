"""Fan-out and endpoints changing under it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from services.notifications.app import create_app as notifications_app
from services.notifications.fanout import fan_out
from shared.eventlog.model import Event
from tests.conftest import running
from tests.factories import bearer, make_admin_key


async def test_an_endpoint_deleted_while_its_events_fan_out_gets_no_delivery_and_no_error(
    settings,
):
    app = notifications_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        created = await client.post(
            "/endpoints", json={"url": "http://127.0.0.1:9/hooks"}, headers=bearer(admin)
        )
        assert created.status_code == 201, created.text
        endpoint_id = uuid.UUID(created.json()["id"])
        event = Event(
            seq=1,
            id=uuid.uuid4(),
            tx=2**40,  # committed after the registration
            type="service.updated",
            source="/registry",
            subject="services/1",
            time=datetime.now(UTC),
            actor="admin",
            audience=(),
            data={"id": "1"},
        )
        db = app.state.db
        # The delete commits as the block ends.
        async with db.transaction() as deleting:
            await deleting.execute("DELETE FROM notifications.endpoints WHERE id = $1", endpoint_id)

            async def fan_out_batch() -> None:
                async with db.transaction() as conn:
                    await fan_out(conn, [event])

            batch = asyncio.create_task(fan_out_batch())
            await asyncio.sleep(0.5)  # the batch reads the endpoints while the delete is open
        await asyncio.wait_for(batch, timeout=10)  # no foreign-key violation
        async with db.connection() as conn:
            count = await conn.fetchval("SELECT count(*) FROM notifications.deliveries")
        assert count == 0
