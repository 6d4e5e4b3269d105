"""Load processes: `python -m bench.load MODE CONFIG-JSON`, printing one JSON line of results.

They run apart from the services (on loopback) so that the load's own CPU is not counted in
the server's process. HTTP goes over a small keep-alive HTTP/1.1 client on asyncio streams:
request bytes are built once per request and responses parsed by Content-Length, so the load
process spends as little of the two cores as possible.

Modes:
- `intake_http`: `POST /cases` from N concurrent connections, for a duration or a count.
- `intake_sql`: the SQL of one intake (services/registry/case_actions.py `create_case`, with
  store/duplicates.py `index_case`, statement for statement) straight through asyncpg, from N
  concurrent connections: the ceiling of intake.
- `paced`: `POST /cases` at a fixed rate (open loop), recording when each answer arrived.
- `gets`: GET requests one after the other, with the latency of each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import sys
import time
import uuid
from datetime import UTC, date, datetime
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


# --- intake straight through the driver --------------------------------------------------------

_AUTH = (
    "SELECT hub.api_keys.id, hub.api_keys.role, hub.api_keys.partner_id, hub.api_keys.key_hash, "
    "hub.api_keys.last_used_at \nFROM hub.api_keys \nWHERE hub.api_keys.key_hash = $1::BYTEA "
    "AND hub.api_keys.revoked_at IS NULL AND hub.api_keys.partner_active IS true"
)
# services/registry/store/cases.py `_KNOWN`, `_INSERT_CASE`; store/duplicates.py `_INDEX`.
_KNOWN = """
    SELECT 'area' AS kind, code AS value FROM hub.areas WHERE code = $1::VARCHAR
    UNION ALL
    SELECT 'service_type', code FROM hub.service_types WHERE code = ANY($2::VARCHAR[])
    UNION ALL
    SELECT 'case', CAST(id AS text) FROM registry.cases
    WHERE owner_partner_id = $3::UUID AND external_id = $4::VARCHAR
    """
_INSERT_CASE = """
        WITH number AS MATERIALIZED (
            SELECT CAST(nextval('registry.case_reference_seq') AS text) AS n
        ),
        new_case AS (
            INSERT INTO registry.cases (id, reference, owner_partner_id, external_id,
                beneficiary, return_info, return_area_code, vulnerabilities, consent)
            SELECT $1::UUID, $2::VARCHAR || lpad(n, greatest(6, length(n)), '0'), $3::UUID,
                $4::VARCHAR, $5::JSONB, $6::JSONB, $7::VARCHAR, $8::VARCHAR[], $9::JSONB
            FROM number
            RETURNING id, reference, owner_partner_id, external_id, beneficiary, return_info,
                return_area_code, vulnerabilities, consent, status, closure_reason, merged_into,
                version, created_at, updated_at
        ),
        new_steps AS (
            INSERT INTO registry.plan_steps (id, case_id, key, position, service_type,
                priority, delivery, depends_on, notes, status, status_reason)
            SELECT s.id, new_case.id, s.key, s.position, s.service_type, s.priority,
                s.delivery, s.depends_on, s.notes, s.status, s.status_reason
            FROM new_case, jsonb_to_recordset($10::JSONB) AS s(id uuid, key text,
                position integer, service_type text, priority text, delivery text,
                depends_on text[], notes text, status text, status_reason text)
        )
        SELECT id, reference, owner_partner_id, external_id, beneficiary, return_info,
            return_area_code, vulnerabilities, consent, status, closure_reason, merged_into,
            version, created_at, updated_at
        FROM new_case
        """
_INDEX = """
        WITH added AS (
            INSERT INTO registry.duplicate_keys (case_id, key)
            SELECT $1::UUID, k.key FROM unnest(CAST($2::VARCHAR[] AS text[])) AS k(key)
        ),
        candidates AS (
            SELECT DISTINCT d.case_id
            FROM unnest(CAST($2::VARCHAR[] AS text[])) AS k(key)
            CROSS JOIN LATERAL (
                SELECT case_id FROM registry.duplicate_keys
                WHERE key = k.key AND case_id <> $1::UUID
                ORDER BY case_id
                LIMIT $3::INTEGER
            ) AS d
        )
        SELECT c.id, c.beneficiary, c.return_area_code
        FROM registry.cases AS c JOIN candidates ON c.id = candidates.case_id
        WHERE coalesce(c.closure_reason, '') <> 'merged'
        """
_UPSERT_DUPLICATE = (
    "INSERT INTO registry.duplicates (id, case_a_id, case_b_id, score, reasons) "
    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (case_a_id, case_b_id) DO UPDATE "
    "SET score = excluded.score, reasons = excluded.reasons "
    "WHERE registry.duplicates.status = 'open'"
)
_APPEND = (
    "INSERT INTO hub.events (id, type, source, subject, actor, audience, correlation_id, "
    "causation_id, data) VALUES ($1::UUID, $2::VARCHAR, $3::VARCHAR, $4::VARCHAR, $5::VARCHAR, "
    "$6::UUID[], $7::VARCHAR, $8::UUID, $9::JSONB) RETURNING hub.events.seq, hub.events.id, "
    "hub.events.tx, hub.events.type, hub.events.source, hub.events.subject, hub.events.time, "
    "hub.events.actor, hub.events.audience, hub.events.correlation_id, "
    "hub.events.causation_id, hub.events.data"
)


def _json_default(value: object) -> object:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(type(value).__name__)


async def intake_sql(config: dict[str, Any]) -> dict[str, Any]:
    """The statements of one intake, in order: the key's look-up outside a transaction (the
    service runs it on the request's connection in autocommit mode), then one transaction per
    case."""
    import asyncpg

    from services.registry import matching
    from services.registry.case_shape import STEP_FIELDS, case_snapshot
    from services.registry.matching import facts_of
    from services.registry.plan import StepDraft, plan_statuses, settle_steps
    from services.registry.schemas_cases import CaseCreate
    from shared.auth import hash_key

    owner = uuid.UUID(config["owner_id"])
    digest = hash_key(config["key"])
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

    async def init(conn: asyncpg.Connection) -> None:
        for name in ("json", "jsonb"):
            await conn.set_type_codec(
                name,
                encoder=lambda v: json.dumps(v, default=_json_default),
                decoder=json.loads,
                schema="pg_catalog",
            )

    pool = await asyncpg.create_pool(
        config["database_url"], min_size=concurrency, max_size=concurrency, init=init
    )
    next_index = 0
    done = 0
    duplicates_found = 0
    latencies: list[float] = []

    async def one(conn: asyncpg.Connection, body: dict[str, Any]) -> None:
        nonlocal duplicates_found
        key_row = await conn.fetchrow(_AUTH, digest)
        assert key_row is not None
        plan = body["plan"]
        async with conn.transaction():
            area = body["return"]["area_code"]
            step_types = [s["service_type"] for s in plan]
            known = await conn.fetch(
                _KNOWN, area, sorted(set(step_types)), owner, body["external_id"]
            )
            assert {r["value"] for r in known if r["kind"] != "case"} == {area, *step_types}
            assert not any(r["kind"] == "case" for r in known)
            settled = settle_steps(
                [
                    StepDraft(
                        service_type=s["service_type"],
                        priority=s.get("priority", "normal"),
                        delivery=s.get("delivery", "referral"),
                        key=s.get("key"),
                        depends_on=s.get("depends_on"),
                        notes=s.get("notes", ""),
                    )
                    for s in plan
                ]
            )
            steps = [
                {
                    "id": uuid.uuid4(),
                    "position": n,
                    "owner_status": None,
                    "referral_status": None,
                    **s,
                }
                for n, s in enumerate(settled, start=1)
            ]
            statuses = plan_statuses(
                steps,
                consent_granted=(body["consent"] or {}).get("referral") == "granted",
                case_open=True,
            )
            for step, (status, reason) in zip(steps, statuses, strict=True):
                step["status"], step["status_reason"] = status, reason
            case_id = uuid.uuid4()
            prefix = f"{area.split('-', 1)[0].upper()}-{datetime.now(UTC).year}-"
            case = dict(
                await conn.fetchrow(
                    _INSERT_CASE,
                    case_id,
                    prefix,
                    owner,
                    body["external_id"],
                    body["beneficiary"],
                    body["return"],
                    area,
                    list(body.get("vulnerabilities") or []),
                    body["consent"],
                    [
                        {
                            "id": str(s["id"]),
                            "position": s["position"],
                            **{k: s[k] for k in STEP_FIELDS[1:]},
                        }
                        for s in steps
                    ],
                )
            )
            facts = facts_of(case)
            keys = sorted(matching.blocking_keys(facts))
            if keys:
                pairs = []
                for other in await conn.fetch(_INDEX, case_id, keys, matching.MAX_CANDIDATES):
                    match = matching.score(facts, facts_of(other))
                    if match is None:
                        continue
                    a, b = sorted((case_id, other["id"]), key=str)
                    pairs.append((uuid.uuid4(), a, b, match.score, list(match.reasons)))
                if pairs:
                    duplicates_found += len(pairs)
                    await conn.executemany(_UPSERT_DUPLICATE, pairs)
            snapshot = case_snapshot(case, steps)
            await conn.fetchrow(
                _APPEND,
                uuid.uuid4(),
                "case.created",
                "/registry",
                f"cases/{case_id}",
                str(owner),
                [owner],
                None,
                None,
                json.loads(json.dumps(snapshot, default=_json_default)),
            )

    stop_at = 0.0

    async def worker() -> None:
        nonlocal next_index, done
        async with pool.acquire() as conn:
            while time.monotonic() < stop_at and next_index < len(bodies):
                body = bodies[next_index]
                next_index += 1
                sent = time.monotonic()
                await one(conn, body)
                latencies.append(time.monotonic() - sent)
                done += 1

    cpu0 = cpu_seconds()
    started = time.monotonic()
    stop_at = started + duration
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    await pool.close()
    return {
        "count": done,
        "seconds": elapsed,
        "rate": done / elapsed,
        "p50_ms": _ms(latencies, 50),
        "p99_ms": _ms(latencies, 99),
        "duplicates": duplicates_found,
        "exhausted": next_index >= len(bodies),
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


MODES = {"intake_http": intake_http, "intake_sql": intake_sql, "paced": paced, "gets": gets}


def main() -> None:
    mode, config = sys.argv[1], json.loads(sys.argv[2])
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(MODES[mode](config))
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
