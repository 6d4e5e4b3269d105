"""Ways to run SQL at runtime: CPU per operation of the same work done three ways.

1. `sqlalchemy`: as the services run it today, SQLAlchemy Core on an `AsyncSession` (the
   engine and sessionmaker of `shared.db`, through the greenlet bridge);
2. `compiled`: SQLAlchemy Core compiled once to SQL text with positional parameters
   (`$1`, `$2`, ...), executed straight on a connection of an `asyncpg.create_pool`, whose
   statement cache makes them prepared; writes in an explicit `conn.transaction()`;
3. `handwritten`: the same statements written as SQL text, on the same pool.

Operations:
- `intake`: the registry's intake as `bench.load intake_direct` runs it: the key's look-up
  (`shared.auth.look_up`), then in one transaction `case_actions.create_case` with its store
  functions. Variant 2 runs the very same functions, unchanged, on `CompiledSession`, a
  session-shaped shim over an asyncpg connection that compiles each statement object once;
  variant 3 is not run for it (the store's intake statements are SQL text already: their
  compiled text is what a hand-written one would be).
- `key look-up`: an API key by its hash (`shared.auth.look_up` in variant 1);
- `referral page`: `GET /referrals?role=incoming&limit=50` of a partner, the first page and
  pages after cursors of its own (`referrals.store.referrals.page` in variant 1);
- `event append`: one `case.updated` event with a case's snapshot, in its own transaction
  (`shared.eventlog.append.append` in variant 1).

Client CPU is `time.process_time()` of this process over the measured operations; backend
CPU is the utime + stime of the PostgreSQL backends serving the variant's connections, read
from `/proc/<pid>/stat` (found by their `application_name`; only when the server runs on
this machine). Both in µs per operation. The database is made as the bench makes its own
(`bench.common.pg_server`, `BENCH_DATABASE_URL` honoured) and filled by the scale measure's
generator (`bench.scale.generate`).

    python -m bench.sql_paths   # about a minute; SQL_PATHS_OPS, SQL_PATHS_CONCURRENCY
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
from sqlalchemy import Text, bindparam, cast, insert, or_, select, tuple_
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.sql.elements import ClauseElement

from bench.common import pg_server, plain_url, progress
from bench.data import case_body
from bench.scale import generate, partner_key, store_session
from services.referrals.store import referrals as referrals_store
from services.referrals.tables import referrals
from services.registry import case_actions, reference
from services.registry.schemas_cases import CaseCreate
from shared.auth import AUTOCOMMIT, Principal, hash_key, look_up
from shared.db import create_engine, create_sessionmaker
from shared.eventlog.append import append
from shared.eventlog.model import Event
from shared.pagination import decode_cursor, page_of, parse_time
from shared.settings import Settings
from shared.tables import api_keys, events

CASES = 5000  # generated before measuring: 10,000 referrals over 20 partners
OPS = int(os.environ.get("SQL_PATHS_OPS", "1500"))
CONCURRENCY = int(os.environ.get("SQL_PATHS_CONCURRENCY", "4"))
ROUNDS = int(os.environ.get("SQL_PATHS_ROUNDS", "3"))  # each variant measured this many times
PAGE = 50
_TICK = os.sysconf("SC_CLK_TCK")
DIALECT = asyncpg_dialect()


# --- Variant 2: Core compiled once, run on asyncpg ---------------------------------------------


class Compiled:
    """A Core statement compiled once for asyncpg: its SQL with `$n` parameters and the
    names of its parameters in their order (`SQLCompiler.positiontup`)."""

    __slots__ = ("defaults", "names", "sql")

    def __init__(self, statement: ClauseElement) -> None:
        compiled = statement.compile(dialect=DIALECT)
        self.sql = compiled.string
        self.names = tuple(compiled.positiontup or ())
        self.defaults = compiled.params  # the values a statement holds itself

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[name] if name in params else self.defaults.get(name) for name in self.names]


async def init_connection(conn: asyncpg.Connection) -> None:
    """The codecs of the pool's connections: JSON and JSONB as Python values (encoded with
    `json.dumps`, uuids and times as strings); uuid, timestamptz, arrays are asyncpg's own."""
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name,
            schema="pg_catalog",
            encoder=lambda value: json.dumps(value, default=str),
            decoder=json.loads,
        )


async def create_pool(database_url: str, *, size: int, name: str) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        plain_url(database_url),
        min_size=size,
        max_size=size,
        init=init_connection,
        server_settings={"application_name": name, "timezone": "UTC"},
        command_timeout=60,
    )


class _Row:
    """A record that also answers attribute access, as the store functions read rows."""

    __slots__ = ("_record",)

    def __init__(self, record: asyncpg.Record) -> None:
        self._record = record

    def __getattr__(self, name: str) -> Any:
        try:
            return self._record[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, index: Any) -> Any:
        return self._record[index]

    def __iter__(self):
        return iter(self._record)

    def __len__(self) -> int:
        return len(self._record)


class _Mappings:
    def __init__(self, records: list[asyncpg.Record]) -> None:
        self.records = records

    def __iter__(self):
        return iter(self.records)

    def all(self) -> list[asyncpg.Record]:
        return self.records

    def one(self) -> asyncpg.Record:
        (record,) = self.records
        return record

    def one_or_none(self) -> asyncpg.Record | None:
        return self.records[0] if self.records else None

    def first(self) -> asyncpg.Record | None:
        return self.records[0] if self.records else None


class _Result:
    """The part of SQLAlchemy's Result the store functions use, over asyncpg records."""

    def __init__(self, records: list[asyncpg.Record]) -> None:
        self.records = records

    def __iter__(self):
        return (_Row(r) for r in self.records)

    def mappings(self) -> _Mappings:
        return _Mappings(self.records)

    def all(self) -> list[_Row]:
        return [_Row(r) for r in self.records]

    def one(self) -> _Row:
        (record,) = self.records
        return _Row(record)

    def one_or_none(self) -> _Row | None:
        return _Row(self.records[0]) if self.records else None

    def first(self) -> _Row | None:
        return self.one_or_none()

    def scalar(self) -> Any:
        return self.records[0][0] if self.records else None

    def scalars(self) -> list[Any]:
        return [r[0] for r in self.records]


class CompiledSession:
    """What the store functions ask of a session (`execute` and its result), on an asyncpg
    connection: each statement object compiled once and kept (the stores build their hot
    statements once, at import); a statement built per call is compiled per call."""

    cache: dict[ClauseElement, Compiled] = {}
    compilations = 0  # statements built per call are new objects: compiled on each call
    executions = 0

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def execute(self, statement: ClauseElement, params: Mapping[str, Any] | None = None):
        CompiledSession.executions += 1
        compiled = self.cache.get(statement)
        if compiled is None:
            compiled = Compiled(statement)
            CompiledSession.compilations += 1
            if len(self.cache) < 256:
                self.cache[statement] = compiled
        return _Result(await self.conn.fetch(compiled.sql, *compiled.args(params or {})))


# The hot statements in Core, each built once with named parameters and compiled once.
_KEY_COLUMNS = (
    api_keys.c.id,
    api_keys.c.role,
    api_keys.c.partner_id,
    api_keys.c.key_hash,
    api_keys.c.last_used_at,
)
CORE_LOOK_UP = Compiled(
    select(*_KEY_COLUMNS).where(
        api_keys.c.key_hash == bindparam("digest"),
        api_keys.c.revoked_at.is_(None),
        api_keys.c.partner_active.is_(True),
    )
)
_INCOMING = select(referrals).where(
    or_(
        referrals.c.assignee_partner_id == bindparam("viewer"),
        referrals.c.owner_partner_id == bindparam("viewer"),
    ),
    referrals.c.assignee_partner_id == bindparam("viewer"),
)
_ORDER = (referrals.c.updated_at, referrals.c.id)
CORE_FIRST_PAGE = Compiled(_INCOMING.order_by(*_ORDER).limit(bindparam("limit")))
CORE_NEXT_PAGE = Compiled(
    _INCOMING.where(tuple_(*_ORDER) > tuple_(bindparam("after_time"), bindparam("after_id")))
    .order_by(*_ORDER)
    .limit(bindparam("limit"))
)
CORE_APPEND = Compiled(
    insert(events)
    .values(
        {
            name: bindparam(name, type_=events.c[name].type)
            for name in (
                "id",
                "type",
                "source",
                "subject",
                "actor",
                "audience",
                "correlation_id",
                "causation_id",
            )
        }
        | {"data": cast(cast(bindparam("data", type_=Text()), Text()), JSONB)}
    )
    .returning(events.c.seq, events.c.tx, events.c.time)
)

# --- Variant 3: the same statements by hand ----------------------------------------------------

HAND_LOOK_UP = (
    "SELECT id, role, partner_id, key_hash, last_used_at FROM hub.api_keys "
    "WHERE key_hash = $1 AND revoked_at IS NULL AND partner_active"
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


def sqlalchemy_ops(sessionmaker: Any, work: Work) -> dict[str, Callable[[int], Awaitable[Any]]]:
    async def key(i: int) -> Any:
        async with sessionmaker() as session:
            await session.connection(execution_options=AUTOCOMMIT)
            caller = await look_up(session, work.key)
            await session.commit()
        assert caller is not None

    async def intake(i: int) -> Any:
        async with sessionmaker() as session:
            await session.connection(execution_options=AUTOCOMMIT)
            caller = await look_up(session, work.key)
            await session.commit()
            async with session.begin():
                await case_actions.create_case(
                    session, owner_id=caller.partner_id, body=next(work.bodies), caller=caller
                )

    async def page(i: int) -> Any:
        async with sessionmaker() as session:
            items, _ = await referrals_store.page(
                session,
                viewer_is_admin=False,
                viewer_partner_id=work.partner_id,
                equal=[("assignee_partner_id", work.partner_id)],
                cursor=work.cursor(i),
                limit=PAGE,
            )
        assert items

    async def event(i: int) -> Any:
        draft = work.event()
        async with sessionmaker() as session, session.begin():
            await append(
                session,
                event_id=draft.pop("id"),
                data=work.snapshot,
                **draft,
            )

    return {"intake": intake, "key look-up": key, "referral page": page, "event append": event}


def asyncpg_ops(pool: asyncpg.Pool, work: Work, *, hand: bool) -> dict[str, Callable]:
    def page_args(i: int) -> tuple[str, list[Any]]:
        cursor = work.cursor(i)
        if hand:
            if cursor is None:
                return HAND_FIRST_PAGE, [work.partner_id, PAGE + 1]
            return HAND_NEXT_PAGE, [work.partner_id, PAGE + 1, *work.after(cursor)]
        params: dict[str, Any] = {"viewer": work.partner_id, "limit": PAGE + 1}
        if cursor is None:
            return CORE_FIRST_PAGE.sql, CORE_FIRST_PAGE.args(params)
        params["after_time"], params["after_id"] = work.after(cursor)
        return CORE_NEXT_PAGE.sql, CORE_NEXT_PAGE.args(params)

    async def key(i: int) -> Any:
        digest = hash_key(work.key)
        async with pool.acquire() as conn:
            if hand:
                row = await conn.fetchrow(HAND_LOOK_UP, digest)
            else:
                row = await conn.fetchrow(CORE_LOOK_UP.sql, *CORE_LOOK_UP.args({"digest": digest}))
        assert principal_of(row, digest) is not None

    async def intake(i: int) -> Any:
        async with pool.acquire() as conn:
            session = CompiledSession(conn)
            caller = await look_up(session, work.key)  # type: ignore[arg-type]
            assert caller is not None and caller.partner_id is not None
            async with conn.transaction():
                await case_actions.create_case(
                    session,  # type: ignore[arg-type]
                    owner_id=caller.partner_id,
                    body=next(work.bodies),
                    caller=caller,
                )

    async def page(i: int) -> Any:
        sql, args = page_args(i)
        async with pool.acquire() as conn:
            rows = await conn.fetch(sql, *args)
        items, _ = page_of(
            [dict(r) for r in rows],
            limit=PAGE,
            key=lambda r: (r["updated_at"].isoformat(), r["id"]),
        )
        assert items

    async def event(i: int) -> Any:
        draft = work.event()
        encoded = json.dumps(work.snapshot, default=str)
        async with pool.acquire() as conn, conn.transaction():
            if hand:
                stored = await conn.fetchrow(HAND_APPEND, *draft.values(), encoded)
            else:
                stored = await conn.fetchrow(
                    CORE_APPEND.sql, *CORE_APPEND.args(draft | {"data": encoded})
                )
        event_of(draft, encoded, stored)

    ops = {"key look-up": key, "referral page": page, "event append": event}
    if not hand:
        ops = {"intake": intake, **ops}
    return ops


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


async def collect_cursors(sessionmaker: Any, partner_id: uuid.UUID, pages: int) -> list[str]:
    cursors: list[str] = []
    cursor = None
    async with sessionmaker() as session:
        for _ in range(pages):
            _, cursor = await referrals_store.page(
                session,
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
    async with store_session(database) as session:
        await reference.load_seed_data(session)  # as the registry does when it starts
    _, partner_id = await generate(database, CASES)
    names = {v: f"relais-bench-sqlpaths-{v}" for v in ("sqlalchemy", "compiled", "handwritten")}
    settings = Settings(database_url=database, db_pool_size=CONCURRENCY, db_max_overflow=0)
    engine = create_engine(settings, application_name=names["sqlalchemy"])
    sessionmaker = create_sessionmaker(engine)
    pool = await create_pool(database, size=CONCURRENCY, name=names["compiled"])
    hand_pool = await create_pool(database, size=CONCURRENCY, name=names["handwritten"])
    monitor = await asyncpg.connect(plain_url(database))
    intake_ops = OPS // 3
    work = Work(
        partner_key(0),
        partner_id,
        await collect_cursors(sessionmaker, partner_id, 15),
        intakes=ROUNDS * 2 * (intake_ops + max(50, intake_ops // 10)),
    )
    variants = {
        "sqlalchemy": sqlalchemy_ops(sessionmaker, work),
        "compiled": asyncpg_ops(pool, work, hand=False),
        "handwritten": asyncpg_ops(hand_pool, work, hand=True),
    }
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        for round_ in range(1, ROUNDS + 1):
            for operation in ("intake", "key look-up", "referral page", "event append"):
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
        await pool.close()
        await hand_pool.close()
        await engine.dispose()
    print(report(results))
    return 0


def report(results: Mapping[tuple[str, str], list[tuple[float, float]]]) -> str:
    """The table: medians over the rounds, µs of CPU per operation."""
    lines = [
        f"CPU per operation, µs (median of {ROUNDS} rounds; {OPS} operations each, intake "
        f"{OPS // 3}; {CONCURRENCY} connections; measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        "| operation | variant | client | PostgreSQL backend | total | client vs SQLAlchemy |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for operation in ("intake", "key look-up", "referral page", "event append"):
        base = None
        for variant in ("sqlalchemy", "compiled", "handwritten"):
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
    lines.append("")
    lines.append(
        f"CompiledSession (intake, variant 2): {CompiledSession.compilations:,} compilations for "
        f"{CompiledSession.executions:,} statements executed"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
