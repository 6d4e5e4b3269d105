"""Request and response models of the notifications service."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

EventPattern = Annotated[
    str,
    Field(
        pattern=r"^[a-z_*][a-z_.*]{0,99}$",
        description="An event type, with `*` wildcards: `referral.*`, `*`.",
        examples=["referral.*"],
    ),
]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class EndpointCreate(StrictModel):
    url: str = Field(
        min_length=8,
        max_length=2000,
        examples=["https://cases.ong-sabou.example.org/relais/webhooks"],
    )
    event_types: list[EventPattern] = Field(
        default_factory=lambda: ["*"], min_length=1, max_length=50
    )
    description: str = Field(default="", max_length=500, examples=["Case-management system"])
    partner_id: UUID | None = Field(
        default=None,
        description="Admins only: whose endpoint it is. An admin's endpoint without a partner "
        "receives every event.",
    )


class EndpointUpdate(StrictModel):
    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={"examples": [{"event_types": ["referral.*", "case.pathway_completed"]}]},
    )

    url: str | None = Field(default=None, min_length=8, max_length=2000)
    event_types: list[EventPattern] | None = Field(default=None, min_length=1, max_length=50)
    description: str | None = Field(default=None, max_length=500)
    version: int | None = None


class EndpointRead(BaseModel):
    id: UUID
    partner_id: UUID | None
    url: str
    event_types: list[str]
    description: str
    status: Literal["active", "disabled"]
    disabled_reason: str | None
    version: int
    created_at: datetime
    updated_at: datetime


class EndpointWithSecret(EndpointRead):
    secret: str = Field(
        description="`whsec_...`: verify signatures with it. Shown only in this response."
    )


class TestSent(BaseModel):
    event_id: UUID


class RecoverRequest(StrictModel):
    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={
            "examples": [{"since": "2026-11-20T00:00:00Z", "until": "2026-11-25T00:00:00Z"}]
        },
    )

    since: datetime = Field(description="Re-send what failed for events from this time...")
    until: datetime | None = Field(default=None, description="...up to this time (default: now).")


class Recovered(BaseModel):
    recovered: int


class AttemptRead(BaseModel):
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None
    response_excerpt: str | None = Field(description="The first 2 KB of the receiver's answer.")


class DeliveryRead(BaseModel):
    id: UUID
    event_id: UUID = Field(description="The `webhook-id`: the same on every retry.")
    event_type: str
    endpoint_id: UUID
    status: Literal["pending", "succeeded", "failed"]
    attempt_count: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


class DeliveryDetail(DeliveryRead):
    attempts: list[AttemptRead]


class FeedPage(BaseModel):
    items: list[dict[str, Any]] = Field(
        description="CloudEvents exactly as webhooks carry them, oldest first."
    )
    next_cursor: str = Field(
        description="Pass as `after` to get what follows; never null, so poll with the last one."
    )
