"""2. Routing: referrals created per second by ONE router (`python -m services.referrals.worker`).

On a fresh database the registry runs alone (no workers) with an owner partner and four
provider partners, each offering the plan's three service types over different areas (so
that every routing decision ranks several candidates). A run posts N cases through the
registry while no router runs (their `case.created` events wait in the log), then starts one
referrals worker and counts `referrals.referrals` until every next intervention (steps 1 and
2 of each case) has its referral; the rate is taken between 5 % and 95 % of them, leaving out
the worker's start-up. The worker is stopped between runs.
"""

from __future__ import annotations

import os

from bench.common import (
    CpuMeter,
    Hub,
    PgServer,
    Processes,
    Row,
    at_least,
    connect,
    cpu_note,
    loader,
    median,
    progress,
    run_json,
    sample_until,
    steady_rate,
)
from bench.data import PLAN_TYPES

TARGET = 1000.0
ROUTED_PER_CASE = 2  # steps 1 and 2; step 3 waits for both

PROVIDERS = (
    ("Centre Psy Bamako", ["ML-BKO"]),
    ("CFP Bamako", ["ML-BKO-03", "ML-BKO-01"]),
    ("ANPE", ["ML"]),
    ("ONG Kayes", ["ML-1"]),
)


async def measure(server: PgServer, procs: Processes, *, quick: bool = False) -> list[Row]:
    cases = int(os.environ.get("BENCH_ROUTING_CASES", "300" if quick else "600"))
    runs = int(os.environ.get("BENCH_RUNS", "3"))
    progress("routing: fresh database, registry API without workers, 5 partners, 12 services")
    database = await server.fresh_database("routing")
    hub = Hub(procs, database)
    registry = hub.url("registry")
    await hub.start("registry", run_workers=False)
    async with hub.client() as client:
        owner = await client.partner("ONG Sabou", key_name="bench")
        for name, areas in PROVIDERS:
            provider = await client.partner(name, key_name="bench")
            for service_type in PLAN_TYPES:
                await client.service(provider, service_type, areas)
    index = 1
    rates, counts = [], []
    async with connect(database) as conn:
        for run in range(1, runs + 1):
            before = await conn.fetchval("SELECT count(*) FROM referrals.referrals")
            posted = await run_json(
                loader(
                    "intake_http",
                    url=registry,
                    key=owner["key"],
                    concurrency=16,
                    count=cases,
                    start_index=index,
                )
            )
            if posted["errors"]:
                raise RuntimeError(f"routing pre-load errors: {posted['errors']}")
            index = posted["next_index"] + 1
            expected = cases * ROUTED_PER_CASE
            progress(
                f"routing: run {run}/{runs}: {cases} cases in the log ({posted['rate']:.0f}/s); "
                f"starting one referrals worker for {expected} referrals"
            )
            worker = hub.start_worker("referrals")
            # CPU is counted from the first referral on, leaving the worker's start-up out.
            metered: dict = {}

            async def routed(conn=conn, before=before, worker=worker, metered=metered) -> int:
                count = await conn.fetchval("SELECT count(*) FROM referrals.referrals") - before
                if count and "meter" not in metered:
                    metered["meter"] = CpuMeter(server, {"router": worker.pid})
                    metered["from"] = count
                return count

            samples = await sample_until(
                routed, expected, within=600, interval=0.1, alive=worker.alive
            )
            used = metered["meter"].stop()
            worker.stop()
            rate = steady_rate(samples, expected)
            rates.append(rate)
            counts.append(expected)
            unassigned = await conn.fetchval(
                "SELECT count(*) FROM referrals.referrals WHERE status = 'unassigned'"
            )
            progress(
                f"routing: run {run}/{runs}: {rate:7.1f} referrals/s "
                f"({samples[-1][0] - samples[0][0]:.1f} s from the worker's start, "
                f"{unassigned} unassigned in all; "
                + cpu_note(used, expected - metered["from"], "referral", ["router"])
                + ")"
            )
    procs.stop_all()
    await server.drop(database)
    return [
        at_least(
            "routing: referrals by one router",
            TARGET,
            median(rates),
            "referrals/s",
            f"median of {runs} runs of {counts[0]} referrals ("
            + ", ".join(f"{r:.0f}" for r in rates)
            + ")",
        )
    ]
