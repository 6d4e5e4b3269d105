"""What the database refuses never answers 500 (SPEC 7 and 9): a request whose value trips a
constraint answers 409 or 422 naming the field, and changes nothing; a database that cannot
read its files or serve right now answers 503 with Retry-After.

The stores check references before they write; a race past those checks, or a check that
is missing, is caught by the unexpected-error path by the constraint's name
(`shared.constraints`). Every constraint of the schema is either mapped to the request field
that fills it or listed as one only the hub's own values reach.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import pytest

from services.notifications.app import create_app as notifications_app
from services.registry.app import create_app as registry_app
from shared.constraints import HUB_CONSTRAINTS, REQUEST_CONSTRAINTS
from shared.db import Database, plain_url
from shared.embedded_pg import EmbeddedPostgres, free_port
from shared.migrate import upgrade
from shared.problems import PROBLEM_BASE, unexpected_error_response
from shared.settings import Settings
from tests.conftest import running
from tests.factories import (
    bearer,
    case_body,
    make_admin_key,
    make_case,
    make_partner,
    make_partner_key,
)
from tests.registry.helpers import assert_problem, database_fingerprint, event_count

UNKNOWN = "00000000-0000-4000-8000-000000000000"
SCHEMAS = ("hub", "registry", "referrals", "notifications")


def the_field(body: dict) -> list[str]:
    return [e["field"] for e in body.get("errors") or []]


# --- Every constraint is decided ---------------------------------------------------------


async def test_every_constraint_of_the_schema_is_mapped_to_a_request_field_or_to_the_hub(
    database_url,
):
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        rows = await conn.fetch(
            """
            SELECT n.nspname || '.' || c.conname AS name
            FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
            WHERE n.nspname = ANY($1::text[]) AND c.contype IN ('p', 'f', 'u', 'c', 'x')
            UNION
            SELECT schemaname || '.' || indexname FROM pg_indexes
            WHERE schemaname = ANY($1::text[]) AND indexdef LIKE 'CREATE UNIQUE INDEX%'
            """,
            list(SCHEMAS),
        )
    finally:
        await conn.close()
    in_schema = {r["name"] for r in rows} - {"hub.alembic_version_pkc"}  # Alembic's own
    decided = set(REQUEST_CONSTRAINTS) | set(HUB_CONSTRAINTS)
    assert not set(REQUEST_CONSTRAINTS) & set(HUB_CONSTRAINTS)
    assert in_schema - decided == set(), "constraints no one decided the answer of"
    assert decided - in_schema == set(), "names that are not in the schema"


# --- The stores check before they write ----------------------------------------------------


async def test_an_upsert_for_an_owner_that_does_not_exist_answers_422_and_writes_nothing(
    settings,
):
    app = registry_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        await make_partner(client, admin)
        before = await database_fingerprint(app)
        response = await client.put(
            "/cases/by-external-id/OIM-0001",
            json=case_body(owner_partner_id=UNKNOWN),
            headers=bearer(admin),
        )
        problem = assert_problem(response, 422)
        assert problem["type"] == PROBLEM_BASE + "validation"
        assert the_field(problem) == ["body.owner_partner_id"]
        assert problem["errors"][0]["message"] == "no partner with this id"
        assert await database_fingerprint(app) == before


async def test_an_admin_endpoint_for_a_partner_that_does_not_exist_answers_422(settings):
    settings.notifications_allow_private_targets = True
    registry, notifications = registry_app(settings), notifications_app(settings)
    async with running(registry) as reg, running(notifications) as client:
        admin = await make_admin_key(registry.state.db)
        partner = await make_partner(reg, admin)
        endpoint = {"url": "http://127.0.0.1:9/webhooks", "event_types": ["referral.*"]}

        response = await client.post(
            "/endpoints", json={**endpoint, "partner_id": UNKNOWN}, headers=bearer(admin)
        )
        problem = assert_problem(response, 422)
        assert problem["type"] == PROBLEM_BASE + "validation"
        assert the_field(problem) == ["body.partner_id"]
        listed = await client.get("/endpoints", headers=bearer(admin))
        assert listed.json()["items"] == []

        known = await client.post(
            "/endpoints", json={**endpoint, "partner_id": partner["id"]}, headers=bearer(admin)
        )
        assert known.status_code == 201, known.text
        assert known.json()["partner_id"] == partner["id"]


# --- Races past the checks: the constraint answers ----------------------------------------


async def _hold_a_case(database_url: str, *, owner_id: str, external_id: str):
    """A connection whose open transaction has inserted a case of `owner_id` with
    `external_id`: a request inserting the same waits on it, past its own check."""
    conn = await asyncpg.connect(plain_url(database_url))
    transaction = conn.transaction()
    await transaction.start()
    await conn.execute(
        """
        INSERT INTO registry.cases (id, reference, owner_partner_id, external_id, beneficiary,
            return_info, return_area_code, consent)
        VALUES ($1, 'ML-2026-RACE', $2, $3, '{}', '{}', 'ML', '{}')
        """,
        uuid.uuid4(),
        uuid.UUID(owner_id),
        external_id,
    )
    return conn, transaction


async def _wait_for_a_lock_wait(database_url: str) -> None:
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        deadline = time.monotonic() + 20
        while not await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ):
            assert time.monotonic() < deadline, "the request never waited on the other insert"
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


async def _cases_with(app, external_id: str) -> int:
    async with app.state.db.connection() as conn:
        return await conn.fetchval(
            "SELECT count(*) FROM registry.cases WHERE external_id = $1", external_id
        )


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("POST", "/cases", "body.external_id"),
        ("PUT", "/cases/by-external-id/OIM-RACE", "path.external_id"),
    ],
)
async def test_the_loser_of_two_intakes_racing_for_one_external_id_answers_409(
    settings, database_url, method, path, field
):
    app = registry_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        owner = await make_partner(client, admin)
        key = (await make_partner_key(client, admin, owner["id"]))["key"]
        events = await event_count(app)
        conn, transaction = await _hold_a_case(
            database_url, owner_id=owner["id"], external_id="OIM-RACE"
        )
        try:
            request = asyncio.create_task(
                client.request(
                    method, path, json=case_body(external_id="OIM-RACE"), headers=bearer(key)
                )
            )
            await _wait_for_a_lock_wait(database_url)
            await transaction.commit()
            response = await request
        finally:
            await conn.close()
        problem = assert_problem(response, 409)
        assert problem["type"] == PROBLEM_BASE + "conflict"
        assert the_field(problem) == [field]
        assert await _cases_with(app, "OIM-RACE") == 1  # the winner's alone
        assert await event_count(app) == events


# --- The safety net, on the real errors of each constraint ----------------------------------

PARTNER = "'11111111-1111-4111-8111-111111111111'"
A_PARTNER = f"INSERT INTO registry.partners (id, name, kind) VALUES ({PARTNER}, 'Awa Keita', 'ngo')"


def a_case(owner: str) -> str:
    return (
        "INSERT INTO registry.cases (id, reference, owner_partner_id, external_id, beneficiary, "
        "return_info, return_area_code, consent) VALUES (gen_random_uuid(), "
        f"left(md5(random()::text), 20), {owner}, 'Awa-Keita', "
        """'{"given_name": "Awa"}', '{}', 'ML', '{}')"""
    )


def a_service(partner: str, status: str = "active") -> str:
    return (
        "INSERT INTO registry.services (id, partner_id, service_type, name, areas, status) "
        f"VALUES (gen_random_uuid(), {partner}, 'x', 'Awa Keita', '{{ML}}', '{status}')"
    )


def a_service_type(dimension: str) -> str:
    return (
        "INSERT INTO hub.service_types (code, name, dimension) "
        f"VALUES ('social.keita', 'Awa Keita', '{dimension}')"
    )


# constraint: (statements, the last of which trips it; status; field)
TRIPPED = {
    "registry.fk_cases_owner_partner_id_partners": (
        [a_case(f"'{UNKNOWN}'")],
        422,
        "body.owner_partner_id",
    ),
    "registry.uq_cases_owner_partner_id_external_id": (
        [A_PARTNER, a_case(PARTNER), a_case(PARTNER)],
        409,
        "body.external_id",
    ),
    "registry.fk_services_partner_id_partners": (
        [a_service(f"'{UNKNOWN}'")],
        422,
        "body.partner_id",
    ),
    "registry.ck_partners_kind": (
        [A_PARTNER.replace("'ngo'", "'Keita'")],
        422,
        "body.kind",
    ),
    "registry.ck_partners_status": (
        [A_PARTNER, f"UPDATE registry.partners SET status = 'Keita' WHERE id = {PARTNER}"],
        422,
        "body.status",
    ),
    "registry.ck_services_status": ([A_PARTNER, a_service(PARTNER, "Keita")], 422, "body.status"),
    "hub.pk_service_types": (
        [a_service_type("social"), a_service_type("social")],
        409,
        "body.code",
    ),
    "hub.ck_service_types_dimension": ([a_service_type("Keita")], 422, "body.dimension"),
    "hub.fk_areas_parent_code_areas": (
        [
            "INSERT INTO hub.areas (code, name, level, depth, parent_code, path, "
            "code_list_version) VALUES ('KEITA-1', 'Awa Keita', 'region', 1, 'KEITA', "
            "'{KEITA,KEITA-1}', 'v')"
        ],
        422,
        "file.parent_code",
    ),
    "not null": (
        [A_PARTNER, f"UPDATE registry.partners SET name = NULL WHERE id = {PARTNER}"],
        422,
        "body.name",
    ),
}


def test_every_constraint_a_request_reaches_is_tripped_below():
    assert set(REQUEST_CONSTRAINTS) == set(TRIPPED) - {"not null"}


@pytest.mark.parametrize("constraint", sorted(TRIPPED))
async def test_a_tripped_constraint_answers_4xx_naming_the_field_and_quoting_no_value(
    settings, constraint
):
    statements, status, field = TRIPPED[constraint]
    db = await Database.connect(settings)
    try:
        with pytest.raises(asyncpg.PostgresError) as raised:
            async with db.transaction() as conn:
                for statement in statements:
                    await conn.execute(statement)
    finally:
        await db.close()
    response = unexpected_error_response(raised.value)
    body = json.loads(response.body)
    assert response.status_code == status, body
    assert response.media_type == "application/problem+json"
    assert body["type"] == PROBLEM_BASE + ("conflict" if status == 409 else "validation")
    assert the_field(body) == [field]
    assert "Keita" not in response.body.decode()  # nothing of the row, nor of its detail


# --- A database that cannot serve answers 503 ------------------------------------------------


@pytest.mark.parametrize(
    "sqlstate",
    [
        "58000",  # system error
        "58030",  # I/O error
        "58P01",  # could not open file
        "XX001",  # data corrupted
        "XX002",  # index corrupted
        "53100",  # disk full
        "53200",  # out of memory
        "57P04",  # database dropped
    ],
)
async def test_a_database_failing_with_an_outage_state_answers_503_with_retry_after(
    settings, sqlstate
):
    """Raised by a real server (the states a failing disk or server reports), classified by
    the unexpected-error path."""
    db = await Database.connect(settings)
    try:
        with pytest.raises(asyncpg.PostgresError) as raised:
            async with db.connection() as conn:
                await conn.execute(
                    f"DO $$ BEGIN RAISE EXCEPTION 'Awa Keita' USING ERRCODE = '{sqlstate}'; END $$"
                )
    finally:
        await db.close()
    response = unexpected_error_response(raised.value)
    body = json.loads(response.body)
    assert response.status_code == 503, body
    assert body["type"] == PROBLEM_BASE + "unavailable"
    assert response.headers["Retry-After"]
    assert "Keita" not in response.body.decode()


@pytest.mark.slow
async def test_a_database_whose_table_file_vanished_answers_503_with_retry_after():
    """A PostgreSQL of this test's own loses the file of `registry.partners` while it is
    stopped; once it runs again, reading partners fails with "could not open file"."""
    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="relais-vanished-pg-")), free_port())
    server.start()
    try:
        conn = await asyncpg.connect(server.url())
        await conn.execute("CREATE DATABASE relais")
        await conn.close()
        url = server.url("relais")
        await asyncio.to_thread(upgrade, url)
        settings = Settings(
            database_url=url,
            env="development",
            run_workers=False,
            log_level="WARNING",
            gc_freeze=False,
        )
        app = registry_app(settings)
        async with running(app) as client:
            admin = await make_admin_key(app.state.db)
            await make_partner(client, admin)
            assert (await client.get("/partners", headers=bearer(admin))).status_code == 200
            async with app.state.db.connection() as conn:
                relation = await conn.fetchval("SELECT pg_relation_filepath('registry.partners')")

        await asyncio.to_thread(server.stop)
        main_fork = server.pgdata / relation
        for file in main_fork.parent.iterdir():  # the main fork, its other forks and segments
            if file.name == main_fork.name or file.name.startswith(
                (f"{main_fork.name}_", f"{main_fork.name}.")
            ):
                file.unlink()
        await asyncio.to_thread(server.start)

        app = registry_app(settings)
        async with running(app) as client:
            response = await client.get("/partners", headers=bearer(admin))
            problem = assert_problem(response, 503)
            assert problem["type"] == PROBLEM_BASE + "unavailable"
            assert response.headers["Retry-After"]
    finally:
        await asyncio.to_thread(server.destroy)


# --- A merge gives the moved steps keys of their own ---------------------------------------


async def test_a_merge_moving_steps_whose_long_keys_share_a_prefix_gives_each_its_own_key(
    settings,
):
    """The moved keys are `<reference>.<key>` cut to the column's 40 characters; two keys
    alike up to the cut get a numbered suffix that is never cut away."""
    app = registry_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        owner = await make_partner(client, admin)
        key = (await make_partner_key(client, admin, owner["id"]))["key"]
        keep = await make_case(client, key, external_id="OIM-KEEP", plan=[])
        steps = [
            {"key": "k" * 30 + end, "service_type": "economic.vocational_training"}
            for end in ("1", "2")
        ]
        await make_case(client, key, external_id="OIM-OTHER", plan=steps)
        [pair] = (await client.get("/duplicates", headers=bearer(admin))).json()["items"]

        merged = await client.post(
            f"/duplicates/{pair['id']}/merge",
            json={"keep_case_id": keep["id"]},
            headers=bearer(admin),
        )
        assert merged.status_code == 200, merged.text
        kept = (await client.get(f"/cases/{keep['id']}", headers=bearer(key))).json()
        keys = [step["key"] for step in kept["plan"]]
        assert len(keys) == 2 and len(set(keys)) == 2
        assert all(len(k) <= 40 for k in keys)


async def test_a_merge_into_a_case_already_merged_away_answers_409_and_changes_nothing(
    settings,
):
    app = registry_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        owner = await make_partner(client, admin)
        key = (await make_partner_key(client, admin, owner["id"]))["key"]
        first = await make_case(client, key, external_id="OIM-1", plan=[])
        second = await make_case(client, key, external_id="OIM-2", plan=[])
        third = await make_case(client, key, external_id="OIM-3")

        def pair_of(pairs: list[dict], *cases: dict) -> dict:
            return next(p for p in pairs if set(p["case_ids"]) == {c["id"] for c in cases})

        pairs = (await client.get("/duplicates", headers=bearer(admin))).json()["items"]
        merged = await client.post(
            f"/duplicates/{pair_of(pairs, first, second)['id']}/merge",
            json={"keep_case_id": first["id"]},
            headers=bearer(admin),
        )
        assert merged.status_code == 200, merged.text

        before = await database_fingerprint(app)
        response = await client.post(
            f"/duplicates/{pair_of(pairs, second, third)['id']}/merge",
            json={"keep_case_id": second["id"]},
            headers=bearer(admin),
        )
        problem = assert_problem(response, 409)
        assert problem["type"] == PROBLEM_BASE + "conflict"
        assert await database_fingerprint(app) == before
