"""The registry's step statuses follow the referral events of a batch, applied in order,
older news never overwriting newer."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

from services.registry import projector
from services.registry.app import create_app
from shared.eventlog.model import Event
from tests.conftest import running
from tests.factories import bearer, make_admin_key, make_case, make_partner, make_partner_key


def _referral_event(step: dict, *, attempt: int, version: int, status: str, **data) -> Event:
    return Event(
        seq=0,
        id=uuid4(),
        tx=0,
        type=f"referral.{status}",
        source="/referrals",
        subject="referrals/x",
        time=datetime.now(UTC),
        actor="system",
        audience=(),
        data={
            "id": data.get("referral_id", str(uuid4())),
            "step_id": step["id"],
            "attempt": attempt,
            "version": version,
            "status": status,
            "status_reason": data.get("reason"),
            "assignee_partner_id": data.get("assignee"),
            "service_id": None,
        },
    )


async def test_a_batch_of_referral_events_sets_each_steps_status_once(settings):
    app = create_app(settings)
    async with running(app) as client:
        admin = await make_admin_key(app.state.db)
        partner = await make_partner(client, admin, "ONG Sabou")
        key = (await make_partner_key(client, admin, partner["id"]))["key"]
        case = await make_case(client, key)  # steps 1 and 2 in parallel, 3 after both
        first, second, third = case["plan"]
        assignee = str(uuid4())
        referral = str(uuid4())
        batch = [
            _referral_event(first, attempt=1, version=1, status="requested", referral_id=referral),
            _referral_event(
                first, attempt=1, version=3, status="in_progress", referral_id=referral
            ),
            # Older news of the same referral, arriving late: ignored.
            _referral_event(first, attempt=1, version=2, status="accepted", referral_id=referral),
            _referral_event(second, attempt=1, version=1, status="requested", assignee=assignee),
            # The hub cancelled it (case closed): the step waits to be routed again.
            _referral_event(second, attempt=1, version=2, status="cancelled", reason="case_closed"),
            _referral_event(third, attempt=1, version=1, status="requested"),
            # The owner cancelled it: the step is cancelled with it.
            _referral_event(third, attempt=1, version=2, status="cancelled", reason="not needed"),
        ]
        async with app.state.db.transaction() as conn:
            await projector.project(conn, batch)

        read = (await client.get(f"/cases/{case['id']}", headers=bearer(key))).json()
        assert read["version"] == case["version"]  # step news does not version the case
        statuses = [(s["status"], s["status_reason"]) for s in read["plan"]]
        assert statuses[0] == ("in_progress", None)
        assert statuses[2] == ("cancelled", None)
        async with app.state.db.connection() as conn:
            rows = await conn.fetch(
                "SELECT id, referral_id, referral_status, referral_version, "
                "owner_status "
                "FROM registry.plan_steps WHERE case_id = $1 ORDER BY position",
                UUID(case["id"]),
            )
        assert [(r["referral_status"], r["referral_version"]) for r in rows] == [
            ("in_progress", 3),
            ("cancelled", 2),
            ("cancelled", 2),
        ]
        assert rows[0]["referral_id"] == UUID(referral)
        assert [r["owner_status"] for r in rows] == [None, None, "cancelled"]
        # Replaying the batch changes nothing.
        async with app.state.db.transaction() as conn:
            await projector.project(conn, batch)
        again = (await client.get(f"/cases/{case['id']}", headers=bearer(key))).json()
        assert again["plan"] == read["plan"]
