"""The comparison of the dispatch measure: a general Python Postgres task queue,
`procrastinate`, delivering the same webhooks as the notifications dispatcher.

`python -m bench.queue_worker defer DATABASE_URL ENDPOINT_ID FIRST_SEQ LAST_SEQ` installs
procrastinate's schema (once) and defers one job per event of `hub.events` in that range,
carrying the CloudEvent exactly as the dispatcher builds it (`Event.to_cloudevent`).
`python -m bench.queue_worker work DATABASE_URL CONCURRENCY` runs one procrastinate worker
until the queue is empty. Each job signs the body with the endpoint's secrets the same way
(services/notifications/signing.py `headers_for`, the `standardwebhooks` library) and POSTs
it with one pooled `aiohttp.ClientSession`, the HTTP client the dispatcher uses, configured
as the dispatcher's (no redirects, no proxy from the environment, no cookies), so that the
comparison is between the queues, not the HTTP clients; a non-2xx answer fails the job.
Like the dispatcher it has at most CONCURRENCY requests in flight (the dispatcher's
per-endpoint cap is 10).
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

import aiohttp
import procrastinate

from services.notifications.signing import headers_for, valid_secrets
from shared.db import plain_url
from shared.eventlog.model import Event

ENDPOINTS: dict[str, dict[str, Any]] = {}
CLIENT: aiohttp.ClientSession | None = None


def make_app(database_url: str, pool_size: int = 10) -> procrastinate.App:
    connector = procrastinate.PsycopgConnector(
        conninfo=plain_url(database_url), min_size=1, max_size=pool_size
    )
    app = procrastinate.App(connector=connector)

    @app.task(name="deliver_webhook", queue="webhooks")
    async def deliver_webhook(endpoint_id: str, event: dict[str, Any]) -> None:
        assert CLIENT is not None
        endpoint = ENDPOINTS[endpoint_id]
        now = datetime.now(UTC)
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
        headers = headers_for(valid_secrets(endpoint["secrets"], now), event["id"], now, body)
        async with CLIENT.post(
            endpoint["url"], data=body.encode(), headers=headers, allow_redirects=False
        ) as response:
            await response.read()
            if not 200 <= response.status < 300:
                raise RuntimeError(f"HTTP {response.status}")

    app.deliver_webhook = deliver_webhook  # type: ignore[attr-defined]
    return app


async def defer(database_url: str, endpoint_id: str, first_seq: int, last_seq: int) -> int:
    import asyncpg

    conn = await asyncpg.connect(plain_url(database_url))
    try:
        await conn.set_type_codec(
            "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
        installed = await conn.fetchval("SELECT to_regclass('public.procrastinate_jobs')")
        rows = await conn.fetch(
            "SELECT seq, id, tx, type, source, subject, time, actor, audience, correlation_id, "
            "causation_id, data FROM hub.events WHERE seq BETWEEN $1 AND $2 ORDER BY seq",
            first_seq,
            last_seq,
        )
    finally:
        await conn.close()
    app = make_app(database_url)
    async with app.open_async():
        if installed is None:
            await app.schema_manager.apply_schema_async()
        jobs = [
            {"endpoint_id": endpoint_id, "event": Event.from_row(row).to_cloudevent()}
            for row in rows
        ]
        for start in range(0, len(jobs), 1000):
            await app.deliver_webhook.batch_defer_async(*jobs[start : start + 1000])  # type: ignore[attr-defined]
    return len(rows)


async def work(database_url: str, concurrency: int) -> None:
    global CLIENT
    import asyncpg

    conn = await asyncpg.connect(plain_url(database_url))
    try:
        for row in await conn.fetch("SELECT id, url, secrets::text FROM notifications.endpoints"):
            ENDPOINTS[str(row["id"])] = {"url": row["url"], "secrets": json.loads(row["secrets"])}
    finally:
        await conn.close()
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency),
        timeout=aiohttp.ClientTimeout(total=15.0),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
    ) as client:
        CLIENT = client
        app = make_app(database_url, pool_size=concurrency + 2)
        async with app.open_async():
            await app.run_worker_async(
                queues=["webhooks"],
                concurrency=concurrency,
                wait=False,
                install_signal_handlers=False,
            )


def main() -> None:
    mode = sys.argv[1]
    if mode == "defer":
        count = asyncio.run(defer(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
        print(json.dumps({"deferred": count}))
    elif mode == "work":
        asyncio.run(work(sys.argv[2], int(sys.argv[3])))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
