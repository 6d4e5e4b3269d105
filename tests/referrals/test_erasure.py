"""Erasure across the services (SPEC 9), in-process with their workers: on `case.erased` the
referrals service cancels the case's live referrals and erases its copies (the case, the
steps' notes, the referrals' reasons, outcomes and history notes) and the events it appended;
every partner that held a referral is told; a webhook still pending is sent with the erased
data, and what the endpoints answered is forgotten."""

from __future__ import annotations

import json
import uuid

from tests.factories import bearer, case_body
from tests.hub import eventually, running_hub
from tests.notifications.receiver import Receiver

NAME, FAMILY, PHONE, DOCUMENT = "Aminata", "Traoré", "+22370123456", "AA1234567"
PERSONAL = (NAME, FAMILY, "Traor\\u00e9", PHONE, DOCUMENT, "1996-04-12", "woman counsellor")


async def _about(hub, case_id: str) -> str:
    """Every row of the referrals service and every event about the case, as text."""
    async with hub.db.connection() as conn:
        rows = await conn.fetch(
            """
            SELECT to_jsonb(c)::text AS t FROM referrals.cases c WHERE id = $1
            UNION ALL SELECT to_jsonb(s)::text FROM referrals.steps s WHERE case_id = $1
            UNION ALL SELECT to_jsonb(r)::text FROM referrals.referrals r WHERE case_id = $1
            UNION ALL SELECT to_jsonb(h)::text FROM referrals.referral_history h
                      JOIN referrals.referrals r ON r.id = h.referral_id WHERE r.case_id = $1
            UNION ALL SELECT data::text FROM hub.events
                      WHERE COALESCE(data ->> 'case_id', substring(subject, '^cases/(.+)$'))
                          = $1::text
            """,
            uuid.UUID(case_id),
        )
    return "\n".join(r["t"] for r in rows)


async def test_the_referrals_service_erases_its_copies_and_cancels_the_live_referrals(settings):
    async with running_hub(settings) as hub:
        owner = await hub.partner("ONG Sabou")
        counsel = await hub.partner("Centre Psy")
        training = await hub.partner("CFP Bamako")
        await hub.service(counsel, "psychosocial.individual_counselling", ["ML"])
        await hub.service(training, "economic.vocational_training", ["ML"])
        body = case_body(plan=case_body()["plan"][:2])
        case = await hub.call("POST", "registry", "/cases", key=owner["key"], json=body)

        async def referral_of(partner: dict):
            items = (
                await hub.referrals.get(
                    "/referrals", params={"role": "incoming"}, headers=bearer(partner["key"])
                )
            ).json()["items"]
            return items[0] if items else None

        first, second = (
            await eventually(lambda: referral_of(counsel)),
            await eventually(lambda: referral_of(training)),
        )
        for action, payload in (("accept", None), ("complete", {"outcome": f"{NAME} is better"})):
            await hub.call(
                "POST",
                "referrals",
                f"/referrals/{first['id']}/{action}",
                key=counsel["key"],
                json=payload,
            )
        await hub.call(
            "POST",
            "referrals",
            f"/referrals/{second['id']}/reject",
            key=training["key"],
            json={"reason": f"{NAME} {FAMILY} moved, call {PHONE}"},
        )

        async def rerouted():
            items = (
                await hub.referrals.get(
                    "/referrals", params={"case_id": case["id"]}, headers=bearer(hub.admin)
                )
            ).json()["items"]
            return [r for r in items if r["status"] == "unassigned"]

        [live] = await eventually(rerouted)
        before = await _about(hub, case["id"])
        assert all(p in before for p in (NAME, FAMILY, PHONE, "woman counsellor"))

        result = await hub.call(
            "POST", "registry", f"/cases/{case['id']}/erase", json={"reason": "asked"}
        )

        async def cancelled():
            referral = await hub.call("GET", "referrals", f"/referrals/{live['id']}")
            return referral if referral["status"] == "cancelled" else None

        cancellation = await eventually(cancelled)
        assert cancellation["status_reason"] == "case_closed"  # the hub's own words stay

        async def erased():
            text = await _about(hub, case["id"])
            return not [p for p in PERSONAL if p in text]

        await eventually(erased)
        done = await hub.call("GET", "referrals", f"/referrals/{first['id']}")
        assert done["outcome"] is None and done["status"] == "completed"
        rejected = await hub.call("GET", "referrals", f"/referrals/{second['id']}")
        assert rejected["status"] == "rejected" and rejected["status_reason"] is None
        assert [h["note"] for h in rejected["history"] if h["actor"] != "system"] == [""]
        assert [h["note"] for h in rejected["history"] if h["actor"] == "system"] == ["routed"]
        pathway = await hub.call("GET", "referrals", f"/cases/{case['id']}/pathway")
        assert "woman counsellor" not in json.dumps(pathway)

        # The owner and both partners that held a referral are told, in their feeds.
        for partner in (owner, counsel, training):
            feed = await hub.call(
                "GET", "notifications", "/feed", key=partner["key"], params={"types": "case.erased"}
            )
            assert [e["data"] for e in feed["items"]] == [result], partner["name"]


async def test_a_webhook_pending_at_the_erasure_is_sent_with_the_erased_data(settings):
    """Receiver down (it echoes what it got) → erase → receiver up → retry: the body names no
    one, and the receiver's earlier answers are forgotten."""
    down = {"yes": True}
    receiver = Receiver(respond=lambda got: (503, {}, got[-1].body) if down["yes"] else (200, {}))
    await receiver.start()
    try:
        async with running_hub(settings, webhook_retry_schedule=(60.0, 60.0)) as hub:
            owner = await hub.partner("ONG Sabou")
            await hub.endpoint(owner, receiver.url, ["case.created"])
            case = await hub.call(
                "POST", "registry", "/cases", key=owner["key"], json=case_body(plan=[])
            )

            async def failed_once():
                items = (await hub.call("GET", "notifications", "/deliveries", key=owner["key"]))[
                    "items"
                ]
                return items[0] if items and items[0]["attempt_count"] >= 1 else None

            delivery = await eventually(failed_once)
            detail = await hub.call("GET", "notifications", f"/deliveries/{delivery['id']}")
            assert NAME in detail["attempts"][0]["response_excerpt"]
            assert detail["status"] == "pending"

            await hub.call(
                "POST", "registry", f"/cases/{case['id']}/erase", json={"reason": "asked"}
            )

            async def answers_forgotten():
                detail = await hub.call("GET", "notifications", f"/deliveries/{delivery['id']}")
                return all(a["response_excerpt"] is None for a in detail["attempts"])

            await eventually(answers_forgotten)
            down["yes"] = False
            before = len(receiver.requests)
            await hub.call("POST", "notifications", f"/deliveries/{delivery['id']}/retry")

            async def delivered():
                return receiver.requests[before:]

            [sent, *_] = await eventually(delivered)
            body = sent.body.decode()
            assert not [p for p in PERSONAL if p in body], body
            event = json.loads(body)
            assert event["type"] == "case.created" and event["data"]["id"] == case["id"]
            assert event["data"]["beneficiary"]["given_name"] is None
            assert event["data"]["beneficiary"]["birth_year"] == 1996
    finally:
        await receiver.stop()
