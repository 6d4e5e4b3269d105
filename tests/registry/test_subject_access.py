"""Subject access (SPEC 9): `GET /cases/{id}/export` (admin) answers, in one JSON document,
everything the hub holds about the person of a case: the case, its referrals with their
histories, the events about it, the deliveries of those events (which partners received
them, without bodies, from the notifications service over HTTP) and the access log."""

from __future__ import annotations

from uuid import UUID, uuid4

from services.registry.app import create_app as registry_app
from services.registry.store import subject_access
from shared.eventlog.about_case import CASE_OF_EVENT
from tests.conftest import running
from tests.factories import bearer, case_body
from tests.hub import eventually, running_hub, two_cases_for_a_provider
from tests.notifications.receiver import Receiver
from tests.registry.helpers import assert_problem

PLAN = [{"service_type": "economic.vocational_training", "depends_on": [], "notes": "Tailoring"}]


async def _events_about(hub, case_id: str) -> list[str]:
    async with hub.db.connection() as conn:
        rows = await conn.fetch(
            f"SELECT id::text FROM hub.events WHERE {CASE_OF_EVENT} = $1 ORDER BY tx, seq",
            case_id,
        )
    return [r[0] for r in rows]


async def _export_lines(hub) -> int:
    async with hub.db.connection() as conn:
        return await conn.fetchval("SELECT count(*) FROM registry.access_log WHERE view = 'export'")


async def test_the_export_holds_the_case_its_referrals_events_deliveries_and_reads(settings):
    receiver = Receiver()
    await receiver.start()
    try:
        async with running_hub(settings, notifications_over_http=True) as hub:
            owner, provider, case, other = await two_cases_for_a_provider(
                hub, receiver.url, PLAN, "SAR"
            )

            async def routed():
                page = await hub.call(
                    "GET",
                    "referrals",
                    "/referrals",
                    key=provider["key"],
                    params={"case_id": case["id"]},
                )
                return page["items"][0] if page["items"] else None

            referral = await eventually(routed)
            await hub.call(
                "POST", "referrals", f"/referrals/{referral['id']}/accept", key=provider["key"]
            )
            # Reads of the case: full by its owner, minimised by the assignee.
            await hub.call("GET", "registry", f"/cases/{case['id']}", key=owner["key"])

            async def minimised():
                response = await hub.registry.get(
                    f"/cases/{case['id']}", headers=bearer(provider["key"])
                )
                return response.status_code == 200 and "beneficiary" in response.json()

            await eventually(minimised)

            async def accepted_delivered():
                page = await hub.call(
                    "GET",
                    "notifications",
                    "/deliveries",
                    params={"case_id": case["id"], "event_type": "referral.accepted"},
                )
                return len(page["items"]) == 2  # the owner and the provider

            await eventually(accepted_delivered)

            response = await hub.registry.get(
                f"/cases/{case['id']}/export", headers=bearer(hub.admin)
            )
            assert response.status_code == 200, response.text
            export = response.json()

            # The case, as its owner reads it.
            read = await hub.call("GET", "registry", f"/cases/{case['id']}", key=owner["key"])
            assert export["case"] == read
            assert export["case"]["beneficiary"]["id_documents"][0]["number"] == "AA1234567"
            assert export["closed_at"] is None
            # Its referral, with its whole history.
            [exported_referral] = export["referrals"]
            assert exported_referral["id"] == referral["id"]
            assert exported_referral["status"] == "accepted"
            assert [h["status"] for h in exported_referral["history"]] == [
                "requested",
                "accepted",
            ]
            # Every event about it, in the log's order, and none of the other case's.
            ids = [e["id"] for e in export["events"]]
            assert ids == await _events_about(hub, case["id"])
            assert not set(ids) & set(await _events_about(hub, other["id"]))
            types = [e["type"] for e in export["events"]]
            assert types[0] == "case.created"
            assert {"referral.created", "referral.accepted"} <= set(types)
            sequences = [e["sequence"] for e in export["events"]]
            assert sequences == sorted(sequences)
            # The deliveries of those events: who received them, without any body.
            listed = await hub.call(
                "GET",
                "notifications",
                "/deliveries",
                params={"case_id": case["id"], "limit": 500},
            )
            assert [d["id"] for d in export["deliveries"]] == [d["id"] for d in listed["items"]]
            assert {d["partner_id"] for d in export["deliveries"]} == {owner["id"], provider["id"]}
            assert {d["event_id"] for d in export["deliveries"]} <= set(ids)
            for delivery in export["deliveries"]:
                assert set(delivery) == {
                    "id",
                    "event_id",
                    "event_type",
                    "endpoint_id",
                    "partner_id",
                    "status",
                    "attempt_count",
                    "created_at",
                }
            # Every read of it, this export last.
            lines = export["access_log"]
            assert {"full", "minimised"} <= {line["view"] for line in lines}
            assert {line["case_id"] for line in lines} == {case["id"]}
            assert lines[-1]["view"] == "export"
            assert lines[-1]["route"] == "/cases/{case_id}/export"
            assert lines[-1]["partner_id"] is None and lines[-1]["key_id"]
            log = await hub.call(
                "GET", "registry", "/access-log", params={"case_id": case["id"], "limit": 500}
            )
            assert lines[-1] in log["items"]  # the export, as GET /access-log lists it

            # Closed, the export says since when.
            await hub.call(
                "POST",
                "registry",
                f"/cases/{case['id']}/close",
                key=owner["key"],
                json={"reason": "support_ended"},
            )

            async def cancelled_export():
                export = await hub.call("GET", "registry", f"/cases/{case['id']}/export")
                return export if export["referrals"][0]["status"] == "cancelled" else None

            # The referrals service cancels the live referral of a closed case.
            again = await eventually(cancelled_export)
            assert again["case"]["status"] == "closed" and again["closed_at"]
            assert [h["status"] for h in again["referrals"][0]["history"]][-1] == "cancelled"

            # Admins only; a case that does not exist is a 404.
            before = await _export_lines(hub)
            for key in (owner["key"], provider["key"]):
                assert_problem(
                    await hub.registry.get(f"/cases/{case['id']}/export", headers=bearer(key)),
                    403,
                )
            assert_problem(
                await hub.registry.get(f"/cases/{uuid4()}/export", headers=bearer(hub.admin)),
                404,
            )
            assert await _export_lines(hub) == before
    finally:
        await receiver.stop()


async def test_without_the_notifications_service_the_export_is_a_503_and_nothing_partial(
    settings,
):
    # Nothing listens on port 9: the connection is refused at once.
    cut_off = settings.model_copy(update={"notifications_url": "http://127.0.0.1:9"})
    async with running_hub(settings) as hub:
        owner = await hub.partner("ONG Sabou")
        case = await hub.call(
            "POST", "registry", "/cases", key=owner["key"], json=case_body(plan=[]), ok=(201,)
        )
        app = registry_app(cut_off)
        async with running(app) as registry:
            response = await registry.get(f"/cases/{case['id']}/export", headers=bearer(hub.admin))
            problem = assert_problem(response, 503)
            assert "notifications" in problem["detail"]
            assert response.headers["retry-after"]
            assert "items" not in problem and "case" not in problem
        assert await _export_lines(hub) == 0  # an export not given is not recorded


async def test_the_log_is_read_through_the_index_of_the_events_about_a_case(settings):
    """The store's statements use `ix_events_case` (their expression is the index's)."""
    async with running_hub(settings) as hub, hub.db.connection() as conn:
        await conn.execute("SET enable_seqscan = off")
        for statement in (subject_access._EVENTS_ABOUT, subject_access._REFERRALS_OF):
            plan = await conn.fetch(
                "EXPLAIN " + statement.sql, *statement.args({"case_id": str(UUID(int=1))})
            )
            assert "ix_events_case" in "\n".join(r[0] for r in plan), statement.sql
