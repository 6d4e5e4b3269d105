"""A consumer as its own process, for the kill test: each event leaves one row in
`public.effects`, written in the same transaction as the checkpoint."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from shared.db import Connection, Statement
from shared.eventlog.consumer import Consumer
from shared.eventlog.model import Event
from shared.observability import Metrics
from shared.settings import Settings
from shared.worker import run_worker

_EFFECT = Statement("INSERT INTO public.effects VALUES (:id)")


async def record(conn: Connection, events: Sequence[Event]) -> None:
    for event in events:
        await _EFFECT.execute(conn, id=event.id)
        await asyncio.sleep(0.005)  # slow enough to be killed mid-batch


def consumers(_settings: Settings, metrics: Metrics) -> list[Consumer]:
    return [Consumer("test-kill", record, batch_size=20, metrics=metrics)]


if __name__ == "__main__":
    run_worker("test", consumers, Settings(database_url=sys.argv[1], log_level="WARNING"))
