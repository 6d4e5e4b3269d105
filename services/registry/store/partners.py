"""Partners and their API keys: queries and the events they emit."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, bindparam, func, insert, select, update

from services.registry.store import emit_snapshot
from services.registry.tables import partners
from shared.auth import Principal, create_key
from shared.constraints import PARTNER_UNKNOWN
from shared.db import Connection, Statement
from shared.errors import NotFound, unknown_reference
from shared.pagination import keyset, page_of, parse_time
from shared.tables import api_keys
from shared.versioning import check_version

KEY_COLUMNS = [c for c in api_keys.c if c.name != "key_hash"]

_PARTNER_QUERY = select(partners).where(partners.c.id == bindparam("partner_id"))
_PARTNER = Statement(_PARTNER_QUERY)
_PARTNER_FOR_UPDATE = Statement(_PARTNER_QUERY.with_for_update())
_PARTNER_EXISTS = Statement(select(partners.c.id).where(partners.c.id == bindparam("partner_id")))
# A share lock: orders the key's creation against a concurrent change of the status.
_PARTNER_STATUS_SHARED = Statement(
    select(partners.c.status)
    .where(partners.c.id == bindparam("partner_id"))
    .with_for_update(read=True)
)
_KEY_INACTIVE = Statement(
    update(api_keys).where(api_keys.c.id == bindparam("key_id")).values(partner_active=False)
)
_KEY = Statement(select(*KEY_COLUMNS).where(api_keys.c.id == bindparam("key_id")))
_REVOKE_KEY = Statement(
    update(api_keys)
    .where(api_keys.c.id == bindparam("key_id"), api_keys.c.revoked_at.is_(None))
    .values(revoked_at=func.now())
)
# In the order of their ids, so that two revocations lock them in the same order.
_ADMIN_KEYS_FOR_UPDATE = Statement(
    select(api_keys.c.id, api_keys.c.role, api_keys.c.revoked_at, api_keys.c.expires_at)
    .where(api_keys.c.role == "admin", api_keys.c.revoked_at.is_(None))
    .order_by(api_keys.c.id)
    .with_for_update()
)
_KEYS_ACTIVE = Statement(
    update(api_keys)
    .where(api_keys.c.partner_id == bindparam("partner_id"))
    .values(partner_active=bindparam("active"))
)


async def create_partner(
    conn: Connection, *, values: Mapping[str, Any], caller: Principal
) -> dict[str, Any]:
    row = await Statement(
        insert(partners).values(id=uuid.uuid4(), **values).returning(*partners.c)
    ).fetchrow(conn)
    return await emit_snapshot(
        conn,
        type="partner.created",
        subject=f"partners/{row['id']}",
        row=row,
        caller=caller,
        audience=[row["id"]],
    )


async def get_partner(conn: Connection, *, partner_id: UUID) -> dict[str, Any] | None:
    row = await _PARTNER.fetchrow(conn, partner_id=partner_id)
    return dict(row) if row else None


async def check_partner(conn: Connection, *, partner_id: UUID, field: str) -> None:
    """422 naming `field` when no partner has this id (before a write that refers to it)."""
    if await _PARTNER_EXISTS.fetchval(conn, partner_id=partner_id) is None:
        raise unknown_reference(field, PARTNER_UNKNOWN)


async def list_partners(
    conn: Connection, *, limit: int, cursor: str | None, name: str | None = None
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
    rows = await Statement(query).fetch(conn)
    items, next_cursor = page_of(rows, limit=limit, key=lambda r: (r["name"], r["id"]))
    return [dict(r) for r in items], next_cursor


async def create_partner_key(
    conn: Connection, *, partner_id: UUID, name: str, expires_at: datetime | None = None
) -> tuple[dict[str, Any], str]:
    # A key issued to an inactive partner must answer 401 like its other keys. The share
    # lock orders this against a concurrent change of the partner's status.
    status = await _PARTNER_STATUS_SHARED.fetchval(conn, partner_id=partner_id)
    row, key = await create_key(
        conn, role="partner", partner_id=partner_id, name=name, expires_at=expires_at
    )
    if status != "active":
        await _KEY_INACTIVE.execute(conn, key_id=row["id"])
    return row, key


async def create_admin_key(
    conn: Connection, *, name: str, expires_at: datetime | None
) -> tuple[dict[str, Any], str]:
    """A new key of the coordination; its row and the key, shown once."""
    return await create_key(conn, role="admin", partner_id=None, name=name, expires_at=expires_at)


async def _key_page(
    conn: Connection, *, owned_by: ColumnElement[bool], limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    query = keyset(
        select(*KEY_COLUMNS).where(owned_by),
        order_by=[api_keys.c.created_at, api_keys.c.id],
        cursor=cursor,
        limit=limit,
        parse=[parse_time, UUID],
    )
    rows = await Statement(query).fetch(conn)
    items, next_cursor = page_of(rows, limit=limit, key=lambda r: (r["created_at"], r["id"]))
    return [dict(r) for r in items], next_cursor


async def list_keys(
    conn: Connection, *, partner_id: UUID, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of a partner's keys (without their hash) by creation, and the next cursor."""
    return await _key_page(
        conn, owned_by=api_keys.c.partner_id == partner_id, limit=limit, cursor=cursor
    )


async def list_admin_keys(
    conn: Connection, *, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the admin keys (without their hash) by creation, and the next cursor."""
    return await _key_page(conn, owned_by=api_keys.c.role == "admin", limit=limit, cursor=cursor)


async def get_key(conn: Connection, *, key_id: UUID) -> dict[str, Any] | None:
    row = await _KEY.fetchrow(conn, key_id=key_id)
    return dict(row) if row else None


async def lock_admin_keys(conn: Connection) -> list[dict[str, Any]]:
    """The admin keys not revoked, locked until the transaction ends: a concurrent revocation
    of an admin key waits here, then sees this one's outcome (a row revoked meanwhile is no
    longer returned)."""
    return [dict(r) for r in await _ADMIN_KEYS_FOR_UPDATE.fetch(conn)]


async def revoke_key(conn: Connection, *, key_id: UUID) -> None:
    await _REVOKE_KEY.execute(conn, key_id=key_id)


async def update_partner(
    conn: Connection,
    *,
    partner_id: UUID,
    changes: Mapping[str, Any],
    caller: Principal,
    expected_version: int | None,
) -> dict[str, Any]:
    """Apply `changes` (already authorised) with optimistic concurrency; emit the event."""
    current = await _PARTNER_FOR_UPDATE.fetchrow(conn, partner_id=partner_id)
    if current is None:
        raise NotFound(f"No partner {partner_id}.")
    check_version(current["version"], expected_version)
    row = await Statement(
        update(partners)
        .where(partners.c.id == partner_id)
        .values(**changes, version=partners.c.version + 1, updated_at=func.now())
        .returning(*partners.c)
    ).fetchrow(conn)
    if "status" in changes and changes["status"] != current["status"]:
        # Keys of an inactive partner answer 401 at once, in every service.
        await _KEYS_ACTIVE.execute(
            conn, partner_id=partner_id, active=changes["status"] == "active"
        )
    return await emit_snapshot(
        conn,
        type="partner.updated",
        subject=f"partners/{partner_id}",
        row=row,
        caller=caller,
        audience=[partner_id],
    )
