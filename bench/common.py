"""What every measure shares: the PostgreSQL server and its fresh databases, the service
processes, the load processes, progress lines and the machine's description.

Nothing here runs inside a service: the services are started as processes
(`python -m services.<name>`, `python -m services.<name>.worker`) on loopback ports, and the
load comes from other processes (`python -m bench.load`, and the webhook receiver the tests
and the demo use too, `python -m devkit.receiver`). The partners, services and endpoints a
measure needs are set up through the APIs with the hub client of `devkit/client.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from devkit.client import HubClient
from shared.db import plain_url
from shared.embedded_pg import EmbeddedPostgres, free_port
from shared.migrate import upgrade

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "bench" / ".runs"
ADMIN_KEY = "rk_bench-admin-key-" + "b" * 32
SERVICES = ("registry", "referrals", "notifications")

_STARTED = time.monotonic()


def progress(message: str) -> None:
    """One line per phase, with the time since the bench started."""
    print(f"  [{time.monotonic() - _STARTED:6.1f} s] {message}", flush=True)


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return float("nan")
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def with_database(url: str, database: str) -> str:
    return make_url(plain_url(url)).set(database=database).render_as_string(hide_password=False)


# --- PostgreSQL ----------------------------------------------------------------------------


@dataclass
class PgServer:
    """A server where the bench may create databases: the embedded PostgreSQL of the wheel
    (durable settings: fsync and synchronous_commit on) or `BENCH_DATABASE_URL`."""

    url: str
    origin: str
    pgdata: Path | None = None  # the embedded cluster's data folder: its CPU can be counted
    template: str | None = None
    created: list[str] = field(default_factory=list)

    async def execute(self, *statements: str) -> None:
        conn = await asyncpg.connect(plain_url(self.url))
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    async def fetchval(self, query: str) -> Any:
        conn = await asyncpg.connect(plain_url(self.url))
        try:
            return await conn.fetchval(query)
        finally:
            await conn.close()

    async def fresh_database(self, label: str) -> str:
        """A new database at the migrations' head (cloned from a template migrated once)."""
        if self.template is None:
            name = f"relais_bench_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
            await self.execute(f'CREATE DATABASE "{name}"')
            self.created.append(name)
            await asyncio.to_thread(upgrade, with_database(self.url, name))
            self.template = name
        name = f"relais_bench_{label}_{uuid.uuid4().hex[:8]}"
        await self.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        self.created.append(name)
        return with_database(self.url, name)

    async def settle_statistics(self, database_url: str) -> None:
        """ANALYZE a database after a warm-up, as autovacuum keeps a running hub's statistics.

        A measure starts on a fresh database: the first statements a service prepares are
        planned over empty tables, and PostgreSQL keeps the generic plans of those prepared
        statements on the pooled connections until the tables' statistics change. A hub that
        has run a minute has had them analysed (autovacuum analyses a table after 50 rows
        and 10 % more change); a 5-s measure has not, and would time plans that a running
        hub no longer has (a scan of every case of the owner for the external-id check). The
        ANALYZE invalidates those plans, and the measure then times the hub as it runs."""
        conn = await asyncpg.connect(plain_url(database_url))
        try:
            await conn.execute("ANALYZE")
        finally:
            await conn.close()

    async def drop(self, database_url: str) -> None:
        name = make_url(database_url).database
        with contextlib.suppress(Exception):
            await self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.created:
            self.created.remove(name)

    async def drop_all(self) -> None:
        for name in list(reversed(self.created)):
            with contextlib.suppress(Exception):
                await self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()


@contextmanager
def pg_server() -> Iterator[PgServer]:
    url = os.environ.get("BENCH_DATABASE_URL")
    if url:
        yield PgServer(url=url, origin="BENCH_DATABASE_URL")
        return
    root = Path(tempfile.mkdtemp(prefix="relais-bench-pg-"))
    server = EmbeddedPostgres(root, free_port())
    server.start()
    try:
        yield PgServer(url=server.url(), origin="embedded (wheel)", pgdata=server.pgdata)
    finally:
        server.destroy()


# --- The machine -----------------------------------------------------------------------------


def _meminfo_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return float("nan")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


async def machine(server: PgServer) -> dict[str, str]:
    conn = await asyncpg.connect(plain_url(server.url))
    try:
        version = await conn.fetchval("SHOW server_version")
        settings = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("fsync", "synchronous_commit", "shared_buffers", "max_connections")
        }
    finally:
        await conn.close()
    return {
        "cores": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "memory": f"{_meminfo_gib():.1f} GiB",
        "postgresql": f"{version.split()[0]} ({server.origin}; fsync={settings['fsync']}, "
        f"synchronous_commit={settings['synchronous_commit']}, "
        f"shared_buffers={settings['shared_buffers']})",
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "os": f"{platform.system()} {platform.release()}",
    }


# --- Processes -------------------------------------------------------------------------------


def run_dir() -> Path:
    """Where this bench run keeps the logs of the processes it starts."""
    path = RUNS / time.strftime("%Y%m%d-%H%M%S")
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Proc:
    name: str
    process: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (clean stop), then SIGKILL after `timeout`: only this process, by its id."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Processes:
    """The processes one measure started; all stopped (by pid) when it ends.

    With `BENCH_PYSPY=1` every service and worker process gets a `py-spy record` attached
    (raw collapsed stacks in the run's folder, summarised by `python -m bench.profile`)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[Proc] = []
        self.profilers: list[Proc] = []

    def profile(self, proc: Proc) -> None:
        if os.environ.get("BENCH_PYSPY") != "1":
            return
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        output = self.logs / f"{proc.name}-{proc.pid}.pyspy.txt"
        argv = [spy, "record", "--pid", str(proc.pid), "--rate", "200", "--nonblocking"]
        argv += ["--format", "raw", "--output", str(output)]
        log = self.logs / f"pyspy-{proc.name}-{proc.pid}.log"
        with log.open("wb") as handle:
            process = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT)  # noqa: S603
        self.profilers.append(Proc(f"py-spy {proc.name}", process, log))

    def spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Proc:
        log = self.logs / f"{name}-{len(self.started)}.log"
        handle = log.open("wb")
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
            list(argv),
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        handle.close()
        proc = Proc(name, process, log)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop()
        self.started.clear()
        for spy in self.profilers:  # each ends (and writes) when its process has ended
            try:
                spy.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                spy.process.send_signal(signal.SIGINT)
                spy.process.wait(timeout=10)
        self.profilers.clear()


def service_env(
    database_url: str, ports: dict[str, int], *, run_workers: bool, **extra: str
) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "RELAIS_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "RELAIS_ENV": "development",
        "RELAIS_LOG_LEVEL": "WARNING",
        "RELAIS_RUN_WORKERS": "true" if run_workers else "false",
        **{f"{name.upper()}_PORT": str(port) for name, port in ports.items()},
        **extra,
    }


async def wait_ready(proc: Proc, url: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
            try:
                if (await client.get(url + "/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{proc.name} not ready after {within} s:\n{proc.tail()}")
            await asyncio.sleep(0.1)


class Hub:
    """Some of the three services as processes on loopback ports, on one database."""

    def __init__(self, procs: Processes, database_url: str) -> None:
        self.procs = procs
        self.database_url = database_url
        self.ports = {name: free_port() for name in SERVICES}
        self.running: dict[str, Proc] = {}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    async def start(self, name: str, *, run_workers: bool, **extra: str) -> Proc:
        env = service_env(self.database_url, self.ports, run_workers=run_workers, **extra)
        proc = self.procs.spawn(name, [sys.executable, "-m", f"services.{name}"], env)
        self.running[name] = proc
        await wait_ready(proc, self.url(name))
        self.procs.profile(proc)
        return proc

    def client(self) -> AbstractAsyncContextManager[HubClient]:
        """The hub client (devkit/client.py) of these services, with the admin's key."""
        return HubClient.connect({name: self.url(name) for name in SERVICES}, admin=ADMIN_KEY)

    def start_worker(self, name: str, **extra: str) -> Proc:
        env = service_env(self.database_url, self.ports, run_workers=True, **extra)
        argv = [sys.executable, "-m", f"services.{name}.worker"]
        proc = self.procs.spawn(f"{name}-worker", argv, env)
        self.procs.profile(proc)
        return proc


RESULT_FILE = "RELAIS_BENCH_RESULT"  # where a load process writes its JSON result


async def run_json(argv: Sequence[str], *, within: float = 600.0) -> Any:
    """Run a bench process (a load generator) and return the JSON it wrote to the file named
    by `RELAIS_BENCH_RESULT` (a result of many cases is too long for the last stdout line to
    come through a pipe whole), or else of its last stdout line."""
    with tempfile.TemporaryDirectory(prefix="relais-bench-") as folder:
        result = Path(folder) / "result.json"
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=ROOT,
            env={**os.environ, RESULT_FILE: str(result)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=within)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        if process.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv[:4])} exited {process.returncode}:\n{stderr.decode()[-3000:]}"
            )
        if result.exists():
            return json.loads(result.read_text())
    lines = [line for line in stdout.decode().splitlines() if line.strip()]
    return json.loads(lines[-1])


def loader(mode: str, **config: Any) -> list[str]:
    """The command line of a load process (`python -m bench.load MODE CONFIG-JSON`)."""
    return [sys.executable, "-m", "bench.load", mode, json.dumps(config)]


# --- Database helpers ------------------------------------------------------------------------


@asynccontextmanager
async def connect(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        yield conn
    finally:
        await conn.close()


async def sample_until(
    fetch_count, target: int, *, within: float, interval: float = 0.1, alive=None
) -> list[tuple[float, int]]:
    """Poll a count until it reaches `target`: [(time.monotonic(), count), ...]."""
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + within
    while True:
        count = await fetch_count()
        samples.append((time.monotonic(), count))
        if count >= target:
            return samples
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {count} of {target} after {within} s")
        if alive is not None and not alive():
            raise RuntimeError(f"the worker died at {count} of {target}")
        await asyncio.sleep(interval)


def _time_at(samples: Sequence[tuple[float, int]], level: float) -> float:
    """When the sampled count crossed `level` (linear between samples)."""
    previous = samples[0]
    for current in samples:
        if current[1] >= level:
            t0, c0 = previous
            t1, c1 = current
            if c1 == c0:
                return t1
            return t0 + (t1 - t0) * (level - c0) / (c1 - c0)
        previous = current
    return samples[-1][0]


def steady_rate(samples: Sequence[tuple[float, int]], total: int, low=0.05, high=0.95) -> float:
    """Items per second between `low` and `high` of `total`: leaves out start-up and tail."""
    t_low = _time_at(samples, total * low)
    t_high = _time_at(samples, total * high)
    return (high - low) * total / max(t_high - t_low, 1e-9)


def rate_of_timestamps(stamps: Sequence[float], low=0.05, high=0.95) -> float:
    """Items per second from sorted arrival times, between `low` and `high` of them."""
    ordered = sorted(stamps)
    n = len(ordered)
    if n < 20:
        return float("nan")
    i, j = int(n * low), int(n * high) - 1
    return (j - i) / max(ordered[j] - ordered[i], 1e-9)


def have(command: str) -> bool:
    return shutil.which(command) is not None


# --- The webhook receiver -------------------------------------------------------------------


async def start_receiver(procs: Processes) -> tuple[Proc, str]:
    """The receiver process (`python -m devkit.receiver`) and its base URL, once it answers."""
    port = free_port()
    proc = procs.spawn("receiver", [sys.executable, "-m", "devkit.receiver", str(port)])
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            try:
                await client.get(f"{base}/count")
                return proc, base
            except httpx.HTTPError:
                if not proc.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"receiver did not start:\n{proc.tail()}") from None
                await asyncio.sleep(0.05)


# --- Results ------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table. `ratio` ≥ 1 means the target is met: measured/target for a
    "≥" target, target/measured for a "≤" target."""

    measure: str
    target: str
    measured: str
    ratio: float
    detail: str = ""
    # False for a figure shown beside a target it does not measure yet: no verdict.
    judged: bool = True

    @property
    def met(self) -> bool:
        return self.judged and self.ratio >= 1.0

    @property
    def verdict(self) -> str:
        if not self.judged:
            return "not judged"
        return "met" if self.met else "MISSED"


def at_least(measure: str, target: float, value: float, unit: str, detail: str = "") -> Row:
    return Row(measure, f"≥ {target:,.0f} {unit}", f"{value:,.0f} {unit}", value / target, detail)


def at_most(measure: str, target: float, value: float, unit: str, detail: str = "") -> Row:
    shown = f"{value:,.1f} {unit}" if value != float("inf") else "never (> 30 s)"
    return Row(measure, f"≤ {target:,.0f} {unit}", shown, target / max(value, 1e-9), detail)


def table(rows: Sequence[Row]) -> str:
    headers = ("measure", "target", "measured", "ratio", "")
    body = [(r.measure, r.target, r.measured, f"{r.ratio:.2f}", r.verdict) for r in rows]
    widths = [max([len(h)] + [len(b[i]) for b in body]) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(b) for b in body]
    return "\n".join(out)


# --- CPU accounting ---------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields from the 3rd (state) on


def process_cpu(pid: int, *, with_reaped_children: bool = False) -> float:
    """CPU seconds used by a process (and, optionally, by its children it has waited for)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if with_reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def tree_cpu(root: int) -> float:
    """CPU seconds of a process, of its live descendants, and of the children it reaped."""
    tree = _children()
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += process_cpu(pid, with_reaped_children=True)
        todo.extend(tree.get(pid, []))
    return total


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    return (total - idle) / _TICK, total / _TICK


class CpuMeter:
    """CPU used during a phase: by given processes, by the embedded PostgreSQL, by this bench
    (with its loaders, receivers and services), and by everything else on the machine."""

    def __init__(
        self, server: PgServer, pids: dict[str, int] | None = None, *, trees: bool = False
    ) -> None:
        self.server = server
        self.pids = dict(pids or {})
        self.trees = trees  # count each process with its descendants
        self.start = self._read()

    def _postmaster(self) -> int | None:
        if self.server.pgdata is None:
            return None
        try:
            return int((self.server.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _read(self) -> dict[str, float]:
        busy, total = machine_cpu()
        values = {"machine_busy": busy, "machine_total": total, "bench": tree_cpu(os.getpid())}
        postmaster = self._postmaster()
        values["postgres"] = tree_cpu(postmaster) if postmaster else float("nan")
        for name, pid in self.pids.items():
            values[name] = tree_cpu(pid) if self.trees else process_cpu(pid)
        return values

    def stop(self) -> dict[str, float]:
        end = self._read()
        used = {k: end[k] - self.start[k] for k in end}
        elapsed = used.pop("machine_total") / (os.cpu_count() or 1)
        busy = used.pop("machine_busy")
        ours = used["bench"] + (used["postgres"] if used["postgres"] == used["postgres"] else 0)
        used["other"] = max(0.0, busy - ours) if self.server.pgdata is not None else float("nan")
        used["elapsed"] = elapsed
        return used


def cpu_note(used: dict[str, float], per: float, unit: str, names: Sequence[str]) -> str:
    """'registry 11.2 ms, PostgreSQL 2.1 ms CPU per case; other processes 35 % of the machine'."""
    parts = [f"{name} {used[name] / per * 1000:.1f} ms" for name in names if name in used]
    if used.get("postgres") == used.get("postgres"):
        parts.append(f"PostgreSQL {used['postgres'] / per * 1000:.1f} ms")
    note = ", ".join(parts) + f" CPU per {unit}"
    if used.get("other") == used.get("other"):
        share = used["other"] / max(used["elapsed"] * (os.cpu_count() or 1), 1e-9)
        note += f"; processes outside the bench used {share:.0%} of the machine meanwhile"
    return note
