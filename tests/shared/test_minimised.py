"""The minimised case (SPEC 6) without a database: what an assignee sees of a case while one
of its referrals is live and consent is granted, and nothing more."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.minimised import age_on, minimise_case
from shared.referral_statuses import MINIMISED_CASE_STATUSES, REFERRAL_STATUSES

TODAY = date(2026, 10, 20)
SECRET_DOCUMENT = "AA1234567"


def a_case(**overrides: Any) -> dict[str, Any]:
    case: dict[str, Any] = {
        "id": "0b6f7c1e-0000-4000-8000-000000000001",
        "reference": "ML-2026-000042",
        "external_id": "EXT-1",
        "owner_partner_id": "0b6f7c1e-0000-4000-8000-0000000000aa",
        "beneficiary": {
            "given_name": "Aminata",
            "family_name": "Traoré",
            "sex": "female",
            "date_of_birth": "1996-10-21",
            "nationality": "ML",
            "phone": "+22370123456",
            "languages": ["bm", "fr"],
            "id_documents": [{"type": "passport", "number": SECRET_DOCUMENT}],
            "household_size": 4,
        },
        "return": {"date": "2026-10-02", "country_from": "LY", "area_code": "ML-BKO-03"},
        "vulnerabilities": ["psychosocial_distress", "single_parent", "disability"],
        "consent": {"referral": "granted", "method": "written"},
    }
    case.update(overrides)
    return case


STEP = {
    "key": "2",
    "service_type": "economic.vocational_training",
    "priority": "urgent",
    "notes": "Prefers mornings",
    "depends_on": ["1"],
    "status": "referred",
}
PARTNER = {
    "id": "0b6f7c1e-0000-4000-8000-0000000000aa",
    "name": "ONG Sabou",
    "acronym": "SABOU",
    "kind": "ngo",
    "contact_email": "contact@sabou.example.org",
    "contact_phone": None,
}


def minimised(case=None, statuses=("requested",), **overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "case": case or a_case(),
        "referral_statuses": statuses,
        "assignee_steps": [STEP],
        "service_vulnerabilities": ["single_parent", "disability", "elderly"],
        "referring_partner": PARTNER,
        "today": TODAY,
        **overrides,
    }
    return minimise_case(**arguments)


def test_an_assignee_with_a_live_referral_sees_the_minimised_case_only():
    assert minimised() == {
        "reference": "ML-2026-000042",
        "beneficiary": {
            "given_name": "Aminata",
            "family_name": "Traoré",
            "sex": "female",
            "age": 29,
            "phone": "+22370123456",
            "languages": ["bm", "fr"],
        },
        "return": {"area_code": "ML-BKO-03"},
        "vulnerabilities": ["single_parent", "disability"],
        "steps": [
            {
                "key": "2",
                "service_type": "economic.vocational_training",
                "priority": "urgent",
                "notes": "Prefers mornings",
            }
        ],
        "referring_partner": {
            "name": "ONG Sabou",
            "acronym": "SABOU",
            "contact_email": "contact@sabou.example.org",
            "contact_phone": None,
        },
    }


@pytest.mark.parametrize("status", sorted(set(REFERRAL_STATUSES) - MINIMISED_CASE_STATUSES))
def test_a_referral_no_longer_live_shows_only_the_reference(status):
    assert minimised(statuses=[status]) == {"reference": "ML-2026-000042"}
    assert minimised(statuses=[]) == {"reference": "ML-2026-000042"}


@pytest.mark.parametrize("consent", [{"referral": "withdrawn"}, {}, None])
def test_without_granted_consent_only_the_reference_is_shown(consent):
    case = a_case(consent=consent)
    assert minimised(case, statuses=sorted(MINIMISED_CASE_STATUSES)) == {
        "reference": "ML-2026-000042"
    }


def test_one_live_referral_among_ended_ones_is_enough():
    assert "beneficiary" in minimised(statuses=["rejected", "accepted", "completed"])


def test_a_beneficiary_known_by_birth_year_is_shown_by_it():
    case = a_case()
    case["beneficiary"] = {**case["beneficiary"], "birth_year": 1980}
    del case["beneficiary"]["date_of_birth"]
    beneficiary = minimised(case)["beneficiary"]
    assert beneficiary["birth_year"] == 1980 and "age" not in beneficiary


def test_a_step_without_notes_shows_empty_notes_and_no_partner_or_service_gives_nones():
    step = {k: v for k, v in STEP.items() if k != "notes"}
    shown = minimised(assignee_steps=[step], service_vulnerabilities=None, referring_partner=None)
    assert shown["steps"][0]["notes"] == ""
    assert shown["vulnerabilities"] == []
    assert shown["referring_partner"] == {
        "name": None,
        "acronym": None,
        "contact_email": None,
        "contact_phone": None,
    }


@pytest.mark.parametrize(
    ("born", "today", "age"),
    [
        (date(1996, 10, 21), date(2026, 10, 20), 29),
        (date(1996, 10, 21), date(2026, 10, 21), 30),
        (date(2000, 2, 29), date(2026, 2, 28), 25),
        (date(2000, 2, 29), date(2026, 3, 1), 26),
        (date(2026, 1, 1), date(2026, 12, 31), 0),
    ],
)
def test_age_counts_whole_years_to_the_birthday(born, today, age):
    assert age_on(born, today) == age


@given(
    st.dates(min_value=date(1900, 1, 1), max_value=date(2030, 12, 31)),
    st.dates(min_value=date(1900, 1, 1), max_value=date(2030, 12, 31)),
)
def test_age_grows_by_one_each_birthday(born, today):
    if today < born:
        return
    age = age_on(born, today)
    assert age >= 0
    assert born.year + age <= today.year <= born.year + age + 1


@given(
    statuses=st.lists(st.sampled_from(REFERRAL_STATUSES), max_size=4),
    consent=st.sampled_from(["granted", "withdrawn"]),
    extra=st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=3),
)
def test_nothing_outside_the_minimised_fields_ever_shows(statuses, consent, extra):
    case = a_case(consent={"referral": consent}, **{f"x_{k}": v for k, v in extra.items()})
    shown = minimised(case, statuses=statuses)
    text = json.dumps(shown, ensure_ascii=False)
    for secret in (SECRET_DOCUMENT, "EXT-1", case["id"], "1996-10-21", "LY", "psychosocial"):
        assert secret not in text
    assert set(shown) <= {
        "reference",
        "beneficiary",
        "return",
        "vulnerabilities",
        "steps",
        "referring_partner",
    }
    live = consent == "granted" and bool(MINIMISED_CASE_STATUSES.intersection(statuses))
    assert (set(shown) == {"reference"}) is not live
