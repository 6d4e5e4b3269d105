"""Duplicate candidates: found by blocking keys, scored by `matching`, decided by admins.

A case is stored under a few blocking keys (`registry.duplicate_keys`); a new or changed
case is compared only with the cases sharing one of its keys, at most
`matching.MAX_CANDIDATES` per key, never with every case. Nothing here is ever shown to a
partner: duplicates are the coordination's business.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import Select, bindparam, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import UUID as PG_UUID

from services.registry import matching
from services.registry.tables import cases, duplicate_keys, duplicates
from shared.db import Connection, Statement
from shared.pagination import keyset, page_of, parse_time

# The case's blocking keys are added and the cases sharing one of them read, at most
# `MAX_CANDIDATES` per key, in one statement. Its parts see the same snapshot: the keys just
# added are not among those searched, which excludes the case itself anyway. The intake runs
# the same parts in its one statement that writes a new case (store/cases.py). The keys go
# as one parameter each (`key_1`...; NULL where a case has fewer): an array would make
# PostgreSQL plan the statement anew at every call, its generic plan being costed for an
# array of a hundred keys.
KEY_SLOTS = matching.MAX_BLOCKING_KEYS
_KEYS = (
    "(VALUES "
    + ", ".join(f"(CAST(:key_{n} AS text))" for n in range(1, KEY_SLOTS + 1))
    + ") AS k(key)"
)
INDEX_CTES = f"""
    added AS (
        INSERT INTO registry.duplicate_keys (case_id, key)
        SELECT :case_id, k.key FROM {_KEYS} WHERE k.key IS NOT NULL
    ),
    candidates AS (
        SELECT DISTINCT d.case_id
        FROM {_KEYS}
        CROSS JOIN LATERAL (
            SELECT case_id FROM registry.duplicate_keys
            WHERE key = k.key AND case_id <> :case_id
            ORDER BY case_id
            LIMIT {matching.MAX_CANDIDATES}
        ) AS d
        WHERE k.key IS NOT NULL
    )
"""  # noqa: S608 - the module's own constants
CANDIDATES = """
    SELECT c.id, c.beneficiary, c.return_area_code
    FROM registry.cases AS c JOIN candidates ON c.id = candidates.case_id
    WHERE coalesce(c.closure_reason, '') <> 'merged'
"""
INDEX_PARAMETERS = (bindparam("case_id", type_=PG_UUID(as_uuid=True)),)
CANDIDATE_COLUMNS = (cases.c.id, cases.c.beneficiary, cases.c.return_area_code)
_INDEX = Statement(
    text("WITH" + INDEX_CTES + CANDIDATES).bindparams(*INDEX_PARAMETERS).columns(*CANDIDATE_COLUMNS)
)
_UNINDEX = Statement(delete(duplicate_keys).where(duplicate_keys.c.case_id == bindparam("case_id")))
# The pairs found, in one statement whatever their number; a pair already known keeps its
# decision and, while open, takes the new score and reasons.
_RECORD_PAIRS = Statement(
    """
    INSERT INTO registry.duplicates AS d (id, case_a_id, case_b_id, score, reasons)
    SELECT p.id, p.case_a_id, p.case_b_id, p.score, p.reasons
    FROM jsonb_to_recordset(CAST(:pairs AS jsonb))
        AS p(id uuid, case_a_id uuid, case_b_id uuid, score double precision, reasons text[])
    ON CONFLICT (case_a_id, case_b_id) DO UPDATE
    SET score = excluded.score, reasons = excluded.reasons
    WHERE d.status = 'open'
    """
)


def index_parameters(case: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of `INDEX_CTES` for a case: its id and its blocking keys."""
    keys = sorted(matching.blocking_keys(matching.facts_of(case)))
    slots: list[str | None] = [*keys, *([None] * (KEY_SLOTS - len(keys)))]
    return {"case_id": case["id"], **{f"key_{n}": key for n, key in enumerate(slots, start=1)}}


async def index_case(conn: Connection, *, case: Mapping[str, Any], new: bool = False) -> int:
    """(Re)index a case under its blocking keys and record its probable duplicates; a `new`
    case, created in this transaction, has no keys to remove first.

    Returns how many candidate pairs were recorded or refreshed."""
    parameters = index_parameters(case)
    if not new:
        await _UNINDEX.execute(conn, case_id=case["id"])
    if parameters["key_1"] is None:  # no key
        return 0
    rows = await _INDEX.fetch(conn, **parameters)
    return await record_candidates(conn, case=case, candidates=rows)


async def record_candidates(
    conn: Connection, *, case: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]]
) -> int:
    """Score the cases found under the case's keys and record the probable duplicates
    among them; returns how many pairs were recorded or refreshed."""
    if not candidates:  # the usual case: nothing to score
        return 0
    facts = matching.facts_of(case)
    pairs = []
    for other in candidates:
        match = matching.score(facts, matching.facts_of(other))
        if match is None:
            continue
        a, b = sorted((case["id"], other["id"]), key=str)  # PostgreSQL orders uuids alike
        pairs.append(
            {
                "id": uuid.uuid4(),
                "case_a_id": a,
                "case_b_id": b,
                "score": match.score,
                "reasons": list(match.reasons),
            }
        )
    if pairs:
        await _RECORD_PAIRS.execute(conn, pairs=pairs)
    return len(pairs)


def duplicates_query(*, status: str | None) -> Select:
    a = cases.alias("a")
    b = cases.alias("b")
    query = (
        select(
            duplicates,
            a.c.reference.label("a_reference"),
            b.c.reference.label("b_reference"),
            a.c.owner_partner_id.label("a_owner"),
            b.c.owner_partner_id.label("b_owner"),
        )
        .join(a, a.c.id == duplicates.c.case_a_id)
        .join(b, b.c.id == duplicates.c.case_b_id)
    )
    if status is not None:
        query = query.where(duplicates.c.status == status)
    return query


async def list_duplicates(
    conn: Connection, *, status: str | None, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of pairs (as `duplicate_view` shows them) by creation, and the next cursor."""
    query = keyset(
        duplicates_query(status=status),
        order_by=[duplicates.c.created_at, duplicates.c.id],
        cursor=cursor,
        limit=limit,
        parse=[parse_time, UUID],
    )
    rows = await Statement(query).fetch(conn)
    items, next_cursor = page_of(
        rows, limit=limit, key=lambda r: (r["created_at"].isoformat(), r["id"])
    )
    return [duplicate_view(r) for r in items], next_cursor


def duplicate_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "case_ids": [row["case_a_id"], row["case_b_id"]],
        "case_references": [row["a_reference"], row["b_reference"]],
        "owner_partner_ids": [row["a_owner"], row["b_owner"]],
        "score": row["score"],
        "reasons": list(row["reasons"]),
        "status": row["status"],
        "kept_case_id": row["kept_case_id"],
        "created_at": row["created_at"],
        "decided_at": row["decided_at"],
    }


_PAIR_QUERY = duplicates_query(status=None).where(duplicates.c.id == bindparam("duplicate_id"))
_PAIR = Statement(_PAIR_QUERY)
_PAIR_FOR_UPDATE = Statement(_PAIR_QUERY.with_for_update(of=duplicates))
_DECIDE = Statement(
    update(duplicates)
    .where(duplicates.c.id == bindparam("duplicate_id"))
    .values(
        status=bindparam("status"), kept_case_id=bindparam("kept_case_id"), decided_at=func.now()
    )
)


async def get_duplicate(
    conn: Connection, *, duplicate_id: UUID, for_update: bool = False
) -> dict[str, Any] | None:
    statement = _PAIR_FOR_UPDATE if for_update else _PAIR
    row = await statement.fetchrow(conn, duplicate_id=duplicate_id)
    return dict(row) if row else None


async def decide(
    conn: Connection, *, duplicate_id: UUID, status: str, kept_case_id: UUID | None = None
) -> dict[str, Any]:
    await _DECIDE.execute(conn, duplicate_id=duplicate_id, status=status, kept_case_id=kept_case_id)
    row = await get_duplicate(conn, duplicate_id=duplicate_id)
    assert row is not None
    return row
