"""Deliveries and their attempts: what the API reads and changes, what the fan-out writes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Select, bindparam, func, literal_column, or_, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID

from services.notifications.tables import attempts, deliveries, endpoints
from shared.auth import Principal
from shared.db import Connection, Statement
from shared.eventlog.about_case import ABOUT_CASE, CASE_OF_EVENT
from shared.pagination import keyset, page_of, parse_time
from shared.tables import events


def visible_deliveries(caller: Principal) -> Select:
    query = select(deliveries)
    if not caller.is_admin:
        query = query.where(deliveries.c.partner_id == caller.partner_id)
    return query


async def list_deliveries(
    conn: Connection,
    *,
    caller: Principal,
    endpoint_id: UUID | None,
    status: str | None,
    event_type: str | None,
    limit: int,
    cursor: str | None,
    case_id: UUID | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the deliveries the caller sees, oldest first, and the next cursor; with
    `case_id`, of the events about that case only."""
    query = visible_deliveries(caller)
    if case_id is not None:
        # The case's events through `ix_events_case` (its expression exactly), then their
        # deliveries through the (endpoint, event) key, one probe per endpoint and event.
        about = select(events.c.id).where(
            literal_column(CASE_OF_EVENT) == bindparam("case_id", str(case_id))
        )
        query = query.where(
            deliveries.c.event_id.in_(about),
            deliveries.c.endpoint_id.in_(select(endpoints.c.id)),
        )
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
    # Its shape depends on the filters and the cursor: compiled per call (a list).
    rows = [dict(r) for r in await Statement(query).fetch(conn)]
    return page_of(rows, limit=limit, key=lambda r: (r["created_at"].isoformat(), r["id"]))


# One delivery as an admin sees it (any), and as a partner does (its own).
_DELIVERY = Statement(select(deliveries).where(deliveries.c.id == bindparam("delivery_id")))
_DELIVERY_OF_PARTNER = Statement(
    select(deliveries).where(
        deliveries.c.id == bindparam("delivery_id"),
        deliveries.c.partner_id == bindparam("partner_id"),
    )
)


async def get_delivery(
    conn: Connection, *, delivery_id: UUID, caller: Principal
) -> dict[str, Any] | None:
    if caller.is_admin:
        row = await _DELIVERY.fetchrow(conn, delivery_id=delivery_id)
    else:
        row = await _DELIVERY_OF_PARTNER.fetchrow(
            conn, delivery_id=delivery_id, partner_id=caller.partner_id
        )
    return dict(row) if row else None


_ATTEMPTS = Statement(
    select(attempts)
    .where(attempts.c.delivery_id == bindparam("delivery_id"))
    .order_by(attempts.c.id)
)


async def attempts_of(conn: Connection, *, delivery_id: UUID) -> list[dict[str, Any]]:
    return [dict(r) for r in await _ATTEMPTS.fetch(conn, delivery_id=delivery_id)]


_RETRY = Statement(
    update(deliveries)
    .where(deliveries.c.id == bindparam("delivery_id"))
    .values(status="pending", next_attempt_at=func.now(), updated_at=func.now())
    .returning(*deliveries.c)
)


async def retry_delivery(conn: Connection, *, delivery_id: UUID) -> dict[str, Any]:
    """Put a delivery back in the queue now, whatever its status."""
    row = await _RETRY.fetchrow(conn, delivery_id=delivery_id)
    if row is None:
        raise LookupError(f"no delivery {delivery_id}")
    return dict(row)


_RECOVER = Statement(
    update(deliveries)
    .where(
        deliveries.c.endpoint_id == bindparam("endpoint_id"),
        deliveries.c.status == "failed",
        deliveries.c.event_time >= bindparam("since"),
        deliveries.c.event_time <= bindparam("until"),
    )
    .values(status="pending", next_attempt_at=func.now(), attempt_count=0, updated_at=func.now())
)


async def recover_deliveries(
    conn: Connection, *, endpoint_id: UUID, since: datetime, until: datetime
) -> int:
    """Restart from their first attempt the failed deliveries of events timed in [since,
    until]; how many."""
    return await _RECOVER.execute(conn, endpoint_id=endpoint_id, since=since, until=until)


_SET_PARTNER_ACTIVE = Statement(
    update(endpoints)
    .where(endpoints.c.partner_id == bindparam("partner_id"))
    .values(partner_active=bindparam("active"))
)


async def set_partner_active(conn: Connection, *, partner_id: UUID, active: bool) -> None:
    """Pause (or resume) the endpoints of a partner that became inactive (or active)."""
    await _SET_PARTNER_ACTIVE.execute(conn, partner_id=partner_id, active=active)


_FANOUT_CANDIDATES = Statement(
    select(
        endpoints.c.id,
        endpoints.c.partner_id,
        endpoints.c.event_types,
        endpoints.c.status,
        endpoints.c.since_tx,
    )
    .where(
        or_(
            endpoints.c.partner_id.is_(None),
            endpoints.c.partner_id
            == func.any(bindparam("partners", type_=ARRAY(PG_UUID(as_uuid=True)))),
        )
    )
    # An endpoint deleted meanwhile waits for this batch, or is not read: its
    # deliveries never reference a row that is gone.
    .with_for_update(read=True, key_share=True)
)


async def fanout_candidates(conn: Connection, *, partners: Iterable[UUID]) -> list[dict[str, Any]]:
    """The endpoints that may receive events of these partners: theirs and the admins'."""
    rows = await _FANOUT_CANDIDATES.fetch(conn, partners=list(partners))
    return [dict(r) for r in rows]


# The fan-out's rows, one array per column (each of its column's type in `deliveries`),
# unnested in the order given: one statement for a batch of any size. A delivery already
# there (same endpoint and event) is kept.
FANOUT_COLUMNS = (
    "id",
    "endpoint_id",
    "partner_id",
    "event_id",
    "event_seq",
    "event_type",
    "event_time",
    "status",
    "next_attempt_at",
    "last_error",
)
_PG = postgresql.dialect()
# The new deliveries and the notification that wakes the dispatchers, in one statement
# (PostgreSQL delivers the notification at commit, once per transaction and channel).
_FANOUT_ARRAYS = ", ".join(
    f"CAST(:{name} AS {deliveries.c[name].type.compile(dialect=_PG)}[])" for name in FANOUT_COLUMNS
)
_INSERT_DELIVERIES = Statement(
    f"""
    WITH written AS (
        INSERT INTO notifications.deliveries ({", ".join(FANOUT_COLUMNS)})
        SELECT {", ".join(FANOUT_COLUMNS)}
        FROM unnest({_FANOUT_ARRAYS}) WITH ORDINALITY AS r({", ".join(FANOUT_COLUMNS)}, ord)
        ORDER BY ord
        ON CONFLICT DO NOTHING
        RETURNING 1
    )
    SELECT pg_notify(:channel, '') WHERE EXISTS (SELECT FROM written)
    """  # noqa: S608 - the table's own column names and types only
)


async def insert_deliveries(
    conn: Connection, *, rows: Sequence[Mapping[str, Any]], notify: str
) -> None:
    """Insert new deliveries, each row with the `FANOUT_COLUMNS` (one already there is
    kept), and wake the dispatchers listening on `notify` when the transaction commits."""
    if not rows:
        return
    await _INSERT_DELIVERIES.execute(
        conn,
        channel=notify,
        **{name: [row[name] for row in rows] for name in FANOUT_COLUMNS},
    )


# The deliveries of the events about a case: the events through `ix_events_case`, their
# deliveries through the unique (event_id, endpoint_id), never a scan of the deliveries.
_DELIVERIES_ABOUT_CASE = f"""
    SELECT d.id FROM notifications.deliveries AS d
    WHERE d.event_id IN (
        SELECT id FROM hub.events WHERE {ABOUT_CASE}
    )
"""  # noqa: S608 - constants
_ERASE_ATTEMPT_TEXTS = Statement(
    f"""
    WITH about AS ({_DELIVERIES_ABOUT_CASE}),
    attempts AS (
        UPDATE notifications.attempts SET response_excerpt = NULL, error = NULL
        WHERE delivery_id IN (SELECT id FROM about)
          AND (response_excerpt IS NOT NULL OR error IS NOT NULL)
    )
    UPDATE notifications.deliveries SET last_error = NULL
    WHERE id IN (SELECT id FROM about) AND last_error IS NOT NULL
    """  # noqa: S608 - constants
)


async def erase_texts_about_case(conn: Connection, *, case_id: UUID) -> None:
    """Forget what endpoints answered to the events about an erased case (SPEC 9): the
    attempts' response excerpts and errors, the deliveries' last error. The bodies are not
    stored: a delivery sends its event's data as the log holds it, erased."""
    await _ERASE_ATTEMPT_TEXTS.execute(conn, case_id=str(case_id))
