"""Reference data: the areas and service types as stored (rows as dicts; the parsing and
the `Area` and `ServiceType` values are in `services.registry.reference`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select, text, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.errors import Conflict
from shared.eventlog.listener import lock_key
from shared.pagination import keyset, page_of
from shared.tables import areas, service_types

UPSERT_BATCH = 1000  # rows per INSERT: well under asyncpg's 32767 parameters
AREAS_LOCK = lock_key("reference:areas")
AREA_CHANGES = ("name", "level", "depth", "parent_code", "path", "code_list_version")
SERVICE_TYPE_CHANGES = ("name", "dimension", "description")


async def lock_areas(session: AsyncSession) -> None:
    """One writer of the area tree at a time, until the transaction ends."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AREAS_LOCK})


async def all_areas(session: AsyncSession) -> list[dict[str, Any]]:
    """Every stored area."""
    return [dict(r) for r in (await session.execute(select(areas))).mappings()]


async def upsert_areas(session: AsyncSession, *, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert or update, parents before children, a thousand rows per statement."""
    ordered = sorted(rows, key=lambda a: len(a["path"]))
    for start in range(0, len(ordered), UPSERT_BATCH):
        statement = pg_insert(areas).values(list(ordered[start : start + UPSERT_BATCH]))
        new = statement.excluded
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[areas.c.code],
                set_={c: new[c] for c in AREA_CHANGES},
                # Unchanged rows are left alone: a restart rewrites nothing.
                where=tuple_(*(areas.c[c] for c in AREA_CHANGES)).is_distinct_from(
                    tuple_(*(new[c] for c in AREA_CHANGES))
                ),
            )
        )


async def upsert_service_types(session: AsyncSession, *, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert or update, a thousand rows per statement; unchanged rows are left alone."""
    for start in range(0, len(rows), UPSERT_BATCH):
        statement = pg_insert(service_types).values(list(rows[start : start + UPSERT_BATCH]))
        new = statement.excluded
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[service_types.c.code],
                set_={c: new[c] for c in SERVICE_TYPE_CHANGES},
                where=tuple_(*(service_types.c[c] for c in SERVICE_TYPE_CHANGES)).is_distinct_from(
                    tuple_(*(new[c] for c in SERVICE_TYPE_CHANGES))
                ),
            )
        )


async def list_areas(
    session: AsyncSession,
    *,
    parent: str | None = None,
    level: str | None = None,
    limit: int,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of areas by code, optionally only the direct children of `parent` and only of
    `level`, and the cursor of the next page (None on the last)."""
    query = select(areas)
    if parent is not None:
        query = query.where(areas.c.parent_code == parent)
    if level is not None:
        query = query.where(areas.c.level == level.lower())
    query = keyset(query, order_by=[areas.c.code], cursor=cursor, limit=limit, parse=[str])
    rows = (await session.execute(query)).mappings().all()
    items, next_cursor = page_of(rows, limit=limit, key=lambda r: (r["code"],))
    return [dict(r) for r in items], next_cursor


async def get_area(session: AsyncSession, *, code: str) -> dict[str, Any] | None:
    """An area with `ancestors` ({code, name, level} from the root down); None if unknown."""
    row = (
        (await session.execute(select(areas).where(areas.c.code == code))).mappings().one_or_none()
    )
    if row is None:
        return None
    above = list(row["path"][:-1])
    found: dict[str, dict[str, Any]] = {}
    if above:
        result = await session.execute(
            select(areas.c.code, areas.c.name, areas.c.level).where(areas.c.code.in_(above))
        )
        found = {r["code"]: dict(r) for r in result.mappings()}
    return {**row, "ancestors": [found[c] for c in above if c in found]}


async def list_service_types(
    session: AsyncSession,
    *,
    dimension: str | None = None,
    limit: int,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of service types by code, optionally of one dimension, and the next cursor."""
    query = select(service_types)
    if dimension is not None:
        query = query.where(service_types.c.dimension == dimension)
    query = keyset(query, order_by=[service_types.c.code], cursor=cursor, limit=limit, parse=[str])
    rows = (await session.execute(query)).mappings().all()
    items, next_cursor = page_of(rows, limit=limit, key=lambda r: (r["code"],))
    return [dict(r) for r in items], next_cursor


async def create_service_type(
    session: AsyncSession, *, values: Mapping[str, Any]
) -> dict[str, Any]:
    """Add a service type; `Conflict` (409) if its code exists."""
    row = (
        (
            await session.execute(
                pg_insert(service_types)
                .values(**values)
                .on_conflict_do_nothing(index_elements=[service_types.c.code])
                .returning(*service_types.c)
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise Conflict(f"A service type with code {values['code']!r} already exists.")
    return dict(row)
