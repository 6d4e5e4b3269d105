"""The FHIR R4 view over real HTTP (SPEC 11.2): an assignee that never calls the REST API finds,
accepts, starts and completes its referral as a Task, and the owner's webhooks are those of the
REST actions; every resource served validates with `fhir.resources`' R4B models."""

from __future__ import annotations

import asyncio
import json

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.task import Task

from tests.factories import bearer, case_body
from tests.hub import eventually, running_hub
from tests.notifications.receiver import Receiver

FHIR_JSON = "application/fhir+json"
PATCH = {"Content-Type": "application/json-patch+json"}
MODELS = {
    "Task": Task,
    "ServiceRequest": ServiceRequest,
    "Bundle": Bundle,
    "CapabilityStatement": CapabilityStatement,
    "OperationOutcome": OperationOutcome,
}


def resource_of(response, status: int = 200) -> dict:
    """The FHIR resource a response carries, checked with the stock models."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    body = response.json()
    MODELS[body["resourceType"]].model_validate(body)
    return body


def one_training_step() -> dict:
    return case_body(plan=[{"service_type": "economic.vocational_training", "depends_on": []}])


async def test_an_assignee_works_its_referral_through_fhir_only(settings):
    receiver = Receiver()
    await receiver.start()
    try:
        async with running_hub(settings, webhook_retry_schedule=(0.2, 0.2)) as hub:
            owner = await hub.partner("ONG Sabou")
            centre = await hub.partner("CFP Kayes")
            await hub.service(centre, "economic.vocational_training", ["ML"])
            await hub.endpoint(owner, receiver.url, ["referral.*"])
            fhir = hub.referrals
            centre_key = bearer(centre["key"])

            capability = resource_of(await fhir.get("/fhir/metadata", headers=centre_key))
            assert capability["fhirVersion"] == "4.0.1"

            created = await hub.registry.post(
                "/cases", json=one_training_step(), headers=bearer(owner["key"])
            )
            assert created.status_code == 201, created.text
            case = created.json()

            search = f"/fhir/Task?owner=Organization/{centre['id']}&status=requested"

            async def found() -> list[dict]:
                bundle = resource_of(await fhir.get(search, headers=centre_key))
                assert bundle["type"] == "searchset"
                return bundle.get("entry", [])

            [entry] = await eventually(found)
            listed = entry["resource"]
            assert listed["status"] == "requested"
            assert listed["requester"]["reference"] == f"Organization/{owner['id']}"
            assert "contained" not in listed  # lists carry no Patient, as REST lists

            task = resource_of(await fhir.get(f"/fhir/Task/{listed['id']}", headers=centre_key))
            [patient] = task["contained"]
            assert patient["name"][0]["given"] == ["Aminata"]
            assert case["reference"] in {i["value"] for i in task["identifier"]}
            service_request = resource_of(
                await fhir.get(f"/fhir/{task['focus']['reference']}", headers=centre_key)
            )
            assert service_request["id"] == case["plan"][0]["id"]
            assert service_request["status"] == "active"

            version = task["meta"]["versionId"]
            for status, extra in (
                ("accepted", []),
                ("in-progress", []),
                (
                    "completed",
                    [{"op": "add", "path": "/output", "value": [{"valueString": "Diploma"}]}],
                ),
            ):
                patch = [{"op": "replace", "path": "/status", "value": status}, *extra]
                response = await fhir.patch(
                    f"/fhir/Task/{task['id']}",
                    content=json.dumps(patch),
                    headers={**centre_key, **PATCH, "If-Match": f'W/"{version}"'},
                )
                task = resource_of(response)
                assert task["status"] == status
                assert response.headers["etag"] == f'W/"{task["meta"]["versionId"]}"'
                version = task["meta"]["versionId"]
            assert task["output"][0]["valueString"] == "Diploma"

            def owner_events() -> dict[str, int]:
                """Each referral event type received, with the version it carries."""
                bodies = [json.loads(r.body) for r in receiver.requests]
                return {b["type"]: b["data"]["version"] for b in bodies}

            lifecycle = ["referral.accepted", "referral.started", "referral.completed"]
            await eventually(
                lambda: asyncio.sleep(0, set(lifecycle) <= owner_events().keys()), timeout=20
            )
            # Webhooks may arrive in any order (SPEC 8): the versions tell the lifecycle's.
            versions = owner_events()
            assert [versions[t] for t in lifecycle] == sorted(versions[t] for t in lifecycle)
            assert len({versions[t] for t in lifecycle}) == 3
            done = resource_of(
                await fhir.get(f"/fhir/ServiceRequest/{service_request['id']}", headers=centre_key)
            )
            assert done["status"] == "completed"

            # The REST view agrees: one referral, completed with the outcome.
            rest = await hub.referrals.get(f"/referrals/{task['id']}", headers=centre_key)
            assert rest.json()["status"] == "completed" and rest.json()["outcome"] == "Diploma"
    finally:
        await receiver.stop()


async def test_invalid_transitions_stale_versions_and_bad_patches_answer_operation_outcomes(
    settings,
):
    async with running_hub(settings) as hub:
        owner = await hub.partner("ONG Sabou")
        centre = await hub.partner("CFP Kayes")
        stranger = await hub.partner("ANPE")
        await hub.service(centre, "economic.vocational_training", ["ML"])
        await hub.registry.post("/cases", json=one_training_step(), headers=bearer(owner["key"]))
        key = bearer(centre["key"])

        async def requested() -> list[dict]:
            response = await hub.referrals.get("/fhir/Task?status=requested", headers=key)
            return resource_of(response).get("entry", [])

        [entry] = await eventually(requested)
        path = f"/fhir/Task/{entry['resource']['id']}"

        def patch(status: str, *extra: dict) -> str:
            return json.dumps([{"op": "replace", "path": "/status", "value": status}, *extra])

        # Completing a referral not yet accepted: 409, as the REST action answers.
        response = await hub.referrals.patch(
            path,
            content=patch("completed", {"op": "add", "path": "/output", "value": "x"}),
            headers={**key, **PATCH},
        )
        outcome = resource_of(response, 409)
        assert outcome["issue"][0]["code"] == "conflict"
        assert "accept" in outcome["issue"][0]["details"]["text"]

        # A stale If-Match: 412; nothing changed.
        response = await hub.referrals.patch(
            path, content=patch("accepted"), headers={**key, **PATCH, "If-Match": 'W/"99"'}
        )
        resource_of(response, 412)
        assert resource_of(await hub.referrals.get(path, headers=key))["status"] == "requested"

        # A rejection without a reason, a patch of another field, a body that is not JSON.
        for body, status in (
            (patch("rejected"), 422),
            (json.dumps([{"op": "replace", "path": "/owner", "value": {}}]), 422),
            ("not json", 400),
        ):
            response = await hub.referrals.patch(path, content=body, headers={**key, **PATCH})
            resource_of(response, status)

        # The owner may not accept (403); another partner does not see the Task (404); no key
        # (401); an unknown search status (400).
        response = await hub.referrals.patch(
            path, content=patch("accepted"), headers={**bearer(owner["key"]), **PATCH}
        )
        resource_of(response, 403)
        resource_of(await hub.referrals.get(path, headers=bearer(stranger["key"])), 404)
        resource_of(await hub.referrals.get(path), 401)
        resource_of(await hub.referrals.get("/fhir/Task?status=nonsense", headers=key), 400)

        # Rejected with a reason through FHIR: the REST view shows it.
        response = await hub.referrals.patch(
            path,
            content=patch(
                "rejected", {"op": "add", "path": "/statusReason", "value": {"text": "Full"}}
            ),
            headers={**key, **PATCH},
        )
        task = resource_of(response)
        assert task["status"] == "rejected" and task["statusReason"]["text"] == "Full"


async def test_searches_page_with_next_links_filter_and_respect_tenancy(settings):
    async with running_hub(settings) as hub:
        owner = await hub.partner("ONG Sabou")
        other_owner = await hub.partner("OIM")
        centre = await hub.partner("CFP Kayes")
        await hub.service(centre, "economic.vocational_training", ["ML"])
        for n in range(3):
            body = one_training_step() | {"external_id": f"EXT-{n}"}
            await hub.registry.post("/cases", json=body, headers=bearer(owner["key"]))
        await hub.registry.post(
            "/cases",
            json=one_training_step() | {"external_id": "EXT-OTHER"},
            headers=bearer(other_owner["key"]),
        )

        async def all_four() -> bool:
            response = await hub.referrals.get("/fhir/Task", headers=bearer(hub.admin))
            return len(resource_of(response).get("entry", [])) == 4

        await eventually(all_four)

        # The centre pages through its four Tasks two at a time, following `next`.
        seen: list[str] = []
        url = "/fhir/Task?_count=2"
        while url:
            bundle = resource_of(await hub.referrals.get(url, headers=bearer(centre["key"])))
            seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
            nexts = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
            url = "/fhir" + nexts[0].split("/fhir", 1)[1] if nexts else None
        assert len(seen) == len(set(seen)) == 4

        # An owner sees only the Tasks of its cases, even when it names another requester.
        mine = resource_of(await hub.referrals.get("/fhir/Task", headers=bearer(owner["key"]))).get(
            "entry", []
        )
        assert len(mine) == 3
        theirs = resource_of(
            await hub.referrals.get(
                f"/fhir/Task?requester=Organization/{other_owner['id']}",
                headers=bearer(owner["key"]),
            )
        )
        assert theirs.get("entry", []) == []
        by_requester = resource_of(
            await hub.referrals.get(
                f"/fhir/Task?requester=Organization/{other_owner['id']}",
                headers=bearer(hub.admin),
            )
        )
        assert len(by_requester["entry"]) == 1

        # _lastUpdated: everything is after 2020 and nothing after 2999.
        assert (
            len(
                resource_of(
                    await hub.referrals.get(
                        "/fhir/Task?_lastUpdated=gt2020-01-01", headers=bearer(hub.admin)
                    )
                )["entry"]
            )
            == 4
        )
        empty = resource_of(
            await hub.referrals.get(
                "/fhir/Task?_lastUpdated=ge2999-01-01T00:00:00Z", headers=bearer(hub.admin)
            )
        )
        assert empty.get("entry", []) == []
        assert [link["relation"] for link in empty["link"]] == ["self"]
