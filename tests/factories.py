"""Data builders for the tests: keys, partners, services and cases, made through the same code
paths the API uses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import bindparam, update

from shared.auth import create_key
from shared.db import Database, Statement
from shared.tables import api_keys


async def make_admin_key(db: Database) -> str:
    async with db.transaction() as conn:
        _row, key = await create_key(conn, role="admin", partner_id=None, name="test admin")
    return key


_EXPIRE = Statement(
    update(api_keys).where(api_keys.c.id == bindparam("key_id")).values(expires_at=bindparam("at"))
)


async def expire_key(db: Database, key_id: UUID | str, *, at: datetime | None = None) -> None:
    """Move a key's `expires_at` to `at` (by default a second ago), as time passing would."""
    async with db.transaction() as conn:
        await _EXPIRE.execute(
            conn, key_id=UUID(str(key_id)), at=at or datetime.now(UTC) - timedelta(seconds=1)
        )


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def make_partner(client, admin_key: str, name: str = "ONG Sabou", **fields) -> dict:
    body = {"name": name, "acronym": name[:6].upper(), "kind": "ngo", **fields}
    response = await client.post("/partners", json=body, headers=bearer(admin_key))
    assert response.status_code == 201, response.text
    return response.json()


async def make_partner_key(client, admin_key: str, partner_id: UUID | str) -> dict:
    response = await client.post(
        f"/partners/{partner_id}/api-keys", json={"name": "test"}, headers=bearer(admin_key)
    )
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
