"""Personal data never goes into logs: a whole scenario, logged at INFO, holds no name,
phone or document number of the beneficiary."""

from __future__ import annotations

import json

from tests.factories import bearer, case_body
from tests.hub import eventually, running_hub
from tests.notifications.receiver import Receiver

PERSONAL = (
    "Aminata",
    "Traoré",
    "Traore",
    "+22370123456",
    "70123456",
    "AA1234567",
    "Kadiatou",
    "Bagayoko",
)


async def test_a_scenario_logs_no_personal_data(settings, capfd):
    receiver = Receiver()
    await receiver.start()
    try:
        async with running_hub(settings, log_level="INFO") as hub:
            owner = await hub.partner("ONG Sabou")
            provider = await hub.partner("CFP")
            await hub.service(provider, "economic.vocational_training", ["ML"])
            await hub.notifications.post(
                "/endpoints", json={"url": receiver.url}, headers=bearer(provider["key"])
            )
            case = (
                await hub.registry.post(
                    "/cases",
                    json=case_body(
                        plan=[{"service_type": "economic.vocational_training", "depends_on": []}]
                    ),
                    headers=bearer(owner["key"]),
                )
            ).json()
            # Errors too: invalid input that quotes personal data must not be echoed to logs.
            bad = case_body(external_id="X-2")
            bad["beneficiary"] = {
                **bad["beneficiary"],
                "given_name": "Kadiatou",
                "family_name": "Bagayoko",
                "phone": "not a phone +22370123456",
                "date_of_birth": "2990-01-01",
            }
            assert (
                await hub.registry.post("/cases", json=bad, headers=bearer(owner["key"]))
            ).status_code == 422

            async def routed():
                items = (
                    await hub.referrals.get(
                        "/referrals", params={"role": "incoming"}, headers=bearer(provider["key"])
                    )
                ).json()["items"]
                return items[0] if items else None

            referral = await eventually(routed)
            await hub.referrals.get(f"/referrals/{referral['id']}", headers=bearer(provider["key"]))
            await hub.registry.get(f"/cases/{case['id']}", headers=bearer(provider["key"]))
            await hub.registry.patch(
                f"/cases/{case['id']}",
                json={"beneficiary": {"phone": "+22376543210"}},
                headers=bearer(owner["key"]),
            )
            await hub.referrals.post(
                f"/referrals/{referral['id']}/accept", headers=bearer(provider["key"])
            )
            await eventually(lambda: _arrived(receiver, 2))
    finally:
        await receiver.stop()
    out = capfd.readouterr()
    logged = out.out + out.err
    lines = [line for line in logged.splitlines() if line.startswith("{")]
    assert len(lines) > 10, "the scenario logged nothing: the test proves nothing"
    assert any(json.loads(line).get("event") == "request" for line in lines)
    for word in (*PERSONAL, "+22376543210"):
        assert word not in logged, f"{word!r} found in the logs"


async def _arrived(receiver: Receiver, n: int) -> bool:
    return len(receiver.requests) >= n
