"""Request and response models of the service directory, cases, duplicates and access log."""

from __future__ import annotations

import datetime as dt
from datetime import UTC, date, datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from typing_extensions import TypeAliasType

from services.registry.schemas import E164, StrictModel

Sex = Literal["female", "male", "other", "unknown"]
Priority = Literal["emergency", "urgent", "normal"]
Delivery = Literal["referral", "direct"]
StepStatus = Literal[
    "planned", "waiting", "referred", "in_progress", "unassigned", "completed", "cancelled"
]
ClosureReason = Literal[
    "support_ended",
    "no_longer_eligible",
    "beneficiary_withdrew",
    "left_area",
    "deceased",
    "other",
]
Tag = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,64}$", examples=["single_parent"])]
AreaCode = Annotated[str, Field(min_length=1, max_length=32, examples=["ML-BKO-03"])]
ServiceTypeCode = Annotated[
    str, Field(min_length=1, max_length=64, examples=["economic.vocational_training"])
]
CaseStatus = TypeAliasType("CaseStatus", Literal["open", "closed"])
DuplicateStatus = TypeAliasType("DuplicateStatus", Literal["open", "dismissed", "merged", "linked"])
StepKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,40}$", examples=["1"])]


def _check_phone(value: str | None) -> str | None:
    import re

    if value is None:
        return value
    compact = re.sub(r"[\s().-]", "", value)
    if not re.fullmatch(E164, compact):
        raise ValueError(
            "phone must be in E.164 form: + then country code and number, e.g. +22370123456"
        )
    return compact


# --- Service directory ---------------------------------------------------------------


class Eligibility(StrictModel):
    sexes: list[Sex] | None = Field(
        default=None, description="Admitted sexes; null or absent: all.", examples=[["female"]]
    )
    min_age: int | None = Field(default=None, ge=0, le=120, examples=[18])
    max_age: int | None = Field(default=None, ge=0, le=120, examples=[35])
    vulnerabilities_any: list[Tag] | None = Field(
        default=None,
        description="If set, the beneficiary must have at least one of these vulnerabilities.",
        examples=[["psychosocial_distress"]],
    )

    @model_validator(mode="after")
    def _ages(self) -> Eligibility:
        if self.min_age is not None and self.max_age is not None and self.min_age > self.max_age:
            raise ValueError("min_age is above max_age")
        return self


class ServiceCreate(StrictModel):
    partner_id: UUID | None = Field(
        default=None, description="Admins say whose service it is; a partner key omits it."
    )
    service_type: ServiceTypeCode
    name: str = Field(min_length=1, max_length=200, examples=["Formation professionnelle, Kayes"])
    areas: list[AreaCode] = Field(
        min_length=1,
        max_length=200,
        description="Area codes covered; a region covers every cercle and commune below it.",
        examples=[["ML-1"]],
    )
    eligibility: Eligibility = Field(default_factory=Eligibility)
    capacity: int | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description="Active referrals it can take; null: no limit.",
    )
    response_hours: int = Field(default=72, ge=1, le=24 * 60, description="How fast it answers.")
    priority: int | None = Field(
        default=None, ge=0, le=10_000, description="Admins only; lower is preferred. Default 100."
    )
    status: Literal["active", "inactive"] = "active"


class ServiceUpdate(StrictModel):
    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={"examples": [{"capacity": 25, "areas": ["ML-1", "ML-2"]}]},
    )

    service_type: ServiceTypeCode | None = None
    name: str | None = Field(default=None, min_length=1, max_length=200)
    areas: list[AreaCode] | None = Field(default=None, min_length=1, max_length=200)
    eligibility: Eligibility | None = None
    capacity: int | None = Field(default=None, ge=0, le=1_000_000)
    response_hours: int | None = Field(default=None, ge=1, le=24 * 60)
    priority: int | None = Field(default=None, ge=0, le=10_000, description="Admins only.")
    status: Literal["active", "inactive"] | None = None
    version: int | None = None


class ServiceRead(BaseModel):
    id: UUID
    partner_id: UUID
    service_type: str
    name: str
    areas: list[str]
    eligibility: Eligibility
    capacity: int | None
    response_hours: int
    priority: int
    status: Literal["active", "inactive"]
    version: int
    created_at: datetime
    updated_at: datetime


# --- Cases -----------------------------------------------------------------------------


class IdDocument(StrictModel):
    type: Literal[
        "passport", "national_id", "consular_card", "birth_certificate", "laissez_passer", "other"
    ] = Field(examples=["passport"])
    number: str = Field(min_length=1, max_length=40, examples=["AA1234567"])


class Beneficiary(StrictModel):
    given_name: str = Field(min_length=1, max_length=100, examples=["Aminata"])
    family_name: str = Field(min_length=1, max_length=100, examples=["Traoré"])
    sex: Sex = Field(examples=["female"])
    date_of_birth: date | None = Field(default=None, examples=["1996-04-12"])
    birth_year: int | None = Field(
        default=None, ge=1900, le=2100, description="When the exact date is not known."
    )
    nationality: str | None = Field(
        default=None, pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2.", examples=["ML"]
    )
    phone: str | None = Field(default=None, max_length=32, examples=["+22370123456"])
    languages: list[Annotated[str, Field(pattern=r"^[a-z]{2,3}$")]] = Field(
        default_factory=list, max_length=10, examples=[["bm", "fr"]]
    )
    id_documents: list[IdDocument] = Field(default_factory=list, max_length=10)
    household_size: int | None = Field(default=None, ge=1, le=100, examples=[4])

    _phone = field_validator("phone")(lambda cls, v: _check_phone(v))

    @field_validator("date_of_birth")
    @classmethod
    def _born_in_the_past(cls, value: date | None) -> date | None:
        if value is not None:
            if value > datetime.now(UTC).date():
                raise ValueError("date_of_birth is in the future")
            if value.year < 1900:
                raise ValueError("date_of_birth is before 1900")
        return value

    @field_validator("birth_year")
    @classmethod
    def _year_in_the_past(cls, value: int | None) -> int | None:
        if value is not None and value > datetime.now(UTC).year:
            raise ValueError("birth_year is in the future")
        return value

    @model_validator(mode="after")
    def _birth(self) -> Beneficiary:
        if (
            self.date_of_birth is not None
            and self.birth_year is not None
            and self.birth_year != self.date_of_birth.year
        ):
            raise ValueError("birth_year differs from the year of date_of_birth")
        return self


class BeneficiaryRead(BaseModel):
    """The beneficiary as the case shows it. Once the case is erased (`erased_at`), only
    `sex` and `birth_year` are left: the names are null and the other fields empty."""

    given_name: str | None = Field(examples=["Aminata"])
    family_name: str | None = Field(examples=["Traoré"])
    sex: Sex = Field(examples=["female"])
    date_of_birth: date | None = Field(default=None, examples=["1996-04-12"])
    birth_year: int | None = None
    nationality: str | None = None
    phone: str | None = Field(default=None, examples=["+22370123456"])
    languages: list[str] = []
    id_documents: list[IdDocument] = []
    household_size: int | None = None


class BeneficiaryListView(BaseModel):
    """The beneficiary in lists: everything but the identity documents."""

    model_config = ConfigDict(extra="ignore")
    given_name: str | None
    family_name: str | None
    sex: Sex
    date_of_birth: date | None = None
    birth_year: int | None = None
    nationality: str | None = None
    phone: str | None = None
    languages: list[str] = []
    household_size: int | None = None


class ReturnInfo(StrictModel):
    date: dt.date | None = Field(default=None, examples=["2026-10-02"])
    country_from: str | None = Field(
        default=None, pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2.", examples=["LY"]
    )
    area_code: AreaCode = Field(description="Where the returnee settles (an area code).")

    @field_validator("date")
    @classmethod
    def _sane(cls, value: dt.date | None) -> dt.date | None:
        if value is None:
            return value
        today = datetime.now(UTC).date()
        if value.year < 1950 or (value - today).days > 366:
            raise ValueError("return date must be after 1950 and at most a year ahead")
        return value


ConsentStatus = Literal["not_recorded", "granted", "withdrawn"]
RecordedConsent = Literal["granted", "withdrawn"]


class Consent(StrictModel):
    referral: ConsentStatus = Field(
        description="Whether the beneficiary agrees to be referred to other partners: "
        "`not_recorded` until consent is recorded (nothing is routed), then `granted` or "
        "`withdrawn`.",
        examples=["granted"],
    )
    given_at: datetime | None = Field(default=None, examples=["2026-10-03T09:00:00Z"])
    method: Literal["verbal", "written", "digital", "other"] | None = Field(
        default=None, examples=["written"]
    )


class StepCreate(StrictModel):
    key: StepKey | None = Field(
        default=None, description="Unique in the plan; default: the step's position, `1`, `2`..."
    )
    service_type: ServiceTypeCode
    priority: Priority = Field(
        default="normal",
        description="Acceptance deadline: emergency 24 h, urgent 72 h, normal 336 h.",
    )
    delivery: Delivery = Field(
        default="referral", description="`referral` routes it; `direct`: the owner delivers it."
    )
    depends_on: list[str] | None = Field(
        default=None,
        max_length=20,
        description="Keys or ids of other steps. Default: the previous step (for a step added "
        "later, the last step); `[]` for none.",
    )
    notes: str = Field(default="", max_length=2000)


class StepRead(BaseModel):
    id: UUID
    key: str
    service_type: str
    priority: Priority
    delivery: Delivery
    depends_on: list[str]
    notes: str
    status: StepStatus
    status_reason: str | None


class CaseCreate(StrictModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, populate_by_name=True)

    owner_partner_id: UUID | None = Field(
        default=None, description="Admins only: whose case it is. A partner key owns its cases."
    )
    external_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Your own id of the case; unique per owner.",
        examples=["SAB-2026-0042"],
    )
    beneficiary: Beneficiary
    return_: ReturnInfo = Field(alias="return")
    vulnerabilities: list[Tag] = Field(default_factory=list, max_length=30)
    consent: Consent = Field(
        default_factory=lambda: Consent(referral="not_recorded"),
        description="Without `referral: granted`, nothing is routed. Default: `not_recorded`.",
    )
    plan: list[StepCreate] = Field(default_factory=list, max_length=50)


class CaseUpdate(StrictModel):
    """JSON merge patch of the case: `beneficiary` and `return` merge key by key."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, populate_by_name=True)

    # Absent means unchanged; none of them can be removed, so null is refused (422) and the
    # schema says so: a generated client leaves them unset rather than sending null.
    external_id: str = Field(default=None, min_length=1, max_length=100)  # type: ignore[assignment]
    beneficiary: dict = Field(default=None, examples=[{"phone": "+22376543210"}])  # type: ignore[assignment]
    return_: dict = Field(default=None, alias="return")  # type: ignore[assignment]
    vulnerabilities: list[Tag] = Field(default=None, max_length=30)  # type: ignore[assignment]
    version: int | None = None


class CaseRead(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: UUID
    reference: str = Field(examples=["ML-2026-000123"])
    external_id: str | None
    owner_partner_id: UUID
    status: CaseStatus
    closure_reason: str | None
    merged_into: UUID | None
    beneficiary: BeneficiaryRead
    return_: ReturnInfo = Field(alias="return")
    vulnerabilities: list[str]
    consent: Consent
    plan: list[StepRead]
    version: int
    created_at: datetime
    updated_at: datetime
    erased_at: datetime | None = Field(
        description="When the beneficiary's personal data was erased (final); null until then."
    )


class CaseListItem(CaseRead):
    beneficiary: BeneficiaryListView  # type: ignore[assignment]


class ConsentChange(Consent):
    referral: RecordedConsent = Field(  # type: ignore[assignment]
        description="`granted` routes the next interventions; `withdrawn` cancels every live "
        "referral of the case and stops routing. Consent once recorded cannot be un-recorded.",
        examples=["granted"],
    )
    version: int | None = None


class CloseCase(StrictModel):
    reason: ClosureReason
    note: str = Field(default="", max_length=2000)
    version: int | None = None


class EraseCase(StrictModel):
    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={"examples": [{"reason": "Request of the beneficiary, 2026-11-30"}]},
    )

    reason: str = Field(
        min_length=1,
        max_length=500,
        description="Why the case is erased (a request of the beneficiary, the retention "
        "period). Kept with the case and sent in `case.erased`: name no one in it.",
    )


class CaseErased(BaseModel):
    """The answer of an erasure and the data of `case.erased`."""

    case_id: UUID
    reference: str = Field(examples=["ML-2026-000123"])
    erased_at: datetime
    reason: str


class VersionOnly(StrictModel):
    model_config = ConfigDict(
        extra="forbid", str_strip_whitespace=True, json_schema_extra={"examples": [{"version": 4}]}
    )

    version: int | None = None


# --- Duplicates and access log -----------------------------------------------------


class DuplicateRead(BaseModel):
    id: UUID
    case_ids: list[UUID]
    case_references: list[str]
    owner_partner_ids: list[UUID]
    score: float
    reasons: list[str]
    status: DuplicateStatus
    kept_case_id: UUID | None
    created_at: datetime
    decided_at: datetime | None


class MergeRequest(StrictModel):
    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={"examples": [{"keep_case_id": "3f2b8c1e-4a5d-4e6f-8a9b-0c1d2e3f4a5b"}]},
    )

    keep_case_id: UUID


class AccessLogEntry(BaseModel):
    id: int
    at: datetime
    case_id: UUID
    partner_id: UUID | None
    key_id: UUID | None = Field(description="Null: an erasure by the retention worker.")
    view: Literal["full", "minimised", "list", "export", "erase"]
    route: str
