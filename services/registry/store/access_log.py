"""The access log (SPEC 9): who read which case, full, minimised or listed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import String, bindparam, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.ext.asyncio import AsyncSession

from services.registry.tables import access_log
from shared.auth import Principal
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


# One row per case read, in the order given, in one statement whatever their number.
_RECORD_ACCESS = text(
    """
    INSERT INTO registry.access_log (case_id, partner_id, key_id, view, route)
    SELECT read.case_id, :partner_id, :key_id, :view, :route
    FROM unnest(:case_ids) WITH ORDINALITY AS read(case_id, n)
    ORDER BY read.n
    """
).bindparams(
    bindparam("case_ids", type_=ARRAY(PG_UUID(as_uuid=True))),
    bindparam("partner_id", type_=PG_UUID(as_uuid=True)),
    bindparam("key_id", type_=PG_UUID(as_uuid=True)),
    bindparam("view", type_=String),
    bindparam("route", type_=String),
)


async def record_access(
    session: AsyncSession,
    *,
    case_ids: Sequence[UUID],
    caller: Principal,
    view: str,
    route: str,
) -> None:
    """Record in the access log (SPEC 9) that the caller's key read these cases."""
    if not case_ids:
        return
    await session.execute(
        _RECORD_ACCESS,
        {
            "case_ids": list(case_ids),
            "partner_id": caller.partner_id,
            "key_id": caller.key_id,
            "view": view,
            "route": route,
        },
    )
