"""Ways to run SQL at runtime: CPU per operation of the services' own code on `shared.db`,
against the same statements written by hand on a bare asyncpg pool.

1. `services`: the services' real code as they run it now: their statements SQLAlchemy Core
   or SQL text compiled once into `shared.db.Statement`s (per call for a list whose filters
   vary), run on the asyncpg pool of a `shared.db.Database` built as a service builds its
   own, units of work in `Database.transaction()`, reads in `Database.connection()`;
2. `handwritten`: the hot statements as SQL text with `$n` parameters, run with asyncpg's
   own calls on a bare `asyncpg.create_pool` (the same json codecs, `shared.db.
   init_connection`; no `Database`, no `Statement`), writes in `conn.transaction()`.

Operations:
- `intake`: the registry's intake as `bench.load intake_direct` runs it: the key's look-up
  (`shared.auth.look_up`, in autocommit), then in one unit of work `case_actions.create_case`
  with its store functions. Run by variant 1 only: writing its statements by hand would copy
  the store's SQL, most of which is SQL text already.
- `key look-up`: an API key by its hash (`shared.auth.look_up` in variant 1);
- `referral page`: `GET /referrals?role=incoming&limit=50` of a partner, the first page and
  pages after cursors of its own (`referrals.store.referrals.page` in variant 1, which
  compiles its statement per call: its filters vary);
- `event append`: one `case.updated` event with a case's snapshot, in its own transaction
  (`shared.eventlog.append.append` in variant 1).

Client CPU is `time.process_time()` of this process over the measured operations; backend
CPU is the utime + stime of the PostgreSQL backends serving the variant's connections, read
from `/proc/<pid>/stat` (found by their `application_name`; only when the server runs on
this machine). Both in µs per operation. The database is made as the bench makes its own
(`bench.common.pg_server`, `BENCH_DATABASE_URL` honoured) and filled by the scale measure's
generator (`bench.scale.generate`).

    python -m bench.sql_paths   # under a minute; SQL_PATHS_OPS, _ROUNDS, _CONCURRENCY
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import pg_server, plain_url, progress
from bench.data import case_body
from bench.scale import generate, partner_key, store_transaction
from services.referrals.store import referrals as referrals_store
from services.registry import case_actions, reference
from services.registry.schemas_cases import CaseCreate
from shared.auth import Principal, hash_key, look_up
from shared.db import Database, init_connection, json_text
from shared.eventlog.append import append
from shared.eventlog.model import Event
from shared.pagination import decode_cursor, page_of, parse_time
from shared.settings import Settings

CASES = 5000  # generated before measuring: 10,000 referrals over 20 partners
OPS = int(os.environ.get("SQL_PATHS_OPS", "1500"))
CONCURRENCY = int(os.environ.get("SQL_PATHS_CONCURRENCY", "4"))
ROUNDS = int(os.environ.get("SQL_PATHS_ROUNDS", "3"))  # each variant measured this many times
PAGE = 50
_TICK = os.sysconf("SC_CLK_TCK")
VARIANTS = ("services", "handwritten")
OPERATIONS = ("intake", "key look-up", "referral page", "event append")


async def create_pool(database_url: str, *, size: int, name: str) -> asyncpg.Pool:
    """A bare asyncpg pool with the codecs of `shared.db`'s (json and jsonb as Python values)."""
    return await asyncpg.create_pool(
        plain_url(database_url),
        min_size=size,
        max_size=size,
        init=init_connection,
        server_settings={"application_name": name, "timezone": "UTC"},
        command_timeout=60,
    )


# --- Variant 2: the hot statements by hand ------------------------------------------------------

HAND_LOOK_UP = (
    "SELECT id, role, partner_id, key_hash, last_used_at FROM hub.api_keys "
    "WHERE key_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2) "
    "AND partner_active"
)
_HAND_PAGE = (
    "SELECT * FROM referrals.referrals "
    "WHERE (assignee_partner_id = $1 OR owner_partner_id = $1) AND assignee_partner_id = $1 {} "
    "ORDER BY updated_at, id LIMIT $2"
)
HAND_FIRST_PAGE = _HAND_PAGE.format("")
HAND_NEXT_PAGE = _HAND_PAGE.format("AND (updated_at, id) > ($3, $4)")
HAND_APPEND = (
    "INSERT INTO hub.events "
    "(id, type, source, subject, actor, audience, correlation_id, causation_id, data) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::jsonb) RETURNING seq, tx, time"
)


# --- The operations ------------------------------------------------------------------------------


class Work:
    """The inputs every variant shares: the key, the partner, its cursors, a snapshot, the
    intake bodies (validated and dumped as the API hands them to the store)."""

    def __init__(
        self, key: str, partner_id: uuid.UUID, cursors: list[str], *, intakes: int
    ) -> None:
        self.key = key
        self.partner_id = partner_id
        self.cursors = cursors
        self.snapshot = {"id": str(uuid.uuid4()), **case_body(1)}
        # Prepared before the clock starts, as `bench.load intake_direct` prepares them.
        self.bodies = iter(
            [
                CaseCreate.model_validate(case_body(i)).model_dump(mode="json", by_alias=True)
                for i in range(1, intakes + 1)
            ]
        )

    def cursor(self, i: int) -> str | None:
        """Every other page is the first, the others start after a cursor of the partner's."""
        return None if i % 2 == 0 else self.cursors[i % len(self.cursors)]

    def after(self, cursor: str) -> tuple[datetime, uuid.UUID]:
        time_text, id_text = decode_cursor(cursor, width=2)
        return parse_time(time_text), uuid.UUID(id_text)

    def event(self) -> dict[str, Any]:
        return {
            "id": uuid.uuid4(),
            "type": "case.updated",
            "source": "/registry",
            "subject": f"cases/{self.snapshot['id']}",
            "actor": f"partner:{self.partner_id}",
            "audience": [self.partner_id],
            "correlation_id": None,
            "causation_id": None,
        }


def principal_of(row: Any, digest: bytes) -> Principal | None:
    if row is None or row["key_hash"] != digest:
        return None
    return Principal(key_id=row["id"], role=row["role"], partner_id=row["partner_id"])


def event_of(draft: Mapping[str, Any], encoded: str, stored: Any) -> Event:
    return Event(
        seq=stored["seq"],
        id=draft["id"],
        tx=int(stored["tx"]),
        type=draft["type"],
        source=draft["source"],
        subject=draft["subject"],
        time=stored["time"],
        actor=draft["actor"],
        audience=tuple(draft["audience"]),
        data=json.loads(encoded),
        correlation_id=None,
        causation_id=None,
    )


def services_ops(db: Database, work: Work) -> dict[str, Callable[[int], Awaitable[Any]]]:
    """The services' own code on a `shared.db.Database`."""

    async def key(i: int) -> Any:
        caller = await look_up(db, work.key)
        assert caller is not None

    async def intake(i: int) -> Any:
        caller = await look_up(db, work.key)
        assert caller is not None and caller.partner_id is not None
        async with db.transaction() as conn:
            await case_actions.create_case(
                conn, owner_id=caller.partner_id, body=next(work.bodies), caller=caller
            )

    async def page(i: int) -> Any:
        async with db.connection() as conn:
            items, _ = await referrals_store.page(
                conn,
                viewer_is_admin=False,
                viewer_partner_id=work.partner_id,
                equal=[("assignee_partner_id", work.partner_id)],
                cursor=work.cursor(i),
                limit=PAGE,
            )
        assert items

    async def event(i: int) -> Any:
        draft = work.event()
        async with db.transaction() as conn:
            await append(conn, event_id=draft.pop("id"), data=work.snapshot, **draft)

    return {"intake": intake, "key look-up": key, "referral page": page, "event append": event}


def handwritten_ops(pool: asyncpg.Pool, work: Work) -> dict[str, Callable[[int], Awaitable[Any]]]:
    """The hot statements by hand, with asyncpg's own calls on a bare pool."""

    async def key(i: int) -> Any:
        digest = hash_key(work.key)
        async with pool.acquire() as conn:
            row = await conn.fetchrow(HAND_LOOK_UP, digest, datetime.now(UTC))
        assert principal_of(row, digest) is not None

    async def page(i: int) -> Any:
        cursor = work.cursor(i)
        async with pool.acquire() as conn:
            if cursor is None:
                rows = await conn.fetch(HAND_FIRST_PAGE, work.partner_id, PAGE + 1)
            else:
                rows = await conn.fetch(
                    HAND_NEXT_PAGE, work.partner_id, PAGE + 1, *work.after(cursor)
                )
        items, _ = page_of(
            [dict(r) for r in rows],
            limit=PAGE,
            key=lambda r: (r["updated_at"].isoformat(), r["id"]),
        )
        assert items

    async def event(i: int) -> Any:
        draft = work.event()
        encoded = json_text(work.snapshot)
        async with pool.acquire() as conn, conn.transaction():
            stored = await conn.fetchrow(HAND_APPEND, *draft.values(), encoded)
        event_of(draft, encoded, stored)

    return {"key look-up": key, "referral page": page, "event append": event}


# --- Measuring -----------------------------------------------------------------------------------


def backend_cpu(pids: list[int]) -> float:
    """CPU seconds of these processes (0 for any this machine cannot read)."""
    total = 0
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / _TICK


async def backends(monitor: asyncpg.Connection, name: str) -> list[int]:
    rows = await monitor.fetch(
        "SELECT pid FROM pg_stat_activity"
        " WHERE application_name = $1 AND datname = current_database()",
        name,
    )
    return [r["pid"] for r in rows]


async def run_op(op: Callable[[int], Awaitable[Any]], count: int, concurrency: int) -> None:
    counter = iter(range(count))

    async def worker() -> None:
        for i in counter:
            await op(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def measure_op(
    op: Callable[[int], Awaitable[Any]], count: int, monitor: asyncpg.Connection, name: str
) -> tuple[float, float]:
    """(client µs, backend µs) per operation, after a warm-up of the same operation."""
    await run_op(op, max(50, count // 10), CONCURRENCY)
    pids = await backends(monitor, name)
    backend0, client0 = backend_cpu(pids), time.process_time()
    await run_op(op, count, CONCURRENCY)
    client1, backend1 = time.process_time(), backend_cpu(pids)
    return (client1 - client0) / count * 1e6, (backend1 - backend0) / count * 1e6


async def collect_cursors(db: Database, partner_id: uuid.UUID, pages: int) -> list[str]:
    cursors: list[str] = []
    cursor = None
    async with db.connection() as conn:
        for _ in range(pages):
            _, cursor = await referrals_store.page(
                conn,
                viewer_is_admin=False,
                viewer_partner_id=partner_id,
                equal=[("assignee_partner_id", partner_id)],
                cursor=cursor,
                limit=PAGE,
            )
            if cursor is None:
                break
            cursors.append(cursor)
    return cursors


async def main() -> int:
    with pg_server() as server:
        try:
            return await run(server)
        finally:
            await server.drop_all()


async def run(server: Any) -> int:
    progress(f"sql paths: database from the migrated template, {CASES:,} cases generated")
    database = await server.fresh_database("sqlpaths")
    async with store_transaction(database) as conn:
        await reference.load_seed_data(conn)  # as the registry does when it starts
    _, partner_id = await generate(database, CASES)
    names = {v: f"relais-bench-sqlpaths-{v}" for v in VARIANTS}
    settings = Settings(database_url=database, db_pool_size=CONCURRENCY, db_max_overflow=0)
    db = await Database.connect(settings, application_name=names["services"], min_size=CONCURRENCY)
    hand_pool = await create_pool(database, size=CONCURRENCY, name=names["handwritten"])
    monitor = await asyncpg.connect(plain_url(database))
    intake_ops = OPS // 3
    work = Work(
        partner_key(0),
        partner_id,
        await collect_cursors(db, partner_id, 15),
        intakes=ROUNDS * (intake_ops + max(50, intake_ops // 10)),
    )
    variants = {
        "services": services_ops(db, work),
        "handwritten": handwritten_ops(hand_pool, work),
    }
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        for round_ in range(1, ROUNDS + 1):
            for operation in OPERATIONS:
                count = intake_ops if operation == "intake" else OPS
                for variant, ops in variants.items():
                    if operation not in ops:
                        continue
                    figures = await measure_op(ops[operation], count, monitor, names[variant])
                    results.setdefault((operation, variant), []).append(figures)
                    progress(
                        f"sql paths: round {round_}/{ROUNDS} {operation:13} {variant:11} "
                        f"client {figures[0]:7.0f} µs, backend {figures[1]:6.0f} µs per operation"
                    )
    finally:
        await monitor.close()
        await hand_pool.close()
        await db.close()
    print(report(results))
    return 0


def report(results: Mapping[tuple[str, str], list[tuple[float, float]]]) -> str:
    """The table: medians over the rounds, µs of CPU per operation."""
    lines = [
        f"CPU per operation, µs (median of {ROUNDS} rounds; {OPS} operations each, intake "
        f"{OPS // 3}; {CONCURRENCY} connections; measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        "| operation | variant | client | PostgreSQL backend | total | client vs services |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for operation in OPERATIONS:
        base = None
        for variant in VARIANTS:
            runs = results.get((operation, variant))
            if not runs:
                continue
            client = statistics.median(r[0] for r in runs)
            backend = statistics.median(r[1] for r in runs)
            base = base or client
            lines.append(
                f"| {operation} | {variant} | {client:,.0f} | {backend:,.0f} | "
                f"{client + backend:,.0f} | {client / base:.2f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
