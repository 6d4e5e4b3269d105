"""The reconciler: consumes the log, keeps the projections and the indicators' rollup, and
routes each case's next interventions (SPEC 5). One batch of events is one transaction with
the checkpoint.

For every case an event touches, `reconcile` brings its referrals in line with the case:
- a closed case, or one without consent, has no open referral (they are cancelled with
  `case_closed`, `case_merged` or `consent_withdrawn`) and nothing is routed;
- a cancelled step has no open referral (`step_cancelled`);
- every next intervention with `delivery: referral` gets a referral: requested to the best
  candidate, or unassigned when there is none or after the fourth routed attempt;
- when every step is completed or cancelled on an open case, `case.pathway_completed`.
On `case.erased`, once the case is reconciled (it is closed), its copies here and the events
about it are erased (`store.erasure`).
At most one open referral per step exists (a unique index), whoever runs at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

import structlog

from services.referrals import projections
from services.referrals.resources import NewReferral, minimised_view, referral_values
from services.referrals.routing import Decision, ServiceOption, decide, step_history
from services.referrals.routing_inputs import RoutingInputs
from services.referrals.store import Connection
from services.referrals.store import erasure as erasure_store
from services.referrals.store import projections as projection_store
from services.referrals.store import referrals as referral_store
from shared.eventlog.model import Event
from shared.referral_statuses import (
    LOAD_COUNTED_STATUSES,
    MINIMISED_CASE_STATUSES,
    OPEN_STATUSES,
)

log = structlog.get_logger("relais.referrals.reconciler")

# The name its checkpoint is kept under in `hub.consumer_checkpoints`: never change it.
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


# The transactions of this process's recent batches that created referrals. The batch
# refreshed the rollup of those referrals' cases after creating them, so their
# `referral.created` events, read back in a later batch, need no refresh of their own (a
# refresh that would change nothing costs as much as one that does). After a restart the
# memory is empty and such an event is refreshed again: the same rows, nothing moved.
_ROLLED_UP: deque[int] = deque(maxlen=64)


def wants(event: Event) -> bool:
    """Every event but the `referral.created` of this process's own recent batches: a batch
    of only those moves the checkpoint without a transaction around the handler."""
    return not (event.type == "referral.created" and event.tx in _ROLLED_UP)


async def handle(conn: Connection, events: Sequence[Event]) -> None:
    """The consumer's handler: projections first, then the touched cases reconciled
    together, then the indicators' rollup of those cases and of the batch's referrals."""
    touched: dict[UUID, Event] = {}
    snapshots: list[Mapping[str, Any]] = []
    referred: set[UUID] = set()  # the cases of the batch's referral events
    erased: list[UUID] = []  # the cases of the batch's `case.erased`
    for event in events:
        if event.type.startswith("partner."):
            applied, before = await projections.apply_partner(conn, event.data)
            if applied and before == "active" and event.data.get("status") == "inactive":
                for case_id in await release_partner(
                    conn, partner_id=UUID(str(event.data["id"])), cause=event
                ):
                    touched[case_id] = event
        elif event.type.startswith("service."):
            await projections.apply_service(conn, event.data)
        elif event.type == "case.erased":
            erased.append(UUID(str(event.data["case_id"])))
            touched[erased[-1]] = event
        elif event.type.startswith("case.") and event.type != "case.pathway_completed":
            snapshots.append(event.data)
            touched[UUID(str(event.data["id"]))] = event
        elif event.type.startswith("referral."):
            if wants(event):
                referred.add(UUID(str(event.data["case_id"])))
            if event.type in RECONCILING_REFERRAL_EVENTS:
                touched[UUID(str(event.data["case_id"]))] = event
    await projections.apply_cases(conn, snapshots)
    created_in = await reconcile(conn, touched)
    # After the reconciliation, which cancelled an erased case's live referrals: their
    # events are erased with the rest, the case still locked.
    await erasure_store.erase_cases(conn, case_ids=erased)
    await projections.refresh_rollup(conn, case_ids=[*touched, *referred])
    if created_in is not None:
        _ROLLED_UP.append(created_in)


async def release_partner(conn: Connection, *, partner_id: UUID, cause: Event) -> list[UUID]:
    """A deactivated partner's referrals still `requested` are cancelled, to be routed again."""
    case_ids = []
    for referral_id, _case_id in await referral_store.requested_of_partner(
        conn, partner_id=partner_id
    ):
        row = await referral_store.lock_for_change(conn, referral_id=referral_id)
        if row is None or row["status"] != "requested":
            continue
        await referral_store.set_status(
            conn,
            referral=row,
            status="cancelled",
            event_type="referral.cancelled",
            actor="system",
            reason="partner_inactive",
            cause=cause,
        )
        case_ids.append(row["case_id"])
    return case_ids


async def reconcile(conn: Connection, touched: Mapping[UUID, Event]) -> int | None:
    """Bring the referrals of every touched case in line with it (its event is the cause).

    The cases are locked together, in id order, with their steps and referrals read in one
    statement each; the referrals to create are decided case by case, then written together:
    one statement for the referrals, one for their history lines, one for their events.
    Returns the transaction id of the `referral.created` events, if any were written."""
    if not touched:
        return None
    ids = sorted(touched, key=str)
    by_id = await projection_store.lock_cases(conn, case_ids=ids)
    plans = await projection_store.steps_of_cases(conn, case_ids=list(by_id))
    # Every referral of those cases, locked: the open ones may change here, the others are
    # the steps' histories (who was excluded, how many attempts).
    every: dict[UUID, list[dict[str, Any]]] = {case_id: [] for case_id in by_id}
    for row in await referral_store.referrals_of_cases(conn, case_ids=list(by_id)):
        every[row["case_id"]].append(row)

    inputs = RoutingInputs(conn, fold_loads=True)
    inputs.expect(  # the types of the steps that may be routed: their services in one read
        step["service_type"]
        for plan in plans.values()
        for step in plan
        if step["resolution"] is None and step["delivery"] == "referral"
    )
    drafts: list[NewReferral] = []
    for case_id in ids:
        if case_id in by_id:
            drafts += await reconcile_case(
                conn,
                case=by_id[case_id],
                plan=plans[case_id],
                referrals=every[case_id],
                cause=touched[case_id],
                inputs=inputs,
            )
    created, created_in = await referral_store.create_referrals(conn, drafts=drafts)
    for referral in created:
        log.info(
            "step_routed",
            case_id=str(referral["case_id"]),
            step_id=str(referral["step_id"]),
            referral_id=str(referral["id"]),
            status=referral["status"],
            attempt=referral["attempt"],
        )
    return created_in


async def reconcile_case(
    conn: Connection,
    *,
    case: Mapping[str, Any],
    plan: Sequence[Mapping[str, Any]],
    referrals: Sequence[Mapping[str, Any]],
    cause: Event | None,
    inputs: RoutingInputs,
) -> list[NewReferral]:
    """Cancel what must end now; return the referrals to create for the case's next steps."""
    open_by_step = {r["step_id"]: r for r in referrals if r["status"] in OPEN_STATUSES}

    async def cancel(referral: Mapping[str, Any], reason: str) -> None:
        await referral_store.set_status(
            conn,
            referral=referral,
            status="cancelled",
            event_type="referral.cancelled",
            actor="system",
            reason=reason,
            cause=cause,
        )
        if referral["status"] in LOAD_COUNTED_STATUSES:
            inputs.count(referral, -1)

    if case["status"] != "open" or not case["consent_granted"]:
        reason = "consent_withdrawn"
        if case["status"] != "open":
            reason = "case_merged" if case["closure_reason"] == "merged" else "case_closed"
        for referral in open_by_step.values():
            await cancel(referral, reason)
        return []

    for step in plan:
        if step["resolution"] == "cancelled" and step["id"] in open_by_step:
            await cancel(open_by_step.pop(step["id"]), "step_cancelled")

    drafts: list[NewReferral] = []
    resolved = {s["key"] for s in plan if s["resolution"] is not None}
    for step in plan:
        if (
            step["resolution"] is None
            and step["delivery"] == "referral"
            and step["id"] not in open_by_step
            and all(dep in resolved for dep in step["depends_on"])
        ):
            draft = await route_step(
                case=case,
                step=step,
                cause=cause,
                inputs=inputs,
                history=[r for r in referrals if r["step_id"] == step["id"]],
                plan=plan,
                open_by_step=open_by_step,
            )
            open_by_step[step["id"]] = draft.values
            drafts.append(draft)

    if plan and len(resolved) == len(plan):
        if not case["pathway_completed"]:
            await pathway_completed(conn, case=case, plan=plan, cause=cause)
    elif case["pathway_completed"]:
        await projection_store.set_pathway_completed(conn, case_id=case["id"], completed=False)
    return drafts


async def pathway_completed(
    conn: Connection,
    *,
    case: Mapping[str, Any],
    plan: Sequence[Mapping[str, Any]],
    cause: Event | None,
) -> None:
    """Mark the case's pathway completed and emit `case.pathway_completed`."""
    await projection_store.set_pathway_completed(conn, case_id=case["id"], completed=True)
    await projection_store.append_pathway_completed(
        conn,
        case=case,
        steps=[{"id": s["id"], "key": s["key"], "status": s["resolution"]} for s in plan],
        cause=cause,
    )


async def route_step(
    *,
    case: Mapping[str, Any],
    step: Mapping[str, Any],
    cause: Event | None,
    inputs: RoutingInputs,
    history: Sequence[Mapping[str, Any]],
    plan: Sequence[Mapping[str, Any]],
    open_by_step: Mapping[UUID, Mapping[str, Any]],
) -> NewReferral:
    """Decide the step's next referral: to the best candidate, or unassigned.

    `history` is the step's referrals so far; `plan` and `open_by_step` the case's steps and
    its open referrals by step, from which the event's minimised case is built: what the
    assignee may see when the referral is created."""
    past = step_history(history)
    request = await inputs.request(
        case=case, service_type=step["service_type"], priority=step["priority"], history=past
    )
    options: list[ServiceOption] = []
    if past.exhausted:
        decision = Decision(candidates=(), excluded=(), deadline_at=None)
        record = {**decision.as_record(request), "unassigned_reason": "max_attempts"}
        note = f"{past.routed_failures} routed attempts ended without a taker: for the coordination"
    else:
        options = await inputs.service_options(step["service_type"])
        decision = decide(request, options)
        record = decision.as_record(request)
        if decision.chosen is None:
            record["unassigned_reason"] = "no_candidate"
            note = "no candidate service: for the coordination"
        else:
            note = "routed"
    chosen = decision.chosen
    values = referral_values(
        case=case,
        step=step,
        attempt=past.referrals + 1,
        decision=record,
        service_id=chosen.service_id if chosen else None,
        assignee_partner_id=chosen.partner_id if chosen else None,
        deadline_at=decision.deadline_at,
    )
    named: list[str] = []
    shown: list[Mapping[str, Any]] = []
    if chosen is not None:
        inputs.count(values, +1)
        service = next(o for o in options if o.id == chosen.service_id)
        named = list(service.vulnerabilities_any or ())
        mine = {**open_by_step, step["id"]: values}
        shown = [
            s
            for s in plan
            if s["id"] in mine
            and mine[s["id"]]["assignee_partner_id"] == chosen.partner_id
            and mine[s["id"]]["status"] in MINIMISED_CASE_STATUSES
        ]
    minimised = minimised_view(
        case,
        referral=values,
        assignee_steps=shown,
        named=named,
        owner=await inputs.partner(case["owner_partner_id"]),
    )
    return NewReferral(values=values, note=note, case=minimised, cause=cause)
