"""HTTP of the referrals service: referrals and their actions, pathways, routing preview."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query

from services.referrals import referral_actions as actions
from services.referrals.lifecycle import transition
from services.referrals.resources import now_utc
from services.referrals.routing import StepHistory, deadline_for, decide, step_history
from services.referrals.routing_inputs import RoutingInputs
from services.referrals.schemas import (
    ActionBody,
    AssignBody,
    CompleteBody,
    PathwayRead,
    PreviewRead,
    PreviewRequest,
    ReasonBody,
    ReferralRead,
    ReferralRole,
    ReferralStatus,
)
from services.referrals.store import Connection
from services.referrals.store import projections as projection_store
from services.referrals.store import referrals as referral_store
from shared.auth import Principal
from shared.db import Database
from shared.deps import Admin, Caller, DbDep
from shared.errors import FieldError, NotFound, Unprocessable
from shared.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page
from shared.pathway import plan_statuses
from shared.problems import Problem
from shared.versioning import IfMatch, check_version, expected_version

router = APIRouter()

COMMIT_MARGIN = timedelta(seconds=60)
NOT_FOUND = {404: {"model": Problem, "description": "No such referral visible to this key."}}
ACTION_ERRORS = {
    **NOT_FOUND,
    403: {"model": Problem, "description": "Your role can never take this action."},
    409: {
        "model": Problem,
        "description": "The current status forbids it; `current_status` and `allowed_actions` "
        "say what you may do now.",
    },
    412: {"model": Problem, "description": "Stale If-Match or version."},
}


async def _read(conn: Connection, row: dict[str, Any], caller: Principal) -> ReferralRead:
    return ReferralRead.model_validate(await actions.read(conn, row, caller))


async def _listed(
    conn: Connection, rows: list[dict[str, Any]], caller: Principal
) -> list[ReferralRead]:
    return [ReferralRead.model_validate(r) for r in await actions.listed(conn, rows, caller)]


@router.get(
    "/referrals",
    tags=["referrals"],
    summary="List referrals addressed to you (incoming) or about your cases (outgoing)",
    description="A partner without `role` gets both. Admins filter with `assignee_partner_id` "
    "and `owner_partner_id`. Ordered by change time; `updated_since` also returns changes up "
    "to 60 s older, so that a change committed late is never missed.",
)
async def list_referrals(
    caller: Caller,
    db: DbDep,
    role: Annotated[
        ReferralRole | None,
        Query(description="`incoming`: addressed to you; `outgoing`: about your cases."),
    ] = None,
    status: ReferralStatus | None = None,
    service_type: Annotated[str | None, Query(max_length=64)] = None,
    case_id: UUID | None = None,
    updated_since: datetime | None = None,
    assignee_partner_id: UUID | None = None,
    owner_partner_id: UUID | None = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[ReferralRead]:
    equal: list[tuple[str, Any]] = []
    if role == "incoming":
        equal.append(("assignee_partner_id", caller.partner_id))
    elif role == "outgoing":
        equal.append(("owner_partner_id", caller.partner_id))
    filters: dict[str, Any] = {"status": status, "service_type": service_type, "case_id": case_id}
    if caller.is_admin:
        filters |= {
            "assignee_partner_id": assignee_partner_id,
            "owner_partner_id": owner_partner_id,
        }
    equal += [(name, value) for name, value in filters.items() if value is not None]
    async with db.connection() as conn:
        items, next_cursor = await referral_store.page(
            conn,
            viewer_is_admin=caller.is_admin,
            viewer_partner_id=caller.partner_id,
            equal=equal,
            updated_from=updated_since - COMMIT_MARGIN if updated_since is not None else None,
            cursor=cursor,
            limit=limit,
        )
        listed = await _listed(conn, items, caller)
    return Page[ReferralRead](items=listed, next_cursor=next_cursor)


@router.get(
    "/queues/unassigned",
    tags=["coordination"],
    summary="Referrals that found no partner, oldest first (admin)",
)
async def unassigned_queue(
    _admin: Admin,
    db: DbDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[ReferralRead]:
    """Referrals for which no partner could be found (no candidate, or four routed attempts
    ended without a taker). Assign them with `POST /referrals/{id}/assign`.
    """
    async with db.connection() as conn:
        items, next_cursor = await referral_store.unassigned_page(conn, cursor=cursor, limit=limit)
        listed = await _listed(conn, items, _admin)
    return Page[ReferralRead](items=listed, next_cursor=next_cursor)


@router.get(
    "/referrals/{referral_id}",
    tags=["referrals"],
    summary="Get a referral, with the minimised case and its history",
    description="The routing decision is shown to admins and the case owner, not the assignee.",
    responses=NOT_FOUND,
)
async def get_referral(referral_id: UUID, caller: Caller, db: DbDep) -> ReferralRead:
    async with db.connection() as conn:
        row = await actions.visible(conn, referral_id=referral_id, caller=caller)
        return await _read(conn, row, caller)


async def _act(
    db: Database,
    *,
    referral_id: UUID,
    caller: Principal,
    action: str,
    body: ActionBody,
    if_match: str | None,
    reason: str | None = None,
    outcome: str | None = None,
) -> ReferralRead:
    referral = await actions.act(
        db,
        referral_id=referral_id,
        caller=caller,
        action=action,
        expected_version=expected_version(if_match, body.version),
        note=body.note,
        reason=reason,
        outcome=outcome,
    )
    return ReferralRead.model_validate(referral)


@router.post(
    "/referrals/{referral_id}/accept",
    tags=["referrals"],
    summary="Accept (assignee)",
    responses=ACTION_ERRORS,
)
async def accept(
    referral_id: UUID,
    caller: Caller,
    db: DbDep,
    body: ActionBody | None = None,
    if_match: IfMatch = None,
) -> ReferralRead:
    """The assignee takes the referral on. Allowed from `requested`; 409 otherwise, naming the
    current status and the actions open to you.
    """
    return await _act(
        db,
        referral_id=referral_id,
        caller=caller,
        action="accept",
        body=body or ActionBody(),
        if_match=if_match,
    )


@router.post(
    "/referrals/{referral_id}/reject",
    tags=["referrals"],
    summary="Reject, with a reason (assignee); the step is routed to the next candidate",
    responses=ACTION_ERRORS,
)
async def reject(
    referral_id: UUID,
    body: ReasonBody,
    caller: Caller,
    db: DbDep,
    if_match: IfMatch = None,
) -> ReferralRead:
    """The assignee declines with a reason; the partner is excluded for this step and the step
    is routed to the next candidate (at most 4 routed attempts, then the coordination's
    queue).
    """
    return await _act(
        db,
        referral_id=referral_id,
        caller=caller,
        action="reject",
        body=body,
        if_match=if_match,
        reason=body.reason,
    )


@router.post(
    "/referrals/{referral_id}/start",
    tags=["referrals"],
    summary="Start (assignee)",
    responses=ACTION_ERRORS,
)
async def start(
    referral_id: UUID,
    caller: Caller,
    db: DbDep,
    body: ActionBody | None = None,
    if_match: IfMatch = None,
) -> ReferralRead:
    """The assignee has started delivering the service. Allowed from `accepted`."""
    return await _act(
        db,
        referral_id=referral_id,
        caller=caller,
        action="start",
        body=body or ActionBody(),
        if_match=if_match,
    )


@router.post(
    "/referrals/{referral_id}/complete",
    tags=["referrals"],
    summary="Complete, with the outcome (assignee); the steps it unblocks are routed",
    responses=ACTION_ERRORS,
)
async def complete(
    referral_id: UUID,
    body: CompleteBody,
    caller: Caller,
    db: DbDep,
    if_match: IfMatch = None,
) -> ReferralRead:
    """The assignee reports the outcome; the step is completed and every step it unblocks is
    routed at once.
    """
    return await _act(
        db,
        referral_id=referral_id,
        caller=caller,
        action="complete",
        body=body,
        if_match=if_match,
        outcome=body.outcome,
    )


@router.post(
    "/referrals/{referral_id}/fail",
    tags=["referrals"],
    summary="Fail, with a reason (assignee); the step is routed to the next candidate",
    responses=ACTION_ERRORS,
)
async def fail(
    referral_id: UUID,
    body: ReasonBody,
    caller: Caller,
    db: DbDep,
    if_match: IfMatch = None,
) -> ReferralRead:
    """The assignee could not deliver, with a reason; the step is routed to the next candidate."""
    return await _act(
        db,
        referral_id=referral_id,
        caller=caller,
        action="fail",
        body=body,
        if_match=if_match,
        reason=body.reason,
    )


@router.post(
    "/referrals/{referral_id}/cancel",
    tags=["referrals"],
    summary="Cancel, with a reason (case owner or admin); the step is cancelled too",
    responses=ACTION_ERRORS,
)
async def cancel(
    referral_id: UUID,
    body: ReasonBody,
    caller: Caller,
    db: DbDep,
    if_match: IfMatch = None,
) -> ReferralRead:
    """The case owner or an admin withdraws the referral; its step is cancelled too."""
    return await _act(
        db,
        referral_id=referral_id,
        caller=caller,
        action="cancel",
        body=body,
        if_match=if_match,
        reason=body.reason,
    )


@router.post(
    "/referrals/{referral_id}/assign",
    tags=["coordination"],
    summary="Assign an unassigned referral to a partner (admin)",
    description="Any active partner, ignoring earlier exclusions. Without `service_id`, the "
    "partner's best-ranked service of the step's type. Emits `referral.assigned`.",
    responses=ACTION_ERRORS,
)
async def assign(
    referral_id: UUID,
    body: AssignBody,
    caller: Admin,
    db: DbDep,
    if_match: IfMatch = None,
) -> ReferralRead:
    expected = expected_version(if_match, body.version)
    async with db.transaction() as conn:
        row = await referral_store.lock_for_change(conn, referral_id=referral_id)
        if row is None:
            raise NotFound(f"No referral {referral_id}.")
        spec = transition(row["status"], "assign", {"admin"})
        check_version(row["version"], expected)
        partner = await projection_store.get_partner(conn, partner_id=body.partner_id)
        if partner is None or partner["status"] != "active":
            raise Unprocessable(
                "Assign to an active partner.",
                errors=[
                    FieldError(
                        field="body.partner_id", message="no such active partner", type="value"
                    )
                ],
            )
        service = await _service_for(
            conn, row=row, partner_id=body.partner_id, service_id=body.service_id
        )
        now = now_utc()
        hours_from = service["response_hours"] if service else 10**6
        updated = await referral_store.set_status(
            conn,
            referral=row,
            status=spec.target,
            event_type=spec.event,
            actor=caller.actor,
            note=body.note or "assigned by the coordination",
            extra={
                "assignee_partner_id": body.partner_id,
                "service_id": service["id"] if service else None,
                "deadline_at": deadline_for(now, hours_from, row["priority"]),
                "decision": {
                    **row["decision"],
                    "assigned": {
                        "partner_id": str(body.partner_id),
                        "service_id": str(service["id"]) if service else None,
                        "by": caller.actor,
                        "at": now.isoformat(),
                    },
                },
            },
        )
        return await _read(conn, updated, caller)


async def _service_for(
    conn: Connection,
    *,
    row: dict[str, Any],
    partner_id: UUID,
    service_id: UUID | None,
) -> dict[str, Any] | None:
    if service_id is not None:
        service = await projection_store.get_service(conn, service_id=service_id)
        if service is None or service["partner_id"] != partner_id:
            raise Unprocessable(
                "The service must be one of the partner's.",
                errors=[
                    FieldError(
                        field="body.service_id",
                        message="not a service of this partner",
                        type="value",
                    )
                ],
            )
        return service
    case = await projection_store.get_case(conn, case_id=row["case_id"])
    assert case is not None  # a referral's case is never deleted from the projection
    inputs = RoutingInputs(conn)
    options = [
        o
        for o in await inputs.service_options(row["service_type"])
        if o.partner_id == partner_id and o.active
    ]
    if not options:
        return None
    # Exclusions are ignored (SPEC 5.6): the request is built without the step's history.
    request = await inputs.request(
        case=case, service_type=row["service_type"], priority=row["priority"]
    )
    decision = decide(request, options)
    chosen = decision.chosen.service_id if decision.chosen else sorted(o.id for o in options)[0]
    return await projection_store.get_service(conn, service_id=chosen)


@router.get(
    "/cases/{case_id}/pathway",
    tags=["referrals"],
    summary="Every step of a case with its referrals and status (owner or admin)",
    responses={404: {"model": Problem, "description": "No such case visible to this key."}},
)
async def pathway(case_id: UUID, caller: Caller, db: DbDep) -> PathwayRead:
    """The case's plan as the referrals service sees it: each step's status and every referral
    it had, in order of attempt.
    """
    async with db.connection() as conn:
        case = await projection_store.get_case(conn, case_id=case_id)
        if case is None or not (caller.is_admin or case["owner_partner_id"] == caller.partner_id):
            raise NotFound(f"No case {case_id}.")
        plan = (await projection_store.steps_of_cases(conn, case_ids=[case_id]))[case_id]
        referrals = await referral_store.referrals_of_case(conn, case_id=case_id)
    by_step: dict[UUID, list[dict]] = {s["id"]: [] for s in plan}
    for r in referrals:
        by_step.setdefault(r["step_id"], []).append(r)
    status_input = []
    for s in plan:
        latest = by_step[s["id"]][-1] if by_step[s["id"]] else None
        status_input.append(
            {
                **s,
                "owner_status": s["resolution"],
                "referral_status": latest["status"] if latest else None,
            }
        )
    statuses = plan_statuses(
        status_input, consent_granted=case["consent_granted"], case_open=case["status"] == "open"
    )
    return PathwayRead.model_validate(
        {
            "case_id": case["id"],
            "case_reference": case["reference"],
            "case_status": case["status"],
            "consent_granted": case["consent_granted"],
            "completed": bool(plan) and all(s["resolution"] for s in plan),
            "steps": [
                {**s, "status": st, "status_reason": reason, "referrals": by_step[s["id"]]}
                for s, (st, reason) in zip(plan, statuses, strict=True)
            ],
        }
    )


@router.post(
    "/routing/preview",
    tags=["coordination"],
    responses={404: {"model": Problem, "description": "No such case, or no such step in it."}},
    summary="Routing decision for a step or a hypothetical case, without side effects (admin)",
    description="Runs the router's own decision function on the same data. For a real step, the "
    "partners that already rejected, let expire or failed it are excluded as the router would.",
)
async def preview(body: PreviewRequest, _admin: Admin, db: DbDep) -> PreviewRead:
    async with db.connection() as conn:
        inputs = RoutingInputs(conn)
        case: dict[str, Any] | None
        if body.case_id is not None:
            assert body.step_id is not None
            case = await projection_store.get_case(conn, case_id=body.case_id)
            step = await projection_store.get_step(conn, case_id=body.case_id, step_id=body.step_id)
            if case is None or step is None:
                raise NotFound("No such case and step.")
            history = step_history(await referral_store.referrals_of_step(conn, step_id=step["id"]))
            service_type, priority = step["service_type"], step["priority"]
        else:
            hypothetical = body.case
            assert hypothetical is not None and body.service_type is not None
            case = {
                "beneficiary": hypothetical.beneficiary.model_dump(mode="json"),
                "vulnerabilities": hypothetical.vulnerabilities,
                "return_area_code": hypothetical.return_.area_code,
            }
            history, service_type, priority = StepHistory(), body.service_type, body.priority
        request = await inputs.request(
            case=case, service_type=service_type, priority=priority, history=history
        )
        if not request.area_depths:
            raise Unprocessable(
                "Unknown area.",
                errors=[
                    FieldError(
                        field="body.case.return.area_code",
                        message="unknown area",
                        type="unknown_code",
                    )
                ],
            )
        options = await inputs.service_options(service_type)
    decision = decide(request, options)
    return PreviewRead(
        chosen_service_id=decision.chosen.service_id if decision.chosen else None,
        chosen_partner_id=decision.chosen.partner_id if decision.chosen else None,
        deadline_at=decision.deadline_at,
        decision=decision.as_record(request),
    )
