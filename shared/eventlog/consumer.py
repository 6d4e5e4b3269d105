"""Reading the event log without skipping: below the visibility horizon, in (tx, seq) order.

Neither `seq` nor `tx` alone is commit order. A transaction takes its xid at its first write
and its `seq` when it appends, so a reader tailing by `seq` skips events whose transaction
commits after a later one. Every event whose `tx` is below `pg_snapshot_xmin` of the
reader's snapshot belongs to a finished transaction, and no transaction still running can
ever append below it; reading `(tx, seq) > checkpoint` under that horizon therefore sees
every committed event exactly in the order the checkpoint advances.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from shared.db import Connection, Database, Statement
from shared.eventlog.listener import Listener
from shared.eventlog.model import Event
from shared.observability import Metrics

log = structlog.get_logger("relais.consumer")

# A handler applies a batch in the consumer's transaction. It may return False to say it
# wrote nothing: the checkpoint then moves with a later batch, as for a batch it does not want.
Handler = Callable[[Connection, Sequence[Event]], Awaitable[bool | None]]


class Worker(Protocol):
    """What a service runs beside its API: a log consumer or a periodic sweeper."""

    name: str

    async def run(self, db: Database, listener: Listener, stop: asyncio.Event) -> None: ...


# One read per wake: the readable events after a position (below the horizon, in order) and,
# in the same statement, whether any event after it is above the horizon (committed or not
# yet readable). The second part is one probe of the (tx, seq) index; the caller re-reads
# soon when it is true instead of waiting for the next notification. Its ORDER BY keeps it
# on the index in a generic plan too: without it, LIMIT 1 makes a sequential scan look
# cheap, and it reads the whole log when no event is above the horizon (the usual case).
READ_BATCH = Statement(
    """
    WITH horizon AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin)
    (SELECT seq, id, tx, type, source, subject, time, actor, audience,
            correlation_id, causation_id, data, false AS above
     FROM hub.events
     WHERE tx < (SELECT xmin FROM horizon)
       AND (tx, seq) > (CAST(:tx AS xid8), :seq)
     ORDER BY tx, seq
     LIMIT :limit)
    UNION ALL
    (SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, true
     FROM hub.events
     WHERE tx >= (SELECT xmin FROM horizon)
       AND (tx, seq) > (CAST(:tx AS xid8), :seq)
     ORDER BY tx, seq
     LIMIT 1)
    """
)


_ENSURE = Statement(
    "INSERT INTO hub.consumer_checkpoints (name) VALUES (:name) ON CONFLICT (name) DO NOTHING"
)
_CHECKPOINT = Statement("SELECT tx, seq FROM hub.consumer_checkpoints WHERE name = :name")
_ADVANCE = Statement(
    "UPDATE hub.consumer_checkpoints "
    "SET tx = CAST(:new_tx AS xid8), seq = :new_seq, "
    "    events_processed = events_processed + :n, updated_at = now() "
    "WHERE name = :name AND tx = CAST(:tx AS xid8) AND seq = :seq"
)


async def read_batch(
    conn: Connection, *, tx: int, seq: int, limit: int
) -> tuple[list[Event], bool]:
    """The committed events after (tx, seq) that can be read without skipping one, oldest
    first, and whether events exist after the position above the horizon (not readable yet)."""
    events: list[Event] = []
    above = False
    for row in await READ_BATCH.fetch(conn, tx=tx, seq=seq, limit=limit):
        if row["above"]:
            above = True
        else:
            events.append(Event.from_row(row))
    events.sort(key=lambda e: (e.tx, e.seq))  # already in order: kept so whatever the plan
    return events, above


class CheckpointMoved(RuntimeError):
    """Another instance advanced this consumer's checkpoint: this batch is rolled back."""


def every_event(event: Event) -> bool:
    """The default of `Consumer.wants`: a handler that takes every event."""
    return True


LINGER_WINDOW = 3  # a batch within this many lingers: under load


@dataclass
class Consumer:
    """A named reader of the log whose effects and checkpoint commit together.

    A wake costs one statement when there is nothing to do: the read of the batch, which
    also says whether events wait above the horizon. The consumer keeps its position in
    memory while it holds its lock; the checkpoint's update is guarded by the position it
    moves from, so a position gone stale (another instance ran meanwhile) rolls the batch
    back and the position is read again. A batch with no event the handler `wants` is
    passed over without a statement, and one in which the handler wrote nothing (it returned
    False) commits without the checkpoint: the checkpoint moves past them with the next
    batch the handler writes, or within `save_after` seconds (`save_position`); a restart in
    between reads them again, and does nothing with them.
    """

    name: str
    handler: Handler
    batch_size: int = 200
    poll_interval: float = 1.0
    metrics: Metrics | None = None
    wants: Callable[[Event], bool] = every_event
    save_after: float = 1.0
    # Under load, wait this long after a notification before reading, so that the batch
    # holds what commits meanwhile: what a batch costs is paid once for several cases, and
    # the consumers downstream get the bigger batches too. "Under load" is a batch handled
    # within the last `LINGER_WINDOW` lingers; a notification after a quiet spell is read at
    # once, so the lone case pays nothing.
    linger: float = 0.0
    _last_batch: float = field(default=0.0, init=False)
    _failures: int = field(default=0, init=False)
    # Where the checkpoint is (as this instance last read or wrote it), and how far the
    # batches passed over since go; None: read the checkpoint first.
    _saved: tuple[int, int] | None = field(default=None, init=False)
    _position: tuple[int, int] | None = field(default=None, init=False)
    _unsaved: int = field(default=0, init=False)  # events read since `_saved`
    _unsaved_since: float | None = field(default=None, init=False)

    async def ensure_checkpoint(self, db: Database) -> None:
        async with db.transaction() as conn:
            await _ENSURE.execute(conn, name=self.name)

    def forget_position(self) -> None:
        """Read the checkpoint again before the next batch (after a failure or a takeover)."""
        self._saved = self._position = self._unsaved_since = None
        self._unsaved = 0

    async def run_once(self, db: Database) -> tuple[int, bool]:
        """Process one batch. Returns (events read, more events may be readable soon): the
        batch was full, or events wait above the horizon."""
        try:
            return await self._run_once(db)
        except BaseException:
            self.forget_position()
            raise

    async def save_position(self, db: Database) -> None:
        """Write the position of the batches passed over, if any."""
        if self._saved is None or self._position is None or self._position == self._saved:
            return
        try:
            async with db.connection() as conn:
                await self._advance(conn, self._position)
        except BaseException:
            self.forget_position()
            raise

    def _save_due(self) -> bool:
        since = self._unsaved_since
        return since is not None and time.monotonic() - since >= self.save_after

    async def _advance(self, conn: Connection, to: tuple[int, int]) -> None:
        assert self._saved is not None
        moved = await _ADVANCE.execute(
            conn,
            name=self.name,
            new_tx=to[0],
            new_seq=to[1],
            n=self._unsaved,
            tx=self._saved[0],
            seq=self._saved[1],
        )
        if moved != 1:
            raise CheckpointMoved(self.name)
        self._saved = self._position = to
        self._unsaved = 0
        self._unsaved_since = None

    async def _run_once(self, db: Database) -> tuple[int, bool]:
        # One pooled connection: the read on its own, then the batch's transaction.
        async with db.connection() as conn:
            if self._saved is None:
                cp = await _CHECKPOINT.fetchrow(conn, name=self.name)
                if cp is None:
                    raise LookupError(f"no checkpoint named {self.name!r}")
                self._saved = self._position = (int(cp["tx"]), cp["seq"])
            assert self._position is not None
            tx, seq = self._position
            batch, above = await read_batch(conn, tx=tx, seq=seq, limit=self.batch_size)
            if not batch:
                return 0, above
            self._last_batch = time.monotonic()
            last = batch[-1]
            self._unsaved += len(batch)
            wrote: bool | None = False
            if any(self.wants(event) for event in batch):
                async with conn.transaction():
                    wrote = await self.handler(conn, batch)
                    if wrote is not False:
                        await self._advance(conn, (last.tx, last.seq))
        if wrote is False:  # passed over: nothing to commit with the position
            self._position = (last.tx, last.seq)
            if self._unsaved_since is None:
                self._unsaved_since = time.monotonic()
            if self._save_due():
                await self.save_position(db)
        if self.metrics is not None:
            self.metrics.consumer_events.labels(self.name).inc(len(batch))
            self.metrics.consumer_position.labels(self.name).set(last.seq)
        return len(batch), above or len(batch) == self.batch_size

    async def run(self, db: Database, listener: Listener, stop: asyncio.Event) -> None:
        """Run until `stop`: wake on NOTIFY, poll as a fallback, stand by without the lock."""
        wake = listener.subscribe()
        try:
            await self._loop(db, listener, stop, wake)
        finally:
            listener.unsubscribe(wake)
            with contextlib.suppress(Exception):  # what was passed over, while still the holder
                await self.save_position(db)
            await listener.release(self.name)

    async def _loop(
        self,
        db: Database,
        listener: Listener,
        stop: asyncio.Event,
        wake: asyncio.Event,
    ) -> None:
        checkpoint_ready = False
        generation: int | None = None  # the listener connection the lock was taken on
        backoff_ms = 5.0
        while not stop.is_set():
            if not await listener.hold(self.name):
                generation = None
                await wait_for_wake(stop, wake, self.poll_interval)  # standby
                continue
            if generation != listener.generation:
                # The lock was (re)taken: another instance may have run meanwhile.
                generation = listener.generation
                self.forget_position()
            wake.clear()
            try:
                if not checkpoint_ready:
                    await self.ensure_checkpoint(db)
                    checkpoint_ready = True
                handled, more = await self.run_once(db)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failures += 1
                delay = min(5.0, 0.2 * 2 ** min(self._failures, 8))
                log.error(
                    "consumer_batch_failed",
                    consumer=self.name,
                    error=type(exc).__name__,
                    detail=str(exc)[:300],
                    retry_in_s=round(delay, 2),
                    exc_info=not isinstance(exc, (OSError, CheckpointMoved)),
                )
                if self.metrics is not None:
                    self.metrics.consumer_failures.labels(self.name).inc()
                await wait_for_wake(stop, None, delay)
                continue
            self._failures = 0
            if handled and more:
                backoff_ms = 5.0
                continue  # a full batch: read on at once
            if more and backoff_ms <= 50.0:
                # Committed but not yet readable: an older transaction is still open, so
                # the horizon has not passed these events. Re-read soon, not at the next poll.
                await wait_for_wake(stop, None, backoff_ms / 1000 * random.uniform(0.8, 1.2))
                backoff_ms *= 2
                continue
            # All that was readable is done: what commits later notifies (and the poll
            # is the fallback). Batches passed over are saved within `save_after`.
            backoff_ms = 5.0
            since = self._unsaved_since
            if since is None:
                await wait_for_wake(stop, wake, self.poll_interval)
            else:
                left = self.save_after - (time.monotonic() - since)
                await wait_for_wake(stop, wake, min(self.poll_interval, left))
                if stop.is_set() or self._save_due():
                    with contextlib.suppress(Exception):  # a failure forgets; the next batch says
                        await self.save_position(db)
            if self._lingers(wake):
                await wait_for_wake(stop, None, self.linger)

    def _lingers(self, wake: asyncio.Event) -> bool:
        """Whether to wait `linger` before the read a notification asks for."""
        if not self.linger or not wake.is_set():
            return False
        return time.monotonic() - self._last_batch < self.linger * LINGER_WINDOW


async def wait_for_wake(stop: asyncio.Event, wake: asyncio.Event | None, seconds: float) -> None:
    """Sleep up to `seconds`, returning early when `stop` or `wake` is set."""
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
