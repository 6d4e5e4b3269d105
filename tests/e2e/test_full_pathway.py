"""The whole hub as processes on loopback ports, one PostgreSQL, four partners' receivers:
a full reintegration pathway over real HTTP, with a rejection re-routed and the
notifications service killed and restarted in the middle."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.e2e.processes import ADMIN_KEY, SERVICES, Services
from tests.factories import case_body
from tests.notifications.receiver import Receiver

pytestmark = pytest.mark.slow


class Partner:
    def __init__(self, name: str, partner: dict, key: str, receiver: Receiver, secret: str) -> None:
        self.name, self.id, self.key = name, partner["id"], key
        self.receiver, self.secret = receiver, secret
        self.seen = 0

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def events(self) -> list[dict]:
        """Every webhook received so far, each verified with the partner's secret."""
        verified = []
        for request in self.receiver.requests:
            headers = {k: v for k, v in request.headers.items() if k.startswith("webhook-")}
            verified.append(Webhook(self.secret).verify(request.body, headers))
        return verified

    async def next_referral(self, service_type: str, timeout: float = 30) -> dict:
        """Wait for a referral.created (or assigned) webhook addressed to this partner."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events():
                data = event["data"]
                if (
                    event["type"] in ("referral.created", "referral.assigned")
                    and data.get("assignee_partner_id") == self.id
                    and data["service_type"] == service_type
                    and data["status"] == "requested"
                ):
                    return data
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.name} got no {service_type} referral")


async def test_a_full_pathway_across_processes_with_a_restart(database_url):
    hub = Services(database_url)
    receivers = {name: Receiver() for name in ("owner", "counsel", "training_bko", "training_ml")}
    for receiver in receivers.values():
        await receiver.start()
    try:
        for name in SERVICES:
            await hub.start(name)
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with httpx.AsyncClient(timeout=30) as http:
            reg, ref, notif = (hub.url(n) for n in SERVICES)

            async def partner(label: str, name: str) -> Partner:
                created = (
                    await http.post(
                        f"{reg}/partners", json={"name": name, "kind": "ngo"}, headers=admin
                    )
                ).json()
                key = (
                    await http.post(
                        f"{reg}/partners/{created['id']}/api-keys", json={}, headers=admin
                    )
                ).json()["key"]
                endpoint = await http.post(
                    f"{notif}/endpoints",
                    json={"url": receivers[label].url, "event_types": ["referral.*", "case.*"]},
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert endpoint.status_code == 201, endpoint.text
                return Partner(label, created, key, receivers[label], endpoint.json()["secret"])

            owner = await partner("owner", "ONG Sabou")
            counsel = await partner("counsel", "Centre Psy Bamako")
            training_bko = await partner("training_bko", "CFP Bamako")
            training_ml = await partner("training_ml", "ANPE")
            for who, service_type, areas in (
                (counsel, "psychosocial.individual_counselling", ["ML-BKO"]),
                (training_bko, "economic.vocational_training", ["ML-BKO-03"]),
                (training_ml, "economic.vocational_training", ["ML"]),
                (training_ml, "economic.microbusiness", ["ML"]),
            ):
                response = await http.post(
                    f"{reg}/services",
                    json={"service_type": service_type, "name": service_type, "areas": areas},
                    headers=who.headers,
                )
                assert response.status_code == 201, response.text

            created = await http.post(f"{reg}/cases", json=case_body(), headers=owner.headers)
            assert created.status_code == 201, created.text
            case = created.json()

            async def act(
                who: Partner, referral: dict, action: str, body: dict | None = None
            ) -> dict:
                response = await http.post(
                    f"{ref}/referrals/{referral['id']}/{action}", json=body, headers=who.headers
                )
                assert response.status_code == 200, (action, response.text)
                return response.json()

            # Steps 1 and 2 reach their partners by signed webhook.
            r1 = await counsel.next_referral("psychosocial.individual_counselling")
            r2 = await training_bko.next_referral("economic.vocational_training")
            assert r1["case"]["reference"] == case["reference"]
            assert "AA1234567" not in json.dumps(r1)
            for action, body in (
                ("accept", None),
                ("start", None),
                ("complete", {"outcome": "done"}),
            ):
                await act(counsel, r1, action, body)

            # A rejection, and the notifications service dies while the re-routing happens.
            await act(training_bko, r2, "reject", {"reason": "no place"})
            hub.kill("notifications")
            await asyncio.sleep(1.0)
            await hub.start("notifications")
            r2b = await training_ml.next_referral("economic.vocational_training")
            assert r2b["attempt"] == 2 and r2b["step_id"] == r2["step_id"]
            for action, body in (("accept", None), ("complete", {"outcome": "certificate"})):
                await act(training_ml, r2b, action, body)

            r3 = await training_ml.next_referral("economic.microbusiness")
            for action, body in (
                ("accept", None),
                ("start", None),
                ("complete", {"outcome": "shop open"}),
            ):
                await act(training_ml, r3, action, body)

            deadline = time.monotonic() + 30
            while not any(e["type"] == "case.pathway_completed" for e in owner.events()):
                assert time.monotonic() < deadline, "the owner was not told the pathway is complete"
                await asyncio.sleep(0.1)

            pathway = (
                await http.get(f"{ref}/cases/{case['id']}/pathway", headers=owner.headers)
            ).json()
            assert [s["status"] for s in pathway["steps"]] == ["completed"] * 3

            # The owner heard of every change of every referral of its case.
            transitions = set()
            for referral in (r1, r2, r2b, r3):
                detail = (
                    await http.get(f"{ref}/referrals/{referral['id']}", headers=owner.headers)
                ).json()
                transitions |= {(referral["id"], h["status"]) for h in detail["history"]}
            # Webhooks travel in parallel: wait until every transition has reached the owner.
            deadline = time.monotonic() + 20
            while True:
                told = {
                    (e["data"]["id"], e["data"]["status"])
                    for e in owner.events()
                    if e["type"].startswith("referral.")
                }
                if transitions <= told or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert transitions <= told, transitions - told
            # And no partner heard of another's referral.
            for who in (counsel, training_bko, training_ml):
                for event in who.events():
                    if event["type"].startswith("referral."):
                        assert event["data"]["assignee_partner_id"] == who.id
    finally:
        hub.stop_all()
        for receiver in receivers.values():
            await receiver.stop()
