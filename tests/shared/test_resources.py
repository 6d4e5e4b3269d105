"""The minimised case's named schema is exactly what `minimise_case` builds: the documents
describe it field by field, and the registry and the referrals service serve it through it."""

from __future__ import annotations

from datetime import date

from shared.minimised import minimise_case
from shared.resources import CaseReference, MinimisedCase

CASE = {
    "reference": "ML-2026-000123",
    "beneficiary": {
        "given_name": "Aminata",
        "family_name": "Traoré",
        "sex": "female",
        "date_of_birth": "1996-04-12",
        "phone": "+22370123456",
        "languages": ["bm"],
        "id_documents": [{"type": "passport", "number": "AA1234567"}],
    },
    "return": {"area_code": "ML-1-03", "date": "2026-10-02"},
    "vulnerabilities": ["single_parent", "psychosocial_distress"],
    "consent": {"referral": "granted"},
}
STEP = {"key": "1", "service_type": "economic.vocational_training", "priority": "normal"}
PARTNER = {"name": "OIM Mali", "acronym": "OIM", "contact_email": None, "contact_phone": None}


def _minimise(case: dict, statuses=("accepted",)) -> dict:
    return minimise_case(
        case=case,
        referral_statuses=statuses,
        assignee_steps=[STEP],
        service_vulnerabilities=["single_parent"],
        referring_partner=PARTNER,
        today=date(2026, 11, 29),
    )


def test_the_minimised_case_round_trips_through_its_schema():
    for case in (CASE, {**CASE, "beneficiary": {**CASE["beneficiary"], "date_of_birth": None}}):
        built = _minimise(case)
        served = MinimisedCase.model_validate(built).model_dump(mode="json", by_alias=True)
        assert served == {k: v for k, v in built.items()}, (built, served)


def test_a_case_no_longer_live_is_its_reference_only():
    built = _minimise(CASE, statuses=("completed",))
    assert (
        CaseReference.model_validate(built).model_dump()
        == built
        == {"reference": CASE["reference"]}
    )
