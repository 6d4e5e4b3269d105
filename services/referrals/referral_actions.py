"""What a caller does to a referral, whichever view it comes through (REST or FHIR): read it
as that caller may see it, and carry out a lifecycle action: load, decide, save and emit, in
one transaction. The decisions are `lifecycle.transition`'s; the queries the store's."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from services.referrals import projections
from services.referrals.lifecycle import transition
from services.referrals.resources import resource
from services.referrals.store import Connection
from services.referrals.store import referrals as referral_store
from shared.auth import Principal
from shared.db import Database
from shared.errors import NotFound
from shared.versioning import check_version


def roles_of(caller: Principal, referral: dict[str, Any]) -> set[str]:
    """The caller's roles on a referral: none means it may not see it (404)."""
    roles = set()
    if caller.is_admin:
        roles.add("admin")
    if caller.partner_id is not None:
        if referral["assignee_partner_id"] == caller.partner_id:
            roles.add("assignee")
        if referral["owner_partner_id"] == caller.partner_id:
            roles.add("owner")
    return roles


def sees_decision(caller: Principal, referral: dict[str, Any]) -> bool:
    """The routing decision is shown to admins and the case owner, not the assignee."""
    return bool(roles_of(caller, referral) & {"admin", "owner"})


async def read(conn: Connection, row: dict[str, Any], caller: Principal) -> dict[str, Any]:
    """The Referral with its history and the minimised case, as this caller may see it."""
    history = (await referral_store.history_of(conn, referral_ids=[row["id"]]))[row["id"]]
    case = await referral_store.minimised_for_referral(conn, referral=row)
    return resource(row, history=history, case=case, with_decision=sees_decision(caller, row))


async def listed(
    conn: Connection, rows: list[dict[str, Any]], caller: Principal
) -> list[dict[str, Any]]:
    """Referrals as lists serve them: `case` is only `{reference}`."""
    history = await referral_store.history_of(conn, referral_ids=[r["id"] for r in rows])
    return [
        resource(
            r,
            history=history[r["id"]],
            case={"reference": r["case_reference"]},
            with_decision=sees_decision(caller, r),
        )
        for r in rows
    ]


async def visible(conn: Connection, *, referral_id: UUID, caller: Principal) -> dict[str, Any]:
    """The referral's row if the caller may see it; NotFound otherwise (as if it did not exist)."""
    row = await referral_store.load_referral(conn, referral_id=referral_id)
    if row is None or not roles_of(caller, row):
        raise NotFound(f"No referral {referral_id}.")
    return row


async def act(
    db: Database,
    *,
    referral_id: UUID,
    caller: Principal,
    action: str,
    expected_version: int | None,
    note: str = "",
    reason: str | None = None,
    outcome: str | None = None,
) -> dict[str, Any]:
    """Carry out a caller's lifecycle action (accept, reject, start, complete, fail, cancel):
    404 when it may not see the referral, 403 when its roles can never take the action, 409
    when the status forbids it, 412 when `expected_version` is stale. Returns the Referral as
    the caller then sees it."""
    async with db.transaction() as conn:
        row = await referral_store.lock_for_change(conn, referral_id=referral_id)
        roles = roles_of(caller, row) if row else set()
        if row is None or not roles:
            raise NotFound(f"No referral {referral_id}.")
        spec = transition(row["status"], action, roles)
        check_version(row["version"], expected_version)
        updated = await referral_store.set_status(
            conn,
            referral=row,
            status=spec.target,
            event_type=spec.event,
            actor=caller.actor,
            note=note or (reason or outcome or ""),
            reason=reason,
            outcome=outcome,
        )
        if action == "complete":
            await projections.resolve_step(conn, step_id=row["step_id"], resolution="completed")
        elif action == "cancel":
            # The owner or an admin cancelling a referral cancels its step too.
            await projections.resolve_step(conn, step_id=row["step_id"], resolution="cancelled")
        return await read(conn, updated, caller)
