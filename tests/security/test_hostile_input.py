"""Hostile input answers 4xx problem documents quickly on every service: oversized bodies,
deeply nested JSON, bad UTF-8, absurd page sizes."""

from __future__ import annotations

import time

import pytest

from services.notifications.app import create_app as notifications_app
from services.referrals.app import create_app as referrals_app
from services.registry.app import create_app as registry_app
from tests.conftest import running
from tests.factories import bearer, make_admin_key

TARGETS = {
    "registry": (registry_app, "/cases", "/cases"),
    "referrals": (referrals_app, "/routing/preview", "/referrals"),
    "notifications": (notifications_app, "/endpoints", "/deliveries"),
}


@pytest.mark.parametrize("name", sorted(TARGETS))
async def test_hostile_bodies_and_queries_answer_4xx_quickly(settings, name):
    create, write, listing = TARGETS[name]
    app = create(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        headers = {**bearer(admin), "Content-Type": "application/json"}
        bodies = {
            "oversized": b'{"x": "' + b"a" * (2 * 1024 * 1024) + b'"}',
            "deeply nested": b"[" * 100_000 + b"]" * 100_000,
            "nested objects": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
            "bad utf-8": b'{"url": "\xff\xfe\xfd"}',
            "not json": b"\x00\x01\x02",
            "huge number": b'{"url": ' + b"9" * 100_000 + b"}",
        }
        for label, body in bodies.items():
            started = time.perf_counter()
            response = await client.post(write, content=body, headers=headers)
            elapsed = time.perf_counter() - started
            assert 400 <= response.status_code < 500, (
                label,
                response.status_code,
                response.text[:200],
            )
            assert response.headers["content-type"] == "application/problem+json", label
            assert elapsed < 2.0, (label, elapsed)
        for query in (
            "limit=1000000",
            "limit=-1",
            "limit=1e9",
            "cursor=" + "A" * 400,
            "cursor=%00",
        ):
            response = await client.get(f"{listing}?{query}", headers=bearer(admin))
            assert response.status_code == 422, (query, response.text[:200])
