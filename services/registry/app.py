"""The registry service: partners, keys, reference data, the service directory and cases."""

from __future__ import annotations

import structlog
from fastapi import FastAPI

from services.registry import reference
from services.registry.api import routers
from services.registry.api.hsds import HSDS_SCHEMAS
from services.registry.worker import consumers
from shared.auth import ensure_admin_key
from shared.openapi import make_exact
from shared.service import ServiceSpec, build_app
from shared.settings import Settings

log = structlog.get_logger("relais.registry")

DESCRIPTION = """
The registry holds the hub's facts: the partner organisations and their API keys, the
reference data (areas, service types), the service directory, and the returnees' cases with
their reintegration plans and consent.

Authenticate with `Authorization: Bearer <api key>`. Admin keys belong to the coordination
secretariat; partner keys see and change only their own partner's data, except the
directory (partners, services, areas, service types), which every key reads.

Errors are RFC 9457 problem documents. Every POST accepts an `Idempotency-Key` header.
"""

TAGS = [
    {"name": "reference", "description": "Areas and service types: the shared code lists."},
    {"name": "partners", "description": "Partner organisations (created by admins)."},
    {
        "name": "api-keys",
        "description": "Keys of partners and of the coordination (admin keys): issued by "
        "admins, shown once, revocable, optionally expiring.",
    },
    {"name": "services", "description": "The service directory: what each partner offers, where."},
    {"name": "cases", "description": "Returnees' cases with their plans, consent and closure."},
    {"name": "duplicates", "description": "Probable duplicate cases, for the coordination."},
    {"name": "access-log", "description": "Who read which case, for the coordination."},
    {
        "name": "data-protection",
        "description": "Subject access (all the hub holds about a case's person) and "
        "retention (the closed cases erased after `RELAIS_RETENTION_DAYS`), for the "
        "coordination.",
    },
    {
        "name": "hsds",
        "description": "The directory as Open Referral's HSDS 3.0 API: organizations (the "
        "partners), services, the service-type taxonomy. Any key; no key when "
        "`RELAIS_HSDS_PUBLIC=true`. Mapping in the README.",
    },
]


async def _bootstrap_admin_key(app: FastAPI) -> None:
    settings: Settings = app.state.settings
    if not settings.bootstrap_admin_key:
        return
    async with app.state.db.transaction() as conn:
        bootstrap = await ensure_admin_key(conn, settings.bootstrap_admin_key)
    if bootstrap.outcome == "revoked":
        # Never the key itself, nor its prefix: the id tells it apart in GET /admin-keys.
        log.warning(
            "bootstrap_admin_key_revoked",
            key_id=str(bootstrap.key_id),
            detail="The start-up admin key (RELAIS_BOOTSTRAP_ADMIN_KEY, or .data/admin.key of "
            "make run) was revoked through the API and stays revoked: it answers 401. Use "
            "another admin key, or start with a new start-up key (README, Rotating the admin "
            "key).",
        )
        return
    log.info(
        "bootstrap_admin_key",
        registered=bootstrap.outcome == "added",
        replaced=[str(i) for i in bootstrap.replaced],
    )


async def _load_reference_data(app: FastAPI) -> None:
    async with app.state.db.transaction() as conn:
        await reference.load_seed_data(conn)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = build_app(
        settings,
        ServiceSpec(
            name="registry",
            title="Relais registry",
            description=DESCRIPTION,
            routers=routers,
            tags=TAGS,
            consumers=consumers,
            on_startup=[_load_reference_data, _bootstrap_admin_key],
        ),
    )
    make_exact(app, schemas=HSDS_SCHEMAS)
    return app
