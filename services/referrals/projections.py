"""The referrals service's own copies of partners, services and cases, built from events.

Each event carries the resource's full snapshot and its `version`; an update whose version
is not newer than the copy is discarded, so replays and reordering are harmless. The copies
can be rebuilt from the log from scratch (`rebuild`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.referrals.tables import cases, partners, services, steps
from shared.eventlog.consumer import read_after
from shared.eventlog.model import Event

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
    case_id = UUID(str(data["id"]))
    person = data.get("beneficiary") or {}
    values = {
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
    result = await session.execute(
        insert(cases)
        .values(**values)
        .on_conflict_do_update(
            index_elements=["id"], set_=values, where=cases.c.version < values["version"]
        )
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    rows = [
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
            "resolution": (
                step["status"] if step.get("status") in ("completed", "cancelled") else None
            ),
        }
        for position, step in enumerate(data.get("plan") or [], start=1)
    ]
    if rows:
        statement = insert(steps).values(rows)
        updates: dict[str, Any] = {
            name: statement.excluded[name] for name in rows[0] if name not in ("id", "resolution")
        }
        # A resolution is only ever set, never undone.
        updates["resolution"] = func.coalesce(steps.c.resolution, statement.excluded.resolution)
        await session.execute(statement.on_conflict_do_update(index_elements=["id"], set_=updates))
    return True


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
