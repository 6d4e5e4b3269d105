"""A case's plan steps: reading and adding them, their statuses, locking a batch of plans,
and writing what referral events tell of each step."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import bindparam, case, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.registry.tables import cases, plan_steps

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
_WRITE_REFERRAL_NEWS = (
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


async def cases_of_steps(session: AsyncSession, *, step_ids: Iterable[UUID]) -> dict[UUID, UUID]:
    """The case of each of these steps that exists."""
    rows = await session.execute(
        select(plan_steps.c.id, plan_steps.c.case_id).where(plan_steps.c.id.in_(set(step_ids)))
    )
    return dict(rows.all())


async def lock_plans(
    session: AsyncSession, *, case_ids: Sequence[UUID]
) -> tuple[dict[UUID, dict[str, Any]], dict[UUID, list[dict[str, Any]]]]:
    """The cases locked together (in id order, as the API's actions lock one) and their steps
    in plan order, read in one statement."""
    found = await session.execute(
        select(cases).where(cases.c.id.in_(sorted(case_ids))).order_by(cases.c.id).with_for_update()
    )
    locked = {row["id"]: dict(row) for row in found.mappings()}
    plans: dict[UUID, list[dict[str, Any]]] = {case_id: [] for case_id in locked}
    for row in (
        await session.execute(
            select(plan_steps)
            .where(plan_steps.c.case_id.in_(list(locked)))
            .order_by(plan_steps.c.case_id, plan_steps.c.position)
        )
    ).mappings():
        plans[row["case_id"]].append(dict(row))
    return locked, plans


async def write_referral_news(
    session: AsyncSession, *, writes: Sequence[Mapping[str, Any]]
) -> None:
    """Write steps' referral fields and statuses in one statement: each write names
    `step_id`, the `REFERRAL_FIELDS`, `new_status`, `new_status_reason`, and `touch` (the
    status changed, so `updated_at` moves)."""
    if writes:
        await session.execute(_WRITE_REFERRAL_NEWS, list(writes))


async def load_steps(session: AsyncSession, *, case_id: UUID) -> list[dict[str, Any]]:
    """A case's steps in plan order."""
    rows = await session.execute(
        select(plan_steps).where(plan_steps.c.case_id == case_id).order_by(plan_steps.c.position)
    )
    return [dict(r) for r in rows.mappings()]


async def insert_steps(
    session: AsyncSession,
    *,
    case_id: UUID,
    settled: Sequence[Mapping[str, Any]],
    first_position: int,
) -> None:
    """Append settled steps to a case's plan, planned, from `first_position` on."""
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


async def write_statuses(session: AsyncSession, *, steps: Sequence[Mapping[str, Any]]) -> None:
    """Write the status and reason these steps now hold."""
    for step in steps:
        await session.execute(
            update(plan_steps)
            .where(plan_steps.c.id == step["id"])
            .values(
                status=step["status"], status_reason=step["status_reason"], updated_at=func.now()
            )
        )


async def set_owner_status(session: AsyncSession, *, step_id: UUID, owner_status: str) -> None:
    """Record that the case's owner cancelled or completed the step."""
    await session.execute(
        update(plan_steps)
        .where(plan_steps.c.id == step_id)
        .values(owner_status=owner_status, updated_at=func.now())
    )
