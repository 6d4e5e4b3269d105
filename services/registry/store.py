"""Queries of the registry: keyword-only functions that take a session."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from sqlalchemy import Select, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.registry.tables import partners
from shared.auth import Principal, create_key
from shared.eventlog.append import append
from shared.tables import api_keys

SOURCE = "/registry"

KEY_COLUMNS = [c for c in api_keys.c if c.name != "key_hash"]


def partner_snapshot(row: Mapping[str, Any]) -> dict[str, Any]:
    return dict(row)


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
    snapshot = partner_snapshot(row)
    await append(
        session,
        type="partner.created",
        source=SOURCE,
        subject=f"partners/{row['id']}",
        data=snapshot,
        actor=caller.actor,
        audience=[row["id"]],
    )
    return snapshot


async def get_partner(session: AsyncSession, *, partner_id: UUID) -> dict[str, Any] | None:
    row = (
        (await session.execute(select(partners).where(partners.c.id == partner_id)))
        .mappings()
        .one_or_none()
    )
    return dict(row) if row else None


def partners_query() -> Select:
    return select(partners)


async def create_partner_key(
    session: AsyncSession, *, partner_id: UUID, name: str
) -> tuple[dict[str, Any], str]:
    return await create_key(session, role="partner", partner_id=partner_id, name=name)


def keys_query(*, partner_id: UUID) -> Select:
    return select(*KEY_COLUMNS).where(api_keys.c.partner_id == partner_id)


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
