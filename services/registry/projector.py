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

from services.registry.store import Connection
from services.registry.store import steps as store
from services.registry.store.steps import REFERRAL_FIELDS
from shared.eventlog.model import Event
from shared.pathway import plan_statuses

log = structlog.get_logger("relais.registry.projector")

CONSUMER_NAME = "registry.step-status"
# Cancellations the hub makes itself: the step waits and is routed again later.
SYSTEM_CANCEL_REASONS = frozenset(
    {"case_closed", "consent_withdrawn", "case_merged", "partner_inactive"}
)


def wants(event: Event) -> bool:
    """The events the projector applies; the consumer moves past the others unopened."""
    return event.type.startswith("referral.")


def is_newer(data: Mapping[str, Any], step: Mapping[str, Any]) -> bool:
    """Whether a referral snapshot is newer than what the step holds."""
    if step["referral_attempt"] is None:
        return True
    theirs = (int(data.get("attempt") or 0), int(data.get("version") or 0))
    ours = (step["referral_attempt"], step["referral_version"] or 0)
    return theirs > ours


async def project(conn: Connection, events: Sequence[Event]) -> None:
    """Apply a batch of events; non-referral events are passed over. The touched cases are
    locked together (in id order, as the API's actions lock one), their steps read in one
    statement, the events applied in order in memory, and the steps that changed written
    in one statement."""
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
    locked, plans = await store.lock_plans_of_steps(
        conn, step_ids=[step_id for _, step_id in updates]
    )
    by_id = {step["id"]: step for plan in plans.values() for step in plan}
    before = {
        step_id: tuple(step[name] for name in (*REFERRAL_FIELDS, "status", "status_reason"))
        for step_id, step in by_id.items()
    }

    for event, step_id in updates:
        step = by_id.get(step_id)
        if step is None:
            log.warning("referral_event_for_unknown_step", event_id=str(event.id))
            continue
        data = event.data
        if not is_newer(data, step):
            continue
        step.update(
            referral_id=UUID(str(data["id"])),
            referral_attempt=int(data.get("attempt") or 0),
            referral_version=int(data.get("version") or 0),
            referral_status=data.get("status"),
            referral_assignee_id=_uuid(data.get("assignee_partner_id")),
            referral_service_id=_uuid(data.get("service_id")),
        )
        if (
            data.get("status") == "cancelled"
            and data.get("status_reason") not in SYSTEM_CANCEL_REASONS
        ):
            # The owner (or an admin) cancelled the referral: the step goes with it.
            step["owner_status"] = "cancelled"

    writes = []
    for case_id, plan in plans.items():
        statuses = plan_statuses(
            plan,
            consent_granted=(locked[case_id]["consent"] or {}).get("referral") == "granted",
            case_open=locked[case_id]["status"] == "open",
        )
        for step, (status, reason) in zip(plan, statuses, strict=True):
            now = (*(step[name] for name in REFERRAL_FIELDS), status, reason)
            if now != before[step["id"]]:
                writes.append(
                    {
                        "step_id": step["id"],
                        **{name: step[name] for name in REFERRAL_FIELDS},
                        "new_status": status,
                        "new_status_reason": reason,
                        "touch": (status, reason) != before[step["id"]][-2:],
                    }
                )
    await store.write_referral_news(conn, writes=writes)


def _uuid(value: object) -> UUID | None:
    return UUID(str(value)) if value else None
