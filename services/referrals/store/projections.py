"""The referrals service's copies of partners, services, cases and steps (built from events),
and the areas a case is routed in.

An upsert never replaces a copy with an older version; a step's resolution is only ever set,
never undone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import Boolean, Table, bindparam, case, cast, delete, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY, Insert, insert
from sqlalchemy.dialects.postgresql import UUID as PG_UUID

from services.referrals.resources import SOURCE
from services.referrals.store import insert_rows
from services.referrals.tables import cases, partners, services, steps
from shared.db import Connection, Statement
from shared.eventlog.append import append
from shared.eventlog.model import Event
from shared.tables import areas, events

_IDS = bindparam("ids", type_=ARRAY(PG_UUID(as_uuid=True)))


def _insert_one(table: Table) -> Insert:
    """`INSERT` of one row of every column of the table, parameters named as the columns."""
    return insert(table).values({c.name: bindparam(c.name) for c in table.c})


_PARTNER_STATE = Statement(
    select(partners.c.status, partners.c.version).where(partners.c.id == bindparam("partner_id"))
)
_partner = _insert_one(partners)
_UPSERT_PARTNER = Statement(
    _partner.on_conflict_do_update(
        index_elements=["id"],
        set_={c.name: _partner.excluded[c.name] for c in partners.c if c.name != "id"},
    )
)
_service = _insert_one(services)
_UPSERT_SERVICE = Statement(
    _service.on_conflict_do_update(
        index_elements=["id"],
        set_={c.name: _service.excluded[c.name] for c in services.c if c.name != "id"},
        where=services.c.version < _service.excluded.version,
    )
)
# What a case's snapshot sets: every column but the pathway's completion, the reconciler's own.
_CASE_COLUMNS = [c for c in cases.c if not c.name.startswith("pathway_completed")]
_cases = insert_rows(cases, _CASE_COLUMNS)
_UPSERT_CASES = Statement(
    _cases.on_conflict_do_update(
        index_elements=["id"],
        set_={c.name: _cases.excluded[c.name] for c in _CASE_COLUMNS if c.name != "id"},
        where=cases.c.version < _cases.excluded.version,
    ).returning(cases.c.id)
)
_steps = insert_rows(steps, list(steps.c))
_UPSERT_STEPS = Statement(
    _steps.on_conflict_do_update(
        index_elements=["id"],
        set_={
            **{c.name: _steps.excluded[c.name] for c in steps.c if c.name != "id"},
            "resolution": func.coalesce(steps.c.resolution, _steps.excluded.resolution),
        },
    )
)
_RESOLVE_STEP = Statement(
    update(steps)
    .where(steps.c.id == bindparam("step_id"), steps.c.resolution.is_(None))
    .values(resolution=bindparam("resolution"))
)
_CLEAR = [Statement(delete(table)) for table in (steps, cases, services, partners)]


async def partner_state(conn: Connection, *, partner_id: UUID) -> tuple[str, int] | None:
    """(status, version) of the partner's copy, if any."""
    row = await _PARTNER_STATE.fetchrow(conn, partner_id=partner_id)
    return (row["status"], row["version"]) if row is not None else None


async def upsert_partner(conn: Connection, *, values: Mapping[str, Any]) -> None:
    """Write the partner's copy (every column)."""
    await _UPSERT_PARTNER.execute(conn, **values)


async def upsert_service(conn: Connection, *, values: Mapping[str, Any]) -> bool:
    """Write the service's copy (every column) unless a newer version is there; True when
    written."""
    return bool(await _UPSERT_SERVICE.execute(conn, **values))


async def upsert_cases(conn: Connection, *, rows: Sequence[Mapping[str, Any]]) -> set[UUID]:
    """Write the cases' copies (every column but `pathway_completed`) where the version is
    newer, in one statement; returns the ids written."""
    if not rows:
        return set()
    return {r["id"] for r in await _UPSERT_CASES.fetch(conn, rows=list(rows))}


async def upsert_steps(conn: Connection, *, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write plan steps (every column), in one statement; a resolution already set stays."""
    if rows:
        await _UPSERT_STEPS.execute(conn, rows=list(rows))


async def resolve_step(conn: Connection, *, step_id: UUID, resolution: str) -> None:
    """Set the step's resolution unless it has one."""
    await _RESOLVE_STEP.execute(conn, step_id=step_id, resolution=resolution)


async def clear(conn: Connection) -> None:
    """Empty every copy (before a rebuild from the log)."""
    for statement in _CLEAR:
        await statement.execute(conn)


_CASE = Statement(select(cases).where(cases.c.id == bindparam("case_id")))
_LOCK_CASES = Statement(
    select(cases).where(cases.c.id == func.any(_IDS)).order_by(cases.c.id).with_for_update()
)
_STEPS_OF_CASES = Statement(
    select(steps).where(steps.c.case_id == func.any(_IDS)).order_by(steps.c.position)
)
_STEP = Statement(
    select(steps).where(steps.c.id == bindparam("step_id"), steps.c.case_id == bindparam("case_id"))
)
# The flag, and the time when it completes (a pathway opened again by a new step keeps the
# time it last completed).
_SET_PATHWAY_COMPLETED = Statement(
    update(cases)
    .where(cases.c.id == bindparam("case_id"))
    .values(
        pathway_completed=bindparam("completed", type_=Boolean),
        pathway_completed_at=case(
            (bindparam("completed", type_=Boolean), func.now()),
            else_=cases.c.pathway_completed_at,
        ),
    )
)
# After a rebuild from the log: each case's last `case.pathway_completed` (the reconciler
# emits it when the case's last step resolves).
_completions = (
    select(
        cast(events.c.data["case_id"].astext, PG_UUID(as_uuid=True)).label("case_id"),
        events.c.time,
    )
    .where(events.c.type == "case.pathway_completed")
    .subquery("completions")
)
_last_completion = (
    select(_completions.c.case_id, func.max(_completions.c.time).label("at"))
    .group_by(_completions.c.case_id)
    .subquery("last_completion")
)
_RESTORE_COMPLETIONS = Statement(
    update(cases)
    .where(cases.c.id == _last_completion.c.case_id)
    .values(pathway_completed=True, pathway_completed_at=_last_completion.c.at)
)
# A step's resolution that came from its referral and not from a case event (the assignee
# completed it; the owner or an admin cancelled the referral): the referrals hold it.
_RESTORE_REFERRAL_RESOLUTIONS = Statement(
    """
    UPDATE referrals.steps AS s
    SET resolution = CASE WHEN r.completed THEN 'completed' ELSE 'cancelled' END
    FROM (
        SELECT r.step_id,
               bool_or(r.status = 'completed') AS completed,
               bool_or(r.status = 'cancelled' AND h.actor IS NOT NULL) AS cancelled
        FROM referrals.referrals AS r
        LEFT JOIN referrals.referral_history AS h
          ON h.referral_id = r.id AND h.status = 'cancelled' AND h.actor <> 'system'
        WHERE r.status IN ('completed', 'cancelled')
        GROUP BY r.step_id
    ) AS r
    WHERE s.id = r.step_id AND s.resolution IS NULL AND (r.completed OR r.cancelled)
    """
)
_PARTNER = Statement(select(partners).where(partners.c.id == bindparam("partner_id")))
_SERVICE = Statement(select(services).where(services.c.id == bindparam("service_id")))
# The area's path holds its ancestors' codes and its own: their depths, in one statement.
_target = areas.alias("target")
_AREA_DEPTHS = Statement(
    select(areas.c.code, areas.c.depth)
    .join_from(_target, areas, areas.c.code == func.any(_target.c.path))
    .where(_target.c.code == bindparam("area_code"))
)


async def get_case(conn: Connection, *, case_id: UUID) -> dict[str, Any] | None:
    row = await _CASE.fetchrow(conn, case_id=case_id)
    return dict(row) if row else None


async def lock_cases(conn: Connection, *, case_ids: Sequence[UUID]) -> dict[UUID, dict]:
    """The cases' copies, locked in id order (the one lock order: case, then referral)."""
    rows = await _LOCK_CASES.fetch(conn, ids=list(case_ids))
    return {row["id"]: dict(row) for row in rows}


async def steps_of_cases(
    conn: Connection, *, case_ids: Sequence[UUID]
) -> dict[UUID, list[dict[str, Any]]]:
    """Each case's plan steps, by position."""
    plans: dict[UUID, list[dict[str, Any]]] = {case_id: [] for case_id in case_ids}
    for row in await _STEPS_OF_CASES.fetch(conn, ids=list(case_ids)):
        plans.setdefault(row["case_id"], []).append(dict(row))
    return plans


async def get_step(conn: Connection, *, case_id: UUID, step_id: UUID) -> dict | None:
    row = await _STEP.fetchrow(conn, step_id=step_id, case_id=case_id)
    return dict(row) if row else None


async def set_pathway_completed(conn: Connection, *, case_id: UUID, completed: bool) -> None:
    """Mark the case's pathway completed now, or open again (it keeps the time it last
    completed)."""
    await _SET_PATHWAY_COMPLETED.execute(conn, case_id=case_id, completed=completed)


async def restore_pathway_completions(conn: Connection) -> None:
    """Set each case's pathway completion from its last `case.pathway_completed` in the log,
    after the cases were rebuilt from it."""
    await _RESTORE_COMPLETIONS.execute(conn)


async def restore_referral_resolutions(conn: Connection) -> None:
    """Set the resolutions the case events do not tell, after the steps were rebuilt from
    them: a step whose referral was completed is completed; one whose referral the owner or
    an admin cancelled (not the hub itself, as when a case closes) is cancelled."""
    await _RESTORE_REFERRAL_RESOLUTIONS.execute(conn)


async def get_partner(conn: Connection, *, partner_id: UUID) -> dict[str, Any] | None:
    row = await _PARTNER.fetchrow(conn, partner_id=partner_id)
    return dict(row) if row else None


async def get_service(conn: Connection, *, service_id: UUID) -> dict[str, Any] | None:
    row = await _SERVICE.fetchrow(conn, service_id=service_id)
    return dict(row) if row else None


async def area_depths(conn: Connection, *, area_code: str) -> dict[str, int]:
    """The area and each of its ancestors → depth (empty for an unknown area)."""
    rows = await _AREA_DEPTHS.fetch(conn, area_code=area_code)
    return {row["code"]: row["depth"] for row in rows}


async def append_pathway_completed(
    conn: Connection,
    *,
    case: Mapping[str, Any],
    steps: Sequence[Mapping[str, Any]],
    cause: Event | None,
) -> None:
    """Emit `case.pathway_completed` with every step's final status, for the case's owner."""
    await append(
        conn,
        type="case.pathway_completed",
        source=SOURCE,
        subject=f"cases/{case['id']}",
        data={"case_id": case["id"], "case_reference": case["reference"], "steps": list(steps)},
        actor="system",
        audience=[case["owner_partner_id"]],
        causation_id=cause.id if cause else None,
        correlation_id=(cause.correlation_id or str(cause.id)) if cause else None,
    )
