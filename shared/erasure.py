"""Erasure (SPEC 9): what is left of a case, of its referrals and of their events once the
beneficiary's personal data is erased. One definition for the registry's rows, the referrals
service's copies and the `data` of every event about the case. Pure.

What stays is what statistics need and names no one: ids, the reference, statuses and times,
the sex, the birth year, the return area, service types and partners (and the hub's own
words, such as a cancellation's `case_closed`). Everything else a person or a partner wrote
goes: names, phone, date of birth (its year stays), nationality, languages, household,
identity documents, the return's date and origin, vulnerabilities, the steps' notes, the
referrals' reasons, outcomes and history notes. Each function is idempotent: erasing what is
already erased changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

HUB_ACTOR = "system"
"""The actor of what the hub itself does and writes (routing notes, reason codes): its words
name no one, so an erasure keeps them."""

KEPT_BENEFICIARY_FIELDS = frozenset({"sex", "birth_year"})
KEPT_RETURN_FIELDS = frozenset({"area_code"})

# Events whose data names no one: kept as they are.
_UNTOUCHED_EVENTS = frozenset({"case.pathway_completed", "case.erased"})


def _blank(value: Any) -> Any:
    """The empty value of a field's kind: [] for a list, None otherwise."""
    return [] if isinstance(value, list | tuple) else None


def erase_beneficiary(person: Mapping[str, Any] | None) -> dict[str, Any]:
    """The beneficiary with only its sex and birth year (taken from the date of birth when
    only that is known); every other field it has is kept as a key, emptied."""
    person = person or {}
    erased = {
        key: value if key in KEPT_BENEFICIARY_FIELDS else _blank(value)
        for key, value in person.items()
    }
    born = person.get("date_of_birth")
    if born and not person.get("birth_year"):
        erased["birth_year"] = int(str(born)[:4])
    return erased


def erase_return(info: Mapping[str, Any] | None) -> dict[str, Any]:
    """The return with only its area."""
    return {
        key: value if key in KEPT_RETURN_FIELDS else _blank(value)
        for key, value in (info or {}).items()
    }


def erase_step(step: Mapping[str, Any]) -> dict[str, Any]:
    """A plan step without its notes."""
    return {**step, "notes": ""} if "notes" in step else dict(step)


def erase_case(case: Mapping[str, Any]) -> dict[str, Any]:
    """The Case resource (a `case.*` event's data) once erased."""
    erased = dict(case)
    if "beneficiary" in erased:
        erased["beneficiary"] = erase_beneficiary(case["beneficiary"])
    if "return" in erased:
        erased["return"] = erase_return(case["return"])
    if "vulnerabilities" in erased:
        erased["vulnerabilities"] = []
    if "plan" in erased:
        erased["plan"] = [erase_step(s) for s in case["plan"] or []]
    return erased


def erase_minimised_case(case: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The minimised case once erased: its reference alone, as when it is not shown."""
    if case is None:
        return None
    return {"reference": case["reference"]} if "reference" in case else {}


def erase_history_line(line: Mapping[str, Any]) -> dict[str, Any]:
    """A referral's history line: the hub's own note stays, a partner's goes."""
    if line.get("actor") == HUB_ACTOR or not line.get("note"):
        return dict(line)
    return {**line, "note": ""}


def keeps_status_reason(history: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a referral's `status_reason` stays: when the hub gave it (its latest history
    line, the one of its current status, is the hub's own)."""
    return bool(history) and history[-1].get("actor") == HUB_ACTOR


def erase_referral(referral: Mapping[str, Any]) -> dict[str, Any]:
    """The Referral (a `referral.*` event's data) once erased: the case's reference alone,
    no outcome, the partners' reasons and notes gone, the hub's own kept."""
    erased = dict(referral)
    history = list(referral.get("history") or [])
    if "case" in erased:
        erased["case"] = erase_minimised_case(referral["case"])
    if "history" in erased:
        erased["history"] = [erase_history_line(line) for line in history]
    if "outcome" in erased:
        erased["outcome"] = None
    if erased.get("status_reason") is not None and not keeps_status_reason(history):
        erased["status_reason"] = None
    return erased


def erase_event_data(event_type: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """The `data` of an event about an erased case, once erased."""
    if event_type in _UNTOUCHED_EVENTS:
        return dict(data)
    if event_type.startswith("referral."):
        return erase_referral(data)
    if event_type.startswith("case."):
        return erase_case(data)
    return dict(data)
