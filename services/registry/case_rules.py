"""What the case's actions decide (SPEC 4), from plain data: the plan's new steps and their
statuses, whether a step may be cancelled or completed, whether a case may close or reopen,
what a merge moves and under which keys, what a change of the case's fields writes. Pure:
the store loads and saves around these; refusals are the domain's typed errors."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from services.registry.plan import PlanError, StepDraft, plan_statuses, settle_steps
from shared.erasure import erase_beneficiary, erase_return
from shared.errors import Conflict, FieldError, NotFound, Unprocessable

FINISHED = ("completed", "cancelled")


# --- Codes and plans -----------------------------------------------------------------------


def check_codes(
    *,
    area_code: str | None,
    area_known: bool,
    step_types: Sequence[str],
    known: set[str],
    step_prefix: str,
) -> None:
    """422 naming each unknown area or service-type code."""
    errors: list[FieldError] = []
    if area_code is not None and not area_known:
        errors.append(
            FieldError(
                field="body.return.area_code",
                message=f"unknown area {area_code!r}",
                type="unknown_code",
            )
        )
    for index, code in enumerate(step_types):
        if code not in known:
            errors.append(
                FieldError(
                    field=f"{step_prefix}[{index}].service_type",
                    message=f"unknown service type {code!r}",
                    type="unknown_code",
                )
            )
    if errors:
        raise Unprocessable("Unknown codes.", errors=errors)


def settle_new_steps(
    steps: Sequence[Mapping[str, Any]],
    *,
    existing: Sequence[Mapping[str, Any]] = (),
    field_prefix: str = "body.plan",
) -> list[dict[str, Any]]:
    """The requested steps with their keys and dependencies settled; 422 naming each
    problem of the plan."""
    drafts = [
        StepDraft(
            service_type=s["service_type"],
            priority=s.get("priority", "normal"),
            delivery=s.get("delivery", "referral"),
            key=s.get("key"),
            depends_on=s.get("depends_on"),
            notes=s.get("notes", ""),
        )
        for s in steps
    ]
    try:
        return settle_steps(drafts, existing=existing, field_prefix=field_prefix)
    except PlanError as exc:
        raise Unprocessable(
            "The plan is not valid.",
            errors=[FieldError(field=f, message=m, type="plan") for f, m in exc.problems],
        ) from exc


def consent_granted(consent: Mapping[str, Any] | None) -> bool:
    """Whether the beneficiary agreed to be referred: nothing is routed otherwise."""
    return (consent or {}).get("referral") == "granted"


def restatus(case: Mapping[str, Any], steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give each step the status its plan, the case's state and consent say (in place);
    answers the steps whose status changed."""
    statuses = plan_statuses(
        steps, consent_granted=consent_granted(case["consent"]), case_open=case["status"] == "open"
    )
    changed = []
    for step, (status, reason) in zip(steps, statuses, strict=True):
        if (step["status"], step["status_reason"]) != (status, reason):
            step["status"], step["status_reason"] = status, reason
            changed.append(step)
    return changed


def first_steps(
    settled: Sequence[Mapping[str, Any]], *, consent: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """The rows of a new case's steps, with the statuses they start with."""
    steps = [
        {
            "id": uuid.uuid4(),
            "position": position,
            "owner_status": None,
            "referral_id": None,
            "referral_attempt": None,
            "referral_version": None,
            "referral_status": None,
            "referral_assignee_id": None,
            "referral_service_id": None,
            "status": None,
            "status_reason": None,
            **step,
        }
        for position, step in enumerate(settled, start=1)
    ]
    restatus({"consent": consent, "status": "open"}, steps)
    return steps


def reference_prefix(area_code: str, *, year: int) -> str:
    """A case reference is `<country>-<year>-<number, at least 6 digits>`."""
    return f"{area_code.split('-', 1)[0].upper()}-{year}-"


def reference(area_code: str, *, at: datetime, number: int) -> str:
    """The reference of a case created at `at` with this number."""
    return f"{reference_prefix(area_code, year=at.year)}{number:06d}"


def new_case_row(
    *, case_id: UUID, owner_id: UUID, body: Mapping[str, Any], reference: str, at: datetime
) -> dict[str, Any]:
    """The row of a new case, every column of `registry.cases` as the intake writes it."""
    return {
        "id": case_id,
        "reference": reference,
        "owner_partner_id": owner_id,
        "external_id": body.get("external_id"),
        "beneficiary": body["beneficiary"],
        "return_info": body["return"],
        "return_area_code": body["return"]["area_code"],
        "vulnerabilities": list(body.get("vulnerabilities") or []),
        "consent": body["consent"],
        "status": "open",
        "closure_reason": None,
        "merged_into": None,
        "closed_at": None,
        "erased_at": None,
        "erasure_reason": None,
        "version": 1,
        "created_at": at,
        "updated_at": at,
    }


# --- The case's fields ---------------------------------------------------------------------


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7396 JSON merge patch: null removes a key, objects merge, the rest replaces."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merge_patch(result[key], value)
        else:
            result[key] = value
    return result


def stored_changes(case: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """The columns that validated changes of `beneficiary`, `return`, `vulnerabilities` and
    `external_id` write (an unchanged external id writes nothing)."""
    values: dict[str, Any] = {}
    if "beneficiary" in changes:
        values["beneficiary"] = changes["beneficiary"]
    if "return" in changes:
        values["return_info"] = changes["return"]
        values["return_area_code"] = changes["return"]["area_code"]
    if "vulnerabilities" in changes:
        values["vulnerabilities"] = list(changes["vulnerabilities"])
    if "external_id" in changes and changes["external_id"] != case["external_id"]:
        values["external_id"] = changes["external_id"]
    return values


def is_unchanged(case: Mapping[str, Any], values: Mapping[str, Any]) -> bool:
    """Whether writing `values` would change nothing of the case."""
    return all(case.get(column) == value for column, value in values.items())


def check_upsert_keeps_plan_and_consent(
    case: Mapping[str, Any],
    steps: Sequence[Mapping[str, Any]],
    body: Mapping[str, Any],
    fields: set[str],
) -> None:
    """An upsert of an existing case changes neither its consent nor its plan (409): they
    have their own actions."""
    if "consent" in fields and body["consent"]["referral"] != (case["consent"] or {}).get(
        "referral"
    ):
        raise Conflict(
            "Consent changes through POST /cases/{id}/consent.", current_status=case["status"]
        )
    if "plan" in fields and [s["service_type"] for s in body["plan"]] != [
        s["service_type"] for s in steps
    ]:
        raise Conflict("The plan changes through the steps actions.", current_status=case["status"])


# --- Steps, closing, reopening -----------------------------------------------------------------


def step_to_settle(
    steps: Sequence[dict[str, Any]], *, case_id: UUID, step_id: UUID, owner_status: str
) -> dict[str, Any]:
    """The step an owner cancels (any delivery) or completes (a direct step whose
    dependencies are resolved); 404 or 409 otherwise."""
    step = next((s for s in steps if s["id"] == step_id), None)
    if step is None:
        raise NotFound(f"No step {step_id} in case {case_id}.")
    if step["status"] in FINISHED:
        raise Conflict(
            f"The step is already {step['status']}.",
            current_status=step["status"],
            allowed_actions=[],
        )
    if owner_status == "completed" and step["delivery"] != "direct":
        raise Conflict(
            "Only a direct step is completed by its owner; a referral step completes with its "
            "referral.",
            current_status=step["status"],
            allowed_actions=["cancel"],
        )
    if (
        owner_status == "completed"
        and step["status"] == "planned"
        and step["status_reason"] != ("ready")
    ):
        raise Conflict(
            "The step's dependencies are not resolved yet.",
            current_status=step["status"],
            allowed_actions=["cancel"],
        )
    return step


def step_event(owner_status: str) -> str:
    """The event of an owner's change of a step."""
    return "case.step_completed" if owner_status == "completed" else "case.plan_changed"


def check_not_erased(case: Mapping[str, Any]) -> None:
    """An erased case changes no more (409): erasure is final."""
    if case.get("erased_at") is not None:
        raise Conflict(
            f"The case was erased on {case['erased_at'].isoformat()}; it cannot change.",
            current_status=case["status"],
            allowed_actions=[],
        )


def erased_values(case: Mapping[str, Any]) -> dict[str, Any]:
    """The columns of a case an erasure writes (SPEC 9): the beneficiary reduced to its sex
    and birth year, the return to its area, no vulnerabilities."""
    return {
        "beneficiary": erase_beneficiary(case["beneficiary"]),
        "return_info": erase_return(case["return_info"]),
        "vulnerabilities": [],
    }


def erasure_result(case: Mapping[str, Any]) -> dict[str, Any]:
    """What an erasure answers, and `case.erased` carries, from the erased case's row."""
    return {
        "case_id": case["id"],
        "reference": case["reference"],
        "erased_at": case["erased_at"],
        "reason": case["erasure_reason"],
    }


def check_may_close(case: Mapping[str, Any]) -> None:
    """409 for a case already closed."""
    if case["status"] == "closed":
        raise Conflict(
            "The case is already closed.", current_status="closed", allowed_actions=["reopen"]
        )


def check_may_reopen(case: Mapping[str, Any]) -> None:
    """A closed case reopens, unless it was merged into another (409)."""
    if case["status"] == "open":
        raise Conflict("The case is open.", current_status="open", allowed_actions=["close"])
    if case["closure_reason"] == "merged":
        raise Conflict(
            f"The case was merged into {case['merged_into']}; it cannot be reopened.",
            current_status="closed",
            allowed_actions=[],
        )


# --- Merging ---------------------------------------------------------------------------------


def check_may_keep(keep: Mapping[str, Any]) -> None:
    """A case merged away cannot be the one kept (409): merge into the case it went to."""
    if keep["closure_reason"] == "merged":
        raise Conflict(
            f"The case to keep was merged into {keep['merged_into']}; merge into that one.",
            current_status="closed",
            allowed_actions=["dismiss"],
        )


def moved_steps(
    *,
    other_reference: str,
    other_steps: Sequence[Mapping[str, Any]],
    keep_steps: Sequence[Mapping[str, Any]],
    key_max: int,
) -> list[dict[str, Any]]:
    """The unfinished steps of the case merged away, as new steps of the kept case: keyed
    `<other reference>.<key>` (cut to `key_max`, numbered when taken), keeping their
    dependencies on each other; a dependency on a step already resolved is dropped."""
    unfinished = [s for s in other_steps if s["status"] not in FINISHED]
    taken = {s["key"] for s in keep_steps}
    new_key: dict[str, str] = {}
    for step in unfinished:
        base = f"{other_reference}.{step['key']}"
        candidate = base[:key_max]
        n = 1
        while candidate in taken:
            # The suffix stays whole, however long the key: a cut one would repeat forever.
            n += 1
            candidate = base[: key_max - len(f".{n}")] + f".{n}"
        taken.add(candidate)
        new_key[step["key"]] = candidate
    return [
        {
            "key": new_key[s["key"]],
            "service_type": s["service_type"],
            "priority": s["priority"],
            "delivery": s["delivery"],
            "depends_on": [new_key[d] for d in s["depends_on"] if d in new_key],
            "notes": s["notes"],
        }
        for s in unfinished
    ]


def check_pair_open(pair: Mapping[str, Any]) -> None:
    """A duplicate pair is decided once (409 after)."""
    if pair["status"] != "open":
        raise Conflict(f"The pair is already {pair['status']}.", current_status=pair["status"])


def merged_away_of(pair: Mapping[str, Any], *, keep_case_id: UUID) -> UUID:
    """The case of the pair that a merge keeping `keep_case_id` closes: 422 if that case is
    not in the pair, 409 for two owners' cases (they are linked, not merged)."""
    ids = [pair["case_a_id"], pair["case_b_id"]]
    if keep_case_id not in ids:
        raise Unprocessable(
            "keep_case_id must be one of the pair.",
            errors=[
                FieldError(field="body.keep_case_id", message="not in this pair", type="value")
            ],
        )
    if pair["a_owner"] != pair["b_owner"]:
        raise Conflict(
            "Only two cases of the same owner merge; link cases of two owners.",
            current_status="open",
            allowed_actions=["link", "dismiss"],
        )
    return next(i for i in ids if i != keep_case_id)


def check_may_merge_away(other: Mapping[str, Any]) -> None:
    """A case already merged is not merged again (409)."""
    if other["status"] == "closed" and other["closure_reason"] == "merged":
        raise Conflict("That case was already merged.", current_status="closed")
