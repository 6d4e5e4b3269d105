"""Erasure through the registry's API (SPEC 9): `POST /cases/{id}/erase` removes the
beneficiary's personal data from the registry's rows, every event about the case, the
idempotency records and the duplicate keys; an open case is closed first; `case.erased` goes
to the owner and every partner that held a referral; the access log records it; it is final."""

from __future__ import annotations

import json
import uuid

from services.registry import case_actions
from services.registry.store import cases as cases_store
from shared.eventlog.append import append
from tests.factories import bearer, case_body, make_case
from tests.registry.helpers import assert_problem, database_fingerprint, event_count, events_of

PERSONAL = ("Aminata", "Traoré", "Traor\\u00e9", "+22370123456", "AA1234567", "1996-04-12")
PERSONAL += ("prefers a woman counsellor",)


async def _rows(app, query: str, *args) -> list[dict]:
    async with app.state.db.connection() as conn:
        return [dict(r) for r in await conn.fetch(query, *args)]


async def _text_about(app, case_id: str) -> str:
    """Every row that holds the case, as text: its row, its steps, its keys, its events."""
    rows = await _rows(
        app,
        """
        SELECT to_jsonb(c)::text AS t FROM registry.cases c WHERE id = $1
        UNION ALL SELECT to_jsonb(s)::text FROM registry.plan_steps s WHERE case_id = $1
        UNION ALL SELECT to_jsonb(k)::text FROM registry.duplicate_keys k WHERE case_id = $1
        UNION ALL SELECT data::text FROM hub.events
                  WHERE COALESCE(data ->> 'case_id', substring(subject, '^cases/(.+)$')) = $1::text
        UNION ALL SELECT encode(response_body, 'escape') FROM hub.idempotency_records
        """,
        uuid.UUID(case_id),
    )
    return "\n".join(r["t"] for r in rows)


async def _erase(hub, case_id: str, reason: str = "Request of the beneficiary", key=None):
    return await hub["client"].post(
        f"/cases/{case_id}/erase", json={"reason": reason}, headers=bearer(key or hub["admin"])
    )


async def test_erasing_an_open_case_closes_it_and_leaves_no_personal_data(hub):
    client, owner_key = hub["client"], hub["key"]
    created = await client.post(
        "/cases", json=case_body(), headers={**bearer(owner_key), "Idempotency-Key": "intake-1"}
    )
    assert created.status_code == 201
    case = created.json()
    # Another case of the same person: a duplicate pair, with its reasons.
    await make_case(client, owner_key, external_id="EXT-2")
    text = await _text_about(hub["app"], case["id"])
    assert all(p in text for p in PERSONAL if "\\" not in p), text
    # The referrals service assigned a step to the other partner: it holds a copy.
    async with hub["app"].state.db.transaction() as conn:
        await append(
            conn,
            type="referral.created",
            source="/referrals",
            subject=f"referrals/{uuid.uuid4()}",
            data={
                "case_id": case["id"],
                "assignee_partner_id": hub["other"]["id"],
                "status": "requested",
                "case": {"reference": case["reference"], "beneficiary": {"given_name": "Aminata"}},
                "history": [{"status": "requested", "actor": "system", "note": "routed"}],
            },
            actor="system",
            audience=[uuid.UUID(hub["partner"]["id"]), uuid.UUID(hub["other"]["id"])],
        )

    response = await _erase(hub, case["id"])
    assert response.status_code == 200, response.text
    result = response.json()
    assert set(result) == {"case_id", "reference", "erased_at", "reason"}
    assert (result["case_id"], result["reference"]) == (case["id"], case["reference"])
    assert result["reason"] == "Request of the beneficiary"

    read = (await client.get(f"/cases/{case['id']}", headers=bearer(owner_key))).json()
    assert read["erased_at"] == result["erased_at"]
    assert read["status"] == "closed"
    assert read["beneficiary"]["given_name"] is None and read["beneficiary"]["phone"] is None
    assert (read["beneficiary"]["sex"], read["beneficiary"]["birth_year"]) == ("female", 1996)
    assert read["beneficiary"]["id_documents"] == [] and read["vulnerabilities"] == []
    assert read["return"]["area_code"] == "ML-BKO-03"
    assert [s["notes"] for s in read["plan"]] == ["", "", ""]
    listed = (await client.get("/cases", headers=bearer(owner_key))).json()["items"]
    assert next(c for c in listed if c["id"] == case["id"])["beneficiary"]["family_name"] is None

    text = await _text_about(hub["app"], case["id"])
    assert not [p for p in PERSONAL if p in text], text
    assert not await _rows(
        hub["app"],
        "SELECT 1 FROM registry.duplicate_keys WHERE case_id = $1",
        uuid.UUID(case["id"]),
    )
    pairs = await _rows(hub["app"], "SELECT reasons FROM registry.duplicates")
    assert pairs and all(p["reasons"] == [] for p in pairs)
    assert not await _rows(
        hub["app"], "SELECT 1 FROM hub.idempotency_records WHERE key = 'intake-1'"
    )

    # Closed first, then erased: the owner and the partner that held a referral are told.
    closed, erased = (
        await events_of(hub["app"], "case.closed"),
        await events_of(hub["app"], "case.erased"),
    )
    assert [e["subject"] for e in closed] == [f"cases/{case['id']}"]
    [event] = erased
    assert event["seq"] > closed[0]["seq"] and event["actor"] == "admin"
    assert {str(p) for p in event["audience"]} == {hub["partner"]["id"], hub["other"]["id"]}
    assert event["data"] == result

    log = (
        await client.get(f"/access-log?case_id={case['id']}", headers=bearer(hub["admin"]))
    ).json()["items"]
    assert [(e["view"], e["route"]) for e in log if e["view"] == "erase"] == [
        ("erase", "/cases/{case_id}/erase")
    ]
    assert next(e for e in log if e["view"] == "erase")["partner_id"] is None


async def test_a_second_erasure_answers_the_same_result_and_changes_nothing(hub):
    case = await make_case(hub["client"], hub["key"])
    first = await _erase(hub, case["id"])
    assert first.status_code == 200
    before, events = await database_fingerprint(hub["app"]), await event_count(hub["app"])
    again = await _erase(hub, case["id"], reason="another reason")
    assert again.status_code == 200 and again.json() == first.json()
    assert await database_fingerprint(hub["app"]) == before
    assert await event_count(hub["app"]) == events


async def test_every_write_to_an_erased_case_answers_409_and_changes_nothing(hub):
    client, key = hub["client"], hub["key"]
    case = await make_case(
        client,
        key,
        plan=[
            {"service_type": "immediate.cash", "delivery": "direct", "depends_on": []},
            {"service_type": "economic.vocational_training", "depends_on": []},
        ],
    )
    other = await make_case(client, key, external_id="EXT-2")
    assert (await _erase(hub, case["id"])).status_code == 200
    step = case["plan"][0]["id"]
    pair = (await client.get("/duplicates", headers=bearer(hub["admin"]))).json()["items"][0]
    writes = [
        ("PATCH", f"/cases/{case['id']}", {"beneficiary": {"given_name": "Awa"}}, key),
        ("POST", f"/cases/{case['id']}/consent", {"referral": "withdrawn"}, key),
        (
            "POST",
            f"/cases/{case['id']}/steps",
            {"steps": [{"service_type": "immediate.cash"}]},
            key,
        ),
        ("POST", f"/cases/{case['id']}/steps/{step}/cancel", None, key),
        ("POST", f"/cases/{case['id']}/steps/{step}/complete", None, key),
        ("POST", f"/cases/{case['id']}/close", {"reason": "other"}, key),
        ("POST", f"/cases/{case['id']}/reopen", None, key),
        ("PUT", "/cases/by-external-id/EXT-1", case_body(), key),
        ("POST", f"/cases/{case['id']}/reopen", None, hub["admin"]),
        (
            "POST",
            f"/duplicates/{pair['id']}/merge",
            {"keep_case_id": other["id"]},
            hub["admin"],
        ),
    ]
    before = await database_fingerprint(hub["app"])
    for method, url, body, who in writes:
        response = await client.request(method, url, json=body, headers=bearer(who))
        problem = assert_problem(response, 409)
        assert "erased" in problem["detail"] or "erased" in json.dumps(problem), (method, url)
    assert await database_fingerprint(hub["app"]) == before
    # Reads still work: the owner and the admin see the erased case.
    for who in (key, hub["admin"]):
        read = await client.get(f"/cases/{case['id']}", headers=bearer(who))
        assert read.status_code == 200 and read.json()["erased_at"] is not None


async def test_only_an_admin_erases_and_a_bad_reason_changes_nothing(hub):
    client = hub["client"]
    case = await make_case(client, hub["key"])
    before = await database_fingerprint(hub["app"])
    for key in (hub["key"], hub["other_key"]):
        problem = assert_problem(await _erase(hub, case["id"], key=key), 403)
        assert problem["type"].endswith("/forbidden")
        assert case["id"] not in problem["detail"]
    assert_problem(await _erase(hub, str(uuid.uuid4())), 404)
    for body in ({}, {"reason": ""}, {"reason": "   "}, {"reason": "x" * 501}, {"reason": 5}):
        response = await client.post(
            f"/cases/{case['id']}/erase", json=body, headers=bearer(hub["admin"])
        )
        assert_problem(response, 422)
    assert_problem(
        await client.post(
            f"/cases/{case['id']}/erase",
            json={"reason": "ok", "also": 1},
            headers=bearer(hub["admin"]),
        ),
        422,
    )
    assert await database_fingerprint(hub["app"]) == before
    read = (await client.get(f"/cases/{case['id']}", headers=bearer(hub["key"]))).json()
    assert read["erased_at"] is None and read["beneficiary"]["given_name"] == "Aminata"


async def test_the_retention_worker_erases_without_a_key_and_the_log_says_so(hub):
    """`case_actions.erase_case` with no caller, as the retention worker calls it."""
    client = hub["client"]
    case = await make_case(client, hub["key"])
    async with hub["app"].state.db.transaction() as conn:
        row = await cases_store.load_case(conn, case_id=uuid.UUID(case["id"]), for_update=True)
        result = await case_actions.erase_case(
            conn, case=row, reason="retention period over", caller=None
        )
    assert result["reason"] == "retention period over"
    [closed] = await events_of(hub["app"], "case.closed")
    [erased] = await events_of(hub["app"], "case.erased")
    assert closed["actor"] == erased["actor"] == "retention"
    log = (
        await client.get(f"/access-log?case_id={case['id']}", headers=bearer(hub["admin"]))
    ).json()["items"]
    assert [(e["view"], e["key_id"], e["partner_id"]) for e in log] == [("erase", None, None)]
