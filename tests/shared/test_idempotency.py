"""Idempotency-Key on POST: one effect, the first response replayed, misuse refused."""

from __future__ import annotations

import asyncio
from uuid import uuid4

from services.registry.app import create_app
from shared.idempotency import forget_case
from tests.conftest import running
from tests.factories import bearer, make_admin_key, make_partner, make_partner_key


async def test_the_same_key_and_body_give_the_first_response_and_one_partner(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        headers = {**bearer(admin), "Idempotency-Key": "create-iom-1"}
        first = await client.post(
            "/partners", json={"name": "IOM", "kind": "un_agency"}, headers=headers
        )
        # The same body with keys in another order is the same request.
        again = await client.post(
            "/partners", json={"kind": "un_agency", "name": "IOM"}, headers=headers
        )
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()
        assert again.headers.get("idempotent-replayed") == "true"
        listed = await client.get("/partners", headers=bearer(admin))
        assert len(listed.json()["items"]) == 1


async def test_the_same_key_with_another_body_answers_422(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        headers = {**bearer(admin), "Idempotency-Key": "k-2"}
        await client.post("/partners", json={"name": "IOM", "kind": "un_agency"}, headers=headers)
        other = await client.post(
            "/partners", json={"name": "ANPE", "kind": "government"}, headers=headers
        )
        assert other.status_code == 422
        assert other.json()["type"].endswith("/idempotency-key-reused")
        assert len((await client.get("/partners", headers=bearer(admin))).json()["items"]) == 1


async def test_keys_are_scoped_to_the_caller(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        partner = await make_partner(client, admin)
        key = (await make_partner_key(client, admin, partner["id"]))["key"]
        # The same Idempotency-Key from another caller is another request.
        a = await client.post(
            f"/partners/{partner['id']}/api-keys",
            json={"name": "a"},
            headers={**bearer(admin), "Idempotency-Key": "same"},
        )
        b = await client.post(
            "/partners",
            json={"name": "X", "kind": "ngo"},
            headers={**bearer(key), "Idempotency-Key": "same"},
        )
        assert a.status_code == 201 and b.status_code == 403


async def test_a_key_still_in_flight_answers_409(settings):
    app = create_app(settings)
    release = asyncio.Event()
    entered = asyncio.Event()

    async def slow() -> dict:
        entered.set()
        await release.wait()
        return {"ok": True}

    app.add_api_route("/slow", slow, methods=["POST"])
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        headers = {**bearer(admin), "Idempotency-Key": "slow-1"}
        first = asyncio.create_task(client.post("/slow", json={}, headers=headers))
        await entered.wait()
        second = await client.post("/slow", json={}, headers=headers)
        release.set()
        assert (await first).status_code == 200
        assert second.status_code == 409
        third = await client.post("/slow", json={}, headers=headers)
        assert third.status_code == 200 and third.headers.get("idempotent-replayed") == "true"


async def test_server_errors_are_not_stored(settings):
    app = create_app(settings)
    calls = 0

    async def flaky() -> dict:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("first call fails")
        return {"calls": calls}

    app.add_api_route("/flaky", flaky, methods=["POST"])
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        headers = {**bearer(admin), "Idempotency-Key": "flaky-1"}
        assert (await client.post("/flaky", json={}, headers=headers)).status_code == 500
        retried = await client.post("/flaky", json={}, headers=headers)
        assert retried.status_code == 200 and retried.json() == {"calls": 2}


async def test_a_refused_request_can_be_corrected_and_sent_again_under_the_same_key(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        headers = {**bearer(admin), "Idempotency-Key": "partner-1"}
        broken = await client.post(
            "/partners",
            content=b'{"name": "OIM Mali", "kind": ',
            headers={**headers, "Content-Type": "application/json"},
        )
        assert broken.status_code == 400
        invalid = await client.post(
            "/partners", json={"name": "OIM Mali", "kind": "agency"}, headers=headers
        )
        assert invalid.status_code == 422
        assert invalid.json()["errors"][0]["field"] == "body.kind"
        created = await client.post(
            "/partners", json={"name": "OIM Mali", "kind": "un_agency"}, headers=headers
        )
        assert created.status_code == 201, created.text
        replayed = await client.post(
            "/partners", json={"name": "OIM Mali", "kind": "un_agency"}, headers=headers
        )
        assert replayed.headers.get("idempotent-replayed") == "true"
        assert replayed.json()["id"] == created.json()["id"]


def test_a_multipart_body_is_the_same_request_whatever_its_boundary():
    from shared.idempotency import request_fingerprint

    def body(boundary: str) -> bytes:
        return (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"\r\n\r\n'
            f"code,name\r\n--{boundary}--\r\n"
        ).encode()

    one = request_fingerprint(body("aaa111"), "multipart/form-data; boundary=aaa111")
    two = request_fingerprint(body("bbb222"), "multipart/form-data; boundary=bbb222")
    other = request_fingerprint(
        body("bbb222").replace(b"code", b"kode"), "multipart/form-data; boundary=bbb222"
    )
    assert one == two != other


async def test_an_erasure_forgets_the_answers_naming_its_case_and_no_other(settings):
    """`forget_case` takes the records whose path or stored answer names the case's id or
    reference, and not those of a case whose reference merely starts alike."""
    app = create_app(settings)
    async with running(app):
        db = app.state.db
        erased, other = str(uuid4()), str(uuid4())
        records = {
            "by-path": (f"/cases/{erased}/consent", b"{}"),
            "by-id": ("/cases", f'{{"id": "{erased}"}}'.encode()),
            "by-reference": ("/x", b'{"case_reference": "ML-2026-100000"}'),
            "alike": ("/cases", f'{{"id": "{other}", "reference": "ML-2026-1000001"}}'.encode()),
        }
        async with db.connection() as conn:
            for key, (path, body) in records.items():
                await conn.execute(
                    "INSERT INTO hub.idempotency_records "
                    "(scope, method, path, key, request_hash, state, response_body) "
                    "VALUES ('admin', 'POST', $1, $2, $3, 'done', $4)",
                    path,
                    key,
                    b"\0" * 32,
                    body,
                )
            forgotten = await forget_case(conn, case_id=erased, reference="ML-2026-100000")
            kept = await conn.fetch("SELECT key FROM hub.idempotency_records ORDER BY key")
        assert forgotten == 3
        assert [r["key"] for r in kept] == ["alike"]
