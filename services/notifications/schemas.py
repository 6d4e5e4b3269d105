"""Request and response models of the notifications service."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypeAliasType

from shared.events_catalog import EVENT_TYPES, PATTERN

EventPattern = Annotated[
    str,
    Field(
        pattern=PATTERN,
        description="An event type, with `*` wildcards: `referral.*`, `*`. It must match at "
        "least one known type: " + ", ".join(f"`{t}`" for t in EVENT_TYPES) + ".",
        examples=["referral.*"],
    ),
]


DeliveryStatus = TypeAliasType("DeliveryStatus", Literal["pending", "succeeded", "failed"])
EndpointStatus = TypeAliasType("EndpointStatus", Literal["active", "disabled"])


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


URL_RULE = (
    "Where webhooks go. In production: an `https://` URL whose host resolves only to public "
    "addresses. Where the hub allows private targets (development, tests), `http://` and "
    "private addresses too. A refused URL answers 422 saying what this hub accepts."
)


class EndpointCreate(StrictModel):
    url: str = Field(
        min_length=8,
        max_length=2000,
        description=URL_RULE,
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

    url: str | None = Field(default=None, min_length=8, max_length=2000, description=URL_RULE)
    event_types: list[EventPattern] | None = Field(default=None, min_length=1, max_length=50)
    description: str | None = Field(default=None, max_length=500)
    version: int | None = None


class EndpointRead(BaseModel):
    id: UUID
    partner_id: UUID | None
    url: str
    event_types: list[str]
    description: str
    status: EndpointStatus
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


class EndpointTestMessage(BaseModel):
    """The `data` of an `endpoint.test` event."""

    endpoint_id: UUID
    message: str = Field(examples=["A test event from Relais."])


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
    partner_id: UUID | None = Field(
        description="The endpoint's partner: who received the event (null: an endpoint of the "
        "coordination)."
    )
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


class DeliveryDetail(DeliveryRead):
    attempts: list[AttemptRead]


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 event, exactly as a webhook or the feed carries it (SPEC 8)."""

    specversion: Literal["1.0"]
    id: str = Field(
        json_schema_extra={"format": "uuid"},
        description="The event's id: the `webhook-id`, the same on every retry.",
    )
    source: str = Field(examples=["/referrals"])
    type: str = Field(examples=["referral.created"], description="A type of the catalog.")
    subject: str = Field(examples=["referrals/0b6f3c52-1d7e-4c1a-9f0e-2b6a1d5e8c43"])
    time: str = Field(json_schema_extra={"format": "date-time"})
    datacontenttype: Literal["application/json"]
    sequence: str = Field(
        description="Sorts in the log's order; the feed's cursor (`after`).",
        examples=["0" * 19 + "1" + "0" * 19 + "1"],
    )
    data: dict[str, Any] = Field(
        description="The resource after the change, with its `version`: see the webhooks "
        "section for each type's schema."
    )


class FeedPage(BaseModel):
    items: list[CloudEvent] = Field(
        description="CloudEvents exactly as webhooks carry them, oldest first."
    )
    next_cursor: str = Field(
        description="Pass as `after` to get what follows; never null, so poll with the last one."
    )
