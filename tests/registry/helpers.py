"""Builders for registry tests: partners with keys, services and cases through the API."""

from __future__ import annotations

from typing import Any

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
