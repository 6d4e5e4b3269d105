"""Request and response models of the referrals service."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator
from typing_extensions import TypeAliasType

from services.referrals.indicators import DIMENSIONS, GAP_LEVELS
from services.referrals.routing import (
    AGE,
    AGE_UNKNOWN,
    INACTIVE_PARTNER,
    INACTIVE_SERVICE,
    NOT_COVERING,
    PARTNER_EXCLUDED,
    SEX,
    SEX_UNKNOWN,
    VULNERABILITIES,
)
from shared.pathway import RESOLVED
from shared.resources import (
    Priority,
    Referral,
    ReferralStatus,
)

ReferralRole = TypeAliasType("ReferralRole", Literal["incoming", "outgoing"])


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class RoutingCandidate(BaseModel):
    """A service that could take the step, with the keys it was ranked by."""

    rank: int = Field(description="1 is the chosen one.")
    service_id: UUID
    partner_id: UUID
    coverage_depth: int = Field(
        description="How precisely its areas cover the case's: deeper first."
    )
    priority: int = Field(
        description="The service's priority set by the coordination: lower first."
    )
    has_free_capacity: bool
    load: int = Field(description="Its live referrals when the decision was taken.")
    capacity: int | None
    load_ratio: float


class RoutingExclusion(BaseModel):
    """A service of the step's type that could not take it, and why."""

    service_id: UUID
    partner_id: UUID
    reason: str = Field(
        description=f"`{INACTIVE_SERVICE}`, `{INACTIVE_PARTNER}`, `{NOT_COVERING}`, `{SEX}`, "
        f"`{SEX_UNKNOWN}`, `{AGE}`, `{AGE_UNKNOWN}`, `{VULNERABILITIES}`, or "
        f"`{PARTNER_EXCLUDED}:<rejected|expired|failed>`.",
        examples=[NOT_COVERING],
    )


class RoutingAssignment(BaseModel):
    """The coordination's assignment of an unassigned referral."""

    partner_id: UUID
    service_id: UUID | None
    by: str
    at: datetime


class RoutingDecision(BaseModel):
    """Why the step went where it went: every candidate with its rank keys and every excluded
    service with its reason."""

    service_type: str
    area_code: str
    priority: str
    decided_at: datetime | None
    chosen_service_id: UUID | None
    candidates: list[RoutingCandidate]
    excluded: list[RoutingExclusion]
    excluded_partners: dict[str, str] = Field(
        default_factory=dict,
        description="Partners excluded for this step (by id): `rejected`, `expired` or `failed`.",
    )
    unassigned_reason: str | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="`max_attempts` when the step was routed four times without a taker.",
    )
    assigned: RoutingAssignment | None = Field(default=None, exclude_if=lambda v: v is None)


class ReferralRead(Referral):
    """The Referral as served: with the routing decision for admins and the case owner."""

    decision: RoutingDecision | None = Field(
        default=None,
        description="The routing decision: every candidate with its rank keys and every "
        "excluded service with its reason. Only for admins and the case owner.",
    )


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
    priority: Priority = "normal"

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
    decision: RoutingDecision


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
    priority: Priority
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


class PathwayCompletedStep(BaseModel):
    id: UUID
    key: str
    status: Literal[tuple(sorted(RESOLVED))] = Field(  # type: ignore[misc]
        description="How the step ended."
    )


class PathwayCompleted(BaseModel):
    """The `data` of a `case.pathway_completed` event: every step with its final status."""

    case_id: UUID
    case_reference: str
    steps: list[PathwayCompletedStep]


# --- The coordination's view (SPEC 12) ------------------------------------------------------

Dimension = TypeAliasType("Dimension", Literal[DIMENSIONS])  # type: ignore[valid-type]
GapLevel = TypeAliasType("GapLevel", Literal[tuple(GAP_LEVELS)])  # type: ignore[misc]

_COUNT = "null when withheld (`min_cell`)."


class ReferralsByStatus(BaseModel):
    """The row's referrals by their status now (each null when withheld)."""

    requested: int | None
    accepted: int | None
    in_progress: int | None
    unassigned: int | None
    rejected: int | None
    expired: int | None
    completed: int | None
    failed: int | None
    cancelled: int | None


class IndicatorRow(BaseModel):
    """One row of indicators: the values of the grouped dimensions (only those), then the
    figures over the row's referrals. Definitions in the operation's description."""

    region: str | None = Field(
        default=None, description="Grouped by `region`: the region's area code (depth 1)."
    )
    area: str | None = Field(default=None, description="Grouped by `area`: the area code.")
    service_type: str | None = Field(default=None, description="Grouped by `service_type`.")
    dimension: str | None = Field(default=None, description="Grouped by `dimension`.")
    partner: UUID | None = Field(
        default=None,
        description="Grouped by `partner`: the assignee's id (null for unassigned referrals).",
    )
    month: str | None = Field(
        default=None,
        pattern=r"^[0-9]{4}-[0-9]{2}$",
        description="Grouped by `month`: the month of creation, `YYYY-MM` (UTC).",
        examples=["2026-03"],
    )
    cases_referred: int | None = Field(description=f"Distinct cases; {_COUNT}")
    referrals: int | None = Field(description=f"Referrals created in the period; {_COUNT}")
    by_status: ReferralsByStatus
    accepted: int | None = Field(description=f"Referrals ever accepted; {_COUNT}")
    answered: int | None = Field(description=f"Accepted or rejected; {_COUNT}")
    acceptance_rate: float | None = Field(description="accepted / answered.")
    rejection_rate: float | None = Field(description="rejected / answered.")
    expiry_rate: float | None = Field(description="expired / (answered + expired).")
    rerouted_steps: int | None = Field(
        description=f"Distinct steps with a referral of attempt > 1; {_COUNT}"
    )
    hours_to_acceptance_median: float | None
    hours_to_acceptance_p90: float | None
    days_to_completion_median: float | None
    overdue_now: int | None = Field(description=f"Still requested past the deadline; {_COUNT}")
    unassigned_now: int | None = Field(description=f"Unassigned now; {_COUNT}")
    pathways_completed: int | None = Field(
        description=f"Distinct cases whose pathway last completed within the period; {_COUNT}"
    )
    suppressed: bool = Field(description="True when a figure of the row is withheld.")


class IndicatorsRead(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: date = Field(alias="from", description="First day of the period (included).")
    to: date = Field(description="Day after the period (excluded).")
    group_by: list[Dimension]
    min_cell: int | None = Field(description="Counts under it are withheld.")
    rows: list[IndicatorRow]


class GapDemand(BaseModel):
    """What an area asks of a service type."""

    waiting_steps: int = Field(
        description="Open cases' steps of the type not routed yet (no open referral)."
    )
    unassigned: int = Field(description="Referrals of the type unassigned now.")
    recent_referrals: int = Field(description="Referrals of the type created in the last 90 days.")
    total: int = Field(
        description="waiting_steps + the referrals unassigned or recent (each referral once)."
    )


class GapRow(BaseModel):
    area_code: str
    area_name: str
    service_type: str
    demand: GapDemand
    services: int = Field(description="Active services of active partners covering the area.")
    free_capacity: int | None = Field(
        description="Their capacity minus their load, added up; null when one has no limit."
    )
    gap: bool = Field(description="Demand, and no covering service.")
    saturated: bool = Field(description="Covering services, every one of them full.")


class GapsRead(BaseModel):
    level: GapLevel
    service_type: str | None = Field(description="The one service type asked for, if any.")
    rows: list[GapRow]
