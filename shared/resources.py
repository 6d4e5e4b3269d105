"""The named shapes the registry and the referrals service both serve: the minimised case
(built by `shared.minimised.minimise_case`) and the bare case reference shown in its place."""

from __future__ import annotations

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)


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
