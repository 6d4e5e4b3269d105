"""A referral's statuses (SPEC 6) and the sets of them the hub reasons with: one definition
each, for the registry, the referrals service and the SQL they generate. Pure.

Each set answers one question; two of them hold the same statuses today and stay apart
because they answer different questions.
"""

from __future__ import annotations

from collections.abc import Iterable

REFERRAL_STATUSES = (
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
"""Every status of a referral, in the lifecycle's order (the order SQL is generated in)."""

TERMINAL_STATUSES = frozenset({"rejected", "expired", "completed", "failed", "cancelled"})
"""A referral here is over: no action moves it again (SPEC 6)."""

OPEN_STATUSES = frozenset(REFERRAL_STATUSES) - TERMINAL_STATUSES
"""A referral here is its step's current one (requested, accepted, in progress or
unassigned): a step has at most one, and closing the case or withdrawing consent cancels it
(SPEC 5.8)."""

LOAD_COUNTED_STATUSES = frozenset({"requested", "accepted", "in_progress"})
"""A referral here counts toward its service's load, which orders the candidates (SPEC 5.3)."""

MINIMISED_CASE_STATUSES = frozenset({"requested", "accepted", "in_progress"})
"""While one of its referrals is here (and consent is granted), the assignee sees the
minimised case and the step among its live steps (SPEC 6); otherwise only `{reference}`."""

EXCLUDING_STATUSES = frozenset({"rejected", "expired", "failed"})
"""A routed attempt ended here without a taker: the partner is excluded for the step, the
attempt counts toward the four, and the step is routed again (SPEC 5.6). A cancellation
does none of this."""


def in_lifecycle_order(statuses: Iterable[str]) -> tuple[str, ...]:
    """The statuses in `REFERRAL_STATUSES` order: generated SQL reads the same every time."""
    wanted = set(statuses)
    unknown = wanted.difference(REFERRAL_STATUSES)
    if unknown:
        raise ValueError(f"not referral statuses: {sorted(unknown)}")
    return tuple(s for s in REFERRAL_STATUSES if s in wanted)
