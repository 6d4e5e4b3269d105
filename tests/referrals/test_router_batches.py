"""What the router builds from what it holds in a batch is what the API reads back: the
minimised case and history its events carry, and the loads that spread a batch's cases."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID, uuid4

from services.referrals import projections, rebuild
from services.referrals.app import create_app as referrals_app
from services.referrals.store import loads
from shared.db import Database
from tests.conftest import running
from tests.factories import bearer, case_body, distinct_person
from tests.hub import eventually, running_hub

TWO_PARALLEL_STEPS = [
    {"service_type": "psychosocial.individual_counselling", "depends_on": [], "notes": "a"},
    {"service_type": "economic.vocational_training", "depends_on": [], "notes": "b"},
]


async def _created_events(hub, case_id: str) -> list[dict]:
    async with hub.db.connection() as conn:
        rows = await conn.fetch(
            "SELECT data FROM hub.events WHERE type = 'referral.created' "
            "AND data->>'case_id' = $1 ORDER BY tx, seq",
            case_id,
        )
        return [r["data"] for r in rows]


def _times(history: list[dict]) -> list[tuple]:
    return [
        (h["status"], datetime.fromisoformat(h["at"].replace("Z", "+00:00")), h["actor"], h["note"])
        for h in history
    ]


async def test_referral_events_carry_the_minimised_case_and_history_the_api_serves(settings):
    async with running_hub(settings) as hub:
        owner = await hub.partner("ONG Sabou")
        provider = await hub.partner("Centre polyvalent")
        other = await hub.partner("Other provider")
        await hub.service(provider, "psychosocial.individual_counselling", ["ML"])
        await hub.service(
            provider,
            "economic.vocational_training",
            ["ML"],
            eligibility={"vulnerabilities_any": ["single_parent"]},
        )
        await hub.service(other, "economic.microbusiness", ["ML"])
        created = await hub.registry.post(
            "/cases", json=case_body(plan=TWO_PARALLEL_STEPS), headers=bearer(owner["key"])
        )
        assert created.status_code == 201, created.text
        case = created.json()

        async def both_created():
            events = await _created_events(hub, case["id"])
            return events if len(events) == 2 else None

        first, second = await both_created() or await eventually(both_created)
        assert [e["step_id"] for e in (first, second)] == [s["id"] for s in case["plan"]]

        # When the first referral was created, the second step was not yet the provider's.
        assert [s["key"] for s in first["case"]["steps"]] == ["1"]
        assert first["case"]["vulnerabilities"] == []  # its service names none
        served = (
            await hub.referrals.get(f"/referrals/{second['id']}", headers=bearer(provider["key"]))
        ).json()
        # The second event's case is what the assignee reads: both its live steps, the
        # vulnerability its service names, the owner's contact; never the documents.
        assert second["case"] == served["case"]
        assert [s["key"] for s in served["case"]["steps"]] == ["1", "2"]
        assert served["case"]["vulnerabilities"] == ["single_parent"]
        assert served["case"]["referring_partner"]["name"] == "ONG Sabou"
        assert "AA1234567" not in str(second)
        assert _times(second["history"]) == _times(served["history"])
        assert [h["status"] for h in served["history"]] == ["requested"]


async def test_a_batch_of_cases_is_spread_by_the_loads_it_creates(settings):
    async with running_hub(settings, run_workers=False) as hub:
        owner = await hub.partner("ONG Sabou")
        first = await hub.partner("CFP One")
        second = await hub.partner("CFP Two")
        for partner in (first, second):
            await hub.service(partner, "economic.vocational_training", ["ML"], capacity=10)
        one_step = [{"service_type": "economic.vocational_training", "depends_on": []}]
        for i in range(6):
            response = await hub.registry.post(
                "/cases",
                json=case_body(external_id=f"B-{i}", beneficiary=distinct_person(i), plan=one_step),
                headers=bearer(owner["key"]),
            )
            assert response.status_code == 201, response.text

        # One router starts with the six cases waiting: they are routed in one batch.
        router = settings.model_copy(update={"run_workers": True, "poll_interval_seconds": 0.2})
        async with running(referrals_app(router)):

            async def routed():
                async with hub.db.connection() as conn:
                    rows = await conn.fetch(
                        "SELECT assignee_partner_id::text AS p, count(*) AS n "
                        "FROM referrals.referrals GROUP BY 1"
                    )
                return rows if sum(r["n"] for r in rows) == 6 else None

            counts = {r["p"]: r["n"] for r in await eventually(routed)}
        assert counts == {first["id"]: 3, second["id"]: 3}


async def _loads(hub, service_type: str) -> tuple[dict, dict]:
    """(the loads routing reads, the loads counted from the referrals themselves)."""
    async with hub.db.connection() as conn:
        options = (await loads.service_options(conn, service_types=[service_type]))[service_type]
        counted = dict(
            tuple(r)
            for r in await conn.fetch(
                "SELECT service_id, count(*) FROM referrals.referrals "
                "WHERE status IN ('requested', 'accepted', 'in_progress') GROUP BY 1"
            )
        )
    return {o.id: o.load for o in options if o.load}, counted


async def test_service_loads_follow_every_transition_and_survive_folding(settings):
    async with running_hub(settings) as hub:
        owner = await hub.partner("ONG Sabou")
        provider = await hub.partner("CFP Kayes")
        spare = await hub.partner("CFP Spare")
        one_step = [{"service_type": "economic.vocational_training", "depends_on": []}]
        near = await hub.service(provider, "economic.vocational_training", ["ML-BKO-03"])
        far = await hub.service(spare, "economic.vocational_training", ["ML"])
        cases = []
        for i in range(4):
            response = await hub.registry.post(
                "/cases",
                json=case_body(external_id=f"L-{i}", beneficiary=distinct_person(i), plan=one_step),
                headers=bearer(owner["key"]),
            )
            cases.append(response.json())

        async def incoming(partner):
            items = (
                await hub.referrals.get(
                    "/referrals", params={"role": "incoming"}, headers=bearer(partner["key"])
                )
            ).json()["items"]
            return items if len(items) == 4 else None

        first = await eventually(lambda: incoming(provider))
        by_case = {r["case_id"]: r for r in first}
        act = [by_case[c["id"]]["id"] for c in cases]
        headers = bearer(provider["key"])
        for path, body in (
            (f"/referrals/{act[0]}/accept", None),
            (f"/referrals/{act[1]}/accept", None),
            (f"/referrals/{act[1]}/complete", {"outcome": "trained"}),
            (f"/referrals/{act[2]}/reject", {"reason": "full"}),
        ):
            response = await hub.referrals.post(path, json=body, headers=headers)
            assert response.status_code == 200, response.text
        closed = await hub.registry.post(
            f"/cases/{cases[3]['id']}/close",
            json={"reason": "beneficiary_withdrew"},
            headers=bearer(owner["key"]),
        )
        assert closed.status_code == 200, closed.text

        # The rejected step goes to the spare provider; the closed case's referral ends.
        expected = {UUID(near["id"]): 1, UUID(far["id"]): 1}

        async def settled():
            read, counted = await _loads(hub, "economic.vocational_training")
            # Two reads, one after the other: the router may commit between them.
            return (read, counted) if read == counted == expected else None

        read, counted = await eventually(settled)
        assert read == counted
        async with hub.db.transaction() as conn:
            await loads.fold_changes(conn)
        async with hub.db.connection() as conn:
            left = await conn.fetchval("SELECT count(*) FROM referrals.service_load_changes")
        assert left == 0
        assert await _loads(hub, "economic.vocational_training") == (read, counted)


def _snapshot(case_id, step_ids, version: int, resolved: dict | None = None, **fields) -> dict:
    resolved = resolved or {}
    return {
        "id": str(case_id),
        "reference": "CNRM-2026-000001",
        "owner_partner_id": str(uuid4()) if "owner" not in fields else fields["owner"],
        "status": fields.get("status", "open"),
        "consent": {"referral": "granted"},
        "beneficiary": {"given_name": "Aminata", "sex": "female"},
        "return": {"area_code": "ML-BKO-03"},
        "vulnerabilities": [],
        "version": version,
        "plan": [
            {
                "id": str(step_id),
                "key": str(n),
                "service_type": "economic.vocational_training",
                "priority": "normal",
                "delivery": "referral",
                "depends_on": [],
                "status": resolved.get(step_id, "pending"),
            }
            for n, step_id in enumerate(step_ids, start=1)
        ],
    }


async def test_a_batch_of_snapshots_applies_as_if_one_by_one(settings):
    db = await Database.connect(settings)
    case_id, first, second = uuid4(), uuid4(), uuid4()
    owner = str(uuid4())
    v1 = _snapshot(case_id, [first, second], 1, owner=owner)
    v2 = _snapshot(case_id, [first, second], 2, {first: "completed"}, owner=owner)
    # A later snapshot that no longer says the first step is completed never undoes it.
    v3 = _snapshot(case_id, [first, second], 3, {second: "cancelled"}, owner=owner)
    try:
        async with db.transaction() as conn:
            assert await projections.apply_cases(conn, [v1, v3, v2]) == {case_id}
        async with db.transaction() as conn:
            # Replayed news changes nothing.
            assert await projections.apply_cases(conn, [v2, v1]) == set()

        async with db.connection() as conn:
            version = await conn.fetchval(
                "SELECT version FROM referrals.cases WHERE id = $1", case_id
            )
            steps = dict(
                tuple(r)
                for r in await conn.fetch(
                    "SELECT id, resolution FROM referrals.steps WHERE case_id = $1", case_id
                )
            )
        assert version == 3
        assert steps == {first: "completed", second: "cancelled"}
    finally:
        await db.close()


async def test_snapshots_with_thousands_of_steps_apply(settings):
    """A statement takes at most 32,767 parameters; plans have no fixed size."""
    db = await Database.connect(settings)
    snapshots = [_snapshot(uuid4(), [uuid4() for _ in range(1700)], 1) for _ in range(2)]
    try:
        async with db.transaction() as conn:
            assert len(await projections.apply_cases(conn, snapshots)) == 2
        async with db.connection() as conn:
            count = await conn.fetchval("SELECT count(*) FROM referrals.steps")
        assert count == 3400
    finally:
        await db.close()


async def test_the_rebuild_command_recounts_loads_from_the_referrals(settings):
    async with running_hub(settings) as hub:
        owner = await hub.partner("ONG Sabou")
        provider = await hub.partner("CFP Kayes")
        service = await hub.service(provider, "economic.vocational_training", ["ML"])
        one_step = [{"service_type": "economic.vocational_training", "depends_on": []}]
        for i in range(3):
            response = await hub.registry.post(
                "/cases",
                json=case_body(external_id=f"R-{i}", beneficiary=distinct_person(i), plan=one_step),
                headers=bearer(owner["key"]),
            )
            assert response.status_code == 201, response.text
        expected = {UUID(service["id"]): 3}

        async def routed():
            # Two reads, one after the other: the router may commit between them.
            read, counted = await _loads(hub, "economic.vocational_training")
            return read if read == counted == expected else None

        assert await eventually(routed) == expected
    # Counters gone astray (say, a restore that bypassed the trigger), workers stopped.
    db = await Database.connect(settings)
    try:
        async with db.transaction() as conn:
            await conn.execute("UPDATE referrals.service_loads SET load = load + 40")
            await conn.execute(
                "INSERT INTO referrals.service_load_changes (service_id, delta) VALUES ($1, 7)",
                UUID(service["id"]),
            )
    finally:
        await db.close()
    assert await rebuild.main(settings) > 0
    db = await Database.connect(settings)
    try:
        async with db.connection() as conn:
            types = ["economic.vocational_training"]
            options = (await loads.service_options(conn, service_types=types))[types[0]]
    finally:
        await db.close()
    assert {o.id: o.load for o in options} == expected
