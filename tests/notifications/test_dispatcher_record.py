"""The dispatcher records finished attempts in batches: one batch mixing successes, failures,
retries, a Retry-After, a 410, a 5-day failure, an exhausted schedule, a result whose lease
another claim took, and one whose endpoint was disabled meanwhile, lands as if each result had
been recorded alone."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from services.notifications import store
from services.notifications.dispatcher import Dispatcher, Outcome, Result
from shared.db import create_engine, create_sessionmaker
from shared.eventlog.append import append
from shared.observability import Metrics

SCHEDULE = (60.0, 600.0)


async def _endpoint(session, *, failing_since: datetime | None = None) -> uuid.UUID:
    endpoint_id = uuid.uuid4()
    await session.execute(
        text(
            "INSERT INTO notifications.endpoints (id, partner_id, url, event_types, secrets, "
            "failing_since) VALUES (:id, :partner, 'http://127.0.0.1:9/hook', '{*}', "
            "CAST(:secrets AS jsonb), :failing_since)"
        ),
        {
            "id": endpoint_id,
            "partner": uuid.uuid4(),
            "secrets": json.dumps([{"secret": "whsec_" + "A" * 43, "expires_at": None}]),
            "failing_since": failing_since,
        },
    )
    return endpoint_id


async def _delivery(session, endpoint_id: uuid.UUID, *, attempt_count: int = 0) -> uuid.UUID:
    event = await append(
        session,
        type="service.updated",
        source="/registry",
        subject=f"services/{uuid.uuid4()}",
        data={},
        actor="admin",
        audience=[],
    )
    delivery_id = uuid.uuid4()
    await session.execute(
        text(
            "INSERT INTO notifications.deliveries (id, endpoint_id, event_id, event_seq, "
            "event_type, event_time, status, attempt_count, next_attempt_at) VALUES (:id, "
            ":endpoint, :event_id, :seq, :type, :time, 'pending', :count, now() - interval '1s')"
        ),
        {
            "id": delivery_id,
            "endpoint": endpoint_id,
            "event_id": event.id,
            "seq": event.seq,
            "type": event.type,
            "time": event.time,
            "count": attempt_count,
        },
    )
    return delivery_id


async def _rows(session, sql: str, **params) -> list[dict]:
    return [dict(r) for r in (await session.execute(text(sql), params)).mappings()]


async def test_a_batch_of_mixed_results_lands_as_one_by_one(settings):
    settings = settings.model_copy(update={"webhook_retry_schedule": SCHEDULE})
    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)
    metrics = Metrics("notifications-test")
    dispatcher = Dispatcher(settings=settings, metrics=metrics)
    now = datetime.now(UTC)
    try:
        async with sessionmaker() as session, session.begin():
            healthy = await _endpoint(session)
            recovering = await _endpoint(session, failing_since=now - timedelta(days=1))
            gone = await _endpoint(session)
            dead = await _endpoint(session, failing_since=now - timedelta(days=6))
            taken = await _endpoint(session)
            paused = await _endpoint(session)
            d = {
                "ok": await _delivery(session, healthy),
                "500": await _delivery(session, healthy),
                "last": await _delivery(session, healthy, attempt_count=len(SCHEDULE)),
                "503": await _delivery(session, recovering),
                "ok_after": await _delivery(session, recovering),
                "410": await _delivery(session, gone),
                "timeout": await _delivery(session, dead),
                "late": await _delivery(session, taken),
                "disabled": await _delivery(session, paused),
            }
        claimed = {item["id"]: item for item in await dispatcher.claim(sessionmaker, 100)}
        assert set(claimed) == set(d.values())
        async with sessionmaker() as session, session.begin():
            # Not claimed: the 410 endpoint's other pending delivery, failed by the disabling.
            waiting = await _delivery(session, gone)
            # The lease of "late" ran out and another claim took it.
            await session.execute(
                text(
                    "UPDATE notifications.deliveries SET lease_until = now() + interval '1 min' "
                    "WHERE id = :id"
                ),
                {"id": d["late"]},
            )
            # The endpoint of "disabled" was disabled while its delivery was in flight.
            await store.disable_endpoint(session, endpoint_id=paused, reason="by a test")

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
        await dispatcher.record(sessionmaker, batch)

        async with sessionmaker() as session:
            rows = await _rows(session, "SELECT * FROM notifications.deliveries")
            deliveries = {r["id"]: r for r in rows}
            endpoints = {
                r["id"]: r for r in await _rows(session, "SELECT * FROM notifications.endpoints")
            }
            attempts = await _rows(session, "SELECT * FROM notifications.attempts ORDER BY id")
            disabled_events = await _rows(
                session, "SELECT subject FROM hub.events WHERE type = 'endpoint.disabled'"
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
        await engine.dispose()


async def test_a_success_leaves_a_healthy_endpoint_untouched(settings):
    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)
    dispatcher = Dispatcher(settings=settings)
    try:
        async with sessionmaker() as session, session.begin():
            endpoint = await _endpoint(session)
            await _delivery(session, endpoint)
        (item,) = await dispatcher.claim(sessionmaker, 10)
        async with sessionmaker() as session:
            before = (
                await _rows(
                    session,
                    "SELECT xmin::text AS xmin FROM notifications.endpoints WHERE id = :id",
                    id=endpoint,
                )
            )[0]["xmin"]
        await dispatcher.record(
            sessionmaker, [Result(item, Outcome(status_code=200), datetime.now(UTC))]
        )
        async with sessionmaker() as session:
            after = await _rows(
                session,
                "SELECT xmin::text AS xmin, failing_since FROM notifications.endpoints "
                "WHERE id = :id",
                id=endpoint,
            )
        assert after[0]["xmin"] == before  # not rewritten
        assert after[0]["failing_since"] is None
    finally:
        await engine.dispose()


async def test_a_batch_that_disables_nothing_is_one_statement_and_lands_the_same(settings):
    settings = settings.model_copy(update={"webhook_retry_schedule": SCHEDULE})
    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)
    dispatcher = Dispatcher(settings=settings)
    now = datetime.now(UTC)
    try:
        async with sessionmaker() as session, session.begin():
            healthy = await _endpoint(session)
            recovering = await _endpoint(session, failing_since=now - timedelta(days=1))
            taken = await _endpoint(session)
            d = {
                "ok": await _delivery(session, healthy),
                "500": await _delivery(session, healthy),
                "503": await _delivery(session, recovering),
                "ok_after": await _delivery(session, recovering),
                "late": await _delivery(session, taken),
            }
        claimed = {item["id"]: item for item in await dispatcher.claim(sessionmaker, 100)}
        async with sessionmaker() as session, session.begin():
            await session.execute(
                text(
                    "UPDATE notifications.deliveries SET lease_until = now() + interval '1 min' "
                    "WHERE id = :id"
                ),
                {"id": d["late"]},
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
        await dispatcher.record(sessionmaker, batch)

        async with sessionmaker() as session:
            rows = await _rows(session, "SELECT * FROM notifications.deliveries")
            deliveries = {r["id"]: r for r in rows}
            endpoints = {
                r["id"]: r for r in await _rows(session, "SELECT * FROM notifications.endpoints")
            }
            attempts = await _rows(session, "SELECT * FROM notifications.attempts ORDER BY id")

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
        await engine.dispose()
