"""HTTP of cases: intake, upsert, reading (full or minimised), and the case's own actions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Body, Query, Request, Response, status
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from services.registry import case_actions as actions
from services.registry import case_rules as rules
from services.registry.case_shape import case_snapshot
from services.registry.schemas import NO_NUL
from services.registry.schemas_cases import (
    Beneficiary,
    CaseCreate,
    CaseListItem,
    CaseRead,
    CaseStatus,
    CaseUpdate,
    CloseCase,
    ConsentChange,
    ReturnInfo,
    StepCreate,
    VersionOnly,
)
from services.registry.store import Connection
from services.registry.store import access_log as access_store
from services.registry.store import cases as store
from services.registry.store import partners as partner_store
from services.registry.store import steps as steps_store
from shared.auth import Principal
from shared.deps import Caller, DbDep
from shared.errors import (
    FieldError,
    Forbidden,
    NotFound,
    Unprocessable,
)
from shared.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page
from shared.problems import Problem, validation_errors
from shared.resources import CaseReference, MinimisedCase
from shared.versioning import IfMatch, expected_version

router = APIRouter(tags=["cases"])

COMMIT_MARGIN = timedelta(seconds=60)
CASE_PAGE = TypeAdapter(Page[CaseListItem])
ASSIGNEE_VIEW: TypeAdapter[MinimisedCase | CaseReference] = TypeAdapter(
    MinimisedCase | CaseReference
)

NOT_FOUND = {404: {"model": Problem, "description": "No such case visible to this key."}}
STALE = {412: {"model": Problem, "description": "Stale If-Match or version."}}
CONFLICT = {409: {"model": Problem, "description": "Not allowed in the case's current state."}}

CASE_EXAMPLE = {
    "external_id": "SAB-2026-0042",
    "beneficiary": {
        "given_name": "Aminata",
        "family_name": "Traoré",
        "sex": "female",
        "date_of_birth": "1996-04-12",
        "nationality": "ML",
        "phone": "+22370123456",
        "languages": ["bm", "fr"],
        "id_documents": [{"type": "passport", "number": "AA1234567"}],
        "household_size": 4,
    },
    "return": {"date": "2026-10-02", "country_from": "LY", "area_code": "ML-BKO-03"},
    "vulnerabilities": ["psychosocial_distress"],
    "consent": {"referral": "granted", "given_at": "2026-10-03T09:00:00Z", "method": "written"},
    "plan": [
        {
            "service_type": "psychosocial.individual_counselling",
            "priority": "urgent",
            "depends_on": [],
        },
        {"service_type": "economic.vocational_training", "depends_on": []},
        {"service_type": "economic.microbusiness", "depends_on": ["1", "2"]},
    ],
}


class StepsAdd(BaseModel):
    steps: list[StepCreate] = Field(min_length=1, max_length=20)
    version: int | None = None

    model_config = {
        "extra": "forbid",
        "json_schema_extra": {
            "examples": [
                {"steps": [{"service_type": "economic.job_placement", "depends_on": ["3"]}]}
            ]
        },
    }


class StepAction(BaseModel):
    version: int | None = None
    note: str = Field(default="", max_length=2000)

    model_config = {
        "extra": "forbid",
        "json_schema_extra": {"examples": [{"note": "Cash handed over on arrival"}]},
    }


def _full(snapshot: dict[str, Any]) -> CaseRead:
    return CaseRead.model_validate(snapshot)


def _owner_for(caller: Principal, requested: UUID | None) -> UUID:
    if caller.is_admin:
        if requested is None:
            raise Unprocessable(
                "An admin names the partner who owns the case.",
                errors=[
                    FieldError(
                        field="body.owner_partner_id",
                        message="required for admin keys",
                        type="missing",
                    )
                ],
            )
        return requested
    if requested not in (None, caller.partner_id):
        raise Forbidden("A partner creates cases only for itself.")
    assert caller.partner_id is not None
    return caller.partner_id


async def _owned_case(
    conn: Connection, *, case_id: UUID, caller: Principal, for_update: bool = True
) -> dict:
    """The case for an owner's or admin's action: 403 for an assignee, 404 for anyone else."""
    case = await store.load_case(conn, case_id=case_id, for_update=for_update)
    if case is None:
        raise NotFound(f"No case {case_id}.")
    if caller.is_admin or case["owner_partner_id"] == caller.partner_id:
        rules.check_not_erased(case)
        return case
    if caller.partner_id and await actions.minimised_for(
        conn, case=case, partner_id=caller.partner_id
    ):
        raise Forbidden("Only the case's owner or an admin may do this.")
    raise NotFound(f"No case {case_id}.")


def _revalidate(model: type[BaseModel], value: dict, prefix: str) -> dict:
    try:
        return model.model_validate(value).model_dump(mode="json", by_alias=True)
    except ValidationError as exc:
        errors = validation_errors(exc.errors())
        raise Unprocessable(
            "The changed case is not valid.",
            errors=[
                FieldError(
                    field=f"{prefix}.{e.field}" if e.field else prefix,
                    message=e.message,
                    type=e.type,
                )
                for e in errors
            ],
        ) from exc


@router.post(
    "/cases",
    status_code=status.HTTP_201_CREATED,
    summary="Create a case with its plan",
    description="Every field is validated (area and service-type codes must exist, dates sane, "
    "phone in E.164). Steps get their `key` (default: position) and `depends_on` (default: the "
    "previous step; `[]` for none). The case gets a unique `reference`. Possible duplicates "
    "are recorded for the coordination; the case is created anyway. With consent granted, "
    "the next interventions are routed at once.",
    responses={409: {"model": Problem, "description": "external_id already used by this owner."}},
)
async def create_case(
    body: Annotated[CaseCreate, Body(openapi_examples={"three steps": {"value": CASE_EXAMPLE}})],
    caller: Caller,
    db: DbDep,
) -> CaseRead:
    owner = _owner_for(caller, body.owner_partner_id)
    data = body.model_dump(mode="json", by_alias=True)
    async with db.transaction() as conn:
        if caller.is_admin and await partner_store.get_partner(conn, partner_id=owner) is None:
            raise Unprocessable(
                "Unknown partner.",
                errors=[
                    FieldError(
                        field="body.owner_partner_id", message="no such partner", type="unknown"
                    )
                ],
            )
        snapshot = await actions.create_case(conn, owner_id=owner, body=data, caller=caller)
    return _full(snapshot)


@router.put(
    "/cases/by-external-id/{external_id}",
    summary="Create or update a case by your own id (upsert)",
    description="Creates the case (201) if you have none with this `external_id`, else updates "
    "its beneficiary, return and vulnerabilities (200). `plan` and `consent` are taken only "
    "when the case is created: afterwards use the consent and steps actions (a different "
    "plan or consent in the body answers 409).",
    responses={201: {"model": CaseRead, "description": "Created."}, **CONFLICT, **STALE},
)
async def upsert_case(
    external_id: Annotated[str, Field(min_length=1, max_length=100, pattern=NO_NUL)],
    body: CaseCreate,
    caller: Caller,
    db: DbDep,
    response: Response,
    if_match: IfMatch = None,
) -> CaseRead:
    owner = _owner_for(caller, body.owner_partner_id)
    data = body.model_dump(mode="json", by_alias=True)
    data["external_id"] = external_id
    async with db.transaction() as conn:
        case = await store.find_by_external_id(conn, owner_id=owner, external_id=external_id)
        if case is None:
            snapshot = await actions.create_case(conn, owner_id=owner, body=data, caller=caller)
            response.status_code = status.HTTP_201_CREATED
            return _full(snapshot)
        rules.check_not_erased(case)
        actions.expect(case, expected_version(if_match))
        fields = body.model_fields_set
        steps = await steps_store.load_steps(conn, case_id=case["id"]) if "plan" in fields else []
        rules.check_upsert_keeps_plan_and_consent(case, steps, data, fields)
        snapshot = await actions.update_case(
            conn,
            case=case,
            changes={
                "beneficiary": data["beneficiary"],
                "return": data["return"],
                "vulnerabilities": data["vulnerabilities"],
            },
            caller=caller,
        )
    return _full(snapshot)


@router.get(
    "/cases",
    summary="List cases (a partner: its own; admins: all)",
    description="Each item is the case without `beneficiary.id_documents`. Ordered by change "
    "time. `updated_since` compares with the time of each change's statement, and so returns "
    "changes up to 60 s older too, so that a change committed late is never missed; use the "
    "feed to follow every change exactly.",
    response_model=Page[CaseListItem],
)
async def list_cases(
    request: Request,
    caller: Caller,
    db: DbDep,
    status_: Annotated[CaseStatus | None, Query(alias="status")] = None,
    area: Annotated[
        str | None,
        Query(max_length=32, pattern=NO_NUL, description="Cases returning within this area."),
    ] = None,
    updated_since: datetime | None = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Response:
    if updated_since is not None:
        try:  # PostgreSQL and Python stop at years 1 and 9999: beyond, 422 rather than 500
            floor = updated_since - COMMIT_MARGIN
            if floor.tzinfo is not None:
                floor.astimezone(UTC)
        except OverflowError:
            raise Unprocessable(
                "updated_since is out of range.",
                errors=[
                    FieldError(field="query.updated_since", message="out of range", type="range")
                ],
            ) from None
    async with db.connection() as conn:  # one statement, committed alone
        items, next_cursor = await store.list_cases_and_record(
            conn,
            caller=caller,
            status=status_,
            area=area,
            updated_since=updated_since,
            commit_margin=COMMIT_MARGIN,
            limit=limit,
            cursor=cursor,
            route="/cases",
        )
    # The page is validated once, straight from the cases' JSON, against the documented
    # model, and serialised once: returned as a Response, it is not validated again against
    # `response_model`.
    page = CASE_PAGE.validate_json(
        '{"items":[' + ",".join(items) + '],"next_cursor":' + json.dumps(next_cursor) + "}"
    )
    return Response(CASE_PAGE.dump_json(page, by_alias=True), media_type="application/json")


@router.get(
    "/cases/{case_id}",
    summary="Get a case: full for its owner and admins, minimised for a live referral's assignee",
    responses={
        200: {
            "description": "The full case (owner, admin), or for the assignee the minimised "
            "case (only its reference while consent is not granted).",
            "content": {
                "application/json": {
                    "schema": {
                        "anyOf": [
                            {"$ref": "#/components/schemas/CaseRead"},
                            {"$ref": "#/components/schemas/MinimisedCase"},
                            {"$ref": "#/components/schemas/CaseReference"},
                        ]
                    }
                }
            },
        },
        **NOT_FOUND,
    },
    response_model=CaseRead | MinimisedCase | CaseReference,
)
async def get_case(case_id: UUID, caller: Caller, db: DbDep) -> Any:
    """The owner and admins get the full case. The assignee of a live referral gets the
    minimised case: the reference, the beneficiary's name, sex, age, phone and languages,
    the return area, the vulnerabilities its service names, its own live steps and the
    referring partner's contacts. Anyone else: 404. Every read is recorded in the access
    log.
    """
    async with db.transaction() as conn:
        case = await store.load_case(conn, case_id=case_id)
        if case is None:
            raise NotFound(f"No case {case_id}.")
        if caller.is_admin or case["owner_partner_id"] == caller.partner_id:
            steps = await steps_store.load_steps(conn, case_id=case_id)
            await access_store.record_access(
                conn, case_ids=[case_id], caller=caller, view="full", route="/cases/{case_id}"
            )
            return _full(case_snapshot(case, steps))
        minimised = (
            await actions.minimised_for(conn, case=case, partner_id=caller.partner_id)
            if caller.partner_id
            else None
        )
        if minimised is None:
            raise NotFound(f"No case {case_id}.")
        await access_store.record_access(
            conn, case_ids=[case_id], caller=caller, view="minimised", route="/cases/{case_id}"
        )
    return ASSIGNEE_VIEW.validate_python(minimised)


@router.patch(
    "/cases/{case_id}",
    summary="Change a case's beneficiary, return, vulnerabilities or external id",
    description="A JSON merge patch: `beneficiary` and `return` merge key by key (null removes a "
    "key). `plan`, `consent` and `status` have their own actions. Send `If-Match: <version>`.",
    responses={**NOT_FOUND, **STALE, **CONFLICT},
)
async def update_case(
    case_id: UUID, body: CaseUpdate, caller: Caller, db: DbDep, if_match: IfMatch = None
) -> CaseRead:
    patch = body.model_dump(mode="json", by_alias=True, exclude_unset=True)
    expected = expected_version(if_match, patch.pop("version", None))
    async with db.transaction() as conn:
        case = await _owned_case(conn, case_id=case_id, caller=caller)
        actions.expect(case, expected)
        changes: dict[str, Any] = {}
        if "beneficiary" in patch:
            changes["beneficiary"] = _revalidate(
                Beneficiary,
                rules.merge_patch(case["beneficiary"], patch["beneficiary"]),
                "body.beneficiary",
            )
        if "return" in patch:
            changes["return"] = _revalidate(
                ReturnInfo, rules.merge_patch(case["return_info"], patch["return"]), "body.return"
            )
        for field in ("vulnerabilities", "external_id"):
            if field in patch:
                changes[field] = patch[field]
        snapshot = await actions.update_case(conn, case=case, changes=changes, caller=caller)
    return _full(snapshot)


@router.post(
    "/cases/{case_id}/consent",
    summary="Record the beneficiary's consent to referral, or its withdrawal",
    description="Withdrawing cancels every live referral of the case and stops routing; "
    "granting routes the next interventions.",
    responses={**NOT_FOUND, **STALE, **CONFLICT},
)
async def change_consent(
    case_id: UUID,
    body: ConsentChange,
    caller: Caller,
    db: DbDep,
    if_match: IfMatch = None,
) -> CaseRead:
    data = body.model_dump(mode="json", exclude={"version"})
    expected = expected_version(if_match, body.version)
    async with db.transaction() as conn:
        case = await _owned_case(conn, case_id=case_id, caller=caller)
        actions.expect(case, expected)
        snapshot = await actions.change_consent(conn, case=case, consent=data, caller=caller)
    return _full(snapshot)


@router.post(
    "/cases/{case_id}/steps",
    status_code=status.HTTP_201_CREATED,
    summary="Add steps to the plan",
    description="A new step's default dependency is the plan's last step; give `depends_on: []` "
    "for none. Unknown or cyclic references answer 422.",
    responses={**NOT_FOUND, **STALE, **CONFLICT},
)
async def add_steps(
    case_id: UUID, body: StepsAdd, caller: Caller, db: DbDep, if_match: IfMatch = None
) -> CaseRead:
    expected = expected_version(if_match, body.version)
    async with db.transaction() as conn:
        case = await _owned_case(conn, case_id=case_id, caller=caller)
        actions.expect(case, expected)
        snapshot = await actions.add_steps(
            conn,
            case=case,
            new_steps=[s.model_dump(mode="json") for s in body.steps],
            caller=caller,
        )
    return _full(snapshot)


@router.post(
    "/cases/{case_id}/steps/{step_id}/cancel",
    summary="Cancel a step (and its live referral)",
    responses={**NOT_FOUND, **STALE, **CONFLICT},
)
async def cancel_step(
    case_id: UUID,
    step_id: UUID,
    caller: Caller,
    db: DbDep,
    body: StepAction | None = None,
    if_match: IfMatch = None,
) -> CaseRead:
    """Cancels a step of the plan; its live referral is cancelled too, and the steps that
    depended on it may go ahead.
    """
    expected = expected_version(if_match, body.version if body else None)
    async with db.transaction() as conn:
        case = await _owned_case(conn, case_id=case_id, caller=caller)
        actions.expect(case, expected)
        snapshot = await actions.set_step_owner_status(
            conn, case=case, step_id=step_id, owner_status="cancelled", caller=caller
        )
    return _full(snapshot)


@router.post(
    "/cases/{case_id}/steps/{step_id}/complete",
    summary="Complete a direct step (one the owner delivers itself)",
    responses={**NOT_FOUND, **STALE, **CONFLICT},
)
async def complete_step(
    case_id: UUID,
    step_id: UUID,
    caller: Caller,
    db: DbDep,
    body: StepAction | None = None,
    if_match: IfMatch = None,
) -> CaseRead:
    """For a `direct` step, which the owner delivers itself; the steps it unblocks are routed."""
    expected = expected_version(if_match, body.version if body else None)
    async with db.transaction() as conn:
        case = await _owned_case(conn, case_id=case_id, caller=caller)
        actions.expect(case, expected)
        snapshot = await actions.set_step_owner_status(
            conn, case=case, step_id=step_id, owner_status="completed", caller=caller
        )
    return _full(snapshot)


@router.post(
    "/cases/{case_id}/close",
    summary="Close a case, with a reason",
    description="Cancels every live referral of the case (reason `case_closed`); nothing more "
    "is routed until it is reopened.",
    responses={**NOT_FOUND, **STALE, **CONFLICT},
)
async def close_case(
    case_id: UUID, body: CloseCase, caller: Caller, db: DbDep, if_match: IfMatch = None
) -> CaseRead:
    expected = expected_version(if_match, body.version)
    async with db.transaction() as conn:
        case = await _owned_case(conn, case_id=case_id, caller=caller)
        actions.expect(case, expected)
        snapshot = await actions.close_case(conn, case=case, reason=body.reason, caller=caller)
    return _full(snapshot)


@router.post(
    "/cases/{case_id}/reopen",
    summary="Reopen a closed case",
    description="Routes its next interventions anew, keeping earlier exclusions and attempts.",
    responses={**NOT_FOUND, **STALE, **CONFLICT},
)
async def reopen_case(
    case_id: UUID,
    caller: Caller,
    db: DbDep,
    body: VersionOnly | None = None,
    if_match: IfMatch = None,
) -> CaseRead:
    expected = expected_version(if_match, body.version if body else None)
    async with db.transaction() as conn:
        case = await _owned_case(conn, case_id=case_id, caller=caller)
        actions.expect(case, expected)
        snapshot = await actions.reopen_case(conn, case=case, caller=caller)
    return _full(snapshot)
