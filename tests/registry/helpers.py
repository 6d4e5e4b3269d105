"""Builders for registry tests: partners with keys, services and cases through the API."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text

from shared.tables import events
from tests.factories import bearer


def case_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "external_id": "EXT-1",
        "beneficiary": {
            "given_name": "Aminata",
            "family_name": "Traoré",
            "sex": "female",
            "date_of_birth": "1996-04-12",
            "nationality": "ML",
            "phone": "+22370123456",
            "languages": ["bm", "fr"],
            "id_documents": [{"type": "passport", "number": "AA1234567"}],
            "household_size": 4,
        },
        "return": {"date": "2026-10-02", "country_from": "LY", "area_code": "ML-BKO-03"},
        "vulnerabilities": ["psychosocial_distress", "single_parent"],
        "consent": {"referral": "granted", "given_at": "2026-10-03T09:00:00Z", "method": "written"},
        "plan": [
            {
                "service_type": "psychosocial.individual_counselling",
                "priority": "urgent",
                "depends_on": [],
                "notes": "Owner's note: prefers a woman counsellor",
            },
            {"service_type": "economic.vocational_training", "depends_on": []},
            {"service_type": "economic.microbusiness", "depends_on": ["1", "2"]},
        ],
    }
    body.update(overrides)
    return body


async def make_case(client, key: str, **overrides: Any) -> dict:
    response = await client.post("/cases", json=case_body(**overrides), headers=bearer(key))
    assert response.status_code == 201, response.text
    return response.json()


async def make_service(client, key: str, **fields: Any) -> dict:
    body = {
        "service_type": "economic.vocational_training",
        "name": "Formation",
        "areas": ["ML"],
        **fields,
    }
    response = await client.post("/services", json=body, headers=bearer(key))
    assert response.status_code == 201, response.text
    return response.json()


# --- Shared by the tenancy, validation, directory and partner tests --------------------

PROBLEM = "application/problem+json"

# What a request that must change nothing is compared on: every registry table and the
# hub tables the registry writes. `api_keys.last_used_at` is left out (any request may
# touch it once a minute); the access log is left out (reads write it).
_FINGERPRINTED = {
    "hub.events": "SELECT seq, id, type, subject, audience, data FROM hub.events",
    "hub.api_keys": "SELECT id, role, partner_id, partner_active, name, revoked_at "
    "FROM hub.api_keys",
    "hub.areas": "SELECT * FROM hub.areas",
    "hub.service_types": "SELECT * FROM hub.service_types",
    "registry.partners": "SELECT * FROM registry.partners",
    "registry.services": "SELECT * FROM registry.services",
    "registry.cases": "SELECT * FROM registry.cases",
    "registry.plan_steps": "SELECT * FROM registry.plan_steps",
    "registry.duplicates": "SELECT * FROM registry.duplicates",
    "registry.duplicate_keys": "SELECT * FROM registry.duplicate_keys",
}


async def database_fingerprint(app) -> dict[str, tuple[int, str]]:
    """(row count, md5 of the rows) of each table a write could touch."""
    parts = [
        f"SELECT '{name}', count(*), "
        f"coalesce(md5(string_agg(r::text, '|' ORDER BY r::text)), '') FROM ({query}) AS r"
        for name, query in _FINGERPRINTED.items()
    ]
    async with app.state.sessionmaker() as session:
        rows = (await session.execute(text(" UNION ALL ".join(parts)))).all()
    return {table: (count, digest) for table, count, digest in rows}


async def event_count(app) -> int:
    async with app.state.sessionmaker() as session:
        return (await session.execute(select(func.count()).select_from(events))).scalar_one()


async def events_of(app, type_: str) -> list[dict]:
    async with app.state.sessionmaker() as session:
        query = select(events).where(events.c.type == type_).order_by(events.c.seq)
        return [dict(r) for r in (await session.execute(query)).mappings()]


def assert_problem(response, status: int | tuple[int, ...]) -> dict:
    """The response is a problem document with this status (or one of these)."""
    expected = status if isinstance(status, tuple) else (status,)
    assert response.status_code in expected, (
        response.request.method,
        response.request.url.path,
        response.status_code,
        response.text,
    )
    assert response.headers["content-type"] == PROBLEM, response.headers
    body = response.json()
    assert body["status"] == response.status_code and body["type"] and body["title"]
    return body


SYLLABLES = ("ba", "di", "ko", "sa", "ma", "tu", "ne", "fo", "ga", "li", "ro", "we", "zu", "ye")


def distinct_person(i: int) -> dict[str, Any]:
    """A beneficiary no other `i` resembles: names built from the digits of i in syllables."""

    def word(n: int, salt: int) -> str:
        letters = []
        n = n * 7 + salt
        for _ in range(4):
            letters.append(SYLLABLES[n % len(SYLLABLES)])
            n //= len(SYLLABLES)
        return "".join(letters).capitalize()

    return {
        "given_name": word(i, 3),
        "family_name": word(i, 11),
        "sex": "female" if i % 2 else "male",
        "birth_year": 1960 + i % 40,
        "id_documents": [{"type": "national_id", "number": f"NI{i:08d}"}],
    }
