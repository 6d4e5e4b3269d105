"""The minimised case (SPEC 6): one definition, served identically by the registry and the
referrals service. What the assignee of a live referral may see of a case, and no more."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any

from shared.referral_statuses import MINIMISED_CASE_STATUSES


def age_on(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def minimise_case(
    *,
    case: Mapping[str, Any],
    referral_statuses: Iterable[str],
    assignee_steps: Sequence[Mapping[str, Any]],
    service_vulnerabilities: Iterable[str] | None,
    referring_partner: Mapping[str, Any] | None,
    today: date,
) -> dict[str, Any]:
    """The minimised view of `case` for an assignee.

    Served only while one of the assignee's referrals of the case is in
    `MINIMISED_CASE_STATUSES` and consent is granted; otherwise just `{reference}`. Never
    the id documents, other referrals, or other partners' notes: `assignee_steps` must hold
    only the assignee's steps whose referral is in those statuses.
    """
    reference = {"reference": case["reference"]}
    consent = (case.get("consent") or {}).get("referral")
    if consent != "granted" or not MINIMISED_CASE_STATUSES.intersection(referral_statuses):
        return reference
    person = case.get("beneficiary") or {}
    beneficiary: dict[str, Any] = {
        "given_name": person.get("given_name"),
        "family_name": person.get("family_name"),
        "sex": person.get("sex"),
    }
    born = person.get("date_of_birth")
    if born:
        beneficiary["age"] = age_on(date.fromisoformat(str(born)), today)
    else:
        beneficiary["birth_year"] = person.get("birth_year")
    beneficiary["phone"] = person.get("phone")
    beneficiary["languages"] = list(person.get("languages") or [])
    named = set(service_vulnerabilities or ())
    partner = referring_partner or {}
    return {
        **reference,
        "beneficiary": beneficiary,
        "return": {"area_code": (case.get("return") or {}).get("area_code")},
        "vulnerabilities": [v for v in case.get("vulnerabilities") or [] if v in named],
        "steps": [
            {
                "key": s["key"],
                "service_type": s["service_type"],
                "priority": s["priority"],
                "notes": s.get("notes") or "",
            }
            for s in assignee_steps
        ],
        "referring_partner": {
            "name": partner.get("name"),
            "acronym": partner.get("acronym"),
            "contact_email": partner.get("contact_email"),
            "contact_phone": partner.get("contact_phone"),
        },
    }
