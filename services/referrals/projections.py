"""The referrals service's own copies of partners, services and cases, built from events.

Each event carries the resource's full snapshot and its `version`; an update whose version
is not newer than the copy is discarded, so replays and reordering are harmless. The copies
can be rebuilt from the log from scratch (`rebuild`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.referrals.tables import cases, partners, services, steps
from shared.eventlog.consumer import read_after
from shared.eventlog.model import Event

ROWS_PER_STATEMENT = 1000  # of about ten columns: well under a statement's 32,767 parameters

BENEFICIARY_FIELDS = (
    "given_name",
    "family_name",
    "sex",
    "date_of_birth",
    "birth_year",
    "phone",
    "languages",
)


async def apply_partner(session: AsyncSession, data: Mapping[str, Any]) -> tuple[bool, str | None]:
    """Upsert a partner; returns (applied, its status before)."""
    before = (
        await session.execute(
            select(partners.c.status, partners.c.version).where(
                partners.c.id == UUID(str(data["id"]))
            )
        )
    ).one_or_none()
    if before is not None and before.version >= int(data["version"]):
        return False, before.status
    values = {
        "id": UUID(str(data["id"])),
        "name": data["name"],
        "acronym": data.get("acronym") or "",
        "contact_email": data.get("contact_email"),
        "contact_phone": data.get("contact_phone"),
        "status": data["status"],
        "version": int(data["version"]),
    }
    await session.execute(
        insert(partners).values(**values).on_conflict_do_update(index_elements=["id"], set_=values)
    )
    return True, before.status if before else None


async def apply_service(session: AsyncSession, data: Mapping[str, Any]) -> bool:
    values = {
        "id": UUID(str(data["id"])),
        "partner_id": UUID(str(data["partner_id"])),
        "service_type": data["service_type"],
        "areas": list(data["areas"]),
        "eligibility": data.get("eligibility") or {},
        "capacity": data.get("capacity"),
        "response_hours": int(data["response_hours"]),
        "priority": int(data["priority"]),
        "status": data["status"],
        "version": int(data["version"]),
    }
    result = await session.execute(
        insert(services)
        .values(**values)
        .on_conflict_do_update(
            index_elements=["id"], set_=values, where=services.c.version < values["version"]
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def apply_case(session: AsyncSession, data: Mapping[str, Any]) -> bool:
    """Upsert a case and its plan; a step's resolution is only ever set, never undone."""
    return UUID(str(data["id"])) in await apply_cases(session, [data])


async def apply_cases(session: AsyncSession, snapshots: Sequence[Mapping[str, Any]]) -> set[UUID]:
    """Upsert cases and their plans from snapshots in log order, in two statements; returns
    the cases changed. Per case the newest snapshot wins, as if each had been applied in turn
    (an older one never overwrites a newer copy), and a step resolved by any of them stays
    resolved: a step's resolution is only ever set, never undone."""
    latest: dict[UUID, Mapping[str, Any]] = {}
    resolved: dict[UUID, str] = {}
    for data in snapshots:
        case_id = UUID(str(data["id"]))
        if case_id not in latest or int(data["version"]) > int(latest[case_id]["version"]):
            latest[case_id] = data
        for step in data.get("plan") or []:
            if step.get("status") in ("completed", "cancelled"):
                resolved.setdefault(UUID(str(step["id"])), step["status"])
    if not latest:
        return set()
    rows = [_case_row(case_id, data) for case_id, data in latest.items()]
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
    plan_rows = [
        {
            "id": UUID(str(step["id"])),
            "case_id": case_id,
            "key": step["key"],
            "position": position,
            "service_type": step["service_type"],
            "priority": step["priority"],
            "delivery": step["delivery"],
            "depends_on": list(step.get("depends_on") or []),
            "notes": step.get("notes") or "",
            "resolution": resolved.get(UUID(str(step["id"]))),
        }
        for case_id in sorted(changed, key=str)
        for position, step in enumerate(latest[case_id].get("plan") or [], start=1)
    ]
    # In chunks: a statement takes at most 32,767 parameters, and a plan has no fixed size.
    for start in range(0, len(plan_rows), ROWS_PER_STATEMENT):
        chunk = plan_rows[start : start + ROWS_PER_STATEMENT]
        statement = insert(steps).values(chunk)
        updates: dict[str, Any] = {
            name: statement.excluded[name] for name in chunk[0] if name not in ("id", "resolution")
        }
        updates["resolution"] = func.coalesce(steps.c.resolution, statement.excluded.resolution)
        await session.execute(statement.on_conflict_do_update(index_elements=["id"], set_=updates))
    return changed


def _case_row(case_id: UUID, data: Mapping[str, Any]) -> dict[str, Any]:
    person = data.get("beneficiary") or {}
    return {
        "id": case_id,
        "reference": data["reference"],
        "owner_partner_id": UUID(str(data["owner_partner_id"])),
        "status": data["status"],
        "closure_reason": data.get("closure_reason"),
        "consent_granted": (data.get("consent") or {}).get("referral") == "granted",
        "beneficiary": {k: person.get(k) for k in BENEFICIARY_FIELDS},
        "return_area_code": (data.get("return") or {})["area_code"],
        "vulnerabilities": list(data.get("vulnerabilities") or []),
        "version": int(data["version"]),
    }


async def resolve_step(session: AsyncSession, *, step_id: UUID, resolution: str) -> None:
    await session.execute(
        update(steps)
        .where(steps.c.id == step_id, steps.c.resolution.is_(None))
        .values(resolution=resolution)
    )


async def apply(session: AsyncSession, event: Event) -> bool:
    """Apply one event to the projections; True when it changed them."""
    if event.type.startswith("partner."):
        applied, _ = await apply_partner(session, event.data)
        return applied
    if event.type.startswith("service."):
        return await apply_service(session, event.data)
    if event.type.startswith("case.") and event.type != "case.pathway_completed":
        return await apply_case(session, event.data)
    return False


async def rebuild(session: AsyncSession, *, batch_size: int = 1000) -> int:
    """Empty the projections and build them again from the whole log. No routing happens:
    the router keeps its own checkpoint. Returns the number of events read."""
    await session.execute(delete(steps))
    await session.execute(delete(cases))
    await session.execute(delete(services))
    await session.execute(delete(partners))
    position, count = (0, 0), 0
    while True:
        batch = await read_after(session, tx=position[0], seq=position[1], limit=batch_size)
        if not batch:
            return count
        for event in batch:
            await apply(session, event)
        count += len(batch)
        position = (batch[-1].tx, batch[-1].seq)
