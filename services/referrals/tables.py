"""Tables of schema `referrals`: referrals and their history, and the projections of the
directory and of cases that routing needs, built only from events."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
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
    # When the reconciler last found every step resolved (its last `case.pathway_completed`).
    Column("pathway_completed_at", DateTime(timezone=True)),
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

# --- The indicators' rollup (SPEC 12) --------------------------------------------------------
# `referral_facts`: one row per referral with what `GET /indicators` and `GET /gaps` count.
# `indicator_days`, `indicator_firsts`, `indicator_deadlines` and `indicator_durations`: those
# rows added up per day of creation, case return area and service type, so that a year of
# figures reads a few thousand rows instead of every referral. Only the reconciler writes
# them (store.indicators), in the batch that sees a case's events;
# `python -m services.referrals.rebuild` writes them all again. An area unknown to the rollup
# (a case never projected) is '' in the day rows.

_NO_DAY = text("'-infinity'::date")

referral_facts = Table(
    "referral_facts",
    metadata,
    Column("referral_id", UUID(as_uuid=True), primary_key=True),
    Column("case_id", UUID(as_uuid=True), nullable=False),
    Column("step_id", UUID(as_uuid=True), nullable=False),
    # The case's return area as the case is now (null if the case was never projected).
    Column("area_code", String(32)),
    Column("service_type", String(64), nullable=False),
    Column("dimension", String(32)),
    Column("assignee_partner_id", UUID(as_uuid=True)),
    Column("owner_partner_id", UUID(as_uuid=True), nullable=False),
    Column("status", String(12), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("deadline_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # From its history: when it entered `requested` (created so, or assigned), was accepted
    # and completed; and when its case's pathway last completed.
    Column("requested_at", DateTime(timezone=True)),
    Column("accepted_at", DateTime(timezone=True)),
    Column("completed_at", DateTime(timezone=True)),
    Column("pathway_completed_at", DateTime(timezone=True)),
    # Derived: its day of creation (UTC); the day of the case's previous referral (of any
    # type, of its type, of its dimension) and, from the second attempt on, of its step's
    # previous re-routed referral ('-infinity' when none); the day its case's pathway last
    # completed ('infinity' when never); its durations in whole minutes.
    Column("day", Date, nullable=False),
    Column("case_prev_day", Date, nullable=False, server_default=_NO_DAY),
    Column("case_type_prev_day", Date, nullable=False, server_default=_NO_DAY),
    Column("case_dimension_prev_day", Date, nullable=False, server_default=_NO_DAY),
    Column("step_prev_day", Date, nullable=False, server_default=_NO_DAY),
    Column("completed_day", Date, nullable=False, server_default=text("'infinity'::date")),
    Column("acceptance_minutes", Integer),
    Column("completion_minutes", Integer),
    Index("ix_referral_facts_day", "day"),
    Index("ix_referral_facts_case_id", "case_id"),
    Index("ix_referral_facts_owner_partner_id_day", "owner_partner_id", "day"),
    Index("ix_referral_facts_assignee_partner_id_day", "assignee_partner_id", "day"),
    Index(
        "ix_referral_facts_requested_deadline_at",
        "deadline_at",
        postgresql_where=text("status = 'requested'"),
    ),
    Index(
        "ix_referral_facts_unassigned_day",
        "day",
        postgresql_where=text("status = 'unassigned'"),
    ),
)


def _day_key() -> list[Column]:
    return [
        Column("day", Date, primary_key=True),
        Column("area_code", String(32), primary_key=True),
        Column("service_type", String(64), primary_key=True),
    ]


indicator_days = Table(
    "indicator_days",
    metadata,
    *_day_key(),
    Column("referrals", BigInteger, nullable=False),
    Column("accepted", BigInteger, nullable=False),  # ever accepted
    # By status now: one column per status, in lifecycle order.
    *(Column(f"status_{status}", BigInteger, nullable=False) for status in REFERRAL_STATUSES),
)

# Distinct cases and steps, added up: the referrals of a day, area and type by `kind` (the
# case's referrals, of its type, of its dimension; a step's re-routed referrals), the day of
# the previous one of the same kind and the day the case's pathway last completed. A
# referral is the first of its kind within a period when its previous one is before it.
indicator_firsts = Table(
    "indicator_firsts",
    metadata,
    *_day_key(),
    Column("kind", String(16), primary_key=True),
    Column("prev_day", Date, primary_key=True),
    Column("completed_day", Date, primary_key=True),
    Column("n", BigInteger, nullable=False),
    CheckConstraint("kind IN ('case', 'case_type', 'case_dimension', 'step')", name="kind"),
)

# The referrals requested now, by the day of their deadline: those of the days before today
# are overdue (today's are counted on their rows).
indicator_deadlines = Table(
    "indicator_deadlines",
    metadata,
    *_day_key(),
    Column("deadline_day", Date, primary_key=True),
    Column("n", BigInteger, nullable=False),
)

# The durations, counted per whole minute: from request to acceptance, from acceptance to
# completion.
indicator_durations = Table(
    "indicator_durations",
    metadata,
    *_day_key(),
    Column("measure", String(16), primary_key=True),
    Column("minutes", Integer, primary_key=True),
    Column("n", BigInteger, nullable=False),
    CheckConstraint("measure IN ('acceptance', 'completion')", name="measure"),
)
