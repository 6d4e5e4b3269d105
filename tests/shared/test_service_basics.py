"""What every service answers the same way: probes, metrics, request ids, problem documents."""

from __future__ import annotations

import pytest

from services.notifications.app import create_app as notifications_app
from services.referrals.app import create_app as referrals_app
from services.registry.app import create_app as registry_app
from tests.conftest import running

APPS = {"registry": registry_app, "referrals": referrals_app, "notifications": notifications_app}


@pytest.mark.parametrize("name", sorted(APPS))
async def test_probes_docs_and_metrics_answer(name, settings):
    async with running(APPS[name](settings)) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready"
        docs = await client.get("/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        spec = (await client.get("/openapi.json")).json()
        assert spec["openapi"].startswith("3.")
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert "relais_http_requests_total" in metrics.text
        assert "relais_event_horizon_lag_xids" in metrics.text


async def test_request_id_is_echoed_or_generated(settings):
    async with running(registry_app(settings)) as client:
        given = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
        assert given.headers["x-request-id"] == "abc-123"
        made = await client.get("/healthz")
        assert len(made.headers["x-request-id"]) == 32


async def test_unknown_route_answers_a_problem_document(settings):
    async with running(registry_app(settings)) as client:
        response = await client.get("/no-such-thing")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["status"] == 404 and body["type"].endswith("/not-found")
        assert body["request_id"] == response.headers["x-request-id"]
