"""What registry tests check a request against: the problem document, the event log and a
fingerprint of every table a write could touch. The data builders live in `tests.factories`."""

from __future__ import annotations

from sqlalchemy import bindparam, select

from shared.db import Statement
from shared.tables import events

PROBLEM = "application/problem+json"

# What a request that must change nothing is compared on: every registry table and the
# hub tables the registry writes. `api_keys.last_used_at` is left out (any request may
# touch it once a minute); the access log is left out (reads write it).
_FINGERPRINTED = {
    "hub.events": "SELECT seq, id, type, subject, audience, data FROM hub.events",
    "hub.api_keys": "SELECT id, role, partner_id, partner_active, name, revoked_at, "
    "expires_at FROM hub.api_keys",
    "hub.areas": "SELECT * FROM hub.areas",
    "hub.service_types": "SELECT * FROM hub.service_types",
    "registry.partners": "SELECT * FROM registry.partners",
    "registry.services": "SELECT * FROM registry.services",
    "registry.cases": "SELECT * FROM registry.cases",
    "registry.plan_steps": "SELECT * FROM registry.plan_steps",
    "registry.duplicates": "SELECT * FROM registry.duplicates",
    "registry.duplicate_keys": "SELECT * FROM registry.duplicate_keys",
}


async def database_fingerprint(app) -> dict[str, tuple[int, str]]:
    """(row count, md5 of the rows) of each table a write could touch."""
    parts = [
        f"SELECT '{name}', count(*), "
        f"coalesce(md5(string_agg(r::text, '|' ORDER BY r::text)), '') FROM ({query}) AS r"
        for name, query in _FINGERPRINTED.items()
    ]
    async with app.state.db.connection() as conn:
        rows = await conn.fetch(" UNION ALL ".join(parts))
    return {table: (count, digest) for table, count, digest in rows}


async def event_count(app) -> int:
    async with app.state.db.connection() as conn:
        return await conn.fetchval("SELECT count(*) FROM hub.events")


_EVENTS_OF = Statement(
    select(events).where(events.c.type == bindparam("type_")).order_by(events.c.seq)
)


async def events_of(app, type_: str) -> list[dict]:
    async with app.state.db.connection() as conn:
        return [dict(r) for r in await _EVENTS_OF.fetch(conn, type_=type_)]


def assert_problem(response, status: int | tuple[int, ...]) -> dict:
    """The response is a problem document with this status (or one of these)."""
    expected = status if isinstance(status, tuple) else (status,)
    assert response.status_code in expected, (
        response.request.method,
        response.request.url.path,
        response.status_code,
        response.text,
    )
    assert response.headers["content-type"] == PROBLEM, response.headers
    body = response.json()
    assert body["status"] == response.status_code and body["type"] and body["title"]
    return body
