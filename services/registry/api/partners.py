"""HTTP of the registry: parse, authorise, call the store, shape the answer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Query, status

from services.registry.schemas import (
    AdminKeyCreate,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    PartnerCreate,
    PartnerRead,
    PartnerUpdate,
)
from services.registry.store import partners as store
from shared import key_rules
from shared.deps import Admin, Caller, DbDep
from shared.errors import Forbidden, NotFound, cannot_be_null
from shared.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page
from shared.problems import Problem
from shared.versioning import IfMatch, expected_version

router = APIRouter()

NOT_FOUND = {404: {"model": Problem, "description": "No such resource visible to this key."}}


@router.post(
    "/partners",
    tags=["partners"],
    status_code=status.HTTP_201_CREATED,
    summary="Register a partner organisation (admin)",
)
async def create_partner(body: PartnerCreate, caller: Admin, db: DbDep) -> PartnerRead:
    """Registers an organisation taking part in the framework. Give it an API key next with
    `POST /partners/{id}/api-keys`.
    """
    async with db.transaction() as conn:
        row = await store.create_partner(conn, values=body.model_dump(), caller=caller)
    return PartnerRead.model_validate(row)


@router.get("/partners", tags=["partners"], summary="List partners (every key: the directory)")
async def list_partners(
    _caller: Caller,
    db: DbDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
    name: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="Only the partners of this name (whatever its case), e.g. to look one "
            "up before registering it.",
            examples=["OIM Mali"],
        ),
    ] = None,
) -> Page[PartnerRead]:
    """The directory of partners, readable by every key, ordered by name."""
    async with db.connection() as conn:
        items, next_cursor = await store.list_partners(conn, limit=limit, cursor=cursor, name=name)
    return Page[PartnerRead](
        items=[PartnerRead.model_validate(r) for r in items], next_cursor=next_cursor
    )


@router.get(
    "/partners/{partner_id}", tags=["partners"], summary="Get a partner", responses=NOT_FOUND
)
async def get_partner(partner_id: UUID, _caller: Caller, db: DbDep) -> PartnerRead:
    """One partner of the directory, readable by every key."""
    async with db.connection() as conn:
        row = await store.get_partner(conn, partner_id=partner_id)
    if row is None:
        raise NotFound(f"No partner {partner_id}.")
    return PartnerRead.model_validate(row)


@router.patch(
    "/partners/{partner_id}",
    tags=["partners"],
    summary="Change a partner (the partner itself: name and contacts; admins: also kind, status)",
    description="Setting `status: inactive` makes the partner's keys answer 401 at once, pauses "
    "its webhook endpoints and routes its referrals still `requested` to other partners.",
    responses={**NOT_FOUND, 412: {"model": Problem, "description": "Stale If-Match."}},
)
async def update_partner(
    partner_id: UUID,
    body: PartnerUpdate,
    caller: Caller,
    db: DbDep,
    if_match: IfMatch = None,
) -> PartnerRead:
    if not caller.is_admin and caller.partner_id != partner_id:
        raise NotFound(f"No partner {partner_id}.")
    changes = body.model_dump(mode="json", exclude_unset=True)
    expected = expected_version(if_match, changes.pop("version", None))
    if not caller.is_admin and {"kind", "status"} & changes.keys():
        raise Forbidden("Only the coordination changes a partner's kind or status.")
    for field in ("name", "kind", "status", "acronym"):
        if field in changes and changes[field] is None:
            raise cannot_be_null(f"body.{field}")
    async with db.transaction() as conn:
        row = await store.update_partner(
            conn,
            partner_id=partner_id,
            changes=changes,
            caller=caller,
            expected_version=expected,
        )
    return PartnerRead.model_validate(row)


@router.post(
    "/partners/{partner_id}/api-keys",
    tags=["api-keys"],
    status_code=status.HTTP_201_CREATED,
    summary="Issue an API key to a partner (admin); the key is shown once",
    responses=NOT_FOUND,
)
async def create_api_key(
    partner_id: UUID, body: ApiKeyCreate, _admin: Admin, db: DbDep
) -> ApiKeyCreated:
    """The key (`rk_...`) is in this response only; it is stored as a hash. A key of an
    inactive partner is created inactive. With `expires_at`, the key answers 401 from then on.
    """
    expires_at = key_rules.check_expiry(body.expires_at, now=datetime.now(UTC))
    async with db.transaction() as conn:
        partner = await store.get_partner(conn, partner_id=partner_id)
        if partner is None:
            raise NotFound(f"No partner {partner_id}.")
        row, key = await store.create_partner_key(
            conn, partner_id=partner_id, name=body.name, expires_at=expires_at
        )
    return ApiKeyCreated.model_validate({**row, "key": key})


@router.get(
    "/partners/{partner_id}/api-keys",
    tags=["api-keys"],
    summary="List a partner's keys, without the secrets (admin, or the partner itself)",
    responses=NOT_FOUND,
)
async def list_api_keys(
    partner_id: UUID,
    caller: Caller,
    db: DbDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[ApiKeyRead]:
    """Keys are listed with their prefix, `last_used_at` and `expires_at`, never the secret."""
    if not caller.is_admin and caller.partner_id != partner_id:
        raise NotFound(f"No partner {partner_id}.")
    async with db.connection() as conn:
        if await store.get_partner(conn, partner_id=partner_id) is None:
            raise NotFound(f"No partner {partner_id}.")
        items, next_cursor = await store.list_keys(
            conn, partner_id=partner_id, limit=limit, cursor=cursor
        )
    return Page[ApiKeyRead](
        items=[ApiKeyRead.model_validate(r) for r in items], next_cursor=next_cursor
    )


@router.post(
    "/admin-keys",
    tags=["api-keys"],
    status_code=status.HTTP_201_CREATED,
    summary="Issue an admin key (admin); the key is shown once",
)
async def create_admin_key(body: AdminKeyCreate, _admin: Admin, db: DbDep) -> ApiKeyCreated:
    """A key of the coordination, with every admin right. The key (`rk_...`) is in this
    response only; it is stored as a hash. To replace a leaked or departing admin key:
    create a new one here, switch to it, then revoke the old one with
    `DELETE /api-keys/{key_id}`. The name `bootstrap` is reserved to the key the hub starts
    with (RELAIS_BOOTSTRAP_ADMIN_KEY). With `expires_at`, the key answers 401 from then on.
    """
    key_rules.check_admin_key_name(body.name)
    expires_at = key_rules.check_expiry(body.expires_at, now=datetime.now(UTC))
    async with db.transaction() as conn:
        row, key = await store.create_admin_key(conn, name=body.name, expires_at=expires_at)
    return ApiKeyCreated.model_validate({**row, "key": key})


@router.get(
    "/admin-keys",
    tags=["api-keys"],
    summary="List the admin keys, without the secrets (admin)",
)
async def list_admin_keys(
    _admin: Admin,
    db: DbDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[ApiKeyRead]:
    """Every admin key, revoked and expired ones included, oldest first, with its prefix,
    `last_used_at`, `expires_at` and `revoked_at`, never the secret. The key the hub starts
    with is named `bootstrap`."""
    async with db.connection() as conn:
        items, next_cursor = await store.list_admin_keys(conn, limit=limit, cursor=cursor)
    return Page[ApiKeyRead](
        items=[ApiKeyRead.model_validate(r) for r in items], next_cursor=next_cursor
    )


@router.delete(
    "/api-keys/{key_id}",
    tags=["api-keys"],
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke a key, with immediate effect (admin, or the key's partner)",
    responses={
        **NOT_FOUND,
        409: {
            "model": Problem,
            "description": "The last active admin key: create another admin key first.",
        },
    },
)
async def revoke_api_key(key_id: Annotated[UUID, Path()], caller: Caller, db: DbDep) -> None:
    """The key answers 401 from the next request on, in every service. Admins revoke any
    key, admin keys included (also the one they call with); a partner its own keys. The last
    active admin key (not revoked, not expired) is refused with 409, so that somebody can
    still manage the hub: create another admin key first (`POST /admin-keys`)."""
    async with db.transaction() as conn:
        key = await store.get_key(conn, key_id=key_id)
        if key is None or (not caller.is_admin and key["partner_id"] != caller.partner_id):
            raise NotFound(f"No API key {key_id}.")
        if key["role"] == "admin":
            admin_keys = [key_rules.KeyState.of(k) for k in await store.lock_admin_keys(conn)]
            target = next((k for k in admin_keys if k.id == key_id), None)
            if target is None:
                return  # revoked meanwhile: nothing left to do
            key_rules.check_revocation(target, admin_keys=admin_keys, at=datetime.now(UTC))
        await store.revoke_key(conn, key_id=key_id)
