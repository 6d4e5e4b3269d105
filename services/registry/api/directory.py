"""HTTP of the service directory: what each partner offers, and where."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, status

from services.registry.schemas import NO_NUL
from services.registry.schemas_cases import ServiceCreate, ServiceRead, ServiceUpdate
from services.registry.store import directory as store
from services.registry.store import partners as partner_store
from shared.deps import Caller, DbDep
from shared.errors import FieldError, Forbidden, NotFound, Unprocessable, cannot_be_null
from shared.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page
from shared.problems import Problem
from shared.versioning import IfMatch, check_version, expected_version

router = APIRouter(tags=["services"])

NOT_FOUND = {404: {"model": Problem, "description": "No such service."}}


@router.post(
    "/services",
    status_code=status.HTTP_201_CREATED,
    summary="Add a service to the directory",
    description="A partner adds its own services; an admin adds any partner's (with "
    "`partner_id`) and alone may set `priority` (lower is preferred; default 100).",
)
async def create_service(body: ServiceCreate, caller: Caller, db: DbDep) -> ServiceRead:
    values = body.model_dump(mode="json", exclude_none=False)
    if caller.is_admin:
        if body.partner_id is None:
            raise Unprocessable(
                "An admin names the partner whose service it is.",
                errors=[
                    FieldError(
                        field="body.partner_id", message="required for admin keys", type="missing"
                    )
                ],
            )
    else:
        if body.partner_id not in (None, caller.partner_id):
            raise Forbidden("A partner adds only its own services.")
        if body.priority is not None:
            raise Forbidden("Only the coordination sets a service's priority.")
        values["partner_id"] = caller.partner_id
    if values.get("priority") is None:
        values.pop("priority")
    async with db.transaction() as conn:
        if await partner_store.get_partner(conn, partner_id=values["partner_id"]) is None:
            raise Unprocessable(
                "Unknown partner.",
                errors=[
                    FieldError(field="body.partner_id", message="no such partner", type="unknown")
                ],
            )
        await store.check_directory_refs(conn, service_type=body.service_type, areas_=body.areas)
        row = await store.create_service(conn, values=values, caller=caller)
    return ServiceRead.model_validate(row)


@router.get(
    "/services",
    summary="Search the directory (every key)",
    description="`area` returns the services whose coverage contains that area: a service "
    "covering a region covers every cercle and commune below it.",
)
async def list_services(
    _caller: Caller,
    db: DbDep,
    service_type: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    partner_id: UUID | None = None,
    area: Annotated[
        str | None, Query(max_length=32, pattern=NO_NUL, examples=["ML-BKO-03"])
    ] = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[ServiceRead]:
    async with db.connection() as conn:
        items, next_cursor = await store.list_services(
            conn,
            service_type=service_type,
            partner_id=partner_id,
            area=area,
            limit=limit,
            cursor=cursor,
        )
    return Page[ServiceRead](
        items=[ServiceRead.model_validate(r) for r in items], next_cursor=next_cursor
    )


@router.get("/services/{service_id}", summary="Get a service (every key)", responses=NOT_FOUND)
async def get_service(service_id: UUID, _caller: Caller, db: DbDep) -> ServiceRead:
    """One service of the directory, readable by every key."""
    async with db.connection() as conn:
        row = await store.get_service(conn, service_id=service_id)
    if row is None:
        raise NotFound(f"No service {service_id}.")
    return ServiceRead.model_validate(row)


@router.patch(
    "/services/{service_id}",
    summary="Change a service (its partner or an admin; only admins set priority)",
    responses={**NOT_FOUND, 412: {"model": Problem, "description": "Stale If-Match."}},
)
async def update_service(
    service_id: UUID,
    body: ServiceUpdate,
    caller: Caller,
    db: DbDep,
    if_match: IfMatch = None,
) -> ServiceRead:
    """A partner changes its own services (not `priority`); an admin changes any. Send `If-
    Match: <version>`.
    """
    changes = body.model_dump(mode="json", exclude_unset=True)
    expected = expected_version(if_match, changes.pop("version", None))
    async with db.transaction() as conn:
        current = await store.get_service(conn, service_id=service_id, for_update=True)
        if current is None:
            raise NotFound(f"No service {service_id}.")
        if not caller.is_admin:
            if current["partner_id"] != caller.partner_id:
                raise Forbidden("A partner changes only its own services.")
            if "priority" in changes:
                raise Forbidden("Only the coordination sets a service's priority.")
        for field in (
            "service_type",
            "name",
            "areas",
            "eligibility",
            "response_hours",
            "status",
            "priority",
        ):
            if field in changes and changes[field] is None:
                raise cannot_be_null(f"body.{field}")
        check_version(current["version"], expected)
        await store.check_directory_refs(
            conn, service_type=changes.get("service_type"), areas_=changes.get("areas")
        )
        row = await store.update_service(
            conn, service_id=service_id, changes=changes, caller=caller
        )
    return ServiceRead.model_validate(row)
