"""referrals: the indicators' rollup, and when a case's pathway last completed

`GET /indicators` and `GET /gaps` (SPEC 12) count referrals by period, area, service type,
partner and status, with the times their history gives. `referral_facts` holds one row per
referral with what those figures need; `indicator_days`, `indicator_firsts`,
`indicator_deadlines` and `indicator_durations` add the rows up per day of creation, case
return area and service type, so that a year of figures reads a few thousand rows. The
reconciler keeps them as it processes the events. `cases.pathway_completed_at` keeps when the reconciler last found a
case's steps all resolved (its last `case.pathway_completed`). All are filled here from what
the database holds, as `python -m services.referrals.rebuild` would.

Revision ID: 0009_indicators_rollup
Revises: 0008_endpoint_since_tx
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009_indicators_rollup"
down_revision = "0008_endpoint_since_tx"
branch_labels = None
depends_on = None

NO_DAY = sa.text("'-infinity'::date")


def _day_key() -> list[sa.Column]:
    return [
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("area_code", sa.String(length=32), nullable=False),
        sa.Column("service_type", sa.String(length=64), nullable=False),
    ]


def upgrade() -> None:
    op.add_column(
        "cases",
        sa.Column("pathway_completed_at", sa.DateTime(timezone=True), nullable=True),
        schema="referrals",
    )
    op.create_table(
        "referral_facts",
        sa.Column("referral_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("case_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("step_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("area_code", sa.String(length=32), nullable=True),
        sa.Column("service_type", sa.String(length=64), nullable=False),
        sa.Column("dimension", sa.String(length=32), nullable=True),
        sa.Column("assignee_partner_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("owner_partner_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pathway_completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("case_prev_day", sa.Date(), server_default=NO_DAY, nullable=False),
        sa.Column("case_type_prev_day", sa.Date(), server_default=NO_DAY, nullable=False),
        sa.Column("case_dimension_prev_day", sa.Date(), server_default=NO_DAY, nullable=False),
        sa.Column("step_prev_day", sa.Date(), server_default=NO_DAY, nullable=False),
        sa.Column(
            "completed_day", sa.Date(), server_default=sa.text("'infinity'::date"), nullable=False
        ),
        sa.Column("acceptance_minutes", sa.Integer(), nullable=True),
        sa.Column("completion_minutes", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("referral_id", name=op.f("pk_referral_facts")),
        schema="referrals",
    )
    for name, columns, where in (
        ("ix_referral_facts_day", ["day"], None),
        ("ix_referral_facts_case_id", ["case_id"], None),
        ("ix_referral_facts_owner_partner_id_day", ["owner_partner_id", "day"], None),
        ("ix_referral_facts_assignee_partner_id_day", ["assignee_partner_id", "day"], None),
        ("ix_referral_facts_requested_deadline_at", ["deadline_at"], "status = 'requested'"),
        ("ix_referral_facts_unassigned_day", ["day"], "status = 'unassigned'"),
    ):
        op.create_index(
            op.f(name),
            "referral_facts",
            columns,
            unique=False,
            schema="referrals",
            postgresql_where=sa.text(where) if where else None,
        )
    op.create_table(
        "indicator_days",
        *_day_key(),
        sa.Column("referrals", sa.BigInteger(), nullable=False),
        sa.Column("accepted", sa.BigInteger(), nullable=False),
        sa.Column("status_requested", sa.BigInteger(), nullable=False),
        sa.Column("status_accepted", sa.BigInteger(), nullable=False),
        sa.Column("status_in_progress", sa.BigInteger(), nullable=False),
        sa.Column("status_unassigned", sa.BigInteger(), nullable=False),
        sa.Column("status_rejected", sa.BigInteger(), nullable=False),
        sa.Column("status_expired", sa.BigInteger(), nullable=False),
        sa.Column("status_completed", sa.BigInteger(), nullable=False),
        sa.Column("status_failed", sa.BigInteger(), nullable=False),
        sa.Column("status_cancelled", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "area_code", "service_type", name=op.f("pk_indicator_days")),
        schema="referrals",
    )
    op.create_table(
        "indicator_firsts",
        *_day_key(),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("prev_day", sa.Date(), nullable=False),
        sa.Column("completed_day", sa.Date(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('case', 'case_type', 'case_dimension', 'step')",
            name=op.f("ck_indicator_firsts_kind"),
        ),
        sa.PrimaryKeyConstraint(
            "day",
            "area_code",
            "service_type",
            "kind",
            "prev_day",
            "completed_day",
            name=op.f("pk_indicator_firsts"),
        ),
        schema="referrals",
    )
    op.create_table(
        "indicator_deadlines",
        *_day_key(),
        sa.Column("deadline_day", sa.Date(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "day",
            "area_code",
            "service_type",
            "deadline_day",
            name=op.f("pk_indicator_deadlines"),
        ),
        schema="referrals",
    )
    op.create_table(
        "indicator_durations",
        *_day_key(),
        sa.Column("measure", sa.String(length=16), nullable=False),
        sa.Column("minutes", sa.Integer(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "measure IN ('acceptance', 'completion')", name=op.f("ck_indicator_durations_measure")
        ),
        sa.PrimaryKeyConstraint(
            "day",
            "area_code",
            "service_type",
            "measure",
            "minutes",
            name=op.f("pk_indicator_durations"),
        ),
        schema="referrals",
    )
    # Each case's last `case.pathway_completed`.
    op.execute(
        """
        UPDATE referrals.cases AS c SET pathway_completed_at = last.at
        FROM (
            SELECT CAST(data ->> 'case_id' AS uuid) AS case_id, max(time) AS at
            FROM hub.events WHERE type = 'case.pathway_completed'
            GROUP BY CAST(data ->> 'case_id' AS uuid)
        ) AS last
        WHERE c.id = last.case_id
        """
    )
    # Every referral's row (the definition of store.indicators at this revision), then the
    # day totals of the rows.
    op.execute(
        """
        INSERT INTO referrals.referral_facts
        SELECT b.*,
            coalesce(lag(b.day) OVER (PARTITION BY b.case_id ORDER BY b.created_at, b.referral_id),
                CAST('-infinity' AS date)),
            coalesce(lag(b.day) OVER (PARTITION BY b.case_id, b.service_type
                ORDER BY b.created_at, b.referral_id), CAST('-infinity' AS date)),
            coalesce(lag(b.day) OVER (PARTITION BY b.case_id, b.dimension
                ORDER BY b.created_at, b.referral_id), CAST('-infinity' AS date)),
            CASE WHEN b.attempt > 1 THEN coalesce(lag(b.day) OVER (
                PARTITION BY b.step_id, b.attempt > 1 ORDER BY b.created_at, b.referral_id),
                CAST('-infinity' AS date)) ELSE CAST('-infinity' AS date) END,
            coalesce(CAST(b.pathway_completed_at AT TIME ZONE 'UTC' AS date),
                CAST('infinity' AS date)),
            CAST(floor(extract(epoch FROM b.accepted_at - b.requested_at) / 60) AS integer),
            CAST(floor(extract(epoch FROM b.completed_at - b.accepted_at) / 60) AS integer)
        FROM (
            SELECT r.id AS referral_id, r.case_id, r.step_id, c.return_area_code,
                r.service_type, st.dimension, r.assignee_partner_id, r.owner_partner_id,
                r.status, r.attempt, r.deadline_at, r.created_at, t.requested_at,
                t.accepted_at, t.completed_at, c.pathway_completed_at,
                CAST(r.created_at AT TIME ZONE 'UTC' AS date) AS day
            FROM referrals.referrals AS r
            LEFT JOIN referrals.cases AS c ON c.id = r.case_id
            LEFT JOIN hub.service_types AS st ON st.code = r.service_type
            LEFT JOIN (
                SELECT h.referral_id,
                    min(h.at) FILTER (WHERE h.status = 'requested') AS requested_at,
                    min(h.at) FILTER (WHERE h.status = 'accepted') AS accepted_at,
                    min(h.at) FILTER (WHERE h.status = 'completed') AS completed_at
                FROM referrals.referral_history AS h GROUP BY h.referral_id
            ) AS t ON t.referral_id = r.id
        ) AS b
        """
    )
    op.execute(
        """
        INSERT INTO referrals.indicator_days (day, area_code, service_type, referrals, accepted,
            status_requested, status_accepted, status_in_progress, status_unassigned, status_rejected, status_expired, status_completed, status_failed, status_cancelled)
        SELECT day, coalesce(area_code, ''), service_type, count(*), count(accepted_at),
            count(*) FILTER (WHERE status = 'requested'),
            count(*) FILTER (WHERE status = 'accepted'),
            count(*) FILTER (WHERE status = 'in_progress'),
            count(*) FILTER (WHERE status = 'unassigned'),
            count(*) FILTER (WHERE status = 'rejected'),
            count(*) FILTER (WHERE status = 'expired'),
            count(*) FILTER (WHERE status = 'completed'),
            count(*) FILTER (WHERE status = 'failed'),
            count(*) FILTER (WHERE status = 'cancelled')
        FROM referrals.referral_facts GROUP BY day, coalesce(area_code, ''), service_type
        """
    )
    op.execute(
        """
        INSERT INTO referrals.indicator_firsts
            (day, area_code, service_type, kind, prev_day, completed_day, n)
        SELECT f.day, coalesce(f.area_code, ''), f.service_type, k.kind, k.prev_day,
            k.completed_day, count(*)
        FROM referrals.referral_facts AS f CROSS JOIN LATERAL (VALUES
            ('case', f.case_prev_day, f.completed_day),
            ('case_type', f.case_type_prev_day, f.completed_day),
            ('case_dimension', f.case_dimension_prev_day, f.completed_day),
            ('step', f.step_prev_day, CAST('infinity' AS date))
        ) AS k (kind, prev_day, completed_day)
        WHERE k.kind <> 'step' OR f.attempt > 1
        GROUP BY 1, 2, 3, 4, 5, 6
        """
    )
    op.execute(
        """
        INSERT INTO referrals.indicator_deadlines
            (day, area_code, service_type, deadline_day, n)
        SELECT day, coalesce(area_code, ''), service_type,
            CAST(deadline_at AT TIME ZONE 'UTC' AS date), count(*)
        FROM referrals.referral_facts
        WHERE status = 'requested' AND deadline_at IS NOT NULL
        GROUP BY 1, 2, 3, 4
        """
    )
    op.execute(
        """
        INSERT INTO referrals.indicator_durations
            (day, area_code, service_type, measure, minutes, n)
        SELECT f.day, coalesce(f.area_code, ''), f.service_type, x.measure, x.minutes, count(*)
        FROM referrals.referral_facts AS f CROSS JOIN LATERAL (VALUES
            ('acceptance', f.acceptance_minutes), ('completion', f.completion_minutes)
        ) AS x (measure, minutes)
        WHERE x.minutes IS NOT NULL
        GROUP BY 1, 2, 3, 4, 5
        """
    )


def downgrade() -> None:
    for table in (
        "indicator_durations",
        "indicator_deadlines",
        "indicator_firsts",
        "indicator_days",
        "referral_facts",
    ):
        op.drop_table(table, schema="referrals")
    op.drop_column("cases", "pathway_completed_at", schema="referrals")
