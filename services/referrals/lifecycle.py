"""The referral lifecycle (SPEC 6, aligned with FHIR Task) as a state machine. Pure.

requested → accepted | rejected (reason) | expired | cancelled
accepted → in_progress | completed | failed | cancelled
in_progress → completed (outcome) | failed (reason) | cancelled
unassigned → requested (an admin assigns) | cancelled
Terminal: rejected, expired, completed, failed, cancelled (`shared.referral_statuses`).

`transition` raises the domain's errors itself: Forbidden (403) when the caller's roles can
never take the action, InvalidTransition (409) when the current status forbids it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shared.errors import Forbidden, InvalidTransition
from shared.referral_statuses import OPEN_STATUSES

ASSIGNEE, OWNER, ADMIN, SYSTEM = "assignee", "owner", "admin", "system"


@dataclass(frozen=True)
class Action:
    name: str
    sources: frozenset[str]
    target: str
    roles: frozenset[str]
    event: str


ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        Action(
            "accept",
            frozenset({"requested"}),
            "accepted",
            frozenset({ASSIGNEE}),
            "referral.accepted",
        ),
        Action(
            "reject",
            frozenset({"requested"}),
            "rejected",
            frozenset({ASSIGNEE}),
            "referral.rejected",
        ),
        Action(
            "start",
            frozenset({"accepted"}),
            "in_progress",
            frozenset({ASSIGNEE}),
            "referral.started",
        ),
        Action(
            "complete",
            frozenset({"accepted", "in_progress"}),
            "completed",
            frozenset({ASSIGNEE}),
            "referral.completed",
        ),
        Action(
            "fail",
            frozenset({"accepted", "in_progress"}),
            "failed",
            frozenset({ASSIGNEE}),
            "referral.failed",
        ),
        Action(
            "cancel",
            OPEN_STATUSES,
            "cancelled",
            frozenset({OWNER, ADMIN, SYSTEM}),
            "referral.cancelled",
        ),
        Action(
            "assign",
            frozenset({"unassigned"}),
            "requested",
            frozenset({ADMIN}),
            "referral.assigned",
        ),
        Action(
            "expire", frozenset({"requested"}), "expired", frozenset({SYSTEM}), "referral.expired"
        ),
    )
}

CALLER_ACTIONS = ("accept", "reject", "start", "complete", "fail", "cancel", "assign")


PAST_TENSE = {
    "accept": "accepted",
    "reject": "rejected",
    "start": "started",
    "complete": "completed",
    "fail": "failed",
    "cancel": "cancelled",
    "assign": "assigned",
    "expire": "expired",
}


def allowed_actions(status: str, roles: Iterable[str]) -> list[str]:
    """The actions these roles may take on a referral in `status`, in a stable order."""
    held = set(roles)
    return [
        name
        for name in CALLER_ACTIONS
        if status in ACTIONS[name].sources and ACTIONS[name].roles & held
    ]


def transition(status: str, action: str, roles: Iterable[str]) -> Action:
    """The action to apply; Forbidden when these roles can never take it, InvalidTransition
    (naming the current status and the actions open to these roles) when `status` forbids it."""
    spec = ACTIONS[action]
    held = set(roles)
    if not spec.roles & held:
        raise Forbidden(f"Your role on this referral cannot {action} it.")
    if status not in spec.sources:
        allowed = allowed_actions(status, held)
        raise InvalidTransition(
            refusal(status, action, allowed), current_status=status, allowed_actions=allowed
        )
    return spec


def refusal(status: str, action: str, allowed: list[str]) -> str:
    """Why a referral in `status` cannot take `action`, and what may be done instead."""
    if action == "assign":
        return f"Only an unassigned referral is assigned; this one is {status!r}."
    instead = f"; you may now: {', '.join(allowed)}" if allowed else ""
    return f"A referral in status {status!r} cannot be {PAST_TENSE[action]}{instead}."
