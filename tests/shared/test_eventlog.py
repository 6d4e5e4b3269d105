"""The shared event log: no skipped events under concurrent out-of-order commits, resumable
checkpoints, LISTEN/NOTIFY wake-ups, one active consumer per name."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest

from shared.db import Connection, Database
from shared.eventlog.append import append, append_many
from shared.eventlog.consumer import READ_BATCH, CheckpointMoved, Consumer
from shared.eventlog.listener import Listener
from shared.eventlog.model import Event
from shared.worker import XidRegressionError, check_xid_horizon


async def _append(conn: Connection, n: int = 1, tag: str = "t") -> list[Event]:
    return [
        await append(
            conn,
            type="partner.updated",
            source="/registry",
            subject=f"partners/{tag}",
            data={"tag": tag, "i": i},
            actor="admin",
        )
        for i in range(n)
    ]


class Recorder:
    """A consumer handler that records what it is handed, in order."""

    def __init__(self) -> None:
        self.seen: list[Event] = []
        self.arrived = asyncio.Event()

    async def __call__(self, _conn: Connection, events: Sequence[Event]) -> None:
        self.seen.extend(events)
        self.arrived.set()


async def _wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def consuming(database_url: str, consumer: Consumer, db: Database) -> AsyncIterator[None]:
    """Run `consumer` in the background, as a worker process would, with its own listener."""
    listener = Listener(database_url)
    await listener.start()
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(db, listener, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
        await listener.stop()


async def _all_events(db: Database) -> list[tuple[int, int]]:
    async with db.connection() as conn:
        rows = await conn.fetch("SELECT tx, seq FROM hub.events ORDER BY tx, seq")
    return [(int(r["tx"]), r["seq"]) for r in rows]


async def _readable(db: Database, n: int) -> None:
    """Wait until `n` events are below the visibility horizon, which any transaction open on
    the server (in another database too: xids are the cluster's) holds back."""
    horizon = "SELECT count(*) FROM hub.events WHERE tx < pg_snapshot_xmin(pg_current_snapshot())"
    deadline = time.monotonic() + 20
    while True:
        async with db.connection() as conn:
            if await conn.fetchval(horizon) >= n:
                return
        assert time.monotonic() < deadline, "the events never became readable"
        await asyncio.sleep(0.01)


async def test_concurrent_out_of_order_commits_never_make_a_consumer_skip(settings, db):
    """Twelve writers: some take their xid early by writing another table, some hold their
    transaction open while later ones commit, one rolls back. A consumer running all along
    sees every committed event once, in (tx, seq) order; naive tail readers do skip."""
    async with db.transaction() as conn:
        await conn.execute("CREATE TABLE public.scratch (id serial PRIMARY KEY, note text)")

    recorder = Recorder()
    consumer = Consumer("test-skip", recorder, batch_size=7, poll_interval=0.2)

    naive_seq: list[int] = []  # tails by seq alone
    naive_txseq: list[tuple[int, int]] = []  # tails by (tx, seq) without the horizon
    stop_naive = asyncio.Event()

    async def naive_readers() -> None:
        last_seq, last_pos = 0, (0, 0)
        while not stop_naive.is_set():
            async with db.connection() as conn:
                rows = await conn.fetch(
                    "SELECT seq FROM hub.events WHERE seq > $1 ORDER BY seq", last_seq
                )
                for r in rows:
                    naive_seq.append(r["seq"])
                    last_seq = r["seq"]
                rows = await conn.fetch(
                    "SELECT tx, seq FROM hub.events "
                    "WHERE (tx, seq) > (CAST($1 AS xid8), $2) ORDER BY tx, seq",
                    last_pos[0],
                    last_pos[1],
                )
                for r in rows:
                    last_pos = (int(r["tx"]), r["seq"])
                    naive_txseq.append(last_pos)
            await asyncio.sleep(0.005)

    early_started = asyncio.Event()
    late_committed = asyncio.Event()
    committed_ids: set = set()
    quick_seqs: list[int] = []
    rolled_back_ids: set = set()

    async def early_writer(i: int) -> None:
        """Takes its xid first (writes elsewhere), appends after others, commits last."""
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO public.scratch (note) VALUES ($1)", f"early {i}")
            early_started.set()
            await late_committed.wait()
            events = await _append(conn, 3, f"early-{i}")
        committed_ids.update(e.id for e in events)

    async def held_writer(i: int) -> None:
        """Appends first (low seq), then stays open while later writers commit."""
        async with db.transaction() as conn:
            events = await _append(conn, 2, f"held-{i}")
            await late_committed.wait()
            await asyncio.sleep(random.uniform(0, 0.05))
        committed_ids.update(e.id for e in events)

    async def quick_writer(i: int) -> None:
        await early_started.wait()
        async with db.transaction() as conn:
            events = await _append(conn, 2, f"quick-{i}")
            quick_seqs.extend(e.seq for e in events)
            await asyncio.sleep(random.uniform(0, 0.03))
        committed_ids.update(e.id for e in events)

    async def aborting_writer() -> None:
        await early_started.wait()
        async with db.connection() as conn:
            transaction = conn.transaction()
            await transaction.start()
            events = await _append(conn, 2, "aborted")
            rolled_back_ids.update(e.id for e in events)
            await transaction.rollback()

    async with consuming(settings.database_url, consumer, db):
        readers = asyncio.create_task(naive_readers())
        early = [asyncio.create_task(early_writer(i)) for i in range(3)]
        held = [asyncio.create_task(held_writer(i)) for i in range(3)]
        await asyncio.sleep(0.05)
        quick = [asyncio.create_task(quick_writer(i)) for i in range(5)]
        await asyncio.gather(*quick, aborting_writer())
        # Let the readers see the quick writers' events before the older transactions commit.
        last_quick = max(quick_seqs)
        await _wait_for(lambda: bool(naive_seq) and max(naive_seq) >= last_quick)
        await _wait_for(lambda: bool(naive_txseq) and max(s for _, s in naive_txseq) >= last_quick)
        late_committed.set()
        await asyncio.gather(*early, *held)
        await _wait_for(lambda: len({e.id for e in recorder.seen}) >= len(committed_ids))
        await asyncio.sleep(0.3)  # anything extra (a duplicate, an aborted event) would show
        stop_naive.set()
        await readers

    assert len(committed_ids) == 3 * 3 + 3 * 2 + 5 * 2
    seen_ids = [e.id for e in recorder.seen]
    assert len(seen_ids) == len(set(seen_ids)), "an event was handed over twice"
    assert set(seen_ids) == committed_ids
    assert not rolled_back_ids & set(seen_ids)
    assert [(e.tx, e.seq) for e in recorder.seen] == await _all_events(db)
    # The scenario is a real hazard: readers without the horizon missed events.
    assert len(set(naive_seq)) < len(committed_ids)
    assert len(set(naive_txseq)) < len(committed_ids)


async def test_a_failed_batch_changes_nothing_and_the_next_run_resumes(db):
    async with db.transaction() as conn:
        await conn.execute("CREATE TABLE public.effects (event_id uuid PRIMARY KEY)")
        appended = await _append(conn, 25)

    async def crashing(conn: Connection, events: Sequence[Event]) -> None:
        for n, event in enumerate(events):
            if n == 5:
                raise RuntimeError("killed mid-batch")
            await conn.execute("INSERT INTO public.effects VALUES ($1)", event.id)

    async def effecting(conn: Connection, events: Sequence[Event]) -> None:
        for event in events:
            await conn.execute("INSERT INTO public.effects VALUES ($1)", event.id)

    await _readable(db, len(appended))
    first = Consumer("test-resume", crashing, batch_size=10)
    await first.ensure_checkpoint(db)
    with pytest.raises(RuntimeError):
        await first.run_once(db)
    async with db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM public.effects") == 0
        cp = await conn.fetchval(
            "SELECT seq FROM hub.consumer_checkpoints WHERE name = 'test-resume'"
        )
        assert cp == 0

    second = Consumer("test-resume", effecting, batch_size=10)
    handled = [await second.run_once(db) for _ in range(4)]
    assert [h for h, _ in handled] == [10, 10, 5, 0]
    async with db.connection() as conn:
        rows = await conn.fetch("SELECT event_id FROM public.effects")
        assert {r["event_id"] for r in rows} == {e.id for e in appended}


async def test_batches_the_handler_does_not_want_are_passed_over_and_saved_later(db):
    async def checkpoint() -> tuple[int, int]:
        async with db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT seq, events_processed FROM hub.consumer_checkpoints "
                "WHERE name = 'test-unwanted'"
            )
        return row["seq"], row["events_processed"]

    async with db.transaction() as conn:
        unwanted = await _append(conn, 4, "unwanted")
    await _readable(db, len(unwanted))
    recorder = Recorder()
    consumer = Consumer(
        "test-unwanted", recorder, wants=lambda e: e.subject == "partners/wanted", save_after=60
    )
    await consumer.ensure_checkpoint(db)
    assert await consumer.run_once(db) == (4, False)
    assert recorder.seen == []
    assert await checkpoint() == (0, 0)  # not written yet: a restart would read them again
    assert await consumer.run_once(db) == (0, False)  # and this instance goes on after them

    async with db.transaction() as conn:
        wanted = await _append(conn, 2, "wanted")
    await _readable(db, 6)
    assert await consumer.run_once(db) == (2, False)
    assert recorder.seen == wanted
    assert await checkpoint() == (wanted[-1].seq, 6)  # with the handler's batch

    async with db.transaction() as conn:
        more = await _append(conn, 3, "unwanted")
    await _readable(db, 9)
    assert await consumer.run_once(db) == (3, False)
    await consumer.save_position(db)  # what the running consumer does within `save_after`
    assert await checkpoint() == (more[-1].seq, 9)
    assert recorder.seen == wanted


async def test_a_batch_the_handler_wrote_nothing_for_commits_without_the_checkpoint(db):
    seen: list[Event] = []

    async def read_only(_conn: Connection, events: Sequence[Event]) -> bool:
        seen.extend(events)
        return False

    async with db.transaction() as conn:
        appended = await _append(conn, 2, "nothing-to-write")
    await _readable(db, 2)
    consumer = Consumer("test-read-only", read_only, save_after=60)
    await consumer.ensure_checkpoint(db)
    assert await consumer.run_once(db) == (2, False)
    assert seen == appended
    assert await consumer.run_once(db) == (0, False)  # not handed over twice
    async with db.connection() as conn:
        query = "SELECT seq FROM hub.consumer_checkpoints WHERE name = 'test-read-only'"
        assert await conn.fetchval(query) == 0
        await consumer.save_position(db)
        assert await conn.fetchval(query) == appended[-1].seq


async def test_a_consumers_read_stays_on_the_index_whatever_the_size_of_the_log(db):
    """A wake's read must not scan the log: checked on its generic plan (the plan a pooled
    connection keeps) over a log of 50,000 events, reading from the start and the middle."""
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO hub.events (id, tx, type, source, subject, actor, data) "
            "SELECT gen_random_uuid(), CAST(CAST(g AS text) AS xid8), 'partner.updated', "
            "'/registry', 'partners/x', 'admin', '{}' FROM generate_series(1, 50000) AS g"
        )
    async with db.connection() as conn:
        await conn.execute("ANALYZE hub.events")
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        try:
            await conn.execute(f"PREPARE read_batch AS {READ_BATCH.sql}")
            for tx, seq in ((0, 0), (25000, 0)):
                values = {"tx": f"'{tx}'", "seq": str(seq), "limit": "200"}
                arguments = ", ".join(values[name] for name in READ_BATCH.names)
                plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE read_batch({arguments})")
                assert "Seq Scan" not in json.dumps(plan), plan
        finally:
            await conn.execute("DEALLOCATE ALL")
            await conn.execute("RESET plan_cache_mode")


class Batches:
    """A consumer handler that records the tags of each batch it is handed."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    async def __call__(self, _conn: Connection, events: Sequence[Event]) -> None:
        self.batches.append([e.data["tag"] for e in events])


async def test_a_lingering_consumer_takes_what_commits_meanwhile_in_one_batch(settings, db):
    """Under load (a batch handled a moment ago) the consumer waits `linger` after a
    notification, and the batch holds what committed meanwhile; after a quiet spell it reads
    at once."""
    handler = Batches()
    consumer = Consumer("test-linger", handler, poll_interval=10.0, linger=0.3)

    async def one(tag: str) -> None:
        async with db.transaction() as conn:
            await _append(conn, 1, tag)

    async with consuming(settings.database_url, consumer, db):
        await asyncio.sleep(0.3)
        await one("a")
        await _wait_for(lambda: len(handler.batches) == 1)
        await one("b")  # a batch a moment ago: under load
        await asyncio.sleep(0.05)
        await one("c")
        await _wait_for(lambda: len(handler.batches) == 2)
        await asyncio.sleep(1.2)  # a quiet spell, longer than three lingers
        await one("d")
        await asyncio.sleep(0.2)  # within the linger, had the consumer waited
        await one("e")
        await _wait_for(lambda: sum(len(b) for b in handler.batches) == 5)
    assert handler.batches == [["a"], ["b", "c"], ["d"], ["e"]]


async def test_a_running_consumer_saves_what_it_passed_over_within_save_after(settings, db):
    consumer = Consumer(
        "test-saved", Recorder(), wants=lambda e: False, poll_interval=10.0, save_after=0.2
    )
    async with consuming(settings.database_url, consumer, db):
        await asyncio.sleep(0.3)
        async with db.transaction() as conn:
            appended = await _append(conn, 3, "unwanted")

        async def saved() -> int:
            async with db.connection() as conn:
                return await conn.fetchval(
                    "SELECT seq FROM hub.consumer_checkpoints WHERE name = 'test-saved'"
                )

        deadline = time.monotonic() + 5  # far below the 10-s poll
        while await saved() != appended[-1].seq:
            assert time.monotonic() < deadline, "the position was never saved"
            await asyncio.sleep(0.02)


async def test_a_position_gone_stale_rolls_its_batch_back_and_is_read_again(db):
    """Two instances of one consumer that both ran (a takeover): the one whose position in
    memory is stale handles nothing twice."""
    async with db.transaction() as conn:
        await conn.execute("CREATE TABLE public.effects (event_id uuid)  -- a duplicate would stay")
        first_events = await _append(conn, 3, "first")
    await _readable(db, 3)

    async def effecting(conn: Connection, events: Sequence[Event]) -> None:
        for event in events:
            await conn.execute("INSERT INTO public.effects VALUES ($1)", event.id)

    stale = Consumer("test-stale", effecting)
    await stale.ensure_checkpoint(db)
    assert await stale.run_once(db) == (3, False)
    async with db.transaction() as conn:
        second_events = await _append(conn, 2, "second")
    await _readable(db, 5)
    other = Consumer("test-stale", effecting)
    assert await other.run_once(db) == (2, False)  # the other instance moved on meanwhile
    async with db.transaction() as conn:
        third_events = await _append(conn, 1, "third")
    await _readable(db, 6)
    # `stale` still holds the position after the first batch: it reads the second batch
    # again, and its checkpoint update finds the checkpoint moved.
    with pytest.raises(CheckpointMoved):
        await stale.run_once(db)
    assert await stale.run_once(db) == (1, False)
    async with db.connection() as conn:
        rows = [r["event_id"] for r in await conn.fetch("SELECT event_id FROM public.effects")]
    assert sorted(rows) == sorted(e.id for e in first_events + second_events + third_events)


async def test_a_read_says_when_committed_events_wait_behind_an_open_transaction(db):
    """An event committed after an older transaction took its xid is above the horizon:
    the read hands nothing over yet, and says so, so that the consumer re-reads soon."""
    async with db.transaction() as conn:
        await conn.execute("CREATE TABLE public.scratch (id serial PRIMARY KEY)")
    consumer = Consumer("test-above", Recorder())
    await consumer.ensure_checkpoint(db)
    assert await consumer.run_once(db) == (0, False)
    async with db.connection() as older:
        transaction = older.transaction()
        await transaction.start()
        await older.execute("INSERT INTO public.scratch DEFAULT VALUES")  # takes an xid
        async with db.transaction() as conn:
            appended = await _append(conn, 1, "behind")
        assert await consumer.run_once(db) == (0, True)
        await transaction.commit()
    await _readable(db, 1)
    assert await consumer.run_once(db) == (1, False)
    assert [e.id for e in consumer.handler.seen] == [appended[0].id]


async def test_a_committed_event_wakes_a_waiting_consumer_long_before_the_next_poll(settings, db):
    recorder = Recorder()
    poll = 10.0
    consumer = Consumer("test-wake", recorder, poll_interval=poll)
    async with consuming(settings.database_url, consumer, db):
        await asyncio.sleep(0.5)  # the consumer has read the empty log and now waits
        delays = []
        for round_ in range(3):
            recorder.arrived.clear()
            async with db.transaction() as conn:
                await _append(conn, 1, f"wake-{round_}")
            committed = time.perf_counter()
            await asyncio.wait_for(recorder.arrived.wait(), timeout=poll / 2)
            delays.append(time.perf_counter() - committed)
    assert len(recorder.seen) == 3
    # Polling alone would take up to 10 s; a NOTIFY wake-up takes milliseconds.
    assert max(delays) < poll / 10, delays


async def test_two_consumers_of_one_name_never_both_process(settings, db):
    """Replicas of a consumer: one holds the advisory lock, the other stands by and takes
    over when the first stops; every event is handled exactly once."""
    first, second = Recorder(), Recorder()
    a = Consumer("test-replicas", first, batch_size=5, poll_interval=0.1)
    b = Consumer("test-replicas", second, batch_size=5, poll_interval=0.1)
    async with consuming(settings.database_url, a, db):
        async with consuming(settings.database_url, b, db):
            await asyncio.sleep(0.3)
            async with db.transaction() as conn:
                await _append(conn, 20, "batch-1")
            await _wait_for(lambda: len(first.seen) + len(second.seen) >= 20)
            await asyncio.sleep(0.3)
            assert (len(first.seen), len(second.seen)) in {(20, 0), (0, 20)}
            active, standby = (first, second) if first.seen else (second, first)
        # Whichever was stopped, write more: the remaining one must take them.
        async with db.transaction() as conn:
            await _append(conn, 10, "batch-2")
        await _wait_for(lambda: len(first.seen) + len(second.seen) >= 30)
    ids = [e.id for e in first.seen + second.seen]
    assert len(ids) == len(set(ids)) == 30
    del active, standby


async def test_workers_refuse_a_log_from_the_future(db):
    """After a restore into a cluster with lower xids, consumers would skip: refuse instead."""
    await check_xid_horizon(db)  # a normal log passes
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO hub.events (id, tx, type, source, subject, actor, data) VALUES "
            "(gen_random_uuid(), '9000000000'::xid8, 'partner.updated', '/registry', "
            "'partners/x', 'admin', '{}')"
        )
    with pytest.raises(XidRegressionError, match="Rebase"):
        await check_xid_horizon(db)


async def test_a_consumer_killed_mid_batch_resumes_from_its_checkpoint_and_loses_nothing(
    settings, db
):
    async with db.transaction() as conn:
        await conn.execute("CREATE TABLE public.effects (event_id uuid PRIMARY KEY)")
        appended = await _append(conn, 300, "kill")

    async def effects() -> int:
        async with db.connection() as conn:
            return await conn.fetchval("SELECT count(*) FROM public.effects")

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.shared.consumer_process", settings.database_url],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    process = start()
    try:
        deadline = time.monotonic() + 30
        while await effects() < 60:
            assert time.monotonic() < deadline, "the consumer process made no progress"
            await asyncio.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        done_at_kill = await effects()
        assert done_at_kill < 300
        assert done_at_kill % 20 == 0, "only whole batches commit"

        process = start()
        deadline = time.monotonic() + 60
        while await effects() < 300:
            assert time.monotonic() < deadline, "the restarted consumer did not finish"
            await asyncio.sleep(0.05)
    finally:
        process.kill()
        process.wait(timeout=10)

    async with db.connection() as conn:
        rows = {r["event_id"] for r in await conn.fetch("SELECT event_id FROM public.effects")}
        position = await conn.fetchrow(
            "SELECT seq, events_processed FROM hub.consumer_checkpoints WHERE name = 'test-kill'"
        )
    assert rows == {e.id for e in appended}
    assert position["seq"] == appended[-1].seq
    assert position["events_processed"] == 300


async def test_append_many_writes_one_statement_in_the_order_given(db):
    drafts = [
        {
            "type": "partner.updated",
            "source": "/registry",
            "subject": f"partners/{i}",
            "data": {"i": i},
            "actor": "admin",
        }
        for i in range(120)
    ]
    statements: list[str] = []
    async with db.transaction() as conn:
        # asyncpg looks an array type up in the catalogue once per connection, at its first
        # use: done before counting, as on a connection the pool has already used.
        await conn.fetchval("SELECT NULL::uuid[]")
        with conn.query_logger(lambda logged: statements.append(logged.query)):
            appended = await append_many(conn, drafts)
    assert [e.data["i"] for e in appended] == list(range(120))
    assert [e.seq for e in appended] == sorted(e.seq for e in appended)
    assert len({e.tx for e in appended}) == 1
    assert len(statements) == 1 and statements[0].startswith("INSERT INTO hub.events")
    async with db.connection() as conn:
        stored = await conn.fetch(
            "SELECT data FROM hub.events WHERE type = 'partner.updated' ORDER BY tx, seq"
        )
        assert [r["data"]["i"] for r in stored] == list(range(120))
    with pytest.raises(ValueError):
        async with db.transaction() as conn:
            await append_many(conn, [{**drafts[0], "source": "/elsewhere"}])
