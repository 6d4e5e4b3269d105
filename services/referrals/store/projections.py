"""The referrals service's copies of partners, services, cases and steps (built from events),
and the areas a case is routed in.

An upsert never replaces a copy with an older version; a step's resolution is only ever set,
never undone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.referrals.resources import SOURCE
from services.referrals.tables import cases, partners, services, steps
from shared.eventlog.append import append
from shared.eventlog.model import Event
from shared.tables import areas

ROWS_PER_STATEMENT = 1000  # of about ten columns: well under a statement's 32,767 parameters


async def partner_state(session: AsyncSession, *, partner_id: UUID) -> tuple[str, int] | None:
    """(status, version) of the partner's copy, if any."""
    row = (
        await session.execute(
            select(partners.c.status, partners.c.version).where(partners.c.id == partner_id)
        )
    ).one_or_none()
    return (row.status, row.version) if row is not None else None


async def upsert_partner(session: AsyncSession, *, values: Mapping[str, Any]) -> None:
    await session.execute(
        insert(partners)
        .values(**values)
        .on_conflict_do_update(index_elements=["id"], set_=dict(values))
    )


async def upsert_service(session: AsyncSession, *, values: Mapping[str, Any]) -> bool:
    """Write the service's copy unless a newer version is there; True when written."""
    result = await session.execute(
        insert(services)
        .values(**values)
        .on_conflict_do_update(
            index_elements=["id"], set_=dict(values), where=services.c.version < values["version"]
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def upsert_cases(session: AsyncSession, *, rows: Sequence[Mapping[str, Any]]) -> set[UUID]:
    """Write the cases' copies where the version is newer; returns the ids written."""
    changed: set[UUID] = set()
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[start : start + ROWS_PER_STATEMENT]
        statement = insert(cases).values(chunk)
        upsert = statement.on_conflict_do_update(
            index_elements=["id"],
            set_={name: statement.excluded[name] for name in chunk[0] if name != "id"},
            where=cases.c.version < statement.excluded.version,
        )
        changed.update((await session.execute(upsert.returning(cases.c.id))).scalars())
    return changed


async def upsert_steps(session: AsyncSession, *, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write plan steps; a resolution already set stays."""
    # In chunks: a statement takes at most 32,767 parameters, and a plan has no fixed size.
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[start : start + ROWS_PER_STATEMENT]
        statement = insert(steps).values(chunk)
        updates: dict[str, Any] = {
            name: statement.excluded[name] for name in chunk[0] if name not in ("id", "resolution")
        }
        updates["resolution"] = func.coalesce(steps.c.resolution, statement.excluded.resolution)
        await session.execute(statement.on_conflict_do_update(index_elements=["id"], set_=updates))


async def resolve_step(session: AsyncSession, *, step_id: UUID, resolution: str) -> None:
    """Set the step's resolution unless it has one."""
    await session.execute(
        update(steps)
        .where(steps.c.id == step_id, steps.c.resolution.is_(None))
        .values(resolution=resolution)
    )


async def clear(session: AsyncSession) -> None:
    """Empty every copy (before a rebuild from the log)."""
    await session.execute(delete(steps))
    await session.execute(delete(cases))
    await session.execute(delete(services))
    await session.execute(delete(partners))


async def get_case(session: AsyncSession, *, case_id: UUID) -> dict[str, Any] | None:
    row = (
        (await session.execute(select(cases).where(cases.c.id == case_id))).mappings().one_or_none()
    )
    return dict(row) if row else None


async def lock_cases(session: AsyncSession, *, case_ids: Sequence[UUID]) -> dict[UUID, dict]:
    """The cases' copies, locked in id order (the one lock order: case, then referral)."""
    rows = await session.execute(
        select(cases).where(cases.c.id.in_(case_ids)).order_by(cases.c.id).with_for_update()
    )
    return {row["id"]: dict(row) for row in rows.mappings()}


async def steps_of_cases(
    session: AsyncSession, *, case_ids: Sequence[UUID]
) -> dict[UUID, list[dict[str, Any]]]:
    """Each case's plan steps, by position."""
    plans: dict[UUID, list[dict[str, Any]]] = {case_id: [] for case_id in case_ids}
    rows = await session.execute(
        select(steps).where(steps.c.case_id.in_(list(case_ids))).order_by(steps.c.position)
    )
    for row in rows.mappings():
        plans.setdefault(row["case_id"], []).append(dict(row))
    return plans


async def get_step(session: AsyncSession, *, case_id: UUID, step_id: UUID) -> dict | None:
    row = (
        (
            await session.execute(
                select(steps).where(steps.c.id == step_id, steps.c.case_id == case_id)
            )
        )
        .mappings()
        .one_or_none()
    )
    return dict(row) if row else None


async def set_pathway_completed(session: AsyncSession, *, case_id: UUID, completed: bool) -> None:
    await session.execute(
        update(cases).where(cases.c.id == case_id).values(pathway_completed=completed)
    )


async def get_partner(session: AsyncSession, *, partner_id: UUID) -> dict[str, Any] | None:
    row = (
        (await session.execute(select(partners).where(partners.c.id == partner_id)))
        .mappings()
        .one_or_none()
    )
    return dict(row) if row else None


async def get_service(session: AsyncSession, *, service_id: UUID) -> dict[str, Any] | None:
    row = (
        (await session.execute(select(services).where(services.c.id == service_id)))
        .mappings()
        .one_or_none()
    )
    return dict(row) if row else None


async def area_depths(session: AsyncSession, *, area_code: str) -> dict[str, int]:
    """The area and each of its ancestors → depth (empty for an unknown area)."""
    path = (await session.execute(select(areas.c.path).where(areas.c.code == area_code))).scalar()
    if not path:
        return {}
    rows = await session.execute(
        select(areas.c.code, areas.c.depth).where(areas.c.code.in_(list(path)))
    )
    return {code: depth for code, depth in rows.all()}


async def append_pathway_completed(
    session: AsyncSession,
    *,
    case: Mapping[str, Any],
    steps: Sequence[Mapping[str, Any]],
    cause: Event | None,
) -> None:
    """Emit `case.pathway_completed` with every step's final status, for the case's owner."""
    await append(
        session,
        type="case.pathway_completed",
        source=SOURCE,
        subject=f"cases/{case['id']}",
        data={"case_id": case["id"], "case_reference": case["reference"], "steps": list(steps)},
        actor="system",
        audience=[case["owner_partner_id"]],
        causation_id=cause.id if cause else None,
        correlation_id=(cause.correlation_id or str(cause.id)) if cause else None,
    )
