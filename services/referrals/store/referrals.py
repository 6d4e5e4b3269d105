"""Referrals and their history: reads, pages, creation and transitions.

Every change writes the referral, its history line and its event in one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.referrals.resources import NewReferral, event_draft, minimised_view
from services.referrals.tables import cases, partners, referral_history, referrals, services, steps
from shared.eventlog.append import append, append_many
from shared.eventlog.model import Event
from shared.pagination import keyset, page_of, parse_time
from shared.referral_statuses import MINIMISED_CASE_STATUSES, in_lifecycle_order


async def load_referral(
    session: AsyncSession, *, referral_id: UUID, for_update: bool = False
) -> dict[str, Any] | None:
    query = select(referrals).where(referrals.c.id == referral_id)
    if for_update:
        query = query.with_for_update()
    row = (await session.execute(query)).mappings().one_or_none()
    return dict(row) if row else None


async def lock_for_change(session: AsyncSession, *, referral_id: UUID) -> dict[str, Any] | None:
    """Lock a referral for a change, after its case: the reconciler works on a case holding
    the case's lock, so a change waits for a reconciliation under way (and the next one
    sees it) rather than slipping between the reconciler's reads. One lock order everywhere:
    case, then referral."""
    case_id = (
        await session.execute(select(referrals.c.case_id).where(referrals.c.id == referral_id))
    ).scalar()
    if case_id is None:
        return None
    await session.execute(select(cases.c.id).where(cases.c.id == case_id).with_for_update())
    return await load_referral(session, referral_id=referral_id, for_update=True)


async def history_of(
    session: AsyncSession, *, referral_ids: Sequence[UUID]
) -> dict[UUID, list[dict]]:
    result: dict[UUID, list[dict]] = {rid: [] for rid in referral_ids}
    if not referral_ids:
        return result
    rows = await session.execute(
        select(referral_history)
        .where(referral_history.c.referral_id.in_(referral_ids))
        .order_by(referral_history.c.id)
    )
    for row in rows.mappings():
        result[row["referral_id"]].append(
            {"status": row["status"], "at": row["at"], "actor": row["actor"], "note": row["note"]}
        )
    return result


async def minimised_for_referral(
    session: AsyncSession, *, referral: Mapping[str, Any]
) -> dict[str, Any]:
    """The minimised case the referral's assignee may see now (SPEC 6)."""
    case = (
        (await session.execute(select(cases).where(cases.c.id == referral["case_id"])))
        .mappings()
        .one_or_none()
    )
    if case is None:
        return {"reference": referral["case_reference"]}
    live_steps: list[Mapping[str, Any]] = []
    named: list[str] = []
    shown = referral["status"] in MINIMISED_CASE_STATUSES
    if referral["assignee_partner_id"] is not None and shown:
        rows = await session.execute(
            select(steps, referrals.c.status.label("referral_status"))
            .join(referrals, referrals.c.step_id == steps.c.id)
            .where(
                referrals.c.case_id == referral["case_id"],
                referrals.c.assignee_partner_id == referral["assignee_partner_id"],
                referrals.c.status.in_(in_lifecycle_order(MINIMISED_CASE_STATUSES)),
            )
            .order_by(steps.c.position)
        )
        live_steps = [dict(r) for r in rows.mappings()]
        if referral["service_id"] is not None:
            eligibility = (
                await session.execute(
                    select(services.c.eligibility).where(services.c.id == referral["service_id"])
                )
            ).scalar()
            named = list((eligibility or {}).get("vulnerabilities_any") or [])
    owner = (
        (await session.execute(select(partners).where(partners.c.id == case["owner_partner_id"])))
        .mappings()
        .one_or_none()
    )
    return minimised_view(
        case, referral=referral, assignee_steps=live_steps, named=named, owner=owner
    )


async def emit(
    session: AsyncSession,
    *,
    type: str,
    row: Mapping[str, Any],
    actor: str,
    cause: Event | None = None,
    correlation_id: str | None = None,
) -> Event:
    """Append the referral's event, reading its history and minimised case as they are now."""
    history = (await history_of(session, referral_ids=[row["id"]]))[row["id"]]
    case = await minimised_for_referral(session, referral=row)
    draft = event_draft(
        type=type,
        row=row,
        actor=actor,
        history=history,
        case=case,
        cause=cause,
        correlation_id=correlation_id,
    )
    return await append(session, **draft)


async def add_history(
    session: AsyncSession, *, referral_id: UUID, status: str, actor: str, note: str = ""
) -> None:
    await session.execute(
        insert(referral_history).values(
            referral_id=referral_id, status=status, actor=actor, note=note
        )
    )


async def create_referrals(
    session: AsyncSession, *, drafts: Sequence[NewReferral]
) -> list[dict[str, Any]]:
    """Write new referrals with their first history line and their `referral.created`
    events: three statements whatever their number. Returns the rows as stored."""
    if not drafts:
        return []
    rows = [
        dict(r)
        for r in (
            await session.execute(
                insert(referrals).returning(*referrals.c, sort_by_parameter_order=True),
                [d.values for d in drafts],
            )
        ).mappings()
    ]
    lines = (
        await session.execute(
            insert(referral_history).returning(
                referral_history.c.status,
                referral_history.c.at,
                referral_history.c.actor,
                referral_history.c.note,
                sort_by_parameter_order=True,
            ),
            [
                {
                    "referral_id": row["id"],
                    "status": row["status"],
                    "actor": "system",
                    "note": d.note,
                }
                for row, d in zip(rows, drafts, strict=True)
            ],
        )
    ).mappings()
    await append_many(
        session,
        [
            event_draft(
                type="referral.created",
                row=row,
                actor="system",
                history=[dict(line)],
                case=d.case,
                cause=d.cause,
            )
            for row, line, d in zip(rows, lines, drafts, strict=True)
        ],
    )
    return rows


async def set_status(
    session: AsyncSession,
    *,
    referral: Mapping[str, Any],
    status: str,
    event_type: str,
    actor: str,
    note: str = "",
    reason: str | None = None,
    outcome: str | None = None,
    extra: Mapping[str, Any] | None = None,
    cause: Event | None = None,
) -> dict[str, Any]:
    """Move a (locked) referral to `status`, record the history line and emit the event."""
    values: dict[str, Any] = {"status": status, "status_reason": reason, **(extra or {})}
    if outcome is not None:
        values["outcome"] = outcome
    row = (
        (
            await session.execute(
                update(referrals)
                .where(referrals.c.id == referral["id"])
                .values(**values, version=referrals.c.version + 1, updated_at=func.now())
                .returning(*referrals.c)
            )
        )
        .mappings()
        .one()
    )
    row = dict(row)
    await add_history(
        session, referral_id=row["id"], status=status, actor=actor, note=note or (reason or "")
    )
    await emit(session, type=event_type, row=row, actor=actor, cause=cause)
    return row


async def referrals_of_cases(
    session: AsyncSession, *, case_ids: Sequence[UUID]
) -> list[dict[str, Any]]:
    """Every referral of these cases, oldest first, locked (the caller holds the cases' locks)."""
    rows = await session.execute(
        select(referrals)
        .where(referrals.c.case_id.in_(case_ids))
        .order_by(referrals.c.created_at, referrals.c.id)
        .with_for_update()
    )
    return [dict(r) for r in rows.mappings()]


async def page(
    session: AsyncSession,
    *,
    viewer_is_admin: bool,
    viewer_partner_id: UUID | None,
    equal: Sequence[tuple[str, Any]] = (),
    updated_from: datetime | None = None,
    cursor: str | None,
    limit: int,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of referrals by change time: an admin's among all, a partner's among those it
    is the assignee or the owner of; each (column, value) of `equal` must match (a None
    value matches NULL)."""
    query = select(referrals)
    if not viewer_is_admin:
        query = query.where(
            or_(
                referrals.c.assignee_partner_id == viewer_partner_id,
                referrals.c.owner_partner_id == viewer_partner_id,
            )
        )
    for name, value in equal:
        query = query.where(referrals.c[name] == value)
    if updated_from is not None:
        query = query.where(referrals.c.updated_at >= updated_from)
    query = keyset(
        query,
        order_by=[referrals.c.updated_at, referrals.c.id],
        cursor=cursor,
        limit=limit,
        parse=[parse_time, UUID],
    )
    rows = [dict(r) for r in (await session.execute(query)).mappings().all()]
    return page_of(rows, limit=limit, key=lambda r: (r["updated_at"].isoformat(), r["id"]))


async def unassigned_page(
    session: AsyncSession, *, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the unassigned referrals, oldest first."""
    query = keyset(
        select(referrals).where(referrals.c.status == "unassigned"),
        order_by=[referrals.c.created_at, referrals.c.id],
        cursor=cursor,
        limit=limit,
        parse=[parse_time, UUID],
    )
    rows = [dict(r) for r in (await session.execute(query)).mappings().all()]
    return page_of(rows, limit=limit, key=lambda r: (r["created_at"].isoformat(), r["id"]))


async def referrals_of_case(session: AsyncSession, *, case_id: UUID) -> list[dict[str, Any]]:
    """Every referral of the case, by attempt then creation."""
    rows = await session.execute(
        select(referrals)
        .where(referrals.c.case_id == case_id)
        .order_by(referrals.c.attempt, referrals.c.created_at)
    )
    return [dict(r) for r in rows.mappings()]


async def referrals_of_step(session: AsyncSession, *, step_id: UUID) -> list[dict[str, Any]]:
    """The step's referrals so far (their status, assignee and attempt)."""
    rows = await session.execute(
        select(referrals.c.status, referrals.c.assignee_partner_id, referrals.c.attempt).where(
            referrals.c.step_id == step_id
        )
    )
    return [dict(r) for r in rows.mappings()]


async def requested_of_partner(
    session: AsyncSession, *, partner_id: UUID
) -> list[tuple[UUID, UUID]]:
    """(referral id, case id) of the partner's referrals still `requested`, by case."""
    rows = await session.execute(
        select(referrals.c.id, referrals.c.case_id)
        .where(referrals.c.assignee_partner_id == partner_id, referrals.c.status == "requested")
        .order_by(referrals.c.case_id, referrals.c.id)
    )
    return [(referral_id, case_id) for referral_id, case_id in rows.all()]


async def lock_overdue(session: AsyncSession, *, limit: int) -> list[dict[str, Any]]:
    """Referrals still `requested` past their deadline, oldest deadline first, locked; those
    another transaction holds are skipped."""
    rows = await session.execute(
        select(referrals)
        .where(referrals.c.status == "requested", referrals.c.deadline_at <= func.now())
        .order_by(referrals.c.deadline_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [dict(r) for r in rows.mappings()]
