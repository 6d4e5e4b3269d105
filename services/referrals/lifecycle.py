"""The referral lifecycle (SPEC 6, aligned with FHIR Task) as a state machine. Pure.

requested → accepted | rejected (reason) | expired | cancelled
accepted → in_progress | completed | failed | cancelled
in_progress → completed (outcome) | failed (reason) | cancelled
unassigned → requested (an admin assigns) | cancelled
Terminal: rejected, expired, completed, failed, cancelled.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

LIVE = frozenset({"requested", "accepted", "in_progress", "unassigned"})
ACTIVE_LOAD = frozenset({"requested", "accepted", "in_progress"})
TERMINAL = frozenset({"rejected", "expired", "completed", "failed", "cancelled"})
EXCLUDING = frozenset({"rejected", "expired", "failed"})

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
            frozenset({"requested", "accepted", "in_progress", "unassigned"}),
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


class Denied(Exception):
    """The caller's roles can never take this action (403)."""


class NotAllowedNow(Exception):
    """The current status forbids the action (409); carries what this caller may do now."""

    def __init__(self, status: str, allowed: list[str]) -> None:
        super().__init__(status)
        self.status = status
        self.allowed = allowed


def allowed_actions(status: str, roles: Iterable[str]) -> list[str]:
    """The actions these roles may take on a referral in `status`, in a stable order."""
    held = set(roles)
    return [
        name
        for name in CALLER_ACTIONS
        if status in ACTIONS[name].sources and ACTIONS[name].roles & held
    ]


def transition(status: str, action: str, roles: Iterable[str]) -> Action:
    """The action to apply, or Denied (403) / NotAllowedNow (409)."""
    spec = ACTIONS[action]
    held = set(roles)
    if not spec.roles & held:
        raise Denied(action)
    if status not in spec.sources:
        raise NotAllowedNow(status, allowed_actions(status, held))
    return spec
