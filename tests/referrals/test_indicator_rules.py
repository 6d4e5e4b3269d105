"""The coordination's view, its pure part (no database): the request's dimensions and period,
content negotiation, each figure from the counts, small-cell suppression, the CSV, and the
gap table."""

from __future__ import annotations

import csv
import io
import math
from datetime import UTC, date, datetime
from decimal import Decimal
from uuid import UUID

import pytest

from services.referrals.indicators import (
    Demand,
    GroupCounts,
    Offer,
    Period,
    csv_columns,
    figures,
    free_capacity,
    gap_row,
    gap_table,
    parse_group_by,
    percentile,
    prefers_csv,
    render_csv,
)
from shared.errors import Unprocessable

PARTNER = UUID("7b0f3c52-1d7e-4c1a-9f0e-2b6a1d5e8c43")


def test_group_by_takes_up_to_two_distinct_known_dimensions():
    assert parse_group_by(None) == ()
    assert parse_group_by("") == ()
    assert parse_group_by("region") == ("region",)
    assert parse_group_by("month, service_type") == ("month", "service_type")
    for wrong in ("province", "region,region", "region,area,month"):
        with pytest.raises(Unprocessable) as refused:
            parse_group_by(wrong)
        assert refused.value.errors[0].field == "query.group_by"


def test_the_period_is_whole_utc_days_from_included_to_excluded_a_year_by_default():
    today = date(2026, 3, 10)
    assert Period.of(None, None, today=today) == Period(date(2025, 3, 11), date(2026, 3, 11))
    assert Period.of(None, date(2026, 1, 1), today=today).start == date(2025, 1, 1)
    assert Period.of(date(2026, 1, 1), None, today=today).end == date(2026, 3, 11)
    for start, end in ((date(2026, 2, 1), date(2026, 2, 1)), (date(2026, 2, 2), date(2026, 2, 1))):
        with pytest.raises(Unprocessable):
            Period.of(start, end, today=today)
    with pytest.raises(Unprocessable):
        Period.of(None, date(1, 1, 2), today=today)


@pytest.mark.parametrize(
    ("accept", "csv_wanted"),
    [
        (None, False),
        ("", False),
        ("*/*", False),
        ("application/json", False),
        ("text/csv", True),
        ("text/csv; charset=utf-8", True),
        ("text/*", True),
        ("text/csv;q=0.5, application/json", False),
        ("application/json;q=0.5, text/csv", True),
        ("text/csv, */*;q=0.1", True),
        ("text/html", False),
    ],
)
def test_csv_is_served_when_the_accept_header_prefers_it(accept, csv_wanted):
    assert prefers_csv(accept) is csv_wanted


def _counts(**overrides) -> GroupCounts:
    values = {
        "key": {},
        "referrals": 10,
        "cases": 6,
        "by_status": {
            "requested": 1,
            "accepted": 1,
            "in_progress": 1,
            "unassigned": 1,
            "rejected": 2,
            "expired": 1,
            "completed": 2,
            "failed": 0,
            "cancelled": 1,
        },
        "accepted": 5,
        "rerouted_steps": 2,
        "overdue": 1,
        "pathways_completed": 1,
        "hours_to_acceptance_median": 3.0,
        "hours_to_acceptance_p90": 7.8999999999999995,
        "days_to_completion_median": 1.0 / 3.0,
    }
    return GroupCounts(**{**values, **overrides})


def _percentile_cont(values: list[float], fraction: float) -> float:
    """PostgreSQL's percentile_cont, written out: interpolate at fraction * (n - 1)."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    below, above = ordered[math.floor(position)], ordered[math.ceil(position)]
    return below + (position - math.floor(position)) * (above - below)


@pytest.mark.parametrize(
    "values",
    [[120], [120, 240], [120, 240, 360, 600, 1800], [5, 5, 5, 9], list(range(0, 1000, 7))],
)
def test_a_percentile_interpolates_between_the_two_values_around_its_position(values):
    ordered = sorted(values)
    for fraction in ("0.5", "0.9"):
        position = Decimal(fraction) * (len(ordered) - 1)
        below, above = ordered[math.floor(position)], ordered[math.ceil(position)]
        assert percentile(below, above, Decimal(fraction), len(ordered)) == pytest.approx(
            _percentile_cont(values, float(fraction))
        )
    assert percentile(None, None, Decimal("0.5"), 0) is None
    # The worked example of the integration test: 2, 4, 6, 10, 30 hours -> p90 22 h.
    assert percentile(600, 1800, Decimal("0.9"), 5) == 1320


def test_each_figure_is_built_from_the_counts_as_documented():
    row = figures(_counts(key={"month": datetime(2026, 3, 1, tzinfo=UTC), "partner": PARTNER}))
    assert row["month"] == "2026-03"
    assert row["partner"] == PARTNER
    # answered = 5 accepted (whatever followed) + 2 rejected = 7
    assert row["accepted"] == 5
    assert row["answered"] == 7
    assert row["acceptance_rate"] == 0.7143  # 5 / 7 = 0.714285...
    assert row["rejection_rate"] == 0.2857  # 2 / 7
    assert row["expiry_rate"] == 0.125  # 1 expired / (7 answered + 1 expired)
    assert row["hours_to_acceptance_p90"] == 7.9  # two decimals
    assert row["days_to_completion_median"] == 0.33
    assert row["unassigned_now"] == 1  # the unassigned status, now
    assert row["by_status"]["completed"] == 2
    assert row["suppressed"] is False


def test_rates_are_null_when_nothing_is_counted_under_the_line():
    row = figures(
        _counts(
            by_status={"requested": 3},
            accepted=0,
            hours_to_acceptance_median=None,
            hours_to_acceptance_p90=None,
            days_to_completion_median=None,
        )
    )
    assert row["answered"] == 0
    assert row["acceptance_rate"] is None
    assert row["rejection_rate"] is None
    assert row["expiry_rate"] is None
    assert row["hours_to_acceptance_median"] is None
    assert row["by_status"]["failed"] == 0


def test_a_small_cell_is_withheld_with_every_figure_built_on_it():
    row = figures(_counts(), min_cell=3)
    # Counts under 3 are withheld, zeros included; 10 referrals, 6 cases, 5 accepted and 7
    # answered stay.
    assert (row["referrals"], row["cases_referred"], row["accepted"], row["answered"]) == (
        10,
        6,
        5,
        7,
    )
    assert row["by_status"] == {s: None for s in row["by_status"]}  # each is under 3
    assert row["rerouted_steps"] is None  # 2
    assert row["overdue_now"] is None
    assert row["unassigned_now"] is None
    assert row["pathways_completed"] is None
    assert row["acceptance_rate"] == 0.7143  # built on 5 and 7
    assert row["rejection_rate"] is None  # built on 2 rejected
    assert row["expiry_rate"] is None  # built on 1 expired
    assert row["hours_to_acceptance_median"] == 3.0  # 5 values
    assert row["days_to_completion_median"] is None  # 2 completed values
    assert row["suppressed"] is True
    assert figures(_counts(), min_cell=1)["suppressed"] is True  # failed: 0 < 1
    everything_shown = figures(_counts(by_status=dict.fromkeys(_counts().by_status, 5)))
    assert everything_shown["suppressed"] is False


def test_the_csv_holds_the_same_rows_as_the_json_with_a_header():
    rows = [
        figures(_counts(key={"region": "ML-1", "partner": PARTNER})),
        figures(_counts(key={"region": None, "partner": None}), min_cell=3),
    ]
    text = render_csv(["region", "partner"], rows)
    assert text.endswith("\r\n")
    lines = list(csv.reader(io.StringIO(text)))
    assert lines[0] == csv_columns(["region", "partner"])
    assert lines[0][:5] == ["region", "partner", "cases_referred", "referrals", "status_requested"]
    first = dict(zip(lines[0], lines[1], strict=True))
    assert first["region"] == "ML-1"
    assert first["partner"] == str(PARTNER)
    assert first["acceptance_rate"] == "0.7143"
    assert first["status_rejected"] == "2"
    assert first["suppressed"] == "false"
    second = dict(zip(lines[0], lines[2], strict=True))
    assert second["region"] == "" and second["partner"] == ""
    assert second["status_rejected"] == ""  # withheld
    assert second["suppressed"] == "true"
    assert render_csv([], []).count("\r\n") == 1


def test_free_capacity_adds_up_what_is_left_and_is_unlimited_with_an_unlimited_service():
    assert free_capacity([]) == 0
    assert free_capacity([Offer(("ML",), 10, 4), Offer(("ML",), 2, 5)]) == 6  # 6 + 0
    assert free_capacity([Offer(("ML",), 10, 4), Offer(("ML",), None, 50)]) is None


def test_a_gap_is_demand_without_a_covering_service_and_saturation_is_every_service_full():
    demand = Demand(waiting_steps=1, unassigned=2, recent_referrals=3, referrals=4)
    assert demand.total == 5
    gap = gap_row(area_code="ML-1", area_name="Kayes", service_type="t", demand=demand, offers=[])
    assert gap["gap"] is True and gap["saturated"] is False and gap["services"] == 0
    assert gap["demand"] == {
        "waiting_steps": 1,
        "unassigned": 2,
        "recent_referrals": 3,
        "total": 5,
    }
    quiet = gap_row(
        area_code="ML-1", area_name="Kayes", service_type="t", demand=Demand(), offers=[]
    )
    assert quiet["gap"] is False
    full = [Offer(("ML-1",), 2, 2), Offer(("ML",), 0, 0)]
    saturated = gap_row(
        area_code="ML-1", area_name="Kayes", service_type="t", demand=demand, offers=full
    )
    assert saturated["saturated"] is True and saturated["gap"] is False
    assert saturated["free_capacity"] == 0
    room = [*full, Offer(("ML",), None, 9)]
    open_row = gap_row(
        area_code="ML-1", area_name="Kayes", service_type="t", demand=demand, offers=room
    )
    assert open_row["saturated"] is False and open_row["free_capacity"] is None


def test_the_gap_table_counts_a_service_where_it_or_an_ancestor_is_covered():
    areas = [
        {"code": "ML-1", "name": "Kayes", "path": ["ML", "ML-1"]},
        {"code": "ML-2", "name": "Koulikoro", "path": ["ML", "ML-2"]},
        {"code": "ML-3", "name": "Sikasso", "path": ["ML", "ML-3"]},
    ]
    offers = {
        "a": [Offer(("ML",), None, 0)],  # the whole country
        "b": [Offer(("ML-1",), 3, 1), Offer(("ML-2-01",), 5, 0)],  # a region; a cercle
    }
    rows = gap_table(
        areas=areas,
        service_types=["a", "b"],
        waiting_steps={("ML-2", "b"): 2},
        referral_demand={("ML-3", "b"): {"unassigned": 1, "recent": 1, "referrals": 1}},
        offers=offers,
    )
    table = {(r["area_code"], r["service_type"]): r for r in rows}
    assert [(r["area_code"], r["service_type"]) for r in rows] == [
        ("ML-1", "a"),
        ("ML-1", "b"),
        ("ML-2", "a"),
        ("ML-2", "b"),
        ("ML-3", "a"),
        ("ML-3", "b"),
    ]
    assert all(table[(code, "a")]["services"] == 1 for code in ("ML-1", "ML-2", "ML-3"))
    assert table[("ML-1", "b")]["services"] == 1
    assert table[("ML-1", "b")]["free_capacity"] == 2
    # A service of one cercle does not cover its region.
    assert table[("ML-2", "b")]["services"] == 0
    assert table[("ML-2", "b")]["gap"] is True
    assert table[("ML-3", "b")]["gap"] is True
    assert table[("ML-3", "b")]["demand"]["total"] == 1
    assert table[("ML-1", "a")]["gap"] is False
