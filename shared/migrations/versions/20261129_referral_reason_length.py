"""referral status_reason holds the assignee's free-text reason (up to 500 characters)

Revision ID: 0005_referral_reason_length
Revises: 0004_notifications
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_referral_reason_length"
down_revision = "0004_notifications"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column(
        "referrals",
        "status_reason",
        type_=sa.String(500),
        existing_type=sa.String(40),
        schema="referrals",
    )


def downgrade() -> None:
    op.alter_column(
        "referrals",
        "status_reason",
        type_=sa.String(40),
        existing_type=sa.String(500),
        schema="referrals",
        postgresql_using="left(status_reason, 40)",
    )
