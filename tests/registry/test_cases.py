"""Cases: intake with plan defaults, reading, changes with If-Match, consent, steps, closure."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from shared.db import Statement
from shared.tables import events
from tests.factories import (
    bearer,
    case_body,
    make_case,
)


async def _events(app, type_: str | None = None) -> list[dict]:
    async with app.state.db.connection() as conn:
        query = select(events).order_by(events.c.seq)
        if type_:
            query = query.where(events.c.type == type_)
        return [dict(r) for r in await Statement(query).fetch(conn)]


async def test_a_case_gets_a_reference_plan_defaults_step_statuses_and_one_event(hub):
    client = hub["client"]
    case = await make_case(
        client,
        hub["key"],
        plan=[
            {"service_type": "psychosocial.individual_counselling"},
            {"service_type": "economic.vocational_training"},
            {"service_type": "economic.microbusiness", "depends_on": [], "delivery": "direct"},
        ],
    )
    assert case["reference"].startswith("ML-20") and len(case["reference"]) == 14
    assert case["owner_partner_id"] == hub["partner"]["id"]
    assert case["version"] == 1 and case["status"] == "open"
    steps = case["plan"]
    assert [s["key"] for s in steps] == ["1", "2", "3"]
    assert [s["depends_on"] for s in steps] == [[], ["1"], []]
    assert [s["status"] for s in steps] == ["referred", "planned", "planned"]
    assert steps[2]["status_reason"] == "ready"
    [created] = await _events(hub["app"], "case.created")
    assert created["audience"] == [UUID(hub["partner"]["id"])]
    assert created["data"]["reference"] == case["reference"]
    assert created["data"]["plan"][0]["id"] == steps[0]["id"]


async def test_without_consent_steps_wait_and_granting_consent_releases_them(hub):
    client, key = hub["client"], hub["key"]
    case = await make_case(client, key, consent={"referral": "withdrawn"})
    assert [s["status"] for s in case["plan"]] == ["waiting", "waiting", "planned"]
    assert case["plan"][0]["status_reason"] == "no_consent"
    granted = await client.post(
        f"/cases/{case['id']}/consent",
        json={"referral": "granted", "method": "verbal"},
        headers={**bearer(key), "If-Match": '"1"'},
    )
    assert granted.status_code == 200, granted.text
    assert granted.json()["version"] == 2
    assert [s["status"] for s in granted.json()["plan"]] == ["referred", "referred", "planned"]
    assert len(await _events(hub["app"], "case.consent_changed")) == 1


async def test_consent_never_recorded_is_not_recorded_and_cannot_be_recorded_as_such(hub):
    client, key = hub["client"], hub["key"]
    body = case_body()
    del body["consent"]
    created = await client.post("/cases", json=body, headers=bearer(key))
    assert created.status_code == 201, created.text
    case = created.json()
    assert case["consent"] == {"referral": "not_recorded", "given_at": None, "method": None}
    assert [s["status"] for s in case["plan"]] == ["waiting", "waiting", "planned"]
    assert case["plan"][0]["status_reason"] == "no_consent"
    [event] = await _events(hub["app"], "case.created")
    assert event["data"]["consent"]["referral"] == "not_recorded"
    read = await client.get(f"/cases/{case['id']}", headers=bearer(key))
    assert read.json()["consent"]["referral"] == "not_recorded"
    # Recording consent means granting or withdrawing it.
    refused = await client.post(
        f"/cases/{case['id']}/consent", json={"referral": "not_recorded"}, headers=bearer(key)
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["field"] == "body.referral"
    withdrawn = await client.post(
        f"/cases/{case['id']}/consent", json={"referral": "withdrawn"}, headers=bearer(key)
    )
    assert withdrawn.json()["consent"]["referral"] == "withdrawn"


async def test_unknown_and_cyclic_step_references_answer_422_and_write_nothing(hub):
    client, key = hub["client"], hub["key"]
    before = len(await _events(hub["app"]))
    plans = {
        "unknown": [{"service_type": "economic.microbusiness", "depends_on": ["9"]}],
        "cycle": [
            {"key": "a", "service_type": "economic.microbusiness", "depends_on": ["b"]},
            {"key": "b", "service_type": "economic.microbusiness", "depends_on": ["a"]},
        ],
        "duplicate key": [
            {"key": "a", "service_type": "economic.microbusiness"},
            {"key": "a", "service_type": "economic.microbusiness"},
        ],
        "unknown type": [{"service_type": "economic.space_travel"}],
    }
    for name, plan in plans.items():
        response = await client.post("/cases", json=case_body(plan=plan), headers=bearer(key))
        assert response.status_code == 422, (name, response.text)
        assert all(e["field"].startswith("body.plan") for e in response.json()["errors"]), name
    assert len(await _events(hub["app"])) == before
    assert (await client.get("/cases", headers=bearer(key))).json()["items"] == []


async def test_bad_fields_are_named(hub):
    client, key = hub["client"], hub["key"]
    body = case_body()
    body["beneficiary"] = {
        **body["beneficiary"],
        "phone": "70 12 34",
        "date_of_birth": "2999-01-01",
    }
    body["return"] = {"area_code": "ML-99"}
    response = await client.post("/cases", json=body, headers=bearer(key))
    assert response.status_code == 422
    fields = {e["field"] for e in response.json()["errors"]}
    assert {"body.beneficiary.phone", "body.beneficiary.date_of_birth"} <= fields
    assert "E.164" in str(response.json())
    body = case_body()
    body["return"] = {"area_code": "ML-99"}
    response = await client.post("/cases", json=body, headers=bearer(key))
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["body.return.area_code"]


async def test_the_same_case_twice_with_one_idempotency_key_is_one_case(hub):
    client, key = hub["client"], hub["key"]
    headers = {**bearer(key), "Idempotency-Key": "intake-42"}
    first = await client.post("/cases", json=case_body(), headers=headers)
    second = await client.post("/cases", json=case_body(), headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    assert len((await client.get("/cases", headers=bearer(key))).json()["items"]) == 1
    assert len(await _events(hub["app"], "case.created")) == 1


async def test_patch_merges_and_a_stale_if_match_answers_412(hub):
    client, key = hub["client"], hub["key"]
    case = await make_case(client, key)
    url = f"/cases/{case['id']}"
    changed = await client.patch(
        url,
        json={"beneficiary": {"phone": "+22376543210"}},
        headers={**bearer(key), "If-Match": '"1"'},
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["beneficiary"]["phone"] == "+22376543210"
    assert body["beneficiary"]["given_name"] == "Aminata" and body["version"] == 2
    stale = await client.patch(
        url, json={"vulnerabilities": []}, headers={**bearer(key), "If-Match": '"1"'}
    )
    assert stale.status_code == 412
    assert stale.headers["content-type"] == "application/problem+json"
    assert (await client.get(url, headers=bearer(key))).json()["vulnerabilities"] != []
    for forbidden in ({"plan": []}, {"consent": {"referral": "granted"}}, {"status": "closed"}):
        assert (await client.patch(url, json=forbidden, headers=bearer(key))).status_code == 422


@pytest.mark.parametrize("field", ["beneficiary", "return", "vulnerabilities", "external_id"])
async def test_patch_refuses_null_for_a_field_that_cannot_be_removed_as_documented(hub, field):
    client, key = hub["client"], hub["key"]
    case = await make_case(client, key)
    refused = await client.patch(f"/cases/{case['id']}", json={field: None}, headers=bearer(key))
    assert refused.status_code == 422, refused.text
    assert [e["field"] for e in refused.json()["errors"]] == [f"body.{field}"]
    unchanged = await client.get(f"/cases/{case['id']}", headers=bearer(key))
    assert unchanged.json()["version"] == case["version"]
    schema = hub["app"].openapi()["components"]["schemas"]["CaseUpdate"]["properties"][field]
    assert "anyOf" not in schema and schema["type"] != "null", schema


async def test_upsert_by_external_id_creates_then_updates(hub):
    client, key = hub["client"], hub["key"]
    body = case_body()
    body.pop("external_id")
    created = await client.put("/cases/by-external-id/SAB-7", json=body, headers=bearer(key))
    assert created.status_code == 201, created.text
    body["beneficiary"]["household_size"] = 6
    updated = await client.put("/cases/by-external-id/SAB-7", json=body, headers=bearer(key))
    assert updated.status_code == 200, updated.text
    assert updated.json()["id"] == created.json()["id"]
    assert updated.json()["beneficiary"]["household_size"] == 6
    assert updated.json()["external_id"] == "SAB-7"
    # Another partner's upsert with the same external id is another case.
    other = await client.put(
        "/cases/by-external-id/SAB-7", json=body, headers=bearer(hub["other_key"])
    )
    assert other.status_code == 201 and other.json()["id"] != created.json()["id"]


async def test_steps_cancel_complete_close_and_reopen(hub):
    client, key = hub["client"], hub["key"]
    case = await make_case(
        client,
        key,
        plan=[
            {"service_type": "immediate.cash", "delivery": "direct"},
            {"service_type": "economic.vocational_training"},
        ],
    )
    cid = case["id"]
    direct, routed = case["plan"]
    done = await client.post(f"/cases/{cid}/steps/{direct['id']}/complete", headers=bearer(key))
    assert done.status_code == 200, done.text
    assert [s["status"] for s in done.json()["plan"]] == ["completed", "referred"]
    assert len(await _events(hub["app"], "case.step_completed")) == 1
    not_direct = await client.post(
        f"/cases/{cid}/steps/{routed['id']}/complete", headers=bearer(key)
    )
    assert not_direct.status_code == 409
    added = await client.post(
        f"/cases/{cid}/steps",
        json={"steps": [{"service_type": "economic.microbusiness"}]},
        headers=bearer(key),
    )
    assert added.status_code == 201, added.text
    new = added.json()["plan"][2]
    assert new["key"] == "3" and new["depends_on"] == ["2"] and new["status"] == "planned"
    cancelled = await client.post(f"/cases/{cid}/steps/{routed['id']}/cancel", headers=bearer(key))
    assert [s["status"] for s in cancelled.json()["plan"]] == ["completed", "cancelled", "referred"]
    closed = await client.post(
        f"/cases/{cid}/close", json={"reason": "left_area"}, headers=bearer(key)
    )
    assert closed.status_code == 200
    assert closed.json()["status"] == "closed" and closed.json()["closure_reason"] == "left_area"
    assert closed.json()["plan"][2]["status"] == "waiting"
    assert closed.json()["plan"][2]["status_reason"] == "case_closed"
    again = await client.post(
        f"/cases/{cid}/close", json={"reason": "left_area"}, headers=bearer(key)
    )
    assert again.status_code == 409
    bad = await client.post(f"/cases/{cid}/close", json={"reason": "bored"}, headers=bearer(key))
    assert bad.status_code == 422
    reopened = await client.post(f"/cases/{cid}/reopen", headers=bearer(key))
    assert reopened.status_code == 200 and reopened.json()["plan"][2]["status"] == "referred"
    types = [e["type"] for e in await _events(hub["app"]) if e["type"].startswith("case.")]
    assert types == [
        "case.created",
        "case.step_completed",
        "case.plan_changed",
        "case.plan_changed",
        "case.closed",
        "case.reopened",
    ]


async def test_another_partners_case_answers_404_and_lists_hold_only_ones_own(hub):
    client = hub["client"]
    mine = await make_case(client, hub["key"])
    theirs = await make_case(client, hub["other_key"], external_id="X-9")
    listed = (await client.get("/cases", headers=bearer(hub["key"]))).json()["items"]
    assert [c["id"] for c in listed] == [mine["id"]]
    assert "id_documents" not in listed[0]["beneficiary"]
    for method, path, body in [
        ("GET", f"/cases/{theirs['id']}", None),
        ("PATCH", f"/cases/{theirs['id']}", {"vulnerabilities": []}),
        ("POST", f"/cases/{theirs['id']}/consent", {"referral": "withdrawn"}),
        ("POST", f"/cases/{theirs['id']}/close", {"reason": "other"}),
        ("POST", f"/cases/{theirs['id']}/reopen", None),
        ("POST", f"/cases/{theirs['id']}/steps", {"steps": [{"service_type": "immediate.cash"}]}),
        ("POST", f"/cases/{theirs['id']}/steps/{theirs['plan'][0]['id']}/cancel", None),
    ]:
        response = await client.request(method, path, json=body, headers=bearer(hub["key"]))
        assert response.status_code == 404, (method, path, response.text)
    admin_list = (await client.get("/cases", headers=bearer(hub["admin"]))).json()["items"]
    assert {c["id"] for c in admin_list} == {mine["id"], theirs["id"]}


from uuid import UUID  # noqa: E402
