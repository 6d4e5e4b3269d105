"""data protection: key expiry, when a case was closed and erased, events found by case

SPEC 4 and 9. `hub.api_keys.expires_at`: a key past it answers 401. `registry.cases.closed_at`
(when the case was last closed; null while open) is what retention counts from, filled here
from `updated_at` for the cases closed before this revision; `erased_at` and
`erasure_reason` record an erasure, which is final. The access log also records exports and
erasures (`view` `export`, `erase`), and an erasure by the retention worker has no key. `ix_events_case` finds the events about
one case (its own `cases/{id}` events and the events whose data names it in `case_id`), so
that an erasure or an export reads those events without scanning the log; the expression is
`shared.eventlog.about_case.CASE_OF_EVENT`, and the two must stay equal. The deliveries' unique
pair now leads with the event, so that a case's deliveries are found from its events.

Revision ID: 0010_data_protection
Revises: 0009_indicators_rollup
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_data_protection"
down_revision = "0009_indicators_rollup"
branch_labels = None
depends_on = None

CASE_OF_EVENT = "COALESCE(data ->> 'case_id', substring(subject, '^cases/(.+)$'))"


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("expires_at", sa.DateTime(timezone=True)), schema="hub")
    op.add_column("cases", sa.Column("closed_at", sa.DateTime(timezone=True)), schema="registry")
    op.add_column("cases", sa.Column("erased_at", sa.DateTime(timezone=True)), schema="registry")
    op.add_column("cases", sa.Column("erasure_reason", sa.String(length=500)), schema="registry")
    op.execute("UPDATE registry.cases SET closed_at = updated_at WHERE status = 'closed'")
    op.create_index(
        "ix_cases_closed_at",
        "cases",
        ["closed_at"],
        schema="registry",
        postgresql_where=sa.text("status = 'closed' AND erased_at IS NULL"),
    )
    op.execute(f"CREATE INDEX ix_events_case ON hub.events (({CASE_OF_EVENT}))")
    # The access log also records exports and erasures; the retention worker erases with no key.
    op.drop_constraint("ck_access_log_view", "access_log", schema="registry")
    op.create_check_constraint(
        "ck_access_log_view",
        "access_log",
        "view IN ('full', 'minimised', 'list', 'export', 'erase')",
        schema="registry",
    )
    op.alter_column("access_log", "key_id", nullable=True, schema="registry")
    # A case's deliveries are found by their events (export, erasure): the unique pair leads with
    # the event, so that one index serves both the fan-out's ON CONFLICT and that look-up.
    op.drop_constraint(
        "uq_deliveries_endpoint_id_event_id", "deliveries", schema="notifications", type_="unique"
    )
    op.create_unique_constraint(
        "uq_deliveries_event_id_endpoint_id",
        "deliveries",
        ["event_id", "endpoint_id"],
        schema="notifications",
    )


def downgrade() -> None:
    op.drop_constraint(
        "uq_deliveries_event_id_endpoint_id", "deliveries", schema="notifications", type_="unique"
    )
    op.create_unique_constraint(
        "uq_deliveries_endpoint_id_event_id",
        "deliveries",
        ["endpoint_id", "event_id"],
        schema="notifications",
    )
    op.execute("DELETE FROM registry.access_log WHERE view IN ('export', 'erase')")
    op.alter_column("access_log", "key_id", nullable=False, schema="registry")
    op.drop_constraint("ck_access_log_view", "access_log", schema="registry")
    op.create_check_constraint(
        "ck_access_log_view",
        "access_log",
        "view IN ('full', 'minimised', 'list')",
        schema="registry",
    )
    op.drop_index("ix_events_case", table_name="events", schema="hub")
    op.drop_index("ix_cases_closed_at", table_name="cases", schema="registry")
    op.drop_column("cases", "erasure_reason", schema="registry")
    op.drop_column("cases", "erased_at", schema="registry")
    op.drop_column("cases", "closed_at", schema="registry")
    op.drop_column("api_keys", "expires_at", schema="hub")
