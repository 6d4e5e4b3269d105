"""1. Intake: `POST /cases` with a 3-step plan over HTTP, against the same SQL straight through
the driver, in the same run.

The registry runs alone (`RELAIS_RUN_WORKERS=false`) on a fresh database. A load process
posts distinct beneficiaries from N keep-alive connections for a few seconds; then another
load process runs the statements of one intake (`case_actions.create_case`, with
`store/duplicates.py` `index_case`) through asyncpg with the same N connections for as long.
HTTP and driver runs alternate; each figure is the median of its runs.
"""

from __future__ import annotations

import os

import httpx

from bench.common import (
    CpuMeter,
    Hub,
    PgServer,
    Processes,
    Row,
    at_least,
    cpu_note,
    loader,
    make_partner,
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
    async with httpx.AsyncClient(timeout=30) as client:
        owner = await make_partner(client, registry, "ONG Sabou")
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
    index = warm["next_index"]
    http_rates, sql_rates, details = [], [], []
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
        sql = await run_json(
            loader(
                "intake_sql",
                database_url=database,
                key=owner["key"],
                owner_id=owner["id"],
                concurrency=concurrency,
                duration=duration,
                start_index=index,
                max_count=int(duration * 4000),
            )
        )
        sql_cpu = meter.stop()
        sql_cpu["asyncpg loader"] = sql["loader_cpu_s"]
        index += sql["count"] + 1
        progress(
            f"intake: run {run}/{runs} driver {sql['rate']:7.1f} cases/s "
            f"(p50 {sql['p50_ms']:.0f} ms, p99 {sql['p99_ms']:.0f} ms; "
            + cpu_note(sql_cpu, sql["count"], "case", ["asyncpg loader"])
            + (", ran out of prepared bodies" if sql["exhausted"] else "")
            + ")"
        )
        http_rates.append(http["rate"])
        sql_rates.append(sql["rate"])
        details.append((http, sql))
    procs.stop_all()
    await server.drop(database)
    http_rate, sql_rate = median(http_rates), median(sql_rates)
    share = http_rate / sql_rate
    runs_text = ", ".join(f"{r:.0f}" for r in http_rates)
    return [
        at_least(
            "intake: POST /cases, 3-step plan",
            TARGET,
            http_rate,
            "cases/s",
            f"median of {runs} runs of {duration:.0f} s ({runs_text}), {concurrency} connections",
        ),
        Row(
            "intake: HTTP / same SQL via asyncpg",
            f"≥ {TARGET_SHARE:.0%}",
            f"{share:.0%} ({http_rate:.0f} / {sql_rate:.0f})",
            share / TARGET_SHARE,
            "driver runs: " + ", ".join(f"{r:.0f}" for r in sql_rates) + " cases/s",
        ),
    ]
