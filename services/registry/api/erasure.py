"""HTTP of erasure (SPEC 9, admin only): the beneficiary's personal data removed from
everywhere the hub keeps it."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter

from services.registry import case_actions as actions
from services.registry.schemas_cases import CaseErased, EraseCase
from services.registry.store import cases as store
from shared.deps import Admin, DbDep
from shared.errors import NotFound
from shared.problems import Problem

router = APIRouter(tags=["data protection"])


@router.post(
    "/cases/{case_id}/erase",
    summary="Erase the beneficiary's personal data (admin; final)",
    description="Removes the beneficiary's names, phone, date of birth (its year stays), "
    "identity documents and other personal details, the steps' notes and the referrals' "
    "free-text reasons, outcomes and notes from everywhere the hub keeps them, in one "
    "transaction: the case, the referrals service's copies, the data of every event about "
    "the case (and so every webhook still to send and the feed), stored idempotent answers and "
    "the duplicate keys. What stays names no one and keeps the figures: ids, the reference, "
    "statuses and times, sex, birth year, return area, service types and partners. An open case "
    "is closed first (its live referrals are cancelled). `case.erased` tells the owner and "
    "every partner ever assigned one of its referrals; the access log records the erasure. "
    "Erasure is final: the case reads with `erased_at` set and any change answers 409; "
    "erasing it again answers the same result.",
    responses={404: {"model": Problem, "description": "No such case."}},
)
async def erase_case(case_id: UUID, body: EraseCase, admin: Admin, db: DbDep) -> CaseErased:
    async with db.transaction() as conn:
        case = await store.load_case(conn, case_id=case_id, for_update=True)
        if case is None:
            raise NotFound(f"No case {case_id}.")
        result = await actions.erase_case(conn, case=case, reason=body.reason, caller=admin)
    return CaseErased.model_validate(result)
