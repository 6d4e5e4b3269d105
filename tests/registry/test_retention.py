"""Retention (SPEC 9): `closed_at` follows a case's closures, `GET /retention/preview` lists
the cases closed for longer than `RELAIS_RETENTION_DAYS`, and the retention worker erases
exactly those, one case per transaction, on its schedule, two replicas never taking one case.

The worker erases with `case_actions.erase_case`, as the first run below does; the tests of
the worker's own work (one transaction per case, the claim, the schedule) give it
`stand_in_erase_case`, which marks the case erased and nothing more."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from services.registry.app import create_app
from services.registry.retention_worker import RetentionWorker, erase_case, reason_for
from services.registry.worker import consumers
from shared.observability import Metrics
from tests.conftest import running
from tests.factories import bearer, make_admin_key, make_case, make_partner, make_partner_key
from tests.registry.helpers import assert_problem

DAYS = 30


async def stand_in_erase_case(conn, *, case: Mapping[str, Any], reason: str, caller: None) -> None:
    """Stands in for `case_actions.erase_case` in these tests: marks the case erased (the
    mark the retention selection reads), in the worker's transaction, and nothing more."""
    assert caller is None
    await conn.execute(
        "UPDATE registry.cases SET erased_at = now(), erasure_reason = $2 WHERE id = $1",
        case["id"],
        reason,
    )


async def closed_days_ago(db, case_id: str, days: float) -> None:
    """Move the case's closure back in time (what waiting that long would do)."""
    async with db.connection() as conn:
        await conn.execute(
            "UPDATE registry.cases SET closed_at = now() - make_interval(secs => $2) WHERE id = $1",
            UUID(case_id),
            days * 86400,
        )


async def stored(db, case_id: str) -> dict:
    async with db.connection() as conn:
        row = await conn.fetchrow(
            "SELECT status, closed_at, erased_at, erasure_reason FROM registry.cases WHERE id = $1",
            UUID(case_id),
        )
    return dict(row)


@pytest.fixture
async def registry(settings):
    """The registry with `RELAIS_RETENTION_DAYS=30`, an admin, a partner and its key."""
    app = create_app(settings.model_copy(update={"retention_days": DAYS}))
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        partner = await make_partner(client, admin, "ONG Sabou")
        key = (await make_partner_key(client, admin, partner["id"]))["key"]
        yield {"app": app, "db": app.state.db, "client": client, "admin": admin, "key": key}


async def new_case(registry, external_id: str, *, closed_days_ago_: float | None = None) -> dict:
    case = await make_case(registry["client"], registry["key"], external_id=external_id, plan=[])
    if closed_days_ago_ is not None:
        closed = await registry["client"].post(
            f"/cases/{case['id']}/close",
            json={"reason": "support_ended"},
            headers=bearer(registry["key"]),
        )
        assert closed.status_code == 200, closed.text
        await closed_days_ago(registry["db"], case["id"], closed_days_ago_)
    return case


async def preview(registry, **params) -> dict:
    response = await registry["client"].get(
        "/retention/preview", params=params, headers=bearer(registry["admin"])
    )
    assert response.status_code == 200, response.text
    return response.json()


async def previewed_ids(registry) -> list[str]:
    ids, cursor = [], None
    while True:
        page = await preview(registry, limit=1, **({"cursor": cursor} if cursor else {}))
        ids += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


# --- closed_at ---------------------------------------------------------------------------


async def test_closed_at_is_set_by_a_closure_and_a_merge_and_cleared_by_a_reopening(registry):
    client, key, db = registry["client"], registry["key"], registry["db"]
    case = await new_case(registry, "C-1")
    assert (await stored(db, case["id"]))["closed_at"] is None
    before = datetime.now(UTC) - timedelta(seconds=5)
    closed = await client.post(
        f"/cases/{case['id']}/close", json={"reason": "left_area"}, headers=bearer(key)
    )
    assert closed.status_code == 200, closed.text
    first = (await stored(db, case["id"]))["closed_at"]
    assert first is not None and first >= before
    # Another change of the closed case keeps the time it was closed.
    patched = await client.patch(
        f"/cases/{case['id']}", json={"vulnerabilities": ["x"]}, headers=bearer(key)
    )
    assert patched.status_code == 200, patched.text
    assert (await stored(db, case["id"]))["closed_at"] == first
    reopened = await client.post(f"/cases/{case['id']}/reopen", headers=bearer(key))
    assert reopened.status_code == 200, reopened.text
    assert (await stored(db, case["id"]))["closed_at"] is None
    # The same person twice at one owner: a merge closes the other case.
    keep = await make_case(client, key, external_id="KEEP")
    other = await make_case(client, key, external_id="OTHER")
    pairs = await client.get("/duplicates", headers=bearer(registry["admin"]))
    pair = next(p for p in pairs.json()["items"] if set(p["case_ids"]) == {keep["id"], other["id"]})
    merged = await client.post(
        f"/duplicates/{pair['id']}/merge",
        json={"keep_case_id": keep["id"]},
        headers=bearer(registry["admin"]),
    )
    assert merged.status_code == 200, merged.text
    assert (await stored(db, other["id"]))["closed_at"] is not None
    assert (await stored(db, keep["id"]))["closed_at"] is None


# --- GET /retention/preview ----------------------------------------------------------------


async def test_the_preview_lists_the_cases_closed_longer_than_the_setting(registry):
    old = await new_case(registry, "OLD", closed_days_ago_=DAYS + 10)
    older = await new_case(registry, "OLDER", closed_days_ago_=DAYS + 200)
    await new_case(registry, "RECENT", closed_days_ago_=DAYS - 1)
    await new_case(registry, "OPEN")
    gone = await new_case(registry, "ERASED", closed_days_ago_=DAYS + 50)
    async with registry["db"].transaction() as conn:
        await stand_in_erase_case(conn, case={"id": UUID(gone["id"])}, reason="x", caller=None)

    page = await preview(registry)
    assert page["retention"] is True and page["retention_days"] == DAYS
    cutoff = datetime.fromisoformat(page["closed_before"])
    assert abs(cutoff - (datetime.now(UTC) - timedelta(days=DAYS))) < timedelta(minutes=1)
    # Oldest closure first; no personal data, only what names the case.
    assert [i["id"] for i in page["items"]] == [older["id"], old["id"]]
    assert set(page["items"][0]) == {"id", "reference", "owner_partner_id", "closed_at"}
    assert page["items"][0]["reference"] == older["reference"]
    assert page["items"][0]["owner_partner_id"] == older["owner_partner_id"]
    assert page["next_cursor"] is None
    assert await previewed_ids(registry) == [older["id"], old["id"]]


async def test_the_preview_is_for_admins_and_refuses_a_bad_cursor(registry):
    response = await registry["client"].get("/retention/preview", headers=bearer(registry["key"]))
    assert_problem(response, 403)
    response = await registry["client"].get(
        "/retention/preview", params={"cursor": "bm9wZQ"}, headers=bearer(registry["admin"])
    )
    assert_problem(response, 422)


async def test_without_the_setting_retention_is_off_and_the_preview_empty(settings):
    app = create_app(settings)  # RELAIS_RETENTION_DAYS unset
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        partner = await make_partner(client, admin)
        key = (await make_partner_key(client, admin, partner["id"]))["key"]
        case = await make_case(client, key, plan=[])
        await client.post(
            f"/cases/{case['id']}/close", json={"reason": "other"}, headers=bearer(key)
        )
        await closed_days_ago(app.state.db, case["id"], 10_000)
        response = await client.get("/retention/preview", headers=bearer(admin))
        assert response.status_code == 200, response.text
        assert response.json() == {
            "items": [],
            "next_cursor": None,
            "retention": False,
            "retention_days": None,
            "closed_before": None,
        }
    assert settings.retention_days is None
    names = [w.name for w in consumers(settings, Metrics("registry-test-off"))]
    assert "retention" not in names
    on = settings.model_copy(update={"retention_days": 7})
    assert "retention" in [w.name for w in consumers(on, Metrics("registry-test-on"))]


# --- The worker -------------------------------------------------------------------------


def worker(**fields) -> RetentionWorker:
    return RetentionWorker(
        **{"days": DAYS, "interval_seconds": 3600, "erase": stand_in_erase_case, **fields}
    )


async def test_a_run_erases_what_the_preview_listed_and_nothing_else(registry):
    db = registry["db"]
    old = await new_case(registry, "OLD", closed_days_ago_=DAYS + 1)
    recent = await new_case(registry, "RECENT", closed_days_ago_=DAYS - 1)
    open_case = await new_case(registry, "OPEN")
    listed = await previewed_ids(registry)
    assert listed == [old["id"]]

    erased = await worker(erase=erase_case).run_once(db)  # the real erasure

    assert [str(i) for i in erased] == listed
    row = await stored(db, old["id"])
    assert row["erased_at"] is not None and row["erasure_reason"] == reason_for(DAYS)
    assert (await stored(db, recent["id"]))["erased_at"] is None
    assert (await stored(db, open_case["id"]))["erased_at"] is None
    assert await previewed_ids(registry) == []
    # A second run finds nothing more.
    assert await worker().run_once(db) == []


async def test_each_case_is_erased_in_a_transaction_of_its_own(registry):
    """A failed erasure undoes only its own case; the others are erased, and the failed
    one is left, selected, for the next run (never retried in a loop)."""
    db = registry["db"]
    cases = [await new_case(registry, f"OLD-{i}", closed_days_ago_=DAYS + 10 - i) for i in range(3)]
    failing = UUID(cases[1]["id"])
    calls: list[UUID] = []

    async def erase_but_one(conn, *, case, reason, caller):
        calls.append(case["id"])
        await stand_in_erase_case(conn, case=case, reason=reason, caller=caller)
        if case["id"] == failing:
            raise RuntimeError("the erasure failed half-way")

    erased = await worker(erase=erase_but_one).run_once(db)

    assert erased == [UUID(cases[0]["id"]), UUID(cases[2]["id"])]
    assert calls == [UUID(c["id"]) for c in cases]  # the failing one was tried once
    assert (await stored(db, cases[1]["id"]))["erased_at"] is None  # its write undone
    assert await previewed_ids(registry) == [cases[1]["id"]]


async def test_two_replicas_running_at_once_never_erase_one_case_twice(registry):
    db = registry["db"]
    cases = [await new_case(registry, f"OLD-{i}", closed_days_ago_=DAYS + 5) for i in range(6)]
    erasures: list[UUID] = []

    async def slow_erase(conn, *, case, reason, caller):
        erasures.append(case["id"])
        await stand_in_erase_case(conn, case=case, reason=reason, caller=caller)
        await asyncio.sleep(0.05)  # while it holds the case, the other replica claims on

    first, second = await asyncio.gather(
        worker(erase=slow_erase).run_once(db), worker(erase=slow_erase).run_once(db)
    )

    assert sorted(erasures) == sorted(UUID(c["id"]) for c in cases)  # each exactly once
    assert set(first).isdisjoint(second)
    assert first and second  # both worked, side by side
    assert set(first) | set(second) == {UUID(c["id"]) for c in cases}


async def test_the_worker_runs_at_start_and_then_once_per_interval_until_stopped(registry):
    db = registry["db"]
    first = await new_case(registry, "FIRST", closed_days_ago_=DAYS + 1)
    stop = asyncio.Event()
    task = asyncio.create_task(worker(interval_seconds=0.3).run(db, None, stop))
    try:

        async def erased(case_id: str) -> bool:
            return (await stored(db, case_id))["erased_at"] is not None

        for _ in range(100):
            if await erased(first["id"]):
                break
            await asyncio.sleep(0.02)
        assert await erased(first["id"]), "the run at start erased nothing"
        # Closed long ago, but only now: the next run, an interval later, erases it.
        later = await new_case(registry, "LATER", closed_days_ago_=DAYS + 1)
        for _ in range(100):
            if await erased(later["id"]):
                break
            await asyncio.sleep(0.05)
        assert await erased(later["id"]), "no run after the interval"
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)  # it stops when told, mid-wait
    assert task.done() and task.exception() is None


def test_the_worker_erases_with_case_actions_erase_case_by_default():
    assert RetentionWorker(days=1, interval_seconds=1).erase is erase_case
