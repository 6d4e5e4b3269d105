"""A case's plan steps: reading and adding them, their statuses, locking a batch of plans,
and writing what referral events tell of each step."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import bindparam, case, func, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID

from services.registry.case_shape import STEP_FIELDS
from services.registry.tables import cases, plan_steps
from shared.db import Connection, Statement

_IDS = ARRAY(PG_UUID(as_uuid=True))

# What a step holds of its latest referral.
REFERRAL_FIELDS = (
    "referral_id",
    "referral_attempt",
    "referral_version",
    "referral_status",
    "referral_assignee_id",
    "referral_service_id",
    "owner_status",
)
_WRITE_REFERRAL_NEWS = Statement(
    update(plan_steps)
    .where(plan_steps.c.id == bindparam("step_id"))
    .values(
        **{name: bindparam(name) for name in REFERRAL_FIELDS},
        status=bindparam("new_status"),
        status_reason=bindparam("new_status_reason"),
        # Like an owner's change, a change of status dates the step; referral news alone not.
        updated_at=case((bindparam("touch"), func.now()), else_=plan_steps.c.updated_at),
    )
)
# The cases of some steps, locked in id order (as the API's actions lock one).
_LOCK_CASES_OF_STEPS = Statement(
    select(cases)
    .where(
        cases.c.id.in_(
            select(plan_steps.c.case_id).where(
                plan_steps.c.id == func.any(bindparam("step_ids", type_=_IDS))
            )
        )
    )
    .order_by(cases.c.id)
    .with_for_update(of=cases)
)
_STEPS_OF_CASES = Statement(
    select(plan_steps)
    .where(plan_steps.c.case_id == func.any(bindparam("case_ids", type_=_IDS)))
    .order_by(plan_steps.c.case_id, plan_steps.c.position)
)
_STEPS_OF_CASE = Statement(
    select(plan_steps)
    .where(plan_steps.c.case_id == bindparam("case_id"))
    .order_by(plan_steps.c.position)
)
# Steps appended to a plan, in one statement whatever their number: each step's id, position
# and the fields a plan settles (`STEP_FIELDS` but its status), as a JSON array.
_INSERTED_FIELDS = (
    "position",
    *(name for name in STEP_FIELDS if name not in {"status", "status_reason"}),
)
_INSERTED_TYPES = ", ".join(
    f"{name} {plan_steps.c[name].type.compile(dialect=postgresql.dialect())}"
    for name in _INSERTED_FIELDS
)
_INSERT_STEPS = Statement(
    f"""
    INSERT INTO registry.plan_steps (case_id, status, status_reason,
        {", ".join(_INSERTED_FIELDS)})
    SELECT CAST(:case_id AS uuid), 'planned', NULL,
        {", ".join(f"s.{name}" for name in _INSERTED_FIELDS)}
    FROM jsonb_to_recordset(CAST(:steps AS jsonb)) AS s({_INSERTED_TYPES})
    """  # noqa: S608 - the names are the table's own columns
)
_WRITE_STATUSES = Statement(
    """
    UPDATE registry.plan_steps AS s
    SET status = w.status, status_reason = w.status_reason, updated_at = now()
    FROM unnest(CAST(:ids AS uuid[]), CAST(:statuses AS text[]), CAST(:reasons AS text[]))
        AS w(id, status, status_reason)
    WHERE s.id = w.id
    """
)
_SET_OWNER_STATUS = Statement(
    update(plan_steps)
    .where(plan_steps.c.id == bindparam("step_id"))
    .values(owner_status=bindparam("owner_status"), updated_at=func.now())
)


async def lock_plans_of_steps(
    conn: Connection, *, step_ids: Iterable[UUID]
) -> tuple[dict[UUID, dict[str, Any]], dict[UUID, list[dict[str, Any]]]]:
    """The cases of these steps (those that exist) locked together, in id order, and their
    steps in plan order: two statements."""
    found = await _LOCK_CASES_OF_STEPS.fetch(conn, step_ids=list(set(step_ids)))
    locked = {row["id"]: dict(row) for row in found}
    plans: dict[UUID, list[dict[str, Any]]] = {case_id: [] for case_id in locked}
    if locked:
        for row in await _STEPS_OF_CASES.fetch(conn, case_ids=list(locked)):
            plans[row["case_id"]].append(dict(row))
    return locked, plans


async def write_referral_news(conn: Connection, *, writes: Sequence[Mapping[str, Any]]) -> None:
    """Write steps' referral fields and statuses in one statement: each write names
    `step_id`, the `REFERRAL_FIELDS`, `new_status`, `new_status_reason`, and `touch` (the
    status changed, so `updated_at` moves)."""
    if writes:
        await _WRITE_REFERRAL_NEWS.executemany(conn, writes)


async def load_steps(conn: Connection, *, case_id: UUID) -> list[dict[str, Any]]:
    """A case's steps in plan order."""
    return [dict(r) for r in await _STEPS_OF_CASE.fetch(conn, case_id=case_id)]


async def insert_steps(
    conn: Connection,
    *,
    case_id: UUID,
    settled: Sequence[Mapping[str, Any]],
    first_position: int,
) -> None:
    """Append settled steps to a case's plan, planned, from `first_position` on."""
    if not settled:
        return
    await _INSERT_STEPS.execute(
        conn,
        case_id=case_id,
        steps=[
            {**step, "id": uuid.uuid4(), "position": first_position + index}
            for index, step in enumerate(settled)
        ],
    )


async def write_statuses(conn: Connection, *, steps: Sequence[Mapping[str, Any]]) -> None:
    """Write the status and reason these steps now hold."""
    if steps:
        await _WRITE_STATUSES.execute(
            conn,
            ids=[step["id"] for step in steps],
            statuses=[step["status"] for step in steps],
            reasons=[step["status_reason"] for step in steps],
        )


async def set_owner_status(conn: Connection, *, step_id: UUID, owner_status: str) -> None:
    """Record that the case's owner cancelled or completed the step."""
    await _SET_OWNER_STATUS.execute(conn, step_id=step_id, owner_status=owner_status)
