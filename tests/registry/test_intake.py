"""Intake as stored: the rows a new case writes match what its creator and its event are told;
references, the external-id check, and duplicate keys of a new case."""

from __future__ import annotations

from uuid import UUID

import pytest
from sqlalchemy import select

from services.registry import matching
from services.registry.matching import facts_of
from services.registry.tables import cases, duplicate_keys, duplicates, plan_steps
from shared.db import Statement
from shared.tables import events
from tests.factories import (
    bearer,
    case_body,
    distinct_person,
    make_case,
    make_partner,
    make_partner_key,
)

STEP_COLUMNS = (
    "key",
    "service_type",
    "priority",
    "delivery",
    "depends_on",
    "notes",
    "status",
    "status_reason",
)


async def _rows(app, query) -> list[dict]:
    async with app.state.db.connection() as conn:
        return [dict(r) for r in await Statement(query).fetch(conn)]


@pytest.mark.parametrize("consent", ["granted", "withdrawn"])
async def test_the_stored_plan_is_what_the_creator_and_the_event_see(hub, consent):
    plan = [
        {"service_type": "psychosocial.individual_counselling", "priority": "urgent"},
        {"service_type": "economic.vocational_training", "depends_on": [], "notes": "n°2"},
        {"key": "last", "service_type": "economic.microbusiness", "depends_on": ["1", "2"]},
        {"service_type": "social.legal", "depends_on": [], "delivery": "direct"},
    ]
    case = await make_case(hub["client"], hub["key"], plan=plan, consent={"referral": consent})
    stored = await _rows(
        hub["app"],
        select(plan_steps)
        .where(plan_steps.c.case_id == UUID(case["id"]))
        .order_by(plan_steps.c.position),
    )
    assert [s["position"] for s in stored] == [1, 2, 3, 4]
    assert [str(s["id"]) for s in stored] == [s["id"] for s in case["plan"]]
    assert [{c: s[c] for c in STEP_COLUMNS} for s in stored] == [
        {c: s[c] for c in STEP_COLUMNS} for s in case["plan"]
    ]
    assert all(s["owner_status"] is None and s["referral_id"] is None for s in stored)
    if consent == "granted":
        assert [(s["status"], s["status_reason"]) for s in stored] == [
            ("referred", "routing"),
            ("referred", "routing"),
            ("planned", None),
            ("planned", "ready"),
        ]
    else:
        assert [(s["status"], s["status_reason"]) for s in stored] == [
            ("waiting", "no_consent"),
            ("waiting", "no_consent"),
            ("planned", None),
            ("planned", "ready"),
        ]
    [event] = await _rows(hub["app"], select(events).where(events.c.type == "case.created"))
    assert event["data"]["plan"] == case["plan"]
    [row] = await _rows(hub["app"], select(cases).where(cases.c.id == UUID(case["id"])))
    assert row["reference"] == case["reference"] == event["data"]["reference"]
    assert row["version"] == 1 and row["status"] == "open"
    read = await hub["client"].get(f"/cases/{case['id']}", headers=bearer(hub["key"]))
    assert read.json() == case


async def test_a_case_without_a_plan_has_no_steps(hub):
    case = await make_case(hub["client"], hub["key"], plan=[])
    assert case["plan"] == []
    assert await _rows(hub["app"], select(plan_steps)) == []


async def test_references_take_six_digits_at_least(hub):
    first = await make_case(hub["client"], hub["key"], external_id="A")
    country, year, number = first["reference"].split("-")
    assert country == "ML" and len(year) == 4 and len(number) == 6 and int(number) >= 1
    async with hub["app"].state.db.connection() as conn:
        await conn.execute("SELECT setval('registry.case_reference_seq', 1234566)")
    second = await make_case(hub["client"], hub["key"], external_id="B")
    assert second["reference"] == f"{country}-{year}-1234567"


async def test_an_external_id_taken_answers_409_naming_the_case_after_the_code_checks(hub):
    client, key = hub["client"], hub["key"]
    first = await make_case(client, key, external_id="X-1")
    again = await client.post("/cases", json=case_body(external_id="X-1"), headers=bearer(key))
    assert again.status_code == 409, again.text
    assert first["id"] in again.json()["detail"]
    # Unknown codes are named first, as before any write.
    body = case_body(external_id="X-1")
    body["return"] = {"area_code": "ML-99"}
    bad = await client.post("/cases", json=body, headers=bearer(key))
    assert bad.status_code == 422
    assert [e["field"] for e in bad.json()["errors"]] == ["body.return.area_code"]
    # Another partner may use the same external id.
    other = await make_partner(client, hub["admin"], "ANPE")
    other_key = (await make_partner_key(client, hub["admin"], other["id"]))["key"]
    assert (await make_case(client, other_key, external_id="X-1"))["id"] != first["id"]


async def test_a_new_case_is_indexed_under_its_keys_and_its_duplicates_recorded(hub):
    client, key = hub["client"], hub["key"]
    alone = await make_case(client, key, external_id="D-0", beneficiary=distinct_person(7))
    first = await make_case(client, key, external_id="D-1", plan=[])
    second = await make_case(client, key, external_id="D-2", plan=[])
    for case in (alone, first, second):
        [row] = await _rows(hub["app"], select(cases).where(cases.c.id == UUID(case["id"])))
        stored = await _rows(
            hub["app"],
            select(duplicate_keys.c.key).where(duplicate_keys.c.case_id == row["id"]),
        )
        assert sorted(r["key"] for r in stored) == sorted(matching.blocking_keys(facts_of(row)))
    [pair] = await _rows(hub["app"], select(duplicates))
    assert {str(pair["case_a_id"]), str(pair["case_b_id"])} == {first["id"], second["id"]}
    assert str(pair["case_a_id"]) < str(pair["case_b_id"]) and pair["status"] == "open"
