"""Cases, their plans, consent and closure: queries and the events they emit.

Every change is one transaction: the rows, the recomputed step statuses and the event with
the case's full snapshot. The case's `version` counts the changes made through the API;
step statuses derived from referral events do not change it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import (
    Select,
    String,
    Text,
    bindparam,
    cast,
    func,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, aggregate_order_by
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.ext.asyncio import AsyncSession

from services.registry.plan import PlanError, StepDraft, plan_statuses, settle_steps
from services.registry.store import SOURCE
from services.registry.store import duplicates as duplicates_store
from services.registry.store.partners import check_partner
from services.registry.tables import (
    access_log,
    cases,
    partners,
    plan_steps,
    services,
)
from shared.auth import AUTOCOMMIT, Principal
from shared.errors import Conflict, FieldError, NotFound, Unprocessable
from shared.eventlog.append import append
from shared.minimised import minimise_case
from shared.referral_statuses import MINIMISED_CASE_STATUSES
from shared.tables import areas
from shared.versioning import check_version

KEY_MAX = plan_steps.c.key.type.length

STEP_FIELDS = (
    "id",
    "key",
    "service_type",
    "priority",
    "delivery",
    "depends_on",
    "notes",
    "status",
    "status_reason",
)


# --- Snapshots -----------------------------------------------------------------------


def step_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in STEP_FIELDS}


def case_snapshot(case: Mapping[str, Any], steps: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The Case resource: what the owner reads and what `case.*` events carry."""
    return {
        "id": case["id"],
        "reference": case["reference"],
        "external_id": case["external_id"],
        "owner_partner_id": case["owner_partner_id"],
        "status": case["status"],
        "closure_reason": case["closure_reason"],
        "merged_into": case["merged_into"],
        "beneficiary": case["beneficiary"],
        "return": case["return_info"],
        "vulnerabilities": list(case["vulnerabilities"]),
        "consent": case["consent"],
        "plan": [step_view(s) for s in steps],
        "version": case["version"],
        "created_at": case["created_at"],
        "updated_at": case["updated_at"],
    }


async def load_steps(session: AsyncSession, *, case_id: UUID) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(plan_steps).where(plan_steps.c.case_id == case_id).order_by(plan_steps.c.position)
    )
    return [dict(r) for r in rows.mappings()]


async def load_case(
    session: AsyncSession, *, case_id: UUID, for_update: bool = False
) -> dict[str, Any] | None:
    query = select(cases).where(cases.c.id == case_id)
    if for_update:
        query = query.with_for_update()
    row = (await session.execute(query)).mappings().one_or_none()
    return dict(row) if row else None


async def emit_case_event(
    session: AsyncSession,
    *,
    type: str,
    case: Mapping[str, Any],
    steps: Sequence[Mapping[str, Any]],
    caller: Principal | None,
    actor: str | None = None,
) -> dict[str, Any]:
    snapshot = case_snapshot(case, steps)
    await append(
        session,
        type=type,
        source=SOURCE,
        subject=f"cases/{case['id']}",
        data=snapshot,
        actor=actor or (caller.actor if caller else "system"),
        audience=[case["owner_partner_id"]],
    )
    return snapshot


# --- Validation against the reference data -----------------------------------------------


# The codes a request names that exist, and the owner's case with the external id, if any:
# one statement for what an intake checks before it writes.
_KNOWN = text(
    """
    SELECT 'area' AS kind, code AS value FROM hub.areas WHERE code = :area
    UNION ALL
    SELECT 'service_type', code FROM hub.service_types WHERE code = ANY(:types)
    UNION ALL
    SELECT 'case', CAST(id AS text) FROM registry.cases
    WHERE owner_partner_id = :owner AND external_id = :external_id
    """
).bindparams(
    bindparam("area", type_=String),
    bindparam("types", type_=ARRAY(String)),
    bindparam("owner", type_=PG_UUID(as_uuid=True)),
    bindparam("external_id", type_=String),
)


async def _known(
    session: AsyncSession,
    *,
    area_code: str | None,
    step_types: Sequence[str],
    owner_id: UUID | None = None,
    external_id: str | None = None,
) -> tuple[bool, set[str], UUID | None]:
    """(area known, known service types, the owner's case with this external id)."""
    area_known, types, existing = area_code is None, set(), None
    if area_code is None and not step_types and external_id is None:
        return area_known, types, existing
    rows = await session.execute(
        _KNOWN,
        {
            "area": area_code,
            "types": sorted(set(step_types)),
            "owner": owner_id,
            "external_id": external_id if owner_id is not None else None,
        },
    )
    for kind, value in rows:
        if kind == "area":
            area_known = True
        elif kind == "service_type":
            types.add(value)
        else:
            existing = UUID(value)
    return area_known, types, existing


def _code_errors(
    *,
    area_code: str | None,
    area_known: bool,
    step_types: Sequence[str],
    known: set[str],
    step_prefix: str,
) -> None:
    """422 naming each unknown area or service-type code."""
    errors: list[FieldError] = []
    if area_code is not None and not area_known:
        errors.append(
            FieldError(
                field="body.return.area_code",
                message=f"unknown area {area_code!r}",
                type="unknown_code",
            )
        )
    for index, code in enumerate(step_types):
        if code not in known:
            errors.append(
                FieldError(
                    field=f"{step_prefix}[{index}].service_type",
                    message=f"unknown service type {code!r}",
                    type="unknown_code",
                )
            )
    if errors:
        raise Unprocessable("Unknown codes.", errors=errors)


async def check_case_refs(
    session: AsyncSession,
    *,
    area_code: str | None,
    step_types: Sequence[str],
    step_prefix: str = "body.plan",
) -> None:
    """422 naming each unknown area or service-type code."""
    area_known, known, _ = await _known(session, area_code=area_code, step_types=step_types)
    _code_errors(
        area_code=area_code,
        area_known=area_known,
        step_types=step_types,
        known=known,
        step_prefix=step_prefix,
    )


def _plan_problem(exc: PlanError) -> Unprocessable:
    return Unprocessable(
        "The plan is not valid.",
        errors=[FieldError(field=f, message=m, type="plan") for f, m in exc.problems],
    )


def _drafts(steps: Sequence[Mapping[str, Any]]) -> list[StepDraft]:
    return [
        StepDraft(
            service_type=s["service_type"],
            priority=s.get("priority", "normal"),
            delivery=s.get("delivery", "referral"),
            key=s.get("key"),
            depends_on=s.get("depends_on"),
            notes=s.get("notes", ""),
        )
        for s in steps
    ]


# --- Step statuses -------------------------------------------------------------------


async def refresh_statuses(
    session: AsyncSession, *, case: Mapping[str, Any], steps: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Recompute every step's status; write the ones that changed. Returns the steps."""
    statuses = plan_statuses(
        steps,
        consent_granted=(case["consent"] or {}).get("referral") == "granted",
        case_open=case["status"] == "open",
    )
    for step, (status, reason) in zip(steps, statuses, strict=True):
        if (step["status"], step["status_reason"]) != (status, reason):
            await session.execute(
                update(plan_steps)
                .where(plan_steps.c.id == step["id"])
                .values(status=status, status_reason=reason, updated_at=func.now())
            )
            step["status"], step["status_reason"] = status, reason
    return steps


async def _insert_steps(
    session: AsyncSession,
    *,
    case_id: UUID,
    settled: Sequence[Mapping[str, Any]],
    first_position: int,
) -> None:
    if not settled:
        return
    await session.execute(
        insert(plan_steps),
        [
            {
                "id": uuid.uuid4(),
                "case_id": case_id,
                "position": first_position + index,
                "status": "planned",
                "status_reason": None,
                **step,
            }
            for index, step in enumerate(settled)
        ],
    )


# --- Create, upsert, update ------------------------------------------------------------


def _reference_prefix(area_code: str) -> str:
    """A case reference is `<country>-<year>-<number, at least 6 digits>`."""
    return f"{area_code.split('-', 1)[0].upper()}-{datetime.now(UTC).year}-"


# The table's columns, in its order: the result's columns are matched to them by position.
_CASE_COLUMNS = ", ".join(column.name for column in cases.c)
_INSERT_CASE = (
    text(
        f"""
        WITH number AS MATERIALIZED (
            SELECT CAST(nextval('registry.case_reference_seq') AS text) AS n
        ),
        new_case AS (
            INSERT INTO registry.cases (id, reference, owner_partner_id, external_id,
                beneficiary, return_info, return_area_code, vulnerabilities, consent)
            SELECT :id, :prefix || lpad(n, greatest(6, length(n)), '0'), :owner, :external_id,
                :beneficiary, :return_info, :area, :vulnerabilities, :consent
            FROM number
            RETURNING *
        ),
        new_steps AS (
            INSERT INTO registry.plan_steps (id, case_id, key, position, service_type,
                priority, delivery, depends_on, notes, status, status_reason)
            SELECT s.id, new_case.id, s.key, s.position, s.service_type, s.priority,
                s.delivery, s.depends_on, s.notes, s.status, s.status_reason
            FROM new_case, jsonb_to_recordset(:steps) AS s(id uuid, key text,
                position integer, service_type text, priority text, delivery text,
                depends_on text[], notes text, status text, status_reason text)
        )
        SELECT {_CASE_COLUMNS}
        FROM new_case
        """  # noqa: S608 - the names are the table's own columns
    )
    .bindparams(
        bindparam("id", type_=PG_UUID(as_uuid=True)),
        bindparam("prefix", type_=String),
        bindparam("owner", type_=PG_UUID(as_uuid=True)),
        bindparam("external_id", type_=String),
        bindparam("beneficiary", type_=JSONB),
        bindparam("return_info", type_=JSONB),
        bindparam("area", type_=String),
        bindparam("vulnerabilities", type_=ARRAY(String)),
        bindparam("consent", type_=JSONB),
        bindparam("steps", type_=JSONB),
    )
    .columns(*cases.c)
)


def _new_steps(
    settled: Sequence[Mapping[str, Any]], *, consent: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """The rows of a new case's steps, with the statuses they start with."""
    steps = [
        {
            "id": uuid.uuid4(),
            "position": position,
            "owner_status": None,
            "referral_id": None,
            "referral_attempt": None,
            "referral_version": None,
            "referral_status": None,
            "referral_assignee_id": None,
            "referral_service_id": None,
            **step,
        }
        for position, step in enumerate(settled, start=1)
    ]
    statuses = plan_statuses(
        steps, consent_granted=(consent or {}).get("referral") == "granted", case_open=True
    )
    for step, (status, reason) in zip(steps, statuses, strict=True):
        step["status"], step["status_reason"] = status, reason
    return steps


async def create_case(
    session: AsyncSession, *, owner_id: UUID, body: Mapping[str, Any], caller: Principal
) -> dict[str, Any]:
    """A new case with its plan; its duplicates are looked for in the same transaction."""
    plan = list(body.get("plan") or [])
    step_types = [s["service_type"] for s in plan]
    area_code = body["return"]["area_code"]
    external_id = body.get("external_id")
    if owner_id != caller.partner_id:  # an admin names the owner; a partner's key is its own
        await check_partner(session, partner_id=owner_id, field="body.owner_partner_id")
    area_known, known, existing = await _known(
        session,
        area_code=area_code,
        step_types=step_types,
        owner_id=owner_id,
        external_id=external_id,
    )
    _code_errors(
        area_code=area_code,
        area_known=area_known,
        step_types=step_types,
        known=known,
        step_prefix="body.plan",
    )
    try:
        settled = settle_steps(_drafts(plan))
    except PlanError as exc:
        raise _plan_problem(exc) from exc
    if existing is not None:
        raise Conflict(
            f"A case with external_id {external_id!r} exists: {existing}. "
            "Use PUT /cases/by-external-id/{external_id} to update it.",
            case_id=str(existing),
        )
    steps = _new_steps(settled, consent=body["consent"])
    row = (
        (
            await session.execute(
                _INSERT_CASE,
                {
                    "id": uuid.uuid4(),
                    "prefix": _reference_prefix(area_code),
                    "owner": owner_id,
                    "external_id": external_id,
                    "beneficiary": body["beneficiary"],
                    "return_info": body["return"],
                    "area": area_code,
                    "vulnerabilities": list(body.get("vulnerabilities") or []),
                    "consent": body["consent"],
                    "steps": [
                        {
                            **{name: step[name] for name in STEP_FIELDS},
                            "id": str(step["id"]),
                            "position": step["position"],
                        }
                        for step in steps
                    ],
                },
            )
        )
        .mappings()
        .one()
    )
    case = dict(row)
    for step in steps:
        step["case_id"] = case["id"]
        step["created_at"] = step["updated_at"] = case["created_at"]
    await duplicates_store.index_case(session, case=case, new=True)
    return await emit_case_event(
        session, type="case.created", case=case, steps=steps, caller=caller
    )


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7396 JSON merge patch: null removes a key, objects merge, the rest replaces."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merge_patch(result[key], value)
        else:
            result[key] = value
    return result


async def update_case(
    session: AsyncSession,
    *,
    case: dict[str, Any],
    changes: Mapping[str, Any],
    caller: Principal,
) -> dict[str, Any]:
    """Apply validated changes to `beneficiary`, `return`, `vulnerabilities`, `external_id`."""
    values: dict[str, Any] = {}
    if "beneficiary" in changes:
        values["beneficiary"] = changes["beneficiary"]
    if "return" in changes:
        await check_case_refs(session, area_code=changes["return"]["area_code"], step_types=[])
        values["return_info"] = changes["return"]
        values["return_area_code"] = changes["return"]["area_code"]
    if "vulnerabilities" in changes:
        values["vulnerabilities"] = list(changes["vulnerabilities"])
    if "external_id" in changes and changes["external_id"] != case["external_id"]:
        taken = (
            await session.execute(
                select(cases.c.id).where(
                    cases.c.owner_partner_id == case["owner_partner_id"],
                    cases.c.external_id == changes["external_id"],
                )
            )
        ).scalar()
        if taken is not None:
            raise Conflict(f"Another case of yours has external_id {changes['external_id']!r}.")
        values["external_id"] = changes["external_id"]
    unchanged = all(case.get(column) == value for column, value in values.items())
    steps = await load_steps(session, case_id=case["id"])
    if unchanged:
        return case_snapshot(case, steps)
    row = (
        (
            await session.execute(
                update(cases)
                .where(cases.c.id == case["id"])
                .values(**values, version=cases.c.version + 1, updated_at=func.now())
                .returning(*cases.c)
            )
        )
        .mappings()
        .one()
    )
    case = dict(row)
    if "beneficiary" in values or "return_info" in values:
        await duplicates_store.index_case(session, case=case)
    return await emit_case_event(
        session, type="case.updated", case=case, steps=steps, caller=caller
    )


async def find_by_external_id(
    session: AsyncSession, *, owner_id: UUID, external_id: str
) -> dict[str, Any] | None:
    row = (
        (
            await session.execute(
                select(cases)
                .where(cases.c.owner_partner_id == owner_id, cases.c.external_id == external_id)
                .with_for_update()
            )
        )
        .mappings()
        .one_or_none()
    )
    return dict(row) if row else None


# --- Consent, steps, closure -----------------------------------------------------------


async def _save_case(
    session: AsyncSession, *, case_id: UUID, values: Mapping[str, Any]
) -> dict[str, Any]:
    row = (
        (
            await session.execute(
                update(cases)
                .where(cases.c.id == case_id)
                .values(**values, version=cases.c.version + 1, updated_at=func.now())
                .returning(*cases.c)
            )
        )
        .mappings()
        .one()
    )
    return dict(row)


async def change_consent(
    session: AsyncSession, *, case: dict[str, Any], consent: Mapping[str, Any], caller: Principal
) -> dict[str, Any]:
    case = await _save_case(session, case_id=case["id"], values={"consent": dict(consent)})
    steps = await refresh_statuses(
        session, case=case, steps=await load_steps(session, case_id=case["id"])
    )
    return await emit_case_event(
        session, type="case.consent_changed", case=case, steps=steps, caller=caller
    )


async def add_steps(
    session: AsyncSession,
    *,
    case: dict[str, Any],
    new_steps: Sequence[Mapping[str, Any]],
    caller: Principal,
) -> dict[str, Any]:
    await check_case_refs(
        session,
        area_code=None,
        step_types=[s["service_type"] for s in new_steps],
        step_prefix="body.steps",
    )
    existing = await load_steps(session, case_id=case["id"])
    try:
        settled = settle_steps(_drafts(new_steps), existing=existing, field_prefix="body.steps")
    except PlanError as exc:
        raise _plan_problem(exc) from exc
    await _insert_steps(
        session, case_id=case["id"], settled=settled, first_position=len(existing) + 1
    )
    case = await _save_case(session, case_id=case["id"], values={})
    steps = await refresh_statuses(
        session, case=case, steps=await load_steps(session, case_id=case["id"])
    )
    return await emit_case_event(
        session, type="case.plan_changed", case=case, steps=steps, caller=caller
    )


async def set_step_owner_status(
    session: AsyncSession,
    *,
    case: dict[str, Any],
    step_id: UUID,
    owner_status: str,
    caller: Principal,
) -> dict[str, Any]:
    """Cancel a step (any delivery) or complete a direct step."""
    steps = await load_steps(session, case_id=case["id"])
    step = next((s for s in steps if s["id"] == step_id), None)
    if step is None:
        raise NotFound(f"No step {step_id} in case {case['id']}.")
    if step["status"] in ("completed", "cancelled"):
        raise Conflict(
            f"The step is already {step['status']}.",
            current_status=step["status"],
            allowed_actions=[],
        )
    if owner_status == "completed" and step["delivery"] != "direct":
        raise Conflict(
            "Only a direct step is completed by its owner; a referral step completes with its "
            "referral.",
            current_status=step["status"],
            allowed_actions=["cancel"],
        )
    if (
        owner_status == "completed"
        and step["status"] in ("planned",)
        and step["status_reason"] != "ready"
    ):
        raise Conflict(
            "The step's dependencies are not resolved yet.",
            current_status=step["status"],
            allowed_actions=["cancel"],
        )
    await session.execute(
        update(plan_steps)
        .where(plan_steps.c.id == step_id)
        .values(owner_status=owner_status, updated_at=func.now())
    )
    step["owner_status"] = owner_status
    case = await _save_case(session, case_id=case["id"], values={})
    steps = await refresh_statuses(session, case=case, steps=steps)
    event = "case.step_completed" if owner_status == "completed" else "case.plan_changed"
    return await emit_case_event(session, type=event, case=case, steps=steps, caller=caller)


async def close_case(
    session: AsyncSession,
    *,
    case: dict[str, Any],
    reason: str,
    caller: Principal,
    merged_into: UUID | None = None,
) -> dict[str, Any]:
    if case["status"] == "closed":
        raise Conflict(
            "The case is already closed.", current_status="closed", allowed_actions=["reopen"]
        )
    case = await _save_case(
        session,
        case_id=case["id"],
        values={"status": "closed", "closure_reason": reason, "merged_into": merged_into},
    )
    steps = await refresh_statuses(
        session, case=case, steps=await load_steps(session, case_id=case["id"])
    )
    event = "case.merged" if merged_into is not None else "case.closed"
    return await emit_case_event(session, type=event, case=case, steps=steps, caller=caller)


async def reopen_case(
    session: AsyncSession, *, case: dict[str, Any], caller: Principal
) -> dict[str, Any]:
    if case["status"] == "open":
        raise Conflict("The case is open.", current_status="open", allowed_actions=["close"])
    if case["closure_reason"] == "merged":
        raise Conflict(
            f"The case was merged into {case['merged_into']}; it cannot be reopened.",
            current_status="closed",
            allowed_actions=[],
        )
    case = await _save_case(
        session, case_id=case["id"], values={"status": "open", "closure_reason": None}
    )
    steps = await refresh_statuses(
        session, case=case, steps=await load_steps(session, case_id=case["id"])
    )
    return await emit_case_event(
        session, type="case.reopened", case=case, steps=steps, caller=caller
    )


# --- Reading -----------------------------------------------------------------------------


async def minimised_for(
    session: AsyncSession, *, case: Mapping[str, Any], partner_id: UUID
) -> dict[str, Any] | None:
    """The minimised case for a partner holding a live referral of it, else None."""
    steps = await load_steps(session, case_id=case["id"])
    mine = [
        s
        for s in steps
        if s["referral_assignee_id"] == partner_id
        and s["referral_status"] in MINIMISED_CASE_STATUSES
    ]
    if not mine:
        return None
    service_ids = {s["referral_service_id"] for s in mine if s["referral_service_id"]}
    named: set[str] = set()
    if service_ids:
        for eligibility in (
            await session.execute(
                select(services.c.eligibility).where(services.c.id.in_(service_ids))
            )
        ).scalars():
            named.update((eligibility or {}).get("vulnerabilities_any") or [])
    owner = (
        (await session.execute(select(partners).where(partners.c.id == case["owner_partner_id"])))
        .mappings()
        .one_or_none()
    )
    snapshot = case_snapshot(case, steps)
    return minimise_case(
        case=snapshot,
        referral_statuses=[s["referral_status"] for s in mine],
        assignee_steps=mine,
        service_vulnerabilities=named,
        referring_partner=owner,
        today=date.today(),
    )


# One row per case read, in the order given, in one statement whatever their number.
_RECORD_ACCESS = text(
    """
    INSERT INTO registry.access_log (case_id, partner_id, key_id, view, route)
    SELECT read.case_id, :partner_id, :key_id, :view, :route
    FROM unnest(:case_ids) WITH ORDINALITY AS read(case_id, n)
    ORDER BY read.n
    """
).bindparams(
    bindparam("case_ids", type_=ARRAY(PG_UUID(as_uuid=True))),
    bindparam("partner_id", type_=PG_UUID(as_uuid=True)),
    bindparam("key_id", type_=PG_UUID(as_uuid=True)),
    bindparam("view", type_=String),
    bindparam("route", type_=String),
)


async def record_access(
    session: AsyncSession,
    *,
    case_ids: Sequence[UUID],
    caller: Principal,
    view: str,
    route: str,
) -> None:
    """Record in the access log (SPEC 9) that the caller's key read these cases."""
    if not case_ids:
        return
    await session.execute(
        _RECORD_ACCESS,
        {
            "case_ids": list(case_ids),
            "partner_id": caller.partner_id,
            "key_id": caller.key_id,
            "view": view,
            "route": route,
        },
    )


_ACCESS_COLUMNS = ["case_id", "partner_id", "key_id", "view", "route"]


async def read_page_and_record(
    session: AsyncSession,
    *,
    query: Select,
    limit: int,
    caller: Principal,
    route: str,
) -> Sequence[Any]:
    """The rows of a keyset page of cases (`query` orders them by `updated_at, id` and fetches
    `limit` + 1), the first `limit` of them recorded in the access log as listed by the caller
    (SPEC 9), in one statement: the read and its record succeed or fail together, in one round
    trip, so the statement runs in autocommit mode (no BEGIN, no COMMIT). Call it first in the
    session's transaction: the isolation level is set when the connection is taken."""
    page = query.cte("page")
    logged = (
        insert(access_log)
        .from_select(
            _ACCESS_COLUMNS,
            select(
                page.c.id,
                bindparam("log_partner_id", caller.partner_id, type_=PG_UUID(as_uuid=True)),
                bindparam("log_key_id", caller.key_id, type_=PG_UUID(as_uuid=True)),
                bindparam("log_view", "list", type_=String),
                bindparam("log_route", route, type_=String),
            )
            .order_by(page.c.updated_at, page.c.id)
            .limit(limit),
        )
        .cte("logged")
    )
    statement = select(page).add_cte(logged).order_by(page.c.updated_at, page.c.id)
    await session.connection(execution_options=AUTOCOMMIT)
    return (await session.execute(statement)).mappings().all()


# Each case's plan as a JSON array (the steps' `STEP_FIELDS`, in plan order).
_PLAN = (
    select(
        func.coalesce(
            func.json_agg(
                aggregate_order_by(
                    func.json_build_object(
                        *(
                            part
                            for name in STEP_FIELDS
                            for part in (literal_column(f"'{name}'"), plan_steps.c[name])
                        )
                    ),
                    plan_steps.c.position,
                )
            ),
            literal_column("'[]'::json"),
        )
    )
    .where(plan_steps.c.case_id == cases.c.id)
    .scalar_subquery()
)

# The Case resource of a row as JSON text (the fields of `case_snapshot`, with the plan), for
# lists: the page is validated straight from it, with no Python objects in between.
_CASE_JSON = {
    "id": cases.c.id,
    "reference": cases.c.reference,
    "external_id": cases.c.external_id,
    "owner_partner_id": cases.c.owner_partner_id,
    "status": cases.c.status,
    "closure_reason": cases.c.closure_reason,
    "merged_into": cases.c.merged_into,
    "beneficiary": cases.c.beneficiary,
    "return": cases.c.return_info,
    "vulnerabilities": cases.c.vulnerabilities,
    "consent": cases.c.consent,
    "plan": _PLAN,
    "version": cases.c.version,
    "created_at": cases.c.created_at,
    "updated_at": cases.c.updated_at,
}
CASE_JSON = cast(
    func.json_build_object(
        *(
            part
            for name, column in _CASE_JSON.items()
            for part in (literal_column(f"'{name}'"), column)
        )
    ),
    Text,
).label("case_json")


def cases_query(
    *,
    caller: Principal,
    status: str | None,
    area: str | None,
    updated_since: datetime | None,
    commit_margin: timedelta,
) -> Select:
    """The cases a caller may list: `id`, `updated_at` and the case as JSON (`case_json`)."""
    query = select(cases.c.id, cases.c.updated_at, CASE_JSON)
    if not caller.is_admin:
        query = query.where(cases.c.owner_partner_id == caller.partner_id)
    if status is not None:
        query = query.where(cases.c.status == status)
    if area is not None:
        within = select(areas.c.code).where(areas.c.path.contains([area]))
        query = query.where(cases.c.return_area_code.in_(within))
    if updated_since is not None:
        # updated_at is the time of the statement, not of the commit: a change that committed
        # after `updated_since` may carry an earlier time, up to a transaction's length.
        query = query.where(cases.c.updated_at >= updated_since - commit_margin)
    return query


def expect(case: Mapping[str, Any], expected_version: int | None) -> None:
    check_version(case["version"], expected_version)


async def merge_cases(
    session: AsyncSession, *, keep: dict[str, Any], other: dict[str, Any], caller: Principal
) -> dict[str, Any]:
    """Close `other` as merged into `keep` and move its unfinished steps there, under new keys.

    Moved steps keep their dependencies on each other; a dependency on a step that was
    already resolved is dropped. The kept case's plan change routes the moved steps.
    """
    if keep["closure_reason"] == "merged":
        raise Conflict(
            f"The case to keep was merged into {keep['merged_into']}; merge into that one.",
            current_status="closed",
            allowed_actions=["dismiss"],
        )
    other_steps = await load_steps(session, case_id=other["id"])
    keep_steps = await load_steps(session, case_id=keep["id"])
    unfinished = [s for s in other_steps if s["status"] not in ("completed", "cancelled")]
    taken = {s["key"] for s in keep_steps}
    new_key: dict[str, str] = {}
    for step in unfinished:
        base = f"{other['reference']}.{step['key']}"
        candidate = base[:KEY_MAX]
        n = 1
        while candidate in taken:
            # The suffix stays whole, however long the key: a cut one would repeat forever.
            n += 1
            candidate = base[: KEY_MAX - len(f".{n}")] + f".{n}"
        taken.add(candidate)
        new_key[step["key"]] = candidate
    moved = [
        {
            "key": new_key[s["key"]],
            "service_type": s["service_type"],
            "priority": s["priority"],
            "delivery": s["delivery"],
            "depends_on": [new_key[d] for d in s["depends_on"] if d in new_key],
            "notes": s["notes"],
        }
        for s in unfinished
    ]
    await close_case(session, case=other, reason="merged", caller=caller, merged_into=keep["id"])
    await _insert_steps(
        session, case_id=keep["id"], settled=moved, first_position=len(keep_steps) + 1
    )
    keep = await _save_case(session, case_id=keep["id"], values={})
    steps = await refresh_statuses(
        session, case=keep, steps=await load_steps(session, case_id=keep["id"])
    )
    return await emit_case_event(
        session, type="case.plan_changed", case=keep, steps=steps, caller=caller
    )
