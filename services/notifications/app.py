"""The notifications service: signed webhooks with retries, and the pull feed."""

from __future__ import annotations

from fastapi import FastAPI

from services.notifications.api import router
from services.notifications.webhook_docs import webhooks
from services.notifications.worker import CHANNELS, consumers
from shared.openapi import make_exact
from shared.service import ServiceSpec, build_app
from shared.settings import Settings

DESCRIPTION = """
The notifications service tells partners of every event meant for them: by signed webhooks
(Standard Webhooks, CloudEvents bodies) with retries, and by a pull feed.

Authenticate with `Authorization: Bearer <api key>`. Errors are RFC 9457 problem documents.
"""


TAGS = [
    {
        "name": "endpoints",
        "description": "Your webhook endpoints: register, rotate, test, recover.",
    },
    {"name": "deliveries", "description": "Every webhook sent and every attempt, with retries."},
    {"name": "feed", "description": "Your events, pulled: for partners without a public endpoint."},
    {
        "name": "webhooks",
        "description": "What Relais sends to your endpoints: one CloudEvent per event type.",
    },
]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = build_app(
        settings,
        ServiceSpec(
            name="notifications",
            title="Relais notifications",
            description=DESCRIPTION,
            routers=[router],
            tags=TAGS,
            consumers=consumers,
            channels=CHANNELS,
        ),
    )
    make_exact(app, webhooks=webhooks)
    return app
