"""The pull feed: a caller's events after a cursor, oldest first, never skipping one."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from services.notifications import store
from services.notifications.store import Connection
from shared.eventlog.model import Event

START = "0" * 40


def like_patterns(types: Sequence[str]) -> list[str]:
    """`referral.*` → `referral.%` (with `%` and `_` in names escaped)."""
    return [
        t.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("*", "%")
        for t in types
    ]


async def read_feed(
    conn: Connection,
    *,
    tx: int,
    seq: int,
    limit: int,
    partner_id: UUID | None,
    types: Sequence[str],
) -> list[Event]:
    """Committed events after (tx, seq) that the caller may see (a partner: those whose
    audience names it; an admin: all), optionally of the given types (`*` wildcards)."""
    return await store.read_feed(
        conn,
        tx=tx,
        seq=seq,
        limit=limit,
        partner_id=partner_id,
        like_types=like_patterns(types),
    )
