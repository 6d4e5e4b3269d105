"""The database layer: the asyncpg pool the services run their SQL on and statements compiled
once; the schema's naming convention and the URL forms that SQLAlchemy (the table
definitions, Alembic) and asyncpg take."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
from sqlalchemy import MetaData, text
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.sql import ClauseElement

from shared.settings import Settings

# A pooled connection (asyncpg hands out a proxy that behaves as one).
Connection = asyncpg.Connection

# One naming convention for every schema, so that constraint names stay stable in migrations.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def schema_metadata(schema: str) -> MetaData:
    """A MetaData for one PostgreSQL schema with the project's naming convention."""
    return MetaData(schema=schema, naming_convention=NAMING_CONVENTION)


def asyncpg_url(url: str) -> str:
    """Normalise any PostgreSQL URL to the asyncpg dialect SQLAlchemy expects."""
    parsed = make_url(url)
    if parsed.drivername in {"postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"}:
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def plain_url(url: str) -> str:
    """The URL without the SQLAlchemy driver suffix, as asyncpg.connect takes it."""
    parsed = make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


# --- Running SQL at runtime: asyncpg, each statement compiled once --------------------------
#
# The services run their SQL straight on an asyncpg pool (bench/README.md, "Ways to run SQL
# at runtime": half the client CPU of the same statements through an AsyncSession). A
# statement is written as SQLAlchemy Core over the tables, or as SQL text with `:name`
# parameters, and compiled once into a `Statement`: PostgreSQL's `$n` text and the order of
# its parameters. asyncpg prepares it on first use on each connection and keeps it in its
# statement cache. SQLAlchemy and Alembic keep the schema and the migrations.

_DIALECT = asyncpg_dialect()

Record = asyncpg.Record


def json_text(value: Any) -> str:
    """JSON as the hub stores it: uuids and times as strings, sets and tuples as lists."""
    return json.dumps(value, default=_json_default, separators=(",", ":"))


def _json_default(value: object) -> object:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class Statement:
    """One SQL statement compiled once, with named parameters, run on an asyncpg connection.

    Build it at import from Core (`Statement(select(cases).where(cases.c.id ==
    bindparam("id")))`) or from text (`Statement("SELECT ... WHERE id = :id")`); call it
    with the parameters by name: `await CASE.fetchrow(conn, id=case_id)`. A statement built
    per call (a list with optional filters) may be wrapped per call: it is then compiled per
    call. Values a Core statement holds itself (`col == "x"`) are kept as its defaults.
    """

    __slots__ = ("defaults", "names", "required", "sql")

    def __init__(self, source: str | ClauseElement) -> None:
        construct = text(source) if isinstance(source, str) else source
        compiled = construct.compile(dialect=_DIALECT, compile_kwargs={"render_postcompile": True})
        self.sql: str = compiled.string
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())
        self.defaults: dict[str, Any] = dict(compiled.params)
        self.required = frozenset(
            name for name, bind in compiled.binds.items() if bind.required and bind.value is None
        )

    def __repr__(self) -> str:
        return f"Statement({self.sql!r})"

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        """The positional arguments of one call, in the order of the `$n` of the SQL."""
        values = []
        for name in self.names:
            if name in params:
                values.append(params[name])
            elif name in self.required:
                raise TypeError(f"{self!r} needs the parameter {name!r}")
            else:
                values.append(self.defaults.get(name))
        return values

    async def fetch(self, conn: Connection, /, **params: Any) -> list[Record]:
        return await conn.fetch(self.sql, *self.args(params))

    async def fetchrow(self, conn: Connection, /, **params: Any) -> Record | None:
        return await conn.fetchrow(self.sql, *self.args(params))

    async def fetchval(self, conn: Connection, /, **params: Any) -> Any:
        return await conn.fetchval(self.sql, *self.args(params))

    async def execute(self, conn: Connection, /, **params: Any) -> int:
        """Run it; the number of rows it wrote (or selected)."""
        status = await conn.execute(self.sql, *self.args(params))
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def executemany(self, conn: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
        await conn.executemany(self.sql, [self.args(row) for row in rows])


async def keep_session(conn: Connection) -> None:
    """What a released connection needs beyond asyncpg's own clean-up: nothing.

    asyncpg rolls back a transaction left open and drops the connection's listeners before
    calling this; its default reset would also send `RESET ALL`, `CLOSE ALL`, `UNLISTEN *`
    and `pg_advisory_unlock_all()`, one more round trip at every release (a third of the
    statements a case cost, bench/README.md). The services never change a pooled
    connection's session: settings and advisory locks they take are the transaction's
    (`SET LOCAL`, `pg_advisory_xact_lock`), cursors live in transactions, and LISTEN and
    the consumers' session locks are on the listener's own connection."""


async def init_connection(conn: Connection) -> None:
    """Every pooled connection decodes json and jsonb to Python values and encodes them back."""
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, encoder=json_text, decoder=json.loads, schema="pg_catalog", format="text"
        )


def lost_connection(exc: BaseException) -> bool:
    """Whether a statement failed because its connection is gone (the server restarted or
    dropped it): not a timeout, not an error PostgreSQL reported on a live connection."""
    if isinstance(exc, (asyncpg.PostgresConnectionError, asyncpg.ConnectionDoesNotExistError)):
        return True
    if isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc):
        return True
    if isinstance(exc, asyncpg.PostgresError):  # 57P01-57P03: shut down, crashed, starting
        return (exc.sqlstate or "").startswith("57P")
    return isinstance(exc, OSError) and not isinstance(exc, TimeoutError)


class Database:
    """The asyncpg pool of one process and the two ways to use it.

    `transaction()` is the unit of work: one connection, one transaction, committed when the
    block ends, rolled back when it raises. `connection()` runs statements each in its own
    (autocommit) transaction: one round trip for a read, nothing left open. A statement that
    finds the server gone expires the pool's other connections (made before the restart, they
    are as dead) so that the next request gets fresh ones.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def connect(
        cls,
        settings: Settings,
        *,
        application_name: str = "relais",
        min_size: int = 0,
        generic_plans: bool = False,
    ) -> Database:
        """The pool of a process; with `min_size=0` it connects at the first use, so that a
        service starts (and answers 503 on /readyz) while the database is down.

        `generic_plans=True` is for the workers' pools: their statements are few and fixed,
        run for every batch, and take arrays of ids (`= ANY($1)`). PostgreSQL's plan cache
        keeps planning such a prepared statement anew at each execution (the generic plan,
        costed for arrays of ten, looks dearer than a custom plan for the one or two ids of
        a batch), and planning the indicators' refresh, the log read and the dispatcher's
        record cost more than running them (bench/README.md). Their generic plans are the
        index plans the custom ones are; `tests/test_generic_plans.py` holds them to it. The
        APIs' pools keep the default: their list queries take optional filters whose values
        the custom plans fold away."""
        pool = await asyncpg.create_pool(
            plain_url(settings.require_database_url()),
            min_size=min_size,
            max_size=settings.db_pool_size + settings.db_max_overflow,
            max_inactive_connection_lifetime=300,
            command_timeout=60,
            init=init_connection,
            reset=keep_session,
            server_settings={
                "application_name": application_name,
                "idle_in_transaction_session_timeout": str(settings.idle_in_transaction_timeout_ms),
                "timezone": "UTC",
                **({"plan_cache_mode": "force_generic_plan"} if generic_plans else {}),
            },
        )
        return cls(pool)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        try:
            async with self.pool.acquire() as conn:
                yield conn
        except BaseException as exc:
            await self._after_error(exc)
            raise

    @asynccontextmanager
    async def transaction(self, *, isolation: str | None = None) -> AsyncIterator[Connection]:
        try:
            async with self.pool.acquire() as conn, conn.transaction(isolation=isolation):
                yield conn
        except BaseException as exc:
            await self._after_error(exc)
            raise

    async def _after_error(self, exc: BaseException) -> None:
        if lost_connection(exc):
            await self.pool.expire_connections()  # a coroutine that does not wait on I/O
