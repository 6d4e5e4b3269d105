"""`make bench` = `python -m bench`: the six measures of SPEC section 10, one after another,
each on a fresh database with the services it needs started as processes, then the table.

Options: `--only intake,routing,dispatch,latency,cpu,scale` runs some of them; `--quick`
shortens every run (for trying the bench, not for figures). Environment: `BENCH_DATABASE_URL`
(a server where the bench may create databases; default: the embedded PostgreSQL),
`BENCH_RUNS` (runs per throughput figure, default 3), and the per-measure sizes named in
bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import traceback

from bench import cpu, dispatch, intake, latency, routing, scale
from bench.common import Processes, Row, machine, pg_server, progress, run_dir, table

MEASURES = {
    "intake": intake.measure,
    "routing": routing.measure,
    "dispatch": dispatch.measure,
    "latency": latency.measure,
    "cpu": cpu.measure,
    "scale": scale.measure_reduced,
}


async def main(only: list[str], quick: bool) -> int:
    logs = run_dir()
    started = time.monotonic()
    rows: list[Row] = []
    failures: list[str] = []
    with pg_server() as server:
        info = await machine(server)
        print("Relais bench (SPEC section 10)")
        for key, value in info.items():
            print(f"  {key:<11} {value}")
        print(f"  logs        {logs}")
        print(flush=True)
        try:
            for name in only:
                procs = Processes(logs)
                try:
                    measured = await MEASURES[name](server, procs, quick=quick)
                    rows.extend(measured)
                    for row in measured:
                        progress(f"{name}: {row.measured} (target {row.target})")
                except Exception as exc:
                    failures.append(f"{name}: {type(exc).__name__}: {exc}")
                    progress(f"{name}: FAILED: {type(exc).__name__}: {exc}")
                    traceback.print_exc()
                finally:
                    procs.stop_all()
        finally:
            await server.drop_all()
    print()
    print("Relais bench (SPEC section 10)")
    for key, value in info.items():
        print(f"  {key:<11} {value}")
    print()
    print(table(rows))
    print()
    for row in rows:
        if row.detail:
            print(f"  {row.measure}: {row.detail}")
    for failure in failures:
        print(f"  FAILED {failure}")
    met = sum(r.met for r in rows)
    judged = sum(r.judged for r in rows)
    print(f"\n  {met} of {judged} targets met, in {time.monotonic() - started:.0f} s")
    (logs / "results.json").write_text(
        json.dumps(
            {"machine": info, "rows": [r.__dict__ for r in rows], "failures": failures}, indent=2
        )
    )
    return 1 if failures else 0


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", default=",".join(MEASURES), help="comma-separated measures")
    parser.add_argument("--quick", action="store_true", help="short runs, for trying the bench")
    args = parser.parse_args()
    only = [m.strip() for m in args.only.split(",") if m.strip()]
    unknown = [m for m in only if m not in MEASURES]
    if unknown:
        parser.error(f"unknown measures: {', '.join(unknown)}")
    raise SystemExit(asyncio.run(main(only, args.quick)))


if __name__ == "__main__":
    cli()
