"""Endpoints: queries, and the events the notifications service emits about them."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Select, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications.signing import new_secret
from services.notifications.tables import deliveries, endpoints
from shared.auth import Principal
from shared.constraints import PARTNER_UNKNOWN
from shared.errors import unknown_reference
from shared.eventlog.append import append
from shared.eventlog.model import Event
from shared.pagination import keyset, page_of, parse_time
from shared.tables import events

SOURCE = "/notifications"

ENDPOINT_FIELDS = (
    "id",
    "partner_id",
    "url",
    "event_types",
    "description",
    "status",
    "disabled_reason",
    "version",
    "created_at",
    "updated_at",
)


def endpoint_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """The Endpoint resource (never its secrets)."""
    return {name: row[name] for name in ENDPOINT_FIELDS}


def audience_of(row: Mapping[str, Any]) -> list[UUID]:
    return [row["partner_id"]] if row["partner_id"] is not None else []


async def emit_endpoint_event(
    session: AsyncSession,
    *,
    type: str,
    row: Mapping[str, Any],
    actor: str,
    data: Mapping[str, Any] | None = None,
) -> Event:
    return await append(
        session,
        type=type,
        source=SOURCE,
        subject=f"endpoints/{row['id']}",
        data=data if data is not None else endpoint_view(row),
        actor=actor,
        audience=audience_of(row),
    )


async def partner_known(session: AsyncSession, *, partner_id: UUID) -> bool:
    """Whether the registry created this partner: its `partner.created` event is in the log
    (this service reads no registry table)."""
    query = select(events.c.seq).where(
        events.c.type == "partner.created", events.c.subject == f"partners/{partner_id}"
    )
    return (await session.execute(query.limit(1))).scalar() is not None


async def create_endpoint(
    session: AsyncSession, *, partner_id: UUID | None, values: Mapping[str, Any], now: datetime
) -> tuple[dict[str, Any], str]:
    """A new endpoint of `partner_id` (None: the coordination's); 422 for an unknown partner."""
    if partner_id is not None and not await partner_known(session, partner_id=partner_id):
        raise unknown_reference("body.partner_id", PARTNER_UNKNOWN)
    secret = new_secret()
    row = (
        (
            await session.execute(
                insert(endpoints)
                .values(
                    id=uuid.uuid4(),
                    partner_id=partner_id,
                    secrets=[{"secret": secret, "created_at": now.isoformat(), "expires_at": None}],
                    **values,
                )
                .returning(*endpoints.c)
            )
        )
        .mappings()
        .one()
    )
    return dict(row), secret


def visible_endpoints(caller: Principal) -> Select:
    query = select(endpoints)
    if not caller.is_admin:
        query = query.where(endpoints.c.partner_id == caller.partner_id)
    return query


async def get_endpoint(
    session: AsyncSession, *, endpoint_id: UUID, caller: Principal, for_update: bool = False
) -> dict[str, Any] | None:
    query = visible_endpoints(caller).where(endpoints.c.id == endpoint_id)
    if for_update:
        query = query.with_for_update()
    row = (await session.execute(query)).mappings().one_or_none()
    return dict(row) if row else None


async def list_endpoints(
    session: AsyncSession, *, caller: Principal, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the endpoints the caller sees, oldest first, and the next cursor."""
    query = keyset(
        visible_endpoints(caller),
        order_by=[endpoints.c.created_at, endpoints.c.id],
        cursor=cursor,
        limit=limit,
        parse=[parse_time, UUID],
    )
    rows = [dict(r) for r in (await session.execute(query)).mappings()]
    return page_of(rows, limit=limit, key=lambda r: (r["created_at"].isoformat(), r["id"]))


async def delete_endpoint(session: AsyncSession, *, endpoint_id: UUID) -> None:
    """Delete an endpoint; its deliveries and their attempts go with it."""
    await session.execute(delete(endpoints).where(endpoints.c.id == endpoint_id))


async def update_endpoint(
    session: AsyncSession, *, endpoint_id: UUID, values: Mapping[str, Any]
) -> dict[str, Any]:
    row = (
        (
            await session.execute(
                update(endpoints)
                .where(endpoints.c.id == endpoint_id)
                .values(**values, version=endpoints.c.version + 1, updated_at=func.now())
                .returning(*endpoints.c)
            )
        )
        .mappings()
        .one()
    )
    return dict(row)


async def disable_endpoint(
    session: AsyncSession, *, endpoint_id: UUID, reason: str, actor: str = "system"
) -> dict[str, Any] | None:
    """Disable an active endpoint and tell its partner (`endpoint.disabled`)."""
    row = (
        (
            await session.execute(
                update(endpoints)
                .where(endpoints.c.id == endpoint_id, endpoints.c.status == "active")
                .values(
                    status="disabled",
                    disabled_reason=reason,
                    version=endpoints.c.version + 1,
                    updated_at=func.now(),
                )
                .returning(*endpoints.c)
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        return None
    # Nothing more is attempted: what was still pending shows as failed, for `recover`.
    await session.execute(
        update(deliveries)
        .where(deliveries.c.endpoint_id == endpoint_id, deliveries.c.status == "pending")
        .values(
            status="failed",
            next_attempt_at=None,
            lease_until=None,
            last_error="endpoint disabled",
            updated_at=func.now(),
        )
    )
    await emit_endpoint_event(session, type="endpoint.disabled", row=row, actor=actor)
    return dict(row)
