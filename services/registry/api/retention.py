"""HTTP of retention (SPEC 9, admin): what the next run of the retention worker would erase."""

from __future__ import annotations

from fastapi import APIRouter, Request

from services.registry.schemas_data_protection import RetentionCandidate, RetentionPreview
from services.registry.store import retention as retention_store
from shared.deps import Admin, DbDep
from shared.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery
from shared.settings import Settings

router = APIRouter(tags=["data-protection"])


@router.get(
    "/retention/preview",
    summary="The cases the next retention run would erase (admin)",
    description="With `RELAIS_RETENTION_DAYS` set, the registry's retention worker erases, "
    "once a day (`RELAIS_RETENTION_INTERVAL_SECONDS`), every case closed for longer than "
    "that many days and not erased yet. This lists them now, oldest closure first, with no "
    "personal data: id, reference, owner and when it was closed. The worker and this list "
    "make the same selection. With `RELAIS_RETENTION_DAYS` unset retention is off: "
    "`retention` is false and `items` is empty.",
)
async def retention_preview(
    request: Request,
    _admin: Admin,
    db: DbDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> RetentionPreview:
    settings: Settings = request.app.state.settings
    days = settings.retention_days
    retention_store.check_cursor(cursor)  # a bad cursor is a 422, retention on or off
    if days is None:
        return RetentionPreview(
            items=[], next_cursor=None, retention=False, retention_days=None, closed_before=None
        )
    async with db.connection() as conn:
        closed_before = await retention_store.cutoff(conn, days=days)
        items, next_cursor = await retention_store.expired_cases(
            conn, days=days, limit=limit, cursor=cursor
        )
    return RetentionPreview(
        items=[RetentionCandidate.model_validate(r) for r in items],
        next_cursor=next_cursor,
        retention=True,
        retention_days=days,
        closed_before=closed_before,
    )
