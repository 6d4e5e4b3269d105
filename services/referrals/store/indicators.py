# ruff: noqa: S608 - the SQL is built from this module's constants and the tables' names only
"""The indicators' rollup and the queries of the coordination's view (SPEC 12).

The rollup (tables.py): `referral_facts`, one row per referral, and the same rows added up
per day of creation, case return area and service type (`indicator_days`,
`indicator_firsts`, `indicator_deadlines`, `indicator_durations`). A referral's row is
defined once, by `_fresh`: its columns, the times its history gives, its case's return area
and pathway completion, the day of the previous referral of its case (and step) and its
durations. `refresh_cases` writes the rows of some cases as they are now and moves what
changed between the day totals, in one statement; only the reconciler calls it (one writer:
the day totals are added to without waiting on each other), and `rebuild` writes everything
again with it, a few thousand cases at a time.

`indicator_counts` answers from the day totals when the figures concern every partner (an
admin key, no partner filter or grouping): a year reads a few thousand rows. A partner's
view, a partner filter or a grouping by partner reads that partner's rows of the period.
The two agree figure for figure (the tests check it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any
from uuid import UUID

from services.referrals.indicators import REGION_DEPTH, GroupCounts, percentile
from services.referrals.tables import referral_facts
from shared.db import Connection, Statement
from shared.referral_statuses import OPEN_STATUSES, REFERRAL_STATUSES, in_lifecycle_order

FACTS = "referrals.referral_facts"
DAYS = "referrals.indicator_days"
FIRSTS = "referrals.indicator_firsts"
DEADLINES = "referrals.indicator_deadlines"
DURATIONS = "referrals.indicator_durations"
_COLUMNS = [c.name for c in referral_facts.c]
_VALUES = [name for name in _COLUMNS if name != "referral_id"]
_CASES = "CAST(:case_ids AS uuid[])"
# The order of a case's (or a step's) referrals: by creation, then id.
_ORDER = "ORDER BY b.created_at, b.referral_id"


def _fresh() -> str:
    """Each referral's row as it is now, for the referrals of the cases `case_ids`."""
    of_cases = f"WHERE r.case_id = ANY({_CASES})"
    history_of_cases = (
        f"WHERE h.referral_id IN (SELECT id FROM referrals.referrals WHERE case_id = ANY({_CASES}))"
    )

    def previous(partition: str) -> str:
        return (
            f"coalesce(lag(b.day) OVER (PARTITION BY {partition} {_ORDER}), "
            "CAST('-infinity' AS date))"
        )

    return f"""
    SELECT b.*,
        {previous("b.case_id")} AS case_prev_day,
        {previous("b.case_id, b.service_type")} AS case_type_prev_day,
        {previous("b.case_id, b.dimension")} AS case_dimension_prev_day,
        CASE WHEN b.attempt > 1 THEN {previous("b.step_id, b.attempt > 1")}
            ELSE CAST('-infinity' AS date) END AS step_prev_day,
        coalesce(CAST(b.pathway_completed_at AT TIME ZONE 'UTC' AS date),
            CAST('infinity' AS date)) AS completed_day,
        CAST(floor(extract(epoch FROM b.accepted_at - b.requested_at) / 60) AS integer)
            AS acceptance_minutes,
        CAST(floor(extract(epoch FROM b.completed_at - b.accepted_at) / 60) AS integer)
            AS completion_minutes
    FROM (
        SELECT r.id AS referral_id, r.case_id, r.step_id, c.return_area_code AS area_code,
            r.service_type, st.dimension, r.assignee_partner_id, r.owner_partner_id, r.status,
            r.attempt, r.deadline_at, r.created_at, t.requested_at, t.accepted_at,
            t.completed_at, c.pathway_completed_at,
            CAST(r.created_at AT TIME ZONE 'UTC' AS date) AS day
        FROM referrals.referrals AS r
        LEFT JOIN referrals.cases AS c ON c.id = r.case_id
        LEFT JOIN hub.service_types AS st ON st.code = r.service_type
        LEFT JOIN (
            SELECT h.referral_id,
                min(h.at) FILTER (WHERE h.status = 'requested') AS requested_at,
                min(h.at) FILTER (WHERE h.status = 'accepted') AS accepted_at,
                min(h.at) FILTER (WHERE h.status = 'completed') AS completed_at
            FROM referrals.referral_history AS h
            {history_of_cases}
            GROUP BY h.referral_id
        ) AS t ON t.referral_id = r.id
        {of_cases}
    ) AS b
    """


def _refresh() -> str:
    """Write the rows of the cases `case_ids` that changed, and move their contributions
    between the day totals: each old row is taken away (-1), each new one added (+1)."""
    old = f"SELECT * FROM {FACTS} WHERE case_id = ANY({_CASES})"
    columns = ", ".join(_COLUMNS)
    differs = (
        f"ROW({', '.join('n.' + c for c in _VALUES)}) "
        f"IS DISTINCT FROM ROW({', '.join('o.' + c for c in _VALUES)})"
    )
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _VALUES)
    moved = (
        "day, area_code, service_type, status, attempt, deadline_at, accepted_at, case_prev_day, "
        "case_type_prev_day, case_dimension_prev_day, step_prev_day, completed_day, "
        "acceptance_minutes, completion_minutes"
    )
    by_status = ", ".join(f"status_{s}" for s in REFERRAL_STATUSES)
    status_sums = ", ".join(
        f"coalesce(sum(sign) FILTER (WHERE status = '{s}'), 0)" for s in REFERRAL_STATUSES
    )
    status_adds = ", ".join(
        f"status_{s} = d.status_{s} + EXCLUDED.status_{s}" for s in REFERRAL_STATUSES
    )
    return f"""
    WITH fresh AS MATERIALIZED ({_fresh()}),
    old AS MATERIALIZED ({old}),
    came AS (
        SELECT n.* FROM fresh AS n LEFT JOIN old AS o ON o.referral_id = n.referral_id
        WHERE o.referral_id IS NULL OR {differs}
    ),
    gone AS (
        SELECT o.* FROM old AS o LEFT JOIN fresh AS n ON n.referral_id = o.referral_id
        WHERE n.referral_id IS NULL OR {differs}
    ),
    written AS (
        INSERT INTO {FACTS} ({columns}) SELECT {columns} FROM came
        ON CONFLICT (referral_id) DO UPDATE SET {updates}
    ),
    dropped AS (
        DELETE FROM {FACTS} AS f WHERE f.case_id = ANY({_CASES})
            AND NOT EXISTS (SELECT 1 FROM fresh AS n WHERE n.referral_id = f.referral_id)
    ),
    moves AS (
        SELECT {moved}, 1 AS sign FROM came UNION ALL SELECT {moved}, -1 AS sign FROM gone
    ),
    days AS (
        INSERT INTO {DAYS} AS d (day, area_code, service_type, referrals, accepted, {by_status})
        SELECT day, coalesce(area_code, ''), service_type, sum(sign),
            coalesce(sum(sign) FILTER (WHERE accepted_at IS NOT NULL), 0), {status_sums}
        FROM moves GROUP BY day, coalesce(area_code, ''), service_type
        ON CONFLICT (day, area_code, service_type) DO UPDATE SET
            referrals = d.referrals + EXCLUDED.referrals,
            accepted = d.accepted + EXCLUDED.accepted, {status_adds}
    ),
    firsts AS (
        INSERT INTO {FIRSTS} AS f (day, area_code, service_type, kind, prev_day, completed_day, n)
        SELECT m.day, coalesce(m.area_code, ''), m.service_type, k.kind, k.prev_day,
            k.completed_day, sum(m.sign)
        FROM moves AS m CROSS JOIN LATERAL (VALUES
            ('case', m.case_prev_day, m.completed_day),
            ('case_type', m.case_type_prev_day, m.completed_day),
            ('case_dimension', m.case_dimension_prev_day, m.completed_day),
            ('step', m.step_prev_day, CAST('infinity' AS date))
        ) AS k (kind, prev_day, completed_day)
        WHERE k.kind <> 'step' OR m.attempt > 1
        GROUP BY m.day, coalesce(m.area_code, ''), m.service_type, k.kind, k.prev_day,
            k.completed_day
        ON CONFLICT (day, area_code, service_type, kind, prev_day, completed_day)
            DO UPDATE SET n = f.n + EXCLUDED.n
    ),
    deadlines AS (
        INSERT INTO {DEADLINES} AS d (day, area_code, service_type, deadline_day, n)
        SELECT day, coalesce(area_code, ''), service_type,
            CAST(deadline_at AT TIME ZONE 'UTC' AS date), sum(sign)
        FROM moves WHERE status = 'requested' AND deadline_at IS NOT NULL
        GROUP BY day, coalesce(area_code, ''), service_type,
            CAST(deadline_at AT TIME ZONE 'UTC' AS date)
        ON CONFLICT (day, area_code, service_type, deadline_day)
            DO UPDATE SET n = d.n + EXCLUDED.n
    )
    INSERT INTO {DURATIONS} AS d (day, area_code, service_type, measure, minutes, n)
    SELECT m.day, coalesce(m.area_code, ''), m.service_type, x.measure, x.minutes, sum(m.sign)
    FROM moves AS m CROSS JOIN LATERAL (VALUES
        ('acceptance', m.acceptance_minutes), ('completion', m.completion_minutes)
    ) AS x (measure, minutes)
    WHERE x.minutes IS NOT NULL
    GROUP BY m.day, coalesce(m.area_code, ''), m.service_type, x.measure, x.minutes
    ON CONFLICT (day, area_code, service_type, measure, minutes)
        DO UPDATE SET n = d.n + EXCLUDED.n
    """


_REFRESH = Statement(_refresh())
_CLEAR = [
    Statement(f"DELETE FROM {table}") for table in (FACTS, DAYS, FIRSTS, DEADLINES, DURATIONS)
]
# The cases in the order of their first referral: a rebuild's statement then adds to the
# totals of a few days only.
_CASES_REFERRED = Statement(
    "SELECT case_id FROM referrals.referrals GROUP BY case_id ORDER BY min(created_at), case_id"
)
_COUNT = Statement(f"SELECT count(*) FROM {FACTS}")
REBUILD_CASES = 2000  # cases per statement of a rebuild


async def refresh_cases(conn: Connection, *, case_ids: Sequence[UUID]) -> None:
    """Bring the rollup's rows of these cases' referrals in line with them, and the day totals
    with the rows (the reconciler alone calls it, in its batch's transaction)."""
    if case_ids:
        await _REFRESH.execute(conn, case_ids=sorted(set(case_ids), key=str))


async def rebuild(conn: Connection) -> int:
    """Write the whole rollup again from the referrals, a few thousand cases per statement;
    returns the number of referrals."""
    for statement in _CLEAR:
        await statement.execute(conn)
    case_ids = [row["case_id"] for row in await _CASES_REFERRED.fetch(conn)]
    for first in range(0, len(case_ids), REBUILD_CASES):
        await refresh_cases(conn, case_ids=case_ids[first : first + REBUILD_CASES])
    return await _COUNT.fetchval(conn)


# --- The indicators --------------------------------------------------------------------------

_REGION_OF = f"""LEFT JOIN (
    SELECT a.code, r.code AS region FROM hub.areas AS a
    JOIN hub.areas AS r ON r.code = ANY(a.path) AND r.depth = {REGION_DEPTH}
) AS region_of ON region_of.code = {{t}}.area_code"""
_DIMENSION_OF = "LEFT JOIN hub.service_types AS type_of ON type_of.code = {t}.service_type"
_DIMENSIONS = {
    "region": "region_of.region",
    "area": "NULLIF({t}.area_code, '')",
    "service_type": "{t}.service_type",
    "dimension": "type_of.dimension",
    "partner": "{t}.assignee_partner_id",
    "month": "CAST(date_trunc('month', {t}.day) AS date)",
}
_SEES = (
    "({t}.owner_partner_id = CAST(:{p} AS uuid) OR {t}.assignee_partner_id = CAST(:{p} AS uuid))"
)
_IN_PERIOD = "{t}.{column} >= CAST(:start_day AS date) AND {t}.{column} < CAST(:end_day AS date)"
_OVERDUE = "f.status = 'requested' AND f.deadline_at < now()"
# Overdue now: the referrals requested now whose deadline's day is before today (from the day
# totals) and those whose deadline passed earlier today (from their rows).
_TODAY = "CAST(now() AT TIME ZONE 'UTC' AS date)"
_OVERDUE_NOW = f"""(
    SELECT day, area_code, service_type, n FROM {DEADLINES} WHERE deadline_day < {_TODAY}
    UNION ALL
    SELECT day, coalesce(area_code, ''), service_type, 1 FROM {FACTS} AS f
    WHERE {_OVERDUE} AND f.deadline_at >= ({_TODAY} + time '00:00') AT TIME ZONE 'UTC'
)"""
_DURATIONS_OF_FACT = (
    "CROSS JOIN LATERAL (VALUES ('acceptance', f.acceptance_minutes), "
    "('completion', f.completion_minutes)) AS x (measure, minutes)"
)
FRACTIONS = {"p50": Decimal("0.5"), "p90": Decimal("0.9")}


@dataclass(frozen=True)
class _Shape:
    """What a request asks, as far as its SQL goes."""

    group_by: tuple[str, ...]
    viewer: bool = False
    area: bool = False
    service_type: bool = False
    partner: bool = False
    on_referral_rows: bool = False

    @property
    def per_referral(self) -> bool:
        """Whether the figures are counted on the referrals' rows: when they concern one
        partner (or when asked)."""
        return self.on_referral_rows or self.viewer or self.partner or "partner" in self.group_by

    @property
    def case_kind(self) -> str:
        """Which previous referral of its case makes a referral not its case's first: of its
        type when rows are of one type, of its dimension when they are of one dimension."""
        if "service_type" in self.group_by or self.service_type:
            return "case_type"
        return "case_dimension" if "dimension" in self.group_by else "case"

    def select(
        self,
        t: str,
        table: str,
        values: Sequence[str],
        *,
        where: str = "",
        lateral: str = "",
        group_also: Sequence[str] = (),
    ) -> str:
        """`SELECT` the grouped dimensions and `values` from `table` (as `t`) over the
        period and the filters, grouped by the dimensions and `group_also`."""
        keys = [f"{_DIMENSIONS[name].format(t=t)} AS {name}" for name in self.group_by]
        joins = []
        if "region" in self.group_by:
            joins.append(_REGION_OF.format(t=t))
        if "dimension" in self.group_by:
            joins.append(_DIMENSION_OF.format(t=t))
        conditions = [_IN_PERIOD.format(t=t, column="day")]
        if self.viewer:
            conditions.append(_SEES.format(t=t, p="viewer_partner_id"))
        if self.partner:
            conditions.append(_SEES.format(t=t, p="partner_id"))
        if self.service_type:
            conditions.append(f"{t}.service_type = CAST(:service_type AS text)")
        if self.area:  # the area and every area under it
            conditions.append(
                f"{t}.area_code IN (SELECT code FROM hub.areas "
                "WHERE CAST(:area AS text) = ANY(path))"
            )
        if where:
            conditions.append(where)
        grouping = [_DIMENSIONS[name].format(t=t) for name in self.group_by] + list(group_also)
        return (
            f"SELECT {', '.join([*keys, *values])} FROM {table} AS {t} {lateral} "
            f"{' '.join(joins)} WHERE {' AND '.join(conditions)} "
            + (f"GROUP BY {', '.join(grouping)}" if grouping else "")
        )


def _percentiles(shape: _Shape, histogram: str) -> str:
    """Per group and measure, from `histogram` (the grouped dimensions, `measure`, `minutes`,
    `n`): the count, and for each fraction the two values `percentile_cont` interpolates
    between, at positions floor and ceil of fraction * (count - 1) in order."""
    partition = ", ".join([*shape.group_by, "measure"])
    at = [
        f"min(minutes) FILTER (WHERE upto > {rounding}({fraction} * (total - 1))) AS {label}_{end}"
        for label, fraction in FRACTIONS.items()
        for end, rounding in (("lo", "floor"), ("hi", "ceil"))
    ]
    return f"""
    SELECT {partition}, total, {", ".join(at)}
    FROM (
        SELECT h.*, sum(n) OVER (PARTITION BY {partition} ORDER BY minutes) AS upto,
            sum(n) OVER (PARTITION BY {partition}) AS total
        FROM ({histogram}) AS h
    ) AS ranked
    GROUP BY {partition}, total
    """


@dataclass(frozen=True)
class _Statements:
    counts: Statement  # one row per group: its counts
    durations: Statement  # per group and measure: what the percentiles need
    firsts: Statement | None = None  # from the day totals: distinct cases and steps
    overdue: Statement | None = None  # from the day totals: the overdue referrals


@lru_cache(maxsize=512)
def _statements(shape: _Shape) -> _Statements:
    """The statements of one shape of request, compiled once."""
    order = ", ".join(f"{name} NULLS LAST" for name in shape.group_by)
    order_by = f"ORDER BY {order}" if order else ""
    if shape.per_referral:
        counts = shape.select(
            "f",
            FACTS,
            [
                "count(*) AS referrals",
                "count(DISTINCT f.case_id) AS cases",
                *(
                    f"count(*) FILTER (WHERE f.status = '{s}') AS status_{s}"
                    for s in REFERRAL_STATUSES
                ),
                "count(f.accepted_at) AS accepted",
                "count(DISTINCT f.step_id) FILTER (WHERE f.attempt > 1) AS rerouted",
                f"count(*) FILTER (WHERE {_OVERDUE}) AS overdue",
                "count(DISTINCT f.case_id) FILTER (WHERE "
                f"{_IN_PERIOD.format(t='f', column='completed_day')}) AS pathways",
            ],
        )
        histogram = shape.select(
            "f",
            FACTS,
            ["x.measure AS measure", "x.minutes AS minutes", "count(*) AS n"],
            where="x.minutes IS NOT NULL",
            lateral=_DURATIONS_OF_FACT,
            group_also=["x.measure", "x.minutes"],
        )
        return _Statements(
            counts=Statement(f"{counts} {order_by}"),
            durations=Statement(_percentiles(shape, histogram)),
        )
    having = "HAVING sum(d.referrals) > 0" if shape.group_by else ""
    counts = shape.select(
        "d",
        DAYS,
        [
            "sum(d.referrals) AS referrals",
            *(f"sum(d.status_{s}) AS status_{s}" for s in REFERRAL_STATUSES),
            "sum(d.accepted) AS accepted",
        ],
    )
    # A referral is its case's (or its step's) first in the row when the previous one is
    # before the row's first day: the period's, or its month's when grouped by month.
    start = "CAST(:start_day AS date)"
    if "month" in shape.group_by:
        start = f"GREATEST({start}, CAST(date_trunc('month', d.day) AS date))"
    first = f"d.prev_day < {start}"
    kind = shape.case_kind
    completed = _IN_PERIOD.format(t="d", column="completed_day")
    firsts = shape.select(
        "d",
        FIRSTS,
        [
            f"coalesce(sum(d.n) FILTER (WHERE d.kind = '{kind}' AND {first}), 0) AS cases",
            f"coalesce(sum(d.n) FILTER (WHERE d.kind = 'step' AND {first}), 0) AS rerouted",
            f"coalesce(sum(d.n) FILTER (WHERE d.kind = '{kind}' AND {first} AND {completed}), 0)"
            " AS pathways",
        ],
        where=f"d.kind IN ('{kind}', 'step')",
    )
    histogram = shape.select(
        "d",
        DURATIONS,
        ["d.measure AS measure", "d.minutes AS minutes", "sum(d.n) AS n"],
        group_also=["d.measure", "d.minutes"],
    )
    return _Statements(
        counts=Statement(f"{counts} {having} {order_by}"),
        durations=Statement(_percentiles(shape, f"{histogram} HAVING sum(d.n) > 0")),
        firsts=Statement(firsts),
        overdue=Statement(shape.select("d", _OVERDUE_NOW, ["sum(d.n) AS overdue"])),
    )


async def indicator_counts(
    conn: Connection,
    *,
    start: date,
    end: date,
    group_by: Sequence[str],
    viewer_partner_id: UUID | None,
    area: str | None = None,
    service_type: str | None = None,
    partner_id: UUID | None = None,
    per_referral: bool = False,
) -> list[GroupCounts]:
    """The counts of each group of the referrals created from `start` (included) to `end`
    (excluded) that the viewer sees (all for an admin, a partner's as owner or assignee) and
    the filters keep: `area` (that area and every area under it), `service_type`,
    `partner_id` (as owner or assignee); in the order of the groups' values. Without
    `group_by`, one group. `per_referral` counts on the referrals' rows even where the day
    totals answer (the figures are the same)."""
    shape = _Shape(
        group_by=tuple(group_by),
        viewer=viewer_partner_id is not None,
        area=area is not None,
        service_type=service_type is not None,
        partner=partner_id is not None,
        on_referral_rows=per_referral,
    )
    statements = _statements(shape)
    params: dict[str, Any] = {
        "start_day": start,
        "end_day": end,
        "viewer_partner_id": viewer_partner_id,
        "partner_id": partner_id,
        "area": area,
        "service_type": service_type,
    }
    groups: dict[tuple, dict[str, Any]] = {}
    for row in await statements.counts.fetch(conn, **params):
        key = tuple(row[name] for name in group_by)
        groups[key] = {**dict(row), "key": dict(zip(group_by, key, strict=True))}
    further = [s for s in (statements.firsts, statements.overdue) if s is not None]
    for statement in further:
        for row in await statement.fetch(conn, **params):
            key = tuple(row[name] for name in group_by)
            if key in groups:
                groups[key].update({k: v for k, v in dict(row).items() if k not in group_by})
    for row in await statements.durations.fetch(conn, **params):
        key = tuple(row[name] for name in group_by)
        if key in groups:
            for label, fraction in FRACTIONS.items():
                groups[key][f"{row['measure']}_{label}"] = percentile(
                    row[f"{label}_lo"], row[f"{label}_hi"], fraction, row["total"]
                )
    return [_counts(values) for values in groups.values()]


def _counts(values: dict[str, Any]) -> GroupCounts:
    def number(name: str) -> int:
        return int(values.get(name) or 0)

    def minutes(name: str, per: int) -> float | None:
        value = values.get(name)
        return value / per if value is not None else None

    return GroupCounts(
        key=values["key"],
        referrals=number("referrals"),
        cases=number("cases"),
        by_status={status: number(f"status_{status}") for status in REFERRAL_STATUSES},
        accepted=number("accepted"),
        rerouted_steps=number("rerouted"),
        overdue=number("overdue"),
        pathways_completed=number("pathways"),
        hours_to_acceptance_median=minutes("acceptance_p50", 60),
        hours_to_acceptance_p90=minutes("acceptance_p90", 60),
        days_to_completion_median=minutes("completion_p50", 24 * 60),
    )


# --- Reference data ---------------------------------------------------------------------------

_AREA = Statement("SELECT code FROM hub.areas WHERE code = :code")
_SERVICE_TYPE = Statement("SELECT code FROM hub.service_types WHERE code = :code")
_AREAS_AT = Statement("SELECT code, name, path FROM hub.areas WHERE depth = :depth ORDER BY code")
_SERVICE_TYPES = Statement("SELECT code FROM hub.service_types ORDER BY code")


async def area_exists(conn: Connection, *, code: str) -> bool:
    return await _AREA.fetchval(conn, code=code) is not None


async def service_type_exists(conn: Connection, *, code: str) -> bool:
    return await _SERVICE_TYPE.fetchval(conn, code=code) is not None


async def areas_at(conn: Connection, *, depth: int) -> list[dict[str, Any]]:
    """The areas of that depth (code, name, path), by code."""
    return [dict(r) for r in await _AREAS_AT.fetch(conn, depth=depth)]


async def service_type_codes(conn: Connection) -> list[str]:
    return [r["code"] for r in await _SERVICE_TYPES.fetch(conn)]


# --- The gaps' demand -------------------------------------------------------------------------

# Each area → the area of the requested depth it lies in, itself included.
_LEVEL_OF = """(
    SELECT a.code, l.code AS level_code FROM hub.areas AS a
    JOIN hub.areas AS l ON l.code = ANY(a.path) AND l.depth = CAST(:depth AS integer)
) AS level_of"""
_OF_TYPE = "(CAST(:service_type AS text) IS NULL OR {t}.service_type = :service_type)"
_REFERRAL_DEMAND = Statement(
    f"""
    SELECT level_of.level_code, f.service_type,
        count(*) FILTER (WHERE f.status = 'unassigned') AS unassigned,
        count(*) FILTER (WHERE f.created_at >= :since) AS recent,
        count(*) AS referrals
    FROM {FACTS} AS f JOIN {_LEVEL_OF} ON level_of.code = f.area_code
    WHERE (f.status = 'unassigned' OR f.created_at >= :since) AND {_OF_TYPE.format(t="f")}
    GROUP BY level_of.level_code, f.service_type
    """
)
_OPEN = ", ".join(f"'{s}'" for s in in_lifecycle_order(OPEN_STATUSES))
_WAITING_STEPS = Statement(
    f"""
    SELECT level_of.level_code, s.service_type, count(*) AS steps
    FROM referrals.steps AS s
    JOIN referrals.cases AS c ON c.id = s.case_id
    JOIN {_LEVEL_OF} ON level_of.code = c.return_area_code
    WHERE c.status = 'open' AND s.resolution IS NULL AND s.delivery = 'referral'
        AND NOT EXISTS (
            SELECT 1 FROM referrals.referrals AS r
            WHERE r.step_id = s.id AND r.status IN ({_OPEN}))
        AND {_OF_TYPE.format(t="s")}
    GROUP BY level_of.level_code, s.service_type
    """
)


async def referral_demand(
    conn: Connection, *, depth: int, since: datetime, service_type: str | None
) -> dict[tuple[str, str], dict[str, int]]:
    """(area of that depth, service type) → its referrals unassigned now, created since
    `since`, and either (each once), by the case's return area."""
    rows = await _REFERRAL_DEMAND.fetch(conn, depth=depth, since=since, service_type=service_type)
    return {
        (r["level_code"], r["service_type"]): {
            "unassigned": r["unassigned"],
            "recent": r["recent"],
            "referrals": r["referrals"],
        }
        for r in rows
    }


async def waiting_steps(
    conn: Connection, *, depth: int, service_type: str | None
) -> dict[tuple[str, str], int]:
    """(area of that depth, service type) → the open cases' steps to be routed that have no
    open referral: neither completed nor cancelled, `delivery: referral`, waiting for a
    dependency, for consent or for the router."""
    rows = await _WAITING_STEPS.fetch(conn, depth=depth, service_type=service_type)
    return {(r["level_code"], r["service_type"]): r["steps"] for r in rows}
