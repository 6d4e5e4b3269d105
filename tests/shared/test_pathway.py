"""A plan step's status by the table of SPEC 4, without a database: what the owner and the
step's latest referral say, its dependencies, consent and whether the case is open."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.pathway import plan_statuses, step_status
from shared.referral_statuses import EXCLUDING_STATUSES, REFERRAL_STATUSES

OWNER_STATUSES = (None, "planned", "in_progress", "completed", "cancelled")


def step(key: str = "1", **fields: Any) -> dict[str, Any]:
    return {"key": key, "delivery": "referral", "depends_on": [], **fields}


def status(one: dict[str, Any], *, resolved=(), consent=True, case_open=True):
    return step_status(
        one, resolved_keys=set(resolved), consent_granted=consent, case_open=case_open
    )


@pytest.mark.parametrize("referral", [None, *REFERRAL_STATUSES])
@pytest.mark.parametrize("consent", [True, False])
@pytest.mark.parametrize("case_open", [True, False])
def test_a_step_its_owner_cancelled_is_cancelled_whatever_else_holds(referral, consent, case_open):
    one = step(owner_status="cancelled", referral_status=referral, depends_on=["9"])
    assert status(one, consent=consent, case_open=case_open) == ("cancelled", None)


@pytest.mark.parametrize(
    "fields", [{"owner_status": "completed"}, {"referral_status": "completed"}]
)
def test_a_step_completed_by_its_owner_or_its_referral_is_completed(fields):
    one = step(depends_on=["9"], **fields)
    assert status(one, consent=False, case_open=False) == ("completed", None)


def test_a_step_waits_for_its_unresolved_dependencies_before_anything_else():
    one = step(depends_on=["1", "2"], referral_status="requested", owner_status="in_progress")
    assert status(one, resolved={"1"}, consent=False, case_open=False) == ("planned", None)
    assert status(one, resolved={"1", "2"}) == ("in_progress", None)


def test_a_step_of_a_closed_case_waits_for_it_to_reopen():
    assert status(step(), case_open=False) == ("waiting", "case_closed")
    assert status(step(delivery="direct"), case_open=False) == ("waiting", "case_closed")


def test_without_consent_only_a_referred_step_waits():
    assert status(step(), consent=False) == ("waiting", "no_consent")
    assert status(step(delivery="direct"), consent=False) == ("planned", "ready")


@pytest.mark.parametrize(
    ("referral", "expected"),
    [
        ("requested", ("referred", None)),
        ("accepted", ("referred", None)),
        *((excluded, ("referred", None)) for excluded in sorted(EXCLUDING_STATUSES)),
        ("in_progress", ("in_progress", None)),
        ("unassigned", ("unassigned", None)),
        (None, ("referred", "routing")),
        ("cancelled", ("referred", "routing")),
    ],
)
def test_a_ready_referred_step_follows_its_latest_referral(referral, expected):
    assert status(step(referral_status=referral)) == expected


def test_a_ready_direct_step_is_planned_and_ready_until_its_owner_starts_it():
    assert status(step(delivery="direct")) == ("planned", "ready")
    assert status(step(delivery="direct", owner_status="in_progress")) == ("in_progress", None)


def test_completed_and_cancelled_steps_release_their_dependants_wherever_they_are_listed():
    steps = [
        step("3", depends_on=["1", "2"]),
        step("4", depends_on=["3"]),
        step("1", referral_status="completed"),
        step("2", owner_status="cancelled"),
    ]
    assert plan_statuses(steps, consent_granted=True, case_open=True) == [
        ("referred", "routing"),
        ("planned", None),
        ("completed", None),
        ("cancelled", None),
    ]


def test_a_step_whose_dependency_is_only_in_progress_stays_planned():
    steps = [step("1", referral_status="in_progress"), step("2", depends_on=["1"])]
    assert plan_statuses(steps, consent_granted=True, case_open=True) == [
        ("in_progress", None),
        ("planned", None),
    ]


@st.composite
def plans(draw) -> list[dict[str, Any]]:
    """Plans of up to eight steps, each depending on any of the others."""
    size = draw(st.integers(min_value=1, max_value=8))
    keys = [str(i + 1) for i in range(size)]
    return [
        step(
            key,
            delivery=draw(st.sampled_from(["referral", "direct"])),
            owner_status=draw(st.sampled_from(OWNER_STATUSES)),
            referral_status=draw(st.sampled_from([None, *REFERRAL_STATUSES])),
            depends_on=draw(st.lists(st.sampled_from(keys), unique=True, max_size=3)),
        )
        for key in keys
    ]


@given(plans(), st.booleans(), st.booleans(), st.randoms())
def test_a_plans_statuses_are_each_steps_own_status_given_the_resolved_steps(
    steps, consent, case_open, random
):
    statuses = plan_statuses(steps, consent_granted=consent, case_open=case_open)
    resolved = {
        s["key"]
        for s, (name, _) in zip(steps, statuses, strict=True)
        if name
        in {
            "completed",
            "cancelled",
        }
    }
    for one, got in zip(steps, statuses, strict=True):
        assert got == status(one, resolved=resolved, consent=consent, case_open=case_open)
        unresolved = set(one["depends_on"]) - resolved
        if got[0] not in {"completed", "cancelled"}:
            assert (got == ("planned", None)) or not unresolved
    # The order the steps are listed in changes nothing.
    shuffled = random.sample(steps, len(steps))
    again = plan_statuses(shuffled, consent_granted=consent, case_open=case_open)
    by_key = dict(zip((s["key"] for s in shuffled), again, strict=True))
    assert [by_key[s["key"]] for s in steps] == statuses
