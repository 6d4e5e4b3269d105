"""4. Latency: case committed → its first `referral.created` webhook received, at 100 cases/s.

The whole hub runs as processes (registry, referrals and notifications, each with its
workers) on a fresh database. Partner "owner" creates the cases; partner "provider" offers the
plan's three service types over Mali and has one endpoint (`referral.created`) pointing at the
receiver process. A load process posts cases at a fixed 100/s (open loop) for about 20 s and
notes, for each case, `time.time()` when its 201 arrived (the intake had committed); the
receiver notes `time.time()` when the first `referral.created` webhook naming the case's
reference arrived. Same machine, same clock: the latency of a case is the difference.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

import httpx

from bench.common import (
    SERVICES,
    CpuMeter,
    Hub,
    PgServer,
    Proc,
    Processes,
    Row,
    at_most,
    connect,
    cpu_note,
    loader,
    percentile,
    progress,
    run_json,
    start_receiver,
)
from bench.data import PLAN_TYPES

TARGET_P50_MS = 30.0
TARGET_P99_MS = 150.0


async def paced(registry: str, key: str, rate: float, seconds: float, start: int) -> dict:
    return await run_json(
        loader("paced", url=registry, key=key, rate=rate, duration=seconds, start_index=start)
    )


async def collect(
    client: httpx.AsyncClient, receiver: str, cases: list, within: float
) -> tuple[list[float], int, dict[str, float]]:
    """Latencies (ms) of the cases whose first referral webhook arrived, and how many never
    did within `timeout` after the last post."""
    wanted = {reference for reference, _, _ in cases}
    deadline = time.monotonic() + within
    while True:
        first = (await client.get(f"{receiver}/first")).json()["first"]
        if wanted <= first.keys() or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    latencies = [
        (first[reference] - answered) * 1000
        for reference, answered, _ in cases
        if reference in first
    ]
    return latencies, len(wanted - first.keys()), first


_HOPS = """
    SELECT c.data->>'reference' AS reference,
           extract(epoch FROM c.time) AS intake_started,
           min(extract(epoch FROM r.time)) AS routed,
           min(extract(epoch FROM d.created_at)) AS fanned_out,
           min(extract(epoch FROM a.attempted_at - make_interval(secs => a.latency_ms / 1000.0)))
               AS sent
    FROM hub.events c
    JOIN hub.events r ON r.type = 'referral.created'
                     AND r.data->>'case_reference' = c.data->>'reference'
    JOIN notifications.deliveries d ON d.event_seq = r.seq
    JOIN notifications.attempts a ON a.delivery_id = d.id
    WHERE c.type = 'case.created' AND c.data->>'reference' = ANY($1::text[])
    GROUP BY 1, 2
"""


async def hops(database: str, cases: list, first: dict[str, float]) -> str:
    """Where the time goes, from the log's own clocks (same machine, same clock as ours):
    `hub.events.time` of the referral.created events is the router batch's transaction start,
    `deliveries.created_at` the fan-out's, `attempts.attempted_at - latency_ms` the moment the
    dispatcher began the send (it records `attempted_at` once the answer is in)."""
    answered = {reference: at for reference, at, _ in cases}
    async with connect(database) as conn:
        rows = await conn.fetch(_HOPS, list(answered))
    steps: dict[str, list[float]] = {
        "commit→router batch": [],
        "router batch→fan-out": [],
        "fan-out→send": [],
        "send→received": [],
    }
    for row in rows:
        received = first.get(row["reference"])
        if received is None:
            continue
        routed, fanned, sent = (float(row[k]) for k in ("routed", "fanned_out", "sent"))
        steps["commit→router batch"].append((routed - answered[row["reference"]]) * 1000)
        steps["router batch→fan-out"].append((fanned - routed) * 1000)
        steps["fan-out→send"].append((sent - fanned) * 1000)
        steps["send→received"].append((received - sent) * 1000)
    return ", ".join(
        f"{name} p50 {percentile(v, 50):.0f} / p99 {percentile(v, 99):.0f} ms"
        for name, v in steps.items()
        if v
    )


@dataclass
class WholeHub:
    """The three services with their workers on a fresh database, the receiver process, a
    case owner, and a provider whose endpoint (`referral.created`) points at the receiver."""

    hub: Hub
    database: str
    receiver: str
    receiver_proc: Proc
    owner: dict

    @property
    def registry(self) -> str:
        return self.hub.url("registry")


async def whole_hub(
    server: PgServer, procs: Processes, label: str, client: httpx.AsyncClient, warm_rate: float
) -> WholeHub:
    """Start and set up the whole hub, then warm it up: 3 s of cases at `warm_rate`, each
    routed and its first webhook received."""
    progress(f"{label}: fresh database, receiver, the three services with their workers")
    database = await server.fresh_database(label)
    receiver_proc, receiver = await start_receiver(procs)
    hub = Hub(procs, database)
    for name in SERVICES:
        await hub.start(name, run_workers=True)
    async with hub.client() as hub_client:
        owner = await hub_client.partner("ONG Sabou", key_name="bench")
        provider = await hub_client.partner("ANPE", key_name="bench")
        for service_type in PLAN_TYPES:
            await hub_client.service(provider, service_type, ["ML"])
        await hub_client.endpoint(
            provider, f"{receiver}/hooks", ["referral.created"], "bench receiver"
        )
    whole = WholeHub(hub, database, receiver, receiver_proc, owner)
    progress(f"{label}: warm-up, 3 s at {warm_rate:.0f} cases/s")
    warm = await paced(whole.registry, owner["key"], warm_rate, 3, 1)
    _, missing, _ = await collect(client, receiver, warm["cases"], 30)
    if missing:
        raise RuntimeError(f"warm-up: {missing} cases got no referral webhook")
    await server.settle_statistics(database)
    await client.get(f"{receiver}/reset")
    return whole


async def measure(server: PgServer, procs: Processes, *, quick: bool = False) -> list[Row]:
    rate = float(os.environ.get("BENCH_LATENCY_RATE", "100"))
    seconds = float(os.environ.get("BENCH_LATENCY_SECONDS", "8" if quick else "20"))
    async with httpx.AsyncClient(timeout=30) as client:
        whole = await whole_hub(server, procs, "latency", client, rate / 2)
        hub, database, receiver, owner = whole.hub, whole.database, whole.receiver, whole.owner
        registry = whole.registry
        # What the pipeline takes when it keeps up: a low rate first, for the record.
        low_rate = float(os.environ.get("BENCH_LATENCY_LOW_RATE", "10"))
        progress(f"latency: {low_rate:.0f} cases/s for 8 s (for comparison)")
        low = await paced(registry, owner["key"], low_rate, 8, 50_000)
        low_latencies, low_missing, low_first = await collect(client, receiver, low["cases"], 30)
        low_hops = await hops(database, low["cases"], low_first)
        low_latencies += [float("inf")] * low_missing
        await client.get(f"{receiver}/reset")
        progress(f"latency: {rate:.0f} cases/s for {seconds:.0f} s")
        pids = {name: proc.pid for name, proc in hub.running.items()}
        meter = CpuMeter(server, pids)
        run = await paced(registry, owner["key"], rate, seconds, 100_000)
        used = meter.stop()
        latencies, missing, first = await collect(client, receiver, run["cases"], 30)
        run_hops = await hops(database, run["cases"], first)
    procs.stop_all()
    await server.drop(database)
    if run["errors"]:
        raise RuntimeError(f"latency: intake errors {run['errors']}")
    posted = len(run["cases"])
    worst = max(latencies) if latencies else float("nan")
    latencies += [float("inf")] * missing  # never arrived within 30 s: counted as longer
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    intake = [ms * 1000 for _, _, ms in run["cases"]]
    achieved = posted / run["seconds"]
    note = (
        f"{run['posted']} of {run['scheduled']} cases posted ({posted} answered 201), "
        f"at {achieved:.0f}/s "
        f"({run['late_posts']} posted late), "
        f"{missing} without a webhook within 30 s; max {worst:.0f} ms; the POST itself p50 "
        f"{percentile(intake, 50):.0f} ms, p99 {percentile(intake, 99):.0f} ms; "
        + cpu_note(used, posted, "case", list(pids))
        + f"; hops: {run_hops}"
        + f"; at {low_rate:.0f} cases/s: p50 {percentile(low_latencies, 50):.0f} ms, "
        f"p99 {percentile(low_latencies, 99):.0f} ms, hops: {low_hops}"
    )
    progress(f"latency: p50 {p50:.1f} ms, p99 {p99:.1f} ms ({note})")
    return [
        at_most("latency: commit → webhook, p50", TARGET_P50_MS, p50, "ms", note),
        at_most("latency: commit → webhook, p99", TARGET_P99_MS, p99, "ms"),
    ]
