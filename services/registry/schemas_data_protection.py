"""Response models of subject access (`GET /cases/{id}/export`) and retention
(`GET /retention/preview`), SPEC 9."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field

from services.registry.schemas_cases import AccessLogEntry, CaseRead
from shared.pagination import Page
from shared.resources import Referral


class ExportedEvent(BaseModel):
    """An event about the case as the log holds it (the CloudEvent's fields, with its actor)."""

    id: UUID
    type: str = Field(examples=["case.created"])
    source: str = Field(examples=["/registry"])
    subject: str = Field(examples=["cases/0b6f3c52-1d7e-4c1a-9f0e-2b6a1d5e8c43"])
    time: datetime
    sequence: str = Field(description="The event's place in the log (the feed's cursor).")
    actor: str = Field(description="A partner id, `admin` or `system`.")
    data: dict[str, Any] = Field(description="The resource after the change, as sent.")


class ExportedDelivery(BaseModel):
    """An event about the case sent to a partner's endpoint (without the body it carried)."""

    id: UUID
    event_id: UUID
    event_type: str
    endpoint_id: UUID
    partner_id: UUID | None = Field(
        description="The partner that received it (null: an endpoint of the coordination)."
    )
    status: str = Field(examples=["succeeded"])
    attempt_count: int
    created_at: datetime


class SubjectAccessExport(BaseModel):
    """All the hub holds about the person of a case (SPEC 9), in one document."""

    exported_at: datetime
    case: CaseRead = Field(description="The case as its owner reads it, plan included.")
    closed_at: datetime | None = Field(
        description="When the case was last closed (retention counts from it); null while open."
    )
    referrals: list[Referral] = Field(
        description="The case's referrals, each as its latest `referral.*` event carries it, "
        "with its `history` (every status, when, by whom) and the case as it was then sent."
    )
    events: list[ExportedEvent] = Field(description="Every event about the case, oldest first.")
    deliveries: list[ExportedDelivery] = Field(
        description="Which partners received those events, by webhook: the deliveries, "
        "oldest first, without their bodies."
    )
    access_log: list[AccessLogEntry] = Field(
        description="Every read of the case by a key, this export included, oldest first."
    )


class RetentionCandidate(BaseModel):
    """A case the next retention run would erase: no personal data."""

    id: UUID
    reference: str = Field(examples=["ML-2026-000123"])
    owner_partner_id: UUID
    closed_at: datetime


class RetentionPreview(Page[RetentionCandidate]):
    """What the next retention run would erase, oldest closure first."""

    retention: bool = Field(
        description="Whether retention is on (`RELAIS_RETENTION_DAYS` set); when off, "
        "`items` is empty and nothing is ever erased by it."
    )
    retention_days: int | None = Field(
        description="`RELAIS_RETENTION_DAYS`: cases closed for longer are erased."
    )
    closed_before: datetime | None = Field(
        description="The cases closed before this time (now minus the retention period) are listed."
    )
