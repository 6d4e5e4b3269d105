"""Erasure (SPEC 9): the registry's rows of a case emptied of personal data, and the partners
that held a copy of it. The events and the idempotency records are erased by `shared`
(`shared.eventlog.erase`, `shared.idempotency.forget_case`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from uuid import UUID

from sqlalchemy import bindparam, delete, func, or_, text, update

from services.registry.store import SOURCE
from services.registry.tables import cases, duplicate_keys, duplicates, plan_steps
from shared.db import Connection, Statement
from shared.eventlog.about_case import ABOUT_CASE
from shared.eventlog.append import append

_ERASE_CASE = Statement(
    update(cases)
    .where(cases.c.id == bindparam("case_id"))
    .values(
        beneficiary=bindparam("beneficiary", type_=cases.c.beneficiary.type),
        return_info=bindparam("return_info", type_=cases.c.return_info.type),
        vulnerabilities=bindparam("vulnerabilities", type_=cases.c.vulnerabilities.type),
        erased_at=func.now(),
        erasure_reason=bindparam("reason"),
        version=cases.c.version + 1,
        updated_at=func.now(),
    )
    .returning(*cases.c)
)
_ERASE_NOTES = Statement(
    update(plan_steps)
    .where(plan_steps.c.case_id == bindparam("case_id"), plan_steps.c.notes != "")
    .values(notes="")
)
# The blocking keys hold the names and document numbers; the pairs' reasons say what the
# person shared with another case. The pairs themselves (ids, score, decision) stay.
_FORGET_KEYS = Statement(
    delete(duplicate_keys).where(duplicate_keys.c.case_id == bindparam("case_id"))
)
_FORGET_REASONS = Statement(
    update(duplicates)
    .where(
        or_(
            duplicates.c.case_a_id == bindparam("case_id"),
            duplicates.c.case_b_id == bindparam("case_id"),
        )
    )
    .values(reasons=text("'{}'"))
)
# Every partner ever assigned one of the case's referrals, as the referral events tell it.
_ASSIGNEES = Statement(
    f"""
    SELECT DISTINCT CAST(data ->> 'assignee_partner_id' AS uuid) AS partner_id
    FROM hub.events
    WHERE {ABOUT_CASE}
      AND type LIKE 'referral.%' AND data ->> 'assignee_partner_id' IS NOT NULL
    """  # noqa: S608 - the expression is a constant
)


async def erase_case_rows(
    conn: Connection, *, case_id: UUID, values: Mapping[str, Any], reason: str
) -> dict[str, Any]:
    """Write the erased `values` (`case_rules.erased_values`) and the erasure to the case,
    empty its steps' notes, forget its duplicate keys and its pairs' reasons; the new row."""
    row = await _ERASE_CASE.fetchrow(conn, case_id=case_id, reason=reason, **values)
    assert row is not None
    await _ERASE_NOTES.execute(conn, case_id=case_id)
    await _FORGET_KEYS.execute(conn, case_id=case_id)
    await _FORGET_REASONS.execute(conn, case_id=case_id)
    return dict(row)


async def assignees_of_case(conn: Connection, *, case_id: UUID) -> set[UUID]:
    """The partners ever assigned one of the case's referrals (they hold a copy of it)."""
    return {row["partner_id"] for row in await _ASSIGNEES.fetch(conn, case_id=str(case_id))}


async def emit_case_erased(
    conn: Connection, *, data: Mapping[str, Any], actor: str, audience: Iterable[UUID]
) -> None:
    """Append `case.erased` (`case_id`, `reference`, `erased_at`, `reason`) for the owner
    and every partner that held a copy of the case."""
    await append(
        conn,
        type="case.erased",
        source=SOURCE,
        subject=f"cases/{data['case_id']}",
        data=data,
        actor=actor,
        audience=audience,
    )
