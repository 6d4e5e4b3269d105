"""A plan step's status (SPEC 4): one definition for the registry and the referrals service.

A dependency is resolved when its step is completed or cancelled. "Latest referral" is the
step's referral with the highest attempt, then the highest version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared.referral_statuses import EXCLUDING_STATUSES

RESOLVED = frozenset({"completed", "cancelled"})


def step_status(
    step: Mapping[str, Any],
    *,
    resolved_keys: set[str],
    consent_granted: bool,
    case_open: bool,
) -> tuple[str, str | None]:
    """(status, status_reason) of one step, by the table of SPEC 4."""
    owner = step.get("owner_status")
    referral = step.get("referral_status")
    if owner == "cancelled":
        return "cancelled", None
    if owner == "completed" or referral == "completed":
        return "completed", None
    blocked = [k for k in step.get("depends_on") or [] if k not in resolved_keys]
    if blocked:
        return "planned", None
    if not case_open:
        return "waiting", "case_closed"
    if not consent_granted and step.get("delivery") == "referral":
        return "waiting", "no_consent"
    if owner == "in_progress":
        return "in_progress", None
    if referral in ("requested", "accepted") or referral in EXCLUDING_STATUSES:
        return "referred", None
    if referral == "in_progress":
        return "in_progress", None
    if referral == "unassigned":
        return "unassigned", None
    if step.get("delivery") == "direct":
        return "planned", "ready"
    return "referred", "routing"


def plan_statuses(
    steps: Sequence[Mapping[str, Any]], *, consent_granted: bool, case_open: bool
) -> list[tuple[str, str | None]]:
    """The status of every step. Completed and cancelled steps resolve their dependants;
    a step's own status does not depend on its dependants, so one pass in key order of
    resolution is enough."""
    resolved: set[str] = set()
    result: dict[str, tuple[str, str | None]] = {}
    # Terminal statuses do not depend on dependencies: settle them first.
    for step in steps:
        status = step_status(
            step, resolved_keys=set(), consent_granted=consent_granted, case_open=case_open
        )
        if status[0] in RESOLVED:
            resolved.add(str(step["key"]))
            result[str(step["key"])] = status
    for step in steps:
        key = str(step["key"])
        if key not in result:
            result[key] = step_status(
                step, resolved_keys=resolved, consent_granted=consent_granted, case_open=case_open
            )
    return [result[str(s["key"])] for s in steps]
