"""The deadline sweeper: a referral still `requested` past its `deadline_at` expires.

Several sweepers may run at once: each claims due referrals with `FOR UPDATE SKIP LOCKED`
in a short transaction. The reconciler then routes the step to the next candidate.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from services.referrals.store import referrals as referral_store
from shared.db import Database
from shared.eventlog.consumer import wait_for_wake
from shared.eventlog.listener import Listener

log = structlog.get_logger("relais.referrals.sweeper")


@dataclass
class DeadlineSweeper:
    name: str = "referrals.deadline-sweeper"
    interval: float = 1.0
    batch_size: int = 100

    async def sweep_once(self, db: Database) -> int:
        """Expire one batch of overdue referrals; returns how many."""
        async with db.transaction() as conn:
            rows = await referral_store.lock_overdue(conn, limit=self.batch_size)
            for row in rows:
                await referral_store.set_status(
                    conn,
                    referral=row,
                    status="expired",
                    event_type="referral.expired",
                    actor="system",
                    reason="deadline_passed",
                )
        if rows:
            log.info("referrals_expired", count=len(rows))
        return len(rows)

    async def run(self, db: Database, listener: Listener, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                expired = await self.sweep_once(db)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                log.error("sweep_failed", error=type(exc).__name__)
                await wait_for_wake(stop, None, min(5.0, 0.5 * 2**failures))
                continue
            if expired < self.batch_size:
                await wait_for_wake(stop, None, self.interval)
