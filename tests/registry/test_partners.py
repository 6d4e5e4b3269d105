"""PATCH /partners/{id}: who may change what, deactivation and its keys, events, If-Match."""

from __future__ import annotations

from uuid import UUID, uuid4

from tests.factories import bearer, make_case, make_partner_key
from tests.registry.helpers import assert_problem, database_fingerprint, event_count, events_of


async def test_a_partner_changes_its_own_name_and_contacts(hub):
    client, partner = hub["client"], hub["partner"]
    url = f"/partners/{partner['id']}"
    changes = {
        "name": "Organisation Non Gouvernementale Sabou",
        "acronym": "ONGS",
        "contact_email": "reintegration@sabou.example.org",
        "contact_phone": "+22320221111",
    }
    changed = await client.patch(
        url, json=changes, headers={**bearer(hub["key"]), "If-Match": '"1"'}
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert {k: body[k] for k in changes} == changes
    assert body["version"] == 2 and body["kind"] == "ngo" and body["status"] == "active"
    assert (await client.get(url, headers=bearer(hub["other_key"]))).json() == body
    # A contact may be removed.
    cleared = await client.patch(url, json={"contact_phone": None}, headers=bearer(hub["key"]))
    assert cleared.status_code == 200 and cleared.json()["contact_phone"] is None
    assert cleared.json()["version"] == 3

    updates = await events_of(hub["app"], "partner.updated")
    assert len(updates) == 2
    first = updates[0]
    assert first["audience"] == [UUID(partner["id"])]
    assert first["actor"] == partner["id"]
    assert first["subject"] == f"partners/{partner['id']}"
    assert first["data"]["name"] == changes["name"] and first["data"]["version"] == 2


async def test_a_partner_changes_neither_its_kind_nor_its_status(hub):
    client, partner = hub["client"], hub["partner"]
    url = f"/partners/{partner['id']}"
    before = await database_fingerprint(hub["app"])
    for body in (
        {"kind": "government"},
        {"status": "inactive"},
        {"status": "active"},
        {"name": "Renamed", "kind": "un_agency"},  # refused whole: the name does not change
        {"kind": None},
    ):
        problem = assert_problem(
            await client.patch(url, json=body, headers=bearer(hub["key"])), 403
        )
        assert problem["type"].endswith("/forbidden"), body
    assert await database_fingerprint(hub["app"]) == before
    assert (await client.get(url, headers=bearer(hub["key"]))).json() == partner
    # The coordination may.
    admin = await client.patch(url, json={"kind": "community"}, headers=bearer(hub["admin"]))
    assert admin.status_code == 200 and admin.json()["kind"] == "community"


async def test_a_partner_cannot_change_another_partner(hub):
    client, other = hub["client"], hub["other"]
    before = await database_fingerprint(hub["app"])
    answers = []
    for target in (other["id"], str(uuid4())):
        for body in ({"name": "Taken over"}, {"contact_email": "x@example.org"}, {"kind": "ngo"}):
            response = await client.patch(
                f"/partners/{target}", json=body, headers=bearer(hub["key"])
            )
            problem = assert_problem(response, 404)
            answers.append((problem["type"], problem["detail"].replace(target, "")))
    # Another partner answers exactly like a partner that does not exist.
    assert len(set(answers)) == 1
    assert await database_fingerprint(hub["app"]) == before
    assert (
        await client.get(f"/partners/{other['id']}", headers=bearer(hub["key"]))
    ).json() == other


async def test_deactivating_a_partner_shuts_its_keys_at_once_and_reactivating_opens_them(hub):
    app, client, admin = hub["app"], hub["client"], hub["admin"]
    partner = hub["partner"]
    url = f"/partners/{partner['id']}"
    spare = await make_partner_key(client, admin, partner["id"])
    revoked = await make_partner_key(client, admin, partner["id"])
    assert (
        await client.delete(f"/api-keys/{revoked['id']}", headers=bearer(admin))
    ).status_code == 204
    case = await make_case(client, hub["key"])
    keys = [hub["key"], spare["key"]]
    routes = ["/cases", f"/cases/{case['id']}", "/partners", url, f"{url}/api-keys", "/services"]

    off = await client.patch(url, json={"status": "inactive"}, headers=bearer(admin))
    assert off.status_code == 200 and off.json()["status"] == "inactive"
    for key in keys:
        for route in routes:
            assert_problem(await client.get(route, headers=bearer(key)), 401)
        # Writing, and reactivating itself, are refused just the same.
        assert_problem(await client.patch(url, json={"status": "active"}, headers=bearer(key)), 401)
        response = await client.post(
            "/cases", json={}, headers={**bearer(key), "Idempotency-Key": "after-deactivation"}
        )
        assert_problem(response, 401)
    # A key issued while the partner is inactive does not work either.
    issued = await make_partner_key(client, admin, partner["id"])
    assert_problem(await client.get("/cases", headers=bearer(issued["key"])), 401)
    # Other partners and the coordination go on; the partner stays in the directory.
    assert (await client.get("/cases", headers=bearer(hub["other_key"]))).status_code == 200
    listed = await client.get(url, headers=bearer(hub["other_key"]))
    assert listed.json()["status"] == "inactive"
    assert (await client.get(f"/cases/{case['id']}", headers=bearer(admin))).status_code == 200

    on = await client.patch(url, json={"status": "active"}, headers=bearer(admin))
    assert on.status_code == 200 and on.json()["status"] == "active"
    for key in [*keys, issued["key"]]:
        for route in routes:
            response = await client.get(route, headers=bearer(key))
            assert response.status_code == 200, (route, response.text)
    # Reactivation does not bring a revoked key back.
    assert_problem(await client.get("/cases", headers=bearer(revoked["key"])), 401)

    updates = await events_of(app, "partner.updated")
    assert [e["data"]["status"] for e in updates] == ["inactive", "active"]
    assert all(e["audience"] == [UUID(partner["id"])] and e["actor"] == "admin" for e in updates)


async def test_a_stale_if_match_answers_412_and_changes_nothing(hub):
    client, partner = hub["client"], hub["partner"]
    url = f"/partners/{partner['id']}"
    headers = bearer(hub["key"])
    first = await client.patch(
        url, json={"name": "Sabou I"}, headers={**headers, "If-Match": '"1"'}
    )
    assert first.status_code == 200 and first.json()["version"] == 2
    events = await event_count(hub["app"])
    for stale in (
        {"headers": {**headers, "If-Match": '"1"'}, "json": {"name": "Sabou II"}},
        {"headers": {**headers, "If-Match": 'W/"1"'}, "json": {"name": "Sabou II"}},
        {"headers": {**headers, "If-Match": "1"}, "json": {"name": "Sabou II"}},
        {"headers": headers, "json": {"name": "Sabou II", "version": 1}},
        {"headers": bearer(hub["admin"]), "json": {"status": "inactive", "version": 7}},
    ):
        problem = assert_problem(await client.patch(url, **stale), 412)
        assert problem["type"].endswith("/precondition-failed")
        assert problem["current_version"] == 2
    # An If-Match that is no version at all is a bad request, not a pass.
    assert_problem(
        await client.patch(url, json={"name": "Sabou II"}, headers={**headers, "If-Match": "abc"}),
        400,
    )
    assert await event_count(hub["app"]) == events
    read = await client.get(url, headers=headers)
    assert read.json() == first.json()
    current = await client.patch(
        url, json={"name": "Sabou II"}, headers={**headers, "If-Match": '"2"'}
    )
    assert current.status_code == 200 and current.json()["version"] == 3


async def test_partners_are_looked_up_by_name_whatever_its_case(hub):
    client = hub["client"]
    for key in (hub["key"], hub["admin"]):
        found = await client.get("/partners", params={"name": "ong sabou"}, headers=bearer(key))
        assert found.status_code == 200, found.text
        assert [p["id"] for p in found.json()["items"]] == [hub["partner"]["id"]]
    none = await client.get("/partners", params={"name": "ONG"}, headers=bearer(hub["key"]))
    assert none.json() == {"items": [], "next_cursor": None}
    empty = await client.get("/partners", params={"name": ""}, headers=bearer(hub["key"]))
    assert_problem(empty, 422)
