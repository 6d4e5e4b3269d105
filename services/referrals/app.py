"""The referrals service: routing each case's next intervention and the referral lifecycle."""

from __future__ import annotations

from fastapi import FastAPI

from services.referrals.api import router
from services.referrals.dashboard.routes import router as dashboard_router
from services.referrals.fhir_api import FHIR_SCHEMAS
from services.referrals.fhir_api import router as fhir_router
from services.referrals.indicators_api import router as indicators_router
from services.referrals.worker import consumers
from shared.openapi import make_exact
from shared.service import ServiceSpec, build_app
from shared.settings import Settings

DESCRIPTION = """
The referrals service routes each case's next intervention, as a referral, to the partner
responsible for it, and keeps every referral's lifecycle and history.

Authenticate with `Authorization: Bearer <api key>`. Errors are RFC 9457 problem documents.

The coordination's dashboard, a page for people rather than an operation, is at
`/dashboard`: it asks for an admin key once and shows the indicators, the service gaps, and
the overdue and unassigned referrals.
"""


TAGS = [
    {"name": "referrals", "description": "Referrals addressed to you or about your cases."},
    {
        "name": "coordination",
        "description": "The coordination's tools: queue, assignment, preview; indicators "
        "and service gaps.",
    },
    {
        "name": "fhir",
        "description": "Referrals as FHIR R4 Tasks, the steps they serve as ServiceRequests "
        "(`application/fhir+json`, errors as OperationOutcome). Mapping in the README.",
    },
]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = build_app(
        settings,
        ServiceSpec(
            name="referrals",
            title="Relais referrals",
            description=DESCRIPTION,
            routers=[router, fhir_router, indicators_router],
            tags=TAGS,
            consumers=consumers,
        ),
    )
    # The secretariat's page and its files: outside the OpenAPI document, like /docs.
    app.include_router(dashboard_router)
    make_exact(app, schemas=FHIR_SCHEMAS)
    return app
