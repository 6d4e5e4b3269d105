"""Referrals and their history: reads, pages, creation and transitions.

Every change writes the referral, its history line and its event in one transaction.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Boolean, String, Text, bindparam, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.dialects.postgresql import UUID as PG_UUID

from services.referrals.resources import NewReferral, event_draft, minimised_view
from services.referrals.store import insert_rows
from services.referrals.tables import cases, partners, referral_history, referrals, services, steps
from shared.db import Connection, Statement
from shared.eventlog.append import append, append_many
from shared.eventlog.model import Event
from shared.pagination import keyset, keyset_params, keyset_shape, page_of, parse_time
from shared.referral_statuses import MINIMISED_CASE_STATUSES, in_lifecycle_order

_IDS = bindparam("ids", type_=ARRAY(PG_UUID(as_uuid=True)))

_REFERRAL = Statement(select(referrals).where(referrals.c.id == bindparam("referral_id")))
_REFERRAL_FOR_UPDATE = Statement(
    select(referrals).where(referrals.c.id == bindparam("referral_id")).with_for_update()
)
_CASE_OF_REFERRAL = Statement(
    select(referrals.c.case_id).where(referrals.c.id == bindparam("referral_id"))
)
_LOCK_CASE = Statement(
    select(cases.c.id).where(cases.c.id == bindparam("case_id")).with_for_update()
)


async def load_referral(
    conn: Connection, *, referral_id: UUID, for_update: bool = False
) -> dict[str, Any] | None:
    statement = _REFERRAL_FOR_UPDATE if for_update else _REFERRAL
    row = await statement.fetchrow(conn, referral_id=referral_id)
    return dict(row) if row else None


async def lock_for_change(conn: Connection, *, referral_id: UUID) -> dict[str, Any] | None:
    """Lock a referral for a change, after its case: the reconciler works on a case holding
    the case's lock, so a change waits for a reconciliation under way (and the next one
    sees it) rather than slipping between the reconciler's reads. One lock order everywhere:
    case, then referral."""
    case_id = await _CASE_OF_REFERRAL.fetchval(conn, referral_id=referral_id)
    if case_id is None:
        return None
    await _LOCK_CASE.execute(conn, case_id=case_id)
    return await load_referral(conn, referral_id=referral_id, for_update=True)


_HISTORY = Statement(
    select(referral_history)
    .where(referral_history.c.referral_id == func.any(_IDS))
    .order_by(referral_history.c.id)
)


async def history_of(conn: Connection, *, referral_ids: Sequence[UUID]) -> dict[UUID, list[dict]]:
    result: dict[UUID, list[dict]] = {rid: [] for rid in referral_ids}
    if not referral_ids:
        return result
    for row in await _HISTORY.fetch(conn, ids=list(referral_ids)):
        result[row["referral_id"]].append(
            {"status": row["status"], "at": row["at"], "actor": row["actor"], "note": row["note"]}
        )
    return result


_CASE = Statement(select(cases).where(cases.c.id == bindparam("case_id")))
# The assignee's steps of the case whose referral shows the case, by position.
_ASSIGNEE_STEPS = Statement(
    select(steps, referrals.c.status.label("referral_status"))
    .join(referrals, referrals.c.step_id == steps.c.id)
    .where(
        referrals.c.case_id == bindparam("case_id"),
        referrals.c.assignee_partner_id == bindparam("assignee_partner_id"),
        referrals.c.status
        == func.any(literal(list(in_lifecycle_order(MINIMISED_CASE_STATUSES)), ARRAY(String))),
    )
    .order_by(steps.c.position)
)
_ELIGIBILITY = Statement(
    select(services.c.eligibility).where(services.c.id == bindparam("service_id"))
)
_PARTNER = Statement(select(partners).where(partners.c.id == bindparam("partner_id")))


async def minimised_for_referral(
    conn: Connection, *, referral: Mapping[str, Any]
) -> dict[str, Any]:
    """The minimised case the referral's assignee may see now (SPEC 6)."""
    case = await _CASE.fetchrow(conn, case_id=referral["case_id"])
    if case is None:
        return {"reference": referral["case_reference"]}
    live_steps: list[Mapping[str, Any]] = []
    named: list[str] = []
    shown = referral["status"] in MINIMISED_CASE_STATUSES
    if referral["assignee_partner_id"] is not None and shown:
        rows = await _ASSIGNEE_STEPS.fetch(
            conn,
            case_id=referral["case_id"],
            assignee_partner_id=referral["assignee_partner_id"],
        )
        live_steps = [dict(r) for r in rows]
        if referral["service_id"] is not None:
            eligibility = await _ELIGIBILITY.fetchval(conn, service_id=referral["service_id"])
            named = list((eligibility or {}).get("vulnerabilities_any") or [])
    owner = await _PARTNER.fetchrow(conn, partner_id=case["owner_partner_id"])
    return minimised_view(
        dict(case),
        referral=referral,
        assignee_steps=live_steps,
        named=named,
        owner=dict(owner) if owner else None,
    )


async def emit(
    conn: Connection,
    *,
    type: str,
    row: Mapping[str, Any],
    actor: str,
    cause: Event | None = None,
    correlation_id: str | None = None,
) -> Event:
    """Append the referral's event, reading its history and minimised case as they are now."""
    history = (await history_of(conn, referral_ids=[row["id"]]))[row["id"]]
    case = await minimised_for_referral(conn, referral=row)
    draft = event_draft(
        type=type,
        row=row,
        actor=actor,
        history=history,
        case=case,
        cause=cause,
        correlation_id=correlation_id,
    )
    return await append(conn, **draft)


_ADD_HISTORY = Statement(
    insert(referral_history).values(
        referral_id=bindparam("referral_id"),
        status=bindparam("status"),
        actor=bindparam("actor"),
        note=bindparam("note"),
    )
)


async def add_history(
    conn: Connection, *, referral_id: UUID, status: str, actor: str, note: str = ""
) -> None:
    await _ADD_HISTORY.execute(conn, referral_id=referral_id, status=status, actor=actor, note=note)


# A new referral's row sets every column but those the database fills (version, times).
_CREATE_REFERRALS = Statement(
    insert_rows(referrals, [c for c in referrals.c if c.server_default is None]).returning(
        *referrals.c
    )
)
_FIRST_LINES = Statement(
    insert_rows(
        referral_history,
        [referral_history.c[name] for name in ("referral_id", "status", "actor", "note")],
    ).returning(
        referral_history.c.referral_id,
        referral_history.c.status,
        referral_history.c.at,
        referral_history.c.actor,
        referral_history.c.note,
    )
)


async def create_referrals(
    conn: Connection, *, drafts: Sequence[NewReferral]
) -> tuple[list[dict[str, Any]], int | None]:
    """Write new referrals with their first history line and their `referral.created`
    events: three statements whatever their number. Returns the rows as stored, in the
    drafts' order, and the transaction id their events carry (None when there were none)."""
    if not drafts:
        return [], None
    stored = {
        r["id"]: dict(r)
        for r in await _CREATE_REFERRALS.fetch(conn, rows=[d.values for d in drafts])
    }
    rows = [stored[d.values["id"]] for d in drafts]
    written = await _FIRST_LINES.fetch(
        conn,
        rows=[
            {"referral_id": row["id"], "status": row["status"], "actor": "system", "note": d.note}
            for row, d in zip(rows, drafts, strict=True)
        ],
    )
    lines = {
        line["referral_id"]: {name: line[name] for name in ("status", "at", "actor", "note")}
        for line in written
    }
    events = await append_many(
        conn,
        [
            event_draft(
                type="referral.created",
                row=row,
                actor="system",
                history=[lines[row["id"]]],
                case=d.case,
                cause=d.cause,
            )
            for row, d in zip(rows, drafts, strict=True)
        ],
    )
    return rows, events[0].tx


# A transition's own columns; `outcome` is kept unless one is given.
_SET_STATUS = Statement(
    update(referrals)
    .where(referrals.c.id == bindparam("referral_id"))
    .values(
        status=bindparam("status"),
        status_reason=bindparam("reason"),
        outcome=func.coalesce(bindparam("outcome", type_=Text), referrals.c.outcome),
        version=referrals.c.version + 1,
        updated_at=func.now(),
    )
    .returning(*referrals.c)
)


async def set_status(
    conn: Connection,
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
    if extra:
        # Other columns too (an admin's assignment): the statement is built for the call.
        values: dict[str, Any] = {"status": status, "status_reason": reason, **extra}
        if outcome is not None:
            values["outcome"] = outcome
        statement = Statement(
            update(referrals)
            .where(referrals.c.id == referral["id"])
            .values(**values, version=referrals.c.version + 1, updated_at=func.now())
            .returning(*referrals.c)
        )
        stored = await statement.fetchrow(conn)
    else:
        stored = await _SET_STATUS.fetchrow(
            conn, referral_id=referral["id"], status=status, reason=reason, outcome=outcome
        )
    if stored is None:
        raise LookupError(f"no referral {referral['id']}")
    row = dict(stored)
    await add_history(
        conn, referral_id=row["id"], status=status, actor=actor, note=note or (reason or "")
    )
    await emit(conn, type=event_type, row=row, actor=actor, cause=cause)
    return row


_REFERRALS_OF_CASES = Statement(
    select(referrals)
    .where(referrals.c.case_id == func.any(_IDS))
    .order_by(referrals.c.created_at, referrals.c.id)
    .with_for_update()
)


async def referrals_of_cases(conn: Connection, *, case_ids: Sequence[UUID]) -> list[dict[str, Any]]:
    """Every referral of these cases, oldest first, locked (the caller holds the cases' locks)."""
    return [dict(r) for r in await _REFERRALS_OF_CASES.fetch(conn, ids=list(case_ids))]


_COMPARE = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


@functools.lru_cache(maxsize=256)
def _page_statement(
    admin: bool,
    equal: tuple[tuple[str, bool], ...],
    any_of: tuple[str, ...],
    bounds: tuple[str, ...],
    since: bool,
    after: bool,
) -> Statement:
    """The page statement of one shape of filters, compiled once: the values are its
    parameters (`viewer`, `eq_<column>`, `any_<column>`, `bound_<n>`, `since`, the cursor's)."""
    query = select(referrals)
    if not admin:
        viewer = bindparam("viewer", type_=PG_UUID(as_uuid=True))
        query = query.where(
            or_(referrals.c.assignee_partner_id == viewer, referrals.c.owner_partner_id == viewer)
        )
    for name, is_null in equal:
        column = referrals.c[name]
        query = query.where(
            column.is_(None) if is_null else column == bindparam(f"eq_{name}", type_=column.type)
        )
    for name in any_of:
        column = referrals.c[name]
        values = bindparam(f"any_{name}", type_=ARRAY(column.type))
        query = query.where(column == func.any(values))
    for n, comparison in enumerate(bounds):
        moment = bindparam(f"bound_{n}", type_=referrals.c.updated_at.type)
        query = query.where(_COMPARE[comparison](referrals.c.updated_at, moment))
    if since:
        query = query.where(
            referrals.c.updated_at >= bindparam("since", type_=referrals.c.updated_at.type)
        )
    return Statement(
        keyset_shape(query, order_by=[referrals.c.updated_at, referrals.c.id], after=after)
    )


async def page(
    conn: Connection,
    *,
    viewer_is_admin: bool,
    viewer_partner_id: UUID | None,
    equal: Sequence[tuple[str, Any]] = (),
    any_of: Sequence[tuple[str, Sequence[Any]]] = (),
    updated_from: datetime | None = None,
    updated_bounds: Sequence[tuple[str, datetime]] = (),
    cursor: str | None,
    limit: int,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of referrals by change time: an admin's among all, a partner's among those it
    is the assignee or the owner of; each (column, value) of `equal` must match (a None
    value matches NULL), each (column, values) of `any_of` match one of its values, and
    `updated_at` stand in each (operator, time) of `updated_bounds` (`>`, `>=`, `<`, `<=`).
    Each shape of filters is compiled once; the values go as parameters."""
    params = keyset_params(cursor, limit=limit, parse=[parse_time, UUID])
    statement = _page_statement(
        viewer_is_admin,
        tuple((name, value is None) for name, value in equal),
        tuple(name for name, _ in any_of),
        tuple(comparison for comparison, _ in updated_bounds),
        updated_from is not None,
        cursor is not None,
    )
    params.update({f"eq_{name}": value for name, value in equal if value is not None})
    params.update({f"any_{name}": list(values) for name, values in any_of})
    params.update({f"bound_{n}": moment for n, (_, moment) in enumerate(updated_bounds)})
    if updated_from is not None:
        params["since"] = updated_from
    if not viewer_is_admin:
        params["viewer"] = viewer_partner_id
    rows = [dict(r) for r in await statement.fetch(conn, **params)]
    return page_of(rows, limit=limit, key=lambda r: (r["updated_at"].isoformat(), r["id"]))


async def unassigned_page(
    conn: Connection, *, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the unassigned referrals, oldest first (compiled per call: the cursor's
    condition comes and goes)."""
    query = keyset(
        select(referrals).where(referrals.c.status == "unassigned"),
        order_by=[referrals.c.created_at, referrals.c.id],
        cursor=cursor,
        limit=limit,
        parse=[parse_time, UUID],
    )
    rows = [dict(r) for r in await Statement(query).fetch(conn)]
    return page_of(rows, limit=limit, key=lambda r: (r["created_at"].isoformat(), r["id"]))


_REFERRALS_OF_CASE = Statement(
    select(referrals)
    .where(referrals.c.case_id == bindparam("case_id"))
    .order_by(referrals.c.attempt, referrals.c.created_at)
)
_REFERRALS_OF_STEP = Statement(
    select(referrals.c.status, referrals.c.assignee_partner_id, referrals.c.attempt).where(
        referrals.c.step_id == bindparam("step_id")
    )
)
_LATEST_OF_STEP = Statement(
    select(referrals)
    .where(
        referrals.c.step_id == bindparam("step_id"),
        or_(
            bindparam("admin", type_=Boolean),
            referrals.c.assignee_partner_id == bindparam("partner_id", type_=PG_UUID(as_uuid=True)),
            referrals.c.owner_partner_id == bindparam("partner_id", type_=PG_UUID(as_uuid=True)),
        ),
    )
    .order_by(referrals.c.attempt.desc(), referrals.c.created_at.desc())
    .limit(1)
)
_REQUESTED_OF_PARTNER = Statement(
    select(referrals.c.id, referrals.c.case_id)
    .where(
        referrals.c.assignee_partner_id == bindparam("partner_id"),
        referrals.c.status == "requested",
    )
    .order_by(referrals.c.case_id, referrals.c.id)
)
_LOCK_OVERDUE = Statement(
    select(referrals)
    .where(referrals.c.status == "requested", referrals.c.deadline_at <= func.now())
    .order_by(referrals.c.deadline_at)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)


async def referrals_of_case(conn: Connection, *, case_id: UUID) -> list[dict[str, Any]]:
    """Every referral of the case, by attempt then creation."""
    return [dict(r) for r in await _REFERRALS_OF_CASE.fetch(conn, case_id=case_id)]


async def latest_visible_of_step(
    conn: Connection, *, step_id: UUID, viewer_is_admin: bool, viewer_partner_id: UUID | None
) -> dict[str, Any] | None:
    """The latest referral of a step that the viewer may see (an earlier assignee sees its
    own, not who took the step over)."""
    row = await _LATEST_OF_STEP.fetchrow(
        conn, step_id=step_id, admin=viewer_is_admin, partner_id=viewer_partner_id
    )
    return dict(row) if row else None


async def referrals_of_step(conn: Connection, *, step_id: UUID) -> list[dict[str, Any]]:
    """The step's referrals so far (their status, assignee and attempt)."""
    return [dict(r) for r in await _REFERRALS_OF_STEP.fetch(conn, step_id=step_id)]


async def requested_of_partner(conn: Connection, *, partner_id: UUID) -> list[tuple[UUID, UUID]]:
    """(referral id, case id) of the partner's referrals still `requested`, by case."""
    rows = await _REQUESTED_OF_PARTNER.fetch(conn, partner_id=partner_id)
    return [(r["id"], r["case_id"]) for r in rows]


async def lock_overdue(conn: Connection, *, limit: int) -> list[dict[str, Any]]:
    """Referrals still `requested` past their deadline, oldest deadline first, locked; those
    another transaction holds are skipped."""
    return [dict(r) for r in await _LOCK_OVERDUE.fetch(conn, limit=limit)]
