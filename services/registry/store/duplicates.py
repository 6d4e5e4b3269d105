"""Duplicate candidates: found by blocking keys, scored by `matching`, decided by admins.

A case is stored under a few blocking keys (`registry.duplicate_keys`); a new or changed
case is compared only with the cases sharing one of its keys, at most
`matching.MAX_CANDIDATES` per key, never with every case. Nothing here is ever shown to a
partner: duplicates are the coordination's business.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from sqlalchemy import Integer, Select, String, bindparam, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.registry import matching
from services.registry.tables import cases, duplicate_keys, duplicates
from shared.pagination import keyset, page_of, parse_time

# The case's blocking keys are added and the cases sharing one of them read, at most `cap`
# per key, in one statement. Its parts see the same snapshot: the keys just added are not
# among those searched, which excludes the case itself anyway.
_INDEX = (
    text(
        """
        WITH added AS (
            INSERT INTO registry.duplicate_keys (case_id, key)
            SELECT :case_id, k.key FROM unnest(CAST(:keys AS text[])) AS k(key)
        ),
        candidates AS (
            SELECT DISTINCT d.case_id
            FROM unnest(CAST(:keys AS text[])) AS k(key)
            CROSS JOIN LATERAL (
                SELECT case_id FROM registry.duplicate_keys
                WHERE key = k.key AND case_id <> :case_id
                ORDER BY case_id
                LIMIT :cap
            ) AS d
        )
        SELECT c.id, c.beneficiary, c.return_area_code
        FROM registry.cases AS c JOIN candidates ON c.id = candidates.case_id
        WHERE coalesce(c.closure_reason, '') <> 'merged'
        """
    )
    .bindparams(
        bindparam("case_id", type_=PG_UUID(as_uuid=True)),
        bindparam("keys", type_=ARRAY(String)),
        bindparam("cap", type_=Integer),
    )
    .columns(cases.c.id, cases.c.beneficiary, cases.c.return_area_code)
)


async def index_case(session: AsyncSession, *, case: Mapping[str, Any], new: bool = False) -> int:
    """(Re)index a case under its blocking keys and record its probable duplicates; a `new`
    case, created in this transaction, has no keys to remove first.

    Returns how many candidate pairs were recorded or refreshed."""
    facts = matching.facts_of(case)
    keys = sorted(matching.blocking_keys(facts))
    if not new:
        await session.execute(delete(duplicate_keys).where(duplicate_keys.c.case_id == case["id"]))
    if not keys:
        return 0
    rows = await session.execute(
        _INDEX, {"keys": keys, "case_id": case["id"], "cap": matching.MAX_CANDIDATES}
    )
    pairs = []
    for other in rows.mappings():
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
        statement = pg_insert(duplicates).values(pairs)
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["case_a_id", "case_b_id"],
                set_={"score": statement.excluded.score, "reasons": statement.excluded.reasons},
                where=duplicates.c.status == "open",
            )
        )
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
    session: AsyncSession, *, status: str | None, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of pairs (as `duplicate_view` shows them) by creation, and the next cursor."""
    query = keyset(
        duplicates_query(status=status),
        order_by=[duplicates.c.created_at, duplicates.c.id],
        cursor=cursor,
        limit=limit,
        parse=[parse_time, UUID],
    )
    rows = (await session.execute(query)).mappings().all()
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


async def get_duplicate(
    session: AsyncSession, *, duplicate_id: UUID, for_update: bool = False
) -> dict[str, Any] | None:
    query = duplicates_query(status=None).where(duplicates.c.id == duplicate_id)
    if for_update:
        query = query.with_for_update(of=duplicates)
    row = (await session.execute(query)).mappings().one_or_none()
    return dict(row) if row else None


async def decide(
    session: AsyncSession, *, duplicate_id: UUID, status: str, kept_case_id: UUID | None = None
) -> dict[str, Any]:
    await session.execute(
        update(duplicates)
        .where(duplicates.c.id == duplicate_id)
        .values(status=status, kept_case_id=kept_case_id, decided_at=func.now())
    )
    row = await get_duplicate(session, duplicate_id=duplicate_id)
    assert row is not None
    return row
