# ruff: noqa: S608 - the SQL is built from this module's constants only
"""5. Scale: list, feed and get endpoints' p99 latency over 1,000,000 cases and 5,000,000 events,
and the coordination's indicators over a year of them.

`python -m bench.scale` (`make bench-scale`) generates the full size; `python -m bench` runs a
reduced size (50,000 cases, 250,000 events by default) and says so. Rows are generated in
PostgreSQL (`INSERT ... SELECT ... FROM generate_series`), not through the API, in
transactions of 5,000 cases (no service writes rows in bulk: these statements are the
bench's, not copies of the services'), and look like the hub's own:

- 20 partners with API keys and 3 services each, made by the registry's store functions and
  applied to the referrals service's projections by its own `apply_partner`/`apply_service`;
- `registry.cases` with beneficiary, return, consent, and a 3-step plan in
  `registry.plan_steps` whose statuses follow the referrals;
- `referrals.referrals` for steps 1 and 2 of every case (requested 40 %, accepted 40 %,
  in progress 10 %, completed 10 %), with their `referral_history`, and `referrals.cases`,
  the referrals service's copy of each case (the indicators count by its return area);
- `hub.events`: `case.created` (and `case.updated` for one case in five) carrying the full
  case, and `referral.created` / `accepted` / `started` / `completed` carrying the Referral
  with its minimised case and history, with the owner and assignee as audience: 5 events
  per case on average. Each transaction's events share its `tx`, as the router's do.

Left out (the measured endpoints never read them): the referrals service's step projection,
duplicate keys, deliveries. Then, with the three APIs running (no workers), the referrals
service's own rebuild writes the indicators' rollup from those referrals, and one partner's
key requests, one request at a time after a warm-up: `GET /cases?limit=50` (the first page
and pages at random cursors), `GET /cases/{id}` (random cases of its own),
`GET /referrals?role=incoming` (first page and random cursors), `GET /hsds/services` (pages,
plain and fully nested), `GET /fhir/Task?owner=` (the partner's Tasks, first page and random
cursors) and `GET /feed?after=` a cursor in the middle of the log (random events of its own
in the middle third); and the admin's key `GET /indicators` for the year 2024 grouped by
region and service type (target p99 <= 100 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import UUID, uuid4

from bench.common import (
    ADMIN_KEY,
    CpuMeter,
    Hub,
    PgServer,
    Processes,
    Row,
    at_most,
    connect,
    cpu_note,
    loader,
    machine,
    percentile,
    pg_server,
    progress,
    run_dir,
    run_json,
    table,
)
from services.referrals import projections
from services.referrals.store import indicators as indicators_store
from services.referrals.store import loads as loads_store
from services.registry.store import directory as directory_store
from services.registry.store import partners as partners_store
from shared.auth import Principal, create_key
from shared.db import Connection, Database
from shared.eventlog.model import sequence_of
from shared.pagination import encode_cursor
from shared.settings import Settings

TARGET_P99_MS = 25.0
INDICATORS = "GET /indicators (a year by region, type)"
INDICATORS_PATH = "/indicators?from=2024-01-01&to=2025-01-01&group_by=region,service_type"
INDICATORS_TARGET_P99_MS = 100.0
PARTNERS = 20
CHUNK = 5000
REQUESTS = 300

GIVEN = (
    "Aminata", "Moussa", "Fatoumata", "Mamadou", "Awa", "Ibrahima", "Kadiatou", "Oumar",
    "Mariam", "Seydou", "Rokia", "Boubacar", "Assitan", "Modibo", "Hawa", "Souleymane",
    "Djeneba", "Abdoulaye", "Salimata", "Bakary",
)  # fmt: skip
FAMILY = (
    "Traoré", "Coulibaly", "Diarra", "Keïta", "Konaté", "Diallo", "Sissoko", "Touré",
    "Cissé", "Sangaré", "Dembélé", "Koné", "Camara", "Doumbia", "Sidibé", "Maïga",
    "Bagayoko", "Fofana", "Samaké", "Kanté",
)  # fmt: skip
AREAS = ("ML-BKO-01", "ML-BKO-02", "ML-BKO-03", "ML-BKO-04", "ML-BKO-05", "ML-BKO-06")
TYPES = ("psychosocial.individual_counselling", "economic.vocational_training",
         "economic.microbusiness")  # fmt: skip


def partner_key(p: int) -> str:
    return f"rk_bench-scale-partner-{p:02d}-" + "k" * 32


def _array(values: tuple[str, ...]) -> str:
    return "ARRAY[" + ",".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


# SQL expressions of a case number n (and, for referrals, of its step k), shared by the
# statements of one chunk so that every table agrees without joins.
X = {
    "case_id": "md5('case:' || n)::uuid",
    "owner": f"($3::uuid[])[1 + n % {PARTNERS}]",
    "reference": "'ML-2025-' || lpad(n::text, 7, '0')",
    "area": f"({_array(AREAS)})[1 + n % {len(AREAS)}]",
    "created": "(timestamptz '2024-01-01 00:00:00+00' + make_interval(mins => n::int))",
    "beneficiary": f"""jsonb_build_object(
        'given_name', ({_array(GIVEN)})[1 + n % 20],
        'family_name', ({_array(FAMILY)})[1 + (n / 20) % 20],
        'sex', CASE WHEN n % 2 = 0 THEN 'female' ELSE 'male' END,
        'date_of_birth', NULL, 'birth_year', 1960 + n % 40, 'nationality', 'ML',
        'phone', '+2237' || lpad((n % 10000000)::text, 7, '0'),
        'languages', '["bm", "fr"]'::jsonb,
        'id_documents', jsonb_build_array(jsonb_build_object(
            'type', 'national_id', 'number', 'NI' || lpad(n::text, 10, '0'))),
        'household_size', 1 + n % 7)""",
}
X["return"] = (
    f"jsonb_build_object('date', to_char({X['created']} - interval '3 days', 'YYYY-MM-DD'), "
    f"'country_from', 'LY', 'area_code', {X['area']})"
)
X["consent"] = (
    "jsonb_build_object('referral', 'granted', 'given_at', "
    f"to_char({X['created']}, 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), 'method', 'written')"
)
# Referral (n, k) for k in 1, 2: status index 0..9 → requested, accepted, in_progress, completed.
R = {
    "idx": "((n * 2 + k) % 10)",
    "id": "md5('ref:' || n || ':' || k)::uuid",
    "step_id": "md5('step:' || n || ':' || k)::uuid",
    "assignee_no": f"((n * 7 + k) % {PARTNERS})",
}
R["assignee"] = f"($3::uuid[])[1 + {R['assignee_no']}]"
# The partner's services in the order of TYPES: its service of type k.
R["service"] = f"($4::uuid[])[1 + {R['assignee_no']} * {len(TYPES)} + k - 1]"
R["events"] = (
    f"(CASE WHEN {R['idx']} < 4 OR {R['idx']} = 0 THEN 1 WHEN {R['idx']} < 8 THEN 2 WHEN {R['idx']} = 8 THEN 3 ELSE 4 END)"  # noqa: E501
)
STATUSES = "ARRAY['requested', 'accepted', 'in_progress', 'completed']"
EVENT_TYPES = (
    "ARRAY['referral.created', 'referral.accepted', 'referral.started', 'referral.completed']"
)
STEP_STATUS = "ARRAY['referred', 'referred', 'in_progress', 'completed']"


def _ts(expr: str) -> str:
    return f'to_char({expr}, \'YYYY-MM-DD"T"HH24:MI:SS"Z"\')'


@asynccontextmanager
async def store_transaction(database_url: str) -> AsyncIterator[Connection]:
    """A unit of work (`Database.transaction()`) on a `Database` built as the services build
    theirs: the connection the store functions take."""
    settings = Settings(database_url=database_url, db_pool_size=1, db_max_overflow=0)
    db = await Database.connect(settings, application_name="relais-bench-scale")
    try:
        async with db.transaction() as conn:
            yield conn
    finally:
        await db.close()


async def setup_partners(database_url: str) -> tuple[list[UUID], list[UUID]]:
    """The partners, their keys and services, made by the services' own store functions as
    the admin's requests would (with their `partner.created` and `service.created` events),
    and applied to the referrals service's projections as its worker would: (the partners'
    ids, their services' ids in the order of TYPES)."""
    admin = Principal(key_id=uuid4(), role="admin", partner_id=None)
    partners, services = [], []
    async with store_transaction(database_url) as conn:
        for p in range(PARTNERS):
            partner = await partners_store.create_partner(
                conn,
                values={
                    "name": f"Partenaire {p:02d}",
                    "acronym": f"P{p:02d}",
                    "kind": "ngo",
                    "contact_email": f"p{p}@example.org",
                },
                caller=admin,
            )
            await projections.apply_partner(conn, partner)
            await create_key(
                conn, role="partner", partner_id=partner["id"], name="bench", key=partner_key(p)
            )
            partners.append(partner["id"])
            for service_type in TYPES:
                service = await directory_store.create_service(
                    conn,
                    values={
                        "partner_id": partner["id"],
                        "service_type": service_type,
                        "name": f"Partenaire {p:02d} {service_type}",
                        "areas": ["ML"],
                    },
                    caller=admin,
                )
                await projections.apply_service(conn, service)
                services.append(service["id"])
    return partners, services


def chunk_statements() -> list[str]:
    """The statements that generate cases $1..$2 (inclusive) and everything that hangs off them."""
    n_range = "generate_series($1::bigint, $2::bigint) AS n"
    referral_pairs = f"{n_range} CROSS JOIN generate_series(1, 2) AS k"
    case_snapshot = f"""jsonb_build_object(
        'id', {X["case_id"]}, 'reference', {X["reference"]}, 'external_id', 'EXT-' || n,
        'owner_partner_id', {X["owner"]}, 'status', 'open', 'closure_reason', NULL,
        'merged_into', NULL, 'beneficiary', {X["beneficiary"]}, 'return', {X["return"]},
        'vulnerabilities', '["psychosocial_distress"]'::jsonb, 'consent', {X["consent"]},
        'plan', jsonb_build_array(
            jsonb_build_object('id', md5('step:' || n || ':1')::uuid, 'key', '1',
                'service_type', '{TYPES[0]}', 'priority', 'urgent', 'delivery', 'referral',
                'depends_on', '[]'::jsonb, 'notes', '', 'status', 'referred',
                'status_reason', 'routing'),
            jsonb_build_object('id', md5('step:' || n || ':2')::uuid, 'key', '2',
                'service_type', '{TYPES[1]}', 'priority', 'normal', 'delivery', 'referral',
                'depends_on', '[]'::jsonb, 'notes', '', 'status', 'referred',
                'status_reason', 'routing'),
            jsonb_build_object('id', md5('step:' || n || ':3')::uuid, 'key', '3',
                'service_type', '{TYPES[2]}', 'priority', 'normal', 'delivery', 'referral',
                'depends_on', '["1", "2"]'::jsonb, 'notes', '', 'status', 'planned',
                'status_reason', NULL)),
        'version', v, 'created_at', {_ts(X["created"])},
        'updated_at', {_ts(X["created"])})"""
    referral_snapshot = f"""jsonb_build_object(
        'id', {R["id"]}, 'case_id', {X["case_id"]}, 'case_reference', {X["reference"]},
        'step_id', {R["step_id"]},
        'service_type', CASE k WHEN 1 THEN '{TYPES[0]}' ELSE '{TYPES[1]}' END,
        'priority', CASE k WHEN 1 THEN 'urgent' ELSE 'normal' END,
        'status', ({STATUSES})[e], 'status_reason', NULL,
        'assignee_partner_id', {R["assignee"]}, 'service_id', {R["service"]},
        'owner_partner_id', {X["owner"]},
        'deadline_at', {_ts(X["created"] + " + interval '72 hours'")}, 'attempt', 1,
        'outcome', CASE WHEN e = 4 THEN 'done' END,
        'case', CASE WHEN e < 4 THEN jsonb_build_object(
            'reference', {X["reference"]},
            'beneficiary', ({X["beneficiary"]}) - 'id_documents' - 'nationality'
                - 'household_size' - 'date_of_birth',
            'return', jsonb_build_object('area_code', {X["area"]}),
            'vulnerabilities', '[]'::jsonb,
            'steps', jsonb_build_array(jsonb_build_object('key', k::text,
                'service_type', CASE k WHEN 1 THEN '{TYPES[0]}' ELSE '{TYPES[1]}' END,
                'priority', CASE k WHEN 1 THEN 'urgent' ELSE 'normal' END, 'notes', '')),
            'referring_partner', jsonb_build_object('name', 'Partenaire '
                || lpad((n % {PARTNERS})::text, 2, '0'), 'acronym', 'P'
                || lpad((n % {PARTNERS})::text, 2, '0'), 'contact_email',
                'p' || (n % {PARTNERS}) || '@example.org', 'contact_phone', NULL))
            ELSE jsonb_build_object('reference', {X["reference"]}) END,
        'history', (SELECT jsonb_agg(jsonb_build_object('status', ({STATUSES})[h],
            'at', {_ts(X["created"] + " + make_interval(hours => h)")}, 'actor', 'system',
            'note', '')) FROM generate_series(1, e) AS h),
        'version', e, 'created_at', {_ts(X["created"] + " + interval '1 hour'")},
        'updated_at', {_ts(X["created"] + " + make_interval(hours => e)")})"""
    return [
        f"""
        INSERT INTO registry.cases (id, reference, owner_partner_id, external_id, beneficiary,
            return_info, return_area_code, vulnerabilities, consent, status, version,
            created_at, updated_at)
        SELECT {X["case_id"]}, {X["reference"]}, {X["owner"]}, 'EXT-' || n, {X["beneficiary"]},
            {X["return"]}, {X["area"]}, ARRAY['psychosocial_distress'], {X["consent"]}, 'open',
            CASE WHEN n % 5 = 0 THEN 2 ELSE 1 END, {X["created"]},
            {X["created"]} + CASE WHEN n % 5 = 0 THEN interval '1 day' ELSE interval '0' END
        FROM {n_range}
        """,
        f"""
        INSERT INTO registry.plan_steps (id, case_id, key, position, service_type, priority,
            delivery, depends_on, notes, referral_id, referral_attempt, referral_version,
            referral_status, referral_assignee_id, referral_service_id, status, status_reason,
            created_at, updated_at)
        SELECT md5('step:' || n || ':' || k)::uuid, {X["case_id"]}, k::text, k,
            ({_array(TYPES)})[k], CASE k WHEN 1 THEN 'urgent' ELSE 'normal' END, 'referral',
            CASE k WHEN 3 THEN ARRAY['1', '2'] ELSE ARRAY[]::text[] END, '',
            CASE WHEN k < 3 THEN {R["id"]} END, CASE WHEN k < 3 THEN 1 END,
            CASE WHEN k < 3 THEN {R["events"]} END,
            CASE WHEN k < 3 THEN ({STATUSES})[{R["events"]}] END,
            CASE WHEN k < 3 THEN {R["assignee"]} END, CASE WHEN k < 3 THEN {R["service"]} END,
            CASE WHEN k < 3 THEN ({STEP_STATUS})[{R["events"]}] ELSE 'planned' END,
            NULL, {X["created"]}, {X["created"]} + interval '1 hour'
        FROM {n_range} CROSS JOIN generate_series(1, 3) AS k
        """,
        f"""
        INSERT INTO referrals.referrals (id, case_id, case_reference, step_id, service_type,
            priority, status, assignee_partner_id, service_id, owner_partner_id, deadline_at,
            attempt, decision, outcome, version, created_at, updated_at)
        SELECT {R["id"]}, {X["case_id"]}, {X["reference"]}, {R["step_id"]}, ({_array(TYPES)})[k],
            CASE k WHEN 1 THEN 'urgent' ELSE 'normal' END, ({STATUSES})[{R["events"]}],
            {R["assignee"]}, {R["service"]}, {X["owner"]},
            {X["created"]} + interval '72 hours', 1,
            jsonb_build_object('candidates', jsonb_build_array(jsonb_build_object(
                'service_id', {R["service"]}, 'partner_id', {R["assignee"]}, 'rank', 1,
                'coverage_depth', 0, 'priority', 100, 'has_capacity', true, 'load_ratio', 0)),
                'excluded', '[]'::jsonb),
            CASE WHEN {R["events"]} = 4 THEN 'done' END, {R["events"]},
            {X["created"]} + interval '1 hour',
            {X["created"]} + make_interval(hours => {R["events"]})
        FROM {referral_pairs}
        """,
        f"""
        INSERT INTO referrals.referral_history (referral_id, status, at, actor, note)
        SELECT {R["id"]}, ({STATUSES})[h], {X["created"]} + make_interval(hours => h),
            'system', ''
        FROM {referral_pairs} CROSS JOIN LATERAL generate_series(1, {R["events"]}) AS h
        ORDER BY n, k, h
        """,
        f"""
        INSERT INTO hub.events (id, type, source, subject, time, actor, audience, data)
        SELECT id, type, source, subject, time, actor, audience, data FROM (
            SELECT n, 0 AS o, 0 AS k, 0 AS e, md5('ev:case:' || n)::uuid AS id,
                'case.created' AS type, '/registry' AS source,
                'cases/' || {X["case_id"]} AS subject,
                {X["created"]} AS time, {X["owner"]}::text AS actor,
                ARRAY[{X["owner"]}] AS audience, data
            FROM {n_range} CROSS JOIN LATERAL (SELECT 1 AS v) AS one
                CROSS JOIN LATERAL (SELECT {case_snapshot} AS data) AS d
            UNION ALL
            SELECT n, 1, k, e, md5('ev:ref:' || n || ':' || k || ':' || e)::uuid,
                ({EVENT_TYPES})[e], '/referrals', 'referrals/' || {R["id"]},
                {X["created"]} + make_interval(hours => e),
                CASE WHEN e = 1 THEN 'system' ELSE {R["assignee"]}::text END,
                ARRAY[{X["owner"]}, {R["assignee"]}], {referral_snapshot}
            FROM {referral_pairs} CROSS JOIN LATERAL generate_series(1, {R["events"]}) AS e
            UNION ALL
            SELECT n, 2, 0, 0, md5('ev:upd:' || n)::uuid, 'case.updated', '/registry',
                'cases/' || {X["case_id"]}, {X["created"]} + interval '1 day',
                {X["owner"]}::text, ARRAY[{X["owner"]}], data
            FROM {n_range} CROSS JOIN LATERAL (SELECT 2 AS v) AS two
                CROSS JOIN LATERAL (SELECT {case_snapshot} AS data) AS d
            WHERE n % 5 = 0
        ) AS all_events
        ORDER BY n, o, k, e
        """,
        f"""
        INSERT INTO referrals.cases (id, reference, owner_partner_id, status, consent_granted,
            beneficiary, return_area_code, vulnerabilities, version)
        SELECT {X["case_id"]}, {X["reference"]}, {X["owner"]}, 'open', true,
            ({X["beneficiary"]}) - 'id_documents' - 'nationality' - 'household_size',
            {X["area"]}, ARRAY['psychosocial_distress'], CASE WHEN n % 5 = 0 THEN 2 ELSE 1 END
        FROM {n_range}
        """,
    ]


def _bar(done: int, total: int, started: float, label: str) -> str:
    width = 30
    filled = int(width * done / max(total, 1))
    elapsed = time.monotonic() - started
    eta = elapsed / max(done, 1) * (total - done)
    return (
        f"  [{'#' * filled}{'.' * (width - filled)}] {done:>9,}/{total:,} {label} "
        f"{elapsed:5.0f} s elapsed, ~{eta:4.0f} s left"
    )


def _ids_taken(statement: str, partners: list[UUID], services: list[UUID]) -> list[list[UUID]]:
    """The ids a chunk statement takes after its range of cases: $3 the partners', $4 their
    services'."""
    if "$4" in statement:
        return [partners, services]
    return [partners] if "$3" in statement else []


async def generate(database_url: str, cases: int) -> tuple[dict[str, int], UUID]:
    """Generate `cases` cases and what hangs off them; prints a progress bar. Returns the
    counts of rows and the first partner's id."""
    statements = chunk_statements()
    tty = sys.stdout.isatty()
    started = time.monotonic()
    partners, services = await setup_partners(database_url)
    async with connect(database_url) as conn:
        last_line = -1
        for first in range(1, cases + 1, CHUNK):
            last = min(cases, first + CHUNK - 1)
            async with conn.transaction():
                for statement in statements:
                    ids = _ids_taken(statement, partners, services)
                    await conn.execute(statement, first, last, *ids)
            line = _bar(last, cases, started, "cases")
            if tty:
                print("\r" + line, end="", flush=True)
            elif last * 10 // cases != last_line or last == cases:
                last_line = last * 10 // cases
                print(line, flush=True)
        if tty:
            print()
        # The trigger on referrals recorded each service's load changes; fold them into the
        # counters, as the reconciler does once per batch.
        async with store_transaction(database_url) as store_conn:
            await loads_store.fold_changes(store_conn)
        progress("scale: VACUUM ANALYZE")
        await conn.execute("VACUUM ANALYZE")
        counts = {
            name: await conn.fetchval(f"SELECT count(*) FROM {name}")
            for name in (
                "registry.cases",
                "registry.plan_steps",
                "referrals.referrals",
                "referrals.referral_history",
                "hub.events",
            )
        }
        counts["database MB"] = int(
            await conn.fetchval("SELECT pg_database_size(current_database())") / 1e6
        )
    return counts, partners[0]


async def request_plan(
    database_url: str, rng: random.Random, partner: UUID
) -> dict[str, list[str]]:
    """The paths each endpoint group requests, for partner 0 (`partner`): random rows of its
    own, picked here (reads of the bench's choosing, not the services' queries)."""
    async with connect(database_url) as conn:
        cases = await conn.fetch(
            "SELECT id, updated_at FROM registry.cases WHERE owner_partner_id = $1 "
            f"ORDER BY random() LIMIT {REQUESTS}",
            partner,
        )
        incoming = await conn.fetch(
            "SELECT id, updated_at FROM referrals.referrals WHERE assignee_partner_id = $1 "
            f"ORDER BY random() LIMIT {REQUESTS}",
            partner,
        )
        total = await conn.fetchval("SELECT max(seq) FROM hub.events")
        events = await conn.fetch(
            "SELECT tx::text::bigint AS tx, seq FROM hub.events WHERE seq BETWEEN $1 AND $2 "
            f"AND audience @> ARRAY[$3::uuid] ORDER BY random() LIMIT {REQUESTS}",
            total // 3,
            2 * total // 3,
            partner,
        )

    def cursor(row) -> str:
        return encode_cursor([row["updated_at"].isoformat(), str(row["id"])])

    def lists(path: str, rows) -> list[str]:
        out = []
        for i, row in enumerate(rows):
            out.append(path if i % 2 == 0 else f"{path}&cursor={cursor(row)}")
        return out

    paths = {
        "GET /cases?limit=50": lists("/cases?limit=50", cases),
        "GET /cases/{id}": [f"/cases/{row['id']}" for row in cases],
        "GET /referrals?role=incoming": lists("/referrals?role=incoming&limit=50", incoming),
        "GET /feed?after=<middle>": [
            f"/feed?after={sequence_of(row['tx'], row['seq'])}&limit=50" for row in events
        ],
        # The standards views (SPEC 11): the directory's 60 services as HSDS pages (plain and
        # fully nested), and the partner's Tasks through FHIR (first page and random cursors).
        "GET /hsds/services": [
            f"/hsds/services?per_page=20&page={1 + i % 3}" + ("&full=true" if i % 2 else "")
            for i in range(len(cases))
        ],
        "GET /fhir/Task?owner=": [
            f"/fhir/Task?owner=Organization/{partner}&_count=50"
            + (f"&next={cursor(row)}" if i % 2 else "")
            for i, row in enumerate(incoming)
        ],
        INDICATORS: [INDICATORS_PATH] * REQUESTS,
    }
    for values in paths.values():
        rng.shuffle(values)
    return paths


SERVICE_OF = {
    "GET /cases?limit=50": "registry",
    "GET /cases/{id}": "registry",
    "GET /referrals?role=incoming": "referrals",
    "GET /feed?after=<middle>": "notifications",
    "GET /hsds/services": "registry",
    "GET /fhir/Task?owner=": "referrals",
    INDICATORS: "referrals",
}


async def measure_size(server: PgServer, procs: Processes, *, cases: int, label: str) -> list[Row]:
    database = await server.fresh_database("scale")
    progress(f"scale: generating {cases:,} cases and ~{cases * 5:,} events{label}")
    counts, first_partner = await generate(database, cases)
    progress("scale: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    hub = Hub(procs, database)
    for name in ("registry", "referrals", "notifications"):
        await hub.start(name, run_workers=False)
    # The reference data is loaded (by the registry's start): the referrals service's own
    # rebuild writes the indicators' rollup from the generated referrals.
    progress("scale: the indicators' rollup")
    async with connect(database) as conn:
        await indicators_store.rebuild(conn)
        await conn.execute("VACUUM ANALYZE")
    plan = await request_plan(database, random.Random(7), first_partner)
    rows = []
    for group, paths in plan.items():
        service = SERVICE_OF[group]
        key = ADMIN_KEY if group == INDICATORS else partner_key(0)
        meter = CpuMeter(server, {service: hub.running[service].pid})
        result = await run_json(
            loader(
                "gets",
                url=hub.url(SERVICE_OF[group]),
                groups={group: {"key": key, "paths": paths}},
                warmup=20,
            )
        )
        used = meter.stop()
        timings = result[group]
        if timings["errors"]:
            raise RuntimeError(f"{group}: {timings['errors']}")
        ms = timings["ms"]
        p50, p99 = percentile(ms, 50), percentile(ms, 99)
        progress(f"scale: {group:<30} p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  ({len(ms)} requests)")
        rows.append(
            at_most(
                f"scale{label}: {group} p99",
                INDICATORS_TARGET_P99_MS if group == INDICATORS else TARGET_P99_MS,
                p99,
                "ms",
                f"p50 {p50:.1f} ms, max {max(ms):.1f} ms over {len(ms)} requests; "
                + cpu_note(used, len(ms) + 20, "request", [service]),
            )
        )
    rows[0].detail += "; generated " + ", ".join(f"{k} {v:,}" for k, v in counts.items())
    procs.stop_all()
    if os.environ.get("BENCH_SCALE_KEEP") != "1":
        await server.drop(database)
    else:
        server.created.remove(database.rsplit("/", 1)[-1])  # not dropped at the end either
        progress(f"scale: database kept: {database}")
    return rows


async def measure_reduced(server: PgServer, procs: Processes, *, quick: bool = False) -> list[Row]:
    cases = int(os.environ.get("BENCH_SCALE_CASES", "10000" if quick else "50000"))
    return await measure_size(server, procs, cases=cases, label=f" (reduced: {cases:,} cases)")


async def main(cases: int) -> int:
    logs = run_dir()
    with pg_server() as server:
        info = await machine(server)
        print("Relais bench: scale (SPEC section 10)")
        for k, v in info.items():
            print(f"  {k:<11} {v}")
        print(flush=True)
        procs = Processes(logs)
        try:
            label = "" if cases >= 1_000_000 else f" ({cases:,} cases)"
            rows = await measure_size(server, procs, cases=cases, label=label)
        finally:
            procs.stop_all()
            await server.drop_all()
    print()
    print(table(rows))
    print()
    for row in rows:
        if row.detail:
            print(f"  {row.measure}: {row.detail}")
    (logs / "results.json").write_text(
        json.dumps({"machine": info, "rows": [r.__dict__ for r in rows]}, indent=2)
    )
    return 0


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--cases", type=int, default=1_000_000)
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.cases)))


if __name__ == "__main__":
    cli()
