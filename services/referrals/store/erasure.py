"""Erasure (SPEC 9) in the referrals service: on `case.erased`, its copies of the case are
emptied of personal data, as the registry erased its own rows, and the events about the case
are erased again (those this service appended after the registry's erasure, such as the
cancellations of the case's live referrals)."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from sqlalchemy import bindparam, case, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID

from services.referrals.tables import cases, referral_history, referrals, steps
from shared.db import Connection, Statement
from shared.erasure import HUB_ACTOR, erase_beneficiary
from shared.eventlog.erase import erase_events_about

_IDS = bindparam("ids", type_=ARRAY(PG_UUID(as_uuid=True)))

_LOCK_CASES = Statement(
    select(cases.c.id, cases.c.beneficiary)
    .where(cases.c.id == func.any(_IDS))
    .order_by(cases.c.id)
    .with_for_update()
)
_ERASE_CASE = Statement(
    update(cases)
    .where(cases.c.id == bindparam("case_id"))
    .values(
        beneficiary=bindparam("beneficiary", type_=cases.c.beneficiary.type),
        vulnerabilities=[],
    )
)
_ERASE_NOTES = Statement(
    update(steps).where(steps.c.case_id == func.any(_IDS), steps.c.notes != "").values(notes="")
)
# A referral keeps the reason of its status only when the hub gave it (the history line of
# its current status is the hub's own: `shared.erasure.keeps_status_reason`); never its outcome.
_latest_actor = (
    select(referral_history.c.actor)
    .where(referral_history.c.referral_id == referrals.c.id)
    .order_by(referral_history.c.id.desc())
    .limit(1)
    .scalar_subquery()
)
_ERASE_REFERRALS = Statement(
    update(referrals)
    .where(
        referrals.c.case_id == func.any(_IDS),
        (referrals.c.outcome.is_not(None)) | (referrals.c.status_reason.is_not(None)),
    )
    .values(
        outcome=None,
        status_reason=case((_latest_actor == HUB_ACTOR, referrals.c.status_reason), else_=None),
    )
)
_ERASE_HISTORY = Statement(
    update(referral_history)
    .where(
        referral_history.c.referral_id.in_(
            select(referrals.c.id).where(referrals.c.case_id == func.any(_IDS))
        ),
        referral_history.c.actor != HUB_ACTOR,
        referral_history.c.note != "",
    )
    .values(note="")
)


async def erase_cases(conn: Connection, *, case_ids: Sequence[UUID]) -> None:
    """Erase this service's copies of the cases: the beneficiary reduced to its sex and
    birth year, no vulnerabilities, no step notes, the referrals' partner-written reasons,
    outcomes and history notes emptied (the hub's own stay); then the events about them."""
    if not case_ids:
        return
    ids = sorted(set(case_ids), key=str)
    for row in await _LOCK_CASES.fetch(conn, ids=ids):
        erased = erase_beneficiary(row["beneficiary"])
        if erased != row["beneficiary"]:
            await _ERASE_CASE.execute(conn, case_id=row["id"], beneficiary=erased)
    await _ERASE_NOTES.execute(conn, ids=ids)
    await _ERASE_REFERRALS.execute(conn, ids=ids)
    await _ERASE_HISTORY.execute(conn, ids=ids)
    for case_id in ids:
        await erase_events_about(conn, case_id=case_id)
