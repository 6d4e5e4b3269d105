"""Tables of schema `referrals`: referrals and their history, and the projections of the
directory and of cases that routing needs, built only from events."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from shared.db import schema_metadata
from shared.referral_statuses import (
    LOAD_COUNTED_STATUSES,
    OPEN_STATUSES,
    REFERRAL_STATUSES,
    in_lifecycle_order,
)

metadata = schema_metadata("referrals")


def status_in(statuses: Iterable[str], column: str = "status") -> str:
    """`status IN ('requested', ...)`: the SQL condition generated from a status set, its
    statuses in lifecycle order, so a constraint's or an index's text stays as migrated."""
    quoted = ", ".join(f"'{s}'" for s in in_lifecycle_order(statuses))
    return f"{column} IN ({quoted})"


# --- Projections (from partner.*, service.* and case.* events) ---------------------------

partners = Table(
    "partners",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("acronym", String(40), nullable=False, server_default=""),
    Column("contact_email", String(254)),
    Column("contact_phone", String(20)),
    Column("status", String(10), nullable=False),
    Column("version", Integer, nullable=False),
)

services = Table(
    "services",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("partner_id", UUID(as_uuid=True), nullable=False),
    Column("service_type", String(64), nullable=False),
    Column("areas", ARRAY(String(32)), nullable=False),
    Column("eligibility", JSONB, nullable=False),
    Column("capacity", Integer),
    Column("response_hours", Integer, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("status", String(10), nullable=False),
    Column("version", Integer, nullable=False),
    Index("ix_services_service_type", "service_type"),
)

cases = Table(
    "cases",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("reference", String(32), nullable=False),
    Column("owner_partner_id", UUID(as_uuid=True), nullable=False),
    Column("status", String(10), nullable=False),
    Column("closure_reason", String(32)),
    Column("consent_granted", Boolean, nullable=False),
    # Only what routing and the minimised case need: never the identity documents.
    Column("beneficiary", JSONB, nullable=False),
    Column("return_area_code", String(32), nullable=False),
    Column("vulnerabilities", ARRAY(String(64)), nullable=False),
    Column("version", Integer, nullable=False),
    Column("pathway_completed", Boolean, nullable=False, server_default="false"),
)

steps = Table(
    "steps",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column(
        "case_id",
        UUID(as_uuid=True),
        ForeignKey("referrals.cases.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("key", String(40), nullable=False),
    Column("position", Integer, nullable=False),
    Column("service_type", String(64), nullable=False),
    Column("priority", String(10), nullable=False),
    Column("delivery", String(10), nullable=False),
    Column("depends_on", ARRAY(String(40)), nullable=False),
    Column("notes", Text, nullable=False, server_default=""),
    # completed or cancelled: by the owner (case events) or by its referral; never undone.
    Column("resolution", String(10)),
    Index("ix_steps_case_id", "case_id"),
)

# --- Referrals ---------------------------------------------------------------------------

referrals = Table(
    "referrals",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("case_id", UUID(as_uuid=True), nullable=False),
    Column("case_reference", String(32), nullable=False),
    Column("step_id", UUID(as_uuid=True), nullable=False),
    Column("service_type", String(64), nullable=False),
    Column("priority", String(10), nullable=False),
    Column("status", String(12), nullable=False),
    Column("status_reason", String(500)),
    Column("assignee_partner_id", UUID(as_uuid=True)),
    Column("service_id", UUID(as_uuid=True)),
    Column("owner_partner_id", UUID(as_uuid=True), nullable=False),
    Column("deadline_at", DateTime(timezone=True)),
    Column("attempt", Integer, nullable=False),
    Column("decision", JSONB, nullable=False),
    Column("outcome", Text),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(status_in(REFERRAL_STATUSES), name="status"),
    # At most one open referral per step, whatever runs at once.
    Index(
        "uq_referrals_live_step",
        "step_id",
        unique=True,
        postgresql_where=text(status_in(OPEN_STATUSES)),
    ),
    Index("ix_referrals_step_id", "step_id"),
    Index("ix_referrals_case_id", "case_id"),
    Index(
        "ix_referrals_assignee_partner_id_updated_at_id", "assignee_partner_id", "updated_at", "id"
    ),
    Index("ix_referrals_owner_partner_id_updated_at_id", "owner_partner_id", "updated_at", "id"),
    Index("ix_referrals_updated_at_id", "updated_at", "id"),
    Index(
        "ix_referrals_requested_deadline_at",
        "deadline_at",
        postgresql_where=text("status = 'requested'"),
    ),
    Index(
        "ix_referrals_service_id_active",
        "service_id",
        postgresql_where=text(status_in(LOAD_COUNTED_STATUSES)),
    ),
)

referral_history = Table(
    "referral_history",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column(
        "referral_id",
        UUID(as_uuid=True),
        ForeignKey("referrals.referrals.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("status", String(12), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("actor", String(64), nullable=False),
    Column("note", Text, nullable=False, server_default=""),
    Index("ix_referral_history_referral_id_id", "referral_id", "id"),
)

# --- Service loads -------------------------------------------------------------------------
# A service's load (its referrals in LOAD_COUNTED_STATUSES) is `service_loads.load`
# plus the `delta`s of its `service_load_changes`. A trigger on `referrals` inserts the
# changes; the reconciler folds them into `service_loads`, which only it writes (migration 0006).

service_loads = Table(
    "service_loads",
    metadata,
    Column("service_id", UUID(as_uuid=True), primary_key=True),
    Column("load", BigInteger, nullable=False),
)

service_load_changes = Table(
    "service_load_changes",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("service_id", UUID(as_uuid=True), nullable=False),
    Column("delta", Integer, nullable=False),
    Index("ix_service_load_changes_service_id", "service_id"),
)
