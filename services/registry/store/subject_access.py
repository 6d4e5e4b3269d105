"""What the hub's log holds about one case, for a subject access export (SPEC 9): the events
about it and its referrals as their latest `referral.*` events tell them.

Both read `hub.events` through `ix_events_case`, the index of the expression
`shared.eventlog.about_case.CASE_OF_EVENT`, through its condition `ABOUT_CASE`."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from shared.db import Connection, Statement
from shared.eventlog.about_case import ABOUT_CASE

_EVENTS_ABOUT = Statement(
    f"""
    SELECT id, type, source, subject, time, actor, tx, seq, data
    FROM hub.events
    WHERE {ABOUT_CASE}
    ORDER BY tx, seq
    """  # noqa: S608 - a constant expression of this code
)

# Each referral of the case once: the data of its latest event (the highest `version`, then
# the latest in the log), in the order the referrals were created.
_REFERRALS_OF = Statement(
    f"""
    SELECT data FROM (
        SELECT DISTINCT ON (data ->> 'id') data, tx, seq
        FROM hub.events
        WHERE {ABOUT_CASE} AND type LIKE 'referral.%'
        ORDER BY data ->> 'id', data -> 'version' DESC NULLS LAST, tx DESC, seq DESC
    ) AS latest
    ORDER BY data ->> 'created_at', data ->> 'id'
    """  # noqa: S608 - a constant expression of this code
)


async def events_about(conn: Connection, *, case_id: UUID) -> list[dict[str, Any]]:
    """Every event about the case, in the log's order, with its `tx` and `seq`."""
    return [dict(r) for r in await _EVENTS_ABOUT.fetch(conn, case_id=str(case_id))]


async def referrals_of(conn: Connection, *, case_id: UUID) -> list[dict[str, Any]]:
    """The case's referrals, each as its latest `referral.*` event carries it (the Referral
    of the referrals service, its history included)."""
    return [dict(r["data"]) for r in await _REFERRALS_OF.fetch(conn, case_id=str(case_id))]
