"""Load processes: `python -m bench.load MODE CONFIG-JSON`, printing one JSON line of results.

They run apart from the services (on loopback) so that the load's own CPU is not counted in
the server's process. HTTP goes over a small keep-alive HTTP/1.1 client on asyncio streams:
request bytes are built once per request and responses parsed by Content-Length, so the load
process spends as little of the two cores as possible.

Modes:
- `intake_http`: `POST /cases` from N concurrent connections, for a duration or a count.
- `intake_direct`: one intake as the registry runs it (the key's look-up, then
  `services/registry/case_actions.py` `create_case` with its store functions) on a
  `shared.db.Database` built as the service builds its own (asyncpg, statements compiled
  once), without HTTP, from N concurrent connections: the same SQL straight through the
  driver, the ceiling of intake.
- `paced`: `POST /cases` at a fixed rate (open loop), recording when each answer arrived.
- `gets`: GET requests one after the other, with the latency of each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from bench.data import case_body

# --- A minimal HTTP/1.1 keep-alive client -----------------------------------------------------


class HttpError(RuntimeError):
    pass


class Connection:
    # Servers close idle keep-alive connections (uvicorn after 5 s): one idle longer than
    # this is opened anew rather than written to as the server closes it.
    IDLE_SECONDS = 4.0

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_used = 0.0

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
            self.writer = None

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, bytes]:
        if self.writer is not None and time.monotonic() - self.last_used > self.IDLE_SECONDS:
            await self.close()
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        if body or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = None
        chunked = False
        closing = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and "close" in value.lower():
                closing = True
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            data = b"".join(parts)
        elif length is not None:
            data = await self.reader.readexactly(length)
        else:
            data = await self.reader.read()
            closing = True
        self.last_used = time.monotonic()
        if closing:
            await self.close()
        return status, data


def split_url(url: str) -> tuple[str, int]:
    rest = url.split("://", 1)[1].rstrip("/")
    host, _, port = rest.partition(":")
    return host, int(port or 80)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _ms(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] * 1000


# --- intake over HTTP -------------------------------------------------------------------------


async def intake_http(config: dict[str, Any]) -> dict[str, Any]:
    """Closed loop: each connection posts its next case as soon as the last one answered."""
    host, port = split_url(config["url"])
    headers = {
        "Authorization": f"Bearer {config['key']}",
        "Content-Type": "application/json",
    }
    start_index = int(config["start_index"])
    count = config.get("count")
    duration = config.get("duration")
    next_index = start_index
    done = 0
    errors: dict[str, int] = {}
    latencies: list[float] = []
    stop_at = None

    async def worker() -> None:
        nonlocal next_index, done
        conn = Connection(host, port)
        try:
            while True:
                if count is not None and next_index >= start_index + count:
                    return
                if stop_at is not None and time.monotonic() >= stop_at:
                    return
                i = next_index
                next_index += 1
                body = json.dumps(case_body(i)).encode()
                sent = time.monotonic()
                status, data = await conn.request("POST", "/cases", headers, body)
                latencies.append(time.monotonic() - sent)
                if status == 201:
                    done += 1
                else:
                    key = f"{status}: {data[:200].decode(errors='replace')}"
                    errors[key] = errors.get(key, 0) + 1
        finally:
            await conn.close()

    cpu0 = cpu_seconds()
    started = time.monotonic()
    if duration is not None:
        stop_at = started + float(duration)
    await asyncio.gather(*(worker() for _ in range(int(config["concurrency"]))))
    elapsed = time.monotonic() - started
    return {
        "count": done,
        "seconds": elapsed,
        "rate": done / elapsed,
        "errors": errors,
        "p50_ms": _ms(latencies, 50),
        "p99_ms": _ms(latencies, 99),
        "next_index": next_index,
        "loader_cpu_s": cpu_seconds() - cpu0,
    }


# --- the intake's own code without HTTP ---------------------------------------------------------


async def intake_direct(config: dict[str, Any]) -> dict[str, Any]:
    """One intake as the registry runs it, without HTTP: on a `shared.db.Database` built as
    the service builds its own (an asyncpg pool), the key looked up in autocommit as
    `shared.deps.get_caller` does (`shared.auth.look_up`), then in one unit of work
    (`Database.transaction()`) `services.registry.case_actions.create_case` (its store
    functions: the codes and the external id, the case with its steps, the duplicate keys and
    candidates, the event)."""
    from services.registry import case_actions
    from services.registry.schemas_cases import CaseCreate
    from shared.auth import look_up
    from shared.db import Database
    from shared.settings import Settings

    start_index = int(config["start_index"])
    duration = float(config["duration"])
    concurrency = int(config["concurrency"])
    # The request bodies as the API hands them to the store (validated and dumped): prepared
    # before the clock starts, as the HTTP loader prepares nothing the server does.
    planned = int(config.get("max_count", 40_000))
    bodies = [
        CaseCreate.model_validate(case_body(i)).model_dump(mode="json", by_alias=True)
        for i in range(start_index, start_index + planned)
    ]
    settings = Settings(
        database_url=config["database_url"], db_pool_size=concurrency, db_max_overflow=0
    )
    db = await Database.connect(settings, application_name="relais-bench-intake")
    next_index = 0
    done = 0
    latencies: list[float] = []

    async def one(body: dict[str, Any]) -> None:
        caller = await look_up(db, config["key"])
        assert caller is not None and caller.partner_id is not None
        async with db.transaction() as conn:
            await case_actions.create_case(
                conn, owner_id=caller.partner_id, body=body, caller=caller
            )

    stop_at = 0.0

    async def worker() -> None:
        nonlocal next_index, done
        while time.monotonic() < stop_at and next_index < len(bodies):
            body = bodies[next_index]
            next_index += 1
            sent = time.monotonic()
            await one(body)
            latencies.append(time.monotonic() - sent)
            done += 1

    # The pool's connections opened, and their statements prepared, before the clock starts,
    # as the service's are by the warm-up.
    await asyncio.gather(*(one(body) for body in bodies[:concurrency]))
    next_index = concurrency
    cpu0 = cpu_seconds()
    started = time.monotonic()
    stop_at = started + duration
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    await db.close()
    return {
        "count": done,
        "seconds": elapsed,
        "rate": done / elapsed,
        "p50_ms": _ms(latencies, 50),
        "p99_ms": _ms(latencies, 99),
        "exhausted": next_index >= len(bodies),
        "next_index": start_index + next_index,
        "loader_cpu_s": cpu_seconds() - cpu0,
    }


# --- paced intake (latency) -------------------------------------------------------------------


async def paced(config: dict[str, Any]) -> dict[str, Any]:
    """Open loop: case i is posted at start + i / rate, on a free connection (a new one when
    all are busy), so a slow answer never delays the next post. Records, per case, its
    reference and `time.time()` when the 201 arrived (the transaction had committed)."""
    host, port = split_url(config["url"])
    headers = {"Authorization": f"Bearer {config['key']}", "Content-Type": "application/json"}
    rate = float(config["rate"])
    total = int(rate * float(config["duration"]))
    start_index = int(config["start_index"])
    idle: list[Connection] = []
    results: list[tuple[str, float, float]] = []
    errors: dict[str, int] = {}
    late = 0
    # At most this many requests in flight: beyond, posts wait (and count as late).
    slots = asyncio.Semaphore(int(config.get("max_connections", 64)))
    stop_at = float("inf")

    skipped = 0

    async def post(i: int) -> None:
        nonlocal skipped
        async with slots:
            if time.monotonic() > stop_at:
                skipped += 1  # its turn came after the run's end: not posted
                return
            conn = idle.pop() if idle else Connection(host, port)
            body = json.dumps(case_body(i)).encode()
            sent = time.monotonic()
            status, data = await conn.request("POST", "/cases", headers, body)
            answered = time.time()
            if status == 201:
                results.append((json.loads(data)["reference"], answered, time.monotonic() - sent))
            else:
                key = f"{status}: {data[:200].decode(errors='replace')}"
                errors[key] = errors.get(key, 0) + 1
            idle.append(conn)

    tasks = []
    cpu0 = cpu_seconds()
    started = time.monotonic()
    # A hub that cannot keep up would stretch the run: nothing is posted after the duration
    # (plus 20 %), and what was not posted is reported.
    stop_at = started + float(config["duration"]) * 1.2
    for n in range(total):
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.01:
            late += 1
        if slots.locked():
            late += 1
            await slots.acquire()  # wait for a free slot: the load cannot go faster
            slots.release()
        tasks.append(asyncio.create_task(post(start_index + n)))
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    for conn in idle:
        await conn.close()
    return {
        "scheduled": total,
        "posted": len(tasks) - skipped,
        "seconds": elapsed,
        "cases": results,
        "errors": errors,
        "late_posts": late,
        "connections": len(idle),
        "loader_cpu_s": cpu_seconds() - cpu0,
    }


# --- GETs (scale) -----------------------------------------------------------------------------


async def gets(config: dict[str, Any]) -> dict[str, Any]:
    """Each group's paths one after another on one keep-alive connection, after a warm-up;
    returns every latency in ms, and the statuses that were not 200."""
    host, port = split_url(config["url"])
    out: dict[str, Any] = {}
    for name, group in config["groups"].items():
        headers = {"Authorization": f"Bearer {group['key']}"}
        conn = Connection(host, port)
        for path in group["paths"][: int(config.get("warmup", 10))]:
            await conn.request("GET", path, headers)
        latencies, bad = [], {}
        for path in group["paths"]:
            sent = time.perf_counter()
            status, data = await conn.request("GET", path, headers)
            latencies.append((time.perf_counter() - sent) * 1000)
            if status != 200:
                key = f"{status}: {data[:200].decode(errors='replace')}"
                bad[key] = bad.get(key, 0) + 1
        await conn.close()
        out[name] = {"ms": latencies, "errors": bad}
    return out


MODES = {
    "intake_http": intake_http,
    "intake_direct": intake_direct,
    "paced": paced,
    "gets": gets,
}


def main() -> None:
    mode, config = sys.argv[1], json.loads(sys.argv[2])
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(MODES[mode](config))
    encoded = json.dumps(result, default=str)
    path = os.environ.get("RELAIS_BENCH_RESULT")
    if path:
        Path(path).write_text(encoded)
    else:
        print(encoded, flush=True)


if __name__ == "__main__":
    main()
