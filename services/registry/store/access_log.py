"""The access log (SPEC 9): who read which case, full, minimised or listed."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.registry.tables import access_log
from shared.pagination import keyset, page_of


async def list_entries(
    session: AsyncSession,
    *,
    case_id: UUID | None,
    partner_id: UUID | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the log, oldest first, of one case or partner if named; the next cursor."""
    query = select(access_log)
    if case_id is not None:
        query = query.where(access_log.c.case_id == case_id)
    if partner_id is not None:
        query = query.where(access_log.c.partner_id == partner_id)
    query = keyset(query, order_by=[access_log.c.id], cursor=cursor, limit=limit, parse=[int])
    rows = (await session.execute(query)).mappings().all()
    items, next_cursor = page_of(rows, limit=limit, key=lambda r: (r["id"],))
    return [dict(r) for r in items], next_cursor
