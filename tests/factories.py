"""Small helpers that build test data through the same code paths the API uses."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.auth import create_key


async def make_admin_key(sessionmaker: async_sessionmaker[AsyncSession]) -> str:
    async with sessionmaker() as session, session.begin():
        _row, key = await create_key(session, role="admin", partner_id=None, name="test admin")
    return key


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
