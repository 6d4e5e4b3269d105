"""3. Dispatch: webhooks delivered per second by the notifications dispatcher to a fast local
receiver, against a general Python Postgres task queue (procrastinate) doing the same
deliveries, in the same run.

On a fresh database: two partners and one endpoint of one of them (`referral.*`) pointing at
the receiver process (`python -m devkit.receiver`), made through the registry's and the
notifications' APIs. A run appends N `referral.created` events whose audience is that partner
(each carries a Referral with its minimised case, as the router writes them) with the event
log's `append_many`, and has the fan-out's own consumer make their N pending deliveries in
the bench process (the fan-out's checkpoint is then past them, so the worker's fan-out has
nothing to do during the run); then it starts one
`python -m services.notifications.worker` and counts the webhooks the receiver gets; the rate
is taken between 5 % and 95 % of them from the receiver's arrival times. Then procrastinate
gets the same N events as N jobs and one procrastinate worker (bench/queue_worker.py) sends
them, signed the same way, with the same in-flight cap. Runs alternate; medians.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from bench.common import (
    CpuMeter,
    Hub,
    PgServer,
    Processes,
    Row,
    at_least,
    connect,
    cpu_note,
    median,
    progress,
    rate_of_timestamps,
    run_json,
    start_receiver,
)
from services.notifications import fanout
from services.referrals.resources import resource
from shared.db import Database
from shared.eventlog.append import append_many
from shared.eventlog.consumer import Consumer
from shared.minimised import minimise_case
from shared.settings import Settings

TARGET = 1500.0
TARGET_TIMES = 4.0
QUEUE_CONCURRENCY = 10  # the dispatcher's PER_ENDPOINT in-flight cap


def referral_event_data(owner: uuid.UUID, assignee: uuid.UUID) -> dict[str, Any]:
    """A Referral as `referral.created` carries it (store.resource with the minimised case)."""
    now = datetime.now(UTC)
    case = {
        "reference": "ML-2026-000001",
        "consent": {"referral": "granted"},
        "beneficiary": {
            "given_name": "Aminata",
            "family_name": "Traoré",
            "sex": "female",
            "date_of_birth": "1996-04-12",
            "phone": "+22370123456",
            "languages": ["bm", "fr"],
        },
        "return": {"area_code": "ML-BKO-03"},
        "vulnerabilities": ["psychosocial_distress", "single_parent"],
    }
    step = {
        "key": "2",
        "service_type": "economic.vocational_training",
        "priority": "normal",
        "notes": "",
    }
    minimised = minimise_case(
        case=case,
        referral_statuses=["requested"],
        assignee_steps=[step],
        service_vulnerabilities=["single_parent"],
        referring_partner={
            "name": "ONG Sabou",
            "acronym": "SABOU",
            "contact_email": "contact@example.org",
            "contact_phone": "+22320220000",
        },
        today=date.today(),
    )
    row = {
        "id": uuid.uuid4(),
        "case_id": uuid.uuid4(),
        "case_reference": case["reference"],
        "step_id": uuid.uuid4(),
        "service_type": step["service_type"],
        "priority": "normal",
        "status": "requested",
        "status_reason": None,
        "assignee_partner_id": assignee,
        "service_id": uuid.uuid4(),
        "owner_partner_id": owner,
        "deadline_at": now + timedelta(hours=72),
        "attempt": 1,
        "outcome": None,
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }
    history = [{"status": "requested", "at": now, "actor": "system", "note": "routed"}]
    data = resource(row, history=history, case=minimised, with_decision=False)
    return json.loads(json.dumps(data, default=str))


async def add_deliveries(
    database_url: str, *, n: int, owner: uuid.UUID, assignee: uuid.UUID
) -> tuple[int, int]:
    """N referral.created events (appended with `shared.eventlog.append.append_many`) and
    their pending deliveries, made by the fan-out's own consumer (`fanout.fan_out`, run here
    until the log is drained, so that the worker's fan-out has nothing to do during the
    run); returns (first seq, last seq)."""
    template = referral_event_data(owner, assignee)
    drafts = []
    for i in range(n):
        referral_id = uuid.uuid4()
        reference = f"ML-2026-{i:06d}"
        data = {
            **template,
            "id": str(referral_id),
            "case_id": str(uuid.uuid4()),
            "case_reference": reference,
            "step_id": str(uuid.uuid4()),
            "case": {**template["case"], "reference": reference},
        }
        drafts.append(
            {
                "type": "referral.created",
                "source": "/referrals",
                "subject": f"referrals/{referral_id}",
                "actor": "system",
                "audience": sorted([owner, assignee], key=str),
                "data": data,
            }
        )
    settings = Settings(database_url=database_url, db_pool_size=2, db_max_overflow=0)
    db = await Database.connect(settings, application_name="relais-bench-dispatch")
    try:
        async with db.transaction() as conn:
            stored = await append_many(conn, drafts)
        consumer = Consumer(name=fanout.CONSUMER_NAME, handler=fanout.fan_out, batch_size=500)
        await consumer.ensure_checkpoint(db)
        while True:
            handled, more = await consumer.run_once(db)
            if not handled and not more:
                break
    finally:
        await db.close()
    async with connect(database_url) as conn:
        await conn.execute("ANALYZE notifications.deliveries")
        await conn.execute("ANALYZE hub.events")
    return stored[0].seq, stored[-1].seq


async def count_received(client: httpx.AsyncClient, receiver: str) -> int:
    return (await client.get(f"{receiver}/count")).json()["count"]


async def wait_received(
    client: httpx.AsyncClient, receiver: str, n: int, proc, server: PgServer, within: float
) -> tuple[list[float], dict[str, float], int]:
    """Wait for n webhooks; CPU is metered from the first one on. Returns (arrival times,
    CPU used, how many had arrived when metering began)."""
    deadline = time.monotonic() + within
    meter, first = None, 0
    while True:
        count = await count_received(client, receiver)
        if count and meter is None:
            meter, first = CpuMeter(server, {"worker": proc.pid}), count
        if count >= n:
            break
        if not proc.alive() and count < n:
            raise RuntimeError(f"{proc.name} exited at {count} of {n}:\n{proc.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {count} of {n} webhooks after {within} s")
        await asyncio.sleep(0.1)
    used = meter.stop() if meter else {}
    stamps = (await client.get(f"{receiver}/stamps")).json()["stamps"]
    return stamps, used, first


def verify_sample(samples: list[dict], secret: str) -> None:
    """The webhooks verify with the endpoint's secret (any Standard Webhooks library)."""
    for sample in samples:
        headers = {k: v for k, v in sample["headers"].items() if k.startswith("webhook-")}
        Webhook(secret).verify(sample["body"], headers)


async def measure(server: PgServer, procs: Processes, *, quick: bool = False) -> list[Row]:
    if importlib.util.find_spec("procrastinate") is None:
        raise RuntimeError(
            "procrastinate is not installed: pip install -e '.[bench]' (see bench/README.md)"
        )
    n = int(os.environ.get("BENCH_DISPATCH_DELIVERIES", "800" if quick else "1500"))
    runs = int(os.environ.get("BENCH_RUNS", "3"))
    progress("dispatch: fresh database, receiver process, one endpoint of one partner")
    database = await server.fresh_database("dispatch")
    _receiver_proc, receiver = await start_receiver(procs)
    # The partners and the endpoint through the APIs (then stopped: only the worker runs).
    hub = Hub(procs, database)
    await hub.start("registry", run_workers=False)
    await hub.start("notifications", run_workers=False)
    async with hub.client() as client:
        owner = await client.partner("ONG Sabou", key_name="bench")
        assignee = await client.partner("ANPE", key_name="bench")
        endpoint = await client.endpoint(
            assignee, f"{receiver}/hooks", ["referral.*"], "bench receiver"
        )
    for proc in hub.running.values():
        proc.stop()
    endpoint_id, secret = endpoint["id"], endpoint["secret"]
    env = {
        "DATABASE_URL": database,
        "RELAIS_ENV": "development",
        "RELAIS_LOG_LEVEL": "WARNING",
    }
    ours, theirs, notes = [], [], {}
    async with httpx.AsyncClient(timeout=30) as client:
        for run in range(1, runs + 1):
            first, last = await add_deliveries(
                database, n=n, owner=uuid.UUID(owner["id"]), assignee=uuid.UUID(assignee["id"])
            )
            await client.get(f"{receiver}/reset")
            worker = procs.spawn(
                "notifications-worker", [sys.executable, "-m", "services.notifications.worker"], env
            )
            procs.profile(worker)
            stamps, used, _ = await wait_received(client, receiver, n, worker, server, 300)
            if run == 1:
                verify_sample((await client.get(f"{receiver}/samples")).json()["samples"], secret)
            async with connect(database) as conn:
                deadline = time.monotonic() + 15
                while True:
                    done = await conn.fetchval(
                        "SELECT count(*) FROM notifications.deliveries WHERE status = 'succeeded' "
                        "AND event_seq BETWEEN $1 AND $2",
                        first,
                        last,
                    )
                    if done >= n or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.1)
            worker.stop()
            rate = rate_of_timestamps(stamps)
            ours.append(rate)
            notes["ours"] = cpu_note(used, n, "delivery", ["worker"])
            progress(
                f"dispatch: run {run}/{runs} dispatcher    {rate:7.1f} deliveries/s "
                f"({done} of {n} recorded succeeded; {notes['ours']})"
            )

            deferred = await run_json(
                [
                    sys.executable,
                    "-m",
                    "bench.queue_worker",
                    "defer",
                    database,
                    str(endpoint_id),
                    str(first),
                    str(last),
                ]
            )
            await client.get(f"{receiver}/reset")
            queue = procs.spawn(
                "procrastinate-worker",
                [
                    sys.executable,
                    "-m",
                    "bench.queue_worker",
                    "work",
                    database,
                    str(QUEUE_CONCURRENCY),
                ],
            )
            stamps, used, _ = await wait_received(
                client, receiver, deferred["deferred"], queue, server, 600
            )
            if run == 1:
                verify_sample((await client.get(f"{receiver}/samples")).json()["samples"], secret)
            queue.stop()
            rate = rate_of_timestamps(stamps)
            theirs.append(rate)
            notes["theirs"] = cpu_note(used, n, "delivery", ["worker"])
            progress(
                f"dispatch: run {run}/{runs} procrastinate {rate:7.1f} deliveries/s "
                f"({notes['theirs']})"
            )
    procs.stop_all()
    await server.drop(database)
    ours_rate, theirs_rate = median(ours), median(theirs)
    times = ours_rate / theirs_rate
    import procrastinate

    return [
        at_least(
            "dispatch: webhooks to a local receiver",
            TARGET,
            ours_rate,
            "deliveries/s",
            f"median of {runs} runs of {n} ({', '.join(f'{r:.0f}' for r in ours)}), one "
            "endpoint; signatures verified with standardwebhooks",
        ),
        Row(
            "dispatch: ours / procrastinate",
            f"≥ {TARGET_TIMES:.0f}x",
            f"{times:.2f}x ({ours_rate:.0f} / {theirs_rate:.0f})",
            times / TARGET_TIMES,
            f"procrastinate {procrastinate.__version__}, {QUEUE_CONCURRENCY} jobs at once, runs "
            + ", ".join(f"{r:.0f}" for r in theirs)
            + " deliveries/s",
        ),
    ]
