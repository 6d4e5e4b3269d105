"""`GET /indicators` on a constructed set of referrals whose every figure is worked out by
hand below.

The referrals are made through the real flow (cases through the registry, actions through
the API, an expiry by the sweeper, a re-routing by the router, an assignment by an admin),
then, with the workers stopped, dated by writing their creation and history times (and the
pathways' completion, and R5's deadline) in the database and writing the rollup again from
them, so that every duration is known.

The referrals, with the times written (period: 2026-03-01 included to 2026-05-01 excluded):

ref  case: owner, area  type   to  att  status       created  requested  accepted  completed
R1   C1: O, ML-1-01     voc    A   1    completed    03-03 9h =created   03-03 11h 03-04 11h
R2   C1                 couns  B   1    completed    03-03 9h =created   03-03 13h 03-06 13h
R3   C2: O, ML-1-02     voc    A   1    rejected     03-05 10h =created
R3b  C2                 voc    A   2    in_progress  04-02 8h 04-04 8h   04-04 14h
R4   C3: P, ML-BKO-03   couns  B   1    expired      03-10 12h =created
R4b  C3                 couns  -   2    unassigned   04-06 12h
U1   C4: P, ML-BKO-03   voc    -   1    unassigned   02-25 10h (before the period)
R5   C5: O, ML-1-03     couns  B   1    requested    04-08 9h =created (deadline 04-11: overdue)
R6   C6: O, ML-1-01     voc    A   1    failed       04-10 7h =created   04-10 17h
R6b  C6                 voc    -   2    unassigned   04-15 7h
R7   C7: P, ML-BKO-03   couns  B   1    cancelled    03-12 15h =created
R8   C8: O, ML-1-02     couns  B   1    accepted     03-20 8h =created   03-21 14h

voc = economic.vocational_training (A covers the Kayes region, ML-1); couns =
psychosocial.individual_counselling (B covers Mali). C1's pathway completed on 04-20 (in the
period), C7's (its only step cancelled) on 05-10 (after it). R3b was created unassigned
(A had rejected, no one else offers it in Kayes) and assigned to A by an admin on 04-04.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import httpx

from services.referrals import rebuild
from services.referrals.app import create_app as referrals_app
from services.referrals.store import indicators as indicator_store
from shared.db import Database
from tests.conftest import running
from tests.factories import bearer, case_body, distinct_person
from tests.hub import eventually, running_hub

VOC = "economic.vocational_training"
COUNS = "psychosocial.individual_counselling"
PERIOD = {"from": "2026-03-01", "to": "2026-05-01"}
STATUSES = (
    "requested",
    "accepted",
    "in_progress",
    "unassigned",
    "rejected",
    "expired",
    "completed",
    "failed",
    "cancelled",
)


def at(month: int, day: int, hour: int = 0) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def by_status(**counts: int | None) -> dict[str, int | None]:
    return {status: counts.get(status, 0) for status in STATUSES}


async def _case(hub, owner: dict, number: int, area: str, *types: str) -> dict:
    body = case_body(
        external_id=f"IND-{number}",
        beneficiary=distinct_person(number),
        plan=[{"service_type": t, "depends_on": []} for t in types],
    )
    body["return"] = {**body["return"], "area_code": area}
    response = await hub.registry.post("/cases", json=body, headers=bearer(owner["key"]))
    assert response.status_code == 201, response.text
    return response.json()


async def _referral(hub, case: dict, **match: Any) -> dict:
    """The case's referral matching `match` (status, service_type, attempt), once it exists."""

    async def found():
        items = (
            await hub.referrals.get(
                "/referrals", params={"case_id": case["id"]}, headers=bearer(hub.admin)
            )
        ).json()["items"]
        return next((i for i in items if all(i[k] == v for k, v in match.items())), None)

    return await eventually(found)


async def _act(hub, key: str, referral: dict, action: str, body: dict | None = None) -> dict:
    response = await hub.referrals.post(
        f"/referrals/{referral['id']}/{action}", json=body, headers=bearer(key)
    )
    assert response.status_code == 200, (action, response.text)
    return response.json()


async def _date(
    conn,
    referral: dict,
    created: datetime,
    *,
    requested: datetime | None = None,
    accepted: datetime | None = None,
    completed: datetime | None = None,
) -> None:
    """Date a referral: its creation and every history line, then the lines that matter."""
    rid = referral["id"]
    await conn.execute("UPDATE referrals.referrals SET created_at = $2 WHERE id = $1", rid, created)
    await conn.execute(
        "UPDATE referrals.referral_history SET at = $2 WHERE referral_id = $1", rid, created
    )
    for status, moment in (
        ("requested", requested or created),
        ("accepted", accepted),
        ("completed", completed),
    ):
        if moment is not None:
            await conn.execute(
                "UPDATE referrals.referral_history SET at = $3 "
                "WHERE referral_id = $1 AND status = $2",
                rid,
                status,
                moment,
            )


async def _indicators(hub, key: str | None = None, **params: Any) -> dict:
    response = await hub.referrals.get(
        "/indicators", params={**PERIOD, **params}, headers=bearer(key or hub.admin)
    )
    assert response.status_code == 200, response.text
    return response.json()


async def _build(hub) -> dict[str, Any]:
    """The referrals of the table above, made through the flow and dated; returns the
    partners, cases and referrals by name."""
    owner_o = await hub.partner("ONG Sabou")
    owner_p = await hub.partner("OIM Mali")
    provider_a = await hub.partner("CFP Kayes")
    provider_b = await hub.partner("Centre Ecoute")
    await hub.service(provider_a, VOC, ["ML-1"])
    await hub.service(provider_b, COUNS, ["ML"])

    c1 = await _case(hub, owner_o, 1, "ML-1-01", VOC, COUNS)
    c2 = await _case(hub, owner_o, 2, "ML-1-02", VOC)
    c3 = await _case(hub, owner_p, 3, "ML-BKO-03", COUNS)
    c4 = await _case(hub, owner_p, 4, "ML-BKO-03", VOC)
    c5 = await _case(hub, owner_o, 5, "ML-1-03", COUNS)
    c6 = await _case(hub, owner_o, 6, "ML-1-01", VOC)
    c7 = await _case(hub, owner_p, 7, "ML-BKO-03", COUNS)
    c8 = await _case(hub, owner_o, 8, "ML-1-02", COUNS)
    a, b = provider_a["key"], provider_b["key"]

    r1 = await _referral(hub, c1, service_type=VOC, status="requested")
    await _act(hub, a, r1, "accept")
    await _act(hub, a, r1, "complete", {"outcome": "Certificate"})
    r2 = await _referral(hub, c1, service_type=COUNS, status="requested")
    await _act(hub, b, r2, "accept")
    await _act(hub, b, r2, "complete", {"outcome": "Sessions held"})

    r3 = await _referral(hub, c2, status="requested")
    await _act(hub, a, r3, "reject", {"reason": "No place"})
    r3b = await _referral(hub, c2, status="unassigned", attempt=2)
    response = await hub.referrals.post(
        f"/referrals/{r3b['id']}/assign",
        json={"partner_id": provider_a["id"]},
        headers=bearer(hub.admin),
    )
    assert response.status_code == 200, response.text
    await _act(hub, a, r3b, "accept")
    await _act(hub, a, r3b, "start")

    r4 = await _referral(hub, c3, status="requested")
    async with hub.db.connection() as conn:  # past its deadline: the sweeper expires it
        await conn.execute(
            "UPDATE referrals.referrals SET deadline_at = now() - interval '1 minute' "
            "WHERE id = $1",
            r4["id"],
        )
    await _referral(hub, c3, status="expired")
    r4b = await _referral(hub, c3, status="unassigned", attempt=2)

    u1 = await _referral(hub, c4, status="unassigned")
    r5 = await _referral(hub, c5, status="requested")
    r6 = await _referral(hub, c6, status="requested")
    await _act(hub, a, r6, "accept")
    await _act(hub, a, r6, "fail", {"reason": "Moved away"})
    r6b = await _referral(hub, c6, status="unassigned", attempt=2)
    r7 = await _referral(hub, c7, status="requested")
    await _act(hub, owner_p["key"], r7, "cancel", {"reason": "Not needed"})
    r8 = await _referral(hub, c8, status="requested")
    await _act(hub, b, r8, "accept")

    async def settled() -> bool:
        """The reconciler has refreshed every referral's row and completed C1's and C7's
        pathways."""
        async with hub.db.connection() as conn:
            behind = await conn.fetchval(
                "SELECT count(*) FROM referrals.referrals AS r "
                "LEFT JOIN referrals.referral_facts AS f ON f.referral_id = r.id "
                "WHERE f.referral_id IS NULL OR f.status <> r.status "
                "OR f.assignee_partner_id IS DISTINCT FROM r.assignee_partner_id"
            )
            total = await conn.fetchval("SELECT count(*) FROM referrals.referral_facts")
            completed = await conn.fetchval(
                "SELECT count(*) FROM referrals.cases WHERE pathway_completed AND id = ANY($1)",
                [c1["id"], c7["id"]],
            )
        return behind == 0 and total == 12 and completed == 2

    await eventually(settled)
    stranger = await hub.partner("Stranger")
    return {
        "partners": {"O": owner_o, "P": owner_p, "A": provider_a, "B": provider_b, "S": stranger},
        "cases": {"C1": c1, "C7": c7},
        "referrals": {
            "R1": r1,
            "R2": r2,
            "R3": r3,
            "R3b": r3b,
            "R4": r4,
            "R4b": r4b,
            "U1": u1,
            "R5": r5,
            "R6": r6,
            "R6b": r6b,
            "R7": r7,
            "R8": r8,
        },
    }


async def _date_everything(db: Database, made: dict[str, Any]) -> None:
    r, c = made["referrals"], made["cases"]
    async with db.transaction() as conn:
        await _date(
            conn, r["R1"], at(3, 3, 9), accepted=at(3, 3, 11), completed=at(3, 4, 11)
        )  # 2 h to acceptance, 1 day to completion
        await _date(
            conn, r["R2"], at(3, 3, 9), accepted=at(3, 3, 13), completed=at(3, 6, 13)
        )  # 4 h, 3 days
        await _date(conn, r["R3"], at(3, 5, 10))
        # Created unassigned on 04-02, assigned on 04-04 08:00: 6 h to acceptance (not 54).
        await _date(conn, r["R3b"], at(4, 2, 8), requested=at(4, 4, 8), accepted=at(4, 4, 14))
        await _date(conn, r["R4"], at(3, 10, 12))
        await _date(conn, r["R4b"], at(4, 6, 12))
        await _date(conn, r["U1"], at(2, 25, 10))
        await _date(conn, r["R5"], at(4, 8, 9))
        # R5 is overdue: still requested, its deadline passed (no sweeper runs any more).
        await conn.execute(
            "UPDATE referrals.referrals SET deadline_at = $2 WHERE id = $1",
            r["R5"]["id"],
            at(4, 11, 9),
        )
        await _date(conn, r["R6"], at(4, 10, 7), accepted=at(4, 10, 17))  # 10 h
        await _date(conn, r["R6b"], at(4, 15, 7))
        await _date(conn, r["R7"], at(3, 12, 15))
        await _date(conn, r["R8"], at(3, 20, 8), accepted=at(3, 21, 14))  # 30 h
        for case, moment in ((c["C1"], at(4, 20, 10)), (c["C7"], at(5, 10, 10))):
            await conn.execute(
                "UPDATE referrals.cases SET pathway_completed_at = $2 WHERE id = $1",
                case["id"],
                moment,
            )
        assert await indicator_store.rebuild(conn) == 12


@dataclass
class Quiet:
    """The referrals service alone, without workers: the figures stay as they were dated."""

    referrals: httpx.AsyncClient
    admin: str
    db: Database


@asynccontextmanager
async def _constructed(settings) -> AsyncIterator[tuple[Quiet, dict[str, Any]]]:
    """The referrals of the table above, made through the whole hub, then dated with the
    workers stopped; the referrals service runs on without them."""
    async with running_hub(settings) as hub:
        made = await _build(hub)
        admin = hub.admin
    app = referrals_app(settings)  # `settings` runs no workers
    async with running(app) as client:
        await _date_everything(app.state.db, made)
        yield Quiet(referrals=client, admin=admin, db=app.state.db), made


# The figures of every referral of the period (all but U1), worked out by hand:
# 11 referrals: R1 R2 R3 R3b R4 R4b R5 R6 R6b R7 R8; cases C1 C2 C3 C5 C6 C7 C8 = 7.
# Ever accepted: R1 R2 R3b R6 R8 = 5; rejected: R3 = 1; answered = 6; expired: R4 = 1.
# Acceptance 5/6 = 0.8333; rejection 1/6 = 0.1667; expiry 1/(6 + 1) = 0.1429.
# Re-routed steps (a referral of attempt > 1): C2's (R3b), C3's (R4b), C6's (R6b) = 3.
# Hours to acceptance: R1 2, R2 4, R3b 6, R6 10, R8 30 -> median 6; p90 at position
# 0.9 * (5 - 1) = 3.6 -> 10 + 0.6 * (30 - 10) = 22.0. Days to completion: R1 1, R2 3 -> 2.0.
# Overdue: R5. Unassigned: R4b, R6b. Pathways completed in the period: C1 (C7's is after).
TOTALS = {
    "cases_referred": 7,
    "referrals": 11,
    "by_status": by_status(
        requested=1,  # R5
        accepted=1,  # R8
        in_progress=1,  # R3b
        unassigned=2,  # R4b, R6b
        rejected=1,  # R3
        expired=1,  # R4
        completed=2,  # R1, R2
        failed=1,  # R6
        cancelled=1,  # R7
    ),
    "accepted": 5,
    "answered": 6,
    "acceptance_rate": 0.8333,
    "rejection_rate": 0.1667,
    "expiry_rate": 0.1429,
    "rerouted_steps": 3,
    "hours_to_acceptance_median": 6.0,
    "hours_to_acceptance_p90": 22.0,
    "days_to_completion_median": 2.0,
    "overdue_now": 1,
    "unassigned_now": 2,
    "pathways_completed": 1,
    "suppressed": False,
}
# Region ML-1 (Kayes): C1 C2 C5 C6 C8, 8 referrals: R1 R2 R3 R3b R5 R6 R6b R8. The same
# accepted ones and durations as the totals; no expiry (0 / 6 = 0.0); re-routed: C2, C6.
KAYES = {
    "region": "ML-1",
    "cases_referred": 5,
    "referrals": 8,
    "by_status": by_status(
        requested=1, accepted=1, in_progress=1, unassigned=1, rejected=1, completed=2, failed=1
    ),
    "accepted": 5,
    "answered": 6,
    "acceptance_rate": 0.8333,
    "rejection_rate": 0.1667,
    "expiry_rate": 0.0,
    "rerouted_steps": 2,
    "hours_to_acceptance_median": 6.0,
    "hours_to_acceptance_p90": 22.0,
    "days_to_completion_median": 2.0,
    "overdue_now": 1,
    "unassigned_now": 1,
    "pathways_completed": 1,
    "suppressed": False,
}
# Region ML-BKO (Bamako): C3 C7, 3 referrals: R4 (expired), R4b (unassigned), R7
# (cancelled). Nothing answered: no acceptance or rejection rate; expiry 1 / (0 + 1) = 1.0.
# Re-routed: C3. C7's pathway completed after the period.
BAMAKO = {
    "region": "ML-BKO",
    "cases_referred": 2,
    "referrals": 3,
    "by_status": by_status(unassigned=1, expired=1, cancelled=1),
    "accepted": 0,
    "answered": 0,
    "acceptance_rate": None,
    "rejection_rate": None,
    "expiry_rate": 1.0,
    "rerouted_steps": 1,
    "hours_to_acceptance_median": None,
    "hours_to_acceptance_p90": None,
    "days_to_completion_median": None,
    "overdue_now": 0,
    "unassigned_now": 1,
    "pathways_completed": 0,
    "suppressed": False,
}
# Provider A sees the referrals it is assigned: R1 (completed), R3 (rejected), R3b (in
# progress, attempt 2), R6 (failed); cases C1 C2 C6. Ever accepted: R1 R3b R6 = 3, answered
# 4: 0.75 and 0.25, no expiry (0 / 4). Re-routed: C2. Hours: 2, 6, 10 -> median 6, p90 at
# 0.9 * 2 = 1.8 -> 6 + 0.8 * (10 - 6) = 9.2. Days: R1's 1.0. C1's pathway completed.
PROVIDER_A = {
    "cases_referred": 3,
    "referrals": 4,
    "by_status": by_status(in_progress=1, rejected=1, completed=1, failed=1),
    "accepted": 3,
    "answered": 4,
    "acceptance_rate": 0.75,
    "rejection_rate": 0.25,
    "expiry_rate": 0.0,
    "rerouted_steps": 1,
    "hours_to_acceptance_median": 6.0,
    "hours_to_acceptance_p90": 9.2,
    "days_to_completion_median": 1.0,
    "overdue_now": 0,
    "unassigned_now": 0,
    "pathways_completed": 1,
    "suppressed": False,
}


async def test_every_figure_of_a_constructed_set_of_referrals_as_worked_out_by_hand(settings):
    async with _constructed(settings) as (hub, made):
        partners = made["partners"]

        document = await _indicators(hub)
        assert document["from"] == "2026-03-01" and document["to"] == "2026-05-01"
        assert document["group_by"] == [] and document["min_cell"] is None
        assert document["rows"] == [TOTALS]

        by_region = await _indicators(hub, group_by="region")
        assert by_region["rows"] == [KAYES, BAMAKO]

        # Owner O's cases are exactly Kayes's: its own view, and an admin's with partner_id.
        kayes = {k: v for k, v in KAYES.items() if k != "region"}
        assert (await _indicators(hub, partners["O"]["key"]))["rows"] == [kayes]
        assert (await _indicators(hub, partner_id=partners["O"]["id"]))["rows"] == [kayes]
        # A provider sees the referrals it was assigned, and only those.
        assert (await _indicators(hub, partners["A"]["key"]))["rows"] == [PROVIDER_A]
        assert (await _indicators(hub, partner_id=partners["A"]["id"]))["rows"] == [PROVIDER_A]
        # A partner's partner_id only narrows its own: O and A share R1 R3 R3b R6.
        narrowed = await _indicators(hub, partners["O"]["key"], partner_id=partners["A"]["id"])
        assert narrowed["rows"] == [PROVIDER_A]
        assert (await _indicators(hub, partners["S"]["key"]))["rows"] == [
            {
                **{k: 0 for k in ("cases_referred", "referrals", "accepted", "answered")},
                "by_status": by_status(),
                "acceptance_rate": None,
                "rejection_rate": None,
                "expiry_rate": None,
                "rerouted_steps": 0,
                "hours_to_acceptance_median": None,
                "hours_to_acceptance_p90": None,
                "days_to_completion_median": None,
                "overdue_now": 0,
                "unassigned_now": 0,
                "pathways_completed": 0,
                "suppressed": False,
            }
        ]
        # Filters: an area and what lies under it, a service type.
        assert (await _indicators(hub, area="ML-1"))["rows"] == [kayes]
        cercle = (await _indicators(hub, area="ML-1-01"))["rows"][0]  # C1, C6: R1 R2 R6 R6b
        assert (cercle["referrals"], cercle["cases_referred"], cercle["rerouted_steps"]) == (
            4,
            2,
            1,
        )
        voc = (await _indicators(hub, service_type=VOC))["rows"][0]  # R1 R3 R3b R6 R6b
        assert (voc["referrals"], voc["cases_referred"], voc["accepted"]) == (5, 3, 3)
        assert voc["hours_to_acceptance_median"] == 6.0  # 2, 6, 10

        # month x service_type: C1 counts in both of March's rows; C2 in a row of each month.
        by_month = await _indicators(hub, group_by="month,service_type")
        assert [
            (
                r["month"],
                r["service_type"],
                r["referrals"],
                r["cases_referred"],
                r["rerouted_steps"],
                r["accepted"],
            )
            for r in by_month["rows"]
        ] == [
            ("2026-03", VOC, 2, 2, 0, 1),  # R1, R3
            ("2026-03", COUNS, 4, 4, 0, 2),  # R2, R4, R7, R8
            ("2026-04", VOC, 3, 2, 2, 2),  # R3b, R6, R6b
            ("2026-04", COUNS, 2, 2, 1, 0),  # R4b, R5
        ]
        march_couns = by_month["rows"][1]
        assert march_couns["hours_to_acceptance_median"] == 17.0  # R2 4, R8 30
        assert march_couns["hours_to_acceptance_p90"] == 27.4  # 4 + 0.9 * 26
        assert march_couns["expiry_rate"] == 0.3333  # R4: 1 / (2 answered + 1)
        assert set(by_month["rows"][0]) == {"month", "service_type", *TOTALS}

        by_dimension = await _indicators(hub, group_by="dimension")
        assert [(r["dimension"], r["referrals"]) for r in by_dimension["rows"]] == [
            ("economic", 5),
            ("psychosocial", 6),
        ]
        # The day totals and the referrals' rows give the same figures, whatever the shape.
        async with hub.db.connection() as conn:
            for group_by, filters in (
                ((), {}),
                (("region",), {}),
                (("month", "service_type"), {}),
                (("dimension", "area"), {}),
                (("month",), {"area": "ML-1"}),
                (("region",), {"service_type": COUNS}),
            ):
                asked = {
                    "start": date(2026, 3, 1),
                    "end": date(2026, 5, 1),
                    "group_by": group_by,
                    "viewer_partner_id": None,
                    **filters,
                }
                totals = await indicator_store.indicator_counts(conn, **asked)
                rows = await indicator_store.indicator_counts(conn, **asked, per_referral=True)
                assert totals == rows, (group_by, filters)
                assert totals and all(g.referrals for g in totals)

        by_partner = await _indicators(hub, group_by="partner")
        assert {r["partner"]: r["referrals"] for r in by_partner["rows"]} == {
            partners["A"]["id"]: 4,  # R1 R3 R3b R6
            partners["B"]["id"]: 5,  # R2 R4 R5 R7 R8
            None: 2,  # R4b R6b
        }
        assert by_partner["rows"][-1]["partner"] is None  # nulls last


async def test_small_cells_are_withheld_and_the_csv_holds_the_same_rows(settings):
    async with _constructed(settings) as (hub, _made):
        # With min_cell=2, every count under 2 is null, with the rates and durations built on
        # one: in Kayes, each status but `completed` (2); the rejection rate (1 rejected), the
        # expiry rate (0 expired); overdue (1), unassigned (1), pathways (1). The acceptance
        # rate (5 of 6) and the durations (5 accepted, 2 completed) stay.
        rows = (await _indicators(hub, group_by="region", min_cell=2))["rows"]
        withheld = dict.fromkeys(STATUSES)
        assert rows == [
            {
                **KAYES,
                "by_status": {**withheld, "completed": 2},
                "rejection_rate": None,
                "expiry_rate": None,
                "overdue_now": None,
                "unassigned_now": None,
                "pathways_completed": None,
                "suppressed": True,
            },
            # Bamako: 2 cases and 3 referrals stay; every other count is 0 or 1.
            {
                "region": "ML-BKO",
                "cases_referred": 2,
                "referrals": 3,
                "by_status": withheld,
                "accepted": None,
                "answered": None,
                "acceptance_rate": None,
                "rejection_rate": None,
                "expiry_rate": None,
                "rerouted_steps": None,
                "hours_to_acceptance_median": None,
                "hours_to_acceptance_p90": None,
                "days_to_completion_median": None,
                "overdue_now": None,
                "unassigned_now": None,
                "pathways_completed": None,
                "suppressed": True,
            },
        ]

        for params in ({"group_by": "region,service_type", "min_cell": 2}, {"group_by": "month"}):
            document = await _indicators(hub, **params)
            response = await hub.referrals.get(
                "/indicators",
                params={**PERIOD, **params},
                headers={**bearer(hub.admin), "Accept": "text/csv"},
            )
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "text/csv; charset=utf-8"
            table = list(csv.DictReader(io.StringIO(response.text)))
            assert len(table) == len(document["rows"]) > 1
            for line, row in zip(table, document["rows"], strict=True):
                statuses = row.pop("by_status")
                flat = {**row, **{f"status_{s}": n for s, n in statuses.items()}}
                assert set(line) == set(flat)
                for column, value in flat.items():
                    expected = (
                        ""
                        if value is None
                        else str(value).lower()
                        if isinstance(value, bool)
                        else str(value)
                    )
                    assert line[column] == expected, (column, line[column], value)


async def test_the_rollup_follows_the_referrals_and_the_rebuild_writes_it_again(settings):
    async with running_hub(settings) as hub:
        owner = await hub.partner("ONG Sabou")
        provider = await hub.partner("CFP Kayes")
        await hub.service(provider, VOC, ["ML"])
        case = await _case(hub, owner, 1, "ML-1-01", VOC)
        referral = await _referral(hub, case, status="requested")
        await _act(hub, provider["key"], referral, "accept")
        await _act(hub, provider["key"], referral, "complete", {"outcome": "Done"})

        async def completed() -> dict | None:
            async with hub.db.connection() as conn:
                row = await conn.fetchrow(
                    "SELECT * FROM referrals.referral_facts WHERE referral_id = $1",
                    referral["id"],
                )
            return dict(row) if row and row["pathway_completed_at"] is not None else None

        row = await eventually(completed)
        assert row["status"] == "completed" and row["area_code"] == "ML-1-01"
        assert row["requested_at"] <= row["accepted_at"] <= row["completed_at"]
        assert row["acceptance_minutes"] == row["completion_minutes"] == 0
        assert row["completed_day"] == row["pathway_completed_at"].date()

        # The case moves: its referral counts in its new area.
        response = await hub.registry.patch(
            f"/cases/{case['id']}",
            json={"return": {"area_code": "ML-2-01"}},
            headers=bearer(owner["key"]),
        )
        assert response.status_code == 200, response.text

        async def moved() -> bool:
            async with hub.db.connection() as conn:
                return (
                    await conn.fetchval(
                        "SELECT area_code FROM referrals.referral_facts WHERE referral_id = $1",
                        referral["id"],
                    )
                    == "ML-2-01"
                )

        await eventually(moved)
        today = await hub.referrals.get(
            "/indicators", params={"group_by": "region"}, headers=bearer(hub.admin)
        )
        assert [(r["region"], r["referrals"]) for r in today.json()["rows"]] == [("ML-2", 1)]

        async def rollup() -> list:
            """The rows and the day totals (without the totals the moves brought to 0)."""
            async with hub.db.connection() as conn:
                return [
                    sorted(tuple(r) for r in await conn.fetch(query))
                    for query in (
                        "SELECT * FROM referrals.referral_facts",
                        "SELECT * FROM referrals.indicator_days WHERE referrals <> 0",
                        "SELECT * FROM referrals.indicator_firsts WHERE n <> 0",
                        "SELECT * FROM referrals.indicator_durations WHERE n <> 0",
                    )
                ]

        before = await rollup()
        assert all(before)  # a row, its day, its firsts, its durations
        async with hub.db.transaction() as conn:
            for table in ("referral_facts", "indicator_days", "indicator_firsts"):
                await conn.execute(f"DELETE FROM referrals.{table}")
            await conn.execute("UPDATE referrals.cases SET pathway_completed_at = NULL")
        assert await rebuild.main(settings) > 0
        assert await rollup() == before


async def test_bad_requests_answer_422_and_gaps_are_for_admins(settings):
    async with running_hub(settings) as hub:
        partner = await hub.partner("ONG Sabou")
        for params in (
            {"group_by": "region,region"},
            {"group_by": "province"},
            {"group_by": "region,area,month"},
            {"from": "2026-05-01", "to": "2026-05-01"},
            {"area": "ML-99"},
            {"service_type": "economic.unknown"},
            {"min_cell": 0},
        ):
            response = await hub.referrals.get(
                "/indicators", params=params, headers=bearer(hub.admin)
            )
            assert response.status_code == 422, (params, response.text)
            assert response.headers["content-type"] == "application/problem+json"
        assert (await hub.referrals.get("/gaps", headers=bearer(partner["key"]))).status_code == 403
        default = (await hub.referrals.get("/indicators", headers=bearer(hub.admin))).json()
        assert (
            datetime.fromisoformat(default["to"]).date()
            - datetime.fromisoformat(default["from"]).date()
        ).days == 365
