"""notifications

Revision ID: 0004_notifications
Revises: 0003_referrals
Create Date: 2026-11-29 00:26:04.267949+00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004_notifications"
down_revision = "0003_referrals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "endpoints",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("partner_id", sa.UUID(), nullable=True),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("event_types", postgresql.ARRAY(sa.String(length=100)), nullable=False),
        sa.Column("description", sa.String(length=500), server_default="", nullable=False),
        sa.Column("status", sa.String(length=10), server_default="active", nullable=False),
        sa.Column("disabled_reason", sa.String(length=200), nullable=True),
        sa.Column("partner_active", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("secrets", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True),
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
        sa.CheckConstraint("status IN ('active', 'disabled')", name=op.f("ck_endpoints_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_endpoints")),
        schema="notifications",
    )
    op.create_index(
        "ix_endpoints_partner_id", "endpoints", ["partner_id"], unique=False, schema="notifications"
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("endpoint_id", sa.UUID(), nullable=False),
        sa.Column("partner_id", sa.UUID(), nullable=True),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("event_seq", sa.BigInteger(), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=10), server_default="pending", nullable=False),
        sa.Column("attempt_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
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
            "status IN ('pending', 'succeeded', 'failed')", name=op.f("ck_deliveries_status")
        ),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["notifications.endpoints.id"],
            name=op.f("fk_deliveries_endpoint_id_endpoints"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint(
            "endpoint_id", "event_id", name=op.f("uq_deliveries_endpoint_id_event_id")
        ),
        schema="notifications",
    )
    op.create_index(
        "ix_deliveries_created_at_id",
        "deliveries",
        ["created_at", "id"],
        unique=False,
        schema="notifications",
    )
    op.create_index(
        "ix_deliveries_due",
        "deliveries",
        ["next_attempt_at"],
        unique=False,
        schema="notifications",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_deliveries_endpoint_id_created_at_id",
        "deliveries",
        ["endpoint_id", "created_at", "id"],
        unique=False,
        schema="notifications",
    )
    op.create_index(
        "ix_deliveries_partner_id_created_at_id",
        "deliveries",
        ["partner_id", "created_at", "id"],
        unique=False,
        schema="notifications",
    )
    op.create_table(
        "attempts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("delivery_id", sa.UUID(), nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("response_excerpt", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["notifications.deliveries.id"],
            name=op.f("fk_attempts_delivery_id_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attempts")),
        schema="notifications",
    )
    op.create_index(
        "ix_attempts_delivery_id_id",
        "attempts",
        ["delivery_id", "id"],
        unique=False,
        schema="notifications",
    )


def downgrade() -> None:
    op.drop_index("ix_attempts_delivery_id_id", table_name="attempts", schema="notifications")
    op.drop_table("attempts", schema="notifications")
    op.drop_index(
        "ix_deliveries_partner_id_created_at_id", table_name="deliveries", schema="notifications"
    )
    op.drop_index(
        "ix_deliveries_endpoint_id_created_at_id", table_name="deliveries", schema="notifications"
    )
    op.drop_index(
        "ix_deliveries_due",
        table_name="deliveries",
        schema="notifications",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_index("ix_deliveries_created_at_id", table_name="deliveries", schema="notifications")
    op.drop_table("deliveries", schema="notifications")
    op.drop_index("ix_endpoints_partner_id", table_name="endpoints", schema="notifications")
    op.drop_table("endpoints", schema="notifications")
