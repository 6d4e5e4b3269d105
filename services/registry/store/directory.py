"""The service directory: what each partner offers, and where; queries and events."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import String, Table, bindparam, cast, func, insert, select, update
from sqlalchemy.dialects.postgresql import ARRAY

from services.registry.store import emit_snapshot
from services.registry.tables import services
from shared.auth import Principal
from shared.db import Connection, Statement
from shared.errors import FieldError, Unprocessable
from shared.pagination import keyset, page_of
from shared.tables import areas, service_types

# The codes of a list that each code table holds.
_FOUND_CODES = {
    table.name: Statement(
        select(table.c.code).where(
            table.c.code == func.any(bindparam("codes", type_=ARRAY(String)))
        )
    )
    for table in (areas, service_types)
}
_SERVICE_QUERY = select(services).where(services.c.id == bindparam("service_id"))
_SERVICE = Statement(_SERVICE_QUERY)
_SERVICE_FOR_UPDATE = Statement(_SERVICE_QUERY.with_for_update())


async def missing_codes(conn: Connection, *, table: Table, codes: Iterable[str]) -> list[str]:
    """The codes of `codes` that `table` (areas or service types) does not hold."""
    wanted = sorted(set(codes))
    if not wanted:
        return []
    found = {r["code"] for r in await _FOUND_CODES[table.name].fetch(conn, codes=wanted)}
    return [c for c in wanted if c not in found]


async def check_directory_refs(
    conn: Connection,
    *,
    service_type: str | None,
    areas_: Sequence[str] | None,
) -> None:
    """422 naming each unknown service-type or area code of a service."""
    errors: list[FieldError] = []
    if service_type is not None and await missing_codes(
        conn, table=service_types, codes=[service_type]
    ):
        errors.append(
            FieldError(
                field="body.service_type",
                message=f"unknown service type {service_type!r}",
                type="unknown_code",
            )
        )
    unknown_areas = set(await missing_codes(conn, table=areas, codes=areas_ or ()))
    for index, code in enumerate(areas_ or ()):
        if code in unknown_areas:
            errors.append(
                FieldError(
                    field=f"body.areas[{index}]",
                    message=f"unknown area {code!r}",
                    type="unknown_code",
                )
            )
    if errors:
        raise Unprocessable("Unknown codes.", errors=errors)


async def create_service(
    conn: Connection, *, values: Mapping[str, Any], caller: Principal
) -> dict[str, Any]:
    row = await Statement(
        insert(services).values(id=uuid.uuid4(), **values).returning(*services.c)
    ).fetchrow(conn)
    return await emit_snapshot(
        conn,
        type="service.created",
        subject=f"services/{row['id']}",
        row=row,
        caller=caller,
        audience=[row["partner_id"]],
    )


async def get_service(
    conn: Connection, *, service_id: UUID, for_update: bool = False
) -> dict[str, Any] | None:
    statement = _SERVICE_FOR_UPDATE if for_update else _SERVICE
    row = await statement.fetchrow(conn, service_id=service_id)
    return dict(row) if row else None


async def update_service(
    conn: Connection, *, service_id: UUID, changes: Mapping[str, Any], caller: Principal
) -> dict[str, Any]:
    row = await Statement(
        update(services)
        .where(services.c.id == service_id)
        .values(**changes, version=services.c.version + 1, updated_at=func.now())
        .returning(*services.c)
    ).fetchrow(conn)
    return await emit_snapshot(
        conn,
        type="service.updated",
        subject=f"services/{service_id}",
        row=row,
        caller=caller,
        audience=[row["partner_id"]],
    )


async def list_services(
    conn: Connection,
    *,
    service_type: str | None,
    partner_id: UUID | None,
    area: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the directory by id, and the cursor of the next page (None on the last)."""
    query = select(services)
    if service_type is not None:
        query = query.where(services.c.service_type == service_type)
    if partner_id is not None:
        query = query.where(services.c.partner_id == partner_id)
    if area is not None:
        # Covering `area`: a service area is the area itself or one of its ancestors.
        ancestors = select(areas.c.path).where(areas.c.code == area).scalar_subquery()
        query = query.where(
            services.c.areas.op("&&")(func.coalesce(ancestors, cast([], ARRAY(String))))
        )
    query = keyset(query, order_by=[services.c.id], cursor=cursor, limit=limit, parse=[UUID])
    rows = await Statement(query).fetch(conn)
    items, next_cursor = page_of(rows, limit=limit, key=lambda r: (r["id"],))
    return [dict(r) for r in items], next_cursor
