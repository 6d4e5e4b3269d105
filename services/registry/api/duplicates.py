"""HTTP of duplicates (admin only): candidate pairs of cases that are probably one person."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter

from services.registry import case_actions
from services.registry import case_rules as rules
from services.registry.schemas_cases import (
    AccessLogEntry,
    DuplicateRead,
    DuplicateStatus,
    MergeRequest,
)
from services.registry.store import Connection
from services.registry.store import access_log as access_store
from services.registry.store import cases as cases_store
from services.registry.store import duplicates as duplicates_store
from shared.deps import Admin, DbDep
from shared.errors import NotFound
from shared.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page
from shared.problems import Problem

router = APIRouter()

NOT_FOUND = {404: {"model": Problem, "description": "No such duplicate pair."}}
CONFLICT = {409: {"model": Problem, "description": "Already decided, or not allowed."}}


@router.get(
    "/duplicates",
    tags=["duplicates"],
    summary="Candidate duplicate pairs (admin)",
    description="Pairs of cases whose beneficiaries are probably one person: the same identity "
    "document, or close names with the same birth date or year and sex (the same area raises "
    "the score). Partners are never told of them.",
)
async def list_duplicates(
    _admin: Admin,
    db: DbDep,
    status: DuplicateStatus | None = "open",
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[DuplicateRead]:
    async with db.connection() as conn:
        items, next_cursor = await duplicates_store.list_duplicates(
            conn, status=status, limit=limit, cursor=cursor
        )
    return Page[DuplicateRead](
        items=[DuplicateRead.model_validate(r) for r in items], next_cursor=next_cursor
    )


async def _open_pair(conn: Connection, duplicate_id: UUID) -> dict:
    pair = await duplicates_store.get_duplicate(conn, duplicate_id=duplicate_id, for_update=True)
    if pair is None:
        raise NotFound(f"No duplicate pair {duplicate_id}.")
    rules.check_pair_open(pair)
    return pair


@router.post(
    "/duplicates/{duplicate_id}/dismiss",
    tags=["duplicates"],
    summary="Not the same person (admin)",
    responses={**NOT_FOUND, **CONFLICT},
)
async def dismiss(duplicate_id: UUID, _admin: Admin, db: DbDep) -> DuplicateRead:
    """Records that the two cases are different people."""
    async with db.transaction() as conn:
        await _open_pair(conn, duplicate_id)
        row = await duplicates_store.decide(conn, duplicate_id=duplicate_id, status="dismissed")
    return DuplicateRead.model_validate(duplicates_store.duplicate_view(row))


@router.post(
    "/duplicates/{duplicate_id}/link",
    tags=["duplicates"],
    summary="The same person followed by two owners: record it, share nothing (admin)",
    responses={**NOT_FOUND, **CONFLICT},
)
async def link(duplicate_id: UUID, _admin: Admin, db: DbDep) -> DuplicateRead:
    """Records, for the coordination only, that two partners follow the same person. Nothing is
    shared between them.
    """
    async with db.transaction() as conn:
        await _open_pair(conn, duplicate_id)
        row = await duplicates_store.decide(conn, duplicate_id=duplicate_id, status="linked")
    return DuplicateRead.model_validate(duplicates_store.duplicate_view(row))


@router.post(
    "/duplicates/{duplicate_id}/merge",
    tags=["duplicates"],
    summary="Merge two cases of the same owner into one (admin)",
    description="The other case closes with `closure_reason: merged` and `merged_into`; its "
    "open referrals are cancelled and its unfinished steps move to the kept case under new "
    "keys (`<other reference>.<key>`) and are routed there. Two owners' cases answer 409: "
    "link them instead.",
    responses={**NOT_FOUND, **CONFLICT},
)
async def merge(duplicate_id: UUID, body: MergeRequest, admin: Admin, db: DbDep) -> DuplicateRead:
    async with db.transaction() as conn:
        pair = await _open_pair(conn, duplicate_id)
        other_id = rules.merged_away_of(pair, keep_case_id=body.keep_case_id)
        locked = {
            case_id: await cases_store.load_case(conn, case_id=case_id, for_update=True)
            for case_id in sorted((body.keep_case_id, other_id), key=str)
        }
        keep, other = locked[body.keep_case_id], locked[other_id]
        assert keep is not None and other is not None
        rules.check_may_merge_away(other)
        await case_actions.merge_cases(conn, keep=keep, other=other, caller=admin)
        row = await duplicates_store.decide(
            conn, duplicate_id=duplicate_id, status="merged", kept_case_id=body.keep_case_id
        )
    return DuplicateRead.model_validate(duplicates_store.duplicate_view(row))


@router.get(
    "/access-log",
    tags=["access-log"],
    summary="Who read which case, full or minimised, and when (admin)",
)
async def list_access_log(
    _admin: Admin,
    db: DbDep,
    case_id: UUID | None = None,
    partner_id: UUID | None = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[AccessLogEntry]:
    """Every read of a full, minimised or listed case by a key, newest last. Filter by case or
    by partner.
    """
    async with db.connection() as conn:
        items, next_cursor = await access_store.list_entries(
            conn, case_id=case_id, partner_id=partner_id, limit=limit, cursor=cursor
        )
    return Page[AccessLogEntry](
        items=[AccessLogEntry.model_validate(r) for r in items], next_cursor=next_cursor
    )
