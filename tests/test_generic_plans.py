"""The workers' pools run every statement on its generic plan (`plan_cache_mode =
force_generic_plan`, shared/db.py): a generic plan that scanned a whole table would cost more
with every case the hub holds. The statements the workers run for every batch are sent here
through the stores' own functions, over a hub holding a few thousand cases, and the generic
plan of each must reach the big tables through their indexes."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest

from bench.scale import generate
from services.notifications.delivery_rules import EndpointHealth
from services.notifications.store import dispatch
from services.referrals.store import indicators, projections
from services.referrals.store import referrals as referrals_store
from shared.db import Database, plain_url
from shared.eventlog.consumer import read_batch

CASES = 4000
# The tables that grow with the cases: none of them may be read whole.
GROWING = {
    "referrals",
    "referral_history",
    "referral_facts",
    "cases",
    "steps",
    "plan_steps",
    "deliveries",
    "attempts",
    "events",
}


class Noting:
    """A connection that notes the SQL of the statements sent through it."""

    SENDS = ("fetch", "fetchrow", "fetchval", "execute", "executemany")

    def __init__(self, conn: asyncpg.Connection, sent: list[str]) -> None:
        self._conn, self._sent = conn, sent

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._conn, name)
        if name not in self.SENDS:
            return attribute

        async def send(sql: str, *args: Any, **kwargs: Any) -> Any:
            self._sent.append(sql)
            return await attribute(sql, *args, **kwargs)

        return send


class NotingDatabase:
    """A `Database` whose connections note the statements sent through them."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.sent: list[str] = []

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Noting]:
        async with self.db.connection() as conn:
            yield Noting(conn, self.sent)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Noting]:
        async with self.db.transaction() as conn:
            yield Noting(conn, self.sent)


async def _seed(database_url: str) -> dict[str, Any]:
    """A hub with `CASES` cases (their plans, referrals, histories, events and the
    referrals service's copies), the indicators' rollup, and a delivery with an attempt for
    each referral event, all analysed."""
    await generate(database_url, CASES)
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        await conn.execute(
            """
            INSERT INTO referrals.steps (id, case_id, key, position, service_type, priority,
                delivery, depends_on, notes)
            SELECT id, case_id, key, position, service_type, priority, delivery, depends_on,
                notes
            FROM registry.plan_steps
            """
        )
        await indicators.rebuild(conn)
        endpoint_id = uuid4()
        await conn.execute(
            "INSERT INTO notifications.endpoints (id, url, event_types, secrets) "
            "VALUES ($1, 'https://hooks.example.org/relais', '{referral.created}', '[]')",
            endpoint_id,
        )
        await conn.execute(
            """
            INSERT INTO notifications.deliveries (id, endpoint_id, event_id, event_seq,
                event_type, event_time, status, attempt_count)
            SELECT gen_random_uuid(), $1, id, seq, type, time, 'succeeded', 1
            FROM hub.events
            """,
            endpoint_id,
        )
        await conn.execute(
            """
            INSERT INTO notifications.attempts (delivery_id, attempted_at, status_code,
                latency_ms)
            SELECT id, event_time, 200, 3 FROM notifications.deliveries
            """
        )
        await conn.execute("VACUUM ANALYZE")
        case_ids = [r["id"] for r in await conn.fetch("SELECT id FROM referrals.cases LIMIT 3")]
        referral_ids = [
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM referrals.referrals WHERE case_id = ANY($1)", case_ids
            )
        ]
        delivery = await conn.fetchrow("SELECT id FROM notifications.deliveries LIMIT 1")
    finally:
        await conn.close()
    return {
        "endpoint_id": endpoint_id,
        "case_ids": case_ids,
        "referral_ids": referral_ids,
        "delivery_id": delivery["id"],
    }


def _parameters(sql: str) -> int:
    return max((int(n) for n in re.findall(r"\$(\d+)", sql)), default=0)


def _scans(plan: Any) -> list[tuple[str, str]]:
    """(node type, relation) of every scan of a table in a JSON plan."""
    found = []
    if isinstance(plan, dict):
        if "Relation Name" in plan:
            found.append((plan["Node Type"], plan["Relation Name"]))
        for value in plan.values():
            found += _scans(value)
    elif isinstance(plan, list):
        for value in plan:
            found += _scans(value)
    return found


async def _generic_scans(conn: asyncpg.Connection, sql: str) -> list[tuple[str, str]]:
    """The table scans of `sql`'s generic plan, the plan a worker's pooled connection keeps."""
    await conn.execute(f"PREPARE noted AS {sql}")
    try:
        nulls = ", ".join(["NULL"] * _parameters(sql))
        plan = await conn.fetchval(
            "EXPLAIN (FORMAT JSON) EXECUTE noted" + (f"({nulls})" if nulls else "")
        )
    finally:
        await conn.execute("DEALLOCATE noted")
    return _scans(json.loads(plan) if isinstance(plan, str) else plan)


@pytest.fixture
async def hub(database_url: str, settings) -> AsyncIterator[tuple[Database, dict[str, Any], str]]:
    seeded = await _seed(database_url)
    db = await Database.connect(settings)
    try:
        yield db, seeded, database_url
    finally:
        await db.close()


async def test_the_statements_of_every_batch_keep_to_the_indexes_on_their_generic_plans(hub):
    db, seeded, db_url = hub
    noting = NotingDatabase(db)
    now = datetime.now(UTC)
    # The reconciler's batch: the cases' copies and plans, their referrals and histories,
    # the rollup of their referrals.
    async with noting.transaction() as conn:
        await projections.lock_cases(conn, case_ids=seeded["case_ids"])
        await projections.steps_of_cases(conn, case_ids=seeded["case_ids"])
        await referrals_store.referrals_of_cases(conn, case_ids=seeded["case_ids"])
        await referrals_store.history_of(conn, referral_ids=seeded["referral_ids"])
        await indicators.refresh_cases(conn, case_ids=seeded["case_ids"])
    # A consumer's wake.
    async with noting.connection() as conn:
        await read_batch(conn, tx=0, seq=0, limit=50)
    # The dispatcher's claim and record.
    await dispatch.claim_due(noting, per_endpoint=16, limit=64, lease_seconds=30)  # type: ignore[arg-type]
    health = EndpointHealth()
    health.reset, health.failed_at = True, None
    await dispatch.record_attempts(
        noting,  # type: ignore[arg-type]
        attempts=[
            dispatch.AttemptRecord(
                delivery_id=seeded["delivery_id"],
                lease_until=now + timedelta(seconds=30),
                claimed_count=1,
                attempted_at=now,
                status_code=200,
                latency_ms=3,
                error=None,
                excerpt=None,
                status="succeeded",
                next_attempt_at=None,
            )
        ],
        health={UUID(str(seeded["endpoint_id"])): health},
    )
    assert len(noting.sent) >= 8
    conn = await asyncpg.connect(plain_url(db_url), statement_cache_size=0)
    try:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        for sql in noting.sent:
            scans = await _generic_scans(conn, sql)
            whole = [
                (node, table) for node, table in scans if node == "Seq Scan" and table in GROWING
            ]
            assert not whole, f"{whole} in the generic plan of:\n{sql}"
    finally:
        await conn.close()
