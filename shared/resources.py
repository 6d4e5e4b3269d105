"""The named shapes the registry and the referrals service both serve: the minimised case
(built by `shared.minimised.minimise_case`), the bare case reference shown in its place, and
the Referral as its events carry it (the referrals service serves it; the registry's subject
access export gives a case's referrals in it)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)
from typing_extensions import TypeAliasType

from shared.referral_statuses import REFERRAL_STATUSES

ReferralStatus = TypeAliasType("ReferralStatus", Literal[REFERRAL_STATUSES])  # type: ignore[valid-type]
Priority = TypeAliasType("Priority", Literal["emergency", "urgent", "normal"])


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CaseReference(_Shape):
    """A case named by its reference only: in lists, and once a referral is no longer live
    or consent is not granted."""

    reference: str = Field(examples=["ML-2026-000123"])


class MinimisedBeneficiary(_Shape):
    given_name: str | None
    family_name: str | None
    sex: str | None
    age: int | None = Field(default=None, description="Age today, when the date of birth is known.")
    birth_year: int | None = Field(
        default=None, description="Instead of `age`, when the date of birth is not known."
    )
    phone: str | None
    languages: list[str]

    @model_serializer(mode="wrap")
    def _age_or_birth_year(self, handler: SerializerFunctionWrapHandler):
        """One of the two, as `minimise_case` gives it. (Not annotated: a return annotation
        would replace the documented schema.)"""
        data = handler(self)
        data.pop("birth_year" if self.age is not None else "age", None)
        return data


class MinimisedReturn(_Shape):
    area_code: str | None


class MinimisedStep(_Shape):
    """One of the assignee's live steps."""

    key: str
    service_type: str
    priority: str
    notes: str


class ReferringPartner(_Shape):
    name: str | None
    acronym: str | None
    contact_email: str | None
    contact_phone: str | None


class MinimisedCase(_Shape):
    """What the assignee of a live referral may see of a case (SPEC 6), and no more."""

    reference: str = Field(examples=["ML-2026-000123"])
    beneficiary: MinimisedBeneficiary
    return_: MinimisedReturn = Field(alias="return")
    vulnerabilities: list[str] = Field(description="Those the assignee's service names.")
    steps: list[MinimisedStep]
    referring_partner: ReferringPartner

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class HistoryEntry(BaseModel):
    """One line of a referral's history: each status it took, when, by whom."""

    status: ReferralStatus
    at: datetime
    actor: str = Field(description="A partner id, `admin` or `system`.")
    note: str


class Referral(BaseModel):
    """The Referral as `referral.*` events carry it: everything but the routing decision."""

    id: UUID
    case_id: UUID
    case_reference: str
    step_id: UUID
    service_type: str
    priority: Priority
    status: ReferralStatus
    status_reason: str | None
    assignee_partner_id: UUID | None
    service_id: UUID | None
    owner_partner_id: UUID
    deadline_at: datetime | None
    attempt: int = Field(description="1 for the first routing of a step, 2 after one re-routing...")
    outcome: str | None
    case: MinimisedCase | CaseReference = Field(
        description="The minimised case while the referral is live and consent is granted; "
        "otherwise `{reference}`. In lists, always `{reference}`: get the referral for more."
    )
    history: list[HistoryEntry]
    version: int
    created_at: datetime
    updated_at: datetime
