"""Subject access and retention (SPEC 9) with the three services as processes: the export
gathers the deliveries from the notifications process over HTTP; the preview lists a case
closed longer ago than `RELAIS_RETENTION_DAYS` and not one closed more recently; the
registry's retention worker erases the first and only it."""

from __future__ import annotations

from uuid import UUID

import asyncpg
import pytest

from devkit.client import HubClient
from tests.e2e.conftest import RETENTION_DAYS
from tests.e2e.processes import ADMIN_KEY, SERVICES
from tests.factories import case_body
from tests.hub import eventually
from tests.notifications.receiver import Receiver

pytestmark = pytest.mark.slow

PLAN = [{"service_type": "economic.vocational_training", "depends_on": []}]


def client(processes) -> HubClient:
    return HubClient.connect({name: processes.url(name) for name in SERVICES}, admin=ADMIN_KEY)


async def new_case(hub: HubClient, owner: dict, external_id: str, plan=()) -> dict:
    return await hub.call(
        "POST",
        "registry",
        "/cases",
        key=owner["key"],
        json=case_body(external_id=external_id, plan=list(plan)),
        ok=(201,),
    )


async def close(hub: HubClient, owner: dict, case: dict) -> None:
    await hub.call(
        "POST",
        "registry",
        f"/cases/{case['id']}/close",
        key=owner["key"],
        json={"reason": "support_ended"},
    )


async def closed_days_ago(database_url: str, case: dict, days: int) -> None:
    """What waiting that long after the closure would do."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE registry.cases SET closed_at = now() - make_interval(days => $2) WHERE id = $1",
            UUID(case["id"]),
            days,
        )
    finally:
        await conn.close()


async def erased_at(database_url: str, case: dict):
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(
            "SELECT erased_at FROM registry.cases WHERE id = $1", UUID(case["id"])
        )
    finally:
        await conn.close()


async def preview_ids(hub: HubClient) -> list[str]:
    return [item["id"] async for item in hub.items("registry", "/retention/preview")]


async def test_the_export_gathers_the_case_from_every_process(retention_processes):
    receiver = Receiver()
    await receiver.start()
    try:
        async with client(retention_processes) as hub:
            owner = await hub.partner("ONG Sabou")
            provider = await hub.partner("CFP Kayes")
            await hub.service(provider, "economic.vocational_training", ["ML"])
            await hub.endpoint(provider, receiver.url, ["referral.*"])
            case = await new_case(hub, owner, "E2E-SAR", PLAN)

            async def delivered():
                export = await hub.call("GET", "registry", f"/cases/{case['id']}/export")
                return export if export["deliveries"] else None

            export = await eventually(delivered, timeout=30)
            assert export["case"]["id"] == case["id"]
            assert export["case"]["beneficiary"]["given_name"] == "Aminata"
            [referral] = export["referrals"]
            assert referral["assignee_partner_id"] == provider["id"]
            assert [h["status"] for h in referral["history"]] == ["requested"]
            assert {"case.created", "referral.created"} <= {e["type"] for e in export["events"]}
            assert {d["partner_id"] for d in export["deliveries"]} == {provider["id"]}
            assert all("data" not in d for d in export["deliveries"])
            assert export["access_log"][-1]["view"] == "export"
            # A partner may not export, not even its own case.
            with pytest.raises(hub.error) as refused:
                await hub.call("GET", "registry", f"/cases/{case['id']}/export", key=owner["key"])
            assert refused.value.status == 403
    finally:
        await receiver.stop()


async def test_the_preview_lists_the_case_closed_too_long_ago_and_not_the_recent_one(
    retention_processes, hub_database
):
    async with client(retention_processes) as hub:
        owner = await hub.partner("ONG Retention")
        old = await new_case(hub, owner, "E2E-OLD")
        recent = await new_case(hub, owner, "E2E-RECENT")
        for case in (old, recent):
            await close(hub, owner, case)
        await closed_days_ago(hub_database, old, RETENTION_DAYS + 1)
        await closed_days_ago(hub_database, recent, RETENTION_DAYS - 1)
        listed = await preview_ids(hub)
        assert old["id"] in listed and recent["id"] not in listed
        page = await hub.call("GET", "registry", "/retention/preview")
        assert page["retention"] is True and page["retention_days"] == RETENTION_DAYS


async def test_the_retention_worker_erases_the_case_closed_too_long_ago_only(
    retention_processes, hub_database
):
    async with client(retention_processes) as hub:
        owner = await hub.partner("ONG Retention run")
        old = await new_case(hub, owner, "E2E-RUN-OLD")
        recent = await new_case(hub, owner, "E2E-RUN-RECENT")
        for case in (old, recent):
            await close(hub, owner, case)
        await closed_days_ago(hub_database, old, RETENTION_DAYS + 1)
        await closed_days_ago(hub_database, recent, RETENTION_DAYS - 1)
        assert old["id"] in await preview_ids(hub)
        # The worker runs at the registry's start (then hourly): restart it.
        retention_processes.kill("registry")
        await retention_processes.start("registry")

        async def erased() -> bool:
            return await erased_at(hub_database, old) is not None

        await eventually(erased, timeout=30)
        assert await erased_at(hub_database, recent) is None
        listed = await preview_ids(hub)
        assert old["id"] not in listed and recent["id"] not in listed
