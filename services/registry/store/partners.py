"""Partners and their API keys: queries and the events they emit."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.registry.store import emit_snapshot
from services.registry.tables import partners
from shared.auth import Principal, create_key
from shared.constraints import PARTNER_UNKNOWN
from shared.errors import NotFound, unknown_reference
from shared.pagination import keyset, page_of, parse_time
from shared.tables import api_keys
from shared.versioning import check_version

KEY_COLUMNS = [c for c in api_keys.c if c.name != "key_hash"]


async def create_partner(
    session: AsyncSession, *, values: Mapping[str, Any], caller: Principal
) -> dict[str, Any]:
    row = (
        (
            await session.execute(
                insert(partners).values(id=uuid.uuid4(), **values).returning(*partners.c)
            )
        )
        .mappings()
        .one()
    )
    return await emit_snapshot(
        session,
        type="partner.created",
        subject=f"partners/{row['id']}",
        row=row,
        caller=caller,
        audience=[row["id"]],
    )


async def get_partner(session: AsyncSession, *, partner_id: UUID) -> dict[str, Any] | None:
    row = (
        (await session.execute(select(partners).where(partners.c.id == partner_id)))
        .mappings()
        .one_or_none()
    )
    return dict(row) if row else None


async def check_partner(session: AsyncSession, *, partner_id: UUID, field: str) -> None:
    """422 naming `field` when no partner has this id (before a write that refers to it)."""
    found = (
        await session.execute(select(partners.c.id).where(partners.c.id == partner_id))
    ).scalar()
    if found is None:
        raise unknown_reference(field, PARTNER_UNKNOWN)


async def list_partners(
    session: AsyncSession, *, limit: int, cursor: str | None, name: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of partners by name, and the cursor of the next page (None on the last);
    with `name`, only the partners of that name, whatever its case."""
    chosen = select(partners)
    if name is not None:
        chosen = chosen.where(func.lower(partners.c.name) == name.lower())
    query = keyset(
        chosen,
        order_by=[partners.c.name, partners.c.id],
        cursor=cursor,
        limit=limit,
        parse=[str, UUID],
    )
    rows = (await session.execute(query)).mappings().all()
    items, next_cursor = page_of(rows, limit=limit, key=lambda r: (r["name"], r["id"]))
    return [dict(r) for r in items], next_cursor


async def create_partner_key(
    session: AsyncSession, *, partner_id: UUID, name: str
) -> tuple[dict[str, Any], str]:
    # A key issued to an inactive partner must answer 401 like its other keys. The share
    # lock orders this against a concurrent change of the partner's status.
    status = (
        await session.execute(
            select(partners.c.status).where(partners.c.id == partner_id).with_for_update(read=True)
        )
    ).scalar_one()
    row, key = await create_key(session, role="partner", partner_id=partner_id, name=name)
    if status != "active":
        await session.execute(
            update(api_keys).where(api_keys.c.id == row["id"]).values(partner_active=False)
        )
    return row, key


async def list_keys(
    session: AsyncSession, *, partner_id: UUID, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of a partner's keys (without their hash) by creation, and the next cursor."""
    query = keyset(
        select(*KEY_COLUMNS).where(api_keys.c.partner_id == partner_id),
        order_by=[api_keys.c.created_at, api_keys.c.id],
        cursor=cursor,
        limit=limit,
        parse=[parse_time, UUID],
    )
    rows = (await session.execute(query)).mappings().all()
    items, next_cursor = page_of(rows, limit=limit, key=lambda r: (r["created_at"], r["id"]))
    return [dict(r) for r in items], next_cursor


async def get_key(session: AsyncSession, *, key_id: UUID) -> dict[str, Any] | None:
    row = (
        (await session.execute(select(*KEY_COLUMNS).where(api_keys.c.id == key_id)))
        .mappings()
        .one_or_none()
    )
    return dict(row) if row else None


async def revoke_key(session: AsyncSession, *, key_id: UUID) -> None:
    await session.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )


async def update_partner(
    session: AsyncSession,
    *,
    partner_id: UUID,
    changes: Mapping[str, Any],
    caller: Principal,
    expected_version: int | None,
) -> dict[str, Any]:
    """Apply `changes` (already authorised) with optimistic concurrency; emit the event."""
    current = (
        (
            await session.execute(
                select(partners).where(partners.c.id == partner_id).with_for_update()
            )
        )
        .mappings()
        .one_or_none()
    )
    if current is None:
        raise NotFound(f"No partner {partner_id}.")
    check_version(current["version"], expected_version)
    row = (
        (
            await session.execute(
                update(partners)
                .where(partners.c.id == partner_id)
                .values(**changes, version=partners.c.version + 1, updated_at=func.now())
                .returning(*partners.c)
            )
        )
        .mappings()
        .one()
    )
    if "status" in changes and changes["status"] != current["status"]:
        # Keys of an inactive partner answer 401 at once, in every service.
        await session.execute(
            update(api_keys)
            .where(api_keys.c.partner_id == partner_id)
            .values(partner_active=changes["status"] == "active")
        )
    return await emit_snapshot(
        session,
        type="partner.updated",
        subject=f"partners/{partner_id}",
        row=row,
        caller=caller,
        audience=[partner_id],
    )
