"""An endpoint's `event_types` and the feed's `types` must each select a known event type
(SPEC 7): a typo such as `referal.*` answers 422 listing the catalog, instead of being kept
and silently never matching."""

from __future__ import annotations

from services.notifications.app import create_app as notifications_app
from shared.events_catalog import EVENT_TYPES
from tests.conftest import running
from tests.factories import bearer, make_admin_key

URL = "http://127.0.0.1:9/hooks"


def _assert_refused(response, field: str, item: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert [e["field"] for e in problem["errors"]] == [field]
    assert item in problem["errors"][0]["message"]
    assert problem["known_event_types"] == list(EVENT_TYPES)
    assert all(t in problem["detail"] for t in EVENT_TYPES)


async def test_an_endpoint_with_an_event_type_that_matches_nothing_is_refused(settings):
    app = notifications_app(settings)
    async with running(app) as client:
        admin = bearer(await make_admin_key(app.state.db))
        refused = await client.post(
            "/endpoints",
            json={"url": URL, "event_types": ["case.*", "referal.*"]},
            headers=admin,
        )
        _assert_refused(refused, "body.event_types[1]", "referal.*")
        assert (await client.get("/endpoints", headers=admin)).json()["items"] == []

        created = await client.post(
            "/endpoints",
            json={"url": URL, "event_types": ["referral.*", "*", "case.pathway_completed"]},
            headers=admin,
        )
        assert created.status_code == 201, created.text
        endpoint = f"/endpoints/{created.json()['id']}"
        changed = await client.patch(
            endpoint, json={"event_types": ["referral.created", "partner.creatd"]}, headers=admin
        )
        _assert_refused(changed, "body.event_types[1]", "partner.creatd")
        kept = (await client.get(endpoint, headers=admin)).json()
        assert kept["event_types"] == ["referral.*", "*", "case.pathway_completed"]


async def test_the_feed_refuses_a_type_that_matches_nothing(settings):
    app = notifications_app(settings)
    async with running(app) as client:
        admin = bearer(await make_admin_key(app.state.db))
        refused = await client.get(
            "/feed", params={"types": "referral.*,referal.created"}, headers=admin
        )
        _assert_refused(refused, "query.types[1]", "referal.created")
        fine = await client.get(
            "/feed", params={"types": "referral.*,case.pathway_completed,*"}, headers=admin
        )
        assert fine.status_code == 200, fine.text
