"""Signed webhooks: CloudEvents bodies verified with standardwebhooks, retries with the same
webhook-id, rotation, 410, slow receivers, SSRF refusals, and the pull feed."""

from __future__ import annotations

import asyncio
import json
import time
from uuid import UUID

import pytest
from standardwebhooks.webhooks import Webhook

from services.notifications.app import create_app as notifications_app
from shared.eventlog.append import append
from tests.conftest import running
from tests.factories import bearer, case_body, make_admin_key
from tests.hub import eventually, running_hub
from tests.notifications.receiver import Receiver

FAST_RETRIES = (0.2, 0.2, 0.2, 0.2)


def verify(secret: str, received) -> dict:
    headers = {k: v for k, v in received.headers.items() if k.startswith("webhook-")}
    return Webhook(secret).verify(received.body, headers)


async def _endpoint(client, key: str, url: str, **fields) -> dict:
    response = await client.post("/endpoints", json={"url": url, **fields}, headers=bearer(key))
    assert response.status_code == 201, response.text
    return response.json()


async def test_a_referral_arrives_signed_as_a_cloudevent_and_rotation_keeps_both_keys(settings):
    receiver = Receiver()
    await receiver.start()
    try:
        async with running_hub(settings, webhook_retry_schedule=FAST_RETRIES) as hub:
            owner = await hub.partner("ONG Sabou")
            provider = await hub.partner("CFP Kayes")
            await hub.service(provider, "economic.vocational_training", ["ML"])
            endpoint = await _endpoint(
                hub.notifications, provider["key"], receiver.url, event_types=["referral.*"]
            )
            assert endpoint["secret"].startswith("whsec_")
            await hub.registry.post(
                "/cases",
                json=case_body(
                    plan=[{"service_type": "economic.vocational_training", "depends_on": []}]
                ),
                headers=bearer(owner["key"]),
            )
            await eventually(lambda: asyncio.sleep(0, bool(receiver.requests)))
            first = receiver.requests[0]
            assert first.headers["content-type"] == "application/cloudevents+json"
            event = verify(endpoint["secret"], first)
            assert event["specversion"] == "1.0" and event["type"] == "referral.created"
            assert event["source"] == "/referrals" and event["id"] == first.headers["webhook-id"]
            assert len(event["sequence"]) == 40
            assert event["data"]["assignee_partner_id"] == provider["id"]
            assert event["data"]["case"]["beneficiary"]["given_name"] == "Aminata"
            assert "decision" not in event["data"]
            assert "AA1234567" not in first.body.decode()

            rotated = await hub.notifications.post(
                f"/endpoints/{endpoint['id']}/rotate-secret", headers=bearer(provider["key"])
            )
            new_secret = rotated.json()["secret"]
            assert new_secret != endpoint["secret"]
            test = await hub.notifications.post(
                f"/endpoints/{endpoint['id']}/test", headers=bearer(provider["key"])
            )
            assert test.status_code == 202
            await eventually(lambda: asyncio.sleep(0, len(receiver.requests) >= 2))
            second = receiver.requests[-1]
            assert len(second.headers["webhook-signature"].split(" ")) == 2
            assert verify(new_secret, second)["type"] == "endpoint.test"
            assert verify(endpoint["secret"], second)["type"] == "endpoint.test"
    finally:
        await receiver.stop()


async def test_500_twice_then_200_is_three_attempts_of_one_webhook_id(settings):
    receiver = Receiver(respond=lambda got: (500, {}) if len(got) <= 2 else (200, {}))
    await receiver.start()
    try:
        async with running_hub(settings, webhook_retry_schedule=FAST_RETRIES) as hub:
            partner = await hub.partner("ONG Sabou")
            # Only the test event: not the partner's own events, which may come too when
            # committed just before the registration.
            endpoint = await _endpoint(
                hub.notifications, partner["key"], receiver.url, event_types=["referral.*"]
            )
            await hub.notifications.post(
                f"/endpoints/{endpoint['id']}/test", headers=bearer(partner["key"])
            )
            await eventually(lambda: asyncio.sleep(0, len(receiver.requests) >= 3))
            assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
            timestamps = [int(r.headers["webhook-timestamp"]) for r in receiver.requests]
            assert timestamps == sorted(timestamps)

            async def settled():
                page = (
                    await hub.notifications.get("/deliveries", headers=bearer(partner["key"]))
                ).json()
                item = page["items"][0]
                return item if item["status"] == "succeeded" else None

            delivery = await eventually(settled)
            detail = (
                await hub.notifications.get(
                    f"/deliveries/{delivery['id']}", headers=bearer(partner["key"])
                )
            ).json()
            assert detail["attempt_count"] == 3
            assert [a["status_code"] for a in detail["attempts"]] == [500, 500, 200]
            assert detail["attempts"][0]["response_excerpt"] == "answered 500"
            assert detail["event_id"] == receiver.requests[0].headers["webhook-id"]
    finally:
        await receiver.stop()


async def test_410_disables_the_endpoint_and_the_partners_other_endpoint_is_told(settings):
    gone = Receiver(respond=lambda _got: (410, {}))
    other = Receiver()
    await gone.start()
    await other.start()
    try:
        async with running_hub(settings, webhook_retry_schedule=FAST_RETRIES) as hub:
            partner = await hub.partner("ONG Sabou")
            endpoint = await _endpoint(hub.notifications, partner["key"], gone.url)
            await _endpoint(
                hub.notifications, partner["key"], other.url, event_types=["endpoint.*"]
            )
            await hub.notifications.post(
                f"/endpoints/{endpoint['id']}/test", headers=bearer(partner["key"])
            )

            async def disabled():
                got = (
                    await hub.notifications.get(
                        f"/endpoints/{endpoint['id']}", headers=bearer(partner["key"])
                    )
                ).json()
                return got if got["status"] == "disabled" else None

            got = await eventually(disabled)
            assert "410" in got["disabled_reason"]
            await eventually(lambda: asyncio.sleep(0, bool(other.requests)))
            told = json.loads(other.requests[0].body)
            assert told["type"] == "endpoint.disabled" and told["data"]["id"] == endpoint["id"]
            assert len(gone.requests) == 1
            enabled = await hub.notifications.post(
                f"/endpoints/{endpoint['id']}/enable", headers=bearer(partner["key"])
            )
            assert enabled.json()["status"] == "active"
    finally:
        await gone.stop()
        await other.stop()


async def test_a_hanging_receiver_does_not_delay_a_healthy_one(settings):
    hanging = Receiver(respond=lambda _got: "hang")
    healthy = Receiver()
    await hanging.start()
    await healthy.start()
    try:
        async with running_hub(settings, webhook_timeout_seconds=20.0) as hub:
            slow = await hub.partner("Slow")
            fast = await hub.partner("Fast")
            slow_endpoint = await _endpoint(hub.notifications, slow["key"], hanging.url)
            fast_endpoint = await _endpoint(hub.notifications, fast["key"], healthy.url)
            for _ in range(15):  # more than the per-endpoint limit in flight
                await hub.notifications.post(
                    f"/endpoints/{slow_endpoint['id']}/test", headers=bearer(slow["key"])
                )
            await eventually(lambda: asyncio.sleep(0, len(hanging.requests) >= 10))
            started = time.monotonic()
            for _ in range(5):
                await hub.notifications.post(
                    f"/endpoints/{fast_endpoint['id']}/test", headers=bearer(fast["key"])
                )
            await eventually(lambda: asyncio.sleep(0, len(healthy.requests) >= 5), timeout=5)
            assert time.monotonic() - started < 5
            assert len(hanging.requests) == 10  # never more than 10 in flight to one endpoint
    finally:
        await healthy.stop()
        await hanging.stop()


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://10.0.0.8/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "http://example.org/hook",
        "ftp://example.org/hook",
    ],
)
async def test_private_and_non_https_targets_are_refused_in_production(settings, url):
    production = settings.model_copy(
        update={"env": "production", "notifications_allow_private_targets": False}
    )
    app = notifications_app(production)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        response = await client.post("/endpoints", json={"url": url}, headers=bearer(admin))
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"][0]["field"] == "body.url"
        assert (await client.get("/endpoints", headers=bearer(admin))).json()["items"] == []


async def test_a_redirect_is_a_failure_and_is_not_followed(settings):
    inner = Receiver()
    await inner.start()
    redirecting = Receiver(respond=lambda _got: (302, {"location": inner.url}))
    await redirecting.start()
    try:
        async with running_hub(settings, webhook_retry_schedule=(60.0,)) as hub:
            partner = await hub.partner("ONG Sabou")
            endpoint = await _endpoint(hub.notifications, partner["key"], redirecting.url)
            await hub.notifications.post(
                f"/endpoints/{endpoint['id']}/test", headers=bearer(partner["key"])
            )

            async def attempted():
                page = (
                    await hub.notifications.get("/deliveries", headers=bearer(partner["key"]))
                ).json()
                item = page["items"][0] if page["items"] else None
                return item if item and item["attempt_count"] == 1 else None

            delivery = await eventually(attempted)
            assert delivery["status"] == "pending" and delivery["last_status_code"] == 302
            await asyncio.sleep(0.3)
            assert inner.requests == []
    finally:
        await redirecting.stop()
        await inner.stop()


async def test_a_target_that_became_private_is_refused_at_send_time(settings):
    receiver = Receiver()
    await receiver.start()
    try:
        # Registered while private targets were allowed, sent by a production dispatcher.
        async with running_hub(settings) as hub:
            partner = await hub.partner("ONG Sabou")
            endpoint = await _endpoint(hub.notifications, partner["key"], receiver.url)
        strict = settings.model_copy(
            update={
                "env": "production",
                "notifications_allow_private_targets": False,
                "run_workers": True,
                "poll_interval_seconds": 0.2,
            }
        )
        app = notifications_app(strict)
        async with running(app) as client:
            await client.post(f"/endpoints/{endpoint['id']}/test", headers=bearer(partner["key"]))

            async def refused():
                page = (await client.get("/deliveries", headers=bearer(partner["key"]))).json()
                item = page["items"][0] if page["items"] else None
                return item if item and item["attempt_count"] >= 1 else None

            delivery = await eventually(refused)
            assert "refused" in delivery["last_error"]
            assert receiver.requests == []
    finally:
        await receiver.stop()


async def test_the_feed_holds_a_partners_own_events_and_long_polls(settings):
    async with running_hub(settings) as hub:
        owner = await hub.partner("ONG Sabou")
        other = await hub.partner("Other")
        mine = await hub.registry.post(
            "/cases", json=case_body(plan=[]), headers=bearer(owner["key"])
        )
        await hub.registry.post(
            "/cases", json=case_body(plan=[], external_id="O-1"), headers=bearer(other["key"])
        )
        page = (await hub.notifications.get("/feed", headers=bearer(owner["key"]))).json()
        types = [e["type"] for e in page["items"]]
        assert "case.created" in types
        assert all(
            e["data"].get("owner_partner_id", owner["id"]) == owner["id"]
            for e in page["items"]
            if e["type"].startswith("case.")
        )
        assert {e["data"]["id"] for e in page["items"] if e["type"] == "case.created"} == {
            mine.json()["id"]
        }
        cursor = page["next_cursor"]
        empty = (
            await hub.notifications.get(
                "/feed", params={"after": cursor}, headers=bearer(owner["key"])
            )
        ).json()
        assert empty["items"] == [] and empty["next_cursor"] == cursor

        async def later():
            await asyncio.sleep(0.5)
            await hub.registry.post(
                f"/cases/{mine.json()['id']}/close",
                json={"reason": "other"},
                headers=bearer(owner["key"]),
            )

        task = asyncio.create_task(later())
        started = time.monotonic()
        waited = await hub.notifications.get(
            "/feed",
            params={"after": cursor, "wait": 20, "types": "case.*"},
            headers=bearer(owner["key"]),
            timeout=30,
        )
        elapsed = time.monotonic() - started
        await task
        assert [e["type"] for e in waited.json()["items"]] == ["case.closed"]
        assert 0.4 < elapsed < 5
        bad = await hub.notifications.get(
            "/feed", params={"after": "nope"}, headers=bearer(owner["key"])
        )
        assert bad.status_code == 422


async def test_a_receivers_cookie_is_never_sent_back(settings):
    receiver = Receiver(respond=lambda _got: (200, {"set-cookie": "session=abc; Path=/"}))
    await receiver.start()
    try:
        async with running_hub(settings) as hub:
            partner = await hub.partner("ONG Sabou")
            endpoint = await _endpoint(hub.notifications, partner["key"], receiver.url)
            for _ in range(2):
                response = await hub.notifications.post(
                    f"/endpoints/{endpoint['id']}/test", headers=bearer(partner["key"])
                )
                assert response.status_code in (200, 202), response.text
            await eventually(lambda: asyncio.sleep(0, len(receiver.requests) >= 2))
            assert all("cookie" not in r.headers for r in receiver.requests)
    finally:
        await receiver.stop()


async def test_an_endpoint_gets_what_happens_after_its_registration_even_when_fan_out_lags(
    settings,
):
    receiver = Receiver()
    await receiver.start()
    try:
        # The fan-out is not running while the partner is created and the endpoint registered.
        async with running_hub(settings, run_workers=False) as hub:
            partner = await hub.partner("ONG Sabou")
            endpoint = await _endpoint(hub.notifications, partner["key"], receiver.url)
            renamed = await hub.registry.patch(
                f"/partners/{partner['id']}",
                json={"name": "ONG Sabou Mali"},
                headers=bearer(hub.admin),
            )
            assert renamed.status_code == 200, renamed.text
            workers = settings.model_copy(
                update={"run_workers": True, "poll_interval_seconds": 0.2}
            )

            # `partner.created`, committed just before the registration, may come too
            # (README); nothing else from before it.
            def later(types: list[str]) -> list[str]:
                return [t for t in types if t != "partner.created"]

            async with running(notifications_app(workers)):
                await eventually(
                    lambda: asyncio.sleep(
                        0,
                        "partner.updated"
                        in later([json.loads(r.body)["type"] for r in receiver.requests]),
                    )
                )
                await asyncio.sleep(1.0)  # time for anything else to arrive
            types = [json.loads(r.body)["type"] for r in receiver.requests]
            assert later(types) == ["partner.updated"]
            page = (
                await hub.notifications.get(
                    "/deliveries",
                    params={"endpoint_id": endpoint["id"]},
                    headers=bearer(partner["key"]),
                )
            ).json()
            assert later([d["event_type"] for d in page["items"]]) == ["partner.updated"]
    finally:
        await receiver.stop()


async def test_an_event_committed_after_the_registration_is_delivered_though_it_began_before(
    settings,
):
    receiver = Receiver()
    await receiver.start()
    try:
        async with running_hub(settings, run_workers=False) as hub:
            partner = await hub.partner("ONG Sabou")
            # A transaction appends an event for the partner, and is still open when the
            # endpoint is registered: its event's time is earlier, its commit later.
            async with hub.db.transaction() as conn:
                await append(
                    conn,
                    type="partner.updated",
                    source="/registry",
                    subject=f"partners/{partner['id']}",
                    data={"id": partner["id"], "name": "ONG Sabou", "status": "active"},
                    actor="admin",
                    audience=[UUID(partner["id"])],
                )
                endpoint = await _endpoint(hub.notifications, partner["key"], receiver.url)
            workers = settings.model_copy(
                update={"run_workers": True, "poll_interval_seconds": 0.2}
            )

            def types() -> list[str]:
                # `partner.created`, committed just before the registration, may come too.
                return [
                    t
                    for t in (json.loads(r.body)["type"] for r in receiver.requests)
                    if t != "partner.created"
                ]

            async with running(notifications_app(workers)):
                await eventually(lambda: asyncio.sleep(0, "partner.updated" in types()))
                await asyncio.sleep(0.5)
            assert types() == ["partner.updated"]
            assert endpoint["id"]
    finally:
        await receiver.stop()


async def _delivery_of(hub, partner: dict, endpoint_id: str) -> dict | None:
    page = (
        await hub.notifications.get(
            "/deliveries", params={"endpoint_id": endpoint_id}, headers=bearer(partner["key"])
        )
    ).json()
    return page["items"][0] if page["items"] else None


async def test_a_reply_with_a_nul_byte_is_recorded_once(settings):
    receiver = Receiver(respond=lambda _got: (200, {}, b"ok\x00done"))
    await receiver.start()
    try:
        async with running_hub(settings) as hub:
            partner = await hub.partner("ONG Sabou")
            endpoint = await _endpoint(hub.notifications, partner["key"], receiver.url)
            await hub.notifications.post(
                f"/endpoints/{endpoint['id']}/test", headers=bearer(partner["key"])
            )

            async def succeeded():
                item = await _delivery_of(hub, partner, endpoint["id"])
                return item if item and item["status"] == "succeeded" else None

            delivery = await eventually(succeeded, timeout=10)
            detail = (
                await hub.notifications.get(
                    f"/deliveries/{delivery['id']}", headers=bearer(partner["key"])
                )
            ).json()
            assert [a["response_excerpt"] for a in detail["attempts"]] == ["ok\ufffddone"]
            # The partner's own `partner.created`, committed just before the endpoint, may
            # come too (README: when an endpoint's subscription starts); the test event once.
            tests = [r for r in receiver.requests if json.loads(r.body)["type"] == "endpoint.test"]
            assert len(tests) == 1
    finally:
        await receiver.stop()


async def test_deleting_an_endpoint_in_flight_fails_no_other_partners_delivery(settings):
    gate = asyncio.Event()
    deleted = Receiver(gate=gate)
    kept = Receiver(gate=gate)
    await deleted.start()
    await kept.start()
    try:
        async with running_hub(settings) as hub:
            leaving = await hub.partner("Leaving")
            staying = await hub.partner("Staying")
            # Only the test events: not the partners' own, which may come too when
            # committed just before the registration.
            only_tests = {"event_types": ["referral.*"]}
            gone = await _endpoint(hub.notifications, leaving["key"], deleted.url, **only_tests)
            endpoint = await _endpoint(hub.notifications, staying["key"], kept.url, **only_tests)
            await hub.notifications.post(
                f"/endpoints/{gone['id']}/test", headers=bearer(leaving["key"])
            )
            await hub.notifications.post(
                f"/endpoints/{endpoint['id']}/test", headers=bearer(staying["key"])
            )
            await eventually(
                lambda: asyncio.sleep(0, bool(deleted.requests) and bool(kept.requests))
            )
            response = await hub.notifications.delete(
                f"/endpoints/{gone['id']}", headers=bearer(leaving["key"])
            )
            assert response.status_code == 204
            gate.set()  # both answer at once: their results share a batch

            async def succeeded():
                item = await _delivery_of(hub, staying, endpoint["id"])
                return item if item and item["status"] == "succeeded" else None

            delivery = await eventually(succeeded, timeout=10)
            assert delivery["attempt_count"] == 1
            assert len(kept.requests) == 1
    finally:
        await deleted.stop()
        await kept.stop()
