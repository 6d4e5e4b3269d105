"""referrals

Revision ID: 0003_referrals
Revises: 0002_registry_cases
Create Date: 2026-11-29 00:16:27.258735+00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003_referrals"
down_revision = "0002_registry_cases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("reference", sa.String(length=32), nullable=False),
        sa.Column("owner_partner_id", sa.UUID(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("closure_reason", sa.String(length=32), nullable=True),
        sa.Column("consent_granted", sa.Boolean(), nullable=False),
        sa.Column("beneficiary", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("return_area_code", sa.String(length=32), nullable=False),
        sa.Column("vulnerabilities", postgresql.ARRAY(sa.String(length=64)), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("pathway_completed", sa.Boolean(), server_default="false", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cases")),
        schema="referrals",
    )
    op.create_table(
        "partners",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("acronym", sa.String(length=40), server_default="", nullable=False),
        sa.Column("contact_email", sa.String(length=254), nullable=True),
        sa.Column("contact_phone", sa.String(length=20), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_partners")),
        schema="referrals",
    )
    op.create_table(
        "referrals",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("case_id", sa.UUID(), nullable=False),
        sa.Column("case_reference", sa.String(length=32), nullable=False),
        sa.Column("step_id", sa.UUID(), nullable=False),
        sa.Column("service_type", sa.String(length=64), nullable=False),
        sa.Column("priority", sa.String(length=10), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("status_reason", sa.String(length=40), nullable=True),
        sa.Column("assignee_partner_id", sa.UUID(), nullable=True),
        sa.Column("service_id", sa.UUID(), nullable=True),
        sa.Column("owner_partner_id", sa.UUID(), nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("decision", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('requested', 'accepted', 'in_progress', 'unassigned', 'rejected', 'expired', 'completed', 'failed', 'cancelled')",
            name=op.f("ck_referrals_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referrals")),
        schema="referrals",
    )
    op.create_index(
        "ix_referrals_assignee_partner_id_updated_at_id",
        "referrals",
        ["assignee_partner_id", "updated_at", "id"],
        unique=False,
        schema="referrals",
    )
    op.create_index(
        "ix_referrals_case_id", "referrals", ["case_id"], unique=False, schema="referrals"
    )
    op.create_index(
        "ix_referrals_owner_partner_id_updated_at_id",
        "referrals",
        ["owner_partner_id", "updated_at", "id"],
        unique=False,
        schema="referrals",
    )
    op.create_index(
        "ix_referrals_requested_deadline_at",
        "referrals",
        ["deadline_at"],
        unique=False,
        schema="referrals",
        postgresql_where=sa.text("status = 'requested'"),
    )
    op.create_index(
        "ix_referrals_service_id_active",
        "referrals",
        ["service_id"],
        unique=False,
        schema="referrals",
        postgresql_where=sa.text("status IN ('requested', 'accepted', 'in_progress')"),
    )
    op.create_index(
        "ix_referrals_step_id", "referrals", ["step_id"], unique=False, schema="referrals"
    )
    op.create_index(
        "ix_referrals_updated_at_id",
        "referrals",
        ["updated_at", "id"],
        unique=False,
        schema="referrals",
    )
    op.create_index(
        "uq_referrals_live_step",
        "referrals",
        ["step_id"],
        unique=True,
        schema="referrals",
        postgresql_where=sa.text(
            "status IN ('requested', 'accepted', 'in_progress', 'unassigned')"
        ),
    )
    op.create_table(
        "services",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("partner_id", sa.UUID(), nullable=False),
        sa.Column("service_type", sa.String(length=64), nullable=False),
        sa.Column("areas", postgresql.ARRAY(sa.String(length=32)), nullable=False),
        sa.Column("eligibility", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=True),
        sa.Column("response_hours", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_services")),
        schema="referrals",
    )
    op.create_index(
        "ix_services_service_type", "services", ["service_type"], unique=False, schema="referrals"
    )
    op.create_table(
        "referral_history",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("referral_id", sa.UUID(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("note", sa.Text(), server_default="", nullable=False),
        sa.ForeignKeyConstraint(
            ["referral_id"],
            ["referrals.referrals.id"],
            name=op.f("fk_referral_history_referral_id_referrals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referral_history")),
        schema="referrals",
    )
    op.create_index(
        "ix_referral_history_referral_id_id",
        "referral_history",
        ["referral_id", "id"],
        unique=False,
        schema="referrals",
    )
    op.create_table(
        "steps",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("case_id", sa.UUID(), nullable=False),
        sa.Column("key", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("service_type", sa.String(length=64), nullable=False),
        sa.Column("priority", sa.String(length=10), nullable=False),
        sa.Column("delivery", sa.String(length=10), nullable=False),
        sa.Column("depends_on", postgresql.ARRAY(sa.String(length=40)), nullable=False),
        sa.Column("notes", sa.Text(), server_default="", nullable=False),
        sa.Column("resolution", sa.String(length=10), nullable=True),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["referrals.cases.id"],
            name=op.f("fk_steps_case_id_cases"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_steps")),
        schema="referrals",
    )
    op.create_index("ix_steps_case_id", "steps", ["case_id"], unique=False, schema="referrals")


def downgrade() -> None:
    op.drop_index("ix_steps_case_id", table_name="steps", schema="referrals")
    op.drop_table("steps", schema="referrals")
    op.drop_index(
        "ix_referral_history_referral_id_id", table_name="referral_history", schema="referrals"
    )
    op.drop_table("referral_history", schema="referrals")
    op.drop_index("ix_services_service_type", table_name="services", schema="referrals")
    op.drop_table("services", schema="referrals")
    op.drop_index(
        "uq_referrals_live_step",
        table_name="referrals",
        schema="referrals",
        postgresql_where=sa.text(
            "status IN ('requested', 'accepted', 'in_progress', 'unassigned')"
        ),
    )
    op.drop_index("ix_referrals_updated_at_id", table_name="referrals", schema="referrals")
    op.drop_index("ix_referrals_step_id", table_name="referrals", schema="referrals")
    op.drop_index(
        "ix_referrals_service_id_active",
        table_name="referrals",
        schema="referrals",
        postgresql_where=sa.text("status IN ('requested', 'accepted', 'in_progress')"),
    )
    op.drop_index(
        "ix_referrals_requested_deadline_at",
        table_name="referrals",
        schema="referrals",
        postgresql_where=sa.text("status = 'requested'"),
    )
    op.drop_index(
        "ix_referrals_owner_partner_id_updated_at_id", table_name="referrals", schema="referrals"
    )
    op.drop_index("ix_referrals_case_id", table_name="referrals", schema="referrals")
    op.drop_index(
        "ix_referrals_assignee_partner_id_updated_at_id", table_name="referrals", schema="referrals"
    )
    op.drop_table("referrals", schema="referrals")
    op.drop_table("partners", schema="referrals")
    op.drop_table("cases", schema="referrals")
