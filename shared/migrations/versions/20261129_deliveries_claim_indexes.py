"""deliveries: per-endpoint indexes for the dispatcher's claim (due deliveries in order, live
leases), replacing the backlog-wide ix_deliveries_due

Revision ID: 0007_deliveries_claim_indexes
Revises: 0006_service_loads
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_deliveries_claim_indexes"
down_revision = "0006_service_loads"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_due_by_endpoint",
        "deliveries",
        ["endpoint_id", "next_attempt_at", "id"],
        unique=False,
        schema="notifications",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_deliveries_leased_by_endpoint",
        "deliveries",
        ["endpoint_id", "lease_until"],
        unique=False,
        schema="notifications",
        postgresql_where=sa.text("status = 'pending' AND lease_until IS NOT NULL"),
    )
    op.drop_index(
        "ix_deliveries_due",
        table_name="deliveries",
        schema="notifications",
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.create_index(
        "ix_deliveries_due",
        "deliveries",
        ["next_attempt_at"],
        unique=False,
        schema="notifications",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_index(
        "ix_deliveries_leased_by_endpoint",
        table_name="deliveries",
        schema="notifications",
        postgresql_where=sa.text("status = 'pending' AND lease_until IS NOT NULL"),
    )
    op.drop_index(
        "ix_deliveries_due_by_endpoint",
        table_name="deliveries",
        schema="notifications",
        postgresql_where=sa.text("status = 'pending'"),
    )
