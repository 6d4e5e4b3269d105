"""The step-status projector: what `referral.*` events tell the registry about each step.

The latest referral of a step is the one with the highest `attempt`, then the highest
`version`; events may arrive out of order, so older news never overwrites newer. A change
of step status does not change the case's `version` and emits no event: the referral events
themselves already reached the case owner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.registry import cases_store
from services.registry.tables import plan_steps
from shared.eventlog.model import Event

log = structlog.get_logger("relais.registry.projector")

CONSUMER_NAME = "registry.step-status"
# Cancellations the hub makes itself: the step waits and is routed again later.
SYSTEM_CANCEL_REASONS = frozenset(
    {"case_closed", "consent_withdrawn", "case_merged", "partner_inactive"}
)


def is_newer(data: Mapping[str, Any], step: Mapping[str, Any]) -> bool:
    """Whether a referral snapshot is newer than what the step holds."""
    if step["referral_attempt"] is None:
        return True
    theirs = (int(data.get("attempt") or 0), int(data.get("version") or 0))
    ours = (step["referral_attempt"], step["referral_version"] or 0)
    return theirs > ours


async def project(session: AsyncSession, events: Sequence[Event]) -> None:
    """Apply a batch of events; non-referral events are passed over."""
    updates: list[tuple[Event, UUID]] = []
    for event in events:
        if not event.type.startswith("referral."):
            continue
        try:
            updates.append((event, UUID(str(event.data["step_id"]))))
        except (KeyError, ValueError):
            log.warning("referral_event_without_step", event_id=str(event.id))
    if not updates:
        return
    case_of = dict(
        (
            await session.execute(
                select(plan_steps.c.id, plan_steps.c.case_id).where(
                    plan_steps.c.id.in_({step_id for _, step_id in updates})
                )
            )
        ).all()
    )
    # Lock the cases first, in one order, as the API's actions do: no deadlock with them.
    case_ids = sorted(set(case_of.values()), key=str)
    cases = {}
    for case_id in case_ids:
        cases[case_id] = await cases_store.load_case(session, case_id=case_id, for_update=True)
    for event, step_id in updates:
        if step_id not in case_of:
            log.warning("referral_event_for_unknown_step", event_id=str(event.id))
            continue
        step = (
            (await session.execute(select(plan_steps).where(plan_steps.c.id == step_id)))
            .mappings()
            .one()
        )
        data = event.data
        if not is_newer(data, step):
            continue
        values: dict[str, Any] = {
            "referral_id": UUID(str(data["id"])),
            "referral_attempt": int(data.get("attempt") or 0),
            "referral_version": int(data.get("version") or 0),
            "referral_status": data.get("status"),
            "referral_assignee_id": _uuid(data.get("assignee_partner_id")),
            "referral_service_id": _uuid(data.get("service_id")),
        }
        if (
            data.get("status") == "cancelled"
            and data.get("status_reason") not in SYSTEM_CANCEL_REASONS
        ):
            # The owner (or an admin) cancelled the referral: the step goes with it.
            values["owner_status"] = "cancelled"
        await session.execute(update(plan_steps).where(plan_steps.c.id == step_id).values(**values))
    for case_id in case_ids:
        case = cases[case_id]
        if case is not None:
            await cases_store.refresh_statuses(
                session, case=case, steps=await cases_store.load_steps(session, case_id=case_id)
            )


def _uuid(value: object) -> UUID | None:
    return UUID(str(value)) if value else None
