"""HTTP of the notifications service: endpoints, deliveries and the feed."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response, status

from services.notifications import store
from services.notifications.feed import START, read_feed
from services.notifications.schemas import (
    AttemptRead,
    DeliveryDetail,
    DeliveryRead,
    DeliveryStatus,
    EndpointCreate,
    EndpointRead,
    EndpointTestMessage,
    EndpointUpdate,
    EndpointWithSecret,
    FeedPage,
    Recovered,
    RecoverRequest,
    TestSent,
)
from services.notifications.signing import rotate
from services.notifications.ssrf import TargetRefused, resolve
from shared.auth import Principal
from shared.deps import Caller, DbDep
from shared.errors import (
    Conflict,
    FieldError,
    Forbidden,
    NotFound,
    Unprocessable,
    cannot_be_null,
)
from shared.eventlog.model import parse_sequence
from shared.events_catalog import check_patterns
from shared.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    CursorQuery,
    LimitQuery,
    Page,
)
from shared.problems import Problem
from shared.settings import Settings
from shared.versioning import IfMatch, check_version, expected_version

router = APIRouter()

NOT_FOUND = {404: {"model": Problem, "description": "No such endpoint visible to this key."}}
MAX_WAIT_SECONDS = 30


def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _check_url(request: Request, url: str) -> None:
    try:
        await resolve(
            url, allow_private=bool(_settings(request).notifications_allow_private_targets)
        )
    except TargetRefused as exc:
        raise Unprocessable(
            f"This URL cannot receive webhooks: {exc}.",
            errors=[FieldError(field="body.url", message=str(exc), type="url_refused")],
        ) from exc


async def _endpoint(
    conn: store.Connection, endpoint_id: UUID, caller: Principal, *, for_update: bool = False
) -> dict:
    row = await store.get_endpoint(
        conn, endpoint_id=endpoint_id, caller=caller, for_update=for_update
    )
    if row is None:
        raise NotFound(f"No endpoint {endpoint_id}.")
    return row


@router.post(
    "/endpoints",
    tags=["endpoints"],
    status_code=status.HTTP_201_CREATED,
    summary="Register a webhook endpoint; the signing secret is returned once",
    description="In production the URL must be https and resolve only to public addresses. "
    "`event_types` take `*` wildcards (`referral.*`); one that matches no known event type "
    "answers 422 listing the catalog. Deliveries are signed with Standard "
    "Webhooks headers and carry CloudEvents bodies. An endpoint receives the events "
    "committed after its registration; earlier ones are in the feed (`GET /feed`).",
)
async def create_endpoint(
    body: EndpointCreate, caller: Caller, db: DbDep, request: Request
) -> EndpointWithSecret:
    if not caller.is_admin and body.partner_id not in (None, caller.partner_id):
        raise Forbidden("A partner registers endpoints only for itself.")
    partner_id = body.partner_id if caller.is_admin else caller.partner_id
    check_patterns(body.event_types, field="body.event_types")
    await _check_url(request, body.url)
    async with db.transaction() as conn:
        row, secret = await store.create_endpoint(
            conn,
            partner_id=partner_id,
            values={
                "url": body.url,
                "event_types": body.event_types,
                "description": body.description,
            },
            now=datetime.now(UTC),
        )
    return EndpointWithSecret.model_validate({**store.endpoint_view(row), "secret": secret})


@router.get("/endpoints", tags=["endpoints"], summary="Your endpoints (admins: all)")
async def list_endpoints(
    caller: Caller,
    db: DbDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[EndpointRead]:
    """A partner lists its own endpoints; an admin lists every endpoint. Secrets are never
    listed.
    """
    async with db.connection() as conn:
        items, next_cursor = await store.list_endpoints(
            conn, caller=caller, limit=limit, cursor=cursor
        )
    return Page[EndpointRead](
        items=[EndpointRead.model_validate(store.endpoint_view(r)) for r in items],
        next_cursor=next_cursor,
    )


@router.get(
    "/endpoints/{endpoint_id}", tags=["endpoints"], summary="Get an endpoint", responses=NOT_FOUND
)
async def get_endpoint(endpoint_id: UUID, caller: Caller, db: DbDep) -> EndpointRead:
    """The endpoint with its status and, when disabled, why. 404 for another partner's
    endpoint.
    """
    async with db.connection() as conn:
        row = await _endpoint(conn, endpoint_id, caller)
    return EndpointRead.model_validate(store.endpoint_view(row))


@router.patch(
    "/endpoints/{endpoint_id}",
    tags=["endpoints"],
    summary="Change an endpoint's URL, event types or description",
    responses={**NOT_FOUND, 412: {"model": Problem, "description": "Stale If-Match."}},
)
async def update_endpoint(
    endpoint_id: UUID,
    body: EndpointUpdate,
    caller: Caller,
    db: DbDep,
    request: Request,
    if_match: IfMatch = None,
) -> EndpointRead:
    """A new URL is checked as at creation (https and public addresses in production). Send
    `If-Match: <version>`.
    """
    changes = body.model_dump(exclude_unset=True)
    expected = expected_version(if_match, changes.pop("version", None))
    for field in ("url", "event_types", "description"):
        if field in changes and changes[field] is None:
            raise cannot_be_null(f"body.{field}")
    if "event_types" in changes:
        check_patterns(changes["event_types"], field="body.event_types")
    if "url" in changes:
        await _check_url(request, changes["url"])
    async with db.transaction() as conn:
        row = await _endpoint(conn, endpoint_id, caller, for_update=True)
        check_version(row["version"], expected)
        row = await store.update_endpoint(conn, endpoint_id=endpoint_id, values=changes)
    return EndpointRead.model_validate(store.endpoint_view(row))


@router.delete(
    "/endpoints/{endpoint_id}",
    tags=["endpoints"],
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an endpoint and its deliveries",
    responses=NOT_FOUND,
)
async def delete_endpoint(endpoint_id: UUID, caller: Caller, db: DbDep) -> Response:
    """The endpoint stops receiving at once; its deliveries and their attempts are deleted with
    it.
    """
    async with db.transaction() as conn:
        await _endpoint(conn, endpoint_id, caller, for_update=True)
        await store.delete_endpoint(conn, endpoint_id=endpoint_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/endpoints/{endpoint_id}/rotate-secret",
    tags=["endpoints"],
    summary="A new signing secret; the old one keeps signing beside it for 24 hours",
    responses=NOT_FOUND,
)
async def rotate_secret(endpoint_id: UUID, caller: Caller, db: DbDep) -> EndpointWithSecret:
    """Returns the new `whsec_` secret once. For 24 hours every webhook carries two signatures,
    so receivers can switch without losing one.
    """
    async with db.transaction() as conn:
        row = await _endpoint(conn, endpoint_id, caller, for_update=True)
        secrets, fresh = rotate(list(row["secrets"]), datetime.now(UTC))
        row = await store.update_endpoint(
            conn, endpoint_id=endpoint_id, values={"secrets": secrets}
        )
    return EndpointWithSecret.model_validate({**store.endpoint_view(row), "secret": fresh})


@router.post(
    "/endpoints/{endpoint_id}/enable",
    tags=["endpoints"],
    summary="Enable a disabled endpoint again",
    description="New events are sent again. What failed meanwhile is re-sent by `recover`.",
    responses=NOT_FOUND,
)
async def enable_endpoint(endpoint_id: UUID, caller: Caller, db: DbDep) -> EndpointRead:
    async with db.transaction() as conn:
        row = await _endpoint(conn, endpoint_id, caller, for_update=True)
        if row["status"] != "active":
            row = await store.update_endpoint(
                conn,
                endpoint_id=endpoint_id,
                values={"status": "active", "disabled_reason": None, "failing_since": None},
            )
            await store.emit_endpoint_event(
                conn, type="endpoint.enabled", row=row, actor=caller.actor
            )
    return EndpointRead.model_validate(store.endpoint_view(row))


@router.post(
    "/endpoints/{endpoint_id}/test",
    tags=["endpoints"],
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send an `endpoint.test` event to this endpoint only",
    responses=NOT_FOUND,
)
async def test_endpoint(endpoint_id: UUID, caller: Caller, db: DbDep) -> TestSent:
    """Appends an `endpoint.test` event that goes to this endpoint only, whatever its
    `event_types`; follow it in `/deliveries`.
    """
    async with db.transaction() as conn:
        row = await _endpoint(conn, endpoint_id, caller)
        event = await store.emit_endpoint_event(
            conn,
            type="endpoint.test",
            row=row,
            actor=caller.actor,
            data=EndpointTestMessage(
                endpoint_id=row["id"], message="A test event from Relais."
            ).model_dump(),
        )
    return TestSent(event_id=event.id)


@router.post(
    "/endpoints/{endpoint_id}/recover",
    tags=["endpoints"],
    summary="Re-send what failed for events in a time window",
    responses={**NOT_FOUND, 409: {"model": Problem, "description": "The endpoint is disabled."}},
)
async def recover(endpoint_id: UUID, body: RecoverRequest, caller: Caller, db: DbDep) -> Recovered:
    """Every delivery of this endpoint that failed for an event whose time lies in [`since`,
    `until`] is sent again from its first attempt. The endpoint must be enabled first (409
    otherwise).
    """
    until = body.until or datetime.now(UTC)
    async with db.transaction() as conn:
        row = await _endpoint(conn, endpoint_id, caller)
        if row["status"] != "active":
            raise Conflict(
                "Enable the endpoint before recovering its deliveries.",
                current_status=row["status"],
                allowed_actions=["enable"],
            )
        recovered = await store.recover_deliveries(
            conn, endpoint_id=endpoint_id, since=body.since, until=until
        )
    return Recovered(recovered=recovered)


@router.get("/deliveries", tags=["deliveries"], summary="Deliveries to your endpoints, newest last")
async def list_deliveries(
    caller: Caller,
    db: DbDep,
    endpoint_id: UUID | None = None,
    status_: Annotated[DeliveryStatus | None, Query(alias="status")] = None,
    event_type: Annotated[str | None, Query(max_length=100)] = None,
    case_id: Annotated[
        UUID | None,
        Query(
            description="Admin keys only: the deliveries of the events about this case (its "
            "`case.*` events and the events whose data names it), i.e. which partners' "
            "endpoints received it. A subject access export reads it."
        ),
    ] = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[DeliveryRead]:
    """Deliveries to your endpoints (admins: all), filtered by endpoint, status, event type
    or (admins) case. `status=failed` lists what needs a retry or a recover. A delivery is
    listed without the body it carries; `partner_id` is its endpoint's partner (null: an
    endpoint of the coordination).
    """
    if case_id is not None and not caller.is_admin:
        raise Forbidden("Only admin keys list the deliveries of a case.")
    async with db.connection() as conn:
        items, next_cursor = await store.list_deliveries(
            conn,
            caller=caller,
            endpoint_id=endpoint_id,
            status=status_,
            event_type=event_type,
            limit=limit,
            cursor=cursor,
            case_id=case_id,
        )
    return Page[DeliveryRead](
        items=[DeliveryRead.model_validate(dict(r)) for r in items], next_cursor=next_cursor
    )


async def _delivery(conn: store.Connection, delivery_id: UUID, caller: Principal) -> dict[str, Any]:
    row = await store.get_delivery(conn, delivery_id=delivery_id, caller=caller)
    if row is None:
        raise NotFound(f"No delivery {delivery_id}.")
    return row


@router.get(
    "/deliveries/{delivery_id}",
    tags=["deliveries"],
    summary="A delivery with every attempt: time, status code, latency, error, response excerpt",
    responses={404: {"model": Problem, "description": "No such delivery."}},
)
async def get_delivery(delivery_id: UUID, caller: Caller, db: DbDep) -> DeliveryDetail:
    """Every attempt of one delivery, to see why a receiver did not take it."""
    async with db.connection() as conn:
        row = await _delivery(conn, delivery_id, caller)
        tried = await store.attempts_of(conn, delivery_id=delivery_id)
    return DeliveryDetail.model_validate(
        {**row, "attempts": [AttemptRead.model_validate(a) for a in tried]}
    )


@router.post(
    "/deliveries/{delivery_id}/retry",
    tags=["deliveries"],
    summary="Send a delivery again now",
    responses={404: {"model": Problem, "description": "No such delivery."}},
)
async def retry_delivery(delivery_id: UUID, caller: Caller, db: DbDep) -> DeliveryRead:
    """Puts the delivery back in the queue now, whatever its status, keeping its `webhook-id`."""
    async with db.transaction() as conn:
        await _delivery(conn, delivery_id, caller)
        row = await store.retry_delivery(conn, delivery_id=delivery_id)
    return DeliveryRead.model_validate(row)


@router.get(
    "/feed",
    tags=["feed"],
    summary="Your events after a cursor, oldest first, with long-polling",
    description="For partners without a public endpoint. `after` is the `sequence` of the last "
    "event you have (omit it to start from the beginning); `next_cursor` is never null. "
    "`types` filters with `*` wildcards, comma-separated; a type that matches no known event "
    "type answers 422 listing the catalog. `wait` (seconds, at most 30) holds "
    "the request until an event arrives; no database connection is held meanwhile.",
)
async def feed(
    caller: Caller,
    db: DbDep,
    request: Request,
    after: Annotated[str | None, Query(max_length=40, examples=["0" * 40])] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    types: Annotated[
        str | None, Query(max_length=500, examples=["referral.*,case.pathway_completed"])
    ] = None,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS)] = 0,
) -> FeedPage:
    cursor = after or START
    try:
        tx, seq = parse_sequence(cursor)
    except ValueError as exc:
        raise Unprocessable(
            "`after` must be the 40-digit `sequence` of an event.",
            errors=[FieldError(field="query.after", message="malformed cursor", type="cursor")],
        ) from exc
    patterns = [t.strip() for t in (types or "").split(",") if t.strip()]
    check_patterns(patterns, field="query.types")
    runtime = request.app.state.runtime
    flag = runtime.listener.subscribe()
    deadline = time.monotonic() + wait
    try:
        while True:
            flag.clear()
            # A connection only for the read: none is held while the request waits.
            async with db.connection() as conn:
                events = await read_feed(
                    conn,
                    tx=tx,
                    seq=seq,
                    limit=limit,
                    partner_id=None if caller.is_admin else caller.partner_id,
                    types=patterns,
                )
            remaining = deadline - time.monotonic()
            if events or remaining <= 0:
                break
            # Wake at the next notification, and re-read at least every 250 ms: an event that
            # was committed but not yet below the read horizon becomes visible without one.
            waiter = asyncio.ensure_future(flag.wait())
            await asyncio.wait([waiter], timeout=min(remaining, 0.25))
            waiter.cancel()
    finally:
        runtime.listener.unsubscribe(flag)
    return FeedPage(
        items=[e.to_cloudevent() for e in events],
        next_cursor=events[-1].sequence if events else cursor,
    )
