"""endpoints: since_tx, where in the log an endpoint's subscription starts

An endpoint receives the events committed after it was registered. Comparing times cannot
say that (an event's time is its transaction's start, not its commit), so the endpoint
keeps the oldest transaction still running when it was registered: every event of that
transaction or a later one is for it. Existing endpoints keep receiving everything the
fan-out has yet to process (0).

Revision ID: 0008_endpoint_since_tx
Revises: 0007_deliveries_claim_indexes
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.tables import Xid8

revision = "0008_endpoint_since_tx"
down_revision = "0007_deliveries_claim_indexes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "endpoints",
        sa.Column("since_tx", Xid8(), nullable=True),
        schema="notifications",
    )
    op.execute("UPDATE notifications.endpoints SET since_tx = '0'::xid8")
    op.alter_column(
        "endpoints",
        "since_tx",
        nullable=False,
        server_default=sa.text("pg_snapshot_xmin(pg_current_snapshot())"),
        schema="notifications",
    )


def downgrade() -> None:
    op.drop_column("endpoints", "since_tx", schema="notifications")
