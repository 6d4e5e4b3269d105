"""API keys: 401 without a valid key, 403 for a partner key on an admin route."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import bindparam, func, select, update

from services.registry.app import create_app
from services.registry.tables import cases
from shared.auth import hash_key
from shared.db import Statement
from shared.tables import api_keys
from tests.conftest import running
from tests.factories import bearer, case_body, make_admin_key, make_partner, make_partner_key

_LAST_USED = Statement(
    select(api_keys.c.last_used_at).where(api_keys.c.key_hash == bindparam("key_hash"))
)


def _is_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    return body


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
        {"Authorization": "Bearer rk_not-a-key-anyone-was-given"},
        {"Authorization": "Bearer " + "x" * 5000},
    ],
    ids=["none", "empty", "basic", "unknown", "oversized"],
)
async def test_requests_without_a_valid_key_answer_401(settings, headers):
    async with running(create_app(settings)) as client:
        body = _is_problem(await client.get("/partners", headers=headers), 401)
        assert body["type"].endswith("/unauthorized")


async def test_a_revoked_key_answers_401_at_once(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        partner = await make_partner(client, admin)
        key = await make_partner_key(client, admin, partner["id"])
        assert (await client.get("/partners", headers=bearer(key["key"]))).status_code == 200

        revoked = await client.delete(f"/api-keys/{key['id']}", headers=bearer(admin))
        assert revoked.status_code == 204
        _is_problem(await client.get("/partners", headers=bearer(key["key"])), 401)


async def test_a_partner_key_on_an_admin_route_answers_403(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        partner = await make_partner(client, admin)
        key = await make_partner_key(client, admin, partner["id"])
        body = _is_problem(
            await client.post(
                "/partners", json={"name": "X", "kind": "ngo"}, headers=bearer(key["key"])
            ),
            403,
        )
        assert body["type"].endswith("/forbidden")
        listed = await client.get("/partners", headers=bearer(admin))
        assert [p["name"] for p in listed.json()["items"]] == [partner["name"]]


async def test_keys_are_stored_only_as_hashes_and_shown_once(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        partner = await make_partner(client, admin)
        created = await make_partner_key(client, admin, partner["id"])
        assert created["key"].startswith("rk_") and len(created["key"]) >= 43
        listed = await client.get(f"/partners/{partner['id']}/api-keys", headers=bearer(admin))
        assert listed.status_code == 200
        [item] = listed.json()["items"]
        assert "key" not in item and item["prefix"] == created["key"][:10]
        async with app.state.db.connection() as conn:
            stored = await Statement(
                select(api_keys.c.key_hash).where(api_keys.c.id == uuid.UUID(item["id"]))
            ).fetchval(conn)
        assert stored == hash_key(created["key"]) and created["key"].encode() not in stored


async def test_the_bootstrap_admin_key_is_registered_idempotently(settings):
    key = "rk_bootstrap-" + "k" * 40
    settings = settings.model_copy(update={"bootstrap_admin_key": key})
    for _ in range(2):
        async with running(create_app(settings)) as client:
            ok = await client.post(
                "/partners", json={"name": "IOM", "kind": "un_agency"}, headers=bearer(key)
            )
            assert ok.status_code == 201
    async with running(create_app(settings)) as client:
        listed = await client.get("/partners", headers=bearer(key))
        assert len(listed.json()["items"]) == 2


@pytest.mark.parametrize(
    "key",
    ["coordination-admin-key-0123456789abcdefghij", "Secret of the CNRM, 2026: keep it safe!"],
    ids=["plain", "with-spaces-and-punctuation"],
)
async def test_a_bootstrap_admin_key_of_any_form_works_as_a_key(settings, key):
    settings = settings.model_copy(update={"bootstrap_admin_key": key})
    async with running(create_app(settings)) as client:
        created = await client.post(
            "/partners", json={"name": "IOM", "kind": "un_agency"}, headers=bearer(key)
        )
        assert created.status_code == 201, created.text
        listed = await client.get("/partners", headers=bearer(key))
        assert listed.status_code == 200
        # Only the exact string opens the door.
        _is_problem(await client.get("/partners", headers=bearer(key + "x")), 401)
        _is_problem(await client.get("/partners", headers=bearer(key[:-1])), 401)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("  padded-admin-key-0123456789abcdefghij", "surrounding spaces"),
        ("line\nbreak-admin-key-0123456789abcdefghij", "printable ASCII"),
        ("k" * 600, "longer than"),
    ],
    ids=["padded", "control-character", "too-long"],
)
def test_a_bootstrap_admin_key_that_cannot_travel_in_a_header_is_refused_at_start(key, message):
    from pydantic import ValidationError

    from shared.settings import Settings

    with pytest.raises(ValidationError, match=message):
        Settings(bootstrap_admin_key=key, env="development")


async def test_last_used_at_is_written_at_most_once_a_minute(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        for _ in range(3):
            await client.get("/partners", headers=bearer(admin))
        async with app.state.db.connection() as conn:
            first = await _LAST_USED.fetchval(conn, key_hash=hash_key(admin))
            assert first is not None
            await Statement(
                update(api_keys)
                .where(api_keys.c.key_hash == hash_key(admin))
                .values(last_used_at=first.replace(year=first.year - 1))
            ).execute(conn)
        await client.get("/partners", headers=bearer(admin))
        async with app.state.db.connection() as conn:
            later = await _LAST_USED.fetchval(conn, key_hash=hash_key(admin))
        assert later >= first


class _CountingTransactions:
    """Counts the transactions an app's requests open on its Database."""

    def __init__(self, app) -> None:
        self.db = app.state.db
        self.transaction = self.db.transaction
        self.opened = 0

    def _counted(self, *args, **kwargs):
        self.opened += 1
        return self.transaction(*args, **kwargs)

    def __enter__(self) -> _CountingTransactions:
        self.db.transaction = self._counted
        return self

    def __exit__(self, *_exc) -> None:
        del self.db.transaction  # the method again


async def test_a_request_opens_at_most_one_transaction_and_its_key_look_up_none(settings):
    """The caller's key is looked up in autocommit; the handler's unit of work is the only
    transaction a request opens (a list, one statement, opens none)."""
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        partner = await make_partner(client, admin)
        key = await make_partner_key(client, admin, partner["id"])
        with _CountingTransactions(app) as counting:
            created = await client.post("/cases", json=case_body(), headers=bearer(key["key"]))
            assert created.status_code == 201, created.text
            assert counting.opened == 1
            listed = await client.get("/cases", headers=bearer(key["key"]))
            assert listed.status_code == 200 and len(listed.json()["items"]) == 1
            assert counting.opened == 1


async def test_a_key_revoked_between_two_requests_answers_401_and_writes_nothing(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        partner = await make_partner(client, admin)
        key = await make_partner_key(client, admin, partner["id"])
        first = await client.post("/cases", json=case_body(), headers=bearer(key["key"]))
        assert first.status_code == 201, first.text
        # Revoked by another process (another replica's admin call), not through this app.
        async with app.state.db.transaction() as conn:
            await Statement(
                update(api_keys)
                .where(api_keys.c.id == uuid.UUID(key["id"]))
                .values(revoked_at=func.now())
            ).execute(conn)
        second = await client.post(
            "/cases", json=case_body(external_id="EXT-2"), headers=bearer(key["key"])
        )
        _is_problem(second, 401)
        _is_problem(await client.get("/cases", headers=bearer(key["key"])), 401)
        async with app.state.db.connection() as conn:
            count = await Statement(select(func.count()).select_from(cases)).fetchval(conn)
        assert count == 1
        # The admin key, looked up the same way on its own requests, still works.
        assert (await client.get("/cases", headers=bearer(admin))).status_code == 200


async def test_last_used_at_is_kept_when_the_handler_fails(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        missing = await client.get(f"/cases/{uuid.uuid4()}", headers=bearer(admin))
        _is_problem(missing, 404)  # the handler's transaction rolled back
        async with app.state.db.connection() as conn:
            used = await _LAST_USED.fetchval(conn, key_hash=hash_key(admin))
        assert used is not None
        # The handler's own transaction still begins and commits after the look-up.
        partner = await make_partner(client, admin)
        assert partner["id"]
