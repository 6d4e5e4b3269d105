"""1. Intake: `POST /cases` with a 3-step plan over HTTP, against the same SQL straight through
the driver, in the same run.

The registry runs alone (`RELAIS_RUN_WORKERS=false`) on a fresh database, warmed up with 400
cases and then analysed (`PgServer.settle_statistics`: the statistics a running hub has). A
load process posts distinct beneficiaries from N keep-alive connections for a few seconds;
then another
load process (`bench/load.py` `intake_direct`) runs the same intakes through the registry's
code itself, without HTTP: the key's look-up and `case_actions.create_case` with the store
functions it calls, on a `shared.db.Database` (asyncpg) as the service's, from N concurrent
connections for as long. The stores run their statements straight on asyncpg, so this is
the same SQL through the driver that SPEC 10 compares with, and nothing of the intake is
copied here: the comparison follows the code. HTTP and direct runs alternate; each figure is
the median of its runs.
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
    cpu_note,
    loader,
    median,
    progress,
    run_json,
)

TARGET = 500.0
TARGET_SHARE = 0.5


async def measure(server: PgServer, procs: Processes, *, quick: bool = False) -> list[Row]:
    concurrency = int(os.environ.get("BENCH_INTAKE_CONCURRENCY", "16"))
    duration = float(os.environ.get("BENCH_INTAKE_SECONDS", "3" if quick else "5"))
    runs = int(os.environ.get("BENCH_RUNS", "3"))
    progress("intake: fresh database, registry API without workers")
    database = await server.fresh_database("intake")
    hub = Hub(procs, database)
    registry = hub.url("registry")
    await hub.start("registry", run_workers=False)
    async with hub.client() as client:
        owner = await client.partner("ONG Sabou", key_name="bench")
    index = 1
    progress(f"intake: warm-up, 400 cases over {concurrency} connections")
    warm = await run_json(
        loader(
            "intake_http",
            url=registry,
            key=owner["key"],
            concurrency=concurrency,
            count=400,
            start_index=index,
        )
    )
    if warm["errors"]:
        raise RuntimeError(f"intake warm-up errors: {warm['errors']}")
    await server.settle_statistics(database)
    index = warm["next_index"]
    http_rates, direct_rates = [], []
    pid = hub.running["registry"].pid
    for run in range(1, runs + 1):
        meter = CpuMeter(server, {"registry": pid})
        http = await run_json(
            loader(
                "intake_http",
                url=registry,
                key=owner["key"],
                concurrency=concurrency,
                duration=duration,
                start_index=index,
            )
        )
        http_cpu = meter.stop()
        if http["errors"]:
            raise RuntimeError(f"intake errors: {http['errors']}")
        index = http["next_index"] + 1
        progress(
            f"intake: run {run}/{runs} HTTP   {http['rate']:7.1f} cases/s "
            f"(p50 {http['p50_ms']:.0f} ms, p99 {http['p99_ms']:.0f} ms; "
            + cpu_note(http_cpu, http["count"], "case", ["registry"])
            + ")"
        )
        meter = CpuMeter(server)
        direct = await run_json(
            loader(
                "intake_direct",
                database_url=database,
                key=owner["key"],
                concurrency=concurrency,
                duration=duration,
                start_index=index,
                max_count=int(duration * 4000),
            )
        )
        direct_cpu = meter.stop()
        direct_cpu["direct loader"] = direct["loader_cpu_s"]
        index = direct["next_index"] + 1
        progress(
            f"intake: run {run}/{runs} direct {direct['rate']:7.1f} cases/s "
            f"(p50 {direct['p50_ms']:.0f} ms, p99 {direct['p99_ms']:.0f} ms; "
            + cpu_note(direct_cpu, direct["count"], "case", ["direct loader"])
            + (", ran out of prepared bodies" if direct["exhausted"] else "")
            + ")"
        )
        http_rates.append(http["rate"])
        direct_rates.append(direct["rate"])
    procs.stop_all()
    await server.drop(database)
    http_rate, direct_rate = median(http_rates), median(direct_rates)
    share = http_rate / direct_rate
    runs_text = ", ".join(f"{r:.0f}" for r in http_rates)
    return [
        at_least(
            "intake: POST /cases, 3-step plan",
            TARGET,
            http_rate,
            "cases/s",
            f"median of {runs} runs of {duration:.0f} s ({runs_text}), {concurrency} connections",
        ),
        # SPEC 10 compares with the same SQL straight through the driver: the direct runs are
        # that, the stores running their statements on asyncpg (`shared.db`).
        Row(
            "intake: HTTP / same SQL via asyncpg",
            f"≥ {TARGET_SHARE:.0%} of the driver",
            f"{share:.0%} ({http_rate:.0f} / {direct_rate:.0f})",
            share / TARGET_SHARE,
            "driver runs (case_actions.create_case and its store functions on a shared.db "
            "Database, without HTTP): " + ", ".join(f"{r:.0f}" for r in direct_rates) + " cases/s",
        ),
    ]
