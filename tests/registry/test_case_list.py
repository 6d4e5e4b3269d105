"""GET /cases: each item is the full case without identity documents, pages follow the
cursor, and every listed case is one access-log row (SPEC 9)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import select

from services.registry.tables import access_log
from shared.db import Statement
from tests.factories import (
    bearer,
    case_body,
    distinct_person,
)


async def _log(app) -> list[dict]:
    async with app.state.db.connection() as conn:
        rows = await Statement(select(access_log).order_by(access_log.c.id)).fetch(conn)
        return [dict(r) for r in rows]


async def _cases(client, key: str, count: int) -> list[dict]:
    made = []
    for i in range(count):
        body = case_body(external_id=f"L-{i}", beneficiary=distinct_person(i))
        if i % 3 == 1:
            body["consent"] = {"referral": "withdrawn"}
        if i % 3 == 2:
            body["plan"] = [
                {"service_type": "social.legal", "delivery": "direct", "notes": 'é \\ "'}
            ]
        response = await client.post("/cases", json=body, headers=bearer(key))
        assert response.status_code == 201, response.text
        made.append(response.json())
    return made


async def test_items_are_the_full_cases_without_identity_documents(hub):
    client, key = hub["client"], hub["key"]
    made = await _cases(client, key, 5)
    # Times with no fraction of a second, or a short one, are written alike in both reads.
    async with hub["app"].state.db.transaction() as conn:
        for case, at in zip(
            made, ("2026-01-02 03:04:05+00", "2026-01-02 03:04:05.5+00"), strict=False
        ):
            await conn.execute(
                "UPDATE registry.cases SET created_at = $1, updated_at = $1 WHERE id = $2",
                datetime.fromisoformat(at),
                UUID(case["id"]),
            )
    listed = await client.get("/cases", params={"limit": 10}, headers=bearer(key))
    assert listed.status_code == 200
    assert listed.headers["content-type"] == "application/json"
    page = listed.json()
    assert page["next_cursor"] is None
    assert {i["id"] for i in page["items"]} == {c["id"] for c in made}
    for item in page["items"]:
        full = (await client.get(f"/cases/{item['id']}", headers=bearer(key))).json()
        assert full["beneficiary"].pop("id_documents")
        assert item == full
    assert [i["updated_at"] for i in page["items"][:2]] == [
        "2026-01-02T03:04:05Z",
        "2026-01-02T03:04:05.500000Z",
    ]


async def test_each_page_writes_one_access_log_row_per_item_in_page_order(hub):
    app, client, key = hub["app"], hub["client"], hub["key"]
    await _cases(client, key, 5)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/cases", params=params, headers=bearer(key))).json()
        seen += [i["id"] for i in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == len(set(seen)) == 5
    log = await _log(app)
    assert [str(r["case_id"]) for r in log] == seen
    assert {(r["view"], r["route"]) for r in log} == {("list", "/cases")}
    assert {r["partner_id"] for r in log} == {UUID(hub["partner"]["id"])}
    assert {r["key_id"] for r in log} == {UUID(hub["key_id"])}
    assert len({r["at"] for r in log}) == 3  # one transaction per page


async def test_an_empty_page_writes_nothing_and_an_admin_read_is_logged_as_the_admins(hub):
    app, client = hub["app"], hub["client"]
    empty = await client.get("/cases", params={"status": "closed"}, headers=bearer(hub["key"]))
    assert empty.json() == {"items": [], "next_cursor": None}
    assert await _log(app) == []
    [case] = await _cases(client, hub["key"], 1)
    listed = await client.get("/cases", headers=bearer(hub["admin"]))
    assert [i["id"] for i in listed.json()["items"]] == [case["id"]]
    [row] = await _log(app)
    assert row["partner_id"] is None and str(row["case_id"]) == case["id"]


async def test_the_documented_response_is_the_page_of_list_items(hub):
    spec = (await hub["client"].get("/openapi.json")).json()
    answer = spec["paths"]["/cases"]["get"]["responses"]["200"]["content"]["application/json"]
    ref = answer["schema"]["$ref"]
    page = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert page["properties"]["items"]["items"]["$ref"].endswith("/CaseListItem")
    item = spec["components"]["schemas"]["CaseListItem"]
    assert item["properties"]["beneficiary"]["$ref"].endswith("/BeneficiaryListView")
