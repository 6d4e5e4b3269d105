"""An endpoint failing for 5 days is disabled; recover re-sends what failed; tenancy."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import UUID

from tests.factories import bearer
from tests.hub import eventually, running_hub
from tests.notifications.receiver import Receiver


async def test_five_days_of_failures_disable_then_recover_resends(settings):
    state = {"up": False}
    receiver = Receiver(respond=lambda _got: (200, {}) if state["up"] else (500, {}))
    await receiver.start()
    try:
        async with running_hub(settings, webhook_retry_schedule=(0.1,)) as hub:
            partner = await hub.partner("ONG Sabou")
            other = await hub.partner("Other")
            created = await hub.notifications.post(
                "/endpoints", json={"url": receiver.url}, headers=bearer(partner["key"])
            )
            endpoint = created.json()
            async with hub.db.connection() as conn:
                await conn.execute(
                    "UPDATE notifications.endpoints "
                    "SET failing_since = now() - interval '6 days' "
                    "WHERE id = $1",
                    UUID(endpoint["id"]),
                )
            started = datetime.now(UTC) - timedelta(minutes=1)
            await hub.notifications.post(
                f"/endpoints/{endpoint['id']}/test", headers=bearer(partner["key"])
            )

            async def disabled():
                got = (
                    await hub.notifications.get(
                        f"/endpoints/{endpoint['id']}", headers=bearer(partner["key"])
                    )
                ).json()
                return got if got["status"] == "disabled" else None

            got = await eventually(disabled)
            assert "5 days" in got["disabled_reason"]

            async def failed():
                page = (
                    await hub.notifications.get(
                        "/deliveries", params={"status": "failed"}, headers=bearer(partner["key"])
                    )
                ).json()
                return page["items"]

            assert len(await eventually(failed)) >= 1
            # Another partner sees none of it.
            assert (
                await hub.notifications.get("/deliveries", headers=bearer(other["key"]))
            ).json()["items"] == []
            assert (
                await hub.notifications.get(
                    f"/endpoints/{endpoint['id']}", headers=bearer(other["key"])
                )
            ).status_code == 404
            refused = await hub.notifications.post(
                f"/endpoints/{endpoint['id']}/recover",
                json={"since": started.isoformat()},
                headers=bearer(partner["key"]),
            )
            assert refused.status_code == 409
            state["up"] = True
            await hub.notifications.post(
                f"/endpoints/{endpoint['id']}/enable", headers=bearer(partner["key"])
            )
            recovered = await hub.notifications.post(
                f"/endpoints/{endpoint['id']}/recover",
                json={"since": started.isoformat()},
                headers=bearer(partner["key"]),
            )
            assert recovered.status_code == 200 and recovered.json()["recovered"] >= 1

            async def delivered():
                return any(r for r in receiver.requests[-3:] if r.headers.get("webhook-id"))

            before = len(receiver.requests)
            await eventually(lambda: asyncio.sleep(0, len(receiver.requests) > before))
            assert await delivered()
    finally:
        await receiver.stop()
