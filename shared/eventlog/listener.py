"""One dedicated connection per process, outside the pool: LISTEN for wake-ups, hold locks.

The connection LISTENs on `hub_events` and wakes every subscriber of the process at each
notification. It also holds the per-consumer advisory locks: a lock lives as long as its
connection, so when a process dies its locks go with it and a standby takes over. When the
connection is lost, `generation` changes and every lock must be taken again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib

import asyncpg
import structlog

from shared.db import plain_url
from shared.eventlog.append import NOTIFY_CHANNEL

log = structlog.get_logger("relais.listener")

KEEPALIVE_SECONDS = 5.0


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for a name."""
    return int.from_bytes(
        hashlib.sha256(f"relais:{name}".encode()).digest()[:8], "big", signed=True
    )


class Listener:
    """The process's LISTEN connection and the advisory locks held on it."""

    def __init__(
        self,
        database_url: str,
        *,
        application_name: str = "relais-listener",
        channels: tuple[str, ...] = (NOTIFY_CHANNEL,),
    ) -> None:
        self._dsn = plain_url(database_url)
        self._application_name = application_name
        self._channels = channels
        self._conn: asyncpg.Connection | None = None
        self._conn_lock = asyncio.Lock()
        self._subscribers: dict[str, set[asyncio.Event]] = {c: set() for c in channels}
        self._held: set[int] = set()
        self._task: asyncio.Task[None] | None = None
        self.generation = 0
        self.connected = asyncio.Event()

    def subscribe(self, channel: str = NOTIFY_CHANNEL) -> asyncio.Event:
        """A flag set at every notification on `channel` (and at every reconnection)."""
        flag = asyncio.Event()
        self._subscribers.setdefault(channel, set()).add(flag)
        return flag

    def unsubscribe(self, flag: asyncio.Event) -> None:
        for flags in self._subscribers.values():
            flags.discard(flag)

    def wake_all(self, channel: str | None = None) -> None:
        """Set the flags of one channel's subscribers (all channels' when None); also used
        in-process to wake a worker without a round trip through PostgreSQL."""
        for name, flags in self._subscribers.items():
            if channel is None or name == channel:
                for flag in flags:
                    flag.set()

    def _on_notify(self, _conn: object, _pid: int, channel: str, _payload: str) -> None:
        self.wake_all(channel)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="relais-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._close()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        self.connected.clear()
        self._held.clear()
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=2)
            conn.terminate()

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(
                    self._dsn,
                    timeout=10,
                    server_settings={"application_name": self._application_name},
                )
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                for channel in self._channels:
                    await conn.add_listener(channel, self._on_notify)
                self._conn = conn
                self.generation += 1
                self.connected.set()
                backoff = 0.1
                log.info("listener_connected", generation=self.generation)
                # Events may have been appended while no one listened.
                self.wake_all()
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), timeout=KEEPALIVE_SECONDS)
                    if not lost.is_set():
                        async with self._conn_lock:
                            await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout=5)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection refused, reset, timeout, server restart
                log.warning("listener_disconnected", error=type(exc).__name__)
            finally:
                await self._close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def hold(self, name: str) -> bool:
        """Take (or confirm) the advisory lock for `name`; False if another process holds it."""
        key = lock_key(name)
        if key in self._held and self._conn is not None:
            return True
        conn = self._conn
        if conn is None:
            return False
        try:
            async with self._conn_lock:
                got = await asyncio.wait_for(
                    conn.fetchval("SELECT pg_try_advisory_lock($1)", key), timeout=5
                )
        except Exception:
            return False
        if got and conn is self._conn:
            self._held.add(key)
            return True
        return False

    async def release(self, name: str) -> None:
        key = lock_key(name)
        if key not in self._held or self._conn is None:
            return
        self._held.discard(key)
        with contextlib.suppress(Exception):
            async with self._conn_lock:
                await self._conn.fetchval("SELECT pg_advisory_unlock($1)", key)
