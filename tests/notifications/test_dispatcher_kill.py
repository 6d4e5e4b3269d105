"""A dispatcher killed with SIGKILL in the middle of 1,000 deliveries, then restarted: every
event is delivered at least once, and every duplicate carries the same webhook-id."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from services.notifications.app import create_app as notifications_app
from shared.eventlog.append import append
from tests.conftest import running
from tests.factories import bearer, make_admin_key
from tests.hub import eventually
from tests.notifications.receiver import Receiver

pytestmark = pytest.mark.slow
EVENTS = 1000


def _worker(database_url: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "services.notifications.worker"],
        env={
            **os.environ,
            "DATABASE_URL": database_url,
            "RELAIS_ENV": "development",
            "WEBHOOK_RETRY_SCHEDULE": "0.5,0.5,0.5",
            "WEBHOOK_TIMEOUT_SECONDS": "2",
            "RELAIS_LOG_LEVEL": "WARNING",
            "RELAIS_POLL_INTERVAL_SECONDS": "0.2",
        },
    )


async def test_a_killed_dispatcher_loses_nothing(settings):
    receiver = Receiver(respond=lambda _got: (200, {}))
    await receiver.start()
    app = notifications_app(settings)  # API only: the workers run in the child process
    process = None
    try:
        async with running(app) as client:
            admin = await make_admin_key(app.state.db)
            partner_id = uuid.uuid4()
            async with app.state.db.transaction() as conn:
                # As the registry does: an endpoint is only for a partner it created.
                await append(
                    conn,
                    type="partner.created",
                    source="/registry",
                    subject=f"partners/{partner_id}",
                    data={"id": str(partner_id)},
                    actor="admin",
                    audience=[partner_id],
                )
            endpoint = await client.post(
                "/endpoints",
                json={
                    "url": receiver.url,
                    "partner_id": str(partner_id),
                    "event_types": ["service.*"],
                },
                headers=bearer(admin),
            )
            assert endpoint.status_code == 201, endpoint.text
            async with app.state.db.transaction() as conn:
                ids = set()
                for i in range(EVENTS):
                    event = await append(
                        conn,
                        type="service.updated",
                        source="/registry",
                        subject=f"services/{i}",
                        data={"i": i},
                        actor="admin",
                        audience=[partner_id],
                    )
                    ids.add(str(event.id))

            process = _worker(settings.database_url)
            deadline = time.monotonic() + 60
            while len(receiver.requests) < 200:
                assert time.monotonic() < deadline, "the dispatcher made no progress"
                await asyncio.sleep(0.01)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            at_kill = len(receiver.requests)
            assert at_kill < EVENTS, "the kill came too late to prove anything"

            process = _worker(settings.database_url)
            deadline = time.monotonic() + 120
            while len({r.headers["webhook-id"] for r in receiver.requests}) < EVENTS:
                assert time.monotonic() < deadline, (
                    "not every event was delivered after the restart"
                )
                await asyncio.sleep(0.1)

            async def all_succeeded():
                async with app.state.db.connection() as conn:
                    return (
                        await conn.fetchval(
                            "SELECT count(*) FROM notifications.deliveries "
                            "WHERE status = 'succeeded'"
                        )
                    ) == EVENTS

            await eventually(all_succeeded, timeout=30)
    finally:
        if process is not None:
            process.kill()
            process.wait(timeout=10)
        await receiver.stop()

    delivered = [r.headers["webhook-id"] for r in receiver.requests]
    assert set(delivered) == ids
    # A duplicate is the same webhook (same id and body), sent again after the kill.
    bodies: dict[str, bytes] = {}
    for r in receiver.requests:
        assert bodies.setdefault(r.headers["webhook-id"], r.body) == r.body
