"""The coordination's view (SPEC 12): what each indicator means, the small-cell suppression,
the CSV, and what makes an area a gap. Pure: the store counts, these decide what the counts
say. The definitions are written out in the README ("Indicators and gaps") and in the
OpenAPI descriptions of `GET /indicators` and `GET /gaps`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.errors import FieldError, Unprocessable
from shared.referral_statuses import REFERRAL_STATUSES

DIMENSIONS = ("region", "area", "service_type", "dimension", "partner", "month")
"""What rows may be grouped by: the region and the area of the case's return, the step's
service type and its dimension, the assignee partner, the month of the referral's creation."""
MAX_GROUP_BY = 2
DEFAULT_DAYS = 365
"""Without `from`, the period is the 365 days before `to`; without `to`, it ends tonight."""
REGION_DEPTH = 1
"""A region is an area of depth 1: Mali's regions and the district of Bamako."""
GAP_LEVELS = {"region": REGION_DEPTH, "cercle": 2}
"""`GET /gaps?level=`: the depth of the areas listed."""
RECENT_DAYS = 90
"""A gap's demand counts the referrals created in the last 90 days."""
RATE_DECIMALS = 4
DURATION_DECIMALS = 2
CSV_MEDIA_TYPE = "text/csv"


# --- The request --------------------------------------------------------------------------


def parse_group_by(value: str | None) -> tuple[str, ...]:
    """`region,service_type` → ("region", "service_type"): up to two distinct dimensions."""
    if value is None or not value.strip():
        return ()
    names = tuple(name.strip() for name in value.split(","))
    unknown = [name for name in names if name not in DIMENSIONS]
    if unknown:
        raise _invalid("query.group_by", f"unknown dimension {unknown[0]!r}")
    if len(set(names)) != len(names):
        raise _invalid("query.group_by", "a dimension is named twice")
    if len(names) > MAX_GROUP_BY:
        raise _invalid("query.group_by", f"at most {MAX_GROUP_BY} dimensions")
    return names


@dataclass(frozen=True)
class Period:
    """Referrals created from `start` (inclusive) to `end` (exclusive), at 00:00 UTC."""

    start: date
    end: date

    @classmethod
    def of(cls, start: date | None, end: date | None, *, today: date) -> Period:
        """The period asked for: `to` defaults to tomorrow (today included), `from` to 365
        days before `to`; `from` must come before `to`."""
        try:
            end = end or today + timedelta(days=1)
            start = start or end - timedelta(days=DEFAULT_DAYS)
        except OverflowError:
            raise _invalid("query.from", "outside the calendar") from None
        if start >= end:
            raise _invalid("query.from", "must be before `to` (which is excluded)")
        return cls(start=start, end=end)


def prefers_csv(accept: str | None) -> bool:
    """Whether the `Accept` header prefers `text/csv` to JSON (a tie goes to JSON)."""
    return _quality(accept, CSV_MEDIA_TYPE) > _quality(accept, "application/json")


def _quality(accept: str | None, media_type: str) -> float:
    """The quality `accept` gives `media_type`: the most specific range that matches."""
    if not accept:
        return 1.0 if media_type == "application/json" else 0.0
    kind = media_type.split("/")[0]
    best: tuple[int, float] = (-1, 0.0)
    for part in accept.split(","):
        media_range, *params = (piece.strip() for piece in part.split(";"))
        specificity = {media_type: 2, f"{kind}/*": 1, "*/*": 0}.get(media_range.lower())
        if specificity is None or specificity < best[0]:
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        best = (specificity, quality)
    return best[1]


def _invalid(field_path: str, message: str) -> Unprocessable:
    return Unprocessable(
        f"{field_path.split('.')[-1]}: {message}.",
        errors=[FieldError(field=field_path, message=message, type="value")],
    )


# --- The figures ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupCounts:
    """What the store counts for one row: over the referrals created in the period that
    the caller may see and the filters keep, with these values of the grouped dimensions."""

    key: Mapping[str, Any]  # dimension → value (a month as its first instant)
    referrals: int
    cases: int  # distinct cases among those referrals
    by_status: Mapping[str, int]  # current status → referrals
    accepted: int  # referrals ever accepted (whatever followed)
    rerouted_steps: int  # distinct steps among those referrals of attempt > 1
    overdue: int  # still `requested`, past their deadline now
    pathways_completed: int  # distinct cases whose pathway last completed within the period
    hours_to_acceptance_median: float | None = None
    hours_to_acceptance_p90: float | None = None
    days_to_completion_median: float | None = None

    def status(self, name: str) -> int:
        return int(self.by_status.get(name, 0))


@dataclass
class _Withholding:
    """Small-cell suppression: a count under `min_cell` is withheld, and so is every figure
    built on one."""

    min_cell: int | None
    suppressed: bool = field(default=False)

    def small(self, *counts: int) -> bool:
        return self.min_cell is not None and any(count < self.min_cell for count in counts)

    def count(self, value: int) -> int | None:
        if self.small(value):
            self.suppressed = True
            return None
        return value

    def built_on(self, value: float | None, *counts: int) -> float | None:
        if self.small(*counts):
            self.suppressed = True
            return None
        return value


def percentile(
    below: float | None, above: float | None, fraction: Decimal, count: int
) -> float | None:
    """PostgreSQL's `percentile_cont(fraction)` over `count` sorted values, from the two
    values at positions floor and ceil of fraction * (count - 1): interpolated between them."""
    if below is None or above is None or not count:
        return None
    position = fraction * (count - 1)
    weight = float(position - int(position))
    return float(below) + weight * (float(above) - float(below))


def ratio(part: int, whole: int) -> float | None:
    """`part / whole` to four decimals; None when `whole` is 0."""
    return round(part / whole, RATE_DECIMALS) if whole else None


def _duration(value: float | None) -> float | None:
    return round(value, DURATION_DECIMALS) if value is not None else None


def dimension_value(name: str, value: Any) -> Any:
    """A grouped dimension's value as rows show it: a month as `YYYY-MM`."""
    if name == "month" and isinstance(value, (date, datetime)):
        return value.strftime("%Y-%m")
    return value


def figures(counts: GroupCounts, *, min_cell: int | None = None) -> dict[str, Any]:
    """One row of `GET /indicators`: the grouped dimensions' values, then every figure.

    - `answered` = accepted + rejected; a referral counts as accepted once it was accepted,
      whatever followed (in progress, completed, failed, or cancelled after acceptance);
    - `acceptance_rate` = accepted / answered; `rejection_rate` = rejected / answered;
      `expiry_rate` = expired / (answered + expired): of the referrals that got an answer or
      ran out of time, the share that ran out of time;
    - with `min_cell`, each count under it is null, and so is each rate or duration built on
      one (a duration's count is the number of values it summarises), and `suppressed` is
      true.
    """
    rejected, expired = counts.status("rejected"), counts.status("expired")
    answered = counts.accepted + rejected
    withhold = _Withholding(min_cell)
    row: dict[str, Any] = {name: dimension_value(name, value) for name, value in counts.key.items()}
    row["cases_referred"] = withhold.count(counts.cases)
    row["referrals"] = withhold.count(counts.referrals)
    row["by_status"] = {s: withhold.count(counts.status(s)) for s in REFERRAL_STATUSES}
    row["accepted"] = withhold.count(counts.accepted)
    row["answered"] = withhold.count(answered)
    row["acceptance_rate"] = withhold.built_on(
        ratio(counts.accepted, answered), counts.accepted, answered
    )
    row["rejection_rate"] = withhold.built_on(ratio(rejected, answered), rejected, answered)
    row["expiry_rate"] = withhold.built_on(
        ratio(expired, answered + expired), expired, answered + expired
    )
    row["rerouted_steps"] = withhold.count(counts.rerouted_steps)
    row["hours_to_acceptance_median"] = withhold.built_on(
        _duration(counts.hours_to_acceptance_median), counts.accepted
    )
    row["hours_to_acceptance_p90"] = withhold.built_on(
        _duration(counts.hours_to_acceptance_p90), counts.accepted
    )
    row["days_to_completion_median"] = withhold.built_on(
        _duration(counts.days_to_completion_median), counts.status("completed")
    )
    row["overdue_now"] = withhold.count(counts.overdue)
    row["unassigned_now"] = withhold.count(counts.status("unassigned"))
    row["pathways_completed"] = withhold.count(counts.pathways_completed)
    row["suppressed"] = withhold.suppressed
    return row


# --- CSV ------------------------------------------------------------------------------------

FIGURE_COLUMNS = (
    "cases_referred",
    "referrals",
    *(f"status_{s}" for s in REFERRAL_STATUSES),
    "accepted",
    "answered",
    "acceptance_rate",
    "rejection_rate",
    "expiry_rate",
    "rerouted_steps",
    "hours_to_acceptance_median",
    "hours_to_acceptance_p90",
    "days_to_completion_median",
    "overdue_now",
    "unassigned_now",
    "pathways_completed",
    "suppressed",
)


def csv_columns(group_by: Sequence[str]) -> list[str]:
    """The CSV's header: the grouped dimensions, then the figures (`by_status` flattened as
    `status_<status>`)."""
    return [*group_by, *FIGURE_COLUMNS]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render_csv(group_by: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """The rows as CSV (RFC 4180: a header line, CRLF line ends): the same numbers as the
    JSON, an empty cell for null."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(csv_columns(group_by))
    for row in rows:
        flat = {**row, **{f"status_{s}": n for s, n in row["by_status"].items()}}
        writer.writerow([_cell(flat.get(column)) for column in csv_columns(group_by)])
    return out.getvalue()


# --- Gaps -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Demand:
    """What an area asks of a service type: its open cases' steps of that type waiting to be
    routed, its unassigned referrals, and its referrals created in the last 90 days."""

    waiting_steps: int = 0
    unassigned: int = 0
    recent_referrals: int = 0
    referrals: int = 0  # unassigned or recent, each referral once

    @property
    def total(self) -> int:
        return self.waiting_steps + self.referrals


@dataclass(frozen=True)
class Offer:
    """An active service of an active partner: the areas it covers, its capacity (None: no
    limit) and its load (its referrals requested, accepted or in progress)."""

    areas: tuple[str, ...]
    capacity: int | None
    load: int

    @property
    def full(self) -> bool:
        return self.capacity is not None and self.load >= self.capacity

    def covers(self, area_path: Sequence[str]) -> bool:
        """It covers an area when it covers the area or one of its ancestors (the area's
        path holds its ancestors' codes and its own)."""
        return not set(self.areas).isdisjoint(area_path)


def free_capacity(offers: Sequence[Offer]) -> int | None:
    """The places the offers still have (capacity minus load, never below 0, added up);
    None when one of them has no limit."""
    if any(offer.capacity is None for offer in offers):
        return None
    return sum(max((offer.capacity or 0) - offer.load, 0) for offer in offers)


def gap_row(
    *,
    area_code: str,
    area_name: str,
    service_type: str,
    demand: Demand,
    offers: Sequence[Offer],
) -> dict[str, Any]:
    """One row of `GET /gaps`: a gap is demand without any covering service; an area is
    saturated when it has covering services and every one of them is full."""
    return {
        "area_code": area_code,
        "area_name": area_name,
        "service_type": service_type,
        "demand": {
            "waiting_steps": demand.waiting_steps,
            "unassigned": demand.unassigned,
            "recent_referrals": demand.recent_referrals,
            "total": demand.total,
        },
        "services": len(offers),
        "free_capacity": free_capacity(offers),
        "gap": demand.total > 0 and not offers,
        "saturated": bool(offers) and all(offer.full for offer in offers),
    }


def gap_table(
    *,
    areas: Sequence[Mapping[str, Any]],
    service_types: Sequence[str],
    waiting_steps: Mapping[tuple[str, str], int],
    referral_demand: Mapping[tuple[str, str], Mapping[str, int]],
    offers: Mapping[str, Sequence[Offer]],
) -> list[dict[str, Any]]:
    """Every (area, service type) row, by area code then service type: `areas` with their
    `code`, `name` and `path`; the demand counted by (area code, service type); the offers
    by service type, each counted where it covers."""
    rows = []
    for area in areas:
        for service_type in service_types:
            key = (area["code"], service_type)
            referrals = referral_demand.get(key, {})
            demand = Demand(
                waiting_steps=waiting_steps.get(key, 0),
                unassigned=referrals.get("unassigned", 0),
                recent_referrals=referrals.get("recent", 0),
                referrals=referrals.get("referrals", 0),
            )
            covering = [o for o in offers.get(service_type, ()) if o.covers(area["path"])]
            rows.append(
                gap_row(
                    area_code=area["code"],
                    area_name=area["name"],
                    service_type=service_type,
                    demand=demand,
                    offers=covering,
                )
            )
    return rows
