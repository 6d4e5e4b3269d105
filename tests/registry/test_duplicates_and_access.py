"""Duplicates are the coordination's business; the access log records every case read;
the minimised case holds no identity documents nor other partners' notes."""

from __future__ import annotations

from tests.factories import bearer, case_body
from tests.hub import eventually, running_hub


async def test_a_duplicate_across_partners_shows_for_the_admin_only_and_can_be_linked(settings):
    async with running_hub(settings) as hub:
        first = await hub.partner("ONG Sabou")
        second = await hub.partner("OIM")
        a = (
            await hub.registry.post("/cases", json=case_body(plan=[]), headers=bearer(first["key"]))
        ).json()
        body = case_body(plan=[], external_id="OIM-1")
        body["beneficiary"] = {
            "given_name": "Aminata",
            "family_name": "Traore",
            "sex": "female",
            "birth_year": 1996,
            "id_documents": [{"type": "passport", "number": "aa 1234567"}],
        }
        created = await hub.registry.post("/cases", json=body, headers=bearer(second["key"]))
        assert created.status_code == 201
        b = created.json()
        # Nothing in the partner's answer hints at the other case.
        assert a["id"] not in created.text and a["reference"] not in created.text

        listed = await hub.registry.get("/duplicates", headers=bearer(hub.admin))
        [pair] = listed.json()["items"]
        assert set(pair["case_ids"]) == {a["id"], b["id"]}
        assert "same_id_document" in pair["reasons"] and pair["score"] >= 0.9
        for partner in (first, second):
            assert (
                await hub.registry.get("/duplicates", headers=bearer(partner["key"]))
            ).status_code == 403
            feed = (await hub.notifications.get("/feed", headers=bearer(partner["key"]))).text
            assert pair["id"] not in feed
        merge = await hub.registry.post(
            f"/duplicates/{pair['id']}/merge",
            json={"keep_case_id": a["id"]},
            headers=bearer(hub.admin),
        )
        assert merge.status_code == 409
        linked = await hub.registry.post(
            f"/duplicates/{pair['id']}/link", headers=bearer(hub.admin)
        )
        assert linked.status_code == 200 and linked.json()["status"] == "linked"
        again = await hub.registry.post(
            f"/duplicates/{pair['id']}/dismiss", headers=bearer(hub.admin)
        )
        assert again.status_code == 409


async def test_merging_two_cases_of_one_owner_moves_the_unfinished_steps(settings):
    async with running_hub(settings) as hub:
        owner = await hub.partner("ONG Sabou")
        provider = await hub.partner("CFP")
        await hub.service(provider, "economic.vocational_training", ["ML"])
        keep = (
            await hub.registry.post("/cases", json=case_body(plan=[]), headers=bearer(owner["key"]))
        ).json()
        other = (
            await hub.registry.post(
                "/cases",
                json=case_body(
                    external_id="EXT-2",
                    plan=[{"service_type": "economic.vocational_training", "depends_on": []}],
                ),
                headers=bearer(owner["key"]),
            )
        ).json()

        async def routed():
            items = (
                await hub.referrals.get(
                    "/referrals", params={"case_id": other["id"]}, headers=bearer(owner["key"])
                )
            ).json()["items"]
            return items[0] if items else None

        first = await eventually(routed)
        [pair] = (await hub.registry.get("/duplicates", headers=bearer(hub.admin))).json()["items"]
        merged = await hub.registry.post(
            f"/duplicates/{pair['id']}/merge",
            json={"keep_case_id": keep["id"]},
            headers=bearer(hub.admin),
        )
        assert merged.status_code == 200, merged.text
        closed = (
            await hub.registry.get(f"/cases/{other['id']}", headers=bearer(owner["key"]))
        ).json()
        assert closed["status"] == "closed" and closed["closure_reason"] == "merged"
        assert closed["merged_into"] == keep["id"]
        kept = (await hub.registry.get(f"/cases/{keep['id']}", headers=bearer(owner["key"]))).json()
        assert [s["key"] for s in kept["plan"]] == [f"{other['reference']}.1"]

        async def cancelled_and_moved():
            old = (
                await hub.referrals.get(f"/referrals/{first['id']}", headers=bearer(owner["key"]))
            ).json()
            new = (
                await hub.referrals.get(
                    "/referrals", params={"case_id": keep["id"]}, headers=bearer(owner["key"])
                )
            ).json()["items"]
            return old["status"] == "cancelled" and old["status_reason"] == "case_merged" and new

        await eventually(cancelled_and_moved)


async def test_the_access_log_records_full_and_minimised_reads(settings):
    async with running_hub(settings) as hub:
        owner = await hub.partner("ONG Sabou")
        provider = await hub.partner("CFP")
        await hub.service(
            provider,
            "economic.vocational_training",
            ["ML"],
            eligibility={"vulnerabilities_any": ["single_parent"]},
        )
        body = case_body(
            plan=[
                {
                    "service_type": "economic.vocational_training",
                    "depends_on": [],
                    "notes": "for the CFP",
                },
                {"service_type": "social.legal", "depends_on": [], "notes": "owner's private note"},
            ]
        )
        case = (await hub.registry.post("/cases", json=body, headers=bearer(owner["key"]))).json()

        async def assignee_view():
            response = await hub.registry.get(
                f"/cases/{case['id']}", headers=bearer(provider["key"])
            )
            return response.json() if response.status_code == 200 else None

        minimised = await eventually(assignee_view)
        assert minimised["reference"] == case["reference"]
        assert (
            minimised["beneficiary"]["age"] >= 29
            and "date_of_birth" not in minimised["beneficiary"]
        )
        assert minimised["vulnerabilities"] == ["single_parent"]  # what the service names, no more
        assert [s["notes"] for s in minimised["steps"]] == ["for the CFP"]
        text_ = str(minimised)
        for secret in (
            "AA1234567",
            "id_documents",
            "owner's private note",
            "psychosocial_distress",
        ):
            assert secret not in text_
        await hub.registry.get(f"/cases/{case['id']}", headers=bearer(owner["key"]))
        log = (
            await hub.registry.get(
                "/access-log", params={"case_id": case["id"]}, headers=bearer(hub.admin)
            )
        ).json()["items"]
        views = [(e["partner_id"], e["view"]) for e in log]
        assert (provider["id"], "minimised") in views and (owner["id"], "full") in views
        assert (
            await hub.registry.get("/access-log", headers=bearer(owner["key"]))
        ).status_code == 403
        async with hub.db.connection() as conn:
            rows = await conn.fetchval("SELECT count(*) FROM registry.access_log")
        assert rows >= 2
