"""Referral visibility and actions, closure and consent, preview, re-routing, projections."""

from __future__ import annotations

import asyncio

from services.referrals import projections
from services.referrals.app import create_app as referrals_app
from tests.conftest import running
from tests.factories import bearer, case_body, distinct_person
from tests.hub import eventually, running_hub

ONE_STEP = [{"service_type": "economic.vocational_training", "depends_on": []}]


async def _setup(hub):
    owner = await hub.partner("ONG Sabou")
    provider = await hub.partner("CFP Kayes")
    stranger = await hub.partner("Stranger")
    await hub.service(provider, "economic.vocational_training", ["ML"])
    return owner, provider, stranger


async def _case(hub, owner, **overrides) -> dict:
    response = await hub.registry.post(
        "/cases", json=case_body(plan=ONE_STEP, **overrides), headers=bearer(owner["key"])
    )
    assert response.status_code == 201, response.text
    return response.json()


async def _live(hub, key: str, case_id: str, status: str = "requested") -> dict | None:
    items = (
        await hub.referrals.get("/referrals", params={"case_id": case_id}, headers=bearer(key))
    ).json()["items"]
    return next((i for i in items if i["status"] == status), None)


async def test_a_stranger_sees_and_acts_on_nothing_and_roles_are_enforced(settings):
    async with running_hub(settings) as hub:
        owner, provider, stranger = await _setup(hub)
        case = await _case(hub, owner)
        referral = await eventually(lambda: _live(hub, provider["key"], case["id"]))
        rid = referral["id"]

        assert (await hub.referrals.get("/referrals", headers=bearer(stranger["key"]))).json()[
            "items"
        ] == []
        assert (
            await hub.referrals.get(f"/referrals/{rid}", headers=bearer(stranger["key"]))
        ).status_code == 404
        for action, body in (
            ("accept", None),
            ("reject", {"reason": "x"}),
            ("start", None),
            ("complete", {"outcome": "x"}),
            ("fail", {"reason": "x"}),
            ("cancel", {"reason": "x"}),
        ):
            response = await hub.referrals.post(
                f"/referrals/{rid}/{action}", json=body, headers=bearer(stranger["key"])
            )
            assert response.status_code == 404, (action, response.text)
        assert (
            await hub.referrals.get(f"/cases/{case['id']}/pathway", headers=bearer(stranger["key"]))
        ).status_code == 404
        # The owner cannot accept; the assignee cannot cancel; no partner assigns.
        assert (
            await hub.referrals.post(f"/referrals/{rid}/accept", headers=bearer(owner["key"]))
        ).status_code == 403
        assert (
            await hub.referrals.post(
                f"/referrals/{rid}/cancel", json={"reason": "x"}, headers=bearer(provider["key"])
            )
        ).status_code == 403
        assert (
            await hub.referrals.post(
                f"/referrals/{rid}/assign",
                json={"partner_id": provider["id"]},
                headers=bearer(provider["key"]),
            )
        ).status_code == 403
        # A transition the status forbids: 409 naming the status and what the caller may do.
        started = await hub.referrals.post(
            f"/referrals/{rid}/start", headers=bearer(provider["key"])
        )
        assert started.status_code == 409
        problem = started.json()
        assert started.headers["content-type"] == "application/problem+json"
        assert problem["current_status"] == "requested"
        assert problem["allowed_actions"] == ["accept", "reject"]
        assert (
            await hub.referrals.post(
                f"/referrals/{rid}/reject", json={}, headers=bearer(provider["key"])
            )
        ).status_code == 422
        accepted = await hub.referrals.post(
            f"/referrals/{rid}/accept", headers={**bearer(provider["key"]), "If-Match": '"1"'}
        )
        assert accepted.status_code == 200 and accepted.json()["version"] == 2
        stale = await hub.referrals.post(
            f"/referrals/{rid}/start", headers={**bearer(provider["key"]), "If-Match": '"1"'}
        )
        assert stale.status_code == 412
        history = accepted.json()["history"]
        assert [h["status"] for h in history] == ["requested", "accepted"]
        assert history[1]["actor"] == provider["id"]


async def test_closing_withdrawing_consent_and_reopening(settings):
    async with running_hub(settings) as hub:
        owner, provider, _ = await _setup(hub)
        case = await _case(hub, owner)
        first = await eventually(lambda: _live(hub, provider["key"], case["id"]))
        closed = await hub.registry.post(
            f"/cases/{case['id']}/close", json={"reason": "left_area"}, headers=bearer(owner["key"])
        )
        assert closed.status_code == 200
        cancelled = await eventually(lambda: _live(hub, owner["key"], case["id"], "cancelled"))
        assert cancelled["id"] == first["id"] and cancelled["status_reason"] == "case_closed"
        detail = (
            await hub.referrals.get(f"/referrals/{first['id']}", headers=bearer(provider["key"]))
        ).json()
        assert detail["case"] == {"reference": case["reference"]}  # no longer live: nothing more

        await hub.registry.post(f"/cases/{case['id']}/reopen", headers=bearer(owner["key"]))
        second = await eventually(lambda: _live(hub, provider["key"], case["id"]))
        assert second["id"] != first["id"] and second["attempt"] == 2

        await hub.registry.post(
            f"/cases/{case['id']}/consent",
            json={"referral": "withdrawn"},
            headers=bearer(owner["key"]),
        )

        async def withdrawn():
            got = (
                await hub.referrals.get(f"/referrals/{second['id']}", headers=bearer(owner["key"]))
            ).json()
            return got if got["status"] == "cancelled" else None

        got = await eventually(withdrawn)
        assert got["status_reason"] == "consent_withdrawn"
        await asyncio.sleep(0.5)
        assert await _live(hub, provider["key"], case["id"]) is None
        registry_case = (
            await hub.registry.get(f"/cases/{case['id']}", headers=bearer(owner["key"]))
        ).json()
        assert registry_case["plan"][0]["status"] == "waiting"


async def test_the_owner_cancelling_a_referral_cancels_its_step(settings):
    async with running_hub(settings) as hub:
        owner, provider, _ = await _setup(hub)
        case = await _case(hub, owner)
        referral = await eventually(lambda: _live(hub, provider["key"], case["id"]))
        response = await hub.referrals.post(
            f"/referrals/{referral['id']}/cancel",
            json={"reason": "done elsewhere"},
            headers=bearer(owner["key"]),
        )
        assert response.status_code == 200

        async def step_cancelled():
            got = (
                await hub.registry.get(f"/cases/{case['id']}", headers=bearer(owner["key"]))
            ).json()
            return got["plan"][0]["status"] == "cancelled"

        await eventually(step_cancelled)
        pathway = (
            await hub.referrals.get(f"/cases/{case['id']}/pathway", headers=bearer(owner["key"]))
        ).json()
        assert pathway["steps"][0]["status"] == "cancelled" and pathway["completed"]


async def test_a_deactivated_partners_requested_referrals_are_routed_again(settings):
    async with running_hub(settings) as hub:
        owner, provider, _ = await _setup(hub)
        backup = await hub.partner("CFP Backup")
        await hub.service(provider, "economic.vocational_training", ["ML-BKO"])  # more specific
        await hub.service(backup, "economic.vocational_training", ["ML"])
        case = await _case(hub, owner)
        first = await eventually(lambda: _live(hub, provider["key"], case["id"]))
        await hub.registry.patch(
            f"/partners/{provider['id']}", json={"status": "inactive"}, headers=bearer(hub.admin)
        )
        moved = await eventually(lambda: _live(hub, backup["key"], case["id"]))
        assert moved["step_id"] == first["step_id"] and moved["attempt"] == 2
        old = (
            await hub.referrals.get(f"/referrals/{first['id']}", headers=bearer(owner["key"]))
        ).json()
        assert old["status"] == "cancelled" and old["status_reason"] == "partner_inactive"


async def test_preview_of_a_hypothetical_case_matches_the_router(settings):
    async with running_hub(settings) as hub:
        owner, _provider, _ = await _setup(hub)
        near = await hub.partner("Near")
        await hub.service(near, "economic.vocational_training", ["ML-BKO-03"], priority=None)
        case = await _case(hub, owner)
        routed = await eventually(lambda: _live(hub, near["key"], case["id"]))
        preview = await hub.referrals.post(
            "/routing/preview",
            json={
                "case": {
                    "beneficiary": {"sex": "female", "date_of_birth": "1996-04-12"},
                    "vulnerabilities": ["psychosocial_distress"],
                    "return": {"area_code": "ML-BKO-03"},
                },
                "service_type": "economic.vocational_training",
            },
            headers=bearer(hub.admin),
        )
        assert preview.status_code == 200, preview.text
        body = preview.json()
        assert body["chosen_service_id"] == routed["service_id"]
        owner_view = (
            await hub.referrals.get(f"/referrals/{routed['id']}", headers=bearer(owner["key"]))
        ).json()

        # The same ranking; only the load differs, as the routed referral now counts.
        def ranking(decision):
            return [
                (c["rank"], c["service_id"], c["coverage_depth"], c["priority"])
                for c in decision["candidates"]
            ]

        assert ranking(body["decision"]) == ranking(owner_view["decision"])
        real = await hub.referrals.post(
            "/routing/preview",
            json={"case_id": case["id"], "step_id": routed["step_id"]},
            headers=bearer(hub.admin),
        )
        assert real.json()["chosen_service_id"] == routed["service_id"]
        assert (
            await hub.referrals.post(
                "/routing/preview", json={"case_id": case["id"]}, headers=bearer(hub.admin)
            )
        ).status_code == 422
        assert (
            await hub.referrals.post(
                "/routing/preview",
                json={"case_id": case["id"], "step_id": routed["step_id"]},
                headers=bearer(owner["key"]),
            )
        ).status_code == 403


async def test_projections_rebuild_from_the_log_to_the_same_state(settings):
    async with running_hub(settings) as hub:
        owner, provider, _ = await _setup(hub)
        case = await _case(hub, owner)
        await eventually(lambda: _live(hub, provider["key"], case["id"]))
        await hub.registry.patch(
            f"/cases/{case['id']}", json={"vulnerabilities": []}, headers=bearer(owner["key"])
        )
        await asyncio.sleep(0.5)

        async def snapshot():
            async with hub.db.connection() as conn:
                return [
                    sorted(map(tuple, await conn.fetch(f"SELECT * FROM referrals.{t} ORDER BY 1")))
                    for t in ("partners", "services", "cases", "steps")
                ]

        before = await snapshot()
        async with hub.db.transaction() as conn:
            read = await projections.rebuild(conn)
        assert read > 0
        assert await snapshot() == before


async def test_a_rebuild_keeps_the_resolutions_that_came_from_referrals(settings):
    """A step completed by its assignee, and one whose referral the owner cancelled, stay
    resolved after a rebuild: no case event tells it, the referrals do."""
    async with running_hub(settings) as hub:
        owner, provider, _ = await _setup(hub)
        done = await _case(hub, owner, external_id="REBUILD-DONE")
        dropped = await _case(hub, owner, external_id="REBUILD-DROP")
        closed = await _case(hub, owner, external_id="REBUILD-CLOSED")
        key = bearer(provider["key"])
        first = await eventually(lambda: _live(hub, provider["key"], done["id"]))
        for action, body in (("accept", None), ("start", None), ("complete", {"outcome": "ok"})):
            response = await hub.referrals.post(
                f"/referrals/{first['id']}/{action}", json=body, headers=key
            )
            assert response.status_code == 200, response.text
        second = await eventually(lambda: _live(hub, provider["key"], dropped["id"]))
        response = await hub.referrals.post(
            f"/referrals/{second['id']}/cancel",
            json={"reason": "no longer needed"},
            headers=bearer(owner["key"]),
        )
        assert response.status_code == 200, response.text
        # Closing a case cancels its referral, but the step stays open (a reopening routes it).
        await eventually(lambda: _live(hub, provider["key"], closed["id"]))
        response = await hub.registry.post(
            f"/cases/{closed['id']}/close",
            json={"reason": "left_area"},
            headers=bearer(owner["key"]),
        )
        assert response.status_code == 200, response.text
        await eventually(lambda: _live(hub, provider["key"], closed["id"], "cancelled"))
        await asyncio.sleep(0.5)

        async def resolutions():
            async with hub.db.connection() as conn:
                rows = await conn.fetch(
                    "SELECT case_id, resolution FROM referrals.steps ORDER BY case_id"
                )
            return {str(r["case_id"]): r["resolution"] for r in rows}

        before = await resolutions()
        assert before == {
            done["id"]: "completed",
            dropped["id"]: "cancelled",
            closed["id"]: None,
        }
        async with hub.db.transaction() as conn:
            await projections.rebuild(conn)
        assert await resolutions() == before


async def test_two_routers_route_every_step_of_200_cases_exactly_once(settings):
    """Two referrals services (each with its router) run against one database while 200
    cases arrive: every step gets exactly one referral."""
    async with running_hub(settings) as hub:
        owner, _provider, _ = await _setup(hub)
        second = referrals_app(
            settings.model_copy(update={"run_workers": True, "poll_interval_seconds": 0.2})
        )
        async with running(second):

            async def create(i: int) -> None:
                response = await hub.registry.post(
                    "/cases",
                    json=case_body(
                        external_id=f"BULK-{i}",
                        beneficiary=distinct_person(i),
                        plan=[
                            {"service_type": "economic.vocational_training", "depends_on": []},
                            {"service_type": "economic.vocational_training", "depends_on": []},
                        ],
                    ),
                    headers=bearer(owner["key"]),
                )
                assert response.status_code == 201

            for start in range(0, 200, 20):
                await asyncio.gather(*(create(i) for i in range(start, start + 20)))

            async def all_routed():
                async with hub.db.connection() as conn:
                    return await conn.fetchval("SELECT count(*) FROM referrals.referrals") >= 400

            await eventually(all_routed, timeout=60)
            await asyncio.sleep(1.0)
        async with hub.db.connection() as conn:
            per_step = await conn.fetch(
                "SELECT step_id, count(*) FROM referrals.referrals GROUP BY step_id"
            )
            steps = await conn.fetchval("SELECT count(*) FROM registry.plan_steps")
        assert steps == 400
        assert len(per_step) == 400 and all(n == 1 for _, n in per_step)


async def test_a_long_rejection_reason_is_kept_whole(settings):
    async with running_hub(settings) as hub:
        owner, provider, _ = await _setup(hub)
        case = await _case(hub, owner)
        referral = await eventually(lambda: _live(hub, provider["key"], case["id"]))
        reason = "Our next intake starts in March; we have no place before then. " * 5
        rejected = await hub.referrals.post(
            f"/referrals/{referral['id']}/reject",
            json={"reason": reason.strip()},
            headers=bearer(provider["key"]),
        )
        assert rejected.status_code == 200, rejected.text
        assert rejected.json()["status_reason"] == reason.strip()


async def test_completing_parallel_steps_at_once_never_routes_a_completed_step_again(settings):
    """The router reconciles a case while its referrals complete: a completion must not slip
    between the router's reads and leave a completed step looking unrouted."""
    async with running_hub(settings) as hub:
        owner, provider, _ = await _setup(hub)
        plan = [
            {"service_type": "economic.vocational_training", "depends_on": []},
            {"service_type": "economic.vocational_training", "depends_on": []},
            {"service_type": "economic.vocational_training", "depends_on": []},
        ]
        cases = []
        for i in range(12):
            response = await hub.registry.post(
                "/cases",
                json=case_body(external_id=f"PAR-{i}", beneficiary=distinct_person(i), plan=plan),
                headers=bearer(owner["key"]),
            )
            cases.append(response.json())

        async def all_routed():
            items = (
                await hub.referrals.get(
                    "/referrals",
                    params={"role": "incoming", "limit": 500},
                    headers=bearer(provider["key"]),
                )
            ).json()["items"]
            return items if len(items) == 36 else None

        referrals = await eventually(all_routed, timeout=30)

        async def finish(referral: dict) -> None:
            for action, body in (("accept", None), ("complete", {"outcome": "done"})):
                response = await hub.referrals.post(
                    f"/referrals/{referral['id']}/{action}",
                    json=body,
                    headers=bearer(provider["key"]),
                )
                assert response.status_code == 200, response.text

        await asyncio.gather(*(finish(r) for r in referrals))

        async def all_complete():
            done = []
            for case in cases:
                pathway = (
                    await hub.referrals.get(
                        f"/cases/{case['id']}/pathway", headers=bearer(owner["key"])
                    )
                ).json()
                done.append(pathway["completed"])
            return all(done)

        await eventually(all_complete, timeout=30)
        await asyncio.sleep(1.0)
        async with hub.db.connection() as conn:
            extra = await conn.fetchval(
                "SELECT count(*) FROM referrals.referrals WHERE attempt > 1"
            )
        assert extra == 0
