"""HTTP of subject access (SPEC 9, admin): everything the hub holds about the person of a
case, in one JSON document."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from fastapi import APIRouter, Request

from services.registry.case_shape import case_snapshot
from services.registry.notifications_client import deliveries_of_case
from services.registry.schemas_cases import AccessLogEntry, CaseRead
from services.registry.schemas_data_protection import (
    ExportedDelivery,
    ExportedEvent,
    SubjectAccessExport,
)
from services.registry.store import access_log as access_store
from services.registry.store import cases as cases_store
from services.registry.store import steps as steps_store
from services.registry.store import subject_access as subject_store
from shared.deps import Admin, DbDep
from shared.errors import NotFound
from shared.eventlog.model import sequence_of
from shared.problems import Problem
from shared.resources import Referral
from shared.settings import Settings

router = APIRouter(tags=["data-protection"])

ROUTE = "/cases/{case_id}/export"


@router.get(
    ROUTE,
    summary="Everything the hub holds about the person of a case (admin)",
    description="A subject access export (SPEC 9), in one JSON document: the case as its "
    "owner reads it, its referrals with their histories (each as its latest `referral.*` "
    "event carries it), every event about the case, which partners received those events "
    "(the deliveries, without their bodies, from the notifications service) and every line "
    "of the access log about the case. The export itself is recorded in the access log "
    "(`view: export`) and is among its lines. When the notifications service cannot be "
    "reached the answer is 503, never a partial export.",
    responses={
        404: {"model": Problem, "description": "No such case."},
        503: {
            "model": Problem,
            "description": "The database, or the notifications service that lists the "
            "deliveries, cannot be reached right now; retry after Retry-After.",
        },
    },
)
async def export_case(
    case_id: UUID, request: Request, caller: Admin, db: DbDep
) -> SubjectAccessExport:
    settings: Settings = request.app.state.settings
    async with db.connection() as conn:
        if await cases_store.load_case(conn, case_id=case_id) is None:
            raise NotFound(f"No case {case_id}.")
    # Over HTTP, with no transaction open: the caller's own key, checked there again.
    deliveries = await deliveries_of_case(
        settings.notifications_url or "",
        case_id=case_id,
        authorization=request.headers["authorization"],
    )
    async with db.transaction() as conn:
        case = await cases_store.load_case(conn, case_id=case_id)
        if case is None:  # cases are never deleted; kept for the type checker
            raise NotFound(f"No case {case_id}.")
        steps = await steps_store.load_steps(conn, case_id=case_id)
        await access_store.record_access(
            conn, case_ids=[case_id], caller=caller, view="export", route=ROUTE
        )
        referrals = await subject_store.referrals_of(conn, case_id=case_id)
        events = await subject_store.events_about(conn, case_id=case_id)
        lines = await access_store.entries_of_case(conn, case_id=case_id)
    return SubjectAccessExport(
        exported_at=datetime.now(UTC),
        case=CaseRead.model_validate(case_snapshot(case, steps)),
        closed_at=case["closed_at"],
        referrals=[Referral.model_validate(r) for r in referrals],
        events=[
            ExportedEvent.model_validate({**e, "sequence": sequence_of(int(e["tx"]), e["seq"])})
            for e in events
        ],
        deliveries=[ExportedDelivery.model_validate(d) for d in deliveries],
        access_log=[AccessLogEntry.model_validate(line) for line in lines],
    )
