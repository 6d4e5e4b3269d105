"""The referral status sets (SPEC 5 and 6), and the SQL generated from them."""

from __future__ import annotations

import pytest
from sqlalchemy import CheckConstraint

from services.referrals.tables import referrals, status_in
from shared.referral_statuses import (
    EXCLUDING_STATUSES,
    LOAD_COUNTED_STATUSES,
    MINIMISED_CASE_STATUSES,
    OPEN_STATUSES,
    REFERRAL_STATUSES,
    TERMINAL_STATUSES,
    in_lifecycle_order,
)


def test_the_sets_say_what_spec_5_and_6_say():
    assert set(REFERRAL_STATUSES) == OPEN_STATUSES | TERMINAL_STATUSES
    assert not OPEN_STATUSES & TERMINAL_STATUSES
    assert {"rejected", "expired", "completed", "failed", "cancelled"} == TERMINAL_STATUSES
    # SPEC 5.3: the load is the referrals requested, accepted or in progress.
    assert {"requested", "accepted", "in_progress"} == LOAD_COUNTED_STATUSES
    # SPEC 6: the minimised case is served while the referral is requested, accepted or in
    # progress; an unassigned referral has no assignee to show it to.
    assert {"requested", "accepted", "in_progress"} == MINIMISED_CASE_STATUSES
    # SPEC 5.6: rejected, let expire or failed excludes the partner; a cancellation does not.
    assert {"rejected", "expired", "failed"} == EXCLUDING_STATUSES
    assert EXCLUDING_STATUSES <= TERMINAL_STATUSES
    assert LOAD_COUNTED_STATUSES <= OPEN_STATUSES


def test_statuses_come_in_lifecycle_order_whatever_order_they_are_given_in():
    assert in_lifecycle_order(["unassigned", "requested", "in_progress"]) == (
        "requested",
        "in_progress",
        "unassigned",
    )
    assert in_lifecycle_order(REFERRAL_STATUSES[::-1]) == REFERRAL_STATUSES
    assert in_lifecycle_order([]) == ()


def test_an_unknown_status_is_refused_rather_than_written_into_sql():
    with pytest.raises(ValueError, match="done"):
        in_lifecycle_order(["requested", "done"])


def test_the_table_generates_its_conditions_from_the_sets():
    assert status_in(LOAD_COUNTED_STATUSES) == "status IN ('requested', 'accepted', 'in_progress')"
    where = {
        index.name: str(index.dialect_options["postgresql"]["where"])
        for index in referrals.indexes
        if index.dialect_options["postgresql"]["where"] is not None
    }
    # The texts the migrations created: generating them changed no constraint.
    assert where["uq_referrals_live_step"] == (
        "status IN ('requested', 'accepted', 'in_progress', 'unassigned')"
    )
    assert where["ix_referrals_service_id_active"] == (
        "status IN ('requested', 'accepted', 'in_progress')"
    )
    (check,) = [c for c in referrals.constraints if isinstance(c, CheckConstraint)]
    assert str(check.sqltext) == status_in(REFERRAL_STATUSES)
