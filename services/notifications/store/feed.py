"""The pull feed's query: a caller's committed events after a cursor, oldest first."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from shared.db import Connection, Statement
from shared.eventlog.model import Event


def _feed_query(*, of_partner: bool, typed: bool) -> Statement:
    clauses = [
        "tx < pg_snapshot_xmin(pg_current_snapshot())",
        "(tx, seq) > (CAST(:tx AS xid8), :seq)",
    ]
    if of_partner:
        clauses.append("audience @> ARRAY[CAST(:partner AS uuid)]")
    if typed:
        clauses.append("type LIKE ANY(CAST(:types AS text[]))")
    # Only fixed clauses are joined; every value is a bound parameter.
    return Statement(
        "SELECT seq, id, tx, type, source, subject, time, actor, audience, correlation_id, "  # noqa: S608
        "causation_id, data FROM hub.events WHERE "
        + " AND ".join(clauses)
        + " ORDER BY tx, seq LIMIT :limit"
    )


# The feed of an admin (every event) or of a partner (those whose audience names it), of
# every type or of some: built once each, as a long poll reads again and again.
_FEED = {
    (of_partner, typed): _feed_query(of_partner=of_partner, typed=typed)
    for of_partner in (False, True)
    for typed in (False, True)
}


async def read_feed(
    conn: Connection,
    *,
    tx: int,
    seq: int,
    limit: int,
    partner_id: UUID | None,
    like_types: Sequence[str],
) -> list[Event]:
    """Committed events after (tx, seq) that the caller may see (a partner: those whose
    audience names it; an admin: all), optionally of types matching the LIKE patterns."""
    statement = _FEED[(partner_id is not None, bool(like_types))]
    params: dict[str, object] = {"tx": tx, "seq": seq, "limit": limit}
    if partner_id is not None:
        params["partner"] = partner_id
    if like_types:
        params["types"] = list(like_types)
    return [Event.from_row(r) for r in await statement.fetch(conn, **params)]
