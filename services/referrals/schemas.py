"""Request and response models of the referrals service."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

ReferralStatus = Literal[
    "requested",
    "accepted",
    "in_progress",
    "unassigned",
    "rejected",
    "expired",
    "completed",
    "failed",
    "cancelled",
]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class HistoryEntry(BaseModel):
    status: ReferralStatus
    at: datetime
    actor: str = Field(description="A partner id, `admin` or `system`.")
    note: str


class ReferralRead(BaseModel):
    id: UUID
    case_id: UUID
    case_reference: str
    step_id: UUID
    service_type: str
    priority: Literal["emergency", "urgent", "normal"]
    status: ReferralStatus
    status_reason: str | None
    assignee_partner_id: UUID | None
    service_id: UUID | None
    owner_partner_id: UUID
    deadline_at: datetime | None
    attempt: int = Field(description="1 for the first routing of a step, 2 after one re-routing...")
    outcome: str | None
    case: dict[str, Any] = Field(
        description="The minimised case while the referral is live and consent is granted; "
        "otherwise `{reference}`. In lists, always `{reference}`: get the referral for more."
    )
    history: list[HistoryEntry]
    decision: dict[str, Any] | None = Field(
        default=None,
        description="The routing decision: every candidate with its rank keys and every "
        "excluded service with its reason. Only for admins and the case owner.",
    )
    version: int
    created_at: datetime
    updated_at: datetime


class ActionBody(StrictModel):
    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={"examples": [{"note": "Seen at our Kayes office"}]},
    )

    note: str = Field(default="", max_length=2000)
    version: int | None = Field(default=None, description="The version you read (or If-Match).")


class ReasonBody(ActionBody):
    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "No place before March"}]})

    reason: str = Field(min_length=1, max_length=500, examples=["No place before March"])


class CompleteBody(ActionBody):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"outcome": "Certificate in tailoring obtained"}]}
    )

    outcome: str = Field(
        min_length=1, max_length=2000, examples=["Certificate in tailoring obtained"]
    )


class AssignBody(ActionBody):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"partner_id": "7b0f3c52-1d7e-4c1a-9f0e-2b6a1d5e8c43"}]}
    )

    partner_id: UUID
    service_id: UUID | None = Field(
        default=None, description="Default: the partner's best-ranked service of the step's type."
    )


class HypotheticalPerson(StrictModel):
    sex: Literal["female", "male", "other", "unknown"] = "unknown"
    date_of_birth: date | None = None
    birth_year: int | None = Field(default=None, ge=1900, le=2100)


class HypotheticalReturn(StrictModel):
    area_code: str = Field(min_length=1, max_length=32, examples=["ML-1-03"])


class HypotheticalCase(StrictModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    beneficiary: HypotheticalPerson = Field(default_factory=HypotheticalPerson)
    vulnerabilities: list[str] = Field(default_factory=list, max_length=30)
    return_: HypotheticalReturn = Field(alias="return")


class PreviewRequest(StrictModel):
    """Either a case and one of its steps, or a hypothetical case with a service type."""

    case_id: UUID | None = None
    step_id: UUID | None = None
    case: HypotheticalCase | None = None
    service_type: str | None = Field(
        default=None, max_length=64, examples=["economic.job_placement"]
    )
    priority: Literal["emergency", "urgent", "normal"] = "normal"

    @model_validator(mode="after")
    def _one_form(self) -> PreviewRequest:
        real = self.case_id is not None or self.step_id is not None
        if real and (self.case_id is None or self.step_id is None):
            raise ValueError("give both case_id and step_id")
        if real == (self.case is not None):
            raise ValueError("give either case_id and step_id, or a hypothetical case")
        if self.case is not None and not self.service_type:
            raise ValueError("a hypothetical case needs a service_type")
        return self


class PreviewRead(BaseModel):
    chosen_service_id: UUID | None
    chosen_partner_id: UUID | None
    deadline_at: datetime | None
    decision: dict[str, Any]


class PathwayReferral(BaseModel):
    id: UUID
    status: ReferralStatus
    status_reason: str | None
    attempt: int
    assignee_partner_id: UUID | None
    service_id: UUID | None
    deadline_at: datetime | None
    created_at: datetime
    updated_at: datetime


class PathwayStep(BaseModel):
    id: UUID
    key: str
    service_type: str
    priority: str
    delivery: str
    depends_on: list[str]
    status: str
    status_reason: str | None
    referrals: list[PathwayReferral]


class PathwayRead(BaseModel):
    case_id: UUID
    case_reference: str
    case_status: str
    consent_granted: bool
    completed: bool
    steps: list[PathwayStep]
