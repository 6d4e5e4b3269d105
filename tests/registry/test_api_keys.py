"""Keys that can be replaced (SPEC 4, 7): expiry, admin keys created, listed and revoked
without a restart, the last active admin key kept, the start-up key rotated."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import bindparam, update

from services.registry.app import create_app
from shared import key_rules
from shared.auth import create_key, look_up
from shared.db import Statement
from shared.tables import api_keys
from tests.conftest import running
from tests.factories import bearer, expire_key, make_admin_key, make_partner, make_partner_key
from tests.registry.helpers import PROBLEM, assert_problem, database_fingerprint

_SET_STATE = Statement(
    update(api_keys)
    .where(api_keys.c.id == bindparam("key_id"))
    .values(revoked_at=bindparam("revoked_at"), expires_at=bindparam("expires_at"))
)


def _soon(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def _new_admin_key(client, admin: str, name: str = "secretariat", **body) -> dict:
    response = await client.post("/admin-keys", json={"name": name, **body}, headers=bearer(admin))
    assert response.status_code == 201, response.text
    return response.json()


async def _admin_key_id(client, admin: str, key: str) -> str:
    """The id of an admin key, found by its prefix in GET /admin-keys."""
    listed = await client.get("/admin-keys?limit=500", headers=bearer(admin))
    assert listed.status_code == 200, listed.text
    [item] = [k for k in listed.json()["items"] if k["prefix"] == key[:10]]
    return item["id"]


async def _works(client, key: str) -> bool:
    response = await client.get("/admin-keys", headers=bearer(key))
    if response.status_code == 401:
        assert response.headers["content-type"] == PROBLEM
        return False
    assert response.status_code in (200, 403), response.text
    return True


# --- Expiry -------------------------------------------------------------------------------


async def test_a_key_answers_401_once_its_expiry_has_passed(hub):
    client, admin = hub["client"], hub["admin"]
    partner_id = hub["partner"]["id"]
    created = await client.post(
        f"/partners/{partner_id}/api-keys",
        json={"name": "short-lived", "expires_at": _soon(1.5)},
        headers=bearer(admin),
    )
    assert created.status_code == 201, created.text
    key = created.json()
    assert key["expires_at"] is not None and key["role"] == "partner"
    admin_key = await _new_admin_key(client, admin, "short-lived admin", expires_at=_soon(1.5))
    assert admin_key["expires_at"] is not None
    assert (await client.get("/cases", headers=bearer(key["key"]))).status_code == 200
    assert (await client.get("/admin-keys", headers=bearer(admin_key["key"]))).status_code == 200

    await asyncio.sleep(1.6)
    for presented in (key["key"], admin_key["key"]):
        problem = assert_problem(await client.get("/cases", headers=bearer(presented)), 401)
        assert problem["type"].endswith("/unauthorized")
    # The reads show when they stopped; the partner's other key works on.
    listed = await client.get(f"/partners/{partner_id}/api-keys", headers=bearer(admin))
    [item] = [k for k in listed.json()["items"] if k["id"] == key["id"]]
    assert item["expires_at"] == key["expires_at"] and item["revoked_at"] is None
    assert (await client.get("/cases", headers=bearer(hub["key"]))).status_code == 200


async def test_a_key_whose_expires_at_is_moved_into_the_past_answers_401_at_once(hub):
    client = hub["client"]
    assert (await client.get("/cases", headers=bearer(hub["key"]))).status_code == 200
    await expire_key(hub["app"].state.db, hub["key_id"])
    assert_problem(await client.get("/cases", headers=bearer(hub["key"])), 401)
    assert (await client.get("/cases", headers=bearer(hub["other_key"]))).status_code == 200


@pytest.mark.parametrize(
    ("expires_at", "error_type"),
    [
        ("2020-01-01T00:00:00Z", "future"),
        ((datetime.now(UTC) - timedelta(minutes=1)).isoformat(), "future"),
        ("2030-01-01T00:00:00", "timezone_aware"),
        ("9999-12-31T23:00:00-05:00", "datetime_range"),
    ],
    ids=["long ago", "a minute ago", "without an offset", "beyond the year 9999 in UTC"],
)
async def test_an_expiry_in_the_past_or_without_offset_answers_422_and_writes_nothing(
    hub, expires_at, error_type
):
    client, admin = hub["client"], hub["admin"]
    before = await database_fingerprint(hub["app"])
    for url in (f"/partners/{hub['partner']['id']}/api-keys", "/admin-keys"):
        response = await client.post(
            url, json={"name": "k", "expires_at": expires_at}, headers=bearer(admin)
        )
        problem = assert_problem(response, 422)
        assert [(e["field"], e["type"]) for e in problem["errors"]] == [
            ("body.expires_at", error_type)
        ], url
    assert await database_fingerprint(hub["app"]) == before


async def test_the_look_up_lets_in_exactly_the_keys_the_rule_calls_usable(hub):
    """The look-up's SQL and `shared.key_rules.usable` are one rule."""
    db = hub["app"].state.db
    now = datetime.now(UTC)
    hour = timedelta(hours=1)
    states = [
        (revoked, expires)
        for revoked in (None, now - hour)
        for expires in (None, now + hour, now - hour)
    ]
    for revoked_at, expires_at in states:
        async with db.transaction() as conn:
            row, key = await create_key(conn, role="admin", partner_id=None, name="grid")
            await _SET_STATE.execute(
                conn, key_id=row["id"], revoked_at=revoked_at, expires_at=expires_at
            )
        expected = key_rules.usable(revoked_at=revoked_at, expires_at=expires_at, at=now)
        assert (await look_up(db, key) is not None) is expected, (revoked_at, expires_at)


# --- Admin keys ---------------------------------------------------------------------------


async def test_admin_keys_are_created_shown_once_and_listed(hub):
    client, admin = hub["client"], hub["admin"]
    created = await _new_admin_key(client, admin, "secretariat, 2027")
    assert created["key"].startswith("rk_") and created["role"] == "admin"
    assert created["partner_id"] is None and created["expires_at"] is None
    # It is an admin key: it registers a partner.
    partner = await make_partner(client, created["key"], "Centre de formation de Kayes")
    assert partner["name"] == "Centre de formation de Kayes"

    listed = await client.get("/admin-keys", headers=bearer(created["key"]))
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert [k["name"] for k in items] == ["test admin", "secretariat, 2027"]
    assert set(items[1]) == {
        "id",
        "partner_id",
        "role",
        "name",
        "prefix",
        "created_at",
        "revoked_at",
        "last_used_at",
        "expires_at",
    }
    assert items[1]["prefix"] == created["key"][:10] and items[1]["last_used_at"] is not None
    assert created["key"] not in listed.text
    # Only admin keys: the partners' keys are not listed.
    assert {k["role"] for k in items} == {"admin"}
    # Paginated as the other lists.
    first = (await client.get("/admin-keys?limit=1", headers=bearer(admin))).json()
    assert [k["id"] for k in first["items"]] == [items[0]["id"]] and first["next_cursor"]
    second = await client.get(
        f"/admin-keys?limit=1&cursor={first['next_cursor']}", headers=bearer(admin)
    )
    assert [k["id"] for k in second.json()["items"]] == [items[1]["id"]]
    assert second.json()["next_cursor"] is None


@pytest.mark.parametrize("name", ["bootstrap", "Bootstrap "])
async def test_the_name_bootstrap_is_reserved(hub, name):
    before = await database_fingerprint(hub["app"])
    response = await hub["client"].post(
        "/admin-keys", json={"name": name}, headers=bearer(hub["admin"])
    )
    problem = assert_problem(response, 422)
    assert [e["field"] for e in problem["errors"]] == ["body.name"]
    assert await database_fingerprint(hub["app"]) == before


async def test_partner_keys_neither_list_nor_create_admin_keys(hub):
    client = hub["client"]
    before = await database_fingerprint(hub["app"])
    for key in (hub["key"], hub["other_key"]):
        assert_problem(await client.get("/admin-keys", headers=bearer(key)), 403)
        response = await client.post("/admin-keys", json={"name": "mine"}, headers=bearer(key))
        assert_problem(response, 403)
        admin_id = await _admin_key_id(client, hub["admin"], hub["admin"])
        assert_problem(await client.delete(f"/api-keys/{admin_id}", headers=bearer(key)), 404)
    assert await database_fingerprint(hub["app"]) == before
    assert await _works(client, hub["admin"])


async def test_a_revoked_admin_key_answers_401_at_once(hub):
    client, admin = hub["client"], hub["admin"]
    new = await _new_admin_key(client, admin)
    old_id = await _admin_key_id(client, new["key"], admin)
    assert await _works(client, admin)
    assert (
        await client.delete(f"/api-keys/{old_id}", headers=bearer(new["key"]))
    ).status_code == 204
    problem = assert_problem(await client.get("/admin-keys", headers=bearer(admin)), 401)
    assert problem["type"].endswith("/unauthorized")
    assert await _works(client, new["key"])
    listed = (await client.get("/admin-keys", headers=bearer(new["key"]))).json()["items"]
    assert [k["revoked_at"] is not None for k in listed] == [True, False]
    # Revoking it again changes nothing.
    assert (
        await client.delete(f"/api-keys/{old_id}", headers=bearer(new["key"]))
    ).status_code == 204


async def test_an_admin_may_revoke_the_key_it_calls_with_when_another_is_active(hub):
    client, admin = hub["client"], hub["admin"]
    new = await _new_admin_key(client, admin)
    own_id = await _admin_key_id(client, admin, admin)
    assert (await client.delete(f"/api-keys/{own_id}", headers=bearer(admin))).status_code == 204
    assert_problem(await client.get("/admin-keys", headers=bearer(admin)), 401)
    assert await _works(client, new["key"])


async def test_the_last_active_admin_key_answers_409_and_keeps_working(hub):
    client, admin, db = hub["client"], hub["admin"], hub["app"].state.db
    own_id = await _admin_key_id(client, admin, admin)
    # Other admin keys that open no door do not count: one revoked, one expired.
    revoked = await _new_admin_key(client, admin, "revoked")
    assert (
        await client.delete(f"/api-keys/{revoked['id']}", headers=bearer(admin))
    ).status_code == 204
    expired = await _new_admin_key(client, admin, "expired")
    await expire_key(db, expired["id"])
    before = await database_fingerprint(hub["app"])
    response = await client.delete(f"/api-keys/{own_id}", headers=bearer(admin))
    problem = assert_problem(response, 409)
    assert problem["type"].endswith("/conflict")
    assert "POST /admin-keys" in problem["detail"]
    assert await database_fingerprint(hub["app"]) == before
    assert await _works(client, admin)
    # With another active admin key, the same revocation goes through.
    spare = await _new_admin_key(client, admin, "spare")
    assert (await client.delete(f"/api-keys/{own_id}", headers=bearer(admin))).status_code == 204
    assert not await _works(client, admin)
    # And now the spare is the last one.
    assert_problem(
        await client.delete(f"/api-keys/{spare['id']}", headers=bearer(spare["key"])), 409
    )
    assert await _works(client, spare["key"])


async def test_two_concurrent_revocations_leave_one_admin_key(hub):
    client, admin = hub["client"], hub["admin"]
    second = await _new_admin_key(client, admin)
    first_id = await _admin_key_id(client, admin, admin)
    for _ in range(3):
        answers = await asyncio.gather(
            client.delete(f"/api-keys/{first_id}", headers=bearer(second["key"])),
            client.delete(f"/api-keys/{second['id']}", headers=bearer(admin)),
        )
        statuses = sorted(a.status_code for a in answers)
        if statuses != [401, 401]:  # each revoked the other's key before the second call
            break
    assert statuses == [204, 409], [a.text for a in answers]
    still = [key for key in (admin, second["key"]) if await _works(client, key)]
    assert len(still) == 1


async def test_a_partner_revokes_its_own_key_and_not_an_admin_key(hub):
    client = hub["client"]
    spare = await make_partner_key(client, hub["admin"], hub["partner"]["id"])
    response = await client.delete(f"/api-keys/{spare['id']}", headers=bearer(hub["key"]))
    assert response.status_code == 204
    assert_problem(await client.get("/cases", headers=bearer(spare["key"])), 401)
    assert (await client.get("/cases", headers=bearer(hub["key"]))).status_code == 200


# --- The start-up key (RELAIS_BOOTSTRAP_ADMIN_KEY, `.data/admin.key`) ---------------------

FIRST = "rk_first-start-up-key-" + "1" * 30
SECOND = "rk_second-start-up-key-" + "2" * 30


async def _start(settings, key: str, capsys) -> tuple[int, int, list[dict]]:
    """Start the registry with this start-up key; (the status of a request with FIRST, with
    SECOND) and what its JSON log lines said about the start-up key."""
    app = create_app(settings.model_copy(update={"bootstrap_admin_key": key, "log_level": "INFO"}))
    capsys.readouterr()
    async with running(app) as client:
        statuses = [
            (await client.get("/admin-keys", headers=bearer(k))).status_code
            for k in (FIRST, SECOND)
        ]
    out = capsys.readouterr().out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return (*statuses, [e for e in lines if e["event"].startswith("bootstrap_admin_key")])


async def test_a_new_start_up_key_revokes_the_previous_one(settings, capsys):
    first, second, logged = await _start(settings, FIRST, capsys)
    assert (first, second) == (200, 401)
    assert [e["event"] for e in logged] == ["bootstrap_admin_key"] and logged[0]["registered"]

    # The operator replaced the key: the old one answers 401 from this start on.
    first, second, logged = await _start(settings, SECOND, capsys)
    assert (first, second) == (401, 200)
    assert len(logged[0]["replaced"]) == 1

    # Starting with the old key again does not bring it back (nor revoke the other: the
    # old key is not a new one).
    first, second, logged = await _start(settings, FIRST, capsys)
    assert (first, second) == (401, 200)
    [line] = logged
    assert line["event"] == "bootstrap_admin_key_revoked" and line["level"] == "warning"
    assert FIRST not in str(line) and FIRST[:10] not in str(line)

    # The list shows both, named bootstrap, the first revoked.
    app = create_app(settings.model_copy(update={"bootstrap_admin_key": SECOND}))
    async with running(app) as client:
        listed = (await client.get("/admin-keys", headers=bearer(SECOND))).json()["items"]
    assert [(k["name"], k["prefix"], k["revoked_at"] is None) for k in listed] == [
        ("bootstrap", FIRST[:10], False),
        ("bootstrap", SECOND[:10], True),
    ]


async def test_a_start_up_key_revoked_through_the_api_stays_revoked(settings, capsys):
    app = create_app(settings.model_copy(update={"bootstrap_admin_key": FIRST}))
    async with running(app) as client:
        other = await _new_admin_key(client, FIRST, "secretariat")
        bootstrap_id = await _admin_key_id(client, FIRST, FIRST)
        revoked = await client.delete(f"/api-keys/{bootstrap_id}", headers=bearer(other["key"]))
        assert revoked.status_code == 204
    first, _, logged = await _start(settings, FIRST, capsys)
    assert first == 401
    assert [e["event"] for e in logged] == ["bootstrap_admin_key_revoked"]
    assert logged[0]["key_id"] == bootstrap_id
    # The secretariat's key works on; a new start-up key is registered as usual.
    app = create_app(settings.model_copy(update={"bootstrap_admin_key": SECOND}))
    async with running(app) as client:
        assert (await client.get("/admin-keys", headers=bearer(other["key"]))).status_code == 200
        assert (await client.get("/admin-keys", headers=bearer(SECOND))).status_code == 200
        assert (await client.get("/admin-keys", headers=bearer(FIRST))).status_code == 401


async def test_the_start_up_key_counts_as_an_admin_key_for_the_last_one(settings):
    app = create_app(settings.model_copy(update={"bootstrap_admin_key": FIRST}))
    async with running(app) as client:
        own_id = await _admin_key_id(client, FIRST, FIRST)
        assert_problem(await client.delete(f"/api-keys/{own_id}", headers=bearer(FIRST)), 409)
        assert (await client.get("/admin-keys", headers=bearer(FIRST))).status_code == 200
        # A test admin key made beside it, then revoked by the start-up key: allowed.
        other = await make_admin_key(app.state.db)
        other_id = await _admin_key_id(client, FIRST, other)
        assert (
            await client.delete(f"/api-keys/{other_id}", headers=bearer(FIRST))
        ).status_code == 204
