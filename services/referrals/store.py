"""Referrals: creation, transitions, history, the resource as served and as carried by events.

Every change writes the referral, its history line and its event in one transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.referrals.tables import cases, partners, referral_history, referrals, services, steps
from shared.eventlog.append import append, append_many
from shared.eventlog.model import Event
from shared.minimised import minimise_case
from shared.referral_statuses import MINIMISED_CASE_STATUSES, in_lifecycle_order

SOURCE = "/referrals"


def now_utc() -> datetime:
    return datetime.now(UTC)


async def load_referral(
    session: AsyncSession, *, referral_id: UUID, for_update: bool = False
) -> dict[str, Any] | None:
    query = select(referrals).where(referrals.c.id == referral_id)
    if for_update:
        query = query.with_for_update()
    row = (await session.execute(query)).mappings().one_or_none()
    return dict(row) if row else None


async def lock_for_change(session: AsyncSession, *, referral_id: UUID) -> dict[str, Any] | None:
    """Lock a referral for a change, after its case: the router reconciles a case holding
    the case's lock, so a change waits for a reconciliation under way (and the next one
    sees it) rather than slipping between the router's reads. One lock order everywhere:
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


def minimised_view(
    case: Mapping[str, Any],
    *,
    referral: Mapping[str, Any],
    assignee_steps: Sequence[Mapping[str, Any]],
    named: Sequence[str],
    owner: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The minimised case from the projection's case row and what the assignee may see:
    its live steps of the case (by position), the vulnerabilities its service names, and
    the owner partner's contact."""
    return minimise_case(
        case={
            "reference": case["reference"],
            "consent": {"referral": "granted" if case["consent_granted"] else "withdrawn"},
            "beneficiary": case["beneficiary"],
            "return": {"area_code": case["return_area_code"]},
            "vulnerabilities": list(case["vulnerabilities"]),
        },
        referral_statuses=[referral["status"]],
        assignee_steps=assignee_steps,
        service_vulnerabilities=named,
        referring_partner=owner,
        today=date.today(),
    )


def resource(
    row: Mapping[str, Any],
    *,
    history: Sequence[Mapping[str, Any]],
    case: Mapping[str, Any],
    with_decision: bool,
) -> dict[str, Any]:
    """The Referral as the API serves it; events carry it without `decision`."""
    body = {
        "id": row["id"],
        "case_id": row["case_id"],
        "case_reference": row["case_reference"],
        "step_id": row["step_id"],
        "service_type": row["service_type"],
        "priority": row["priority"],
        "status": row["status"],
        "status_reason": row["status_reason"],
        "assignee_partner_id": row["assignee_partner_id"],
        "service_id": row["service_id"],
        "owner_partner_id": row["owner_partner_id"],
        "deadline_at": row["deadline_at"],
        "attempt": row["attempt"],
        "outcome": row["outcome"],
        "case": case,
        "history": list(history),
        "version": row["version"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }
    if with_decision:
        body["decision"] = row["decision"]
    return body


def event_draft(
    *,
    type: str,
    row: Mapping[str, Any],
    actor: str,
    history: Sequence[Mapping[str, Any]],
    case: Mapping[str, Any],
    cause: Event | None = None,
    correlation_id: str | None = None,
) -> dict[str, Any]:
    """The referral's event, as `append` takes it: the Referral without its decision, with
    the minimised case; owner and assignee are its audience."""
    audience = [row["owner_partner_id"]]
    if row["assignee_partner_id"] is not None:
        audience.append(row["assignee_partner_id"])
    return {
        "type": type,
        "source": SOURCE,
        "subject": f"referrals/{row['id']}",
        "data": resource(row, history=history, case=case, with_decision=False),
        "actor": actor,
        "audience": audience,
        "causation_id": cause.id if cause else None,
        "correlation_id": correlation_id
        or (cause.correlation_id or str(cause.id) if cause else None),
    }


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


@dataclass(frozen=True)
class NewReferral:
    """A referral decided, not yet written: its row's values, the note of its first history
    line, the minimised case its event carries, and the event that caused it."""

    values: dict[str, Any]
    note: str
    case: dict[str, Any]
    cause: Event | None


def referral_values(
    *,
    case: Mapping[str, Any],
    step: Mapping[str, Any],
    attempt: int,
    decision: Mapping[str, Any],
    service_id: UUID | None,
    assignee_partner_id: UUID | None,
    deadline_at: datetime | None,
) -> dict[str, Any]:
    """A step's new referral: requested to its assignee, or unassigned without one."""
    return {
        "id": uuid.uuid4(),
        "case_id": case["id"],
        "case_reference": case["reference"],
        "step_id": step["id"],
        "service_type": step["service_type"],
        "priority": step["priority"],
        "status": "requested" if assignee_partner_id is not None else "unassigned",
        "assignee_partner_id": assignee_partner_id,
        "service_id": service_id,
        "owner_partner_id": case["owner_partner_id"],
        "deadline_at": deadline_at,
        "attempt": attempt,
        "decision": dict(decision),
    }


async def create_referrals(
    session: AsyncSession, drafts: Sequence[NewReferral]
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
