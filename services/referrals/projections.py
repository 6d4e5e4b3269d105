"""The referrals service's own copies of partners, services and cases, built from events,
and the indicators' rollup kept with them.

Each event carries the resource's full snapshot and its `version`; an update whose version
is not newer than the copy is discarded, so replays and reordering are harmless. The copies
can be rebuilt from the log from scratch (`rebuild`). The rows are written by
`store.projections`; the rollup's (what `GET /indicators` and `GET /gaps` count) by
`store.indicators`, from the cases and referrals as they are when their events are processed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from services.referrals.store import Connection
from services.referrals.store import indicators as indicator_store
from services.referrals.store import projections as projection_store
from shared.eventlog.consumer import read_batch
from shared.eventlog.model import Event
from shared.pathway import RESOLVED

# The `case.*` events whose data is not the Case: the log holds erased cases already erased,
# so a rebuild has nothing to do on `case.erased`.
_NOT_SNAPSHOTS = frozenset({"case.pathway_completed", "case.erased"})

BENEFICIARY_FIELDS = (
    "given_name",
    "family_name",
    "sex",
    "date_of_birth",
    "birth_year",
    "phone",
    "languages",
)


async def apply_partner(conn: Connection, data: Mapping[str, Any]) -> tuple[bool, str | None]:
    """Upsert a partner; returns (applied, its status before)."""
    partner_id = UUID(str(data["id"]))
    before = await projection_store.partner_state(conn, partner_id=partner_id)
    if before is not None and before[1] >= int(data["version"]):
        return False, before[0]
    await projection_store.upsert_partner(
        conn,
        values={
            "id": partner_id,
            "name": data["name"],
            "acronym": data.get("acronym") or "",
            "contact_email": data.get("contact_email"),
            "contact_phone": data.get("contact_phone"),
            "status": data["status"],
            "version": int(data["version"]),
        },
    )
    return True, before[0] if before else None


async def apply_service(conn: Connection, data: Mapping[str, Any]) -> bool:
    return await projection_store.upsert_service(
        conn,
        values={
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
        },
    )


async def apply_case(conn: Connection, data: Mapping[str, Any]) -> bool:
    """Upsert a case and its plan; a step's resolution is only ever set, never undone."""
    return UUID(str(data["id"])) in await apply_cases(conn, [data])


async def apply_cases(conn: Connection, snapshots: Sequence[Mapping[str, Any]]) -> set[UUID]:
    """Upsert cases and their plans from snapshots in log order, in two statements; returns
    the cases changed. Per case the newest snapshot wins, as if each had been applied in turn
    (an older one never overwrites a newer copy), and a step resolved by any of them stays
    resolved: a step's resolution is only ever set, never undone."""
    latest, resolved = fold_snapshots(snapshots)
    if not latest:
        return set()
    changed = await projection_store.upsert_cases(
        conn, rows=[case_row(case_id, data) for case_id, data in latest.items()]
    )
    await projection_store.upsert_steps(
        conn,
        rows=[
            step_row(case_id, position, step, resolved)
            for case_id in sorted(changed, key=str)
            for position, step in enumerate(latest[case_id].get("plan") or [], start=1)
        ],
    )
    return changed


def fold_snapshots(
    snapshots: Sequence[Mapping[str, Any]],
) -> tuple[dict[UUID, Mapping[str, Any]], dict[UUID, str]]:
    """Case snapshots in log order → (each case's newest snapshot, each step any of them
    resolved → its resolution, the first one seen)."""
    latest: dict[UUID, Mapping[str, Any]] = {}
    resolved: dict[UUID, str] = {}
    for data in snapshots:
        case_id = UUID(str(data["id"]))
        if case_id not in latest or int(data["version"]) > int(latest[case_id]["version"]):
            latest[case_id] = data
        for step in data.get("plan") or []:
            if step.get("status") in RESOLVED:
                resolved.setdefault(UUID(str(step["id"])), step["status"])
    return latest, resolved


def case_row(case_id: UUID, data: Mapping[str, Any]) -> dict[str, Any]:
    """The case's copy: only what routing and the minimised case need."""
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


def step_row(
    case_id: UUID, position: int, step: Mapping[str, Any], resolved: Mapping[UUID, str]
) -> dict[str, Any]:
    """A plan step's copy at its position (from 1), with its resolution if one is known."""
    step_id = UUID(str(step["id"]))
    return {
        "id": step_id,
        "case_id": case_id,
        "key": step["key"],
        "position": position,
        "service_type": step["service_type"],
        "priority": step["priority"],
        "delivery": step["delivery"],
        "depends_on": list(step.get("depends_on") or []),
        "notes": step.get("notes") or "",
        "resolution": resolved.get(step_id),
    }


async def refresh_rollup(conn: Connection, *, case_ids: Sequence[UUID]) -> None:
    """Bring the indicators' rollup in line with these cases and their referrals as they are
    now (their return area, their pathway, each referral's status and times)."""
    await indicator_store.refresh_cases(conn, case_ids=case_ids)


async def resolve_step(conn: Connection, *, step_id: UUID, resolution: str) -> None:
    """The step ends (completed or cancelled) unless it already has."""
    await projection_store.resolve_step(conn, step_id=step_id, resolution=resolution)


async def apply(conn: Connection, event: Event) -> bool:
    """Apply one event to the projections; True when it changed them."""
    if event.type.startswith("partner."):
        applied, _ = await apply_partner(conn, event.data)
        return applied
    if event.type.startswith("service."):
        return await apply_service(conn, event.data)
    if event.type.startswith("case.") and event.type not in _NOT_SNAPSHOTS:
        return await apply_case(conn, event.data)
    return False


async def rebuild(conn: Connection, *, batch_size: int = 1000) -> int:
    """Empty the projections and build them again from the whole log, each pathway's
    completion included (its last `case.pathway_completed`), and the steps' resolutions
    that came from their referrals (the referrals are not rebuilt: they hold them). No
    routing happens: the reconciler keeps its own checkpoint. Returns the number of events
    read."""
    await projection_store.clear(conn)
    position, count = (0, 0), 0
    while True:
        batch, _ = await read_batch(conn, tx=position[0], seq=position[1], limit=batch_size)
        if not batch:
            await projection_store.restore_pathway_completions(conn)
            await projection_store.restore_referral_resolutions(conn)
            return count
        for event in batch:
            await apply(conn, event)
        count += len(batch)
        position = (batch[-1].tx, batch[-1].seq)
