"""The access log (SPEC 9): who read which case, full, minimised or listed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import bindparam, select

from services.registry.tables import access_log
from shared.auth import Principal
from shared.db import Connection, Statement
from shared.pagination import keyset, page_of


async def list_entries(
    conn: Connection,
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
    rows = await Statement(query).fetch(conn)
    items, next_cursor = page_of(rows, limit=limit, key=lambda r: (r["id"],))
    return [dict(r) for r in items], next_cursor


# One row per case read, in the order given, in one statement whatever their number.
_RECORD_ACCESS = Statement(
    """
    INSERT INTO registry.access_log (case_id, partner_id, key_id, view, route)
    SELECT read.case_id, CAST(:partner_id AS uuid), CAST(:key_id AS uuid),
        CAST(:view AS text), CAST(:route AS text)
    FROM unnest(CAST(:case_ids AS uuid[])) WITH ORDINALITY AS read(case_id, n)
    ORDER BY read.n
    """
)


async def record_access(
    conn: Connection,
    *,
    case_ids: Sequence[UUID],
    caller: Principal | None,
    view: str,
    route: str,
) -> None:
    """Record in the access log (SPEC 9) that the caller's key read (or erased) these cases;
    no caller: the hub itself (the retention worker), with no key."""
    if not case_ids:
        return
    await _RECORD_ACCESS.execute(
        conn,
        case_ids=list(case_ids),
        partner_id=caller.partner_id if caller else None,
        key_id=caller.key_id if caller else None,
        view=view,
        route=route,
    )


_OF_CASE = Statement(
    select(access_log).where(access_log.c.case_id == bindparam("case_id")).order_by(access_log.c.id)
)


async def entries_of_case(conn: Connection, *, case_id: UUID) -> list[dict[str, Any]]:
    """Every line of the log about one case, oldest first."""
    return [dict(r) for r in await _OF_CASE.fetch(conn, case_id=case_id)]
