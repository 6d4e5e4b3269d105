"""The tenancy matrix of the referrals and notifications services: walking every route of
their OpenAPI documents, a partner never reads, lists or changes another partner's
referral, case pathway, endpoint, delivery or feed event. (The registry's matrix is in
tests/registry/test_tenancy.py.)"""

from __future__ import annotations

import asyncio
import json

from tests.factories import bearer, case_body
from tests.hub import eventually, running_hub
from tests.notifications.receiver import Receiver

PROBES = {"/healthz", "/readyz", "/metrics"}
PROBLEM = "application/problem+json"  # errors; the FHIR view's are OperationOutcomes


async def _fingerprint(hub) -> tuple:
    async with hub.db.connection() as conn:
        parts = []
        for table in (
            "referrals.referrals",
            "referrals.referral_history",
            "notifications.endpoints",
            "notifications.deliveries",
            "hub.events",
        ):
            parts.append(
                await conn.fetchval(
                    f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
                    f"FROM {table} AS t"
                )
            )
        return tuple(parts)


async def test_a_stranger_reaches_nothing_of_others_on_any_route(settings):
    receiver = Receiver()
    await receiver.start()
    try:
        async with running_hub(settings) as hub:
            owner = await hub.partner("ONG Sabou")
            provider = await hub.partner("CFP")
            stranger = await hub.partner("Stranger")
            await hub.service(provider, "economic.vocational_training", ["ML"])
            owner_endpoint = (
                await hub.notifications.post(
                    "/endpoints", json={"url": receiver.url}, headers=bearer(owner["key"])
                )
            ).json()
            provider_endpoint = (
                await hub.notifications.post(
                    "/endpoints", json={"url": receiver.url}, headers=bearer(provider["key"])
                )
            ).json()
            stranger_endpoint = (
                await hub.notifications.post(
                    "/endpoints", json={"url": receiver.url}, headers=bearer(stranger["key"])
                )
            ).json()
            case = (
                await hub.registry.post(
                    "/cases",
                    json=case_body(
                        plan=[{"service_type": "economic.vocational_training", "depends_on": []}]
                    ),
                    headers=bearer(owner["key"]),
                )
            ).json()

            async def routed():
                items = (
                    await hub.referrals.get("/referrals", headers=bearer(owner["key"]))
                ).json()["items"]
                return items[0] if items else None

            referral = await eventually(routed)

            async def delivered():
                page = (
                    await hub.notifications.get("/deliveries", headers=bearer(owner["key"]))
                ).json()
                return page["items"][0] if page["items"] else None

            delivery = await eventually(delivered)
            await asyncio.sleep(0.5)

            others = {
                "referral_id": referral["id"],
                "case_id": case["id"],
                "endpoint_id": owner_endpoint["id"],
                "delivery_id": delivery["id"],
                "step_id": referral["step_id"],
                "task_id": referral["id"],  # a FHIR Task is a referral
                "request_id": referral["step_id"],  # a ServiceRequest is a step
            }
            # Every route of the two services, as the stranger, with the others' ids.
            routes = {
                ("referrals", "GET", "/referrals"): ("list", None),
                ("referrals", "GET", "/referrals/{referral_id}"): (404, None),
                ("referrals", "POST", "/referrals/{referral_id}/accept"): (404, None),
                ("referrals", "POST", "/referrals/{referral_id}/reject"): (404, {"reason": "x"}),
                ("referrals", "POST", "/referrals/{referral_id}/start"): (404, None),
                ("referrals", "POST", "/referrals/{referral_id}/complete"): (404, {"outcome": "x"}),
                ("referrals", "POST", "/referrals/{referral_id}/fail"): (404, {"reason": "x"}),
                ("referrals", "POST", "/referrals/{referral_id}/cancel"): (404, {"reason": "x"}),
                ("referrals", "POST", "/referrals/{referral_id}/assign"): (
                    403,
                    {"partner_id": stranger["id"]},
                ),
                ("referrals", "GET", "/cases/{case_id}/pathway"): (404, None),
                ("referrals", "POST", "/routing/preview"): (
                    403,
                    {"case_id": case["id"], "step_id": referral["step_id"]},
                ),
                ("referrals", "GET", "/queues/unassigned"): (403, None),
                ("referrals", "GET", "/indicators"): ("list", None),
                ("referrals", "GET", "/gaps"): (403, None),
                # The FHIR view: the same tenancy, refusals as OperationOutcome documents.
                ("referrals", "GET", "/fhir/metadata"): ("list", None),
                ("referrals", "GET", "/fhir/Task"): ("list", None),
                ("referrals", "GET", "/fhir/Task/{task_id}"): (404, None),
                ("referrals", "PATCH", "/fhir/Task/{task_id}"): (
                    404,
                    [{"op": "replace", "path": "/status", "value": "accepted"}],
                ),
                ("referrals", "GET", "/fhir/ServiceRequest/{request_id}"): (404, None),
                ("notifications", "POST", "/endpoints"): (
                    403,
                    {"url": receiver.url, "partner_id": owner["id"]},
                ),
                ("notifications", "GET", "/endpoints"): ("list", None),
                ("notifications", "GET", "/endpoints/{endpoint_id}"): (404, None),
                ("notifications", "PATCH", "/endpoints/{endpoint_id}"): (
                    404,
                    {"description": "mine now"},
                ),
                ("notifications", "DELETE", "/endpoints/{endpoint_id}"): (404, None),
                ("notifications", "POST", "/endpoints/{endpoint_id}/rotate-secret"): (404, None),
                ("notifications", "POST", "/endpoints/{endpoint_id}/enable"): (404, None),
                ("notifications", "POST", "/endpoints/{endpoint_id}/test"): (404, None),
                ("notifications", "POST", "/endpoints/{endpoint_id}/recover"): (
                    404,
                    {"since": "2020-01-01T00:00:00Z"},
                ),
                ("notifications", "GET", "/deliveries"): ("list", None),
                ("notifications", "GET", "/deliveries/{delivery_id}"): (404, None),
                ("notifications", "POST", "/deliveries/{delivery_id}/retry"): (404, None),
                ("notifications", "GET", "/feed"): ("list", None),
            }
            clients = {"referrals": hub.referrals, "notifications": hub.notifications}
            for service, client in clients.items():
                spec = (await client.get("/openapi.json")).json()
                declared = {
                    (service, method.upper(), path)
                    for path, item in spec["paths"].items()
                    for method in item
                    if path not in PROBES
                }
                covered = {r for r in routes if r[0] == service}
                assert declared == covered, ("routes not walked", declared ^ covered)

            secret_ids = {str(v) for v in others.values()} | {owner["id"], provider["id"]}
            before = await _fingerprint(hub)
            for (service, method, path), (expected, body) in routes.items():
                url = path.format(**others)
                headers = bearer(stranger["key"])
                if body is not None:
                    fhir_patch = method == "PATCH" and path.startswith("/fhir/")
                    headers["Content-Type"] = (
                        "application/json-patch+json" if fhir_patch else "application/json"
                    )
                response = await clients[service].request(
                    method,
                    url,
                    content=json.dumps(body) if body is not None else None,
                    headers=headers,
                )
                where = f"{method} {path}"
                if expected == "list":
                    assert response.status_code == 200, (where, response.text)
                    body_text = response.text
                    leaked = [i for i in secret_ids if i in body_text]
                    assert not leaked, (where, leaked)
                else:
                    assert response.status_code == expected, (
                        where,
                        response.status_code,
                        response.text,
                    )
                    media = (
                        "application/fhir+json"
                        if path.startswith("/fhir/")
                        else "application/problem+json"
                    )
                    assert response.headers["content-type"] == media, where
                    assert not [
                        i
                        for i in secret_ids
                        if i in response.text and i not in json.dumps(body or {}) + url
                    ], where
            assert await _fingerprint(hub) == before, "a stranger's request changed something"

            # Deliveries by case are the admins' (a subject access export): a partner asking
            # for another's case, or its own, is refused and shown nothing.
            for key in (stranger["key"], owner["key"]):
                response = await hub.notifications.get(
                    "/deliveries", params={"case_id": case["id"]}, headers=bearer(key)
                )
                assert response.status_code == 403, response.text
                assert response.headers["content-type"] == PROBLEM
                assert delivery["id"] not in response.text

            # The stranger's indicators are its own, empty: one row of totals counting nothing,
            # and no group when grouped (by partner: not even the others' ids).
            own = await hub.referrals.get("/indicators", headers=bearer(stranger["key"]))
            assert [(r["referrals"], r["cases_referred"]) for r in own.json()["rows"]] == [(0, 0)]
            grouped = await hub.referrals.get(
                "/indicators",
                params={"group_by": "partner", "partner_id": owner["id"]},
                headers=bearer(stranger["key"]),
            )
            assert grouped.status_code == 200 and grouped.json()["rows"] == []

            # The stranger's own things still work, and the feed holds only its own events.
            assert (
                await hub.notifications.get(
                    f"/endpoints/{stranger_endpoint['id']}", headers=bearer(stranger["key"])
                )
            ).status_code == 200
            feed = (await hub.notifications.get("/feed", headers=bearer(stranger["key"]))).json()[
                "items"
            ]
            assert all(
                e["data"].get("id") in (stranger["id"], stranger_endpoint["id"]) for e in feed
            )
            # The provider sees its referral but not the owner's endpoint or deliveries.
            assert (
                await hub.notifications.get(
                    f"/endpoints/{owner_endpoint['id']}", headers=bearer(provider["key"])
                )
            ).status_code == 404
            assert (
                await hub.notifications.get(
                    f"/deliveries/{delivery['id']}", headers=bearer(provider["key"])
                )
            ).status_code == 404
            assert (
                await hub.referrals.get(
                    f"/cases/{case['id']}/pathway", headers=bearer(provider["key"])
                )
            ).status_code == 404
            provider_view = (
                await hub.referrals.get(
                    f"/referrals/{referral['id']}", headers=bearer(provider["key"])
                )
            ).json()
            assert provider_view["decision"] is None
            # Through FHIR: the provider finds its Task; the stranger, naming the provider as
            # the owner, finds nothing.
            search = f"/fhir/Task?owner=Organization/{provider['id']}"
            mine = (await hub.referrals.get(search, headers=bearer(provider["key"]))).json()
            assert [e["resource"]["id"] for e in mine["entry"]] == [referral["id"]]
            theirs = (await hub.referrals.get(search, headers=bearer(stranger["key"]))).json()
            assert "entry" not in theirs and referral["id"] not in json.dumps(theirs)
            del provider_endpoint
    finally:
        await receiver.stop()
