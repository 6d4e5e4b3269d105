"""registry directory cases plans duplicates access log

Revision ID: 0002_registry_cases
Revises: 0001_foundation
Create Date: 2026-11-29 00:09:04.159889+00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002_registry_cases"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE SEQUENCE IF NOT EXISTS registry.case_reference_seq")
    op.create_table(
        "access_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("case_id", sa.UUID(), nullable=False),
        sa.Column("partner_id", sa.UUID(), nullable=True),
        sa.Column("key_id", sa.UUID(), nullable=False),
        sa.Column("view", sa.String(length=10), nullable=False),
        sa.Column("route", sa.String(length=100), nullable=False),
        sa.CheckConstraint(
            "view IN ('full', 'minimised', 'list')", name=op.f("ck_access_log_view")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_log")),
        schema="registry",
    )
    op.create_index(
        "ix_access_log_case_id_id", "access_log", ["case_id", "id"], unique=False, schema="registry"
    )
    op.create_index(
        "ix_access_log_partner_id_id",
        "access_log",
        ["partner_id", "id"],
        unique=False,
        schema="registry",
    )
    op.create_table(
        "cases",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("reference", sa.String(length=32), nullable=False),
        sa.Column("owner_partner_id", sa.UUID(), nullable=False),
        sa.Column("external_id", sa.String(length=100), nullable=True),
        sa.Column("beneficiary", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("return_info", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("return_area_code", sa.String(length=32), nullable=False),
        sa.Column(
            "vulnerabilities",
            postgresql.ARRAY(sa.String(length=64)),
            server_default="{}",
            nullable=False,
        ),
        sa.Column("consent", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=10), server_default="open", nullable=False),
        sa.Column("closure_reason", sa.String(length=32), nullable=True),
        sa.Column("merged_into", sa.UUID(), nullable=True),
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
        sa.CheckConstraint("status IN ('open', 'closed')", name=op.f("ck_cases_status")),
        sa.ForeignKeyConstraint(
            ["owner_partner_id"],
            ["registry.partners.id"],
            name=op.f("fk_cases_owner_partner_id_partners"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cases")),
        sa.UniqueConstraint(
            "owner_partner_id", "external_id", name=op.f("uq_cases_owner_partner_id_external_id")
        ),
        sa.UniqueConstraint("reference", name=op.f("uq_cases_reference")),
        schema="registry",
    )
    op.create_index(
        "ix_cases_owner_partner_id_updated_at_id",
        "cases",
        ["owner_partner_id", "updated_at", "id"],
        unique=False,
        schema="registry",
    )
    op.create_index(
        "ix_cases_return_area_code", "cases", ["return_area_code"], unique=False, schema="registry"
    )
    op.create_index(
        "ix_cases_updated_at_id", "cases", ["updated_at", "id"], unique=False, schema="registry"
    )
    op.create_table(
        "services",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("partner_id", sa.UUID(), nullable=False),
        sa.Column("service_type", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("areas", postgresql.ARRAY(sa.String(length=32)), nullable=False),
        sa.Column(
            "eligibility",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        sa.Column("capacity", sa.Integer(), nullable=True),
        sa.Column("response_hours", sa.Integer(), server_default="72", nullable=False),
        sa.Column("priority", sa.Integer(), server_default="100", nullable=False),
        sa.Column("status", sa.String(length=10), server_default="active", nullable=False),
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
        sa.CheckConstraint("status IN ('active', 'inactive')", name=op.f("ck_services_status")),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["registry.partners.id"], name=op.f("fk_services_partner_id_partners")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_services")),
        schema="registry",
    )
    op.create_index(
        "ix_services_areas",
        "services",
        ["areas"],
        unique=False,
        schema="registry",
        postgresql_using="gin",
    )
    op.create_index(
        "ix_services_partner_id", "services", ["partner_id"], unique=False, schema="registry"
    )
    op.create_index(
        "ix_services_service_type", "services", ["service_type"], unique=False, schema="registry"
    )
    op.create_table(
        "duplicate_keys",
        sa.Column("case_id", sa.UUID(), nullable=False),
        sa.Column("key", sa.String(length=120), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["registry.cases.id"],
            name=op.f("fk_duplicate_keys_case_id_cases"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("case_id", "key", name=op.f("pk_duplicate_keys")),
        schema="registry",
    )
    op.create_index(
        "ix_duplicate_keys_key", "duplicate_keys", ["key"], unique=False, schema="registry"
    )
    op.create_table(
        "duplicates",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("case_a_id", sa.UUID(), nullable=False),
        sa.Column("case_b_id", sa.UUID(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("reasons", postgresql.ARRAY(sa.String(length=40)), nullable=False),
        sa.Column("status", sa.String(length=10), server_default="open", nullable=False),
        sa.Column("kept_case_id", sa.UUID(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('open', 'dismissed', 'merged', 'linked')", name=op.f("ck_duplicates_status")
        ),
        sa.CheckConstraint("case_a_id < case_b_id", name=op.f("ck_duplicates_ordered")),
        sa.ForeignKeyConstraint(
            ["case_a_id"], ["registry.cases.id"], name=op.f("fk_duplicates_case_a_id_cases")
        ),
        sa.ForeignKeyConstraint(
            ["case_b_id"], ["registry.cases.id"], name=op.f("fk_duplicates_case_b_id_cases")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_duplicates")),
        sa.UniqueConstraint(
            "case_a_id", "case_b_id", name=op.f("uq_duplicates_case_a_id_case_b_id")
        ),
        schema="registry",
    )
    op.create_index(
        "ix_duplicates_status_created_at_id",
        "duplicates",
        ["status", "created_at", "id"],
        unique=False,
        schema="registry",
    )
    op.create_table(
        "plan_steps",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("case_id", sa.UUID(), nullable=False),
        sa.Column("key", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("service_type", sa.String(length=64), nullable=False),
        sa.Column("priority", sa.String(length=10), nullable=False),
        sa.Column("delivery", sa.String(length=10), nullable=False),
        sa.Column(
            "depends_on",
            postgresql.ARRAY(sa.String(length=40)),
            server_default="{}",
            nullable=False,
        ),
        sa.Column("notes", sa.Text(), server_default="", nullable=False),
        sa.Column("owner_status", sa.String(length=12), nullable=True),
        sa.Column("referral_id", sa.UUID(), nullable=True),
        sa.Column("referral_attempt", sa.Integer(), nullable=True),
        sa.Column("referral_version", sa.Integer(), nullable=True),
        sa.Column("referral_status", sa.String(length=12), nullable=True),
        sa.Column("referral_assignee_id", sa.UUID(), nullable=True),
        sa.Column("referral_service_id", sa.UUID(), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("status_reason", sa.String(length=40), nullable=True),
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
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["registry.cases.id"],
            name=op.f("fk_plan_steps_case_id_cases"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_steps")),
        sa.UniqueConstraint("case_id", "key", name=op.f("uq_plan_steps_case_id_key")),
        schema="registry",
    )
    op.create_index(
        "ix_plan_steps_referral_assignee_id",
        "plan_steps",
        ["referral_assignee_id"],
        unique=False,
        schema="registry",
    )


def downgrade() -> None:
    op.drop_index("ix_plan_steps_referral_assignee_id", table_name="plan_steps", schema="registry")
    op.drop_table("plan_steps", schema="registry")
    op.drop_index("ix_duplicates_status_created_at_id", table_name="duplicates", schema="registry")
    op.drop_table("duplicates", schema="registry")
    op.drop_index("ix_duplicate_keys_key", table_name="duplicate_keys", schema="registry")
    op.drop_table("duplicate_keys", schema="registry")
    op.drop_index("ix_services_service_type", table_name="services", schema="registry")
    op.drop_index("ix_services_partner_id", table_name="services", schema="registry")
    op.drop_index(
        "ix_services_areas", table_name="services", schema="registry", postgresql_using="gin"
    )
    op.drop_table("services", schema="registry")
    op.drop_index("ix_cases_updated_at_id", table_name="cases", schema="registry")
    op.drop_index("ix_cases_return_area_code", table_name="cases", schema="registry")
    op.drop_index("ix_cases_owner_partner_id_updated_at_id", table_name="cases", schema="registry")
    op.drop_table("cases", schema="registry")
    op.drop_index("ix_access_log_partner_id_id", table_name="access_log", schema="registry")
    op.drop_index("ix_access_log_case_id_id", table_name="access_log", schema="registry")
    op.drop_table("access_log", schema="registry")
    op.execute("DROP SEQUENCE IF EXISTS registry.case_reference_seq")
