"""Referrals as FHIR R4 Tasks and the steps they serve as ServiceRequests (SPEC 11.2). Pure.

The view is another shape of the Referral the REST API serves (`resources.resource`): the
same fields, read under the same tenancy, changed by the same lifecycle actions. The mapping
tables are in the README ("FHIR R4"); the Gravity SDOH referral pattern is followed where
it does not need profiles of its own: Task `intent` order, `code` fulfill, `focus` the
ServiceRequest, `requester` the case owner's Organization, `owner` the assignee's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from shared.errors import BadRequest, FieldError, Unprocessable
from shared.standards import (
    CASE_REFERENCE_SYSTEM,
    REFERRAL_ID_SYSTEM,
    REFERRAL_STATUS_SYSTEM,
    SERVICE_TYPES_SYSTEM,
)

FHIR_JSON = "application/fhir+json"
FHIR_VERSION = "4.0.1"
TASK_CODE_SYSTEM = "http://hl7.org/fhir/CodeSystem/task-code"

# Relais status → Task.status (businessStatus always carries the Relais status).
TASK_STATUS = {
    "unassigned": "draft",
    "requested": "requested",
    "accepted": "accepted",
    "rejected": "rejected",
    "in_progress": "in-progress",
    "completed": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
    "expired": "cancelled",
}
# Task.status a PATCH may set → the lifecycle action it runs.
ACTION_FOR_STATUS = {
    "accepted": "accept",
    "rejected": "reject",
    "in-progress": "start",
    "completed": "complete",
    "failed": "fail",
    "cancelled": "cancel",
}
# Actions that need a reason (statusReason) or an outcome (output).
NEEDS_REASON = frozenset({"reject", "fail", "cancel"})
NEEDS_OUTCOME = frozenset({"complete"})
PRIORITY = {"normal": "routine", "urgent": "urgent", "emergency": "asap"}
SERVICE_REQUEST_STATUS = {
    "unassigned": "active",
    "requested": "active",
    "accepted": "active",
    "in_progress": "active",
    "completed": "completed",
}  # any other (rejected, expired, failed, cancelled): revoked
# When what `GET /fhir/metadata` states last changed.
CAPABILITY_DATE = "2026-12-02"


def instant(value: datetime) -> str:
    """A FHIR instant: UTC with `Z`."""
    return value.isoformat().replace("+00:00", "Z")


def organization(partner_id: Any) -> dict[str, str]:
    return {"reference": f"Organization/{partner_id}", "type": "Organization"}


def patient(case: Mapping[str, Any]) -> dict[str, Any] | None:
    """The beneficiary as a contained Patient holding only the minimised case; None when the
    minimised case is withheld (it is then just its `reference`)."""
    person = case.get("beneficiary")
    if not person:
        return None
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": "beneficiary",
        "identifier": [{"system": CASE_REFERENCE_SYSTEM, "value": case["reference"]}],
    }
    name = {k: v for k, v in (("family", person.get("family_name")),) if v}
    if person.get("given_name"):
        name["given"] = [person["given_name"]]
    if name:
        resource["name"] = [name]
    if person.get("sex") in ("female", "male", "other", "unknown"):
        resource["gender"] = person["sex"]
    if person.get("birth_year"):
        resource["birthDate"] = f"{int(person['birth_year']):04d}"
    if person.get("phone"):
        resource["telecom"] = [{"system": "phone", "value": person["phone"], "use": "mobile"}]
    languages = person.get("languages") or []
    if languages:
        resource["communication"] = [
            {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": lang}]}}
            for lang in languages
        ]
    area = (case.get("return") or {}).get("area_code")
    if area:
        resource["address"] = [{"use": "home", "district": area, "text": f"Relais area {area}"}]
    return resource


def task(referral: Mapping[str, Any]) -> dict[str, Any]:
    """The Referral (as the REST API serves it) as a FHIR Task."""
    status = referral["status"]
    body: dict[str, Any] = {
        "resourceType": "Task",
        "id": str(referral["id"]),
        "meta": {
            "versionId": str(referral["version"]),
            "lastUpdated": instant(referral["updated_at"]),
        },
        "identifier": [
            {"system": REFERRAL_ID_SYSTEM, "value": str(referral["id"])},
            {"system": CASE_REFERENCE_SYSTEM, "value": referral["case_reference"]},
        ],
        "basedOn": [{"reference": f"ServiceRequest/{referral['step_id']}"}],
        "status": TASK_STATUS[status],
        "businessStatus": {
            "coding": [{"system": REFERRAL_STATUS_SYSTEM, "code": status}],
            "text": status,
        },
        "intent": "order",
        "priority": PRIORITY.get(referral["priority"], "routine"),
        "code": {"coding": [{"system": TASK_CODE_SYSTEM, "code": "fulfill"}]},
        "focus": {"reference": f"ServiceRequest/{referral['step_id']}"},
        "authoredOn": instant(referral["created_at"]),
        "lastModified": instant(referral["updated_at"]),
        "requester": organization(referral["owner_partner_id"]),
    }
    beneficiary = patient(referral.get("case") or {})
    if beneficiary is not None:
        body["contained"] = [beneficiary]
        body["for"] = {"reference": "#beneficiary", "type": "Patient"}
    if referral.get("assignee_partner_id") is not None:
        body["owner"] = organization(referral["assignee_partner_id"])
    if referral.get("deadline_at") is not None:
        body["restriction"] = {"period": {"end": instant(referral["deadline_at"])}}
    if referral.get("status_reason"):
        body["statusReason"] = {"text": referral["status_reason"]}
    if referral.get("outcome"):
        body["output"] = [{"type": {"text": "outcome"}, "valueString": referral["outcome"]}]
    notes = [
        {"time": instant(h["at"]) if isinstance(h["at"], datetime) else h["at"], "text": h["note"]}
        for h in referral.get("history") or []
        if h.get("note")
    ]
    if notes:
        body["note"] = notes
    return body


def service_request(referral: Mapping[str, Any], service_type_name: str | None = None) -> dict:
    """The step a referral serves, from its latest referral, as a FHIR ServiceRequest."""
    coding = {"system": SERVICE_TYPES_SYSTEM, "code": referral["service_type"]}
    if service_type_name:
        coding["display"] = service_type_name
    body: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": str(referral["step_id"]),
        "meta": {"lastUpdated": instant(referral["updated_at"])},
        "identifier": [{"system": CASE_REFERENCE_SYSTEM, "value": referral["case_reference"]}],
        "status": SERVICE_REQUEST_STATUS.get(referral["status"], "revoked"),
        "intent": "order",
        "priority": PRIORITY.get(referral["priority"], "routine"),
        "code": {"coding": [coding]},
        "authoredOn": instant(referral["created_at"]),
        "requester": organization(referral["owner_partner_id"]),
        "subject": {
            "identifier": {"system": CASE_REFERENCE_SYSTEM, "value": referral["case_reference"]}
        },
    }
    if referral.get("assignee_partner_id") is not None:
        body["performer"] = [organization(referral["assignee_partner_id"])]
    return body


def searchset(
    tasks: Sequence[dict[str, Any]], *, base: str, self_url: str, next_url: str | None
) -> dict[str, Any]:
    """A page of a Task search as a `searchset` Bundle, with its `next` link."""
    links = [{"relation": "self", "url": self_url}]
    if next_url is not None:
        links.append({"relation": "next", "url": next_url})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "link": links}
    if tasks:  # FHIR's JSON has no empty arrays
        bundle["entry"] = [
            {"fullUrl": f"{base}/Task/{t['id']}", "resource": t, "search": {"mode": "match"}}
            for t in tasks
        ]
    return bundle


ISSUE_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    409: "conflict",
    412: "conflict",
    413: "too-costly",
    415: "not-supported",
    422: "invalid",
    428: "required",
    503: "transient",
}


def operation_outcome(
    status: int,
    diagnostics: str,
    *,
    details: str | None = None,
    fields: Sequence[tuple[str, str]] = (),
) -> dict:
    """An error as FHIR says it: an OperationOutcome whose first issue says what happened
    and, for an invalid request, one more issue per field (`expression` names it)."""
    severity = "error" if status < 500 else "fatal"
    code = ISSUE_CODES.get(status, "exception" if status >= 500 else "processing")
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if details:
        issue["details"] = {"text": details}
    issues = [issue] + [
        {"severity": severity, "code": code, "diagnostics": message, "expression": [field]}
        for field, message in fields
    ]
    return {"resourceType": "OperationOutcome", "issue": issues}


def capability_statement(*, base: str, software_version: str, date: str) -> dict[str, Any]:
    """What `GET /fhir/metadata` answers: the Task and ServiceRequest interactions served."""
    search = [
        {"name": "owner", "type": "reference", "documentation": "Organization/<partner id>"},
        {"name": "requester", "type": "reference", "documentation": "Organization/<partner id>"},
        {"name": "status", "type": "token", "documentation": "A Task status; comma for any of"},
        {"name": "_lastUpdated", "type": "date", "documentation": "gt, ge, lt, le prefixes"},
        {"name": "_count", "type": "number", "documentation": "Page size, 1 to 200 (50)"},
    ]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "publisher": "Relais",
        "kind": "instance",
        "software": {"name": "Relais", "version": software_version},
        "implementation": {"description": "Relais referrals as FHIR Tasks", "url": base},
        "fhirVersion": FHIR_VERSION,
        "format": ["json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "description": "An API key of the coordination: Authorization: Bearer rk_..."
                },
                "resource": [
                    {
                        "type": "Task",
                        "versioning": "versioned-update",
                        "conditionalUpdate": False,
                        "interaction": [
                            {"code": "read"},
                            {"code": "search-type"},
                            {"code": "patch"},
                        ],
                        "searchParam": search,
                    },
                    {"type": "ServiceRequest", "interaction": [{"code": "read"}]},
                ],
            }
        ],
    }


def action_of_patch(operations: Any) -> tuple[str, dict[str, str]]:
    """The lifecycle action a JSON Patch of a Task asks for, and its body (`reason`,
    `outcome`, `note`). Only `/status` with, where the action needs one, `/statusReason` or
    `/output` may be patched."""
    if not isinstance(operations, list) or not operations:
        raise BadRequest("The body must be a JSON Patch: a non-empty array of operations.")
    wanted: dict[str, Any] = {}
    for position, op in enumerate(operations):
        where = f"body[{position}]"
        if not isinstance(op, dict) or op.get("op") not in ("replace", "add", "test"):
            raise _unprocessable(where, "only replace, add and test operations are taken")
        path = op.get("path")
        if op["op"] == "test":
            continue
        if path not in ("/status", "/statusReason", "/output", "/note"):
            raise _unprocessable(
                f"{where}.path", "only /status, /statusReason, /output and /note may change"
            )
        if "value" not in op:
            raise _unprocessable(f"{where}.value", "missing")
        wanted[path] = op["value"]
    status = wanted.get("/status")
    if status not in ACTION_FOR_STATUS:
        raise _unprocessable(
            "body", f"/status must be set to one of {', '.join(ACTION_FOR_STATUS)}"
        )
    action = ACTION_FOR_STATUS[status]
    body: dict[str, str] = {}
    note = _text(wanted.get("/note"))
    if note:
        body["note"] = note
    if action in NEEDS_REASON:
        reason = _text(wanted.get("/statusReason"))
        if not reason:
            raise _unprocessable("body", f"/statusReason (with a text) is needed to set {status}")
        body["reason"] = reason
    if action in NEEDS_OUTCOME:
        outcome = _output_text(wanted.get("/output"))
        if not outcome:
            raise _unprocessable("body", f"/output (with a valueString) is needed to set {status}")
        body["outcome"] = outcome
    return action, body


def _text(value: Any) -> str | None:
    """The text of a CodeableConcept, an Annotation list or a string."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, list) and value:
        return _text(value[0])
    if isinstance(value, dict):
        for key in ("text", "valueString"):
            if isinstance(value.get(key), str) and value[key].strip():
                return value[key].strip()
        coding = value.get("coding")
        if isinstance(coding, list) and coding and isinstance(coding[0], dict):
            return _text(coding[0].get("display") or coding[0].get("code"))
    return None


def _output_text(value: Any) -> str | None:
    if isinstance(value, list):
        texts = [t for t in (_text(item) for item in value) if t]
        return "\n".join(texts) or None
    return _text(value)


def _unprocessable(field: str, message: str) -> Unprocessable:
    return Unprocessable(
        f"{field}: {message}.", errors=[FieldError(field=field, message=message, type="invalid")]
    )
