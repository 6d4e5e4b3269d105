"""The pull feed's query: a caller's committed events after a cursor, oldest first."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.eventlog.model import Event


async def read_feed(
    session: AsyncSession,
    *,
    tx: int,
    seq: int,
    limit: int,
    partner_id: UUID | None,
    like_types: Sequence[str],
) -> list[Event]:
    """Committed events after (tx, seq) that the caller may see (a partner: those whose
    audience names it; an admin: all), optionally of types matching the LIKE patterns."""
    clauses = [
        "tx < pg_snapshot_xmin(pg_current_snapshot())",
        "(tx, seq) > (CAST(:tx AS xid8), :seq)",
    ]
    params: dict[str, object] = {"tx": tx, "seq": seq, "limit": limit}
    if partner_id is not None:
        clauses.append("audience @> ARRAY[CAST(:partner AS uuid)]")
        params["partner"] = partner_id
    if like_types:
        clauses.append("type LIKE ANY(CAST(:types AS text[]))")
        params["types"] = list(like_types)
    # Only fixed clauses are joined; every value is a bound parameter.
    rows = await session.execute(
        text(
            "SELECT seq, id, tx, type, source, subject, time, actor, audience, correlation_id, "  # noqa: S608
            "causation_id, data FROM hub.events WHERE "
            + " AND ".join(clauses)
            + " ORDER BY tx, seq LIMIT :limit"
        ),
        params,
    )
    return [Event.from_row(r) for r in rows.mappings()]
