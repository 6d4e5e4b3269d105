"""What an erasure leaves of a case, a referral and their events (SPEC 9): pure, no database."""

from __future__ import annotations

import json

from shared.erasure import (
    erase_beneficiary,
    erase_case,
    erase_event_data,
    erase_referral,
    keeps_status_reason,
)
from tests.factories import case_body

PERSONAL = ("Aminata", "Traoré", "+22370123456", "AA1234567", "1996-04-12", "prefers a woman")


def a_case() -> dict:
    body = case_body()
    return {
        "id": "3f2b8c1e-4a5d-4e6f-8a9b-0c1d2e3f4a5b",
        "reference": "ML-2026-000123",
        "external_id": body["external_id"],
        "status": "closed",
        "closure_reason": "other",
        "beneficiary": body["beneficiary"],
        "return": body["return"],
        "vulnerabilities": body["vulnerabilities"],
        "consent": body["consent"],
        "plan": [
            {"id": f"step-{i}", "key": str(i), "status": "completed", "notes": "", **step}
            for i, step in enumerate(body["plan"], start=1)
        ],
        "version": 4,
    }


def a_referral() -> dict:
    return {
        "id": "r1",
        "case_id": "3f2b8c1e-4a5d-4e6f-8a9b-0c1d2e3f4a5b",
        "case_reference": "ML-2026-000123",
        "service_type": "economic.vocational_training",
        "status": "rejected",
        "status_reason": "Aminata moved to Kayes, call +22370123456",
        "outcome": "Traoré trained",
        "assignee_partner_id": "p2",
        "owner_partner_id": "p1",
        "case": {
            "reference": "ML-2026-000123",
            "beneficiary": {
                "given_name": "Aminata",
                "family_name": "Traoré",
                "phone": "+22370123456",
            },
            "steps": [{"key": "1", "notes": "prefers a woman counsellor"}],
        },
        "history": [
            {
                "status": "requested",
                "at": "2026-11-01T10:00:00Z",
                "actor": "system",
                "note": "routed",
            },
            {
                "status": "rejected",
                "at": "2026-11-02T10:00:00Z",
                "actor": "p2",
                "note": "Aminata moved",
            },
        ],
        "version": 2,
    }


def test_the_beneficiary_keeps_only_its_sex_and_birth_year_taken_from_the_date_of_birth():
    erased = erase_beneficiary(case_body()["beneficiary"])
    assert erased == {
        "given_name": None,
        "family_name": None,
        "sex": "female",
        "date_of_birth": None,
        "nationality": None,
        "phone": None,
        "languages": [],
        "id_documents": [],
        "household_size": None,
        "birth_year": 1996,
    }
    assert erase_beneficiary({"given_name": "Awa", "sex": "male", "birth_year": 1980}) == {
        "given_name": None,
        "sex": "male",
        "birth_year": 1980,
    }


def test_an_erased_case_keeps_what_statistics_need_and_names_no_one():
    case = a_case()
    erased = erase_case(case)
    text = json.dumps(erased, ensure_ascii=False)
    assert not [p for p in PERSONAL if p in text]
    for kept in (
        "id",
        "reference",
        "external_id",
        "status",
        "closure_reason",
        "consent",
        "version",
    ):
        assert erased[kept] == case[kept], kept
    assert erased["return"] == {"date": None, "country_from": None, "area_code": "ML-BKO-03"}
    assert erased["vulnerabilities"] == []
    assert [(s["id"], s["service_type"], s["status"], s["notes"]) for s in erased["plan"]] == [
        (s["id"], s["service_type"], s["status"], "") for s in case["plan"]
    ]


def test_an_erased_referral_keeps_the_hubs_words_and_drops_the_partners():
    referral = a_referral()
    erased = erase_referral(referral)
    text = json.dumps(erased, ensure_ascii=False)
    assert not [p for p in PERSONAL if p in text]
    assert erased["case"] == {"reference": "ML-2026-000123"}
    assert erased["outcome"] is None
    assert erased["status_reason"] is None  # the partner gave it
    assert [(h["status"], h["actor"], h["note"]) for h in erased["history"]] == [
        ("requested", "system", "routed"),
        ("rejected", "p2", ""),
    ]
    assert {
        k: v for k, v in erased.items() if k not in ("case", "outcome", "status_reason", "history")
    } == {
        k: v
        for k, v in referral.items()
        if k not in ("case", "outcome", "status_reason", "history")
    }
    # A cancellation the hub made keeps its reason code.
    cancelled = {
        **referral,
        "status": "cancelled",
        "status_reason": "case_closed",
        "history": [
            *referral["history"],
            {"status": "cancelled", "actor": "system", "note": "case_closed"},
        ],
    }
    assert erase_referral(cancelled)["status_reason"] == "case_closed"
    assert keeps_status_reason(cancelled["history"]) and not keeps_status_reason([])


def test_each_event_is_erased_by_its_type_and_erasing_twice_changes_nothing():
    case, referral = a_case(), a_referral()
    pathway = {"case_id": case["id"], "case_reference": case["reference"], "steps": []}
    erased_event = {"case_id": case["id"], "reference": case["reference"], "reason": "asked"}
    assert erase_event_data("case.closed", case) == erase_case(case)
    assert erase_event_data("referral.rejected", referral) == erase_referral(referral)
    assert erase_event_data("case.pathway_completed", pathway) == pathway
    assert erase_event_data("case.erased", erased_event) == erased_event
    for event_type, data in (("case.created", case), ("referral.created", referral)):
        once = erase_event_data(event_type, data)
        assert erase_event_data(event_type, once) == once
