"""Queries of the registry: keyword-only functions that take a session."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import Select, String, Table, cast, func, insert, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from services.registry.tables import partners, services
from shared.auth import Principal, create_key
from shared.constraints import PARTNER_UNKNOWN
from shared.errors import FieldError, NotFound, Unprocessable, unknown_reference
from shared.eventlog.append import append
from shared.tables import api_keys, areas, service_types
from shared.versioning import check_version

SOURCE = "/registry"

KEY_COLUMNS = [c for c in api_keys.c if c.name != "key_hash"]


def partner_snapshot(row: Mapping[str, Any]) -> dict[str, Any]:
    return dict(row)


async def create_partner(
    session: AsyncSession, *, values: Mapping[str, Any], caller: Principal
) -> dict[str, Any]:
    row = (
        (
            await session.execute(
                insert(partners).values(id=uuid.uuid4(), **values).returning(*partners.c)
            )
        )
        .mappings()
        .one()
    )
    snapshot = partner_snapshot(row)
    await append(
        session,
        type="partner.created",
        source=SOURCE,
        subject=f"partners/{row['id']}",
        data=snapshot,
        actor=caller.actor,
        audience=[row["id"]],
    )
    return snapshot


async def get_partner(session: AsyncSession, *, partner_id: UUID) -> dict[str, Any] | None:
    row = (
        (await session.execute(select(partners).where(partners.c.id == partner_id)))
        .mappings()
        .one_or_none()
    )
    return dict(row) if row else None


async def check_partner(session: AsyncSession, *, partner_id: UUID, field: str) -> None:
    """422 naming `field` when no partner has this id (before a write that refers to it)."""
    found = (
        await session.execute(select(partners.c.id).where(partners.c.id == partner_id))
    ).scalar()
    if found is None:
        raise unknown_reference(field, PARTNER_UNKNOWN)


def partners_query() -> Select:
    return select(partners)


async def create_partner_key(
    session: AsyncSession, *, partner_id: UUID, name: str
) -> tuple[dict[str, Any], str]:
    # A key issued to an inactive partner must answer 401 like its other keys. The share
    # lock orders this against a concurrent change of the partner's status.
    status = (
        await session.execute(
            select(partners.c.status).where(partners.c.id == partner_id).with_for_update(read=True)
        )
    ).scalar_one()
    row, key = await create_key(session, role="partner", partner_id=partner_id, name=name)
    if status != "active":
        await session.execute(
            update(api_keys).where(api_keys.c.id == row["id"]).values(partner_active=False)
        )
    return row, key


def keys_query(*, partner_id: UUID) -> Select:
    return select(*KEY_COLUMNS).where(api_keys.c.partner_id == partner_id)


async def get_key(session: AsyncSession, *, key_id: UUID) -> dict[str, Any] | None:
    row = (
        (await session.execute(select(*KEY_COLUMNS).where(api_keys.c.id == key_id)))
        .mappings()
        .one_or_none()
    )
    return dict(row) if row else None


async def revoke_key(session: AsyncSession, *, key_id: UUID) -> None:
    await session.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )


async def update_partner(
    session: AsyncSession,
    *,
    partner_id: UUID,
    changes: Mapping[str, Any],
    caller: Principal,
    expected_version: int | None,
) -> dict[str, Any]:
    """Apply `changes` (already authorised) with optimistic concurrency; emit the event."""
    current = (
        (
            await session.execute(
                select(partners).where(partners.c.id == partner_id).with_for_update()
            )
        )
        .mappings()
        .one_or_none()
    )
    if current is None:
        raise NotFound(f"No partner {partner_id}.")
    check_version(current["version"], expected_version)
    row = (
        (
            await session.execute(
                update(partners)
                .where(partners.c.id == partner_id)
                .values(**changes, version=partners.c.version + 1, updated_at=func.now())
                .returning(*partners.c)
            )
        )
        .mappings()
        .one()
    )
    if "status" in changes and changes["status"] != current["status"]:
        # Keys of an inactive partner answer 401 at once, in every service.
        await session.execute(
            update(api_keys)
            .where(api_keys.c.partner_id == partner_id)
            .values(partner_active=changes["status"] == "active")
        )
    snapshot = partner_snapshot(row)
    await append(
        session,
        type="partner.updated",
        source=SOURCE,
        subject=f"partners/{partner_id}",
        data=snapshot,
        actor=caller.actor,
        audience=[partner_id],
    )
    return snapshot


# --- Service directory ---------------------------------------------------------------


async def missing_codes(session: AsyncSession, *, table: Table, codes: Iterable[str]) -> list[str]:
    """The codes of `codes` that `table` (areas or service types) does not hold."""
    wanted = sorted(set(codes))
    if not wanted:
        return []
    found = set(
        (await session.execute(select(table.c.code).where(table.c.code.in_(wanted)))).scalars()
    )
    return [c for c in wanted if c not in found]


async def check_directory_refs(
    session: AsyncSession,
    *,
    service_type: str | None,
    areas_: Sequence[str] | None,
) -> None:
    errors: list[FieldError] = []
    if service_type is not None and await missing_codes(
        session, table=service_types, codes=[service_type]
    ):
        errors.append(
            FieldError(
                field="body.service_type",
                message=f"unknown service type {service_type!r}",
                type="unknown_code",
            )
        )
    unknown_areas = set(await missing_codes(session, table=areas, codes=areas_ or ()))
    for index, code in enumerate(areas_ or ()):
        if code in unknown_areas:
            errors.append(
                FieldError(
                    field=f"body.areas[{index}]",
                    message=f"unknown area {code!r}",
                    type="unknown_code",
                )
            )
    if errors:
        raise Unprocessable("Unknown codes.", errors=errors)


def service_snapshot(row: Mapping[str, Any]) -> dict[str, Any]:
    return dict(row)


async def create_service(
    session: AsyncSession, *, values: Mapping[str, Any], caller: Principal
) -> dict[str, Any]:
    row = (
        (
            await session.execute(
                insert(services).values(id=uuid.uuid4(), **values).returning(*services.c)
            )
        )
        .mappings()
        .one()
    )
    snapshot = service_snapshot(row)
    await append(
        session,
        type="service.created",
        source=SOURCE,
        subject=f"services/{row['id']}",
        data=snapshot,
        actor=caller.actor,
        audience=[row["partner_id"]],
    )
    return snapshot


async def get_service(
    session: AsyncSession, *, service_id: UUID, for_update: bool = False
) -> dict[str, Any] | None:
    query = select(services).where(services.c.id == service_id)
    if for_update:
        query = query.with_for_update()
    row = (await session.execute(query)).mappings().one_or_none()
    return dict(row) if row else None


async def update_service(
    session: AsyncSession, *, service_id: UUID, changes: Mapping[str, Any], caller: Principal
) -> dict[str, Any]:
    row = (
        (
            await session.execute(
                update(services)
                .where(services.c.id == service_id)
                .values(**changes, version=services.c.version + 1, updated_at=func.now())
                .returning(*services.c)
            )
        )
        .mappings()
        .one()
    )
    snapshot = service_snapshot(row)
    await append(
        session,
        type="service.updated",
        source=SOURCE,
        subject=f"services/{service_id}",
        data=snapshot,
        actor=caller.actor,
        audience=[row["partner_id"]],
    )
    return snapshot


def services_query(
    *, service_type: str | None, partner_id: UUID | None, area: str | None
) -> Select:
    query = select(services)
    if service_type is not None:
        query = query.where(services.c.service_type == service_type)
    if partner_id is not None:
        query = query.where(services.c.partner_id == partner_id)
    if area is not None:
        # Covering `area`: a service area is the area itself or one of its ancestors.
        ancestors = select(areas.c.path).where(areas.c.code == area).scalar_subquery()
        query = query.where(
            services.c.areas.op("&&")(func.coalesce(ancestors, cast([], ARRAY(String))))
        )
    return query
