"""`GET /gaps`: demand, covering services and free capacity per area and service type; an
area with demand and no covering service is a gap, one whose services are all full is
saturated, and a service covering a region covers its cercles."""

from __future__ import annotations

from tests.factories import bearer, case_body, distinct_person
from tests.hub import eventually, running_hub

VOC = "economic.vocational_training"
MICRO = "economic.microbusiness"
COUNS = "psychosocial.individual_counselling"


async def _case(hub, owner: dict, number: int, area: str, plan: list[dict], **extra) -> dict:
    body = case_body(
        external_id=f"GAP-{number}", beneficiary=distinct_person(number), plan=plan, **extra
    )
    body["return"] = {**body["return"], "area_code": area}
    response = await hub.registry.post("/cases", json=body, headers=bearer(owner["key"]))
    assert response.status_code == 201, response.text
    return response.json()


async def _gaps(hub, **params) -> dict:
    response = await hub.referrals.get("/gaps", params=params, headers=bearer(hub.admin))
    assert response.status_code == 200, response.text
    return response.json()


def _row(document: dict, area_code: str, service_type: str) -> dict:
    (row,) = [
        r
        for r in document["rows"]
        if r["area_code"] == area_code and r["service_type"] == service_type
    ]
    return row


async def test_gaps_and_saturated_areas_by_region_and_by_cercle(settings):
    async with running_hub(settings) as hub:
        owner = await hub.partner("ONG Sabou")
        training = await hub.partner("CFP Kayes")
        listening = await hub.partner("Centre Ecoute")
        # Vocational training for the Kayes region, one place; counselling in one cercle of
        # Koulikoro (Banamba), without limit.
        await hub.service(training, VOC, ["ML-1"], capacity=1)
        await hub.service(listening, COUNS, ["ML-2-01"])
        one = [{"service_type": VOC, "depends_on": []}]
        # Kayes (cercle of Bafoulabé): routed to the Kayes service, which is then full.
        await _case(hub, owner, 1, "ML-1-01", one)
        # Sikasso: no one offers training there: unassigned.
        await _case(hub, owner, 2, "ML-3-01", one)
        # Ségou: training unassigned, and a microbusiness step waiting for it.
        await _case(hub, owner, 3, "ML-4-01", [*one, {"service_type": MICRO, "depends_on": ["1"]}])
        # Banamba: counselling routed; a second case waits for consent.
        await _case(hub, owner, 4, "ML-2-01", [{"service_type": COUNS, "depends_on": []}])
        await _case(
            hub,
            owner,
            5,
            "ML-2-01",
            [{"service_type": COUNS, "depends_on": []}],
            consent={"referral": "withdrawn"},
        )

        async def routed() -> bool:
            page = (await hub.referrals.get("/referrals", headers=bearer(hub.admin))).json()
            statuses = sorted(i["status"] for i in page["items"])
            if statuses != ["requested", "requested", "unassigned", "unassigned"]:
                return False
            async with hub.db.connection() as conn:  # and the rollup holds them
                facts = await conn.fetchval("SELECT count(*) FROM referrals.referral_facts")
                # The fifth case routes nothing: wait until the reconciler has its copy.
                cases = await conn.fetchval("SELECT count(*) FROM referrals.cases")
            return facts == 4 and cases == 5

        await eventually(routed)

        regions = await _gaps(hub, service_type=VOC)
        assert regions["level"] == "region" and regions["service_type"] == VOC
        # The areas of depth 1 (the ten regions and Bamako), each once, by code.
        assert [r["area_code"] for r in regions["rows"]] == sorted(
            ["ML-BKO", *(f"ML-{n}" for n in range(1, 11))]
        )
        assert _row(regions, "ML-1", VOC) == {
            "area_code": "ML-1",
            "area_name": "Kayes",
            "service_type": VOC,
            "demand": {"waiting_steps": 0, "unassigned": 0, "recent_referrals": 1, "total": 1},
            "services": 1,
            "free_capacity": 0,  # capacity 1, one referral requested
            "gap": False,
            "saturated": True,
        }
        assert _row(regions, "ML-3", VOC) == {
            "area_code": "ML-3",
            "area_name": "Sikasso",
            "service_type": VOC,
            # The unassigned referral was created just now: counted once in the total.
            "demand": {"waiting_steps": 0, "unassigned": 1, "recent_referrals": 1, "total": 1},
            "services": 0,
            "free_capacity": 0,
            "gap": True,
            "saturated": False,
        }
        quiet = _row(regions, "ML-5", VOC)
        assert quiet["demand"]["total"] == 0 and not quiet["gap"] and not quiet["saturated"]

        # Every service type of the reference data, without `service_type`.
        every = await _gaps(hub)
        assert every["service_type"] is None
        assert len(every["rows"]) == 11 * len({r["service_type"] for r in every["rows"]})
        segou = _row(every, "ML-4", MICRO)  # waits for the training step: a gap to come
        assert segou["demand"] == {
            "waiting_steps": 1,
            "unassigned": 0,
            "recent_referrals": 0,
            "total": 1,
        }
        assert segou["gap"] is True
        # Counselling covers only the cercle of Banamba: not the Koulikoro region.
        koulikoro = _row(every, "ML-2", COUNS)
        assert koulikoro["services"] == 0
        assert koulikoro["demand"] == {
            "waiting_steps": 1,  # the case without consent
            "unassigned": 0,
            "recent_referrals": 1,
            "total": 2,
        }
        assert koulikoro["gap"] is True

        cercles = await _gaps(hub, level="cercle", service_type=VOC)
        assert cercles["level"] == "cercle"
        assert all(r["area_code"].count("-") == 2 for r in cercles["rows"])
        # The Kayes region's service covers each of its cercles, and is full in each.
        for code in ("ML-1-01", "ML-1-02", "ML-1-07"):
            row = _row(cercles, code, VOC)
            assert (row["services"], row["free_capacity"], row["saturated"]) == (1, 0, True)
        assert _row(cercles, "ML-1-01", VOC)["demand"]["recent_referrals"] == 1
        assert _row(cercles, "ML-1-02", VOC)["demand"]["total"] == 0
        assert _row(cercles, "ML-3-01", VOC)["gap"] is True
        banamba = _row(await _gaps(hub, level="cercle", service_type=COUNS), "ML-2-01", COUNS)
        assert banamba["services"] == 1
        assert banamba["free_capacity"] is None  # no limit
        assert (banamba["gap"], banamba["saturated"]) == (False, False)
        assert banamba["demand"]["total"] == 2

        for params in ({"level": "commune"}, {"service_type": "economic.unknown"}):
            response = await hub.referrals.get("/gaps", params=params, headers=bearer(hub.admin))
            assert response.status_code == 422, (params, response.text)
