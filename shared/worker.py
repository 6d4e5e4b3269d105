"""Running a service's consumers alone (`python -m services.<name>.worker`) or its API."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable

import structlog
import uvicorn
from fastapi import FastAPI

from shared.db import Database, Statement
from shared.eventlog.append import NOTIFY_CHANNEL
from shared.eventlog.consumer import Worker
from shared.eventlog.listener import Listener
from shared.observability import Metrics, configure_logging
from shared.settings import Settings

log = structlog.get_logger("relais.worker")

ConsumerFactory = Callable[[Settings, Metrics], list[Worker]]


class XidRegressionError(RuntimeError):
    """The database's transaction ids restarted below the log's (e.g. after a restore)."""


_XIDS = Statement(
    "SELECT (SELECT max(tx) FROM hub.events) AS max_tx, "
    "pg_snapshot_xmax(pg_current_snapshot()) AS next_xid"
)


async def check_xid_horizon(db: Database) -> None:
    """Refuse to consume when the log holds xids from the future of this server."""
    async with db.connection() as conn:
        row = await _XIDS.fetchrow(conn)
    max_tx, next_xid = row["max_tx"], row["next_xid"]
    if max_tx is not None and int(max_tx) >= int(next_xid):
        raise XidRegressionError(
            f"hub.events holds tx {max_tx} but this server's next xid is {next_xid}: "
            "the database was restored into a cluster whose transaction ids are lower. "
            "Consumers would miss events. Rebase the log as the README's 'Restoring a backup' "
            "section says, then start the workers again."
        )


async def run_consumers(
    name: str,
    factory: ConsumerFactory,
    settings: Settings,
    stop: asyncio.Event,
    *,
    channels: tuple[str, ...] = (NOTIFY_CHANNEL,),
) -> None:
    """Run the consumers of a service until `stop` is set."""
    metrics = Metrics(name)
    db = await Database.connect(
        settings, application_name=f"relais-{name}-worker", generic_plans=True
    )
    listener = Listener(
        settings.require_database_url(),
        application_name=f"relais-{name}-listener",
        channels=channels,
    )
    try:
        await check_xid_horizon(db)
        await listener.start()
        consumers = factory(settings, metrics)
        log.info("worker_started", consumers=[c.name for c in consumers])
        await asyncio.gather(*(c.run(db, listener, stop) for c in consumers), stop.wait())
    finally:
        await listener.stop()
        await db.close()
        log.info("worker_stopped")


def run_worker(
    name: str,
    factory: ConsumerFactory,
    settings: Settings,
    *,
    channels: tuple[str, ...] = (NOTIFY_CHANNEL,),
) -> None:
    """Blocking entry point of a standalone worker; SIGINT or SIGTERM stops it cleanly."""
    configure_logging(settings.log_level, service=f"{name}-worker")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await run_consumers(name, factory, settings, stop, channels=channels)

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        asyncio.run(main())
    else:
        uvloop.run(main())


def serve(
    app_factory: Callable[[Settings], FastAPI], *, name: str, port_of: Callable[[Settings], int]
) -> None:
    """Serve one service's API (with its workers unless RELAIS_RUN_WORKERS=false)."""
    settings = Settings()
    # Before uvicorn starts, so that its own lines are JSON and name the service too.
    configure_logging(settings.log_level, service=name)
    uvicorn.run(
        app_factory(settings),
        host=settings.bind_host,
        port=port_of(settings),
        log_config=None,
        access_log=False,
        proxy_headers=True,
        timeout_graceful_shutdown=10,
    )
