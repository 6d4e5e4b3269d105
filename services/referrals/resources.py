"""The Referral as the API serves it and as its events carry it, and a new referral's row.
Pure: the store reads and writes around these."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

from shared.eventlog.model import Event
from shared.minimised import minimise_case

SOURCE = "/referrals"


def now_utc() -> datetime:
    return datetime.now(UTC)


def minimised_view(
    case: Mapping[str, Any],
    *,
    referral: Mapping[str, Any],
    assignee_steps: Sequence[Mapping[str, Any]],
    named: Sequence[str],
    owner: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The minimised case from the projection's case row and what the assignee may see:
    its steps of the case whose referral shows the case (by position), the vulnerabilities
    its service names, and the owner partner's contact."""
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
