"""Endpoints: queries, and the events the notifications service emits about them."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from typing import Any
from uuid import UUID

from sqlalchemy import Select, bindparam, delete, func, insert, select, update

from services.notifications.signing import new_secret
from services.notifications.tables import deliveries, endpoints
from shared.auth import Principal
from shared.constraints import PARTNER_UNKNOWN
from shared.db import Connection, Statement
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
    conn: Connection,
    *,
    type: str,
    row: Mapping[str, Any],
    actor: str,
    data: Mapping[str, Any] | None = None,
) -> Event:
    return await append(
        conn,
        type=type,
        source=SOURCE,
        subject=f"endpoints/{row['id']}",
        data=data if data is not None else endpoint_view(row),
        actor=actor,
        audience=audience_of(row),
    )


_PARTNER_CREATED = Statement(
    select(events.c.seq)
    .where(events.c.type == "partner.created", events.c.subject == bindparam("subject"))
    .limit(1)
)


async def partner_known(conn: Connection, *, partner_id: UUID) -> bool:
    """Whether the registry created this partner: its `partner.created` event is in the log
    (this service reads no registry table)."""
    return await _PARTNER_CREATED.fetchval(conn, subject=f"partners/{partner_id}") is not None


_CREATE = Statement(
    insert(endpoints)
    .values(
        id=bindparam("id"),
        partner_id=bindparam("partner_id"),
        url=bindparam("url"),
        event_types=bindparam("event_types"),
        description=bindparam("description"),
        secrets=bindparam("secrets"),
    )
    .returning(*endpoints.c)
)


async def create_endpoint(
    conn: Connection, *, partner_id: UUID | None, values: Mapping[str, Any], now: datetime
) -> tuple[dict[str, Any], str]:
    """A new endpoint of `partner_id` (None: the coordination's) with its `url`,
    `event_types` and `description`; 422 for an unknown partner."""
    if partner_id is not None and not await partner_known(conn, partner_id=partner_id):
        raise unknown_reference("body.partner_id", PARTNER_UNKNOWN)
    secret = new_secret()
    row = await _CREATE.fetchrow(
        conn,
        id=uuid.uuid4(),
        partner_id=partner_id,
        secrets=[{"secret": secret, "created_at": now.isoformat(), "expires_at": None}],
        url=values["url"],
        event_types=values["event_types"],
        description=values["description"],
    )
    return dict(row), secret


def visible_endpoints(caller: Principal) -> Select:
    query = select(endpoints)
    if not caller.is_admin:
        query = query.where(endpoints.c.partner_id == caller.partner_id)
    return query


def _endpoint_query(*, of_partner: bool, for_update: bool) -> Statement:
    query = select(endpoints).where(endpoints.c.id == bindparam("endpoint_id"))
    if of_partner:
        query = query.where(endpoints.c.partner_id == bindparam("partner_id"))
    if for_update:
        query = query.with_for_update()
    return Statement(query)


# One endpoint as an admin sees it (any) or a partner does (its own), read or locked.
_ENDPOINT = {
    (of_partner, for_update): _endpoint_query(of_partner=of_partner, for_update=for_update)
    for of_partner in (False, True)
    for for_update in (False, True)
}


async def get_endpoint(
    conn: Connection, *, endpoint_id: UUID, caller: Principal, for_update: bool = False
) -> dict[str, Any] | None:
    statement = _ENDPOINT[(not caller.is_admin, for_update)]
    if caller.is_admin:
        row = await statement.fetchrow(conn, endpoint_id=endpoint_id)
    else:
        row = await statement.fetchrow(conn, endpoint_id=endpoint_id, partner_id=caller.partner_id)
    return dict(row) if row else None


async def list_endpoints(
    conn: Connection, *, caller: Principal, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the endpoints the caller sees, oldest first, and the next cursor."""
    query = keyset(
        visible_endpoints(caller),
        order_by=[endpoints.c.created_at, endpoints.c.id],
        cursor=cursor,
        limit=limit,
        parse=[parse_time, UUID],
    )
    # Its shape depends on the caller and the cursor: compiled per call (a list).
    rows = [dict(r) for r in await Statement(query).fetch(conn)]
    return page_of(rows, limit=limit, key=lambda r: (r["created_at"].isoformat(), r["id"]))


_DELETE = Statement(delete(endpoints).where(endpoints.c.id == bindparam("endpoint_id")))


async def delete_endpoint(conn: Connection, *, endpoint_id: UUID) -> None:
    """Delete an endpoint; its deliveries and their attempts go with it."""
    await _DELETE.execute(conn, endpoint_id=endpoint_id)


@cache
def _update(columns: tuple[str, ...]) -> Statement:
    """The update of these columns (each set from the parameter `new_<column>`), built once
    per set of columns: the API changes a few fixed sets."""
    return Statement(
        update(endpoints)
        .where(endpoints.c.id == bindparam("endpoint_id"))
        .values(
            {
                **{name: bindparam(f"new_{name}") for name in columns},
                "version": endpoints.c.version + 1,
                "updated_at": func.now(),
            }
        )
        .returning(*endpoints.c)
    )


async def update_endpoint(
    conn: Connection, *, endpoint_id: UUID, values: Mapping[str, Any]
) -> dict[str, Any]:
    columns = tuple(sorted(values))
    row = await _update(columns).fetchrow(
        conn, endpoint_id=endpoint_id, **{f"new_{name}": values[name] for name in columns}
    )
    if row is None:
        raise LookupError(f"no endpoint {endpoint_id}")
    return dict(row)


_DISABLE = Statement(
    update(endpoints)
    .where(endpoints.c.id == bindparam("endpoint_id"), endpoints.c.status == "active")
    .values(
        status="disabled",
        disabled_reason=bindparam("reason"),
        version=endpoints.c.version + 1,
        updated_at=func.now(),
    )
    .returning(*endpoints.c)
)
# Nothing more is attempted: what was still pending shows as failed, for `recover`.
_FAIL_PENDING = Statement(
    update(deliveries)
    .where(deliveries.c.endpoint_id == bindparam("endpoint_id"), deliveries.c.status == "pending")
    .values(
        status="failed",
        next_attempt_at=None,
        lease_until=None,
        last_error="endpoint disabled",
        updated_at=func.now(),
    )
)


async def disable_endpoint(
    conn: Connection, *, endpoint_id: UUID, reason: str, actor: str = "system"
) -> dict[str, Any] | None:
    """Disable an active endpoint and tell its partner (`endpoint.disabled`)."""
    row = await _DISABLE.fetchrow(conn, endpoint_id=endpoint_id, reason=reason)
    if row is None:
        return None
    await _FAIL_PENDING.execute(conn, endpoint_id=endpoint_id)
    await emit_endpoint_event(conn, type="endpoint.disabled", row=row, actor=actor)
    return dict(row)
