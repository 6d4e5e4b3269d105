"""Request and response models of the registry."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

PartnerKind = Literal["government", "ngo", "un_agency", "private", "community"]
PartnerStatus = Literal["active", "inactive"]

E164 = r"^\+[1-9][0-9]{6,14}$"

# PostgreSQL stores no NUL character in text or jsonb: refused here, as 422, not as a 500.
NO_NUL = r"^[^\x00]*$"


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple | set):
        return any(_holds_nul(v) for v in value)
    return False


class StrictModel(BaseModel):
    """Unknown fields are refused: a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        if _holds_nul(value):
            raise ValueError("must not contain the NUL character (\\u0000)")
        return value


class PartnerCreate(StrictModel):
    name: str = Field(
        min_length=1, max_length=200, examples=["Organisation Internationale pour les Migrations"]
    )
    acronym: str = Field(default="", max_length=40, examples=["OIM"])
    kind: PartnerKind = Field(examples=["un_agency"])
    contact_email: EmailStr | None = Field(default=None, examples=["reintegration@oim.example.org"])
    contact_phone: str | None = Field(
        default=None,
        pattern=E164,
        description="E.164, e.g. +22370000000",
        examples=["+22320221111"],
    )


class PartnerRead(BaseModel):
    id: UUID
    name: str
    acronym: str
    kind: PartnerKind
    contact_email: str | None
    contact_phone: str | None
    status: PartnerStatus
    version: int
    created_at: datetime
    updated_at: datetime


ExpiresAt = Annotated[
    datetime | None,
    Field(
        description="When the key stops working (it answers 401 from then on): an RFC 3339 "
        "time with its UTC offset, in the future. None: until revoked.",
        examples=["2027-06-30T00:00:00Z"],
    ),
]


class ApiKeyCreate(StrictModel):
    name: str = Field(default="", max_length=200, examples=["case-management system, production"])
    expires_at: ExpiresAt = None


class AdminKeyCreate(StrictModel):
    name: str = Field(
        min_length=1,
        max_length=200,
        description="Who or what holds the key. `bootstrap` is reserved to the admin key the "
        "hub starts with (RELAIS_BOOTSTRAP_ADMIN_KEY).",
        examples=["secretariat, 2027"],
    )
    expires_at: ExpiresAt = None


class ApiKeyRead(BaseModel):
    id: UUID
    partner_id: UUID | None = Field(description="None for an admin key.")
    role: Literal["admin", "partner"]
    name: str
    prefix: str = Field(description="The first characters of the key, to tell keys apart.")
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None = Field(description="Updated at most once a minute.")
    expires_at: datetime | None = Field(
        description="When the key stops working; None: until revoked."
    )


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The key itself. Shown only in this response: store it now.")


class PartnerUpdate(StrictModel):
    """A partner may change its own name and contacts; only admins change `kind` or `status`."""

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={"examples": [{"contact_phone": "+22320221111", "version": 3}]},
    )

    name: str | None = Field(default=None, min_length=1, max_length=200)
    acronym: str | None = Field(default=None, max_length=40)
    kind: PartnerKind | None = None
    contact_email: EmailStr | None = None
    contact_phone: str | None = Field(default=None, pattern=E164)
    status: PartnerStatus | None = Field(
        default=None,
        description="Admins only. `inactive`: the partner's keys answer 401 at once, its "
        "endpoints pause and its referrals still `requested` are routed again.",
    )
    version: int | None = Field(default=None, description="The version you read (or If-Match).")
