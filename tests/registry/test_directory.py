"""The service directory: who creates and changes services, priority, search, If-Match, events."""

from __future__ import annotations

from uuid import UUID

from tests.factories import bearer, make_service
from tests.registry.helpers import assert_problem, database_fingerprint, event_count, events_of


async def _ids(client, url: str, key: str) -> set[str]:
    response = await client.get(url, headers=bearer(key))
    assert response.status_code == 200, response.text
    return {s["id"] for s in response.json()["items"]}


async def test_a_partner_adds_and_changes_its_own_services(hub):
    client, key, partner = hub["client"], hub["key"], hub["partner"]
    body = {
        "service_type": "economic.vocational_training",
        "name": "Formation professionnelle, Kayes",
        "areas": ["ML-1"],
        "eligibility": {"sexes": ["female"], "min_age": 18, "max_age": 35},
        "capacity": 20,
        "response_hours": 48,
    }
    created = await client.post("/services", json=body, headers=bearer(key))
    assert created.status_code == 201, created.text
    service = created.json()
    assert service["partner_id"] == partner["id"]
    assert service["priority"] == 100 and service["status"] == "active"
    assert service["version"] == 1 and service["capacity"] == 20
    assert service["eligibility"]["sexes"] == ["female"]
    # Naming itself as the partner is the same as leaving it out.
    own = await client.post(
        "/services", json={**body, "partner_id": partner["id"]}, headers=bearer(key)
    )
    assert own.status_code == 201 and own.json()["partner_id"] == partner["id"]

    url = f"/services/{service['id']}"
    changed = await client.patch(
        url,
        json={"name": "Formation, Kayes et Kita", "areas": ["ML-1", "ML-2"], "capacity": None},
        headers={**bearer(key), "If-Match": '"1"'},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["areas"] == ["ML-1", "ML-2"] and changed.json()["capacity"] is None
    assert changed.json()["version"] == 2
    paused = await client.patch(url, json={"status": "inactive", "version": 2}, headers=bearer(key))
    assert paused.status_code == 200 and paused.json()["status"] == "inactive"
    # Everyone reads it as it now is.
    for reader in (key, hub["other_key"], hub["admin"]):
        assert (await client.get(url, headers=bearer(reader))).json() == paused.json()
    assert_problem(
        await client.get("/services/00000000-0000-0000-0000-000000000000", headers=bearer(key)),
        404,
    )


async def test_an_admin_adds_and_changes_any_partners_services(hub):
    client, admin, partner = hub["client"], hub["admin"], hub["partner"]
    body = {"service_type": "immediate.cash", "name": "Cash", "areas": ["ML"]}
    # An admin names the partner: without one, 422; an unknown one, 422.
    missing = assert_problem(await client.post("/services", json=body, headers=bearer(admin)), 422)
    assert [e["field"] for e in missing["errors"]] == ["body.partner_id"]
    unknown = {**body, "partner_id": "00000000-0000-0000-0000-000000000000"}
    problem = assert_problem(
        await client.post("/services", json=unknown, headers=bearer(admin)), 422
    )
    assert [e["field"] for e in problem["errors"]] == ["body.partner_id"]

    created = await client.post(
        "/services",
        json={**body, "partner_id": partner["id"], "priority": 10},
        headers=bearer(admin),
    )
    assert created.status_code == 201, created.text
    service = created.json()
    assert service["partner_id"] == partner["id"] and service["priority"] == 10
    url = f"/services/{service['id']}"
    changed = await client.patch(
        url, json={"priority": 5, "response_hours": 24}, headers=bearer(admin)
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["priority"] == 5 and changed.json()["response_hours"] == 24
    # The partner manages it from then on, except its priority.
    renamed = await client.patch(url, json={"name": "Cash transfer"}, headers=bearer(hub["key"]))
    assert renamed.status_code == 200 and renamed.json()["priority"] == 5


async def test_only_admins_set_priority(hub):
    client, key = hub["client"], hub["key"]
    service = await make_service(client, key)
    url = f"/services/{service['id']}"
    before = await database_fingerprint(hub["app"])
    body = {"service_type": "immediate.cash", "name": "Cash", "areas": ["ML"]}
    for priority in (0, 1, 100, None):
        if priority is not None:
            response = await client.post(
                "/services", json={**body, "priority": priority}, headers=bearer(key)
            )
            problem = assert_problem(response, 403)
            assert problem["type"].endswith("/forbidden")
        response = await client.patch(url, json={"priority": priority}, headers=bearer(key))
        assert_problem(response, 403)
        # Even alongside an allowed change: the request is refused whole.
        response = await client.patch(
            url, json={"name": "Renamed", "priority": priority}, headers=bearer(key)
        )
        assert_problem(response, 403)
    assert await database_fingerprint(hub["app"]) == before
    assert (await client.get(url, headers=bearer(key))).json() == service
    set_by_admin = await client.patch(url, json={"priority": 1}, headers=bearer(hub["admin"]))
    assert set_by_admin.status_code == 200 and set_by_admin.json()["priority"] == 1


async def test_a_partner_changes_no_other_partners_service(hub):
    client = hub["client"]
    theirs = await make_service(client, hub["other_key"])
    before = await database_fingerprint(hub["app"])
    for body in ({"name": "Mine now"}, {"status": "inactive"}, {"priority": 1}):
        response = await client.patch(
            f"/services/{theirs['id']}", json=body, headers=bearer(hub["key"])
        )
        assert_problem(response, (403, 404))
    response = await client.post(
        "/services",
        json={
            "partner_id": hub["other"]["id"],
            "service_type": "immediate.cash",
            "name": "In their name",
            "areas": ["ML"],
        },
        headers=bearer(hub["key"]),
    )
    assert_problem(response, 403)
    assert await database_fingerprint(hub["app"]) == before


async def test_search_by_area_finds_the_services_covering_it(hub):
    client, key = hub["client"], hub["key"]
    region = await make_service(client, key, name="Kayes region", areas=["ML-1"])
    country = await make_service(client, key, name="All Mali", areas=["ML"])
    cercle = await make_service(client, key, name="Kayes cercle", areas=["ML-1-03"])
    elsewhere = await make_service(client, key, name="Koulikoro", areas=["ML-2"])
    sibling = await make_service(client, key, name="Kita cercle", areas=["ML-1-05"])
    several = await make_service(client, key, name="Two regions", areas=["ML-2", "ML-1"])
    found = await _ids(client, "/services?area=ML-1-03", hub["other_key"])
    assert found == {region["id"], country["id"], cercle["id"], several["id"]}
    assert elsewhere["id"] not in found and sibling["id"] not in found
    # A region is covered by its own services and the country's, not by its cercles'.
    assert await _ids(client, "/services?area=ML-1", key) == {
        region["id"],
        country["id"],
        several["id"],
    }
    assert await _ids(client, "/services?area=ML", key) == {country["id"]}
    assert await _ids(client, "/services?area=ML-2-04", key) == {
        country["id"],
        elsewhere["id"],
        several["id"],
    }
    # Bamako's communes sit under the district: covered by the country's service only here.
    assert await _ids(client, "/services?area=ML-BKO-03", key) == {country["id"]}
    unknown = await client.get("/services?area=ML-99", headers=bearer(key))
    assert unknown.status_code in (200, 422), unknown.text
    if unknown.status_code == 200:
        assert unknown.json()["items"] == []


async def test_search_by_service_type_and_partner(hub):
    client, key, other_key = hub["client"], hub["key"], hub["other_key"]
    training = await make_service(client, key, service_type="economic.vocational_training")
    cash = await make_service(client, key, service_type="immediate.cash")
    their_training = await make_service(
        client, other_key, service_type="economic.vocational_training", areas=["ML-2"]
    )
    by_type = "/services?service_type=economic.vocational_training"
    assert await _ids(client, by_type, key) == {training["id"], their_training["id"]}
    assert await _ids(client, f"/services?partner_id={hub['partner']['id']}", other_key) == {
        training["id"],
        cash["id"],
    }
    assert await _ids(client, f"/services?partner_id={hub['other']['id']}", key) == {
        their_training["id"]
    }
    combined = f"{by_type}&partner_id={hub['other']['id']}&area=ML-2-01"
    assert await _ids(client, combined, key) == {their_training["id"]}
    assert await _ids(client, f"{by_type}&area=ML-1-03", key) == {training["id"]}
    assert await _ids(client, "/services?service_type=economic.space_travel", key) == set()
    # Paging through the whole directory returns every service once.
    seen: list[str] = []
    cursor = None
    while True:
        url = "/services?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await client.get(url, headers=bearer(key))).json()
        seen += [s["id"] for s in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted({training["id"], cash["id"], their_training["id"]})


async def test_a_stale_if_match_answers_412_and_changes_nothing(hub):
    client, key = hub["client"], hub["key"]
    service = await make_service(client, key)
    url = f"/services/{service['id']}"
    first = await client.patch(
        url, json={"name": "First"}, headers={**bearer(key), "If-Match": '"1"'}
    )
    assert first.status_code == 200 and first.json()["version"] == 2
    events = await event_count(hub["app"])
    for stale in (
        {"headers": {**bearer(key), "If-Match": '"1"'}, "json": {"name": "Second"}},
        {"headers": {**bearer(key), "If-Match": 'W/"1"'}, "json": {"status": "inactive"}},
        {"headers": bearer(key), "json": {"name": "Second", "version": 1}},
        {"headers": bearer(hub["admin"]), "json": {"priority": 3, "version": 5}},
    ):
        problem = assert_problem(await client.patch(url, **stale), 412)
        assert problem["current_version"] == 2
    # If-Match and the body's version must agree.
    response = await client.patch(
        url, json={"name": "Second", "version": 2}, headers={**bearer(key), "If-Match": '"1"'}
    )
    assert_problem(response, (400, 412))
    assert await event_count(hub["app"]) == events
    assert (await client.get(url, headers=bearer(key))).json() == first.json()


async def test_service_events_name_the_partner_in_their_audience(hub):
    app, client = hub["app"], hub["client"]
    partner_id = hub["partner"]["id"]
    service = await make_service(client, hub["key"])
    by_admin = await make_service(client, hub["admin"], partner_id=partner_id, areas=["ML-1"])
    await client.patch(
        f"/services/{service['id']}", json={"name": "Renamed"}, headers=bearer(hub["key"])
    )
    await client.patch(
        f"/services/{by_admin['id']}", json={"priority": 7}, headers=bearer(hub["admin"])
    )
    created = await events_of(app, "service.created")
    updated = await events_of(app, "service.updated")
    assert [e["data"]["id"] for e in created] == [service["id"], by_admin["id"]]
    assert [e["data"]["id"] for e in updated] == [service["id"], by_admin["id"]]
    for event in created + updated:
        assert event["audience"] == [UUID(partner_id)]
        assert event["subject"] == f"services/{event['data']['id']}"
        assert event["source"] == "/registry"
    assert [e["actor"] for e in created] == [partner_id, "admin"]
    assert [e["actor"] for e in updated] == [partner_id, "admin"]
    assert updated[0]["data"]["name"] == "Renamed" and updated[0]["data"]["version"] == 2
    assert updated[1]["data"]["priority"] == 7
    # Nothing of it goes to the other partner.
    other = UUID(hub["other"]["id"])
    assert all(other not in e["audience"] for e in created + updated)
