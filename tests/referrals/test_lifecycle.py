"""The referral state machine against SPEC 6, exhaustively: status x action x roles.

The expected table is written out here from the SPEC text, independently of
`services.referrals.lifecycle.ACTIONS`, so a slip in either shows up as a failure.
"""

from __future__ import annotations

from itertools import chain, combinations

import pytest

from services.referrals.lifecycle import ACTIONS, allowed_actions, transition
from shared import referral_statuses
from shared.errors import Forbidden, InvalidTransition

STATUSES = (
    "requested",
    "accepted",
    "in_progress",
    "unassigned",
    "rejected",
    "expired",
    "completed",
    "failed",
    "cancelled",
)
TERMINAL_STATUSES = frozenset({"rejected", "expired", "completed", "failed", "cancelled"})
CALLER_ROLES = ("assignee", "owner", "admin")

# SPEC 6: "The assignee accepts, rejects, starts, completes and fails; the case owner or an
# admin cancels; an admin assigns." Expiry is the system's (a deadline passing), never a caller's.
WHO = {
    "accept": {"assignee"},
    "reject": {"assignee"},
    "start": {"assignee"},
    "complete": {"assignee"},
    "fail": {"assignee"},
    "cancel": {"owner", "admin"},
    "assign": {"admin"},
    "expire": set(),
}
EVERY_ACTION = tuple(WHO)

# SPEC 6, line by line: (status, action) -> target status.
#   requested   -> accepted | rejected | expired | cancelled
#   accepted    -> in_progress | completed | failed | cancelled
#   in_progress -> completed | failed | cancelled
#   unassigned  -> requested (admin assigns) | cancelled
TRANSITIONS = {
    ("requested", "accept"): "accepted",
    ("requested", "reject"): "rejected",
    ("requested", "expire"): "expired",
    ("requested", "cancel"): "cancelled",
    ("accepted", "start"): "in_progress",
    ("accepted", "complete"): "completed",
    ("accepted", "fail"): "failed",
    ("accepted", "cancel"): "cancelled",
    ("in_progress", "complete"): "completed",
    ("in_progress", "fail"): "failed",
    ("in_progress", "cancel"): "cancelled",
    ("unassigned", "assign"): "requested",
    ("unassigned", "cancel"): "cancelled",
}

# SPEC 3's referral event types, one per action.
EVENTS = {
    "accept": "referral.accepted",
    "reject": "referral.rejected",
    "start": "referral.started",
    "complete": "referral.completed",
    "fail": "referral.failed",
    "cancel": "referral.cancelled",
    "assign": "referral.assigned",
    "expire": "referral.expired",
}

ROLE_SETS = [
    frozenset(c) for c in chain.from_iterable(combinations(CALLER_ROLES, n) for n in range(4))
]


def expected_allowed(status: str, roles: frozenset[str]) -> set[str]:
    return {action for (source, action) in TRANSITIONS if source == status and WHO[action] & roles}


def test_the_table_covers_every_action_and_only_known_statuses():
    assert set(ACTIONS) == set(EVERY_ACTION)
    assert {s for s, _ in TRANSITIONS} | set(TRANSITIONS.values()) <= set(STATUSES)
    assert set(referral_statuses.TERMINAL_STATUSES) == TERMINAL_STATUSES
    assert set(referral_statuses.OPEN_STATUSES) == set(STATUSES) - TERMINAL_STATUSES
    assert len(ROLE_SETS) == 8


@pytest.mark.parametrize("roles", ROLE_SETS, ids=lambda r: "+".join(sorted(r)) or "none")
@pytest.mark.parametrize("action", EVERY_ACTION)
@pytest.mark.parametrize("status", STATUSES)
def test_transition(status: str, action: str, roles: frozenset[str]):
    if not WHO[action] & roles:
        # 403: no role held may ever take this action, whatever the status.
        with pytest.raises(Forbidden):
            transition(status, action, roles)
    elif (status, action) not in TRANSITIONS:
        # 409: the status forbids it; the problem names the status and what is open now.
        with pytest.raises(InvalidTransition) as caught:
            transition(status, action, roles)
        refused = caught.value.extra
        assert refused["current_status"] == status
        assert set(refused["allowed_actions"]) == expected_allowed(status, roles)
        assert len(refused["allowed_actions"]) == len(set(refused["allowed_actions"]))
        assert refused["allowed_actions"] == allowed_actions(status, roles)
    else:
        step = transition(status, action, roles)
        assert step.target == TRANSITIONS[status, action]
        assert step.name == action
        assert step.event == EVENTS[action]


@pytest.mark.parametrize("roles", ROLE_SETS, ids=lambda r: "+".join(sorted(r)) or "none")
@pytest.mark.parametrize("status", STATUSES)
def test_allowed_actions_agree_with_transition(status: str, roles: frozenset[str]):
    allowed = allowed_actions(status, roles)
    assert set(allowed) == expected_allowed(status, roles)
    assert len(allowed) == len(set(allowed))
    for action in EVERY_ACTION:
        try:
            transition(status, action, roles)
        except (Forbidden, InvalidTransition):
            assert action not in allowed
        else:
            assert action in allowed
    # A stable order, whatever order the roles come in.
    assert allowed_actions(status, sorted(roles, reverse=True)) == allowed
    assert allowed_actions(status, list(roles)) == allowed


@pytest.mark.parametrize("status", sorted(TERMINAL_STATUSES))
def test_terminal_statuses_allow_no_caller_action(status: str):
    every_role = frozenset(CALLER_ROLES)
    assert allowed_actions(status, every_role) == []
    for action in EVERY_ACTION:
        with pytest.raises((Forbidden, InvalidTransition)):
            transition(status, action, every_role)


@pytest.mark.parametrize("status", STATUSES)
def test_only_the_system_expires_and_only_a_requested_referral(status: str):
    if status == "requested":
        assert transition(status, "expire", {"system"}).target == "expired"
    else:
        with pytest.raises(InvalidTransition) as caught:
            transition(status, "expire", {"system"})
        assert caught.value.extra["current_status"] == status
    for roles in ROLE_SETS:
        with pytest.raises(Forbidden):
            transition(status, "expire", roles)
        assert "expire" not in allowed_actions(status, roles)


def test_every_transition_leaves_its_source_and_reaches_a_known_status():
    for (source, action), target in TRANSITIONS.items():
        assert target != source
        assert target in STATUSES
        assert source not in TERMINAL_STATUSES, (source, action)


def test_a_role_that_cannot_act_is_denied_before_the_status_is_looked_at():
    # A terminal referral still answers 403, not 409, to a role that may never take the action.
    with pytest.raises(Forbidden):
        transition("completed", "accept", {"owner"})
    with pytest.raises(Forbidden):
        transition("cancelled", "cancel", {"assignee"})
    with pytest.raises(InvalidTransition) as caught:
        transition("completed", "accept", {"assignee"})
    assert caught.value.extra["allowed_actions"] == []


def test_an_owner_who_is_also_the_assignee_holds_both_sets_of_actions():
    # The case owner's own services are candidates too (SPEC 5.3).
    both = {"assignee", "owner"}
    assert set(allowed_actions("requested", both)) == {"accept", "reject", "cancel"}
    assert set(allowed_actions("accepted", both)) == {"start", "complete", "fail", "cancel"}
    assert set(allowed_actions("in_progress", both)) == {"complete", "fail", "cancel"}
    assert allowed_actions("unassigned", both) == ["cancel"]
    assert set(allowed_actions("unassigned", {"admin"})) == {"assign", "cancel"}
