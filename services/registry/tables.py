"""Tables of schema `registry`: partners, services, cases and what hangs off them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Sequence,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from shared.db import schema_metadata

metadata = schema_metadata("registry")

PARTNER_KINDS = ("government", "ngo", "un_agency", "private", "community")

partners = Table(
    "partners",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("acronym", String(40), nullable=False, server_default=""),
    Column("kind", String(20), nullable=False),
    Column("contact_email", String(254)),
    Column("contact_phone", String(20)),
    Column("status", String(10), nullable=False, server_default="active"),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(f"kind IN {PARTNER_KINDS!r}", name="kind"),
    CheckConstraint("status IN ('active', 'inactive')", name="status"),
    Index("ix_partners_name_id", "name", "id"),
)

services = Table(
    "services",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("partner_id", UUID(as_uuid=True), ForeignKey("registry.partners.id"), nullable=False),
    Column("service_type", String(64), nullable=False),  # a hub.service_types code
    Column("name", String(200), nullable=False),
    Column("areas", ARRAY(String(32)), nullable=False),
    Column("eligibility", JSONB, nullable=False, server_default="{}"),
    Column("capacity", Integer),
    Column("response_hours", Integer, nullable=False, server_default="72"),
    Column("priority", Integer, nullable=False, server_default="100"),
    Column("status", String(10), nullable=False, server_default="active"),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("status IN ('active', 'inactive')", name="status"),
    Index("ix_services_partner_id", "partner_id"),
    Index("ix_services_service_type", "service_type"),
    Index("ix_services_areas", "areas", postgresql_using="gin"),
)

case_reference_seq = Sequence("case_reference_seq", metadata=metadata, start=1)

cases = Table(
    "cases",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("reference", String(32), nullable=False, unique=True),
    Column(
        "owner_partner_id", UUID(as_uuid=True), ForeignKey("registry.partners.id"), nullable=False
    ),
    Column("external_id", String(100)),
    Column("beneficiary", JSONB, nullable=False),
    Column("return_info", JSONB, nullable=False),
    Column("return_area_code", String(32), nullable=False),
    Column("vulnerabilities", ARRAY(String(64)), nullable=False, server_default="{}"),
    Column("consent", JSONB, nullable=False),
    Column("status", String(10), nullable=False, server_default="open"),
    Column("closure_reason", String(32)),
    Column("merged_into", UUID(as_uuid=True)),
    Column("closed_at", DateTime(timezone=True)),  # when last closed; retention counts from it
    Column("erased_at", DateTime(timezone=True)),  # erasure is final (SPEC 9)
    Column("erasure_reason", String(500)),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("status IN ('open', 'closed')", name="status"),
    UniqueConstraint("owner_partner_id", "external_id"),
    Index("ix_cases_owner_partner_id_updated_at_id", "owner_partner_id", "updated_at", "id"),
    Index("ix_cases_updated_at_id", "updated_at", "id"),
    Index("ix_cases_return_area_code", "return_area_code"),
    Index(
        "ix_cases_closed_at",
        "closed_at",
        postgresql_where=text("status = 'closed' AND erased_at IS NULL"),
    ),
)

plan_steps = Table(
    "plan_steps",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column(
        "case_id",
        UUID(as_uuid=True),
        ForeignKey("registry.cases.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("key", String(40), nullable=False),
    Column("position", Integer, nullable=False),
    Column("service_type", String(64), nullable=False),  # a hub.service_types code
    Column("priority", String(10), nullable=False),
    Column("delivery", String(10), nullable=False),
    Column("depends_on", ARRAY(String(40)), nullable=False, server_default="{}"),
    Column("notes", Text, nullable=False, server_default=""),
    # What the owner said: null, in_progress, completed or cancelled.
    Column("owner_status", String(12)),
    # The latest referral as the referral events tell it (highest attempt, then version).
    Column("referral_id", UUID(as_uuid=True)),
    Column("referral_attempt", Integer),
    Column("referral_version", Integer),
    Column("referral_status", String(12)),
    Column("referral_assignee_id", UUID(as_uuid=True)),
    Column("referral_service_id", UUID(as_uuid=True)),
    Column("status", String(12), nullable=False),
    Column("status_reason", String(40)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("case_id", "key"),
    Index("ix_plan_steps_referral_assignee_id", "referral_assignee_id"),
)

duplicate_keys = Table(
    "duplicate_keys",
    metadata,
    Column(
        "case_id",
        UUID(as_uuid=True),
        ForeignKey("registry.cases.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("key", String(120), primary_key=True),
    Index("ix_duplicate_keys_key", "key"),
)

duplicates = Table(
    "duplicates",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("case_a_id", UUID(as_uuid=True), ForeignKey("registry.cases.id"), nullable=False),
    Column("case_b_id", UUID(as_uuid=True), ForeignKey("registry.cases.id"), nullable=False),
    Column("score", Float, nullable=False),
    Column("reasons", ARRAY(String(40)), nullable=False),
    Column("status", String(10), nullable=False, server_default="open"),
    Column("kept_case_id", UUID(as_uuid=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("decided_at", DateTime(timezone=True)),
    CheckConstraint("status IN ('open', 'dismissed', 'merged', 'linked')", name="status"),
    CheckConstraint("case_a_id < case_b_id", name="ordered"),
    UniqueConstraint("case_a_id", "case_b_id"),
    Index("ix_duplicates_status_created_at_id", "status", "created_at", "id"),
)

access_log = Table(
    "access_log",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("case_id", UUID(as_uuid=True), nullable=False),
    Column("partner_id", UUID(as_uuid=True)),  # null: an admin key
    Column("key_id", UUID(as_uuid=True)),  # null: the retention worker
    Column("view", String(10), nullable=False),
    Column("route", String(100), nullable=False),
    CheckConstraint("view IN ('full', 'minimised', 'list', 'export', 'erase')", name="view"),
    Index("ix_access_log_case_id_id", "case_id", "id"),
    Index("ix_access_log_partner_id_id", "partner_id", "id"),
)
