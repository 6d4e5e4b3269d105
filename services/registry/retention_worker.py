"""The retention worker (SPEC 9): with `RELAIS_RETENTION_DAYS` set, once every
`RELAIS_RETENTION_INTERVAL_SECONDS` (a day by default), it erases the cases closed for
longer than that many days, the selection `GET /retention/preview` shows.

Each run reads as claim -> erase -> commit, one case per transaction: a case is claimed
`FOR UPDATE SKIP LOCKED` (two registry replicas never take the same one; each goes on with
the next) and erased in the same transaction, so that a crash leaves every case either
erased or still selected for the next run. A case whose erasure fails is logged and left
for the next run. The log names counts and case ids, never personal data.

The erasure itself is `case_actions.erase_case(conn, *, case, reason, caller)` with no
caller (the access log records the worker's erasures without a key); it is a parameter so
that a test can give its own."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import structlog

from services.registry.case_actions import erase_case
from services.registry.store import retention as retention_store
from shared.db import Database
from shared.eventlog.consumer import wait_for_wake
from shared.eventlog.listener import Listener

log = structlog.get_logger("relais.registry.retention")

NAME = "retention"
Erase = Callable[..., Awaitable[Any]]


def reason_for(days: int) -> str:
    """The erasure reason the worker records."""
    return f"retention: closed for more than {days} days"


@dataclass
class RetentionWorker:
    """Erases the cases past the retention period, once per interval, while it runs."""

    days: int
    interval_seconds: float
    erase: Erase = erase_case
    name: str = NAME

    async def run_once(self, db: Database) -> list[UUID]:
        """One run: erase every case selected now, one per transaction; the erased ids."""
        erased: list[UUID] = []
        failed: list[UUID] = []
        log.info("retention_run_started", days=self.days)
        while True:
            case_id = None
            try:
                async with db.transaction() as conn:
                    claimed, _ = await retention_store.expired_cases(
                        conn, days=self.days, limit=1, claim=True, skipping=failed
                    )
                    if not claimed:
                        break
                    case = claimed[0]
                    case_id = case["id"]
                    if case_id in erased:  # erased, yet selected again: never loop on it
                        raise RuntimeError("an erased case is still selected for retention")
                    await self.erase(conn, case=case, reason=reason_for(self.days), caller=None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if case_id is None:  # the selection itself failed: the next run tries again
                    log.error("retention_run_failed", error=type(exc).__name__)
                    break
                failed.append(case_id)
                log.error(
                    "retention_erase_failed",
                    case_id=str(case_id),
                    error=type(exc).__name__,
                    exc_info=True,
                )
                continue
            erased.append(case_id)
            log.info("retention_case_erased", case_id=str(case_id))
        log.info(
            "retention_run_finished",
            days=self.days,
            erased=len(erased),
            failed=len(failed),
            failed_case_ids=[str(i) for i in failed],
        )
        return erased

    async def run(self, db: Database, listener: Listener, stop: asyncio.Event) -> None:
        """A run at start, then one every `interval_seconds`, until `stop`."""
        del listener  # it needs no wake-up: the schedule is the clock
        while not stop.is_set():
            await self.run_once(db)
            await wait_for_wake(stop, None, self.interval_seconds)
