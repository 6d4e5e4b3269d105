"""HTTP of the coordination's view (SPEC 12): `GET /indicators` and `GET /gaps`.

The figures' definitions live in `indicators` (pure) and are written out in the operations'
descriptions below and in the README ("Indicators and gaps"); the counts come from the
store's rollup.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response

from services.referrals.indicators import (
    CSV_MEDIA_TYPE,
    DIMENSIONS,
    GAP_LEVELS,
    RECENT_DAYS,
    Offer,
    Period,
    figures,
    gap_table,
    parse_group_by,
    prefers_csv,
    render_csv,
)
from services.referrals.resources import now_utc
from services.referrals.schemas import GapLevel, GapsRead, IndicatorsRead
from services.referrals.store import Connection, loads
from services.referrals.store import indicators as indicator_store
from shared.deps import Admin, Caller, DbDep
from shared.errors import unknown_reference

router = APIRouter(tags=["coordination"])

_DIMENSION = "|".join(DIMENSIONS)
GROUP_BY_PATTERN = f"^({_DIMENSION})(,({_DIMENSION}))?$"

INDICATORS_DESCRIPTION = """
Figures over the referrals **created in the period**: from `from` (included) to `to`
(excluded), whole days in UTC. Without `to`, the period ends tonight (today included);
without `from`, it starts 365 days before `to`.

`group_by` takes up to two dimensions, comma-separated: `region` (the region, an area of
depth 1 such as a region or the district of Bamako, that the case's return area lies in),
`area` (the case's return area), `service_type`, `dimension` (the service type's),
`partner` (the assignee; null while unassigned), `month` (of the referral's creation,
`YYYY-MM`, UTC). A referral's area is its case's return area as the case is now. Without
`group_by`, one row of totals (even when it counts nothing); with it, one row per group
that has referrals, ordered by the groups' values.

An admin key counts every referral; a partner key only the referrals it is the owner or the
assignee of. Filters: `area` (the case's return area is that area or one under it),
`service_type`, `partner_id` (that partner is the owner or the assignee: an admin sees the
figures that partner sees; for a partner key it only narrows its own referrals).

The figures of a row, over its referrals:
- `referrals`; `cases_referred`, the distinct cases among them; `by_status`, by their status
  now;
- `accepted`: those that were accepted, whatever followed (in progress, completed, failed, or
  cancelled after acceptance); `answered`: accepted + rejected;
- `acceptance_rate` = accepted / answered; `rejection_rate` = rejected / answered;
  `expiry_rate` = expired / (answered + expired), the share of the referrals that got an
  answer or ran out of time that ran out of time; four decimals, null when nothing is
  counted under the line;
- `rerouted_steps`: the distinct steps with a referral of `attempt` > 1 among them;
- `hours_to_acceptance_median` and `hours_to_acceptance_p90`: hours from the moment the
  referral was requested (its creation, or its assignment for one created unassigned) to
  its acceptance, over the accepted ones; `days_to_completion_median`: days from acceptance
  to completion, over the completed ones; continuous percentiles (PostgreSQL's
  `percentile_cont`, interpolating between the two nearest values), two decimals;
- `overdue_now`: still `requested` and past their deadline now, when the figures are asked
  for; `unassigned_now`: `unassigned` now;
- `pathways_completed`: the distinct cases among them whose pathway (every step completed or
  cancelled) last completed within the period (their last `case.pathway_completed`).

`min_cell=N`, for tables that will be published: each count under N (zero included) is
null, and so is each rate or duration built on one (a rate on its numerator and its
denominator, a duration on the number of values it summarises); the row then says
`suppressed: true`. Only the cells themselves are withheld (no complementary suppression).

`Accept: text/csv` answers the same rows as CSV: a header line (the grouped dimensions, then
the figures, `by_status` as `status_<status>`), an empty cell for null, the same numbers.

The figures come from a rollup that the referrals worker keeps up to date as it processes
the referral events: a change shows within moments.
"""

GAPS_DESCRIPTION = f"""
For each area of the level (`region`: depth 1, the regions and the district of Bamako;
`cercle`: depth 2) and each service type (or the one given), by area code then service
type:
- `demand`: `waiting_steps` (steps of open cases, of that type, with `delivery: referral`,
  neither completed nor cancelled and without an open referral: waiting for a dependency,
  for consent, or for the router), `unassigned` (referrals unassigned now),
  `recent_referrals` (referrals created in the last {RECENT_DAYS} days), `total` (the waiting
  steps plus the referrals unassigned or recent, each referral once). A case counts in the
  area of the level its return area lies in.
- `services`: the active services of active partners that cover the area. A service covers
  an area when it covers that area or one of its ancestors: a service for a region covers
  its cercles. One covering only some of a region's cercles does not cover the region (see
  `level=cercle`).
- `free_capacity`: their capacities minus their loads (referrals requested, accepted or in
  progress, wherever they are), each at least 0, added up; null when one of them has no
  capacity (no limit). A service covering several areas shows its whole free capacity in
  each.
- `gap`: demand and no covering service. `saturated`: covering services, every one of them
  full (a load at or over its capacity).
"""

CSV_RESPONSE = {
    "description": "The indicators: JSON, or CSV with `Accept: text/csv`.",
    "content": {
        CSV_MEDIA_TYPE: {
            "schema": {"type": "string"},
            "example": "region,service_type,cases_referred,referrals,...\r\n"
            "ML-1,economic.vocational_training,12,14,...\r\n",
        }
    },
}


async def _known_reference(
    conn: Connection, *, area: str | None = None, service_type: str | None = None
) -> None:
    if area is not None and not await indicator_store.area_exists(conn, code=area):
        raise unknown_reference("query.area", "no such area")
    if service_type is not None and not await indicator_store.service_type_exists(
        conn, code=service_type
    ):
        raise unknown_reference("query.service_type", "no such service type")


@router.get(
    "/indicators",
    summary="Indicators of the referrals created in a period, grouped (CSV with Accept)",
    description=INDICATORS_DESCRIPTION,
    response_model=IndicatorsRead,
    response_model_exclude_unset=True,
    responses={200: CSV_RESPONSE},
)
async def indicators(
    request: Request,
    response: Response,
    caller: Caller,
    db: DbDep,
    from_: Annotated[
        date | None, Query(alias="from", description="First day (included); UTC.")
    ] = None,
    to: Annotated[date | None, Query(description="Day after the last (excluded); UTC.")] = None,
    group_by: Annotated[
        str | None,
        Query(
            pattern=GROUP_BY_PATTERN,
            description="Up to two of " + ", ".join(f"`{d}`" for d in DIMENSIONS) + ".",
            examples=["region,service_type"],
        ),
    ] = None,
    area: Annotated[
        str | None, Query(max_length=32, description="That area and every area under it.")
    ] = None,
    service_type: Annotated[str | None, Query(max_length=64)] = None,
    partner_id: Annotated[
        UUID | None, Query(description="Referrals this partner owns or is assigned.")
    ] = None,
    min_cell: Annotated[
        int | None, Query(ge=1, le=1000, description="Withhold every count under it.")
    ] = None,
) -> Any:
    dimensions = parse_group_by(group_by)
    period = Period.of(from_, to, today=now_utc().date())
    async with db.connection() as conn:
        await _known_reference(conn, area=area, service_type=service_type)
        counts = await indicator_store.indicator_counts(
            conn,
            start=period.start,
            end=period.end,
            group_by=dimensions,
            viewer_partner_id=None if caller.is_admin else caller.partner_id,
            area=area,
            service_type=service_type,
            partner_id=partner_id,
        )
    rows = [figures(group, min_cell=min_cell) for group in counts]
    if prefers_csv(request.headers.get("accept")):
        return Response(
            render_csv(dimensions, rows), media_type=CSV_MEDIA_TYPE, headers={"Vary": "Accept"}
        )
    response.headers["Vary"] = "Accept"
    return IndicatorsRead.model_validate(
        {
            "from": period.start,
            "to": period.end,
            "group_by": list(dimensions),
            "min_cell": min_cell,
            "rows": rows,
        }
    )


@router.get(
    "/gaps",
    summary="Demand, covering services and free capacity per area and service type (admin)",
    description=GAPS_DESCRIPTION,
)
async def gaps(
    _admin: Admin,
    db: DbDep,
    level: Annotated[GapLevel, Query(description="The areas listed.")] = "region",
    service_type: Annotated[
        str | None, Query(max_length=64, description="Only this service type.")
    ] = None,
) -> GapsRead:
    depth = GAP_LEVELS[level]
    since = now_utc() - timedelta(days=RECENT_DAYS)
    async with db.connection() as conn:
        await _known_reference(conn, service_type=service_type)
        types = (
            [service_type]
            if service_type is not None
            else await indicator_store.service_type_codes(conn)
        )
        areas = await indicator_store.areas_at(conn, depth=depth)
        waiting = await indicator_store.waiting_steps(conn, depth=depth, service_type=service_type)
        demand = await indicator_store.referral_demand(
            conn, depth=depth, since=since, service_type=service_type
        )
        offers = {
            t: [
                Offer(areas=o.areas, capacity=o.capacity, load=o.load)
                for o in options
                if o.active and o.partner_active
            ]
            for t, options in (await loads.service_options(conn, service_types=types)).items()
        }
    rows = gap_table(
        areas=areas,
        service_types=types,
        waiting_steps=waiting,
        referral_demand=demand,
        offers=offers,
    )
    return GapsRead.model_validate({"level": level, "service_type": service_type, "rows": rows})
