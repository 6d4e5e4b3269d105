"""HTTP of the FHIR R4 view (SPEC 11.2), under `/fhir`: referrals as Tasks, the steps they
serve as ServiceRequests, searched and changed with FHIR's own conventions.

The same keys, tenancy and lifecycle as the REST API: reading goes through the same store
functions and a PATCH of a Task's status runs `referral_actions.act`, which the REST actions
run too, so the events and webhooks are the same. Answers are `application/fhir+json`;
errors raised by these operations are OperationOutcome documents with the status of the
REST equivalent (those of the HTTP layer, a body over the limit or in the wrong media type,
and an unreachable database, stay problem documents, as everywhere in the hub).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from services.referrals import fhir
from services.referrals import referral_actions as actions
from services.referrals.store import referrals as referral_store
from shared.deps import Caller, DbDep
from shared.errors import BadRequest, FieldError, NotFound, ProblemError
from shared.problems import validation_errors
from shared.versioning import IfMatch, expected_version

DEFAULT_COUNT = 50
MAX_COUNT = 200
STATUSES_OF_TASK_STATUS: dict[str, list[str]] = {}
for _relais, _task in fhir.TASK_STATUS.items():
    STATUSES_OF_TASK_STATUS.setdefault(_task, []).append(_relais)
PATCH_MEDIA_TYPE = "application/json-patch+json"
PATCH_EXAMPLE = [
    {"op": "replace", "path": "/status", "value": "rejected"},
    {"op": "add", "path": "/statusReason", "value": {"text": "No place before March"}},
]


class FhirResponse(JSONResponse):
    media_type = fhir.FHIR_JSON


def outcome_response(
    status: int,
    diagnostics: str,
    *,
    details: str | None = None,
    fields: list[tuple[str, str]] | None = None,
) -> FhirResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    outcome = fhir.operation_outcome(status, diagnostics, details=details, fields=fields or ())
    return FhirResponse(outcome, status, headers=headers)


class FhirRoute(APIRoute):
    """A route whose errors are OperationOutcome documents (the domain's errors, the key's
    401 and 403, invalid parameters) rather than the hub's problem documents."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except ProblemError as exc:
                details = None
                if exc.extra.get("allowed_actions") is not None:
                    allowed = ", ".join(exc.extra["allowed_actions"]) or "none"
                    details = (
                        f"current status {exc.extra.get('current_status')}; "
                        f"actions open to you: {allowed}"
                    )
                fields = [(e.field, e.message) for e in exc.errors or []]
                return outcome_response(
                    exc.status, exc.detail or exc.title, details=details, fields=fields
                )
            except RequestValidationError as exc:
                errors = validation_errors(exc.errors())
                return outcome_response(
                    422,
                    f"{len(errors)} field(s) invalid: " + ", ".join(e.field for e in errors[:5]),
                    fields=[(e.field, e.message) for e in errors],
                )

        return route


router = APIRouter(prefix="/fhir", tags=["fhir"], route_class=FhirRoute)

_OUTCOME = {"$ref": "#/components/schemas/FhirResource"}


def _fhir(description: str) -> dict[str, Any]:
    return {"description": description, "content": {fhir.FHIR_JSON: {"schema": _OUTCOME}}}


ERRORS = {
    401: _fhir("OperationOutcome: missing, unknown or revoked API key."),
    403: _fhir("OperationOutcome: the key's role may never do this."),
    404: _fhir("OperationOutcome: no such resource visible to this key."),
    422: _fhir("OperationOutcome: invalid parameters or patch."),
}


@router.get(
    "/metadata",
    summary="The CapabilityStatement",
    description="What this FHIR server serves (FHIR 4.0.1, JSON): Task read, search and "
    "patch, ServiceRequest read, the search parameters. Any key reads it.",
    response_class=FhirResponse,
    responses={200: _fhir("A CapabilityStatement (FHIR 4.0.1)."), **ERRORS},
)
async def metadata(request: Request, _caller: Caller) -> FhirResponse:
    base = str(request.url_for("metadata")).removesuffix("/metadata")
    return FhirResponse(
        fhir.capability_statement(
            base=base, software_version=request.app.version, date=fhir.CAPABILITY_DATE
        )
    )


def _organization(value: str | None, name: str) -> UUID | None:
    if value is None:
        return None
    try:
        return UUID(value.removeprefix("Organization/"))
    except ValueError as exc:
        raise _bad(name, "must be Organization/<partner id>") from exc


def _statuses(value: str | None) -> list[str] | None:
    if value is None:
        return None
    statuses: list[str] = []
    for code in value.split(","):
        code = code.strip()
        if code not in STATUSES_OF_TASK_STATUS:
            known = ", ".join(STATUSES_OF_TASK_STATUS)
            raise _bad("status", f"{code!r} is not a Task status this server uses ({known})")
        statuses += STATUSES_OF_TASK_STATUS[code]
    return statuses


_PREFIXES = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "eq": "="}


def _last_updated(values: list[str]) -> list[tuple[str, datetime]]:
    """`_lastUpdated` values (`ge2026-12-01`, `lt2026-12-02T10:00:00Z`, `2026-12-01`) as
    bounds on the change time; a date alone is the whole day (UTC)."""
    bounds: list[tuple[str, datetime]] = []
    for value in values:
        prefix = value[:2] if value[:2] in _PREFIXES else "eq"
        text = value[2:] if value[:2] in _PREFIXES else value
        try:
            if len(text) == 10:
                start = datetime.combine(date.fromisoformat(text), time(), UTC)
                end = start + timedelta(days=1)
            else:
                start = end = datetime.fromisoformat(text.replace("Z", "+00:00"))
                if start.tzinfo is None:
                    start = end = start.replace(tzinfo=UTC)
        except ValueError as exc:
            raise _bad("_lastUpdated", f"{value!r} is not a FHIR date or dateTime") from exc
        day = len(text) == 10
        if prefix == "eq":
            bounds += [(">=", start), ("<" if day else "<=", end)]
        elif prefix == "gt":
            bounds.append((">=" if day else ">", end))
        elif prefix == "ge":
            bounds.append((">=", start))
        elif prefix == "lt":
            bounds.append(("<", start))
        else:  # le
            bounds.append(("<" if day else "<=", end))
    return bounds


def _bad(field: str, message: str) -> BadRequest:
    error = BadRequest(f"{field}: {message}.")
    error.errors = [FieldError(field=f"query.{field}", message=message, type="value")]
    return error


@router.get(
    "/Task",
    summary="Search Tasks: the referrals this key may see",
    description="Search parameters: `owner` and `requester` (`Organization/<partner id>`), "
    "`status` (Task statuses, comma for any of them), `_lastUpdated` (with `gt`, `ge`, `lt`, "
    "`le`; repeat it for a range), `_count` (1 to 200, default 50). A `searchset` Bundle "
    "ordered by change time, with a `next` link while more remain. As in the REST lists, a "
    "listed Task carries no Patient: read the Task for the minimised case.",
    response_class=FhirResponse,
    responses={200: _fhir("A searchset Bundle of Tasks."), **ERRORS, 400: _fhir("Bad search.")},
)
async def search_tasks(
    request: Request,
    caller: Caller,
    db: DbDep,
    owner: Annotated[str | None, Query(max_length=80, description="The assignee.")] = None,
    requester: Annotated[str | None, Query(max_length=80, description="The case owner.")] = None,
    status: Annotated[str | None, Query(max_length=200)] = None,
    last_updated: Annotated[list[str] | None, Query(alias="_lastUpdated", max_length=40)] = None,
    count: Annotated[int, Query(alias="_count", ge=1, le=MAX_COUNT)] = DEFAULT_COUNT,
    next_page: Annotated[
        str | None, Query(alias="next", max_length=500, description="From a `next` link.")
    ] = None,
) -> FhirResponse:
    equal: list[tuple[str, Any]] = []
    if (assignee := _organization(owner, "owner")) is not None:
        equal.append(("assignee_partner_id", assignee))
    if (case_owner := _organization(requester, "requester")) is not None:
        equal.append(("owner_partner_id", case_owner))
    statuses = _statuses(status)
    async with db.connection() as conn:
        rows, cursor = await referral_store.page(
            conn,
            viewer_is_admin=caller.is_admin,
            viewer_partner_id=caller.partner_id,
            equal=equal,
            any_of=[("status", statuses)] if statuses is not None else [],
            updated_bounds=_last_updated(last_updated or []),
            cursor=next_page,
            limit=count,
        )
        referrals = await actions.listed(conn, rows, caller)
    base = str(request.url_for("metadata")).removesuffix("/metadata")
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "next"]
    query = urlencode(request.query_params.multi_items())
    self_url = f"{base}/Task" + (f"?{query}" if query else "")
    next_url = f"{base}/Task?{urlencode([*kept, ('next', cursor)])}" if cursor else None
    tasks = [fhir.task(r) for r in referrals]
    return FhirResponse(fhir.searchset(tasks, base=base, self_url=self_url, next_url=next_url))


def _task_response(referral: dict[str, Any]) -> FhirResponse:
    return FhirResponse(fhir.task(referral), headers={"ETag": f'W/"{referral["version"]}"'})


@router.get(
    "/Task/{task_id}",
    summary="Read a Task: the referral, with the minimised case as a contained Patient",
    description="The referral as a FHIR Task (the id is the referral's). The beneficiary is a "
    "contained Patient holding only the minimised case, and only while the minimised case "
    "may be shown (SPEC 6); `ETag` is the Task's version, for a PATCH's `If-Match`.",
    response_class=FhirResponse,
    responses={200: _fhir("A Task; `ETag` is its version."), **ERRORS},
)
async def read_task(task_id: UUID, caller: Caller, db: DbDep) -> FhirResponse:
    async with db.connection() as conn:
        row = await actions.visible(conn, referral_id=task_id, caller=caller)
        return _task_response(await actions.read(conn, row, caller))


@router.patch(
    "/Task/{task_id}",
    summary="Change a Task's status: runs the referral's lifecycle action",
    description="A JSON Patch (`application/json-patch+json`) that sets `/status` to "
    "`accepted` (accept), `rejected` (reject, with `/statusReason`), `in-progress` (start), "
    "`completed` (complete, with `/output` holding a `valueString`), `failed` (fail, with "
    "`/statusReason`) or `cancelled` (cancel, with `/statusReason`); `/note` may add a note. "
    '`If-Match: W/"<version>"` guards against a stale read (412). The same rules and events '
    "as the REST actions: 409 when the status forbids the action.",
    response_class=FhirResponse,
    responses={
        200: _fhir("The updated Task."),
        **ERRORS,
        400: _fhir("OperationOutcome: not a JSON Patch, or a bad If-Match."),
        409: _fhir("OperationOutcome: the current status forbids this action."),
        412: _fhir("OperationOutcome: If-Match names an older version."),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                PATCH_MEDIA_TYPE: {
                    "schema": {"$ref": "#/components/schemas/JsonPatch"},
                    "example": PATCH_EXAMPLE,
                }
            },
        }
    },
)
async def patch_task(
    task_id: UUID, request: Request, caller: Caller, db: DbDep, if_match: IfMatch = None
) -> FhirResponse:
    try:
        operations = json.loads(await request.body())
    except ValueError as exc:
        raise BadRequest("The body is not JSON: send a JSON Patch array.") from exc
    action, body = fhir.action_of_patch(operations)
    referral = await actions.act(
        db,
        referral_id=task_id,
        caller=caller,
        action=action,
        expected_version=expected_version(if_match),
        note=body.get("note", ""),
        reason=body.get("reason"),
        outcome=body.get("outcome"),
    )
    return _task_response(referral)


@router.get(
    "/ServiceRequest/{request_id}",
    summary="Read a ServiceRequest: the step a Task serves",
    description="Its id is the step's (a Task's `focus`). Built from the step's latest "
    "referral this key may see.",
    response_class=FhirResponse,
    responses={200: _fhir("A ServiceRequest."), **ERRORS},
)
async def read_service_request(request_id: UUID, caller: Caller, db: DbDep) -> FhirResponse:
    async with db.connection() as conn:
        row = await referral_store.latest_visible_of_step(
            conn,
            step_id=request_id,
            viewer_is_admin=caller.is_admin,
            viewer_partner_id=caller.partner_id,
        )
    if row is None:
        raise NotFound(f"No ServiceRequest {request_id}.")
    return FhirResponse(fhir.service_request(row))


FHIR_SCHEMAS = {
    "FhirResource": {
        "type": "object",
        "required": ["resourceType"],
        "properties": {"resourceType": {"type": "string"}},
        "description": "A FHIR R4 resource in JSON (Task, ServiceRequest, Bundle, "
        "CapabilityStatement or OperationOutcome); validates with the FHIR R4 models.",
    },
    "JsonPatch": {
        "type": "array",
        "minItems": 1,
        "items": {
            "type": "object",
            "required": ["op", "path"],
            "properties": {
                "op": {"type": "string", "enum": ["replace", "add", "test"]},
                "path": {"type": "string"},
                "value": {},
            },
        },
    },
}
