"""Retention (SPEC 9): the cases closed for longer than the retention period and not erased
yet. One selection for both of its readers: `GET /retention/preview` pages through it, and
the retention worker claims its cases one at a time to erase them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import Select, bindparam, func, literal_column, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID

from services.registry.tables import cases
from shared.db import Connection, Statement
from shared.pagination import keyset, keyset_params, page_of, parse_time

# What the preview shows of each case: no personal data.
PREVIEW_COLUMNS = (cases.c.id, cases.c.reference, cases.c.owner_partner_id, cases.c.closed_at)
_ORDER = (cases.c.closed_at, cases.c.id)
_CURSOR = [parse_time, UUID]


def check_cursor(cursor: str | None) -> None:
    """422 naming `cursor` for one this selection could not have given out."""
    keyset_params(cursor, limit=1, parse=_CURSOR)


def _expired(columns: Sequence[Any], *, days: int) -> Select:
    """The cases closed more than `days` days ago and not erased (the partial index
    `ix_cases_closed_at` holds exactly the closed cases not erased, by `closed_at`)."""
    cutoff = func.now() - func.make_interval(0, 0, 0, bindparam("days", days))
    return select(*columns).where(
        # Literals, not parameters: a generic plan matches the partial index's predicate.
        cases.c.status == literal_column("'closed'"),
        cases.c.erased_at.is_(None),
        cases.c.closed_at < cutoff,
    )


async def expired_cases(
    conn: Connection,
    *,
    days: int,
    limit: int,
    cursor: str | None = None,
    claim: bool = False,
    skipping: Sequence[UUID] = (),
) -> tuple[list[dict[str, Any]], str | None]:
    """The cases the retention period has passed for, oldest closure first, and the next
    cursor: a page of their `PREVIEW_COLUMNS` (the preview), or, with `claim`, whole rows
    locked `FOR UPDATE SKIP LOCKED` in the caller's transaction, those another transaction
    holds and those in `skipping` left out (the worker: two registries never take one case).
    """
    if not claim:
        query = keyset(
            _expired(PREVIEW_COLUMNS, days=days),
            order_by=list(_ORDER),
            cursor=cursor,
            limit=limit,
            parse=_CURSOR,
        )
        rows = [dict(r) for r in await Statement(query).fetch(conn)]
        return page_of(rows, limit=limit, key=lambda r: (r["closed_at"].isoformat(), r["id"]))
    query = _expired([cases], days=days).order_by(*_ORDER).limit(limit)
    if skipping:
        skipped = bindparam("skipping", list(skipping), type_=ARRAY(PG_UUID(as_uuid=True)))
        query = query.where(cases.c.id != func.all(skipped))
    query = query.with_for_update(skip_locked=True)
    rows = [dict(r) for r in await Statement(query).fetch(conn)]
    return rows, None


_CUTOFF = Statement(
    select((func.now() - func.make_interval(0, 0, 0, bindparam("days"))).label("cutoff"))
)


async def cutoff(conn: Connection, *, days: int) -> Any:
    """The time before which a case's closure puts it past the retention period, now."""
    return await _CUTOFF.fetchval(conn, days=days)
