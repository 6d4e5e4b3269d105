"""Reference data: the areas and service types as stored (rows as dicts; the parsing and
the `Area` and `ServiceType` values are in `services.registry.reference`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert as pg_insert

from shared.db import Connection, Statement
from shared.errors import Conflict
from shared.eventlog.listener import lock_key
from shared.pagination import keyset, page_of
from shared.tables import areas, service_types

AREAS_LOCK = lock_key("reference:areas")
AREA_CHANGES = ("name", "level", "depth", "parent_code", "path", "code_list_version")
SERVICE_TYPE_CHANGES = ("name", "dimension", "description")


def _upsert(table: Table, changes: tuple[str, ...]) -> Statement:
    """Insert or update the rows of `table` given as a JSON array, in one statement;
    unchanged rows are left alone (a restart rewrites nothing)."""
    names = ("code", *changes)
    dialect = postgresql.dialect()
    columns = ", ".join(f"{name} {table.c[name].type.compile(dialect=dialect)}" for name in names)
    listed = ", ".join(names)
    return Statement(
        f"""
        INSERT INTO {table.schema}.{table.name} AS t ({listed})
        SELECT {", ".join(f"r.{name}" for name in names)}
        FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r({columns})
        ON CONFLICT (code) DO UPDATE
        SET {", ".join(f"{name} = excluded.{name}" for name in changes)}
        WHERE ({", ".join(f"t.{name}" for name in changes)})
            IS DISTINCT FROM ({", ".join(f"excluded.{name}" for name in changes)})
        """  # noqa: S608 - the names are the table's own columns
    )


_LOCK_AREAS = Statement("SELECT pg_advisory_xact_lock(CAST(:key AS bigint))")
_ALL_AREAS = Statement(select(areas))
_UPSERT_AREAS = _upsert(areas, AREA_CHANGES)
_UPSERT_SERVICE_TYPES = _upsert(service_types, SERVICE_TYPE_CHANGES)
_AREA = Statement(select(areas).where(areas.c.code == bindparam("code")))
_AREA_NAMES = Statement(
    select(areas.c.code, areas.c.name, areas.c.level).where(
        areas.c.code == func.any(bindparam("codes", type_=areas.c.path.type))
    )
)
_CREATE_SERVICE_TYPE = Statement(
    pg_insert(service_types)
    .values({column.name: bindparam(column.name) for column in service_types.c})
    .on_conflict_do_nothing(index_elements=[service_types.c.code])
    .returning(*service_types.c)
)


async def lock_areas(conn: Connection) -> None:
    """One writer of the area tree at a time, until the transaction ends."""
    await _LOCK_AREAS.execute(conn, key=AREAS_LOCK)


async def all_areas(conn: Connection) -> list[dict[str, Any]]:
    """Every stored area."""
    return [dict(r) for r in await _ALL_AREAS.fetch(conn)]


async def upsert_areas(conn: Connection, *, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert or update, parents before children, in one statement; unchanged rows are left
    alone."""
    if rows:
        await _UPSERT_AREAS.execute(conn, rows=sorted(rows, key=lambda a: len(a["path"])))


async def upsert_service_types(conn: Connection, *, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert or update, in one statement; unchanged rows are left alone."""
    if rows:
        await _UPSERT_SERVICE_TYPES.execute(conn, rows=list(rows))


async def list_areas(
    conn: Connection,
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
    rows = await Statement(query).fetch(conn)
    items, next_cursor = page_of(rows, limit=limit, key=lambda r: (r["code"],))
    return [dict(r) for r in items], next_cursor


async def get_area(conn: Connection, *, code: str) -> dict[str, Any] | None:
    """An area with `ancestors` ({code, name, level} from the root down); None if unknown."""
    row = await _AREA.fetchrow(conn, code=code)
    if row is None:
        return None
    above = list(row["path"][:-1])
    found: dict[str, dict[str, Any]] = {}
    if above:
        found = {r["code"]: dict(r) for r in await _AREA_NAMES.fetch(conn, codes=above)}
    return {**row, "ancestors": [found[c] for c in above if c in found]}


async def list_service_types(
    conn: Connection,
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
    rows = await Statement(query).fetch(conn)
    items, next_cursor = page_of(rows, limit=limit, key=lambda r: (r["code"],))
    return [dict(r) for r in items], next_cursor


async def create_service_type(conn: Connection, *, values: Mapping[str, Any]) -> dict[str, Any]:
    """Add a service type; `Conflict` (409) if its code exists."""
    row = await _CREATE_SERVICE_TYPE.fetchrow(conn, **values)
    if row is None:
        raise Conflict(f"A service type with code {values['code']!r} already exists.")
    return dict(row)
