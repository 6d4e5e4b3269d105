"""The database layer the services run their SQL on: statements compiled once with named
parameters, the json codecs of every pooled connection, the two ways to use the pool, and a
pool that outlives connections the server drops."""

from __future__ import annotations

import asyncio
import re
import uuid
from contextlib import AsyncExitStack
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy import bindparam, select

from shared.db import Database, Statement, json_text, lost_connection, plain_url
from shared.eventlog.append import append
from shared.problems import unexpected_error_response
from shared.settings import Settings
from shared.tables import events

# --- Statement: named parameters, in the order of the `$n` -------------------------------

_NAMED = Statement("SELECT CAST(:b AS text) AS b, CAST(:a AS int) AS a, CAST(:b AS text) AS again")

# A value the statement holds itself (the type), and parameters named in another order than
# the alphabet's.
_UPDATED_AFTER = Statement(
    select(events.c.seq, events.c.type)
    .where(events.c.type == "partner.updated", events.c.seq > bindparam("after"))
    .order_by(events.c.seq)
    .limit(bindparam("limit"))
)


def test_parameters_are_passed_by_name_in_the_order_of_the_sql():
    values = {"a": 7, "b": "x"}
    args = _NAMED.args(values)
    placed = re.findall(r"CAST\(\$(\d+) AS \w+\) AS (\w+)", _NAMED.sql)
    assert len(placed) == 3
    for n, column in placed:  # each `$n` gets the value of the parameter written there
        assert args[int(n) - 1] == values["b" if column == "again" else column]
    assert _UPDATED_AFTER.args({"limit": 5, "after": 40}) == ["partner.updated", 40, 5]


def test_a_missing_required_parameter_raises_type_error_but_none_is_a_value():
    with pytest.raises(TypeError, match="'a'"):
        _NAMED.args({"b": "x"})
    with pytest.raises(TypeError, match="'after'"):
        _UPDATED_AFTER.args({"limit": 5})
    assert _NAMED.args({"a": None, "b": None}) == [None, None]
    with_default = Statement(select(events.c.seq).where(events.c.subject == bindparam("s", "x")))
    assert with_default.args({}) == ["x"]
    assert with_default.args({"s": "y"}) == ["y"]


async def test_a_statement_runs_with_its_parameters_by_name(db):
    async with db.connection() as conn:
        row = await _NAMED.fetchrow(conn, a=7, b="x")
        assert (row["b"], row["a"], row["again"]) == ("x", 7, "x")
        assert await _NAMED.fetchval(conn, b="y", a=1) == "y"
        with pytest.raises(TypeError):
            await _NAMED.fetch(conn, b="x")


async def test_values_held_by_a_core_statement_are_kept(db):
    async with db.transaction() as conn:
        for type_ in ("partner.updated", "partner.created", "partner.updated"):
            await append(
                conn,
                type=type_,
                source="/registry",
                subject="partners/p",
                data={},
                actor="admin",
            )
    async with db.connection() as conn:
        rows = await _UPDATED_AFTER.fetch(conn, after=0, limit=10)
        everything = await conn.fetchval("SELECT count(*) FROM hub.events")
    assert everything == 3
    assert [r["type"] for r in rows] == ["partner.updated", "partner.updated"]
    assert rows[0]["seq"] < rows[1]["seq"]


async def test_execute_returns_the_number_of_rows_written_or_selected(db):
    async with db.transaction() as conn:
        created = await Statement("CREATE TABLE public.counted (n int PRIMARY KEY)").execute(conn)
        assert created == 0
        await Statement("INSERT INTO public.counted VALUES (:n)").executemany(
            conn, [{"n": n} for n in range(1, 6)]
        )
        inserted = await Statement(
            "INSERT INTO public.counted "
            "SELECT generate_series(CAST(:first AS int), CAST(:last AS int))"
        ).execute(conn, first=10, last=13)
        assert inserted == 4
        assert await Statement("SELECT n FROM public.counted").execute(conn) == 9
        raised = Statement("UPDATE public.counted SET n = n + 100 WHERE n > :n")
        assert await raised.execute(conn, n=3) == 6
        assert await raised.execute(conn, n=1000) == 0
        assert await Statement("DELETE FROM public.counted WHERE n < :n").execute(conn, n=3) == 2


# --- json and jsonb: Python values in, Python values out ----------------------------------

_ID = uuid.UUID("0b9d6c2e-4a52-4d7e-9c1a-2f6f8e0a5b31")
_AT = datetime(2026, 10, 3, 9, 0, 30, tzinfo=UTC)
_DOCUMENT = {
    "id": _ID,
    "at": _AT,
    "name": "Aminata Traoré",
    "greeting": "سلام عليكم",
    "place": "Ségou — Mali 🌍",
    "tags": ("a", "b"),
    "nested": {"n": 1, "items": [1.5, None, True, "ß"]},
}
_AS_JSON = {
    "id": str(_ID),
    "at": "2026-10-03T09:00:30Z",
    "name": "Aminata Traoré",
    "greeting": "سلام عليكم",
    "place": "Ségou — Mali 🌍",
    "tags": ["a", "b"],
    "nested": {"n": 1, "items": [1.5, None, True, "ß"]},
}


def test_json_text_writes_uuids_and_times_as_strings_and_refuses_the_unknown():
    assert json_text({"id": _ID, "at": _AT}) == f'{{"id":"{_ID}","at":"2026-10-03T09:00:30Z"}}'
    with pytest.raises(TypeError):
        json_text({"x": object()})


async def test_json_and_jsonb_round_trip_through_the_codecs(db):
    echo = Statement("SELECT CAST(:b AS jsonb) AS b, CAST(:j AS json) AS j")
    # What the server reads: an object, not a string holding JSON, with the same characters.
    seen = Statement(
        "SELECT jsonb_typeof(CAST(:doc AS jsonb)) AS kind, "
        "CAST(:doc AS jsonb) ->> 'id' AS id, CAST(:doc AS jsonb) ->> 'at' AS at, "
        "CAST(:doc AS jsonb) ->> 'name' AS name, CAST(:doc AS jsonb) ->> 'greeting' AS greeting, "
        "CAST(:doc AS jsonb) ->> 'place' AS place"
    )
    async with db.transaction() as conn:
        row = await echo.fetchrow(conn, b=_DOCUMENT, j=_DOCUMENT)
        assert row["b"] == _AS_JSON and row["j"] == _AS_JSON
        assert await echo.fetchval(conn, b=[1, "ü", None], j=None) == [1, "ü", None]

        server = await seen.fetchrow(conn, doc=_DOCUMENT)
        assert dict(server) == {
            "kind": "object",
            "id": str(_ID),
            "at": "2026-10-03T09:00:30Z",
            "name": "Aminata Traoré",
            "greeting": "سلام عليكم",
            "place": "Ségou — Mali 🌍",
        }

        await conn.execute("CREATE TABLE public.documents (body jsonb, raw json)")
        await Statement("INSERT INTO public.documents VALUES (:body, :raw)").execute(
            conn, body=_DOCUMENT, raw=_DOCUMENT
        )
    async with db.connection() as conn:
        stored = await conn.fetchrow("SELECT body, raw FROM public.documents")
        by_name = await conn.fetchval(
            "SELECT count(*) FROM public.documents WHERE body ->> 'name' = $1", "Aminata Traoré"
        )
    assert stored["body"] == _AS_JSON and stored["raw"] == _AS_JSON
    assert by_name == 1


# --- Database: a unit of work, autocommit, and a pool that survives dropped connections -----


async def _ledger(db: Database) -> list[int]:
    async with db.connection() as conn:
        return [r["n"] for r in await conn.fetch("SELECT n FROM public.ledger ORDER BY n")]


@pytest.fixture
async def ledger(db: Database) -> None:
    async with db.transaction() as conn:
        await conn.execute("CREATE TABLE public.ledger (n int PRIMARY KEY)")


@pytest.mark.usefixtures("ledger")
async def test_a_transaction_commits_when_its_block_ends_and_rolls_back_when_it_raises(db):
    async with db.transaction() as conn:
        await conn.execute("INSERT INTO public.ledger VALUES (1)")
        await conn.execute("INSERT INTO public.ledger VALUES (2)")
        assert conn.is_in_transaction()
        assert await _ledger(db) == []  # another connection sees nothing before the commit
    assert await _ledger(db) == [1, 2]

    with pytest.raises(RuntimeError):
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO public.ledger VALUES (3)")
            raise RuntimeError("the unit of work fails")
    with pytest.raises(asyncpg.UniqueViolationError):
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO public.ledger VALUES (4)")
            await conn.execute("INSERT INTO public.ledger VALUES (1)")
    assert await _ledger(db) == [1, 2]

    async with db.transaction(isolation="serializable") as conn:
        assert await conn.fetchval("SHOW transaction_isolation") == "serializable"


@pytest.mark.usefixtures("ledger")
async def test_a_connection_commits_each_statement_on_its_own(db):
    async with db.connection() as conn:
        await conn.execute("INSERT INTO public.ledger VALUES (1)")
        assert not conn.is_in_transaction()
        assert await _ledger(db) == [1]  # another connection sees it at once
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("INSERT INTO public.ledger VALUES (2), (1)")
        await conn.execute("INSERT INTO public.ledger VALUES (3)")
    assert await _ledger(db) == [1, 3]


@pytest.mark.usefixtures("ledger")
async def test_a_connection_released_inside_a_transaction_is_rolled_back_and_keeps_no_lock(db):
    """A unit of work abandoned mid-way (its task cancelled, a transaction begun by hand)
    leaves nothing behind when its connection returns to the pool: no row, no lock."""
    async with db.connection() as conn:
        await conn.execute("BEGIN")
        await conn.execute("INSERT INTO public.ledger VALUES (1)")
        await conn.execute("LOCK TABLE public.ledger IN ACCESS EXCLUSIVE MODE")
    async with db.transaction() as conn:
        await conn.execute("SET LOCAL lock_timeout = '2s'")
        await conn.execute("INSERT INTO public.ledger VALUES (2)")
    assert await _ledger(db) == [2]


async def _terminate(settings: Settings, pids: set[int]) -> None:
    """End server processes from a connection outside the pool; wait until they are gone."""
    killer = await asyncpg.connect(plain_url(settings.require_database_url()))
    try:
        await killer.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM unnest($1::int[]) AS pid", list(pids)
        )
        left = await killer.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])", list(pids)
        )
        assert left == 0
    finally:
        await killer.close()


async def _until_running(settings: Settings, pid: int) -> None:
    """Wait until the server process `pid` runs a statement."""
    watcher = await asyncpg.connect(plain_url(settings.require_database_url()))
    try:
        for _ in range(500):
            state = await watcher.fetchval("SELECT state FROM pg_stat_activity WHERE pid = $1", pid)
            if state == "active":
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{pid} never ran its statement")
    finally:
        await watcher.close()


async def _works(db: Database, *, not_on: set[int]) -> None:
    async with db.connection() as conn:
        assert await conn.fetchval("SELECT 1") == 1
        assert conn.get_server_pid() not in not_on
    async with db.transaction() as conn:
        assert await conn.fetchval("SELECT 2") == 2


async def test_the_pool_works_again_after_the_server_drops_its_idle_connections(db, settings):
    async with AsyncExitStack() as stack:
        held = [await stack.enter_async_context(db.connection()) for _ in range(3)]
        pids = {conn.get_server_pid() for conn in held}
    assert len(pids) == 3

    await _terminate(settings, pids)
    for _ in range(4):
        await _works(db, not_on=pids)


async def test_a_statement_that_finds_its_connection_gone_renews_the_pool(db, settings):
    """The server ends a connection while a statement runs on it: the statement fails as a lost
    connection, and the pool replaces its other connections too (made before, as old)."""
    async with AsyncExitStack() as stack:
        idle = [await stack.enter_async_context(db.connection()) for _ in range(2)]
        pids = {conn.get_server_pid() for conn in idle}

    with pytest.raises(asyncpg.PostgresError) as lost:
        async with db.connection() as conn:
            pid = conn.get_server_pid()
            pids.add(pid)
            running = asyncio.ensure_future(conn.fetchval("SELECT pg_sleep(30)"))
            await _until_running(settings, pid)
            await _terminate(settings, {pid})
            await running
    assert lost_connection(lost.value), repr(lost.value)
    for _ in range(3):
        await _works(db, not_on=pids)


async def test_a_connection_dropped_between_two_statements_answers_503_and_the_pool_works(
    db, settings
):
    with pytest.raises(asyncpg.InterfaceError) as lost:
        async with db.connection() as conn:
            pid = conn.get_server_pid()
            await _terminate(settings, {pid})
            await conn.fetchval("SELECT 1")
    assert unexpected_error_response(lost.value).status_code == 503
    for _ in range(3):
        await _works(db, not_on={pid})
