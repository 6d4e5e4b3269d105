"""The dispatcher records finished attempts in batches: one batch mixing successes, failures,
retries, a Retry-After, a 410, a 5-day failure, an exhausted schedule, a result whose lease
another claim took, and one whose endpoint was disabled meanwhile, lands as if each result had
been recorded alone."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import structlog.testing

from services.notifications import store
from services.notifications.dispatcher import Dispatcher, Outcome, Result
from shared.db import Database, Statement
from shared.eventlog.append import append
from shared.observability import Metrics

SCHEDULE = (60.0, 600.0)


async def _endpoint(conn, *, failing_since: datetime | None = None) -> uuid.UUID:
    endpoint_id = uuid.uuid4()
    await _execute(
        conn,
        "INSERT INTO notifications.endpoints (id, partner_id, url, event_types, secrets, "
        "failing_since) VALUES (:id, :partner, 'http://127.0.0.1:9/hook', '{*}', "
        "CAST(:secrets AS jsonb), CAST(:failing_since AS timestamptz))",
        id=endpoint_id,
        partner=uuid.uuid4(),
        secrets=[{"secret": "whsec_" + "A" * 43, "expires_at": None}],
        failing_since=failing_since,
    )
    return endpoint_id


async def _delivery(conn, endpoint_id: uuid.UUID, *, attempt_count: int = 0) -> uuid.UUID:
    event = await append(
        conn,
        type="service.updated",
        source="/registry",
        subject=f"services/{uuid.uuid4()}",
        data={},
        actor="admin",
        audience=[],
    )
    delivery_id = uuid.uuid4()
    await _execute(
        conn,
        "INSERT INTO notifications.deliveries (id, endpoint_id, event_id, event_seq, "
        "event_type, event_time, status, attempt_count, next_attempt_at) VALUES (:id, "
        ":endpoint, :event_id, :seq, :type, :time, 'pending', :count, now() - interval '1s')",
        id=delivery_id,
        endpoint=endpoint_id,
        event_id=event.id,
        seq=event.seq,
        type=event.type,
        time=event.time,
        count=attempt_count,
    )
    return delivery_id


async def _execute(conn, sql: str, **params) -> None:
    await Statement(sql).execute(conn, **params)


async def _rows(conn, sql: str, **params) -> list[dict]:
    return [dict(r) for r in await Statement(sql).fetch(conn, **params)]


async def test_a_batch_of_mixed_results_lands_as_one_by_one(settings):
    settings = settings.model_copy(update={"webhook_retry_schedule": SCHEDULE})
    db = await Database.connect(settings)
    metrics = Metrics("notifications-test")
    dispatcher = Dispatcher(settings=settings, metrics=metrics)
    now = datetime.now(UTC)
    try:
        async with db.transaction() as conn:
            healthy = await _endpoint(conn)
            recovering = await _endpoint(conn, failing_since=now - timedelta(days=1))
            gone = await _endpoint(conn)
            dead = await _endpoint(conn, failing_since=now - timedelta(days=6))
            taken = await _endpoint(conn)
            paused = await _endpoint(conn)
            d = {
                "ok": await _delivery(conn, healthy),
                "500": await _delivery(conn, healthy),
                "last": await _delivery(conn, healthy, attempt_count=len(SCHEDULE)),
                "503": await _delivery(conn, recovering),
                "ok_after": await _delivery(conn, recovering),
                "410": await _delivery(conn, gone),
                "timeout": await _delivery(conn, dead),
                "late": await _delivery(conn, taken),
                "disabled": await _delivery(conn, paused),
            }
        claimed = {item["id"]: item for item in await dispatcher.claim(db, 100)}
        assert set(claimed) == set(d.values())
        async with db.transaction() as conn:
            # Not claimed: the 410 endpoint's other pending delivery, failed by the disabling.
            waiting = await _delivery(conn, gone)
            # The lease of "late" ran out and another claim took it.
            await _execute(
                conn,
                "UPDATE notifications.deliveries SET lease_until = now() + interval '1 min' "
                "WHERE id = :id",
                id=d["late"],
            )
            # The endpoint of "disabled" was disabled while its delivery was in flight.
            await store.disable_endpoint(conn, endpoint_id=paused, reason="by a test")

        at = datetime.now(UTC)
        outcomes = {
            "ok": Outcome(status_code=200, excerpt="fine", latency_ms=3),
            "500": Outcome(status_code=500, excerpt="answered 500", latency_ms=4),
            "last": Outcome(status_code=502, excerpt="", latency_ms=5),
            "503": Outcome(status_code=503, latency_ms=6, retry_after="120"),
            "ok_after": Outcome(status_code=204, excerpt="", latency_ms=7),
            "410": Outcome(status_code=410, excerpt="gone", latency_ms=8),
            "timeout": Outcome(error="timeout", latency_ms=15000),
            "late": Outcome(status_code=200, excerpt="late", latency_ms=9),
            "disabled": Outcome(status_code=200, excerpt="in time", latency_ms=10),
        }
        batch = [
            Result(claimed[d[name]], outcome, at + timedelta(milliseconds=i))
            for i, (name, outcome) in enumerate(outcomes.items())
        ]
        await dispatcher.record(db, batch)

        async with db.connection() as conn:
            rows = await _rows(conn, "SELECT * FROM notifications.deliveries")
            deliveries = {r["id"]: r for r in rows}
            endpoints = {
                r["id"]: r for r in await _rows(conn, "SELECT * FROM notifications.endpoints")
            }
            attempts = await _rows(conn, "SELECT * FROM notifications.attempts ORDER BY id")
            disabled_events = await _rows(
                conn, "SELECT subject FROM hub.events WHERE type = 'endpoint.disabled'"
            )

        def state(name: str) -> tuple:
            row = deliveries[d[name]]
            return row["status"], row["attempt_count"], row["last_status_code"], row["last_error"]

        assert state("ok") == ("succeeded", 1, 200, None)
        assert deliveries[d["ok"]]["next_attempt_at"] is None
        assert deliveries[d["ok"]]["lease_until"] is None
        assert state("500") == ("pending", 1, 500, "HTTP 500")
        retry_in = deliveries[d["500"]]["next_attempt_at"] - batch[1].at
        assert timedelta(seconds=48) <= retry_in <= timedelta(seconds=72)  # 60 s ± 20 %
        assert deliveries[d["500"]]["lease_until"] is None
        assert state("last") == ("failed", len(SCHEDULE) + 1, 502, "HTTP 502")
        assert state("503") == ("pending", 1, 503, "HTTP 503")
        assert deliveries[d["503"]]["next_attempt_at"] - batch[3].at == timedelta(seconds=120)
        assert state("ok_after") == ("succeeded", 1, 204, None)
        assert state("410") == ("failed", 1, 410, "HTTP 410")
        # The 5-day endpoint's delivery was moved on, then the disabling failed it.
        assert state("timeout") == ("failed", 1, None, "endpoint disabled")
        # The newer claim keeps the delivery; the late attempt is in the history.
        assert state("late") == ("pending", 0, None, None)
        assert deliveries[d["late"]]["lease_until"] > at
        assert state("disabled") == ("succeeded", 1, 200, None)
        assert deliveries[waiting]["status"] == "failed"
        assert deliveries[waiting]["last_error"] == "endpoint disabled"

        # failing_since as if recorded one by one: a failure after a success sets it, a
        # success after a failure clears it, a 410 leaves it alone.
        assert endpoints[healthy]["failing_since"] == batch[1].at
        assert endpoints[healthy]["status"] == "active"
        assert endpoints[recovering]["failing_since"] is None
        assert endpoints[recovering]["status"] == "active"
        assert endpoints[gone]["status"] == "disabled"
        assert "410" in endpoints[gone]["disabled_reason"]
        assert endpoints[gone]["failing_since"] is None
        assert endpoints[dead]["status"] == "disabled"
        assert "5 days" in endpoints[dead]["disabled_reason"]
        assert endpoints[taken]["failing_since"] is None
        assert {e["subject"] for e in disabled_events} == {
            f"endpoints/{gone}",
            f"endpoints/{dead}",
            f"endpoints/{paused}",
        }

        # One attempt row per result, in the order they finished.
        assert [a["delivery_id"] for a in attempts] == [r.item["id"] for r in batch]
        by_delivery = {a["delivery_id"]: a for a in attempts}
        assert by_delivery[d["500"]]["response_excerpt"] == "answered 500"
        assert by_delivery[d["500"]]["error"] == "HTTP 500"
        assert by_delivery[d["500"]]["latency_ms"] == 4
        assert by_delivery[d["timeout"]]["error"] == "timeout"
        assert by_delivery[d["timeout"]]["status_code"] is None
        assert by_delivery[d["late"]]["response_excerpt"] == "late"
        assert by_delivery[d["ok"]]["attempted_at"] == batch[0].at

        assert metrics.webhook_attempts.labels("success")._value.get() == 4
        assert metrics.webhook_attempts.labels("failure")._value.get() == 5
    finally:
        await db.close()


async def test_a_success_leaves_a_healthy_endpoint_untouched(settings):
    db = await Database.connect(settings)
    dispatcher = Dispatcher(settings=settings)
    try:
        async with db.transaction() as conn:
            endpoint = await _endpoint(conn)
            await _delivery(conn, endpoint)
        (item,) = await dispatcher.claim(db, 10)
        async with db.connection() as conn:
            before = (
                await _rows(
                    conn,
                    "SELECT xmin::text AS xmin FROM notifications.endpoints WHERE id = :id",
                    id=endpoint,
                )
            )[0]["xmin"]
        await dispatcher.record(db, [Result(item, Outcome(status_code=200), datetime.now(UTC))])
        async with db.connection() as conn:
            after = await _rows(
                conn,
                "SELECT xmin::text AS xmin, failing_since FROM notifications.endpoints "
                "WHERE id = :id",
                id=endpoint,
            )
        assert after[0]["xmin"] == before  # not rewritten
        assert after[0]["failing_since"] is None
    finally:
        await db.close()


async def test_a_batch_that_disables_nothing_is_one_statement_and_lands_the_same(settings):
    settings = settings.model_copy(update={"webhook_retry_schedule": SCHEDULE})
    db = await Database.connect(settings)
    dispatcher = Dispatcher(settings=settings)
    now = datetime.now(UTC)
    try:
        async with db.transaction() as conn:
            healthy = await _endpoint(conn)
            recovering = await _endpoint(conn, failing_since=now - timedelta(days=1))
            taken = await _endpoint(conn)
            d = {
                "ok": await _delivery(conn, healthy),
                "500": await _delivery(conn, healthy),
                "503": await _delivery(conn, recovering),
                "ok_after": await _delivery(conn, recovering),
                "late": await _delivery(conn, taken),
            }
        claimed = {item["id"]: item for item in await dispatcher.claim(db, 100)}
        async with db.transaction() as conn:
            await _execute(
                conn,
                "UPDATE notifications.deliveries SET lease_until = now() + interval '1 min' "
                "WHERE id = :id",
                id=d["late"],
            )
        at = datetime.now(UTC)
        outcomes = {
            "ok": Outcome(status_code=200, excerpt="fine", latency_ms=3),
            "500": Outcome(status_code=500, excerpt="answered 500", latency_ms=4),
            "503": Outcome(status_code=503, latency_ms=6, retry_after="120"),
            "ok_after": Outcome(status_code=204, excerpt="", latency_ms=7),
            "late": Outcome(status_code=200, excerpt="late", latency_ms=9),
        }
        batch = [
            Result(claimed[d[name]], outcome, at + timedelta(milliseconds=i))
            for i, (name, outcome) in enumerate(outcomes.items())
        ]
        await dispatcher.record(db, batch)

        async with db.connection() as conn:
            rows = await _rows(conn, "SELECT * FROM notifications.deliveries")
            deliveries = {r["id"]: r for r in rows}
            endpoints = {
                r["id"]: r for r in await _rows(conn, "SELECT * FROM notifications.endpoints")
            }
            attempts = await _rows(conn, "SELECT * FROM notifications.attempts ORDER BY id")

        def state(name: str) -> tuple:
            row = deliveries[d[name]]
            return row["status"], row["attempt_count"], row["last_status_code"], row["last_error"]

        assert state("ok") == ("succeeded", 1, 200, None)
        assert state("500") == ("pending", 1, 500, "HTTP 500")
        retry_in = deliveries[d["500"]]["next_attempt_at"] - batch[1].at
        assert timedelta(seconds=48) <= retry_in <= timedelta(seconds=72)
        assert state("503") == ("pending", 1, 503, "HTTP 503")
        assert deliveries[d["503"]]["next_attempt_at"] - batch[2].at == timedelta(seconds=120)
        assert state("ok_after") == ("succeeded", 1, 204, None)
        assert state("late") == ("pending", 0, None, None)
        assert all(
            deliveries[d[name]]["lease_until"] is None for name in ("ok", "500", "503", "ok_after")
        )
        assert endpoints[healthy]["failing_since"] == batch[1].at
        assert endpoints[recovering]["failing_since"] is None
        assert all(e["status"] == "active" for e in endpoints.values())
        assert [a["delivery_id"] for a in attempts] == [r.item["id"] for r in batch]
        assert attempts[1]["response_excerpt"] == "answered 500"
    finally:
        await db.close()


def _with_future(result: Result) -> Result:
    result.done = asyncio.get_running_loop().create_future()
    return result


@pytest.mark.parametrize("may_disable", [False, True], ids=["one-statement", "transaction"])
async def test_a_nul_byte_and_a_deleted_endpoint_fail_no_other_result(settings, may_disable):
    """A receiver's reply with a NUL byte, and a delivery whose endpoint was deleted while it
    was in flight, are recorded (or dropped) without failing the other partners' results."""
    db = await Database.connect(settings)
    dispatcher = Dispatcher(settings=settings)
    try:
        async with db.transaction() as conn:
            healthy = await _endpoint(conn)
            nul = await _endpoint(conn)
            deleted = await _endpoint(conn)
            gone = await _endpoint(conn)
            d = {
                "ok": await _delivery(conn, healthy),
                "nul": await _delivery(conn, nul),
                "deleted": await _delivery(conn, deleted),
                "nul_error": await _delivery(conn, nul),
                "410": await _delivery(conn, gone),
                "ok_too": await _delivery(conn, healthy),
            }
        claimed = {item["id"]: item for item in await dispatcher.claim(db, 100)}
        async with db.transaction() as conn:
            # DELETE /endpoints/{id} while its delivery is in flight.
            await _execute(conn, "DELETE FROM notifications.endpoints WHERE id = :id", id=deleted)
        at = datetime.now(UTC)
        outcomes = {
            "ok": Outcome(status_code=200, excerpt="fine"),
            "nul": Outcome(status_code=200, excerpt="ok\x00done"),
            "deleted": Outcome(status_code=200, excerpt="too late"),
            "nul_error": Outcome(error="RemoteProtocolError: bad\x00header \ud800"),
            "410": Outcome(status_code=410),
            "ok_too": Outcome(status_code=204),
        }
        if not may_disable:
            del outcomes["410"]
        batch = [
            Result(claimed[d[name]], outcome, at + timedelta(milliseconds=i))
            for i, (name, outcome) in enumerate(outcomes.items())
        ]
        await dispatcher.record(db, batch)

        async with db.connection() as conn:
            deliveries = {
                r["id"]: r for r in await _rows(conn, "SELECT * FROM notifications.deliveries")
            }
            attempts = await _rows(conn, "SELECT * FROM notifications.attempts ORDER BY id")
        assert d["deleted"] not in deliveries
        assert deliveries[d["ok"]]["status"] == "succeeded"
        assert deliveries[d["ok_too"]]["status"] == "succeeded"
        assert deliveries[d["nul"]]["status"] == "succeeded"
        assert deliveries[d["nul_error"]]["status"] == "pending"
        assert deliveries[d["nul_error"]]["last_error"] == "RemoteProtocolError: bad\ufffdheader ?"
        assert all(
            deliveries[d[name]]["lease_until"] is None for name in outcomes if name != "deleted"
        )
        expected = [r.item["id"] for r in batch if r.item["id"] != d["deleted"]]
        assert [a["delivery_id"] for a in attempts] == expected
        by_delivery = {a["delivery_id"]: a for a in attempts}
        assert by_delivery[d["nul"]]["response_excerpt"] == "ok\ufffddone"
        assert by_delivery[d["nul_error"]]["error"] == "RemoteProtocolError: bad\ufffdheader ?"
    finally:
        await db.close()


async def test_a_result_the_database_refuses_fails_alone(settings):
    """A batch the database refuses is written again by halves: only the result it cannot
    take fails (and is logged without its data); the others are recorded, in order. A result
    refused for its texts is recorded without them."""
    db = await Database.connect(settings)
    metrics = Metrics("notifications-test")
    dispatcher = Dispatcher(settings=settings, metrics=metrics)
    try:
        async with db.transaction() as conn:
            endpoints = [await _endpoint(conn) for _ in range(3)]
            ids = [await _delivery(conn, endpoints[i % 3]) for i in range(7)]
        claimed = {item["id"]: item for item in await dispatcher.claim(db, 100)}
        poisoned, wordy = ids[4], ids[1]
        async with db.transaction() as conn:
            # Something no result should meet: the database refuses one delivery's attempt
            # whatever it carries, and another one's for its excerpt.
            await conn.execute(
                "CREATE FUNCTION notifications.refuse() RETURNS trigger LANGUAGE plpgsql AS "
                f"$$ BEGIN IF NEW.delivery_id = '{poisoned}' "
                "OR NEW.response_excerpt LIKE '%refused words%' "
                "THEN RAISE EXCEPTION 'refused' USING ERRCODE = '22023'; END IF; "
                "RETURN NEW; END $$"
            )
            await conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON notifications.attempts "
                "FOR EACH ROW EXECUTE FUNCTION notifications.refuse()"
            )
        at = datetime.now(UTC)
        batch = [
            _with_future(
                Result(
                    claimed[delivery_id],
                    Outcome(
                        status_code=500 if i == 2 else 200,
                        excerpt="refused words" if delivery_id == wordy else f"reply {i}",
                    ),
                    at + timedelta(milliseconds=i),
                )
            )
            for i, delivery_id in enumerate(ids)
        ]
        with structlog.testing.capture_logs() as entries:
            await dispatcher.record_all(db, batch)

        failed = [r for r in batch if r.done.exception() is not None]
        assert [r.item["id"] for r in failed] == [poisoned]
        assert all(r.done.done() and r.done.exception() is None for r in batch if r not in failed)
        async with db.connection() as conn:
            deliveries = {
                r["id"]: r for r in await _rows(conn, "SELECT * FROM notifications.deliveries")
            }
            attempts = await _rows(conn, "SELECT * FROM notifications.attempts ORDER BY id")
        assert [a["delivery_id"] for a in attempts] == [i for i in ids if i != poisoned]
        by_delivery = {a["delivery_id"]: a for a in attempts}
        assert by_delivery[wordy]["response_excerpt"] is None
        assert by_delivery[ids[0]]["response_excerpt"] == "reply 0"
        assert deliveries[poisoned]["lease_until"] is not None  # claimed again once it expires
        assert deliveries[poisoned]["attempt_count"] == 0
        assert deliveries[ids[2]]["status"] == "pending"
        assert all(
            deliveries[i]["status"] == "succeeded" for i in ids if i not in (poisoned, ids[2])
        )
        assert metrics.webhook_attempts.labels("success")._value.get() == 5
        assert metrics.webhook_attempts.labels("failure")._value.get() == 1
        logged = json.dumps(entries, default=str)
        assert "delivery_result_refused" in logged and str(poisoned) in logged
        assert "delivery_result_recorded_without_texts" in logged and str(wordy) in logged
        assert "reply" not in logged and "refused words" not in logged
    finally:
        await db.close()


async def test_a_success_recorded_after_a_failure_of_the_same_claim_clears_failing_since(
    settings,
):
    """Two deliveries claimed together: a fast 502 is recorded first and sets failing_since;
    the slower success, recorded in a later batch, clears it (SPEC 8: only-failed for 5 days)."""
    db = await Database.connect(settings)
    dispatcher = Dispatcher(settings=settings)
    try:
        async with db.transaction() as conn:
            endpoint = await _endpoint(conn)
            fast = await _delivery(conn, endpoint)
            slow = await _delivery(conn, endpoint)
        claimed = {item["id"]: item for item in await dispatcher.claim(db, 10)}
        at = datetime.now(UTC)
        await dispatcher.record(db, [Result(claimed[fast], Outcome(status_code=502), at)])
        async with db.connection() as conn:
            (row,) = await _rows(
                conn,
                "SELECT failing_since FROM notifications.endpoints WHERE id = :id",
                id=endpoint,
            )
        assert row["failing_since"] == at
        await dispatcher.record(
            db,
            [Result(claimed[slow], Outcome(status_code=200), at + timedelta(seconds=1))],
        )
        async with db.connection() as conn:
            (row,) = await _rows(
                conn,
                "SELECT failing_since FROM notifications.endpoints WHERE id = :id",
                id=endpoint,
            )
        assert row["failing_since"] is None
    finally:
        await db.close()


async def test_a_late_result_leaves_a_recovered_delivery_to_its_new_start(settings):
    """Disabled while its delivery was in flight, then enabled and recovered: the first
    attempt's late answer goes to the history, the recovered delivery starts afresh."""
    settings = settings.model_copy(update={"webhook_retry_schedule": SCHEDULE})
    db = await Database.connect(settings)
    dispatcher = Dispatcher(settings=settings)
    try:
        async with db.transaction() as conn:
            endpoint = await _endpoint(conn)
            delivery = await _delivery(conn, endpoint)
        (item,) = await dispatcher.claim(db, 10)
        async with db.transaction() as conn:
            await store.disable_endpoint(conn, endpoint_id=endpoint, reason="by a test")
            # What POST /endpoints/{id}/enable and /recover write.
            await _execute(
                conn,
                "UPDATE notifications.endpoints SET status = 'active', "
                "disabled_reason = NULL, failing_since = NULL WHERE id = :id",
                id=endpoint,
            )
            await _execute(
                conn,
                "UPDATE notifications.deliveries SET status = 'pending', "
                "next_attempt_at = now(), attempt_count = 0, updated_at = now() "
                "WHERE endpoint_id = :id AND status = 'failed'",
                id=endpoint,
            )
        await dispatcher.record(db, [Result(item, Outcome(status_code=500), datetime.now(UTC))])
        async with db.connection() as conn:
            (row,) = await _rows(
                conn, "SELECT * FROM notifications.deliveries WHERE id = :id", id=delivery
            )
            attempts = await _rows(conn, "SELECT * FROM notifications.attempts")
        assert (row["status"], row["attempt_count"]) == ("pending", 0)
        assert row["next_attempt_at"] <= datetime.now(UTC)  # due now, as recover left it
        assert [a["status_code"] for a in attempts] == [500]
    finally:
        await db.close()


async def test_a_batch_written_twice_records_each_attempt_once(settings):
    """A statement retried after its connection broke may have committed the first time:
    the second run changes nothing (no attempt twice, no delivery moved twice)."""
    settings = settings.model_copy(update={"webhook_retry_schedule": SCHEDULE})
    db = await Database.connect(settings)
    dispatcher = Dispatcher(settings=settings)
    try:
        async with db.transaction() as conn:
            endpoint = await _endpoint(conn)
            ids = [await _delivery(conn, endpoint) for _ in range(3)]
        claimed = {item["id"]: item for item in await dispatcher.claim(db, 10)}
        at = datetime.now(UTC)
        batch = [
            Result(claimed[i], Outcome(status_code=code), at + timedelta(milliseconds=n))
            for n, (i, code) in enumerate(zip(ids, (200, 500, 200), strict=True))
        ]
        await dispatcher.record(db, batch)
        async with db.connection() as conn:
            first = await _rows(conn, "SELECT * FROM notifications.deliveries ORDER BY id")
        await dispatcher.record(db, batch)
        async with db.connection() as conn:
            again = await _rows(conn, "SELECT * FROM notifications.deliveries ORDER BY id")
            attempts = await _rows(conn, "SELECT * FROM notifications.attempts ORDER BY id")
        assert again == first
        assert [a["delivery_id"] for a in attempts] == ids
    finally:
        await db.close()


_BACKEND_SLEEP = Statement("SELECT pg_sleep(0.05)")
_ONE = Statement("SELECT 1 AS one")


async def _terminate_other_backends(db: Database) -> int:
    """What a PostgreSQL restart does to a pool: every connection it holds is gone."""
    async with db.connection() as conn:
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        conn.terminate()  # this one goes too
    await asyncio.sleep(0.2)
    return int(killed)


async def test_stale_pooled_connections_fail_no_statement_after_the_server_restarts(settings):
    """A disconnect found on one pooled connection retires all that were made before it
    (`Database` expires the pool's connections), and the statement runs again on a fresh
    one."""
    db = await Database.connect(settings)
    dispatcher = Dispatcher(settings=settings)
    try:
        async with db.transaction() as conn:
            endpoint = await _endpoint(conn)
            ok = await _delivery(conn, endpoint)
            gone = await _delivery(conn, await _endpoint(conn))
        await asyncio.gather(*(store.fetch(db, _BACKEND_SLEEP) for _ in range(4)))
        assert db.pool.get_idle_size() >= 4
        assert await _terminate_other_backends(db) >= 3

        assert (await store.fetch(db, _ONE))[0]["one"] == 1
        claimed = {item["id"]: item for item in await dispatcher.claim(db, 10)}
        assert set(claimed) == {ok, gone}
        await dispatcher.record(
            db, [Result(claimed[ok], Outcome(status_code=200), datetime.now(UTC))]
        )

        # The same through a transaction (a batch that may disable an endpoint).
        await asyncio.gather(*(store.fetch(db, _BACKEND_SLEEP) for _ in range(4)))
        assert await _terminate_other_backends(db) >= 3
        await dispatcher.record(
            db, [Result(claimed[gone], Outcome(status_code=410), datetime.now(UTC))]
        )
        async with db.connection() as conn:
            states = {
                r["id"]: r["status"]
                for r in await _rows(conn, "SELECT * FROM notifications.deliveries")
            }
        assert states == {ok: "succeeded", gone: "failed"}
    finally:
        await db.close()


async def test_an_endpoint_deleted_while_its_result_is_written_fails_no_other_result(settings):
    """The delete commits while the record statement waits for its rows: the result of the
    deleted delivery is dropped, the others land (no foreign key error)."""
    db = await Database.connect(settings)
    dispatcher = Dispatcher(settings=settings)
    try:
        async with db.transaction() as conn:
            healthy = await _endpoint(conn)
            deleted = await _endpoint(conn)
            ok = await _delivery(conn, healthy)
            leased = await _delivery(conn, deleted)
            taken = await _delivery(conn, deleted)
        claimed = {item["id"]: item for item in await dispatcher.claim(db, 10)}
        async with db.transaction() as conn:
            # "taken": its lease ran out and another claim took it (a superseded result).
            await _execute(
                conn,
                "UPDATE notifications.deliveries SET lease_until = now() + interval '1 min' "
                "WHERE id = :id",
                id=taken,
            )
        at = datetime.now(UTC)
        batch = [
            Result(claimed[i], Outcome(status_code=200), at + timedelta(milliseconds=n))
            for n, i in enumerate((ok, leased, taken))
        ]
        # The delete commits as the block ends, while the record statement waits for its rows.
        async with db.transaction() as deleting:
            await _execute(
                deleting, "DELETE FROM notifications.endpoints WHERE id = :id", id=deleted
            )
            recording = asyncio.create_task(dispatcher.record(db, batch))
            await asyncio.sleep(0.5)
            assert not recording.done()  # waits for the deleted rows' locks
        await asyncio.wait_for(recording, 10)
        async with db.connection() as conn:
            deliveries = {
                r["id"]: r for r in await _rows(conn, "SELECT * FROM notifications.deliveries")
            }
            attempts = await _rows(conn, "SELECT * FROM notifications.attempts")
        assert set(deliveries) == {ok}
        assert deliveries[ok]["status"] == "succeeded"
        assert [a["delivery_id"] for a in attempts] == [ok]
    finally:
        await db.close()


async def test_a_statement_whose_connection_dies_under_it_runs_once_more(settings):
    """The server drops the connection in the middle of a statement: the statement runs once
    more, on a fresh connection, and its caller sees only the answer."""
    db = await Database.connect(settings)
    try:

        async def kill_the_sleeper() -> int:
            async with db.connection() as conn:
                for _ in range(100):
                    pid = await conn.fetchval(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid() AND query LIKE 'SELECT pg_backend_pid()%'"
                    )
                    if pid is not None:
                        await conn.execute("SELECT pg_terminate_backend($1)", pid)
                        return pid
                    await asyncio.sleep(0.02)
            raise AssertionError("the statement never ran")

        killer = asyncio.create_task(kill_the_sleeper())
        with structlog.testing.capture_logs() as entries:
            rows = await store.fetch(
                db, Statement("SELECT pg_backend_pid() AS pid, pg_sleep(0.5) AS slept")
            )
        killed = await killer
        assert rows[0]["pid"] != killed
        assert [e["event"] for e in entries] == ["statement_retried_after_disconnect"]
    finally:
        await db.close()
