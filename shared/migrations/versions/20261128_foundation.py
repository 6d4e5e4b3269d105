"""foundation: the hub schema (event log, checkpoints, keys, idempotency, reference data)
and the registry's partners

Revision ID: 0001_foundation
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001_foundation"
down_revision = None
branch_labels = None
depends_on = None


class Xid8(sa.types.UserDefinedType):
    cache_ok = True

    def get_col_spec(self, **_kw: object) -> str:
        return "xid8"


def upgrade() -> None:
    for schema in ("hub", "registry", "referrals", "notifications"):
        op.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')

    op.create_table(
        "events",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("tx", Xid8(), server_default=sa.text("pg_current_xact_id()"), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("source", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("audience", postgresql.ARRAY(sa.UUID()), server_default="{}", nullable=False),
        sa.Column("correlation_id", sa.String(64)),
        sa.Column("causation_id", sa.UUID()),
        sa.Column("data", postgresql.JSONB(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_events"),
        sa.UniqueConstraint("id", name="uq_events_id"),
        schema="hub",
    )
    op.create_index("ix_events_tx_seq", "events", ["tx", "seq"], unique=True, schema="hub")
    op.create_index(
        "ix_events_audience", "events", ["audience"], postgresql_using="gin", schema="hub"
    )
    op.create_index("ix_events_type", "events", ["type"], schema="hub")
    # One NOTIFY per appending transaction: PostgreSQL folds identical notifications of a
    # transaction into one and sends it at commit.
    op.execute(
        """
        CREATE FUNCTION hub.notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('hub_events', '');
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER events_notify AFTER INSERT ON hub.events "
        "FOR EACH STATEMENT EXECUTE FUNCTION hub.notify_events()"
    )

    op.create_table(
        "consumer_checkpoints",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("tx", Xid8(), server_default=sa.text("'0'::xid8"), nullable=False),
        sa.Column("seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("events_processed", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("name", name="pk_consumer_checkpoints"),
        schema="hub",
    )

    op.create_table(
        "api_keys",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("partner_id", sa.UUID()),
        sa.Column("partner_active", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("name", sa.String(200), server_default="", nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.LargeBinary(32), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("role IN ('admin', 'partner')", name="ck_api_keys_role"),
        sa.CheckConstraint(
            "(role = 'admin' AND partner_id IS NULL) OR (role = 'partner' AND partner_id IS NOT NULL)",
            name="ck_api_keys_role_partner",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
        schema="hub",
    )
    op.create_index("ix_api_keys_partner_id", "api_keys", ["partner_id"], schema="hub")

    op.create_table(
        "idempotency_records",
        sa.Column("scope", sa.String(64), nullable=False),
        sa.Column("method", sa.String(10), nullable=False),
        sa.Column("path", sa.String(500), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("state", sa.String(16), server_default="in_flight", nullable=False),
        sa.Column("response_status", sa.Integer()),
        sa.Column("response_headers", postgresql.JSONB()),
        sa.Column("response_body", sa.LargeBinary()),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("state IN ('in_flight', 'done')", name="ck_idempotency_records_state"),
        sa.PrimaryKeyConstraint("scope", "method", "path", "key", name="pk_idempotency_records"),
        schema="hub",
    )
    op.create_index(
        "ix_idempotency_records_created_at", "idempotency_records", ["created_at"], schema="hub"
    )

    op.create_table(
        "areas",
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("level", sa.String(32), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("parent_code", sa.String(32)),
        sa.Column("path", postgresql.ARRAY(sa.String(32)), nullable=False),
        sa.Column("code_list_version", sa.String(100), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_code"], ["hub.areas.code"], name="fk_areas_parent_code_areas"
        ),
        sa.PrimaryKeyConstraint("code", name="pk_areas"),
        schema="hub",
    )
    op.create_index("ix_areas_parent_code", "areas", ["parent_code"], schema="hub")
    op.create_index("ix_areas_path", "areas", ["path"], postgresql_using="gin", schema="hub")

    op.create_table(
        "service_types",
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("dimension", sa.String(32), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.CheckConstraint(
            "dimension IN ('economic', 'social', 'psychosocial', 'immediate')",
            name="ck_service_types_dimension",
        ),
        sa.PrimaryKeyConstraint("code", name="pk_service_types"),
        schema="hub",
    )

    op.create_table(
        "partners",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("acronym", sa.String(40), server_default="", nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("contact_email", sa.String(254)),
        sa.Column("contact_phone", sa.String(20)),
        sa.Column("status", sa.String(10), server_default="active", nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "kind IN ('government', 'ngo', 'un_agency', 'private', 'community')",
            name="ck_partners_kind",
        ),
        sa.CheckConstraint("status IN ('active', 'inactive')", name="ck_partners_status"),
        sa.PrimaryKeyConstraint("id", name="pk_partners"),
        schema="registry",
    )
    op.create_index("ix_partners_name_id", "partners", ["name", "id"], schema="registry")


def downgrade() -> None:
    op.drop_table("partners", schema="registry")
    op.drop_table("service_types", schema="hub")
    op.drop_table("areas", schema="hub")
    op.drop_table("idempotency_records", schema="hub")
    op.drop_table("api_keys", schema="hub")
    op.drop_table("consumer_checkpoints", schema="hub")
    op.execute("DROP TRIGGER IF EXISTS events_notify ON hub.events")
    op.execute("DROP FUNCTION IF EXISTS hub.notify_events()")
    op.drop_table("events", schema="hub")
