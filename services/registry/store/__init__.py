"""The registry's queries: the only code of the service that holds SQL or touches the driver.

One module per resource; every function is keyword-only after the connection it takes (a
pooled asyncpg connection, `shared.db.Connection`). The caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from shared.auth import Principal
from shared.db import Connection
from shared.eventlog.append import append

__all__ = ["SOURCE", "Connection", "emit_snapshot"]

SOURCE = "/registry"


async def emit_snapshot(
    conn: Connection,
    *,
    type: str,
    subject: str,
    row: Mapping[str, Any],
    caller: Principal,
    audience: list[UUID],
) -> dict[str, Any]:
    """Append the event of a written partner or service row, whose data is the row itself
    (the resource as served), in the caller's transaction; return that snapshot."""
    snapshot = dict(row)
    await append(
        conn,
        type=type,
        source=SOURCE,
        subject=subject,
        data=snapshot,
        actor=caller.actor,
        audience=audience,
    )
    return snapshot
