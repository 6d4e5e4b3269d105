"""The directory's rows as the HSDS view reads them (SPEC 11.1): pages of services and
partners with their totals, one service or partner, the service types and the area names.

HSDS pages by number, so these pages are OFFSET pages ordered by name then id; the directory
is small (hundreds of services, not the millions of cases) and the count of a page's filter
runs on the same indexes.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from shared.db import Connection, Statement

_SERVICE_COLUMNS = (
    "s.id, s.partner_id, s.service_type, s.name, s.areas, s.eligibility, s.updated_at, "
    # HSDS has no partner status: a service is inactive when it is, or its partner is.
    "CASE WHEN p.status = 'active' THEN s.status ELSE 'inactive' END AS status"
)

_SERVICE_PAGE = Statement(
    f"""
    SELECT {_SERVICE_COLUMNS}, count(*) OVER () AS total
    FROM registry.services AS s
    JOIN registry.partners AS p ON p.id = s.partner_id
    WHERE (CAST(:search AS text) IS NULL
           OR s.name ILIKE '%' || CAST(:search AS text) || '%'
           OR p.name ILIKE '%' || CAST(:search AS text) || '%')
      AND (CAST(:organization_id AS uuid) IS NULL OR s.partner_id = CAST(:organization_id AS uuid))
      AND (CAST(:service_types AS text[]) IS NULL
           OR s.service_type = ANY(CAST(:service_types AS text[])))
      AND (CAST(:modified_after AS timestamptz) IS NULL
           OR s.updated_at >= CAST(:modified_after AS timestamptz))
    ORDER BY s.name, s.id
    LIMIT :limit OFFSET :offset
    """  # noqa: S608 (constants only)
)
_SERVICE = Statement(
    f"""
    SELECT {_SERVICE_COLUMNS}
    FROM registry.services AS s
    JOIN registry.partners AS p ON p.id = s.partner_id
    WHERE s.id = :id
    """  # noqa: S608 (constants only)
)
_PARTNER_PAGE = Statement(
    """
    SELECT id, name, acronym, kind, contact_email, contact_phone, status, updated_at,
           count(*) OVER () AS total
    FROM registry.partners
    WHERE (CAST(:search AS text) IS NULL
           OR name ILIKE '%' || CAST(:search AS text) || '%'
           OR acronym ILIKE '%' || CAST(:search AS text) || '%')
    ORDER BY name, id
    LIMIT :limit OFFSET :offset
    """
)
_PARTNERS = Statement(
    "SELECT id, name, acronym, kind, contact_email, contact_phone, status, updated_at "
    "FROM registry.partners WHERE id = ANY(CAST(:ids AS uuid[]))"
)
_SERVICES_OF = Statement(
    f"""
    SELECT {_SERVICE_COLUMNS}
    FROM registry.services AS s
    JOIN registry.partners AS p ON p.id = s.partner_id
    WHERE s.partner_id = ANY(CAST(:ids AS uuid[]))
    ORDER BY s.name, s.id
    """  # noqa: S608 (constants only)
)
_SERVICE_TYPES = Statement(
    "SELECT code, name, dimension, description FROM hub.service_types ORDER BY code"
)
_AREA_NAMES = Statement("SELECT code, name FROM hub.areas WHERE code = ANY(CAST(:codes AS text[]))")


async def _counted(
    statement: Statement, conn: Connection, *, limit: int, offset: int, **filters: Any
) -> tuple[list[dict[str, Any]], int]:
    """One page of rows and the filter's total (each row carries it: `count(*) OVER ()`; a
    page past the end has no row, so the first page is asked for it)."""
    rows = [dict(r) for r in await statement.fetch(conn, **filters, limit=limit, offset=offset)]
    if rows:
        total = rows[0]["total"]
    elif offset:
        first = await statement.fetchrow(conn, **filters, limit=1, offset=0)
        total = first["total"] if first else 0
    else:
        total = 0
    for row in rows:
        del row["total"]
    return rows, total


async def service_page(
    conn: Connection,
    *,
    search: str | None,
    organization_id: UUID | None,
    service_types: list[str] | None,
    modified_after: datetime | None,
    limit: int,
    offset: int,
) -> tuple[list[dict[str, Any]], int]:
    """A page of services by name, and how many the filter finds in all."""
    return await _counted(
        _SERVICE_PAGE,
        conn,
        search=search,
        organization_id=organization_id,
        service_types=service_types,
        modified_after=modified_after,
        limit=limit,
        offset=offset,
    )


async def get_service(conn: Connection, *, service_id: UUID) -> dict[str, Any] | None:
    row = await _SERVICE.fetchrow(conn, id=service_id)
    return dict(row) if row else None


async def partner_page(
    conn: Connection, *, search: str | None, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """A page of partners by name, and how many the filter finds in all."""
    return await _counted(_PARTNER_PAGE, conn, search=search, limit=limit, offset=offset)


async def partners_by_id(conn: Connection, *, ids: Iterable[UUID]) -> dict[UUID, dict[str, Any]]:
    rows = await _PARTNERS.fetch(conn, ids=list(set(ids)))
    return {r["id"]: dict(r) for r in rows}


async def services_of(
    conn: Connection, *, partner_ids: Iterable[UUID]
) -> dict[UUID, list[dict[str, Any]]]:
    """The services of each partner, by name."""
    found: dict[UUID, list[dict[str, Any]]] = {}
    for row in await _SERVICES_OF.fetch(conn, ids=list(set(partner_ids))):
        found.setdefault(row["partner_id"], []).append(dict(row))
    return found


async def all_service_types(conn: Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in await _SERVICE_TYPES.fetch(conn)]


async def area_names(conn: Connection, *, codes: Iterable[str]) -> dict[str, str]:
    return {r["code"]: r["name"] for r in await _AREA_NAMES.fetch(conn, codes=sorted(set(codes)))}
