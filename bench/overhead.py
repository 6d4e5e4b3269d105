"""The per-request overhead of the HTTP layer: CPU per request through one service's app.

`python -m bench.overhead` calls the registry's ASGI app in this process (no sockets, no
client library: a scope, a `receive` that hands over the body, a `send` that keeps only the
status) and reports the process's CPU time per request, the median of several rounds:

- `GET /healthz`: the lightest answer;
- `POST /cases` with a small JSON body and no key: body read, media type checked, 401;
- `POST /partners` with an admin key and a new `Idempotency-Key` each time: the whole path of
  a write (the key's check, the idempotency record claimed and completed, the partner and its
  event), 201;
- the same request again under a key already used: the answer replayed from its record.

The last two run on a fresh database (`BENCH_DATABASE_URL`, else the embedded PostgreSQL,
as for `make bench`); their figures count this process only, not PostgreSQL.
Options: `--requests N` per round (default 2000), `--rounds R` (default 5).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import statistics
import time
from collections.abc import Awaitable, Callable

from bench.common import ADMIN_KEY, pg_server
from services.registry.app import create_app
from shared.observability import configure_logging
from shared.settings import Settings

Call = Callable[[], Awaitable[int]]


def _request(
    app: Callable, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> Call:
    """One request's ASGI call, answering its status."""
    if body:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ]

    async def call() -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"bench"), *headers],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8001),
            "app": app,
        }
        delivered = False
        status = 0

        async def receive() -> dict:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(scope, receive, send)
        return status

    return call


async def _cpu_per_request(name: str, calls: Callable[[], Call], expected: int, n: int, r: int):
    """Median over `r` rounds of the CPU microseconds per request of `n` requests."""
    status = await calls()()
    if status != expected:
        raise RuntimeError(f"{name}: answered {status}, expected {expected}")
    for _ in range(min(200, n)):  # warm-up
        await calls()()
    per_round = []
    for _ in range(r):
        prepared = [calls() for _ in range(n)]
        gc.collect()
        started = time.process_time()
        for call in prepared:
            await call()
        per_round.append((time.process_time() - started) / n * 1e6)
    return statistics.median(per_round)


async def measure(requests: int, rounds: int) -> dict[str, float]:
    """CPU microseconds per request of each kind of request."""
    configure_logging("WARNING", service="registry")
    results: dict[str, float] = {}
    with pg_server() as server:
        database_url = await server.fresh_database("overhead")
        try:
            settings = Settings(
                database_url=database_url,
                env="development",
                run_workers=False,
                log_level="WARNING",
                bootstrap_admin_key=ADMIN_KEY,
                gc_freeze=False,
            )
            app = create_app(settings)
            async with app.router.lifespan_context(app):
                admin = [(b"authorization", f"Bearer {ADMIN_KEY}".encode())]
                healthz = _request(app, "GET", "/healthz", [], b"")
                unauthenticated = _request(app, "POST", "/cases", [], json.dumps(_CASE).encode())
                serial = itertools.count()

                def new_partner() -> Call:
                    i = next(serial)
                    body = json.dumps({"name": f"Partner {i}", "kind": "ngo"}).encode()
                    key = [(b"idempotency-key", f"bench-{i}".encode())]
                    return _request(app, "POST", "/partners", [*admin, *key], body)

                replay_body = json.dumps({"name": "Partner replayed", "kind": "ngo"}).encode()
                replay_headers = [*admin, (b"idempotency-key", b"bench-replayed")]
                replayed = _request(app, "POST", "/partners", replay_headers, replay_body)
                await replayed()
                measures = [
                    ("GET /healthz", lambda: healthz, 200),
                    ("POST /cases, JSON, no key (401)", lambda: unauthenticated, 401),
                    ("POST /partners, admin, new Idempotency-Key (201)", new_partner, 201),
                    ("POST /partners, admin, same key replayed (201)", lambda: replayed, 201),
                ]
                for name, calls, expected in measures:
                    results[name] = await _cpu_per_request(name, calls, expected, requests, rounds)
        finally:
            await server.drop_all()
    return results


_CASE = {"external_id": "bench-1", "beneficiary": {"given_name": "Awa"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results = asyncio.run(measure(args.requests, args.rounds))
    print(f"CPU per request, median of {args.rounds} rounds of {args.requests} (registry app)")
    for name, micros in results.items():
        print(f"  {name:<56} {micros:8.1f} µs")


if __name__ == "__main__":
    main()
