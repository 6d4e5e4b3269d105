"""Cases: reading, inserting and saving them, the codes an intake checks, the page of
GET /cases as JSON built by PostgreSQL, and the `case.*` events.

The case's `version` counts the changes made through the API (`save_case`); step statuses
derived from referral events do not change it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import (
    Integer,
    String,
    Text,
    bindparam,
    cast,
    func,
    insert,
    literal_column,
    null,
    select,
    text,
    update,
)
from sqlalchemy import case as sql_case
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, aggregate_order_by
from sqlalchemy.dialects.postgresql import UUID as PG_UUID

from services.registry.case_shape import CASE_COLUMNS, STEP_FIELDS
from services.registry.store import SOURCE
from services.registry.store import duplicates as duplicates_store
from services.registry.tables import access_log, cases, plan_steps, services
from shared.auth import Principal
from shared.db import Connection, Statement
from shared.eventlog.append import EVENT_COLUMNS, append, event_parameters, event_values
from shared.pagination import keyset, page_of, parse_time
from shared.tables import areas

KEY_MAX = plan_steps.c.key.type.length

_CASE_QUERY = select(cases).where(cases.c.id == bindparam("case_id"))
_CASE = Statement(_CASE_QUERY)
_CASE_FOR_UPDATE = Statement(_CASE_QUERY.with_for_update())
_BY_EXTERNAL_ID = (
    cases.c.owner_partner_id == bindparam("owner_id"),
    cases.c.external_id == bindparam("external_id"),
)
_CASE_BY_EXTERNAL_ID = Statement(select(cases).where(*_BY_EXTERNAL_ID).with_for_update())
_CASE_ID_BY_EXTERNAL_ID = Statement(select(cases.c.id).where(*_BY_EXTERNAL_ID))


async def load_case(
    conn: Connection, *, case_id: UUID, for_update: bool = False
) -> dict[str, Any] | None:
    row = await (_CASE_FOR_UPDATE if for_update else _CASE).fetchrow(conn, case_id=case_id)
    return dict(row) if row else None


async def find_by_external_id(
    conn: Connection, *, owner_id: UUID, external_id: str
) -> dict[str, Any] | None:
    """The owner's case with this external id, locked; None if it has none."""
    row = await _CASE_BY_EXTERNAL_ID.fetchrow(conn, owner_id=owner_id, external_id=external_id)
    return dict(row) if row else None


async def external_id_taken(conn: Connection, *, owner_id: UUID, external_id: str) -> UUID | None:
    """The id of the owner's case with this external id, if any."""
    return await _CASE_ID_BY_EXTERNAL_ID.fetchval(conn, owner_id=owner_id, external_id=external_id)


# The codes a request names that exist, and the owner's case with the external id, if any:
# one statement for what an intake checks before it writes.
_KNOWN = Statement(
    text(
        """
        SELECT 'area' AS kind, code AS value FROM hub.areas WHERE code = :area
        UNION ALL
        SELECT 'service_type', code FROM hub.service_types WHERE code = ANY(:types)
        UNION ALL
        SELECT 'case', CAST(id AS text) FROM registry.cases
        WHERE owner_partner_id = :owner AND external_id = :external_id
        """
    ).bindparams(
        bindparam("area", type_=String),
        bindparam("types", type_=ARRAY(String)),
        bindparam("owner", type_=PG_UUID(as_uuid=True)),
        bindparam("external_id", type_=String),
    )
)


async def known_codes(
    conn: Connection,
    *,
    area_code: str | None,
    step_types: Sequence[str],
    owner_id: UUID | None = None,
    external_id: str | None = None,
) -> tuple[bool, set[str], UUID | None]:
    """(area known, known service types, the owner's case with this external id)."""
    area_known, types, existing = area_code is None, set(), None
    if area_code is None and not step_types and external_id is None:
        return area_known, types, existing
    rows = await _KNOWN.fetch(
        conn,
        area=area_code,
        types=sorted(set(step_types)),
        owner=owner_id,
        external_id=external_id if owner_id is not None else None,
    )
    for row in rows:
        if row["kind"] == "area":
            area_known = True
        elif row["kind"] == "service_type":
            types.add(row["value"])
        else:
            existing = UUID(row["value"])
    return area_known, types, existing


# What an intake checks before it writes, in one statement: the codes it names that exist,
# the owner's case with its external id if any, the transaction's time (the new case's
# `created_at`), and, only when every check passes, the next number of the references.
_INTAKE_CHECKS = Statement(
    text(
        """
        WITH checks AS MATERIALIZED (
            SELECT EXISTS (SELECT FROM hub.areas WHERE code = :area) AS area_known,
                ARRAY(SELECT code FROM hub.service_types WHERE code = ANY(:types)) AS types,
                (SELECT id FROM registry.cases
                 WHERE owner_partner_id = :owner AND external_id = :external_id) AS existing
        )
        SELECT area_known, types, existing, now() AS now,
            CASE WHEN area_known AND cardinality(types) = :type_count AND existing IS NULL
                 THEN nextval('registry.case_reference_seq') END AS number
        FROM checks
        """
    ).bindparams(
        bindparam("area", type_=String),
        bindparam("types", type_=ARRAY(String)),
        bindparam("type_count", type_=Integer),
        bindparam("owner", type_=PG_UUID(as_uuid=True)),
        bindparam("external_id", type_=String),
    )
)


async def intake_checks(
    conn: Connection,
    *,
    area_code: str,
    step_types: Sequence[str],
    owner_id: UUID,
    external_id: str | None,
) -> IntakeChecks:
    """What a new case's request names that exists, and what the new case needs from the
    database: the transaction's time and, when every check passed, a reference number."""
    types = sorted(set(step_types))
    row = await _INTAKE_CHECKS.fetchrow(
        conn,
        area=area_code,
        types=types,
        type_count=len(types),
        owner=owner_id,
        external_id=external_id,
    )
    assert row is not None
    return IntakeChecks(
        area_known=row["area_known"],
        known_types=set(row["types"]),
        existing=row["existing"],
        now=row["now"],
        number=row["number"],
    )


@dataclass(frozen=True)
class IntakeChecks:
    area_known: bool
    known_types: set[str]
    existing: UUID | None  # the owner's case with the request's external id
    now: datetime  # the transaction's time
    number: int | None  # the new case's reference number, drawn when every check passed


# A new case in one statement: the case, its steps, its blocking keys with the cases that
# share one of them (returned, to be scored), and its `case.created` event. Every column of
# the case is written (`case_rules.new_case_row`): the row stored is the row the event shows.
_CASE_COLUMNS = tuple(column.name for column in cases.c)
_INSERT_NEW_CASE = Statement(
    text(
        f"""
        WITH new_case AS (
            INSERT INTO registry.cases ({", ".join(_CASE_COLUMNS)})
            VALUES ({", ".join(":case_" + name for name in _CASE_COLUMNS)})
        ),
        new_steps AS (
            INSERT INTO registry.plan_steps (id, case_id, key, position, service_type,
                priority, delivery, depends_on, notes, status, status_reason, created_at,
                updated_at)
            SELECT s.id, :case_id, s.key, s.position, s.service_type, s.priority,
                s.delivery, s.depends_on, s.notes, s.status, s.status_reason,
                :case_created_at, :case_created_at
            FROM jsonb_to_recordset(:steps) AS s(id uuid, key text,
                position integer, service_type text, priority text, delivery text,
                depends_on text[], notes text, status text, status_reason text)
        ),
        {duplicates_store.INDEX_CTES},
        event AS (
            INSERT INTO hub.events {EVENT_COLUMNS} VALUES {event_values("event_")}
        )
        {duplicates_store.CANDIDATES}
        """  # noqa: S608 - the names are the tables' own columns and the stores' constants
    )
    .bindparams(
        *(bindparam("case_" + column.name, type_=column.type) for column in cases.c),
        bindparam("steps", type_=JSONB),
    )
    .columns(*duplicates_store.CANDIDATE_COLUMNS)
)


async def insert_new_case(
    conn: Connection,
    *,
    case: Mapping[str, Any],
    steps: Sequence[Mapping[str, Any]],
    snapshot: Mapping[str, Any],
    caller: Principal,
) -> list[dict[str, Any]]:
    """Write a new case (its row as `case_rules.new_case_row` made it), its steps, its
    blocking keys and its `case.created` event in one statement; answers the cases that
    share one of its keys (`duplicates.record_candidates` scores them)."""
    rows = await _INSERT_NEW_CASE.fetch(
        conn,
        **{"case_" + name: case[name] for name in _CASE_COLUMNS},  # `case_id` is the case's id
        **{k: v for k, v in duplicates_store.index_parameters(case).items() if k != "case_id"},
        steps=[
            {
                **{name: step[name] for name in STEP_FIELDS},
                "id": str(step["id"]),
                "position": step["position"],
            }
            for step in steps
        ],
        **event_parameters(
            "event_",
            type="case.created",
            source=SOURCE,
            subject=f"cases/{case['id']}",
            data=snapshot,
            actor=caller.actor,
            audience=[case["owner_partner_id"]],
        ),
    )
    return [dict(row) for row in rows]


# The columns a change of a case may write (`save_case`). One statement writes any of them:
# each is set when its flag `set_<column>` is true, else kept.
SAVED_COLUMNS = (
    "external_id",
    "beneficiary",
    "return_info",
    "return_area_code",
    "vulnerabilities",
    "consent",
    "status",
    "closure_reason",
    "merged_into",
)
_NEW_STATUS = bindparam("status", type_=cases.c.status.type)
# `closed_at` follows `status`, whichever action writes it (close, a merge closing the other
# case, reopen): the time a case is closed, kept while it stays closed, cleared when it
# reopens. Retention counts from it.
_CLOSED_AT = sql_case(
    (
        bindparam("set_status") & (_NEW_STATUS == "closed") & (cases.c.status != "closed"),
        func.now(),
    ),
    (bindparam("set_status") & (_NEW_STATUS != "closed"), null()),
    else_=cases.c.closed_at,
)
_SAVE_CASE = Statement(
    update(cases)
    .where(cases.c.id == bindparam("case_id"))
    .values(
        {
            name: sql_case(
                (bindparam(f"set_{name}"), bindparam(name, type_=cases.c[name].type)),
                else_=cases.c[name],
            )
            for name in SAVED_COLUMNS
        }
        | {"closed_at": _CLOSED_AT, "version": cases.c.version + 1, "updated_at": func.now()}
    )
    .returning(*cases.c)
)


async def save_case(
    conn: Connection, *, case_id: UUID, values: Mapping[str, Any]
) -> dict[str, Any]:
    """Write `values` (of the `SAVED_COLUMNS`) to the case as one more change (its version
    goes up; `closed_at` follows a change of `status`); the new row."""
    unknown = values.keys() - set(SAVED_COLUMNS)
    if unknown:
        raise ValueError(f"save_case writes no column {sorted(unknown)}")
    params: dict[str, Any] = {}
    for name in SAVED_COLUMNS:
        params[f"set_{name}"] = name in values
        params[name] = values.get(name)
    row = await _SAVE_CASE.fetchrow(conn, case_id=case_id, **params)
    return dict(row)


async def emit_case_event(
    conn: Connection,
    *,
    type: str,
    snapshot: Mapping[str, Any],
    caller: Principal | None,
    actor: str | None = None,
) -> None:
    """Append a `case.*` event carrying the case's snapshot, for its owner."""
    await append(
        conn,
        type=type,
        source=SOURCE,
        subject=f"cases/{snapshot['id']}",
        data=snapshot,
        actor=actor or (caller.actor if caller else "system"),
        audience=[snapshot["owner_partner_id"]],
    )


_ELIGIBILITIES = Statement(
    select(services.c.eligibility).where(
        services.c.id == func.any(bindparam("ids", type_=ARRAY(PG_UUID(as_uuid=True))))
    )
)


async def service_vulnerabilities(conn: Connection, *, service_ids: set[UUID]) -> set[str]:
    """The vulnerabilities these services' eligibility names."""
    named: set[str] = set()
    if service_ids:
        for row in await _ELIGIBILITIES.fetch(conn, ids=list(service_ids)):
            named.update((row["eligibility"] or {}).get("vulnerabilities_any") or [])
    return named


# --- GET /cases --------------------------------------------------------------------------------

# Each case's plan as a JSON array (the steps' `STEP_FIELDS`, in plan order).
_PLAN = (
    select(
        func.coalesce(
            func.json_agg(
                aggregate_order_by(
                    func.json_build_object(
                        *(
                            part
                            for name in STEP_FIELDS
                            for part in (literal_column(f"'{name}'"), plan_steps.c[name])
                        )
                    ),
                    plan_steps.c.position,
                )
            ),
            literal_column("'[]'::json"),
        )
    )
    .where(plan_steps.c.case_id == cases.c.id)
    .scalar_subquery()
)

# The Case resource of a row as JSON text (the fields of `case_shape.CASE_COLUMNS`, with the
# plan), for lists: the page is validated straight from it, with no Python objects between.
CASE_JSON = cast(
    func.json_build_object(
        *(
            part
            for name, column in CASE_COLUMNS.items()
            for part in (
                literal_column(f"'{name}'"),
                _PLAN if column is None else cases.c[column],
            )
        )
    ),
    Text,
).label("case_json")

_ACCESS_COLUMNS = ["case_id", "partner_id", "key_id", "view", "route"]


def _cases_query(
    *,
    caller: Principal,
    status: str | None,
    area: str | None,
    updated_since: datetime | None,
    commit_margin: timedelta,
):
    """The cases a caller may list: `id`, `updated_at` and the case as JSON (`case_json`)."""
    query = select(cases.c.id, cases.c.updated_at, CASE_JSON)
    if not caller.is_admin:
        query = query.where(cases.c.owner_partner_id == caller.partner_id)
    if status is not None:
        query = query.where(cases.c.status == status)
    if area is not None:
        within = select(areas.c.code).where(areas.c.path.contains([area]))
        query = query.where(cases.c.return_area_code.in_(within))
    if updated_since is not None:
        # updated_at is the time of the statement, not of the commit: a change that committed
        # after `updated_since` may carry an earlier time, up to a transaction's length.
        query = query.where(cases.c.updated_at >= updated_since - commit_margin)
    return query


async def list_cases_and_record(
    conn: Connection,
    *,
    caller: Principal,
    status: str | None,
    area: str | None,
    updated_since: datetime | None,
    commit_margin: timedelta,
    limit: int,
    cursor: str | None,
    route: str,
) -> tuple[list[str], str | None]:
    """A keyset page of the cases the caller may list, as JSON texts of the Case resource,
    and the next cursor; the page's cases recorded in the access log as listed by the caller
    (SPEC 9), in one statement: the read and its record succeed or fail together, in one
    round trip. Run it on a connection outside a transaction (`Database.connection()`): the
    statement commits alone (no BEGIN, no COMMIT)."""
    query = keyset(
        _cases_query(
            caller=caller,
            status=status,
            area=area,
            updated_since=updated_since,
            commit_margin=commit_margin,
        ),
        order_by=[cases.c.updated_at, cases.c.id],
        cursor=cursor,
        limit=limit,
        parse=[parse_time, UUID],
    )
    page = query.cte("page")
    logged = (
        insert(access_log)
        .from_select(
            _ACCESS_COLUMNS,
            select(
                page.c.id,
                bindparam("log_partner_id", caller.partner_id, type_=PG_UUID(as_uuid=True)),
                bindparam("log_key_id", caller.key_id, type_=PG_UUID(as_uuid=True)),
                bindparam("log_view", "list", type_=String),
                bindparam("log_route", route, type_=String),
            )
            .order_by(page.c.updated_at, page.c.id)
            .limit(limit),
        )
        .cte("logged")
    )
    statement = select(page).add_cte(logged).order_by(page.c.updated_at, page.c.id)
    rows = await Statement(statement).fetch(conn)
    items, next_cursor = page_of(
        rows, limit=limit, key=lambda r: (r["updated_at"].isoformat(), r["id"])
    )
    return [r["case_json"] for r in items], next_cursor
