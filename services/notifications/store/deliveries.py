"""Deliveries and their attempts: what the API reads and changes, what the fan-out writes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Select, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications.tables import attempts, deliveries, endpoints
from shared.auth import Principal
from shared.pagination import keyset, page_of, parse_time

INSERT_CHUNK = 1000  # rows per INSERT of the fan-out


def visible_deliveries(caller: Principal) -> Select:
    query = select(deliveries)
    if not caller.is_admin:
        query = query.where(deliveries.c.partner_id == caller.partner_id)
    return query


async def list_deliveries(
    session: AsyncSession,
    *,
    caller: Principal,
    endpoint_id: UUID | None,
    status: str | None,
    event_type: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the deliveries the caller sees, oldest first, and the next cursor."""
    query = visible_deliveries(caller)
    if endpoint_id is not None:
        query = query.where(deliveries.c.endpoint_id == endpoint_id)
    if status is not None:
        query = query.where(deliveries.c.status == status)
    if event_type is not None:
        query = query.where(deliveries.c.event_type == event_type)
    query = keyset(
        query,
        order_by=[deliveries.c.created_at, deliveries.c.id],
        cursor=cursor,
        limit=limit,
        parse=[parse_time, UUID],
    )
    rows = [dict(r) for r in (await session.execute(query)).mappings()]
    return page_of(rows, limit=limit, key=lambda r: (r["created_at"].isoformat(), r["id"]))


async def get_delivery(
    session: AsyncSession, *, delivery_id: UUID, caller: Principal
) -> dict[str, Any] | None:
    query = visible_deliveries(caller).where(deliveries.c.id == delivery_id)
    row = (await session.execute(query)).mappings().one_or_none()
    return dict(row) if row else None


async def attempts_of(session: AsyncSession, *, delivery_id: UUID) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(attempts).where(attempts.c.delivery_id == delivery_id).order_by(attempts.c.id)
    )
    return [dict(r) for r in rows.mappings()]


async def retry_delivery(session: AsyncSession, *, delivery_id: UUID) -> dict[str, Any]:
    """Put a delivery back in the queue now, whatever its status."""
    row = (
        (
            await session.execute(
                update(deliveries)
                .where(deliveries.c.id == delivery_id)
                .values(status="pending", next_attempt_at=func.now(), updated_at=func.now())
                .returning(*deliveries.c)
            )
        )
        .mappings()
        .one()
    )
    return dict(row)


async def recover_deliveries(
    session: AsyncSession, *, endpoint_id: UUID, since: datetime, until: datetime
) -> int:
    """Restart from their first attempt the failed deliveries of events timed in [since,
    until]; how many."""
    result = await session.execute(
        update(deliveries)
        .where(
            deliveries.c.endpoint_id == endpoint_id,
            deliveries.c.status == "failed",
            deliveries.c.event_time >= since,
            deliveries.c.event_time <= until,
        )
        .values(
            status="pending", next_attempt_at=func.now(), attempt_count=0, updated_at=func.now()
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def set_partner_active(session: AsyncSession, *, partner_id: UUID, active: bool) -> None:
    """Pause (or resume) the endpoints of a partner that became inactive (or active)."""
    await session.execute(
        update(endpoints).where(endpoints.c.partner_id == partner_id).values(partner_active=active)
    )


async def fanout_candidates(
    session: AsyncSession, *, partners: Iterable[UUID]
) -> list[dict[str, Any]]:
    """The endpoints that may receive events of these partners: theirs and the admins'."""
    rows = await session.execute(
        select(
            endpoints.c.id,
            endpoints.c.partner_id,
            endpoints.c.event_types,
            endpoints.c.status,
            endpoints.c.since_tx,
        )
        .where(or_(endpoints.c.partner_id.is_(None), endpoints.c.partner_id.in_(list(partners))))
        # An endpoint deleted meanwhile waits for this batch, or is not read: its
        # deliveries never reference a row that is gone.
        .with_for_update(read=True, key_share=True)
    )
    return [dict(r) for r in rows.mappings()]


async def insert_deliveries(
    session: AsyncSession, *, rows: Sequence[Mapping[str, Any]], notify: str
) -> None:
    """Insert new deliveries (one already there is kept) and wake the dispatchers listening
    on `notify` when the transaction commits."""
    if not rows:
        return
    for start in range(0, len(rows), INSERT_CHUNK):
        await session.execute(
            insert(deliveries).values(rows[start : start + INSERT_CHUNK]).on_conflict_do_nothing()
        )
    await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": notify})
