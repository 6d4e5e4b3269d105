"""6. CPU per case, end to end: intake, routing, fan-out and the first webhook, every service
process and PostgreSQL added up.

The whole hub runs as for the latency measure (three services with their workers, a provider
with an endpoint to the receiver process). It is measured as it runs once it holds some
history, not on empty tables: after the warm-up, a history of cases is posted (6,000 by
default, `BENCH_CPU_HISTORY`, at 250 per second) and the statistics are brought up to date,
as autovacuum keeps them on a running hub. On empty tables PostgreSQL plans the statements
for tables of a few pages (scans where a running hub uses its indexes), and a 20-s measure
ends before autovacuum's first pass. Then the CPU time of each service
process with its descendants and of the embedded PostgreSQL's postmaster with all its
children (backends, WAL writer, checkpointer, autovacuum) is read from `/proc/<pid>/stat`;
a load process posts N cases at the latency measure's rate (100 per second), and the
reading is taken again once the first `referral.created` webhook of every one of them has
arrived. The sum over N is the figure. The load process and the receiver are counted apart
(they stand for the partners' systems), and so is what else ran on the machine meanwhile.
What the same processes use idle (pollers, metrics), read for a few seconds before the run,
is reported beside it.
"""

from __future__ import annotations

import asyncio
import os

import httpx

from bench.common import (
    SERVICES,
    CpuMeter,
    PgServer,
    Processes,
    Row,
    at_most,
    process_cpu,
    progress,
)
from bench.latency import collect, paced, whole_hub

TARGET_MS = 9.0
HISTORY_RATE = 250.0
IDLE_SECONDS = 5.0


async def measure(server: PgServer, procs: Processes, *, quick: bool = False) -> list[Row]:
    rate = float(os.environ.get("BENCH_CPU_RATE", "100"))
    cases = int(os.environ.get("BENCH_CPU_CASES", "800" if quick else "2000"))
    async with httpx.AsyncClient(timeout=30) as client:
        whole = await whole_hub(server, procs, "cpu", client, rate / 2)
        history = int(os.environ.get("BENCH_CPU_HISTORY", "1500" if quick else "6000"))
        if history:
            progress(f"cpu: a history of {history} cases at {HISTORY_RATE:.0f}/s")
            past = await paced(
                whole.registry, whole.owner["key"], HISTORY_RATE, history / HISTORY_RATE, 500_000
            )
            _, gone, _ = await collect(client, whole.receiver, past["cases"], 120)
            if gone:
                raise RuntimeError(f"cpu: {gone} cases of the history got no webhook")
            await server.settle_statistics(whole.database)
            await client.get(f"{whole.receiver}/reset")
        pids = {name: whole.hub.running[name].pid for name in SERVICES}
        progress(f"cpu: the hub idle for {IDLE_SECONDS:.0f} s")
        idle_meter = CpuMeter(server, pids, trees=True)
        await asyncio.sleep(IDLE_SECONDS)
        idle = idle_meter.stop()
        progress(f"cpu: {cases} cases at {rate:.0f}/s, until each one's first webhook arrived")
        receiver_before = process_cpu(whole.receiver_proc.pid)
        meter = CpuMeter(server, pids, trees=True)
        run = await paced(whole.registry, whole.owner["key"], rate, cases / rate, 200_000)
        _, missing, _ = await collect(client, whole.receiver, run["cases"], 60)
        used = meter.stop()
        receiver_cpu = process_cpu(whole.receiver_proc.pid) - receiver_before
    procs.stop_all()
    await server.drop(whole.database)
    if run["errors"]:
        raise RuntimeError(f"cpu: intake errors {run['errors']}")
    if missing:
        raise RuntimeError(f"cpu: {missing} cases got no referral webhook within 60 s")
    n = len(run["cases"])
    per_case = {name: used[name] / n * 1000 for name in SERVICES}
    postgres = used["postgres"]
    counted = postgres == postgres  # NaN when the server is not the embedded one
    total = sum(per_case.values()) + (postgres / n * 1000 if counted else 0.0)
    parts = [f"{name} {ms:.1f}" for name, ms in per_case.items()]
    parts.append(f"PostgreSQL {postgres / n * 1000:.1f}" if counted else "PostgreSQL not counted")
    idle_ms = sum(idle[name] for name in SERVICES) + (idle["postgres"] if counted else 0.0)
    idle_ms = idle_ms / idle["elapsed"] * 1000
    share = used["other"] / max(used["elapsed"] * (os.cpu_count() or 1), 1e-9)
    detail = (
        f"{n} cases at {rate:.0f}/s over {used['elapsed']:.1f} s after a history of {history}, "
        f"each routed and its first "
        f"webhook received; ms per case: " + ", ".join(parts) + "; apart: the load process "
        f"{run['loader_cpu_s'] / n * 1000:.1f} ms, the receiver {receiver_cpu / n * 1000:.1f} ms"
        f"; the same processes idle: {idle_ms:.0f} ms of CPU per second"
        + (
            f"; processes outside the bench used {share:.0%} of the machine meanwhile"
            if share == share
            else ""
        )
    )
    progress(f"cpu: {total:.1f} ms per case ({detail})")
    measure_name = "CPU per case, end to end" + ("" if counted else " (without PostgreSQL)")
    return [at_most(measure_name, TARGET_MS, total, "ms", detail)]
