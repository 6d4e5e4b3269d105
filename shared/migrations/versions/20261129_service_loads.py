"""services' active loads kept by the database: a counter per service and pending changes

Routing ranks candidate services by their load (referrals requested, accepted or in
progress). Counting them at each decision reads every live referral of the candidates: at
a national scale, hundreds of thousands of index entries per decision. A trigger on
`referrals.referrals` now records each change of a service's load as a row of
`service_load_changes` (an insert: concurrent writers never wait on each other); the router
folds those rows into `service_loads` (which only it writes), and a load is read as the
counter plus the changes not yet folded.

Revision ID: 0006_service_loads
Revises: 0005_referral_reason_length
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006_service_loads"
down_revision = "0005_referral_reason_length"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_loads",
        sa.Column("service_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("load", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("service_id", name=op.f("pk_service_loads")),
        schema="referrals",
    )
    op.create_table(
        "service_load_changes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("service_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("delta", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_load_changes")),
        schema="referrals",
    )
    op.create_index(
        op.f("ix_service_load_changes_service_id"),
        "service_load_changes",
        ["service_id"],
        unique=False,
        schema="referrals",
    )
    op.execute(
        """
        CREATE FUNCTION referrals.record_load_change() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            was_active boolean := TG_OP <> 'INSERT'
                AND OLD.service_id IS NOT NULL AND OLD.status IN ('requested', 'accepted', 'in_progress');
            is_active boolean := TG_OP <> 'DELETE'
                AND NEW.service_id IS NOT NULL AND NEW.status IN ('requested', 'accepted', 'in_progress');
        BEGIN
            IF was_active AND is_active AND OLD.service_id = NEW.service_id THEN
                RETURN NULL;
            END IF;
            IF was_active THEN
                INSERT INTO referrals.service_load_changes (service_id, delta)
                VALUES (OLD.service_id, -1);
            END IF;
            IF is_active THEN
                INSERT INTO referrals.service_load_changes (service_id, delta)
                VALUES (NEW.service_id, 1);
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER referrals_load AFTER INSERT OR DELETE OR UPDATE OF status, service_id "
        "ON referrals.referrals FOR EACH ROW EXECUTE FUNCTION referrals.record_load_change()"
    )
    op.execute(
        """
        INSERT INTO referrals.service_loads (service_id, load)
        SELECT service_id, count(*) FROM referrals.referrals
        WHERE service_id IS NOT NULL AND status IN ('requested', 'accepted', 'in_progress')
        GROUP BY service_id
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS referrals_load ON referrals.referrals")
    op.execute("DROP FUNCTION IF EXISTS referrals.record_load_change()")
    op.drop_index(
        op.f("ix_service_load_changes_service_id"),
        table_name="service_load_changes",
        schema="referrals",
    )
    op.drop_table("service_load_changes", schema="referrals")
    op.drop_table("service_loads", schema="referrals")
