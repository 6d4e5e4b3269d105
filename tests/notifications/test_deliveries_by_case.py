"""`GET /deliveries?case_id=` (admin): which partners' endpoints received the events about one
case (its `case.*` events and the events whose data names it), without the bodies; what a
subject access export lists (SPEC 9)."""

from __future__ import annotations

from uuid import uuid4

from shared.eventlog.about_case import CASE_OF_EVENT
from tests.factories import bearer
from tests.hub import eventually, running_hub, two_cases_for_a_provider
from tests.notifications.receiver import Receiver
from tests.registry.helpers import assert_problem

PLAN = [{"service_type": "economic.vocational_training", "depends_on": []}]


async def _deliveries_about(hub, case_id: str) -> set[str]:
    """The ids of the deliveries of the events about the case, read from the tables."""
    async with hub.db.connection() as conn:
        rows = await conn.fetch(
            "SELECT d.id::text FROM notifications.deliveries d "
            "JOIN hub.events e ON e.id = d.event_id "
            f"WHERE {CASE_OF_EVENT} = $1",
            case_id,
        )
    return {r[0] for r in rows}


async def _listed(hub, key: str, **params) -> list[dict]:
    items, cursor = [], None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        page = await hub.notifications.get("/deliveries", params=query, headers=bearer(key))
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return items


async def test_an_admin_lists_the_deliveries_of_one_case_and_who_received_them(settings):
    receiver = Receiver()
    await receiver.start()
    try:
        async with running_hub(settings) as hub:
            owner, provider, case, other = await two_cases_for_a_provider(
                hub, receiver.url, PLAN, "CASE"
            )

            async def both_referrals_delivered():
                listed = await _listed(hub, hub.admin, event_type="referral.created")
                return len(listed) >= 4  # two cases, to the owner and the provider

            await eventually(both_referrals_delivered)
            expected = await _deliveries_about(hub, case["id"])
            assert expected and expected.isdisjoint(await _deliveries_about(hub, other["id"]))

            listed = await _listed(hub, hub.admin, case_id=case["id"])
            assert {d["id"] for d in listed} == expected
            assert {d["partner_id"] for d in listed} == {owner["id"], provider["id"]}
            assert {d["event_type"] for d in listed} >= {"case.created", "referral.created"}
            # Page by page, one a page: the same deliveries, each once.
            paged = await _listed(hub, hub.admin, case_id=case["id"], limit=1)
            assert [d["id"] for d in paged] == [d["id"] for d in listed]
            # No body: neither the event's data nor an attempt's response.
            for delivery in listed:
                assert not {"data", "body", "attempts", "response_excerpt"} & delivery.keys()
                assert "Aminata" not in str(delivery)
            # Filters combine.
            created = await _listed(
                hub, hub.admin, case_id=case["id"], event_type="referral.created"
            )
            assert {d["partner_id"] for d in created} == {owner["id"], provider["id"]}
            # A case the log knows nothing of: none.
            assert await _listed(hub, hub.admin, case_id=str(uuid4())) == []

            # A partner may not ask by case, not even for its own.
            for key in (owner["key"], provider["key"]):
                response = await hub.notifications.get(
                    "/deliveries", params={"case_id": case["id"]}, headers=bearer(key)
                )
                assert_problem(response, 403)
            # Without it, a partner's list is its own deliveries, with its own partner id.
            mine = await _listed(hub, provider["key"])
            assert mine and {d["partner_id"] for d in mine} == {provider["id"]}
            # A malformed case id is a 422.
            bad = await hub.notifications.get(
                "/deliveries", params={"case_id": "not-a-uuid"}, headers=bearer(hub.admin)
            )
            assert_problem(bad, 422)
    finally:
        await receiver.stop()
