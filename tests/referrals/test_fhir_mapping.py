"""The FHIR mapping of a referral (services/referrals/fhir.py), unit by unit: every resource it
builds validates with the stock R4B models of `fhir.resources`, and the JSON Patch of a Task
names the lifecycle action it runs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.task import Task

from services.referrals import fhir
from shared.errors import BadRequest, Unprocessable

NOW = datetime(2026, 12, 2, 10, 30, tzinfo=UTC)
MINIMISED = {
    "reference": "CNRM-2026-000042",
    "beneficiary": {
        "given_name": "Aminata",
        "family_name": "Traoré",
        "sex": "female",
        "birth_year": 1996,
        "phone": "+22370123456",
        "languages": ["bm", "fr"],
    },
    "return": {"area_code": "ML-1"},
    "vulnerabilities": [],
    "steps": [],
}


def referral(**overrides):
    body = {
        "id": uuid.uuid4(),
        "case_id": uuid.uuid4(),
        "case_reference": "CNRM-2026-000042",
        "step_id": uuid.uuid4(),
        "service_type": "economic.vocational_training",
        "priority": "urgent",
        "status": "requested",
        "status_reason": None,
        "assignee_partner_id": uuid.uuid4(),
        "service_id": uuid.uuid4(),
        "owner_partner_id": uuid.uuid4(),
        "deadline_at": NOW + timedelta(hours=72),
        "attempt": 1,
        "outcome": None,
        "case": MINIMISED,
        "history": [{"status": "requested", "at": NOW, "actor": "system", "note": "routed"}],
        "version": 1,
        "created_at": NOW,
        "updated_at": NOW,
    }
    return body | overrides


@pytest.mark.parametrize(
    ("status", "task_status"),
    [
        ("unassigned", "draft"),
        ("requested", "requested"),
        ("accepted", "accepted"),
        ("rejected", "rejected"),
        ("in_progress", "in-progress"),
        ("completed", "completed"),
        ("failed", "failed"),
        ("cancelled", "cancelled"),
        ("expired", "cancelled"),
    ],
)
def test_every_status_maps_to_a_task_status_with_the_relais_one_as_business_status(
    status, task_status
):
    task = fhir.task(referral(status=status))
    Task.model_validate(task)
    assert task["status"] == task_status
    assert task["businessStatus"]["coding"][0]["code"] == status


def test_a_task_carries_the_referral():
    source = referral(status="completed", outcome="Certificate obtained", version=4)
    task = fhir.task(source)
    Task.model_validate(task)
    assert task["id"] == str(source["id"])
    assert task["meta"]["versionId"] == "4"
    assert task["intent"] == "order" and task["priority"] == "urgent"
    assert task["code"]["coding"][0]["code"] == "fulfill"
    assert task["focus"]["reference"] == f"ServiceRequest/{source['step_id']}"
    assert task["requester"]["reference"] == f"Organization/{source['owner_partner_id']}"
    assert task["owner"]["reference"] == f"Organization/{source['assignee_partner_id']}"
    assert task["restriction"]["period"]["end"] == "2026-12-05T10:30:00Z"
    assert task["output"][0]["valueString"] == "Certificate obtained"
    assert {i["value"] for i in task["identifier"]} == {str(source["id"]), "CNRM-2026-000042"}
    [patient] = task["contained"]
    assert task["for"]["reference"] == "#beneficiary"
    assert patient["name"] == [{"family": "Traoré", "given": ["Aminata"]}]
    assert patient["gender"] == "female" and patient["birthDate"] == "1996"
    assert patient["telecom"][0]["value"] == "+22370123456"


def test_a_withheld_minimised_case_leaves_no_patient():
    task = fhir.task(referral(status="rejected", case={"reference": "CNRM-2026-000042"}))
    Task.model_validate(task)
    assert "contained" not in task and "for" not in task


def test_an_unassigned_referral_has_no_owner_and_a_reason():
    task = fhir.task(referral(status="unassigned", assignee_partner_id=None, status_reason="x"))
    Task.model_validate(task)
    assert "owner" not in task and task["statusReason"] == {"text": "x"}


@pytest.mark.parametrize(
    ("status", "request_status"),
    [("requested", "active"), ("completed", "completed"), ("failed", "revoked")],
)
def test_the_service_request_of_the_step(status, request_status):
    source = referral(status=status, priority="emergency")
    body = fhir.service_request(source, "Vocational training")
    ServiceRequest.model_validate(body)
    assert body["id"] == str(source["step_id"]) and body["status"] == request_status
    assert body["priority"] == "asap"
    assert body["code"]["coding"][0]["code"] == "economic.vocational_training"
    assert body["performer"][0]["reference"].startswith("Organization/")


def test_bundle_capability_statement_and_operation_outcome_validate():
    tasks = [fhir.task(referral()) for _ in range(2)]
    bundle = fhir.searchset(
        tasks, base="http://h/fhir", self_url="http://h/fhir/Task", next_url=None
    )
    Bundle.model_validate(bundle)
    assert [link["relation"] for link in bundle["link"]] == ["self"]
    CapabilityStatement.model_validate(
        fhir.capability_statement(base="http://h/fhir", software_version="1", date="2026-12-02")
    )
    for status in (400, 401, 403, 404, 409, 412, 422, 503):
        OperationOutcome.model_validate(fhir.operation_outcome(status, "why"))


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ([{"op": "replace", "path": "/status", "value": "accepted"}], ("accept", {})),
        ([{"op": "replace", "path": "/status", "value": "in-progress"}], ("start", {})),
        (
            [
                {"op": "replace", "path": "/status", "value": "rejected"},
                {"op": "add", "path": "/statusReason", "value": {"text": "No place"}},
            ],
            ("reject", {"reason": "No place"}),
        ),
        (
            [
                {"op": "replace", "path": "/status", "value": "completed"},
                {"op": "add", "path": "/output", "value": [{"valueString": "Done"}]},
            ],
            ("complete", {"outcome": "Done"}),
        ),
        (
            [
                {"op": "test", "path": "/status", "value": "requested"},
                {"op": "replace", "path": "/status", "value": "cancelled"},
                {"op": "add", "path": "/statusReason", "value": {"text": "Duplicate"}},
                {"op": "add", "path": "/note", "value": [{"text": "Seen twice"}]},
            ],
            ("cancel", {"note": "Seen twice", "reason": "Duplicate"}),
        ),
    ],
)
def test_a_patch_names_its_action(patch, expected):
    assert fhir.action_of_patch(patch) == expected


@pytest.mark.parametrize(
    ("patch", "error"),
    [
        ({"op": "replace"}, BadRequest),
        ([], BadRequest),
        ([{"op": "remove", "path": "/status"}], Unprocessable),
        ([{"op": "replace", "path": "/owner", "value": {}}], Unprocessable),
        ([{"op": "replace", "path": "/status", "value": "draft"}], Unprocessable),
        ([{"op": "replace", "path": "/status", "value": "rejected"}], Unprocessable),
        ([{"op": "replace", "path": "/status", "value": "completed"}], Unprocessable),
        ([{"op": "replace", "path": "/status", "value": "cancelled"}], Unprocessable),
    ],
)
def test_a_patch_that_is_not_an_action_is_refused(patch, error):
    with pytest.raises(error):
        fhir.action_of_patch(patch)
