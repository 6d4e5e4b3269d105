"""A reintegration pathway across four partners: routed step by step as referrals complete,
re-routed after a rejection and an expiry, unassigned when no candidate is left, assigned by
an admin, and completed."""

from __future__ import annotations

import asyncio
from uuid import UUID

from tests.factories import bearer, case_body
from tests.hub import eventually, running_hub


async def _referrals_of(hub, key: str, **params) -> list[dict]:
    response = await hub.referrals.get("/referrals", params=params, headers=bearer(key))
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def _live_for(hub, partner: dict, service_type: str) -> dict | None:
    for item in await _referrals_of(hub, partner["key"], role="incoming", status="requested"):
        if item["service_type"] == service_type:
            return item
    return None


async def test_a_three_step_pathway_is_routed_rerouted_assigned_and_completed(settings):
    async with running_hub(settings) as hub:
        owner = await hub.partner("ONG Sabou")
        counsel = await hub.partner("Centre Psy Bamako")
        training_bko = await hub.partner("CFP Bamako")
        training_ml = await hub.partner("ANPE", kind="government")
        await hub.service(counsel, "psychosocial.individual_counselling", ["ML-BKO-03"])
        await hub.service(training_bko, "economic.vocational_training", ["ML-BKO"])
        await hub.service(training_ml, "economic.vocational_training", ["ML"])
        grants = await hub.service(training_ml, "economic.microbusiness", ["ML"], response_hours=48)

        created = await hub.registry.post("/cases", json=case_body(), headers=bearer(owner["key"]))
        assert created.status_code == 201, created.text
        case = created.json()
        step1, step2, step3 = case["plan"]

        # Steps 1 and 2 go out in parallel, each to the most specific coverage.
        r1 = await eventually(
            lambda: _live_for(hub, counsel, "psychosocial.individual_counselling")
        )
        r2 = await eventually(lambda: _live_for(hub, training_bko, "economic.vocational_training"))
        assert r1["step_id"] == step1["id"] and r1["attempt"] == 1
        assert r2["step_id"] == step2["id"] and r2["assignee_partner_id"] == training_bko["id"]
        assert await _referrals_of(hub, training_ml["key"], role="incoming") == []

        # The assignee sees the minimised case; the routing decision is not for it.
        detail = (
            await hub.referrals.get(f"/referrals/{r1['id']}", headers=bearer(counsel["key"]))
        ).json()
        assert detail["case"]["reference"] == case["reference"]
        assert detail["case"]["beneficiary"]["given_name"] == "Aminata"
        assert "id_documents" not in str(detail) and "AA1234567" not in str(detail)
        assert detail["decision"] is None
        assert [s["key"] for s in detail["case"]["steps"]] == ["1"]
        owner_view = (
            await hub.referrals.get(f"/referrals/{r1['id']}", headers=bearer(owner["key"]))
        ).json()
        assert owner_view["decision"]["candidates"][0]["partner_id"] == counsel["id"]

        # Step 1: accepted, started, completed.
        for action, body in (
            ("accept", None),
            ("start", None),
            ("complete", {"outcome": "8 sessions"}),
        ):
            response = await hub.referrals.post(
                f"/referrals/{r1['id']}/{action}", json=body, headers=bearer(counsel["key"])
            )
            assert response.status_code == 200, (action, response.text)
        # Step 2: rejected → routed to the next candidate, attempt 2.
        rejected = await hub.referrals.post(
            f"/referrals/{r2['id']}/reject",
            json={"reason": "full until March"},
            headers=bearer(training_bko["key"]),
        )
        assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
        r2b = await eventually(lambda: _live_for(hub, training_ml, "economic.vocational_training"))
        assert r2b["step_id"] == step2["id"] and r2b["attempt"] == 2
        # Step 3 waits for step 2.
        assert await _live_for(hub, training_ml, "economic.microbusiness") is None
        for action, body in (("accept", None), ("complete", {"outcome": "certificate"})):
            response = await hub.referrals.post(
                f"/referrals/{r2b['id']}/{action}", json=body, headers=bearer(training_ml["key"])
            )
            assert response.status_code == 200, response.text

        # Step 3 is unblocked and routed; then it expires (deadline moved into the past).
        r3 = await eventually(lambda: _live_for(hub, training_ml, "economic.microbusiness"))
        assert r3["step_id"] == step3["id"] and r3["service_id"] == grants["id"]
        async with hub.db.connection() as conn:
            await conn.execute(
                "UPDATE referrals.referrals SET deadline_at = now() - interval '1 minute' "
                "WHERE id = $1",
                UUID(r3["id"]),
            )

        async def unassigned():
            queue = await hub.referrals.get("/queues/unassigned", headers=bearer(hub.admin))
            items = queue.json()["items"]
            return items[0] if items else None

        waiting = await eventually(unassigned)
        assert waiting["step_id"] == step3["id"] and waiting["attempt"] == 2
        assert waiting["decision"]["unassigned_reason"] == "no_candidate"
        expired = (
            await hub.referrals.get(f"/referrals/{r3['id']}", headers=bearer(owner["key"]))
        ).json()
        assert expired["status"] == "expired"

        # The coordination assigns it, ignoring the exclusion; the partner completes it.
        assigned = await hub.referrals.post(
            f"/referrals/{waiting['id']}/assign",
            json={"partner_id": training_ml["id"]},
            headers=bearer(hub.admin),
        )
        assert assigned.status_code == 200, assigned.text
        assert (
            assigned.json()["status"] == "requested"
            and assigned.json()["service_id"] == grants["id"]
        )
        for action, body in (("accept", None), ("complete", {"outcome": "business opened"})):
            response = await hub.referrals.post(
                f"/referrals/{waiting['id']}/{action}",
                json=body,
                headers=bearer(training_ml["key"]),
            )
            assert response.status_code == 200, response.text

        async def pathway_complete():
            response = await hub.referrals.get(
                f"/cases/{case['id']}/pathway", headers=bearer(owner["key"])
            )
            body = response.json()
            return body if body["completed"] else None

        pathway = await eventually(pathway_complete)
        assert [s["status"] for s in pathway["steps"]] == ["completed"] * 3
        assert [len(s["referrals"]) for s in pathway["steps"]] == [1, 2, 2]

        async def registry_sees_it():
            got = (
                await hub.registry.get(f"/cases/{case['id']}", headers=bearer(owner["key"]))
            ).json()
            return got if [s["status"] for s in got["plan"]] == ["completed"] * 3 else None

        await eventually(registry_sees_it)

        async def pathway_events() -> list[str]:
            # Appended by the referrals consumer, which the registry's projector does not wait
            # for: it may come a moment after the registry shows the steps completed.
            async with hub.db.connection() as conn:
                return [
                    r["type"]
                    for r in await conn.fetch(
                        "SELECT type FROM hub.events WHERE type = 'case.pathway_completed'"
                    )
                ]

        assert await eventually(pathway_events) == ["case.pathway_completed"]
        await asyncio.sleep(0.5)  # and only one, even a moment later
        assert await pathway_events() == ["case.pathway_completed"]
