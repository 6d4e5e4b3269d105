"""The case's actions, each a few steps in the caller's transaction: load through the store,
decide with `case_rules`, save through the store, and emit the `case.*` event with the
case's full snapshot. No SQL here."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any
from uuid import UUID

from services.registry import case_rules as rules
from services.registry.case_shape import case_snapshot
from services.registry.store import Connection
from services.registry.store import access_log as access_store
from services.registry.store import cases as store
from services.registry.store import duplicates as duplicates_store
from services.registry.store import erasure as erasure_store
from services.registry.store import partners as partners_store
from services.registry.store import steps as steps_store
from shared.auth import Principal
from shared.errors import Conflict
from shared.eventlog.erase import erase_events_about
from shared.idempotency import forget_case
from shared.minimised import minimise_case
from shared.referral_statuses import MINIMISED_CASE_STATUSES
from shared.versioning import check_version


def expect(case: Mapping[str, Any], expected_version: int | None) -> None:
    """412 when the caller's version is not the case's."""
    check_version(case["version"], expected_version)


async def _restatus_and_emit(
    conn: Connection,
    *,
    type: str,
    case: Mapping[str, Any],
    steps: list[dict[str, Any]] | None = None,
    caller: Principal | None,
    actor: str | None = None,
) -> dict[str, Any]:
    """Give the steps the statuses the changed case says, write those that changed, emit
    the event (by `actor`, else the caller's); answers the case's snapshot."""
    if steps is None:
        steps = await steps_store.load_steps(conn, case_id=case["id"])
    await steps_store.write_statuses(conn, steps=rules.restatus(case, steps))
    snapshot = case_snapshot(case, steps)
    await store.emit_case_event(conn, type=type, snapshot=snapshot, caller=caller, actor=actor)
    return snapshot


async def check_codes(
    conn: Connection,
    *,
    area_code: str | None,
    step_types: Sequence[str],
    step_prefix: str = "body.plan",
) -> None:
    """422 naming each unknown area or service-type code."""
    area_known, known, _ = await store.known_codes(conn, area_code=area_code, step_types=step_types)
    rules.check_codes(
        area_code=area_code,
        area_known=area_known,
        step_types=step_types,
        known=known,
        step_prefix=step_prefix,
    )


async def create_case(
    conn: Connection, *, owner_id: UUID, body: Mapping[str, Any], caller: Principal
) -> dict[str, Any]:
    """A new case with its plan; its duplicates are looked for in the same transaction.
    Two statements: the checks (which draw the reference's number when they pass), then
    the case, its steps, its duplicate keys and its event."""
    plan = list(body.get("plan") or [])
    step_types = [s["service_type"] for s in plan]
    area_code = body["return"]["area_code"]
    external_id = body.get("external_id")
    if owner_id != caller.partner_id:  # an admin names the owner; a partner's key is its own
        await partners_store.check_partner(conn, partner_id=owner_id, field="body.owner_partner_id")
    checks = await store.intake_checks(
        conn,
        area_code=area_code,
        step_types=step_types,
        owner_id=owner_id,
        external_id=external_id,
    )
    rules.check_codes(
        area_code=area_code,
        area_known=checks.area_known,
        step_types=step_types,
        known=checks.known_types,
        step_prefix="body.plan",
    )
    settled = rules.settle_new_steps(plan)
    if checks.existing is not None:
        raise Conflict(
            f"A case with external_id {external_id!r} exists: {checks.existing}. "
            "Use PUT /cases/by-external-id/{external_id} to update it.",
            case_id=str(checks.existing),
        )
    assert checks.number is not None  # drawn: every check passed
    steps = rules.first_steps(settled, consent=body["consent"])
    case = rules.new_case_row(
        case_id=uuid.uuid4(),
        owner_id=owner_id,
        body=body,
        reference=rules.reference(area_code, at=checks.now, number=checks.number),
        at=checks.now,
    )
    for step in steps:
        step["case_id"] = case["id"]
        step["created_at"] = step["updated_at"] = checks.now
    snapshot = case_snapshot(case, steps)
    candidates = await store.insert_new_case(
        conn, case=case, steps=steps, snapshot=snapshot, caller=caller
    )
    await duplicates_store.record_candidates(conn, case=case, candidates=candidates)
    return snapshot


async def update_case(
    conn: Connection, *, case: dict[str, Any], changes: Mapping[str, Any], caller: Principal
) -> dict[str, Any]:
    """Apply validated changes to `beneficiary`, `return`, `vulnerabilities`, `external_id`."""
    if "return" in changes:
        await check_codes(conn, area_code=changes["return"]["area_code"], step_types=[])
    values = rules.stored_changes(case, changes)
    if "external_id" in values:
        taken = await store.external_id_taken(
            conn, owner_id=case["owner_partner_id"], external_id=values["external_id"]
        )
        if taken is not None:
            raise Conflict(f"Another case of yours has external_id {values['external_id']!r}.")
    steps = await steps_store.load_steps(conn, case_id=case["id"])
    if rules.is_unchanged(case, values):
        return case_snapshot(case, steps)
    case = await store.save_case(conn, case_id=case["id"], values=values)
    if "beneficiary" in values or "return_info" in values:
        await duplicates_store.index_case(conn, case=case)
    snapshot = case_snapshot(case, steps)
    await store.emit_case_event(conn, type="case.updated", snapshot=snapshot, caller=caller)
    return snapshot


async def change_consent(
    conn: Connection, *, case: dict[str, Any], consent: Mapping[str, Any], caller: Principal
) -> dict[str, Any]:
    """Record consent or its withdrawal; the steps' statuses follow."""
    case = await store.save_case(conn, case_id=case["id"], values={"consent": dict(consent)})
    return await _restatus_and_emit(conn, type="case.consent_changed", case=case, caller=caller)


async def add_steps(
    conn: Connection,
    *,
    case: dict[str, Any],
    new_steps: Sequence[Mapping[str, Any]],
    caller: Principal,
) -> dict[str, Any]:
    """Append steps to the plan."""
    await check_codes(
        conn,
        area_code=None,
        step_types=[s["service_type"] for s in new_steps],
        step_prefix="body.steps",
    )
    existing = await steps_store.load_steps(conn, case_id=case["id"])
    settled = rules.settle_new_steps(new_steps, existing=existing, field_prefix="body.steps")
    await steps_store.insert_steps(
        conn, case_id=case["id"], settled=settled, first_position=len(existing) + 1
    )
    case = await store.save_case(conn, case_id=case["id"], values={})
    return await _restatus_and_emit(conn, type="case.plan_changed", case=case, caller=caller)


async def set_step_owner_status(
    conn: Connection,
    *,
    case: dict[str, Any],
    step_id: UUID,
    owner_status: str,
    caller: Principal,
) -> dict[str, Any]:
    """Cancel a step (any delivery) or complete a direct step."""
    steps = await steps_store.load_steps(conn, case_id=case["id"])
    step = rules.step_to_settle(
        steps, case_id=case["id"], step_id=step_id, owner_status=owner_status
    )
    await steps_store.set_owner_status(conn, step_id=step_id, owner_status=owner_status)
    step["owner_status"] = owner_status
    case = await store.save_case(conn, case_id=case["id"], values={})
    return await _restatus_and_emit(
        conn, type=rules.step_event(owner_status), case=case, steps=steps, caller=caller
    )


async def close_case(
    conn: Connection,
    *,
    case: dict[str, Any],
    reason: str,
    caller: Principal | None,
    merged_into: UUID | None = None,
    actor: str | None = None,
) -> dict[str, Any]:
    """Close the case with a reason (or as merged into another); nothing more is routed.
    `actor` names who closes it when there is no caller (the retention worker)."""
    rules.check_may_close(case)
    case = await store.save_case(
        conn,
        case_id=case["id"],
        values={"status": "closed", "closure_reason": reason, "merged_into": merged_into},
    )
    event = "case.merged" if merged_into is not None else "case.closed"
    return await _restatus_and_emit(conn, type=event, case=case, caller=caller, actor=actor)


async def reopen_case(
    conn: Connection, *, case: dict[str, Any], caller: Principal
) -> dict[str, Any]:
    """Reopen a closed case that was not merged away."""
    rules.check_may_reopen(case)
    case = await store.save_case(
        conn, case_id=case["id"], values={"status": "open", "closure_reason": None}
    )
    return await _restatus_and_emit(conn, type="case.reopened", case=case, caller=caller)


async def merge_cases(
    conn: Connection, *, keep: dict[str, Any], other: dict[str, Any], caller: Principal
) -> dict[str, Any]:
    """Close `other` as merged into `keep` and move its unfinished steps there, under new keys
    (`case_rules.moved_steps`). The kept case's plan change routes the moved steps."""
    rules.check_not_erased(keep)
    rules.check_not_erased(other)
    rules.check_may_keep(keep)
    other_steps = await steps_store.load_steps(conn, case_id=other["id"])
    keep_steps = await steps_store.load_steps(conn, case_id=keep["id"])
    moved = rules.moved_steps(
        other_reference=other["reference"],
        other_steps=other_steps,
        keep_steps=keep_steps,
        key_max=store.KEY_MAX,
    )
    await close_case(conn, case=other, reason="merged", caller=caller, merged_into=keep["id"])
    await steps_store.insert_steps(
        conn, case_id=keep["id"], settled=moved, first_position=len(keep_steps) + 1
    )
    keep = await store.save_case(conn, case_id=keep["id"], values={})
    return await _restatus_and_emit(conn, type="case.plan_changed", case=keep, caller=caller)


RETENTION_ACTOR = "retention"
"""Who erases a case when no key asks: the retention worker (SPEC 9)."""
ERASE_ROUTE = "/cases/{case_id}/erase"


async def erase_case(
    conn: Connection, *, case: dict[str, Any], reason: str, caller: Principal | None
) -> dict[str, Any]:
    """Erase the beneficiary's personal data from everywhere the registry and the shared log
    keep it (SPEC 9), in the caller's transaction, with `case` loaded for update: an open
    case is closed first (its live referrals are cancelled by the referrals service), then
    the case's rows, the data of every event about it and the idempotency records naming it
    are erased, `case.erased` goes to the owner and every partner ever assigned one of its
    referrals, and the access log records it. No caller: the retention worker.

    Erasure is final: a case already erased answers the same result, and nothing happens."""
    if case["erased_at"] is not None:
        return rules.erasure_result(case)
    actor = caller.actor if caller else RETENTION_ACTOR
    if case["status"] == "open":
        await close_case(conn, case=case, reason="other", caller=caller, actor=actor)
    case = await erasure_store.erase_case_rows(
        conn, case_id=case["id"], values=rules.erased_values(case), reason=reason
    )
    await erase_events_about(conn, case_id=case["id"])
    await forget_case(conn, case_id=str(case["id"]), reference=case["reference"])
    result = rules.erasure_result(case)
    holders = await erasure_store.assignees_of_case(conn, case_id=case["id"])
    await erasure_store.emit_case_erased(
        conn, data=result, actor=actor, audience=[case["owner_partner_id"], *holders]
    )
    await access_store.record_access(
        conn, case_ids=[case["id"]], caller=caller, view="erase", route=ERASE_ROUTE
    )
    return result


async def minimised_for(
    conn: Connection, *, case: Mapping[str, Any], partner_id: UUID
) -> dict[str, Any] | None:
    """The minimised case for a partner holding a live referral of it, else None."""
    steps = await steps_store.load_steps(conn, case_id=case["id"])
    mine = [
        s
        for s in steps
        if s["referral_assignee_id"] == partner_id
        and s["referral_status"] in MINIMISED_CASE_STATUSES
    ]
    if not mine:
        return None
    named = await store.service_vulnerabilities(
        conn, service_ids={s["referral_service_id"] for s in mine if s["referral_service_id"]}
    )
    owner = await partners_store.get_partner(conn, partner_id=case["owner_partner_id"])
    return minimise_case(
        case=case_snapshot(case, steps),
        referral_statuses=[s["referral_status"] for s in mine],
        assignee_steps=mine,
        service_vulnerabilities=named,
        referring_partner=owner,
        today=date.today(),
    )
