"""The router: consumes the log, keeps the projections, and routes each case's next
interventions (SPEC 5). One batch of events is one transaction with the checkpoint.

For every case an event touches, `reconcile` brings its referrals in line with the case:
- a closed case, or one without consent, has no live referral (they are cancelled with
  `case_closed`, `case_merged` or `consent_withdrawn`) and nothing is routed;
- a cancelled step has no live referral (`step_cancelled`);
- every next intervention with `delivery: referral` gets a referral: requested to the best
  candidate, or unassigned when there is none or after the fourth routed attempt;
- when every step is completed or cancelled on an open case, `case.pathway_completed`.
At most one live referral per step exists (a unique index), whoever runs at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import date
from typing import Any
from uuid import UUID

import structlog
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.referrals import projections, store
from services.referrals.routing import (
    MAX_ROUTED_ATTEMPTS,
    Decision,
    Person,
    RoutingRequest,
    ServiceOption,
    decide,
)
from services.referrals.tables import (
    cases,
    partners,
    referrals,
    service_load_changes,
    service_loads,
    services,
    steps,
)
from shared.eventlog.append import append
from shared.eventlog.model import Event
from shared.referral_statuses import (
    EXCLUDING_STATUSES,
    LOAD_COUNTED_STATUSES,
    MINIMISED_CASE_STATUSES,
    OPEN_STATUSES,
    in_lifecycle_order,
)
from shared.tables import areas

log = structlog.get_logger("relais.referrals.router")

CONSUMER_NAME = "referrals.router"
RECONCILING_REFERRAL_EVENTS = frozenset(
    {
        "referral.rejected",
        "referral.expired",
        "referral.failed",
        "referral.completed",
        "referral.cancelled",
    }
)


async def handle(session: AsyncSession, events: Sequence[Event]) -> None:
    """The consumer's handler: projections first, then the touched cases reconciled together."""
    touched: dict[UUID, Event] = {}
    snapshots: list[Mapping[str, Any]] = []
    for event in events:
        if event.type.startswith("partner."):
            applied, before = await projections.apply_partner(session, event.data)
            if applied and before == "active" and event.data.get("status") == "inactive":
                for case_id in await release_partner(
                    session, partner_id=UUID(str(event.data["id"])), cause=event
                ):
                    touched[case_id] = event
        elif event.type.startswith("service."):
            await projections.apply_service(session, event.data)
        elif event.type.startswith("case.") and event.type != "case.pathway_completed":
            snapshots.append(event.data)
            touched[UUID(str(event.data["id"]))] = event
        elif event.type in RECONCILING_REFERRAL_EVENTS:
            touched[UUID(str(event.data["case_id"]))] = event
    await projections.apply_cases(session, snapshots)
    await reconcile(session, touched)


async def release_partner(session: AsyncSession, *, partner_id: UUID, cause: Event) -> list[UUID]:
    """A deactivated partner's referrals still `requested` are cancelled, to be routed again."""
    found = (
        await session.execute(
            select(referrals.c.id, referrals.c.case_id)
            .where(referrals.c.assignee_partner_id == partner_id, referrals.c.status == "requested")
            .order_by(referrals.c.case_id, referrals.c.id)
        )
    ).all()
    case_ids = []
    for referral_id, _case_id in found:
        row = await store.lock_for_change(session, referral_id=referral_id)
        if row is None or row["status"] != "requested":
            continue
        await store.set_status(
            session,
            referral=row,
            status="cancelled",
            event_type="referral.cancelled",
            actor="system",
            reason="partner_inactive",
            cause=cause,
        )
        case_ids.append(row["case_id"])
    return case_ids


class BatchView:
    """What the router reads once per batch rather than once per referral: area depths, the
    services of a type with their partner's state and load, owner partners. Read after the
    batch's projections are applied; the loads are then kept in step with the referrals the
    batch itself creates and cancels. (A change another transaction commits meanwhile, such
    as a referral completed through the API, is seen from the next batch on: loads order the
    candidates, they never forbid one.)"""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self._depths: dict[str, dict[str, int]] = {}
        self._options: dict[str, dict[UUID, ServiceOption]] = {}
        self._partners: dict[UUID, dict[str, Any] | None] = {}

    async def area_depths(self, area_code: str) -> dict[str, int]:
        if area_code not in self._depths:
            self._depths[area_code] = await area_depths(self.session, area_code)
        return self._depths[area_code]

    async def service_options(self, service_type: str) -> list[ServiceOption]:
        if not self._options:
            await fold_load_changes(self.session)
        if service_type not in self._options:
            options = await service_options(self.session, service_type=service_type)
            self._options[service_type] = {o.id: o for o in options}
        return list(self._options[service_type].values())

    def count(self, referral: Mapping[str, Any], delta: int) -> None:
        """A referral of the batch entered (+1) or left (-1) its service's active load."""
        options = self._options.get(referral["service_type"], {})
        option = options.get(referral["service_id"])
        if option is not None:
            options[option.id] = replace(option, load=option.load + delta)

    async def partner(self, partner_id: UUID) -> dict[str, Any] | None:
        if partner_id not in self._partners:
            row = (
                (await self.session.execute(select(partners).where(partners.c.id == partner_id)))
                .mappings()
                .one_or_none()
            )
            self._partners[partner_id] = dict(row) if row else None
        return self._partners[partner_id]


async def reconcile(session: AsyncSession, touched: Mapping[UUID, Event]) -> None:
    """Bring the referrals of every touched case in line with it (its event is the cause).

    The cases are locked together, in id order, with their steps and referrals read in one
    statement each; the referrals to create are decided case by case, then written together:
    one statement for the referrals, one for their history lines, one for their events."""
    if not touched:
        return
    ids = sorted(touched, key=str)
    found = (
        await session.execute(
            select(cases).where(cases.c.id.in_(ids)).order_by(cases.c.id).with_for_update()
        )
    ).mappings()
    by_id = {row["id"]: dict(row) for row in found}
    plans: dict[UUID, list[dict[str, Any]]] = {case_id: [] for case_id in by_id}
    for row in (
        await session.execute(
            select(steps).where(steps.c.case_id.in_(list(by_id))).order_by(steps.c.position)
        )
    ).mappings():
        plans[row["case_id"]].append(dict(row))
    # Every referral of those cases, locked: the live ones may change here, the others are
    # the steps' histories (who was excluded, how many attempts).
    every: dict[UUID, list[dict[str, Any]]] = {case_id: [] for case_id in by_id}
    for row in await store.referrals_of_cases(session, case_ids=list(by_id)):
        every[row["case_id"]].append(row)

    view = BatchView(session)
    drafts: list[store.NewReferral] = []
    for case_id in ids:
        if case_id in by_id:
            drafts += await reconcile_case(
                session,
                case=by_id[case_id],
                plan=plans[case_id],
                referrals=every[case_id],
                cause=touched[case_id],
                view=view,
            )
    for referral in await store.create_referrals(session, drafts):
        log.info(
            "step_routed",
            case_id=str(referral["case_id"]),
            step_id=str(referral["step_id"]),
            referral_id=str(referral["id"]),
            status=referral["status"],
            attempt=referral["attempt"],
        )


async def reconcile_case(
    session: AsyncSession,
    *,
    case: Mapping[str, Any],
    plan: Sequence[Mapping[str, Any]],
    referrals: Sequence[Mapping[str, Any]],
    cause: Event | None,
    view: BatchView,
) -> list[store.NewReferral]:
    """Cancel what must end now; return the referrals to create for the case's next steps."""
    live = {r["step_id"]: r for r in referrals if r["status"] in OPEN_STATUSES}

    async def cancel(referral: Mapping[str, Any], reason: str) -> None:
        await store.set_status(
            session,
            referral=referral,
            status="cancelled",
            event_type="referral.cancelled",
            actor="system",
            reason=reason,
            cause=cause,
        )
        if referral["status"] in LOAD_COUNTED_STATUSES:
            view.count(referral, -1)

    if case["status"] != "open" or not case["consent_granted"]:
        reason = "consent_withdrawn"
        if case["status"] != "open":
            reason = "case_merged" if case["closure_reason"] == "merged" else "case_closed"
        for referral in live.values():
            await cancel(referral, reason)
        return []

    for step in plan:
        if step["resolution"] == "cancelled" and step["id"] in live:
            await cancel(live.pop(step["id"]), "step_cancelled")

    drafts: list[store.NewReferral] = []
    resolved = {s["key"] for s in plan if s["resolution"] is not None}
    for step in plan:
        if (
            step["resolution"] is None
            and step["delivery"] == "referral"
            and step["id"] not in live
            and all(dep in resolved for dep in step["depends_on"])
        ):
            draft = await route_step(
                case=case,
                step=step,
                cause=cause,
                view=view,
                history=[r for r in referrals if r["step_id"] == step["id"]],
                plan=plan,
                live=live,
            )
            live[step["id"]] = draft.values
            drafts.append(draft)

    if plan and len(resolved) == len(plan):
        if not case["pathway_completed"]:
            await _pathway_completed(session, case=case, plan=plan, cause=cause)
    elif case["pathway_completed"]:
        await session.execute(
            update(cases).where(cases.c.id == case["id"]).values(pathway_completed=False)
        )
    return drafts


async def _pathway_completed(
    session: AsyncSession,
    *,
    case: Mapping[str, Any],
    plan: Sequence[Mapping[str, Any]],
    cause: Event | None,
) -> None:
    await session.execute(
        update(cases).where(cases.c.id == case["id"]).values(pathway_completed=True)
    )
    await append(
        session,
        type="case.pathway_completed",
        source=store.SOURCE,
        subject=f"cases/{case['id']}",
        data={
            "case_id": case["id"],
            "case_reference": case["reference"],
            "steps": [{"id": s["id"], "key": s["key"], "status": s["resolution"]} for s in plan],
        },
        actor="system",
        audience=[case["owner_partner_id"]],
        causation_id=cause.id if cause else None,
        correlation_id=(cause.correlation_id or str(cause.id)) if cause else None,
    )


async def area_depths(session: AsyncSession, area_code: str) -> dict[str, int]:
    """The case's area and each of its ancestors → depth."""
    path = (await session.execute(select(areas.c.path).where(areas.c.code == area_code))).scalar()
    if not path:
        return {}
    rows = await session.execute(
        select(areas.c.code, areas.c.depth).where(areas.c.code.in_(list(path)))
    )
    return {code: depth for code, depth in rows.all()}


async def service_options(session: AsyncSession, *, service_type: str) -> list[ServiceOption]:
    """Every service of the type with its partner's state and its current load: the folded
    counter plus the changes not yet folded (`fold_load_changes`)."""
    pending = (
        select(func.coalesce(func.sum(service_load_changes.c.delta), 0))
        .where(service_load_changes.c.service_id == services.c.id)
        .scalar_subquery()
    )
    rows = (
        (
            await session.execute(
                select(
                    services,
                    partners.c.status.label("partner_status"),
                    (func.coalesce(service_loads.c.load, 0) + pending).label("active_load"),
                )
                .outerjoin(partners, partners.c.id == services.c.partner_id)
                .outerjoin(service_loads, service_loads.c.service_id == services.c.id)
                .where(services.c.service_type == service_type)
            )
        )
        .mappings()
        .all()
    )
    return [
        ServiceOption.from_row(
            r, partner_active=r["partner_status"] == "active", load=int(r["active_load"])
        )
        for r in rows
    ]


FOLD_LOAD_CHANGES = """
    WITH folded AS (DELETE FROM referrals.service_load_changes RETURNING service_id, delta)
    INSERT INTO referrals.service_loads AS loads (service_id, load)
    SELECT service_id, sum(delta) FROM folded GROUP BY service_id
    ON CONFLICT (service_id) DO UPDATE SET load = loads.load + EXCLUDED.load
"""
_FOLD = text(FOLD_LOAD_CHANGES)


async def recount_loads(session: AsyncSession) -> None:
    """Set the load counters from the referrals (after a restore that bypassed triggers, say)."""
    # Writers of referrals wait while the counters are rebuilt from the referrals themselves.
    await session.execute(text("LOCK TABLE referrals.referrals IN SHARE MODE"))
    await session.execute(delete(service_load_changes))
    await session.execute(delete(service_loads))
    await session.execute(
        insert(service_loads).from_select(
            ["service_id", "load"],
            select(referrals.c.service_id, func.count())
            .where(
                referrals.c.service_id.is_not(None),
                referrals.c.status.in_(in_lifecycle_order(LOAD_COUNTED_STATUSES)),
            )
            .group_by(referrals.c.service_id),
        )
    )


async def fold_load_changes(session: AsyncSession) -> None:
    """Fold the recorded load changes into the counters (the router alone does, once per
    batch; changes committed meanwhile stay for the next fold)."""
    await session.execute(_FOLD)


def person_of(case: Mapping[str, Any]) -> Person:
    person = case.get("beneficiary") or {}
    born = person.get("date_of_birth")
    return Person(
        sex=person.get("sex") or "unknown",
        date_of_birth=date.fromisoformat(born) if born else None,
        birth_year=person.get("birth_year"),
        vulnerabilities=tuple(case.get("vulnerabilities") or ()),
    )


async def routing_request(
    session: AsyncSession,
    *,
    case: Mapping[str, Any],
    service_type: str,
    priority: str,
    excluded: Mapping[UUID, str],
) -> RoutingRequest:
    return RoutingRequest(
        service_type=service_type,
        priority=priority,
        area_code=case["return_area_code"],
        area_depths=await area_depths(session, case["return_area_code"]),
        person=person_of(case),
        excluded_partners=dict(excluded),
        now=store.now_utc(),
    )


async def step_history(session: AsyncSession, *, step_id: UUID) -> tuple[int, dict[UUID, str], int]:
    """(referrals so far, partners excluded → why, routed attempts that ended in exclusion)."""
    rows = (
        (
            await session.execute(
                select(
                    referrals.c.status, referrals.c.assignee_partner_id, referrals.c.attempt
                ).where(referrals.c.step_id == step_id)
            )
        )
        .mappings()
        .all()
    )
    return summarise_history(rows)


def summarise_history(rows: Sequence[Mapping[str, Any]]) -> tuple[int, dict[UUID, str], int]:
    """A step's referrals → (how many, partners excluded → why, attempts ended in exclusion)."""
    excluded: dict[UUID, str] = {}
    failures = 0
    for r in sorted(rows, key=lambda r: r["attempt"]):
        if r["status"] in EXCLUDING_STATUSES:
            failures += 1
            if r["assignee_partner_id"]:
                excluded[r["assignee_partner_id"]] = r["status"]
    return len(rows), excluded, failures


async def route_step(
    *,
    case: Mapping[str, Any],
    step: Mapping[str, Any],
    cause: Event | None,
    view: BatchView,
    history: Sequence[Mapping[str, Any]],
    plan: Sequence[Mapping[str, Any]],
    live: Mapping[UUID, Mapping[str, Any]],
) -> store.NewReferral:
    """Decide the step's next referral: to the best candidate, or unassigned.

    `history` is the step's referrals so far; `plan` and `live` the case's steps and its
    live referrals by step, from which the event's minimised case is built: what the
    assignee may see when the referral is created."""
    count, excluded, failures = summarise_history(history)
    request = RoutingRequest(
        service_type=step["service_type"],
        priority=step["priority"],
        area_code=case["return_area_code"],
        area_depths=await view.area_depths(case["return_area_code"]),
        person=person_of(case),
        excluded_partners=excluded,
        now=store.now_utc(),
    )
    options: list[ServiceOption] = []
    if failures >= MAX_ROUTED_ATTEMPTS:
        decision = Decision(candidates=(), excluded=(), deadline_at=None)
        record = {**decision.as_record(request), "unassigned_reason": "max_attempts"}
        note = f"{failures} routed attempts ended without a taker: for the coordination"
    else:
        options = await view.service_options(step["service_type"])
        decision = decide(request, options)
        record = decision.as_record(request)
        if decision.chosen is None:
            record["unassigned_reason"] = "no_candidate"
            note = "no candidate service: for the coordination"
        else:
            note = "routed"
    chosen = decision.chosen
    values = store.referral_values(
        case=case,
        step=step,
        attempt=count + 1,
        decision=record,
        service_id=chosen.service_id if chosen else None,
        assignee_partner_id=chosen.partner_id if chosen else None,
        deadline_at=decision.deadline_at,
    )
    named: list[str] = []
    shown: list[Mapping[str, Any]] = []
    if chosen is not None:
        view.count(values, +1)
        service = next(o for o in options if o.id == chosen.service_id)
        named = list(service.vulnerabilities_any or ())
        mine = {**live, step["id"]: values}
        shown = [
            s
            for s in plan
            if s["id"] in mine
            and mine[s["id"]]["assignee_partner_id"] == chosen.partner_id
            and mine[s["id"]]["status"] in MINIMISED_CASE_STATUSES
        ]
    minimised = store.minimised_view(
        case,
        referral=values,
        assignee_steps=shown,
        named=named,
        owner=await view.partner(case["owner_partner_id"]),
    )
    return store.NewReferral(values=values, note=note, case=minimised, cause=cause)
