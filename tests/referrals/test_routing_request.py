"""The routing request and what the projections write, built from plain data: no database."""

from __future__ import annotations

from datetime import UTC, date, datetime
from uuid import uuid4

from services.referrals.lifecycle import refusal
from services.referrals.projections import case_row, fold_snapshots, step_row
from services.referrals.resources import event_draft, referral_values
from services.referrals.routing import (
    MAX_ROUTED_ATTEMPTS,
    StepHistory,
    person_of,
    request_for,
    step_history,
)

NOW = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
A, B, C = uuid4(), uuid4(), uuid4()


def referral(status: str, partner, attempt: int) -> dict:
    return {"status": status, "assignee_partner_id": partner, "attempt": attempt}


def test_rejected_expired_and_failed_attempts_exclude_their_partner_and_count():
    history = step_history(
        [
            referral("failed", B, 3),
            referral("rejected", A, 1),
            referral("expired", A, 2),
            referral("cancelled", C, 4),
            referral("requested", C, 5),
        ]
    )
    assert history.referrals == 5
    # The latest reason of a partner is kept; a cancellation excludes nobody.
    assert history.excluded_partners == {A: "expired", B: "failed"}
    assert history.routed_failures == 3
    assert not history.exhausted


def test_a_step_is_exhausted_after_its_fourth_routed_attempt_without_a_taker():
    four = [referral("rejected", uuid4(), n) for n in range(1, MAX_ROUTED_ATTEMPTS + 1)]
    assert step_history(four).exhausted
    assert not step_history(four[:-1]).exhausted
    # An unassigned attempt that ended in an exclusion has no partner to exclude.
    assert step_history([referral("failed", None, 1)]).excluded_partners == {}
    assert StepHistory().referrals == 0 and not StepHistory().exhausted


def test_the_request_carries_the_case_the_step_and_the_exclusions():
    case = {
        "return_area_code": "ML-3-01",
        "beneficiary": {"sex": "female", "date_of_birth": "1990-05-04", "phone": "+223"},
        "vulnerabilities": ["gbv"],
    }
    history = StepHistory(referrals=1, excluded_partners={A: "rejected"}, routed_failures=1)
    request = request_for(
        case=case,
        service_type="legal",
        priority="urgent",
        area_depths={"ML": 0, "ML-3": 1, "ML-3-01": 2},
        history=history,
        now=NOW,
    )
    assert request.service_type == "legal"
    assert request.priority == "urgent"
    assert request.area_code == "ML-3-01"
    assert request.area_depths == {"ML": 0, "ML-3": 1, "ML-3-01": 2}
    assert request.excluded_partners == {A: "rejected"}
    assert request.now == NOW
    assert request.person.sex == "female"
    assert request.person.date_of_birth == date(1990, 5, 4)
    assert request.person.vulnerabilities == ("gbv",)


def test_a_person_without_sex_or_birth_date_is_unknown_on_both():
    person = person_of({"beneficiary": {"birth_year": 2001}, "vulnerabilities": None})
    assert person.sex == "unknown"
    assert person.date_of_birth is None
    assert person.age_on(date(2026, 1, 1)) == 25
    assert person_of({}).vulnerabilities == ()


def snapshot(case_id, version: int, plan: list[dict]) -> dict:
    return {
        "id": str(case_id),
        "version": version,
        "reference": "REF-1",
        "owner_partner_id": str(A),
        "status": "open",
        "consent": {"referral": "granted"},
        "beneficiary": {"given_name": "Awa", "id_documents": [{"number": "X"}], "sex": "female"},
        "return": {"area_code": "ML-3-01"},
        "vulnerabilities": ["gbv"],
        "plan": plan,
    }


def test_the_newest_snapshot_wins_and_a_resolved_step_stays_resolved():
    case_id, step_id = uuid4(), uuid4()
    step = {"id": str(step_id), "key": "legal", "service_type": "legal", "priority": "normal"}
    v1 = snapshot(case_id, 1, [{**step, "status": "completed"}])
    v2 = snapshot(case_id, 2, [{**step, "status": "referred"}])
    latest, resolved = fold_snapshots([v2, v1])
    assert latest[case_id] is v2
    assert resolved == {step_id: "completed"}


def test_the_case_copy_keeps_only_what_routing_and_the_minimised_case_need():
    case_id = uuid4()
    row = case_row(case_id, snapshot(case_id, 3, []))
    assert row["id"] == case_id and row["version"] == 3
    assert row["consent_granted"] is True
    assert row["return_area_code"] == "ML-3-01"
    assert "id_documents" not in row["beneficiary"]
    assert row["beneficiary"]["given_name"] == "Awa"


def test_a_step_copy_has_its_position_and_its_known_resolution():
    case_id, step_id = uuid4(), uuid4()
    step = {
        "id": str(step_id),
        "key": "shelter",
        "service_type": "shelter",
        "priority": "emergency",
        "delivery": "referral",
    }
    row = step_row(case_id, 2, step, {step_id: "cancelled"})
    assert row["position"] == 2 and row["case_id"] == case_id
    assert row["resolution"] == "cancelled"
    assert row["depends_on"] == [] and row["notes"] == ""
    assert step_row(case_id, 1, step, {})["resolution"] is None


def test_a_new_referral_is_requested_with_an_assignee_and_unassigned_without():
    case = {"id": uuid4(), "reference": "REF-1", "owner_partner_id": A}
    step = {"id": uuid4(), "service_type": "legal", "priority": "normal"}
    common = {"case": case, "step": step, "attempt": 2, "decision": {}, "deadline_at": None}
    assert referral_values(**common, service_id=C, assignee_partner_id=B)["status"] == "requested"
    unassigned = referral_values(**common, service_id=None, assignee_partner_id=None)
    assert unassigned["status"] == "unassigned"
    assert unassigned["attempt"] == 2


def test_a_referral_event_goes_to_the_owner_and_the_assignee_without_the_decision():
    row = {
        "id": uuid4(),
        "case_id": uuid4(),
        "case_reference": "REF-1",
        "step_id": uuid4(),
        "service_type": "legal",
        "priority": "normal",
        "status": "requested",
        "status_reason": None,
        "assignee_partner_id": B,
        "service_id": C,
        "owner_partner_id": A,
        "deadline_at": None,
        "attempt": 1,
        "outcome": None,
        "decision": {"candidates": []},
        "version": 1,
        "created_at": NOW,
        "updated_at": NOW,
    }
    draft = event_draft(
        type="referral.created", row=row, actor="system", history=[], case={"reference": "REF-1"}
    )
    assert draft["audience"] == [A, B]
    assert "decision" not in draft["data"]
    assert draft["subject"] == f"referrals/{row['id']}"


def test_a_refusal_names_the_status_and_what_may_be_done_instead():
    assert refusal("accepted", "accept", ["start", "complete", "fail"]) == (
        "A referral in status 'accepted' cannot be accepted; you may now: start, complete, fail."
    )
    assert refusal("completed", "complete", []) == (
        "A referral in status 'completed' cannot be completed."
    )
    assert refusal("requested", "assign", []) == (
        "Only an unassigned referral is assigned; this one is 'requested'."
    )
